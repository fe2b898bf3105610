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
(:func:`modelSignature`): wrap them with ``keras.Model(m.inputs, m.outputs[i])`` or
concatenate the outputs in the model.
"""
import math
import threading
from collections import OrderedDict, namedtuple
from typing import Iterator, Tuple

import numpy as np
import pyarrow as pa

__all__ = [
    "TensorInput",
    "ModelSignature",
    "modelSignature",
    "columnToTensor",
    "tensorColumn",
    "tensorModelUdf",
    "autoBatchSize",
]

#: One model input: its Keras name, shape without the batch dimension, numpy dtype name.
TensorInput = namedtuple("TensorInput", ["name", "shape", "dtype"])
#: A model's inputs (in the order the model takes them) and its output shape (no batch dim).
ModelSignature = namedtuple("ModelSignature", ["inputs", "outputShape"])


def _shapeText(shape):
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _expected(shape):
    """Human wording of the columns that fit ``shape``."""
    size = math.prod(shape)
    if len(shape) == 1:
        return f"an array of {size} numbers"
    return (f"a flat array of {size} numbers or a nested array of rank {len(shape)} "
            f"(array{'<array' * (len(shape) - 1)}<number>{'>' * (len(shape) - 1)})")


# ---------------------------------------------------------------------------------------------
# The model's signature, read once on the driver.

_signatures = OrderedDict()
_signaturesLock = threading.Lock()
_MAX_SIGNATURES = 16


def signatureOf(model):
    """:class:`ModelSignature` of a loaded Keras model.

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
                f"model input {name!r} has shape {_shapeText(tuple(tensor.shape))}: every "
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


def modelSignature(handle):
    """Driver-side: the :class:`ModelSignature` of the model behind a
    :class:`~sparkdl.engine.handle.ModelHandle`, loaded once per model (content hash)."""
    from sparkdl.engine.handle import modelFromBytes

    key = (handle.key, handle.safeMode)
    with _signaturesLock:
        if key in _signatures:
            _signatures.move_to_end(key)
            return _signatures[key]
    try:
        model = modelFromBytes(handle._broadcast.value, handle.safeMode)
    except ValueError as e:
        if handle.safeMode and "safe_mode" in str(e):
            raise ValueError(
                "the model holds Python bytecode (e.g. a Lambda layer), which Keras refuses to "
                "load with safe_mode=True; if you trust it, pass safeMode=False. "
                f"Keras said: {e}") from e
        raise
    signature = signatureOf(model)
    with _signaturesLock:
        _signatures[key] = signature
        while len(_signatures) > _MAX_SIGNATURES:
            _signatures.popitem(last=False)
    return signature


# ---------------------------------------------------------------------------------------------
# Spark-side column checks (before any job).

def tensorColumn(dataset, column, tensorInput, param="inputCol"):
    """Check that ``dataset[column]`` can feed ``tensorInput`` and return the Column to pass
    to :func:`tensorModelUdf`.

    Accepted: an array of integers or floats, flat or nested with one level per input
    dimension (``ByteType`` ... ``DoubleType`` leaves), or an ML ``Vector`` (used as a flat
    array). Array lengths are only known per row; rows that do not fit give a null output.

    :raises ValueError: the column does not exist.
    :raises TypeError: its type cannot feed the input; the message names ``param``, the
        column, the model input and its shape.
    """
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql import functions as F
    from pyspark.sql.types import ArrayType, NumericType, DecimalType

    if column not in dataset.columns:
        raise ValueError(f"{param} {column!r} is not a column of the DataFrame {dataset.columns}")
    dataType = dataset.schema[column].dataType
    shape = tensorInput.shape
    what = (f"{param} {column!r} feeds model input {tensorInput.name!r} of shape "
            f"{_shapeText(shape)} and must be {_expected(shape)}")
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
# Arrow -> numpy, vectorized.

def _listDepth(arrowType):
    depth = 0
    while (pa.types.is_list(arrowType) or pa.types.is_large_list(arrowType)
           or pa.types.is_fixed_size_list(arrowType)):
        depth, arrowType = depth + 1, arrowType.value_type
    return depth, arrowType


def _checkArrowType(arrowType, shape, name):
    depth, leaf = _listDepth(arrowType)
    if depth == 0 or not (pa.types.is_integer(leaf) or pa.types.is_floating(leaf)):
        raise TypeError(f"{name} feeds a model input of shape {_shapeText(shape)} and must be "
                        f"{_expected(shape)}; got Arrow type {arrowType}")
    if depth not in (1, len(shape)):
        raise TypeError(f"{name} feeds a model input of shape {_shapeText(shape)} and must be "
                        f"{_expected(shape)}; got Arrow type {arrowType} (rank {depth})")
    return depth


def _level(array):
    """One list level of the chunk: ``(valid, starts, lengths, child)``, where ``child`` is
    the slice of the values that this level's lists cover and ``starts`` index into it."""
    n = len(array)
    if pa.types.is_fixed_size_list(array.type):
        size = array.type.list_size
        child = array.values.slice(array.offset * size, n * size)
        starts = np.arange(n, dtype=np.int64) * size
        lengths = np.full(n, size, np.int64)
    else:
        offsets = array.offsets.to_numpy()  # slice-aware, unlike .values
        child = array.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
        starts = offsets[:-1] - offsets[0]
        lengths = np.diff(offsets)
    return child, starts, lengths


def _validMask(array):
    if array.null_count == 0:
        return None
    return np.asarray(array.is_valid().to_numpy(zero_copy_only=False), bool)


def _allPerRow(ok):
    return ok.all(axis=tuple(range(1, ok.ndim))) if ok.ndim > 1 else ok


def columnToTensor(array, shape, dtype="float32", name="column"):
    """An Arrow list array (one chunk of a column) -> ``(tensor, rows)``.

    ``tensor`` has shape ``(len(rows), *shape)`` and ``dtype``; ``rows`` (int64) are the
    indices of the rows it holds: those that are not null, hold no null, and have the right
    length at every level (see the module doc).

    :raises TypeError: ``array`` is not a list array of numbers of depth 1 or ``len(shape)``.
    """
    shape = tuple(shape)
    depth = _checkArrowType(array.type, shape, name)
    dims = [math.prod(shape)] if depth == 1 else list(shape)
    n = len(array)
    dtype = np.dtype(dtype)

    # Fast path: a regular chunk is one contiguous run of leaf values.
    level, regular = array, True
    for d in dims:
        if level.null_count:
            regular = False
            break
        child, _, lengths = _level(level)
        if not (lengths == d).all():
            regular = False
            break
        level = child
    if regular and level.null_count == 0:
        values = level.to_numpy(zero_copy_only=False)
        return values.reshape((n,) + shape).astype(dtype, copy=False), np.arange(n)

    # General path: positions of each candidate row's elements, one level at a time.
    rows = np.arange(n)
    positions = np.arange(n)  # shape (rows, d0, ..., dk-1): indices into the level's array
    level = array
    for d in dims:
        valid = _validMask(level)
        child, starts, lengths = _level(level)
        ok = lengths[positions] == d
        if valid is not None:
            ok &= valid[positions]
        keep = _allPerRow(ok)
        rows, positions = rows[keep], positions[keep]
        positions = starts[positions][..., None] + np.arange(d)
        level = child
    valid = _validMask(level)
    if valid is not None:
        keep = _allPerRow(valid[positions])
        rows, positions = rows[keep], positions[keep]
        level = level.fill_null(0)
    values = level.to_numpy(zero_copy_only=False)
    tensor = values[positions].reshape((len(rows),) + shape).astype(dtype, copy=False)
    return tensor, rows


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

    :param handle: :class:`sparkdl.engine.handle.ModelHandle` of the Keras model.
    :param inputs: the model's inputs as :class:`TensorInput` (``modelSignature(h).inputs``),
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
        from sparkdl.engine.image_udf import listArray
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
                out = model.predict_on_batch(tensors if len(tensors) > 1 else tensors[0])
                if isinstance(out, (list, tuple, dict)):
                    raise ValueError("the model returned several outputs; sparkdl needs a "
                                     "single-output model")
                out = np.asarray(out, np.float32).reshape(len(rows), -1)
            yield listArray(out, rows, n)

    if len(inputs) == 1:
        @arrow_udf("array<float>")
        def predictTensors(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
            yield from run(batches)
    else:
        @arrow_udf("array<float>")
        def predictTensors(batches: Iterator[Tuple[pa.Array, ...]]) -> Iterator[pa.Array]:
            yield from run(batches)
    return predictTensors
