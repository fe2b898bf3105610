"""The estimator's checks of the training data against the model, on the driver before any
training starts, so that a mismatch fails ``fit`` with one line naming the column, what it
holds and what the model expects, not deep inside Keras in a training task.

- :func:`checkLoaderShape`: ``imageLoader``'s arrays for the first few labelled rows (a
  bounded sample, loaded on the executors like the store's rows) against the model's input.
- :func:`checkLabels`: the label kind against the loss, and the usable rows' label range
  (all rows: counted while the store is read back, see
  :func:`sparkdl.estimators.store.materialize`) against the model's output units.
"""
from sparkdl.engine.image_file_udf import formatShape

__all__ = ["SAMPLE_ROWS", "checkLoaderShape", "checkLabels"]

#: Rows whose loader output :func:`checkLoaderShape` checks.
SAMPLE_ROWS = 4

SPARSE_LOSSES = {"sparse_categorical_crossentropy", "SparseCategoricalCrossentropy"}
DENSE_ONLY_LOSSES = {"categorical_crossentropy", "CategoricalCrossentropy", "kl_divergence",
                     "categorical_hinge", "CategoricalHinge"}


def _fits(shape, inputShape):
    shape = tuple(shape)
    if len(shape) == len(inputShape) + 1 and shape[0] == 1:  # 1 x H x W x C, as served
        shape = shape[1:]
    return len(shape) == len(inputShape) and all(
        want is None or want == got for got, want in zip(shape, inputShape))


def checkLoaderShape(dataset, inputCol, labelCol, loader, inputShape, sampleRows=SAMPLE_ROWS):
    """Run ``loader`` on the executors for the first ``sampleRows`` rows with a URI and a
    label, and check each array's shape against ``inputShape`` (the model's, without the
    batch dimension). A row whose loader fails is left to the store (a skipped row).

    :raises ValueError: naming ``imageLoader``, ``inputCol``, the URI and both shapes.
    """
    from pyspark.sql import functions as F

    if inputShape is None:
        return
    uris = [r[0] for r in dataset.where(F.col(inputCol).isNotNull() & F.col(labelCol).isNotNull())
            .select(inputCol).take(sampleRows)]
    if not uris:
        return

    def shapes(batches):
        import numpy as np
        import pyarrow as pa

        from sparkdl.utils.rows import RowErrors

        for batch in batches:
            uris = batch.column(0).to_pylist()
            out, errors = [None] * len(uris), RowErrors(len(uris))
            for i, uri in enumerate(uris):
                with errors.attempt(i, "imageLoader"):  # a bad row: the store gives its reason
                    out[i] = list(np.shape(np.asarray(loader(uri))))
            yield pa.RecordBatch.from_pydict(
                {"uri": batch.column(0), "shape": pa.array(out, pa.list_(pa.int64()))})

    spark = dataset.sparkSession
    sample = spark.createDataFrame([(u,) for u in uris], "uri string") \
        .mapInArrow(shapes, "uri string, shape array<long>").collect()
    for row in sample:
        if row.shape is not None and not _fits(row.shape, inputShape):
            raise ValueError(
                f"imageLoader returned an array of shape {formatShape(row.shape)} for inputCol "
                f"{inputCol!r} ({row.uri!r}); the model's input is {formatShape(inputShape)}")


def checkLabels(counts, kind, loss, outputShape, labelCol):
    """Check the label kind against ``loss``, and the usable rows' labels (``counts`` from
    :func:`sparkdl.estimators.store.materialize`) against the model's output: class indices
    in ``0..units-1`` with a sparse loss, one-hot vectors of ``units`` values.

    :param outputShape: the model's output shape without the batch dimension, or None.
    :raises ValueError: naming ``labelCol`` (or ``kerasLoss``), the value and the expectation.
    """
    if kind == "index" and loss in DENSE_ONLY_LOSSES:
        raise ValueError(f"kerasLoss {loss!r} needs one-hot vector labels, but labelCol "
                         f"{labelCol!r} holds class indices: use "
                         "'sparse_categorical_crossentropy'")
    if kind == "onehot" and loss in SPARSE_LOSSES:
        raise ValueError(f"kerasLoss {loss!r} needs integer class labels, but labelCol "
                         f"{labelCol!r} holds vectors: use 'categorical_crossentropy'")
    if outputShape is None or len(outputShape) != 1 or outputShape[0] is None:
        return  # units unknown: nothing to compare with
    units = outputShape[0]
    if kind == "index" and loss in SPARSE_LOSSES:
        low, high = counts.get("labelMin"), counts.get("labelMax")
        for bad in (high, low):
            if bad is not None and not 0 <= bad < units:
                raise ValueError(f"labelCol {labelCol!r} has {bad}; the model's output has "
                                 f"{units} units (labels 0..{units - 1} for {loss})")
    if kind == "onehot":
        for width in (counts.get("widthMin"), counts.get("widthMax")):
            if width is not None and width != units:
                raise ValueError(f"labelCol {labelCol!r} has one-hot vectors of size {width}; "
                                 f"the model's output has {units} units")
