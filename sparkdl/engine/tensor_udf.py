"""The generic tensor inference UDF: array columns in, the model's output as ``array<float>``.

One iterator Arrow UDF per stage (or SQL function). Per chunk of ``batchSize`` rows, each
input column (an Arrow ``list`` / ``large_list`` / ``fixed_size_list`` of integers or floats,
nested to any depth) becomes one numpy tensor ``(rows, *inputShape)`` without per-row Python
objects:

- **Fast path** (no null and every list of the expected length at every level, the usual
  case): the leaf values buffer of the chunk is viewed zero-copy through the list offsets and
  reshaped; the only copy is the cast to the model input's dtype, when the column's differs.
- **General path**: rows are checked level by level with vectorized index arithmetic on the
  offsets, and the valid rows' values are gathered in one numpy ``take``.

A column is either *flat* (one level of lists holding ``prod(inputShape)`` numbers, in C
order) or *nested* with one list level per input dimension (``array<array<float>>`` for an
input of shape ``(4, 6)``). Row rules, the same for every model:

- a null row, a null element at any level, or a list of the wrong length at any level makes
  that row's output null; the task never fails for a row's data;
- for a multi-input model, a row is predicted only when all its inputs are valid;
- a column of the wrong *type* (not a list of numbers, or of another nesting depth) fails
  the task with a message that names the column and the expected shape; stages check this
  before any Spark job starts (:func:`tensorColumn`), only SQL functions (whose argument
  types Spark does not tell the function in advance) find it at run time.

The model's output for each valid row is flattened (C order) into the ``array<float>``.
Models with several outputs are refused where the signature is read
(:func:`signatureOf`): wrap them with ``keras.Model(m.inputs, m.outputs[i])`` or
concatenate the outputs in the model.
"""
import math
from collections import namedtuple
from typing import Iterator, Tuple

import numpy as np
import pyarrow as pa

from sparkdl.engine.codec import columnToTensor, expectedColumns, shapeText

__all__ = [
    "TensorInput",
    "ModelSignature",
    "signatureOf",
    "tensorColumn",
    "tensorModelUdf",
    "autoBatchSize",
]

#: One model input: its Keras name, shape without the batch dimension, numpy dtype name.
TensorInput = namedtuple("TensorInput", ["name", "shape", "dtype"])
#: A model's inputs (in the order the model takes them) and its output shape (no batch dim).
ModelSignature = namedtuple("ModelSignature", ["inputs", "outputShape"])


# ---------------------------------------------------------------------------------------------
# The model's signature, read once on the driver.

def signatureOf(model):
    """:class:`ModelSignature` of a loaded Keras model (read on the driver with
    :meth:`sparkdl.engine.shipping.Handle.inspect`).

    :raises ValueError: the model has no defined inputs (a subclassed model that was never
        built), an input dimension other than the batch one is unknown (``None``), an input is
        not numeric, or the model has more than one output.
    """
    try:
        inputs, outputs = list(model.inputs), list(model.outputs)
    except (AttributeError, ValueError) as e:
        raise ValueError("the Keras model has no defined inputs/outputs; use a Functional or "
                         f"Sequential model built with keras.Input ({e})") from e
    if len(outputs) != 1:
        names = [getattr(o, "name", "?") for o in outputs]
        raise ValueError(
            f"the Keras model has {len(outputs)} outputs {names}; sparkdl returns one array per "
            "row, so give it a single-output model, e.g. keras.Model(model.inputs, "
            "model.outputs[0]), or concatenate the outputs inside the model")
    specs = []
    for tensor in inputs:
        name = getattr(tensor, "name", None) or f"input_{len(specs)}"
        shape = tuple(tensor.shape)[1:]
        if any(d is None for d in shape):
            raise ValueError(
                f"model input {name!r} has shape {shapeText(tuple(tensor.shape))}: every "
                "dimension except the batch one must be known to map array columns onto it")
        dtypeName = str(getattr(tensor, "dtype", "float32")).replace("tf.", "")
        try:
            dtype = np.dtype(dtypeName)
        except TypeError:  # e.g. bfloat16, which numpy lacks: feed float32, Keras casts
            dtype = np.dtype("float32") if "float" in dtypeName else np.dtype(object)
        if dtype.kind not in "biuf":
            raise ValueError(f"model input {name!r} has dtype {dtype}; only numeric inputs "
                             "can be fed from array columns")
        specs.append(TensorInput(name, tuple(int(d) for d in shape), dtype.name))
    outShape = tuple(outputs[0].shape)[1:]
    return ModelSignature(tuple(specs), outShape)


# ---------------------------------------------------------------------------------------------
# Spark-side column checks (before any job).

def tensorColumn(dataset, column, tensorInput, param="inputCol"):
    """Check that ``dataset[column]`` can feed ``tensorInput`` and return the Column to pass
    to :func:`tensorModelUdf`.

    Accepted: an array of integers or floats, flat or nested with one level per input
    dimension (``ByteType`` ... ``DoubleType`` leaves), or an ML ``Vector`` (used as a flat
    array). Array lengths are only known per row; rows that do not fit give a null output.

    The column must exist (:func:`sparkdl.transformers.stage.checkColumn`).

    :raises TypeError: its type cannot feed the input; the message names ``param``, the
        column, the model input and its shape.
    """
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, DecimalType, NumericType

    dataType = dataset.schema[column].dataType
    shape = tensorInput.shape
    what = (f"{param} {column!r} feeds model input {tensorInput.name!r} of shape "
            f"{shapeText(shape)} and must be {expectedColumns(shape)}")
    if isinstance(dataType, VectorUDT):
        # vector_to_array fails on null; a null vector is a null row like any other.
        return F.when(F.col(column).isNotNull(), vector_to_array(F.col(column), "float32"))
    depth, leaf = 0, dataType
    while isinstance(leaf, ArrayType):
        depth, leaf = depth + 1, leaf.elementType
    if depth == 0 or not isinstance(leaf, NumericType) or isinstance(leaf, DecimalType):
        raise TypeError(f"{what}; got {dataType.simpleString()}")
    if depth not in (1, len(shape)):
        raise TypeError(f"{what}; got {dataType.simpleString()} (rank {depth})")
    return F.col(column)


# ---------------------------------------------------------------------------------------------
# Arrow -> numpy, with the codec.

def _chunkTensors(columns, inputs, names):
    """All inputs of one chunk -> (list of tensors over the common valid rows, rows)."""
    tensors, rowSets = [], []
    for column, spec, name in zip(columns, inputs, names):
        tensor, rows = columnToTensor(column, spec.shape, spec.dtype, name)
        tensors.append(tensor)
        rowSets.append(rows)
    if len(tensors) == 1:
        return tensors, rowSets[0]
    common = rowSets[0]
    for rows in rowSets[1:]:
        common = np.intersect1d(common, rows, assume_unique=True)
    out = []
    for tensor, rows in zip(tensors, rowSets):
        out.append(tensor if len(rows) == len(common) else tensor[np.isin(rows, common)])
    return out, common


# ---------------------------------------------------------------------------------------------
# The UDF.

#: With ``batchSize=None``, a chunk holds as many rows as fit in this many bytes of input
#: tensors (never more than the Arrow batch Spark sends, 4096 rows from Parquet, else
#: ``spark.sql.execution.arrow.maxRecordsPerBatch``).
AUTO_BATCH_BYTES = 16 << 20


def autoBatchSize(inputs):
    """Rows per chunk for ``batchSize=None``: :data:`AUTO_BATCH_BYTES` of input tensors."""
    rowBytes = sum(math.prod(i.shape) * np.dtype(i.dtype).itemsize for i in inputs)
    return max(1, AUTO_BATCH_BYTES // max(1, rowBytes))


def tensorModelUdf(handle, inputs, batchSize=None, names=None):
    """Build the Arrow UDF ``array column(s) -> array<float>`` for a model.

    :param handle: :class:`sparkdl.engine.shipping.Handle` of the Keras model.
    :param inputs: the model's inputs as :class:`TensorInput` (``signatureOf(model).inputs``),
        in the order the model takes them; the UDF takes one column per input, same order.
    :param batchSize: rows per ``predict_on_batch`` call (also bounds the task's memory);
        None: :func:`autoBatchSize`, e.g. the whole Arrow batch for rows of 64 floats, 27
        rows for 224 x 224 x 3 floats.
    :param names: how errors name the columns (default ``argument 1``, ...).
    :return: an iterator ``arrow_udf`` returning ``array<float>``: the model's output for
        the row, flattened; null for null or malformed rows.
    """
    from pyspark.sql.functions import arrow_udf

    inputs = tuple(TensorInput(i.name, tuple(i.shape), i.dtype) for i in inputs)
    names = tuple(names or (f"argument {k + 1}" for k in range(len(inputs))))
    if len(names) != len(inputs):
        raise ValueError(f"{len(names)} column names for {len(inputs)} model inputs")
    batchSize = int(batchSize) if batchSize else autoBatchSize(inputs)

    def run(batches):
        from sparkdl.engine.codec import listColumn
        from sparkdl.utils.worker import iterChunks

        model = handle.load()
        for chunk in iterChunks(batches, batchSize):
            columns = chunk if isinstance(chunk, tuple) else (chunk,)
            if len(columns) != len(inputs):
                raise TypeError(f"the model takes {len(inputs)} inputs "
                                f"{[i.name for i in inputs]}, got {len(columns)} columns")
            n = len(columns[0])
            tensors, rows = _chunkTensors(columns, inputs, names)
            out = np.zeros((0, 0), np.float32)
            if len(rows):
                out = model.predict(tensors if len(tensors) > 1 else tensors[0])
                if isinstance(out, (list, tuple, dict)):
                    raise ValueError("the model returned several outputs; sparkdl needs a "
                                     "single-output model")
                out = np.asarray(out, np.float32).reshape(len(rows), -1)
            yield listColumn([(rows, out)] if len(rows) else [], n)

    if len(inputs) == 1:
        @arrow_udf("array<float>")
        def predictTensors(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
            yield from run(batches)
    else:
        @arrow_udf("array<float>")
        def predictTensors(batches: Iterator[Tuple[pa.Array, ...]]) -> Iterator[pa.Array]:
            yield from run(batches)
    return predictTensors
