"""``readImages``: image files -> a DataFrame of Spark image structs, decoded with Pillow."""
from typing import Iterator, Tuple

import pyarrow as pa
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from sparkdl.image import imageIO

__all__ = ["readImages", "decodeContentsUdf", "loadUrisUdf", "DECODE_CHUNK_ROWS"]

#: Rows decoded per Arrow output batch: bounds the memory a task holds for decoded pixels
#: (about 36 MB of 500x375 RGB images), however large Spark's input batches are.
DECODE_CHUNK_ROWS = 64


def _decodedType():
    return StructType(
        [StructField("image", imageIO.imageSchema, True), StructField("error", StringType(), True)]
    )


def _finish(images, errors):
    return pa.StructArray.from_arrays([images, errors], names=["image", "error"])


def decodeContentsUdf(targetSize=None, resizeMethod="bilinear"):
    """Arrow UDF ``(origin, content) -> struct<image, error>`` decoding file bytes."""

    @F.arrow_udf(_decodedType())
    def decodeContents(batches: Iterator[Tuple[pa.Array, pa.Array]]) -> Iterator[pa.Array]:
        from sparkdl.image.arrow import decodeBatch, iterChunks

        for origins, contents in iterChunks(batches, DECODE_CHUNK_ROWS):
            yield _finish(*decodeBatch(origins, contents, targetSize, resizeMethod))

    return decodeContents


def loadUrisUdf(loader=None, targetSize=None, resizeMethod="bilinear"):
    """Arrow UDF ``uri -> struct<image, error>`` reading files (or calling ``loader``) on the
    executors; see :func:`sparkdl.image.arrow.loadBatch`."""

    @F.arrow_udf(_decodedType())
    def loadUris(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
        from sparkdl.image.arrow import iterChunks, loadBatch

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
    ``errorCol``, or is dropped with ``dropInvalid=True``. Zero-byte files are skipped by
    Spark's file listing (as with Spark's own image reader); :class:`sparkdl.ImageLoader`,
    given their paths, reports them as invalid ("empty file").

    :param path: a file, directory or glob, or a list of them.
    :param recursive: look into subdirectories.
    :param pathGlobFilter: only files whose name matches this glob (e.g. ``"*.jpg"``).
    :param numPartitions: repartition the files into this many partitions before decoding.
    :param dropInvalid: drop undecodable files instead of keeping invalid-image rows.
    :param sampleRatio: fraction of the files to keep (Bernoulli sampling, before decoding).
    :param seed: seed for ``sampleRatio``.
    :param errorCol: name of the column with the reason a row is invalid (null when valid).
    :return: DataFrame with columns ``image`` and ``errorCol``.

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
    # Spark's image source names files file:///x where binaryFile says file:/x; use its form.
    files = reader.load(path).select(
        F.regexp_replace("path", "^file:/(?!/)", "file:///").alias("path"), "content"
    )
    if sampleRatio < 1.0:
        files = files.sample(withReplacement=False, fraction=float(sampleRatio), seed=seed)
    if numPartitions is not None:
        files = files.repartition(int(numPartitions))
    decoded = files.select(decodeContentsUdf()("path", "content").alias("_decoded"))
    df = decoded.select(
        F.col("_decoded.image").alias("image"), F.col("_decoded.error").alias(errorCol)
    )
    if dropInvalid:
        df = df.filter(F.col(errorCol).isNull())
    return df
