"""SavedModel signatures in the engine: shipped once, loaded once per worker, fed from Arrow.

- :func:`loadSignature`: a SavedModel zip (see :class:`sparkdl.graph.input.TFInputGraph`),
  shipped by :mod:`sparkdl.engine.shipping` (:func:`~sparkdl.engine.shipping.savedModel`), is
  extracted to a temporary directory of the worker process, ``tf.saved_model.load``\\ ed once
  per Python worker and called as ``{input: array} -> {output: array}``. Executors never read
  the driver's files.
- :func:`signatureUdf`: the iterator ``arrow_udf`` for numeric columns (scalars, arrays, arrays
  of arrays) -> one ``array<...>`` per signature output, in a struct.
- :func:`imageSignatureUdf`: the same for an image-struct column -> one output, as an array or
  as a float32 image struct.

Rows are fed without per-row Python objects where the column allows it: Arrow list offsets
and value buffers are read as numpy arrays and reshaped. A chunk of ``batchSize`` rows is
grouped by the rows' shapes (one group when the signature fixes every dimension), so rows of a
different, valid shape are still computed. A null row, a null element, a ragged row, or a row
whose shape the signature cannot take gives a null output, never a failed task.
"""
import io
import os
import zipfile
from typing import Iterator, Tuple

import numpy as np
import pyarrow as pa

from sparkdl.engine.codec import groupByShape

__all__ = [
    "loadSignature",
    "OUTPUT_TYPES",
    "outputSparkType",
    "columnElementType",
    "signatureUdf",
    "imageSignatureUdf",
]

# -- loading ---------------------------------------------------------------------------------


def _extract(data, key):
    """Extract the SavedModel zip into a new temporary directory of this process."""
    import tempfile

    d = tempfile.mkdtemp(prefix=f"sparkdl-savedmodel-{os.getpid()}-{key[:12]}-")
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for name in z.namelist():
            target = os.path.realpath(os.path.join(d, name))
            if not target.startswith(os.path.realpath(d) + os.sep):
                raise ValueError(f"unsafe path {name!r} in SavedModel zip")
        z.extractall(d)
    return d


class _LoadedSignature:
    """A loaded SavedModel's signature function; keeps the loaded object alive (a signature
    whose SavedModel is garbage-collected loses its variables)."""

    def __init__(self, loaded, fn):
        self.loaded = loaded
        self.fn = fn
        self.inputs = dict(fn.structured_input_signature[1])

    def __call__(self, tensors):
        """``{input name: numpy array}`` -> ``{output name: numpy array}``; inputs are cast to
        the signature's dtypes."""
        import tensorflow as tf

        feed = {}
        for name, value in tensors.items():
            t = tf.convert_to_tensor(value)
            dtype = self.inputs[name].dtype
            feed[name] = t if t.dtype == dtype else tf.cast(t, dtype)
        return {k: v.numpy() for k, v in self.fn(**feed).items()}


def loadSignature(data, key, signatureDefKey, tags):
    """Extract a SavedModel zip, load it and return its signature ``signatureDefKey`` as a
    callable ``{input: array} -> {output: array}`` (the SavedModel's files are kept while the
    process lives only when it has assets, which may be read lazily)."""
    import atexit
    import shutil

    import tensorflow as tf

    d = _extract(data, key)
    try:
        loaded = tf.saved_model.load(d, tags=list(tags) if tags else None)
        fn = loaded.signatures[signatureDefKey]
    except BaseException:
        shutil.rmtree(d, ignore_errors=True)
        raise
    assets = os.path.join(d, "assets")
    if os.path.isdir(assets) and os.listdir(assets):
        # Assets (vocabularies...) may be read lazily: keep the files while the process lives.
        atexit.register(shutil.rmtree, d, True)
    else:
        shutil.rmtree(d, ignore_errors=True)
    return _LoadedSignature(loaded, fn)


# -- types -----------------------------------------------------------------------------------

#: TF dtype name of a signature output -> (Spark element type, Arrow type, numpy dtype).
OUTPUT_TYPES = {
    "float16": ("float", pa.float32(), np.float32),
    "bfloat16": ("float", pa.float32(), np.float32),
    "float32": ("float", pa.float32(), np.float32),
    "float64": ("double", pa.float64(), np.float64),
    "int8": ("int", pa.int32(), np.int32),
    "int16": ("int", pa.int32(), np.int32),
    "int32": ("int", pa.int32(), np.int32),
    "uint8": ("int", pa.int32(), np.int32),
    "uint16": ("int", pa.int32(), np.int32),
    "int64": ("bigint", pa.int64(), np.int64),
    "uint32": ("bigint", pa.int64(), np.int64),
    "bool": ("boolean", pa.bool_(), np.bool_),
}

#: TF dtype names a signature input may have (numeric; fed from numeric columns).
INPUT_DTYPES = {"float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64",
                "uint8", "uint16", "uint32"}


def outputSparkType(dtype):
    """The Spark element type (``"float"``...) of a signature output dtype, or None."""
    entry = OUTPUT_TYPES.get(dtype)
    return entry[0] if entry else None


def columnElementType(dataType):
    """``(depth, element type)`` of a numeric column type (depth 0 scalar, 1 array, 2 array of
    arrays...), or None when it is not a (nested array of a) numeric type."""
    from pyspark.sql.types import (ArrayType, ByteType, DoubleType, FloatType, IntegerType,
                                   LongType, ShortType)

    depth = 0
    while isinstance(dataType, ArrayType):
        dataType = dataType.elementType
        depth += 1
    numeric = (ByteType, ShortType, IntegerType, LongType, FloatType, DoubleType)
    return (depth, dataType) if isinstance(dataType, numeric) else None


# -- running a chunk -------------------------------------------------------------------------


def _runChunk(signature, feeds, outputNames, n):
    """Feed the valid rows of a chunk, grouped by shape, to the signature (a
    :class:`sparkdl.engine.shipping.LoadedModel`).

    :return: ``{output: [(rows, array)]}``; each array's first dimension is its rows.
    """
    valid = np.ones(n, bool)
    for feed in feeds.values():
        valid &= feed.valid
    validRows = np.flatnonzero(valid)
    shapes = np.hstack([feed.shapes[validRows] for feed in feeds.values()]
                       + [np.zeros((len(validRows), 0), np.int64)])
    pieces = {name: [] for name in outputNames}
    for rows in groupByShape(validRows, shapes):
        out = signature.predict({name: feed.stack(rows) for name, feed in feeds.items()})
        for name in outputNames:
            value = np.asarray(out[name])
            if value.ndim == 0 or value.shape[0] != len(rows):
                raise ValueError(
                    f"signature output {name!r} has shape {value.shape} for a batch of "
                    f"{len(rows)} rows; sparkdl needs outputs whose first dimension is the "
                    "batch (one entry per row)")
            pieces[name].append((rows, value))
    return pieces


def _structType(outputs):
    fields = ",".join(f"_{i}:array<{sparkType}>" for i, (_, sparkType) in enumerate(outputs))
    return f"struct<{fields}>"


def signatureUdf(handle, inputs, outputs, batchSize=256):
    """Build the Arrow UDF ``numeric columns -> struct of the signature's outputs``.

    :param handle: :class:`sparkdl.engine.shipping.Handle` of the graph.
    :param inputs: ``[(input name, column depth, per-row shape or None)]``, one per column the
        UDF is called with, in that order (see :class:`sparkdl.engine.codec.ArrayFeed` for the
        shapes it takes).
    :param outputs: ``[(output name, Spark element type)]``: the struct's fields ``_0, _1...``
        are ``array<type>`` holding each output flattened per row.
    :param batchSize: rows per signature call; also bounds the task's memory.
    """
    from pyspark.sql.functions import arrow_udf

    inputs = [(name, int(depth), None if shape is None else tuple(shape))
              for name, depth, shape in inputs]
    outputNames = [name for name, _ in outputs]
    arrowTypes = [_arrowOutput(t) for _, t in outputs]
    returnType = _structType(outputs)

    def run(batches):
        from sparkdl.engine.codec import ArrayFeed, listColumn
        from sparkdl.engine.savedmodel import _runChunk
        from sparkdl.utils.worker import iterChunks

        signature = handle.load()
        for chunk in iterChunks(batches, batchSize):
            arrays = chunk if isinstance(chunk, tuple) else (chunk,)
            n = len(arrays[0])
            feeds = {name: ArrayFeed(arr, depth, shape)
                     for (name, depth, shape), arr in zip(inputs, arrays)}
            pieces = _runChunk(signature, feeds, outputNames, n)
            columns = [listColumn(pieces[name], n, at, nt)
                       for name, (at, nt) in zip(outputNames, arrowTypes)]
            yield pa.StructArray.from_arrays(columns, names=[f"_{i}" for i in range(len(columns))])

    if len(inputs) == 1:
        @arrow_udf(returnType)
        def runOne(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
            yield from run(batches)

        return runOne

    @arrow_udf(returnType)
    def runMany(batches: Iterator[Tuple[pa.Array, ...]]) -> Iterator[pa.Array]:
        yield from run(batches)

    return runMany


def _arrowOutput(sparkType):
    for spark, arrowType, npType in OUTPUT_TYPES.values():
        if spark == sparkType:
            return arrowType, npType
    raise ValueError(f"unsupported output element type {sparkType!r}")


def imageSignatureUdf(handle, inputName, outputName, channelOrder, size=None,
                      resizeMethod="bilinear", outputMode="vector", outputType="float",
                      batchSize=64):
    """Build the Arrow UDF ``image struct -> one signature output``.

    :param handle: :class:`sparkdl.engine.shipping.Handle` of the graph.
    :param inputName: the signature input fed with the images (``batch x H x W x C``).
    :param outputName: the signature output returned.
    :param channelOrder: 'L', 'RGB' or 'BGR': what the graph expects
        (:func:`sparkdl.engine.codec.toChannelOrder`).
    :param size: ``(height, width)`` images are resized to, or None to feed them at their
        own size (images of different sizes then go in separate calls).
    :param resizeMethod: Pillow filter name.
    :param outputMode: 'vector': ``array<outputType>``, the output flattened per image;
        'image': a float32 image struct (origin kept), channels taken to be in
        ``channelOrder`` and stored in the struct's BGR order.
    :param outputType: Spark element type of the 'vector' output.
    :param batchSize: images per signature call.
    """
    from pyspark.sql.functions import arrow_udf

    from sparkdl.image.imageIO import imageSchema

    if outputMode == "image":
        returnType = imageSchema.simpleString()
        arrowType = npType = None
    else:
        returnType = f"array<{outputType}>"
        arrowType, npType = _arrowOutput(outputType)
    size = None if size is None else tuple(int(s) for s in size)

    @arrow_udf(returnType)
    def runImages(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
        from sparkdl.engine.codec import ImageFeed, imageColumn, listColumn
        from sparkdl.engine.savedmodel import _runChunk
        from sparkdl.utils.worker import iterChunks

        signature = handle.load()
        for chunk in iterChunks(batches, batchSize):
            n = len(chunk)
            feeds = {inputName: ImageFeed(chunk, channelOrder, size, resizeMethod)}
            pieces = _runChunk(signature, feeds, [outputName], n)
            if outputMode == "image":
                origins = chunk.flatten()[0] if n else pa.array([], pa.string())
                yield imageColumn(pieces[outputName], n, origins, channelOrder)
            else:
                yield listColumn(pieces[outputName], n, arrowType, npType)

    return runImages
