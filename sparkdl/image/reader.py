"""``readImages``: image files -> a DataFrame of Spark image structs, decoded with Pillow."""
import math
from typing import Iterator, Tuple

import pyarrow as pa
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from sparkdl.image import imageIO
from sparkdl.utils.fs import emptyFiles, fileSizes
from sparkdl.utils.session import defaultParallelism, inputFiles

__all__ = ["readImages", "readImagesStream", "decodeImagesUdf", "decodeErrorsUdf", "loadUrisUdf",
           "DECODE_CHUNK_ROWS"]

#: Rows decoded per Arrow output batch: bounds the memory a task holds for decoded pixels
#: (about 36 MB of 500x375 RGB images), however large Spark's input batches are.
DECODE_CHUNK_ROWS = 64


def _decodedType(errorCol="error"):
    return StructType(
        [StructField("image", imageIO.imageSchema, True), StructField(errorCol, StringType(), True)]
    )


def _finish(images, errors):
    return pa.StructArray.from_arrays([images, errors], names=["image", "error"])


def decodeImagesUdf():
    """Arrow UDF ``(origin, content) -> image struct`` decoding file bytes; an undecodable file
    gives Spark's invalid-image row, a null content a null image.

    Its output is the image column itself (not a field of a wider struct), so that Spark
    chains a following Arrow UDF on that column, such as an inference stage's, into the same
    Python worker: the decoded pixels then never travel through the JVM.
    """

    @F.arrow_udf(imageIO.imageSchema)
    def decodeImages(batches: Iterator[Tuple[pa.Array, pa.Array]]) -> Iterator[pa.Array]:
        from sparkdl.image.arrow import decodeBatch
        from sparkdl.utils.worker import freezeWorkerHeap, iterChunks

        freezeWorkerHeap()
        for origins, contents in iterChunks(batches, DECODE_CHUNK_ROWS):
            yield decodeBatch(origins, contents)[0]

    return decodeImages


def decodeErrorsUdf():
    """Arrow UDF ``content -> reason`` (string): why the file bytes cannot be decoded, null
    when they can or are null. :func:`readImages` feeds it only the bytes of invalid rows, so
    the reason costs a second decode of bad files only."""

    @F.arrow_udf(StringType())
    def decodeErrors(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
        from sparkdl.image.arrow import decodeBatch
        from sparkdl.utils.worker import freezeWorkerHeap

        freezeWorkerHeap()
        for contents in batches:
            yield decodeBatch(pa.nulls(len(contents), pa.string()), contents)[1]

    return decodeErrors


def loadUrisUdf(loader=None, targetSize=None, resizeMethod="bilinear"):
    """Arrow UDF ``uri -> struct<image, error>`` reading files (or calling ``loader``) on the
    executors; see :func:`sparkdl.image.arrow.loadBatch`."""

    @F.arrow_udf(_decodedType())
    def loadUris(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
        from sparkdl.image.arrow import loadBatch
        from sparkdl.utils.worker import freezeWorkerHeap, iterChunks

        freezeWorkerHeap()
        for uris in iterChunks(batches, DECODE_CHUNK_ROWS):
            yield _finish(*loadBatch(uris, loader, targetSize, resizeMethod))

    return loadUris


def readImages(
    path,
    recursive=True,
    pathGlobFilter=None,
    numPartitions=None,
    dropInvalid=False,
    sampleRatio=1.0,
    seed=None,
    errorCol="error",
):
    """Read image files into a DataFrame with an ``image`` column of Spark's image struct.

    Files are listed and read by Spark's ``binaryFile`` source (any file system Spark reads)
    and decoded on the executors with Pillow, in Arrow batches, by the rule documented in
    :mod:`sparkdl.image.imageIO` (8-bit BGR(A), EXIF orientation applied, first frame of an
    animation). On PNGs the result is byte-identical to ``spark.read.format("image")``.

    A file that cannot be decoded never fails the job: it becomes Spark's invalid-image row
    (height = width = nChannels = mode = -1, empty data, ``origin`` kept) with the reason in
    ``errorCol``, or is dropped with ``dropInvalid=True``. Zero-byte files, which Spark's file
    scan (and so its own image reader) skips, are invalid rows too ("empty file"), found from
    the file listing's metadata without opening them.

    :param path: a file, directory or glob, or a list of them.
    :param recursive: look into subdirectories.
    :param pathGlobFilter: only files whose name matches this glob (e.g. ``"*.jpg"``).
    :param numPartitions: repartition the files into this many partitions before decoding (a
        shuffle of the file bytes). By default Spark's file partitions, which hold ~30 photos
        each, are merged without a shuffle into one per core (more when a task would read over
        128 MB): fewer, larger tasks, each of which saves a Python UDF's fixed cost per task.
        On Spark Connect the client knows the cores only from ``spark.default.parallelism``;
        without it Spark's partitions are kept.
    :param dropInvalid: drop undecodable files instead of keeping invalid-image rows.
    :param sampleRatio: fraction of the files to keep (Bernoulli sampling, before decoding).
    :param seed: seed for ``sampleRatio``.
    :param errorCol: name of the column with the reason a row is invalid (null when valid).
    :return: DataFrame with columns ``image`` and ``errorCol``.

    With the default ``dropInvalid=False``, the ``image`` column is the decoding UDF's own
    output, so an inference stage applied to it (e.g. :class:`sparkdl.DeepImageFeaturizer`)
    runs in the same Python worker as the decoding whenever the pixels are not selected
    themselves: they then never travel through the JVM. Prefer ``dropInvalid=True`` to a
    filter on ``image`` or ``errorCol``: Spark moves such a filter below the decoding, which
    then runs twice.

    >>> from sparkdl import readImages
    >>> df = readImages("python/tests/resources/images", pathGlobFilter="*.png")
    >>> df.select("image.origin", "image.height", "image.width", "error").show()  # doctest: +SKIP
    """
    if not 0.0 < float(sampleRatio) <= 1.0:
        raise ValueError(f"sampleRatio must be in (0, 1], got {sampleRatio}")
    if numPartitions is not None and int(numPartitions) <= 0:
        raise ValueError(f"numPartitions must be a positive integer, got {numPartitions}")
    spark = SparkSession.active()
    reader = spark.read.format("binaryFile").option("recursiveFileLookup", bool(recursive))
    if pathGlobFilter:
        reader = reader.option("pathGlobFilter", pathGlobFilter)
    listed = reader.load(path)
    files = _pathsAndContents(listed)
    uris = inputFiles(listed)
    sizes = fileSizes(uris)
    if not dropInvalid:
        files = _withEmptyFiles(spark, files, emptyFiles(uris, sizes))
    if sampleRatio < 1.0:
        files = files.sample(withReplacement=False, fraction=float(sampleRatio), seed=seed)
    if numPartitions is not None:
        files = files.repartition(int(numPartitions))
    else:
        files = _fewerTasks(spark, files, sizes, float(sampleRatio))
    if dropInvalid:
        # Decode and drop in one step: Spark's optimizer pushes a filter on a decoded column
        # below the decoding projection, copying the UDF, and every file was decoded twice.
        schema = _decodedType(errorCol)
        return files.mapInArrow(_decodeDroppingInvalid(schema.names), schema)
    return _decoded(files, errorCol)


def readImagesStream(
    path,
    pathGlobFilter=None,
    recursive=True,
    maxFilesPerTrigger=None,
    maxBytesPerTrigger=None,
    latestFirst=False,
    errorCol="error",
):
    """Read the image files arriving in a folder as a streaming DataFrame, with the columns
    of :func:`readImages` (``image``, Spark's image struct, and ``errorCol``), decoded by the
    same Arrow UDFs.

    Files are found by Spark's streaming file source (``binaryFile``): each micro-batch takes
    the files that appeared since the last one, and a path once taken is never read again,
    even if the file changes later; with a checkpoint, a restarted query goes on where it
    stopped. A file that cannot be decoded is an invalid-image row with the reason in
    ``errorCol``; it never stops the query. Unlike :func:`readImages`, zero-byte files give no
    row at all: Spark's file scan has no byte range to read in them, and the streaming source
    offers no listing to find them from. A file still being written when it is listed is read
    as it is then (an invalid row, as a truncated image), and never again: producers should
    write elsewhere and move finished files into ``path`` (a rename is atomic on one file
    system).

    :param path: the folder (or glob) to watch, on any file system Spark reads.
    :param pathGlobFilter: only files whose name matches this glob (e.g. ``"*.jpg"``).
    :param recursive: look into subdirectories (Spark's ``recursiveFileLookup``).
    :param maxFilesPerTrigger: at most this many new files per micro-batch.
    :param maxBytesPerTrigger: about this many bytes of new files per micro-batch.
    :param latestFirst: take the newest files first when there is a backlog.
    :param errorCol: name of the column with the reason a row is invalid (null when valid).
    :return: a streaming DataFrame with columns ``image`` and ``errorCol``.

    >>> from sparkdl import readImagesStream, DeepImageFeaturizer
    >>> images = readImagesStream("/data/incoming", pathGlobFilter="*.jpg")  # doctest: +SKIP
    >>> featurizer = DeepImageFeaturizer(inputCol="image", outputCol="features",
    ...                                  modelName="EfficientNetLite0")  # doctest: +SKIP
    >>> query = (featurizer.transform(images).select("image.origin", "features", "error")
    ...          .writeStream.format("parquet").option("path", "/data/features")
    ...          .option("checkpointLocation", "/data/features-checkpoint")
    ...          .trigger(availableNow=True).start())  # doctest: +SKIP
    """
    options = {"recursiveFileLookup": bool(recursive), "latestFirst": bool(latestFirst)}
    if pathGlobFilter:
        options["pathGlobFilter"] = pathGlobFilter
    for name, value in (("maxFilesPerTrigger", maxFilesPerTrigger),
                        ("maxBytesPerTrigger", maxBytesPerTrigger)):
        if value is not None:
            if int(value) <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
            options[name] = int(value)
    # A streaming source needs its schema up front; binaryFile's is fixed.
    listed = SparkSession.active().readStream.format("binaryFile").schema(
        "path string, modificationTime timestamp, length bigint, content binary"
    ).options(**options).load(path)
    return _decoded(_pathsAndContents(listed), errorCol)


def _pathsAndContents(listed):
    """``binaryFile`` rows -> ``(path, content)``, paths in the form of Spark's image source."""
    # Spark's image source names files file:///x where binaryFile says file:/x; use its form.
    return listed.select(
        F.regexp_replace("path", "^file:/(?!/)", "file:///").alias("path"), "content"
    )


def _decoded(files, errorCol):
    """``(path, content)`` rows -> ``(image, errorCol)``, the one decoding of readImages and
    readImagesStream."""
    images = files.select(decodeImagesUdf()("path", "content").alias("image"), "content")
    invalidContent = F.when(F.col("image.height") < 0, F.col("content"))
    return images.select("image", decodeErrorsUdf()(invalidContent).alias(errorCol))


def _withEmptyFiles(spark, files, empty):
    """``files`` plus a row with empty content for each zero-byte file of ``empty``.

    Spark's file scan splits files into byte ranges and a zero-byte file has none, so it never
    reaches ``binaryFile`` (nor Spark's image reader). Its listing (``inputFiles``) still has
    it: those rows decode, by the one decoding rule, to invalid rows with "empty file".
    """
    if not empty:
        return files
    rows = spark.createDataFrame([(uri, bytearray()) for uri in empty], files.schema)
    return files.unionByName(rows)


#: Bytes a decoding task reads at most when readImages merges Spark's file partitions (Spark's
#: default ``spark.sql.files.maxPartitionBytes``, the bound of one of its own file partitions).
TASK_BYTES = 128 * 1024 * 1024


def _fewerTasks(spark, files, sizes, sampleRatio=1.0):
    """``files`` in one partition per core (more when that would exceed :data:`TASK_BYTES` of
    files a task), merged without a shuffle, unless the cores or a file's size are unknown.

    Spark's file scan counts each file as at least 4 MB (``spark.sql.files.openCostInBytes``),
    so photos come in partitions of ~30 files: a task each, and each task of a Python UDF
    costs tens of milliseconds besides its rows (a fifth of the featurizer's time on 500
    photos and 2 cores).
    """
    cores = defaultParallelism(spark)
    if cores is None or not sizes or any(size is None for size in sizes):
        return files
    tasks = max(cores, math.ceil(sum(sizes) * sampleRatio / TASK_BYTES))
    return files.coalesce(tasks)


def _decodeDroppingInvalid(names):
    """``mapInArrow`` function: (path, content) batches -> (image, error) batches without the
    undecodable files."""

    def decodeDroppingInvalid(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow.compute as pc

        from sparkdl.image.arrow import decodeBatch
        from sparkdl.utils.worker import freezeWorkerHeap, iterChunks

        freezeWorkerHeap()
        columns = ((batch.column(0), batch.column(1)) for batch in batches)
        for origins, contents in iterChunks(columns, DECODE_CHUNK_ROWS):
            images, errors = decodeBatch(origins, contents)
            keep = pc.is_null(errors)
            yield pa.RecordBatch.from_arrays([images.filter(keep), errors.filter(keep)], names=names)

    return decodeDroppingInvalid
