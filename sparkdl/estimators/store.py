"""The estimator's data store: the loader's outputs and the labels, written once to Parquet
and streamed back to the training processes in batches.

- :func:`materialize` (driver): runs ``imageLoader`` on the executors and writes
  ``x, error, loaded, label, fold`` under ``storeDir``; returns the row counts and the label kind.
- :func:`usableRows`, :func:`shard`, :func:`readRows`, :func:`tfDataset` (training process):
  which stored rows train (or validate), one rank's contiguous share of them, and a
  ``tf.data`` pipeline that streams them with memory bounded by the batch.
"""
from pyspark.sql import functions as F
from pyspark.sql.types import IntegralType

__all__ = ["materialize", "usableRows", "shard", "readRows", "tfDataset"]


def materialize(dataset, inputCol, labelCol, loader, storeDir):
    """Write ``x, error, loaded, label, fold`` for every row to Parquet under ``storeDir``.

    :return: ``(counts, kind)``: the row counts (``rows``, ``loaderErrors``, ``nullUris``,
        ``nullLabels``, ``usable``) and the label kind (``"onehot"`` or ``"index"``).
    """
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import VectorUDT

    from sparkdl.engine.image_file_udf import loaderArraysUdf

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
    # Small row groups keep a training task's read buffer small; "loaded" lets the counts
    # below read no tensor column at all.
    loaded.select(F.col("_loaded.x").alias("x"), F.col("_loaded.error").alias("error"),
                  F.col("_loaded.x").isNotNull().alias("loaded"), "label", "fold") \
        .write.mode("overwrite").option("parquet.block.size", 16 * 1024 * 1024).parquet(storeDir)
    stored = dataset.sparkSession.read.parquet(storeDir).select("loaded", "error", "label")
    counts = stored.select(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.col("error").isNotNull().cast("int")).alias("loaderErrors"),
        F.sum((F.col("error").isNull() & ~F.col("loaded")).cast("int")).alias("nullUris"),
        F.sum((F.col("error").isNull() & F.col("loaded") & F.col("label").isNull())
              .cast("int")).alias("nullLabels"),
    ).first().asDict()
    counts = {k: int(v or 0) for k, v in counts.items()}
    counts["usable"] = counts["rows"] - counts["loaderErrors"] - counts["nullUris"] - counts["nullLabels"]
    return counts, kind


def usableRows(storeDir, validation, cut):
    """The store's row groups in a fixed order (files by path, row groups in file order), each
    with the positions of its usable rows in the training (or validation) fold.

    Reads only the small columns: the tensor column is read by :func:`readRows`.
    """
    import numpy as np
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    plan = []
    data = ds.dataset(storeDir, format="parquet")
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
