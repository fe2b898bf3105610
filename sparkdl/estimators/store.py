"""The estimator's data store: the loader's outputs and the labels, written once to Parquet
and streamed back to the training processes in batches.

- :func:`materialize` (driver): runs ``imageLoader`` on the executors and writes
  ``x, error, loaded, label, fold`` under ``storeDir`` (Spark writes local and HDFS
  directories, each task writes object stores such as S3 through pyarrow); returns the row
  counts, the labels' range and the label kind.
- :func:`usableRows`, :func:`shard`, :func:`readRows`, :func:`tfDataset` (training process):
  which stored rows train (or validate), one rank's contiguous share of them, and a
  ``tf.data`` pipeline that streams them with memory bounded by the batch.
"""
from pyspark.sql import functions as F
from pyspark.sql.types import IntegralType

__all__ = ["materialize", "usableRows", "shard", "readRows", "tfDataset"]


#: Row group size of the store's Parquet files: a training task reads one at a time.
ROW_GROUP_BYTES = 16 * 1024 * 1024


def materialize(dataset, inputCol, labelCol, loader, storeDir):
    """Write ``x, error, loaded, label, fold`` for every row to Parquet under ``storeDir``.

    Local and HDFS directories are written by Spark; others (``s3://``, ``s3a://``,
    ``gs://``...: the bundled Spark has no connector jars for them) by each task through
    pyarrow's file system (:func:`sparkdl.utils.fs.filesystemFor`), one file per partition.

    :return: ``(counts, kind)``: the row counts (``rows``, ``loaderErrors``, ``nullUris``,
        ``nullLabels``, ``usable``) and the label kind (``"onehot"`` or ``"index"``). The
        counts also hold the usable rows' label range (``labelMin``, ``labelMax``: class
        indices; ``widthMin``, ``widthMax``: one-hot sizes; None when there are none).
    """
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import VectorUDT

    from sparkdl.engine.image_file_udf import loaderArraysUdf
    from sparkdl.utils.fs import sparkWrites

    labelType = dataset.schema[labelCol].dataType
    if isinstance(labelType, VectorUDT):
        label, kind = vector_to_array(F.col(labelCol), "float32"), "onehot"
    elif isinstance(labelType, IntegralType):
        label, kind = F.col(labelCol).cast("int"), "index"
    else:
        raise TypeError(f"labelCol {labelCol!r} must be a one-hot ML vector (dense or sparse) "
                        f"or an integer class index, got {labelType.simpleString()}")
    loaded = dataset.select(
        loaderArraysUdf(loader)(F.col(inputCol)).alias("_loaded"), label.alias("label"),
        # a fixed split of the rows for validation_split, stable across epochs and tasks
        (F.abs(F.xxhash64(F.col(inputCol))) % 1000).cast("int").alias("fold"))
    # "loaded" lets the counts read no tensor column at all.
    rows = loaded.select(F.col("_loaded.x").alias("x"), F.col("_loaded.error").alias("error"),
                         F.col("_loaded.x").isNotNull().alias("loaded"), "label", "fold")
    if sparkWrites(storeDir):
        # Small row groups keep a training task's read buffer small.
        rows.write.mode("overwrite").option("parquet.block.size", ROW_GROUP_BYTES) \
            .parquet(storeDir)
    else:
        _writeThroughPyarrow(rows, storeDir)
    return _counts(dataset.sparkSession, storeDir, kind), kind


def _writeThroughPyarrow(rows, storeDir):
    """Each task writes its partition's rows to ``part-NNNNN.parquet`` under ``storeDir``
    through pyarrow's file system (a retried task overwrites its own file), in row groups of
    about :data:`ROW_GROUP_BYTES`; like Spark's ``mode("overwrite")``, the directory is
    emptied first."""
    import pyarrow as pa

    from sparkdl.utils.fs import filesystemFor

    filesystem, root = filesystemFor(storeDir)
    root = root.rstrip("/")
    filesystem.delete_dir_contents(root, missing_dir_ok=True)

    def write(batches):
        import pyarrow.parquet as pq
        from pyspark import TaskContext

        from sparkdl.utils.fs import filesystemFor

        fs, _ = filesystemFor(storeDir)
        path = f"{root}/part-{TaskContext.get().partitionId():05d}.parquet"
        writer, written = None, 0
        try:
            for batch in batches:
                if batch.num_rows == 0:
                    continue
                if writer is None:
                    writer = pq.ParquetWriter(path, batch.schema, filesystem=fs)
                perGroup = max(1, ROW_GROUP_BYTES * batch.num_rows // max(batch.nbytes, 1))
                writer.write_table(pa.Table.from_batches([batch]), row_group_size=perGroup)
                written += batch.num_rows
        finally:
            if writer is not None:
                writer.close()
        yield pa.RecordBatch.from_pydict({"rows": [written]}, pa.schema([("rows", pa.int64())]))

    rows.mapInArrow(write, "rows long").collect()


def _counts(spark, storeDir, kind):
    """Row counts and the usable rows' label range of the stored files, read with pyarrow
    (the training tasks' reader) on the executors, one task per file, small columns only."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    from sparkdl.utils.fs import filesystemFor

    filesystem, root = filesystemFor(storeDir)
    files = sorted(ds.dataset(root, format="parquet", filesystem=filesystem).files)
    names = ("rows", "loaderErrors", "nullUris", "nullLabels", "usable",
             "labelMin", "labelMax", "widthMin", "widthMax")
    counts = dict.fromkeys(names[:5], 0)
    counts.update(dict.fromkeys(names[5:]))
    if not files:
        return counts
    schema = pa.schema([(n, pa.int64()) for n in names])

    def fileCounts(batches):
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        from sparkdl.utils.fs import filesystemFor

        fs, _ = filesystemFor(storeDir)
        for batch in batches:
            for path in batch.column(0).to_pylist():
                c = {n: [] for n in names}
                for t in pq.ParquetFile(path, filesystem=fs).iter_batches(
                        columns=["error", "loaded", "label"]):
                    error = pc.is_valid(t.column("error"))
                    nullUri = pc.and_(pc.invert(error), pc.invert(t.column("loaded")))
                    fine = pc.and_(pc.invert(error), t.column("loaded"))
                    usable = pc.and_(fine, pc.is_valid(t.column("label")))
                    c["rows"].append(t.num_rows)
                    c["loaderErrors"].append(pc.sum(error.cast("int64")).as_py() or 0)
                    c["nullUris"].append(pc.sum(nullUri.cast("int64")).as_py() or 0)
                    c["nullLabels"].append(
                        pc.sum(pc.and_(fine, pc.is_null(t.column("label"))).cast("int64")).as_py() or 0)
                    c["usable"].append(pc.sum(usable.cast("int64")).as_py() or 0)
                    labels = pc.filter(t.column("label"), usable)
                    if kind == "onehot":
                        labels, low, high = pc.list_value_length(labels), "widthMin", "widthMax"
                    else:
                        low, high = "labelMin", "labelMax"
                    if len(labels):
                        c[low].append(pc.min(labels).as_py())
                        c[high].append(pc.max(labels).as_py())
                row = {n: [sum(c[n])] for n in names[:5]}
                row.update({n: [(min if n.endswith("Min") else max)(c[n]) if c[n] else None]
                            for n in names[5:]})
                yield pa.RecordBatch.from_pydict(row, schema)

    ddl = ", ".join(f"{n} long" for n in names)
    perFile = spark.createDataFrame([(f,) for f in files], "path string") \
        .mapInArrow(fileCounts, ddl).collect()
    for row in perFile:
        for n in names[:5]:
            counts[n] += row[n]
        for n in names[5:]:
            if row[n] is not None:
                pick = min if n.endswith("Min") else max
                counts[n] = row[n] if counts[n] is None else pick(counts[n], row[n])
    return counts


def usableRows(storeDir, validation, cut):
    """The store's row groups in a fixed order (files by path, row groups in file order), each
    with the positions of its usable rows in the training (or validation) fold.

    Reads only the small columns: the tensor column is read by :func:`readRows`.
    """
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from sparkdl.utils.fs import filesystemFor

    plan = []
    filesystem, root = filesystemFor(storeDir)
    data = ds.dataset(root, format="parquet", filesystem=filesystem)
    for fragment in sorted(data.get_fragments(), key=lambda f: f.path):
        for group in fragment.split_by_row_group():
            t = group.to_table(columns=["error", "loaded", "label", "fold"])
            inFold = (pc.less(t["fold"], cut) if validation
                      else pc.greater_equal(t["fold"], cut))
            usable = pc.and_(pc.and_(pc.is_null(t["error"]), t["loaded"]),
                             pc.and_(pc.is_valid(t["label"]), inFold))
            plan.append((group, np.flatnonzero(usable.to_numpy(zero_copy_only=False))))
    return plan


def shard(plan, rank, size):
    """Rank ``rank``'s part of ``plan`` (from :func:`usableRows`): the ``rank``-th of
    ``size`` contiguous ranges of the usable rows in plan order, sizes differing by at most
    one row. The shards are disjoint, cover every usable row, and each rank reads only the row
    groups its range touches."""
    total = sum(len(positions) for _, positions in plan)
    lo, hi = total * rank // size, total * (rank + 1) // size
    part, start = [], 0
    for group, positions in plan:
        a, b = max(lo - start, 0), min(hi - start, len(positions))
        if a < b:
            part.append((group, positions[a:b]))
        start += len(positions)
    return part


def readRows(part, inputShape, kind):
    """Yield (x, y) numpy batches of the rows of ``part``, one row group at a time."""
    import numpy as np

    for group, positions in part:
        t = group.to_table(columns=["x", "label"]).take(positions)
        x = t.column("x").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        x = x.reshape((len(t),) + inputShape)
        label = t.column("label").combine_chunks()
        y = (label.flatten().to_numpy(zero_copy_only=False).reshape(len(t), -1)
             if kind == "onehot" else label.to_numpy(zero_copy_only=False))
        yield x.astype(np.float32, copy=False), y


def tfDataset(part, inputShape, kind, batchSize, shuffleSeed=None, repeat=False):
    """A tf.data pipeline streaming ``part``'s rows in batches of ``batchSize``; shuffled
    within a bounded buffer when ``shuffleSeed`` is given (memory is the batch's, not the
    data's); endless with ``repeat`` (cycling through the rows)."""
    import tensorflow as tf

    ySpec = (tf.TensorSpec((None, None), tf.float32) if kind == "onehot"
             else tf.TensorSpec((None,), tf.int32))
    spec = (tf.TensorSpec((None,) + inputShape, tf.float32), ySpec)
    d = tf.data.Dataset.from_generator(lambda: readRows(part, inputShape, kind),
                                       output_signature=spec).unbatch()
    if shuffleSeed is not None:
        d = d.shuffle(4 * batchSize, seed=shuffleSeed)
    if repeat:
        d = d.repeat()
    return d.batch(batchSize).prefetch(1)
