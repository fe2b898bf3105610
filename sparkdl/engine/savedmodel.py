"""SavedModel signatures in the engine: shipped once, loaded once per worker, fed from Arrow.

- :class:`SavedModelHandle`: a SavedModel (a zip, see :class:`sparkdl.graph.input.TFInputGraph`)
  broadcast once from the driver; :meth:`SavedModelHandle.load` on an executor extracts it to a
  temporary directory of that process, ``tf.saved_model.load``\\ s it once per Python worker
  (:mod:`sparkdl.engine.model_cache`) and returns the signature as a callable. Executors never
  read the driver's files.
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
import hashlib
import io
import os
import threading
import zipfile
from collections import OrderedDict
from typing import Iterator, Tuple

import numpy as np
import pyarrow as pa

__all__ = [
    "SavedModelHandle",
    "savedModelHandle",
    "OUTPUT_TYPES",
    "outputSparkType",
    "columnElementType",
    "signatureUdf",
    "imageSignatureUdf",
    "imageToChannelOrder",
    "CHANNEL_ORDERS",
]

# -- the handle ------------------------------------------------------------------------------


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

    def __init__(self, loaded, fn, directory):
        self.loaded = loaded
        self.fn = fn
        self.directory = directory
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


def _loadSavedModel(data, key, signatureDefKey, tags):
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
        d = None
    return _LoadedSignature(loaded, fn, d)


class SavedModelHandle:
    """A SavedModel serialized once on the driver and broadcast to the executors; the
    :class:`sparkdl.engine.handle.ModelHandle` contract for TensorFlow signatures.

    Pickles small (the broadcast's id and the key), so it can sit in a UDF closure;
    :meth:`load` on an executor returns the worker's cached signature, loading it on first use.

    :param data: the SavedModel as a zip (``bytes(TFInputGraph)``).
    :param signatureDefKey: the signature to call.
    :param tags: the MetaGraph tags to load, or None.
    """

    def __init__(self, data, signatureDefKey="serving_default", tags=None):
        from pyspark import SparkContext

        self.signatureDefKey = signatureDefKey
        self.tags = tuple(tags) if tags else None
        digest = hashlib.sha256(data).hexdigest()
        self.key = f"savedmodel:{digest}:{signatureDefKey}:{','.join(self.tags or ())}"
        self.size = len(data)
        self._broadcast = SparkContext.getOrCreate().broadcast(bytes(data))

    def load(self):
        """The signature, callable as ``fn({input: array}) -> {output: array}`` (on an
        executor: from this worker's cache)."""
        from sparkdl.engine import model_cache, runtime

        runtime.configure()
        return model_cache.get(
            self.key,
            lambda: _loadSavedModel(self._broadcast.value, self.key, self.signatureDefKey,
                                    self.tags),
        )


_handles = OrderedDict()
_handlesLock = threading.Lock()
_MAX_HANDLES = 8


def savedModelHandle(graph):
    """Driver-side: the handle of a :class:`sparkdl.graph.input.TFInputGraph`, built and
    broadcast once per graph content, signature and SparkContext (as
    :func:`sparkdl.engine.handle.cachedHandle` does for Keras models), so repeated
    ``transform`` calls do not rebroadcast it."""
    from pyspark import SparkContext

    fullKey = (SparkContext.getOrCreate().applicationId, graph.key, graph.signatureDefKey,
               graph.tags)
    with _handlesLock:
        if fullKey in _handles:
            _handles.move_to_end(fullKey)
            return _handles[fullKey]
    handle = SavedModelHandle(bytes(graph), graph.signatureDefKey, graph.tags)
    with _handlesLock:
        _handles[fullKey] = handle
        while len(_handles) > _MAX_HANDLES:
            _handles.popitem(last=False)
    return handle


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


# -- feeding numeric columns -----------------------------------------------------------------


def _nullMask(arr):
    if arr.null_count == 0:
        return None
    return np.asarray(arr.is_null().to_numpy(zero_copy_only=False), bool)


def _anyInRange(mask, lo, hi):
    """Per row: does ``mask`` hold a True in ``[lo, hi)``? (vectorized with a cumsum)."""
    if mask is None:
        return np.zeros(len(lo), bool)
    counts = np.concatenate([[0], np.cumsum(mask, dtype=np.int64)])
    return counts[hi] - counts[lo] > 0


def _primitiveValues(arr):
    """The raw values of a primitive Arrow array as a numpy view (nulls hold garbage)."""
    dtype = np.dtype(arr.type.to_pandas_dtype())
    buf = arr.buffers()[1]
    if buf is None or len(arr) == 0:
        return np.zeros(0, dtype)
    return np.frombuffer(buf, dtype, count=len(arr), offset=arr.offset * dtype.itemsize)


class _ArrayFeed:
    """One numeric column of a chunk, as rows of a shape, for one signature input.

    :param arr: the chunk's Arrow array (scalars, lists, lists of lists...).
    :param depth: list nesting depth of the column.
    :param rowShape: the signature's per-row shape (without the batch dimension; None for an
        unknown dimension), or None when the signature's rank is unknown.

    A depth-1 column may feed a signature whose row shape is fully known and of another rank:
    each row must then hold exactly that many values, read in row-major order.
    """

    def __init__(self, arr, depth, rowShape):
        n = len(arr)
        valid = ~(_nullMask(arr) if arr.null_count else np.zeros(n, bool))
        lo, hi = np.arange(n, dtype=np.int64), np.arange(1, n + 1, dtype=np.int64)
        shapes = np.zeros((n, depth), np.int64)
        level = arr
        for d in range(depth):
            if d > 0:
                valid &= ~_anyInRange(_nullMask(level), lo, hi)
            offsets = np.asarray(level.offsets, np.int64)
            lengths = np.diff(offsets)
            # Rectangular rows: every list of a row at this level has the same length.
            changes = np.concatenate([[0], np.cumsum(lengths[1:] != lengths[:-1])])
            last = np.clip(hi - 1, 0, max(len(lengths) - 1, 0))
            first = np.clip(lo, 0, max(len(lengths) - 1, 0))
            nonEmpty = hi > lo
            if len(lengths):
                valid &= ~(nonEmpty & (changes[last] - changes[first] > 0))
                shapes[:, d] = np.where(nonEmpty, lengths[first], 0)
            lo, hi = offsets[lo], offsets[hi]
            level = level.values
        valid &= ~_anyInRange(_nullMask(level), lo, hi)
        self.values = _primitiveValues(level)
        self.lo, self.hi = lo, hi

        if rowShape is not None and len(rowShape) != depth:
            # Flattened rows of a fully known shape (checked by the stage before the job).
            size = int(np.prod(rowShape)) if rowShape else 1
            valid &= (hi - lo) == size
            shapes = np.tile(np.asarray(rowShape, np.int64), (n, 1))
        elif rowShape is not None:
            for d, dim in enumerate(rowShape):
                if dim is not None:
                    valid &= shapes[:, d] == dim
        self.rowShape = None if rowShape is None else tuple(rowShape)
        self.depth = depth
        self.valid = valid
        self.shapes = shapes

    def stack(self, rows):
        """The rows (all of one shape) as one ``len(rows) x shape`` array."""
        shape = tuple(int(s) for s in self.shapes[rows[0]]) if len(rows) else ()
        size = int(np.prod(shape)) if shape else 1
        lo = self.lo[rows]
        if len(rows) and lo[-1] - lo[0] == size * (len(rows) - 1) and np.all(np.diff(lo) == size):
            flat = self.values[lo[0]:lo[0] + size * len(rows)]  # contiguous: a view
        else:
            flat = self.values[(lo[:, None] + np.arange(size)).ravel()]
        return flat.reshape((len(rows),) + shape)


# -- feeding images --------------------------------------------------------------------------

#: channelOrder -> number of channels the graph gets.
CHANNEL_ORDERS = {"L": 1, "RGB": 3, "BGR": 3}

#: ITU-R 601-2 luma weights (as Pillow's ``convert("L")``), applied to R, G, B.
LUMA = (0.299, 0.587, 0.114)


def imageToChannelOrder(bgr, channelOrder, size=None, resizeMethod="bilinear"):
    """One image, as stored in the struct (``H x W x C`` BGR(A) or gray, uint8 or float32),
    -> float32 ``H' x W' x channels`` in ``channelOrder``.

    Steps: alpha is dropped; the image is resized to ``size = (height, width)`` when given
    (:func:`sparkdl.image.imageIO.resizeImage`: 8-bit images through Pillow as 8-bit, float
    ones channel by channel); then 'BGR' keeps the struct's order, 'RGB' swaps it
    (:func:`sparkdl.image.imageIO.rgbToStructOrder`), 'L' takes
    ``0.299 R + 0.587 G + 0.114 B`` in float32 (no rounding); a gray image is repeated
    to 3 channels for 'RGB'/'BGR' and kept as is for 'L'. Values are not rescaled (0-255
    for 8-bit images).
    """
    from sparkdl.image import imageIO

    arr = bgr if bgr.ndim == 3 else bgr[:, :, None]
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if size is not None:
        arr = imageIO.resizeImage(np.ascontiguousarray(arr), size, resizeMethod)
    arr = arr.astype(np.float32)
    if arr.shape[2] == 1:
        return arr if channelOrder == "L" else np.repeat(arr, 3, axis=2)
    if channelOrder == "BGR":
        return arr
    if channelOrder == "RGB":
        return np.ascontiguousarray(imageIO.rgbToStructOrder(arr))
    b, g, r = arr[:, :, 0], arr[:, :, 1], arr[:, :, 2]
    gray = np.float32(LUMA[0]) * r + np.float32(LUMA[1]) * g + np.float32(LUMA[2]) * b
    return gray[:, :, None]


_IMAGE_DTYPES = {0: np.uint8, 16: np.uint8, 24: np.uint8, 5: np.float32, 21: np.float32,
                 29: np.float32}
_IMAGE_CHANNELS = {0: 1, 16: 3, 24: 4, 5: 1, 21: 3, 29: 4}


class _ImageFeed:
    """An image-struct column of a chunk, converted to ``channelOrder`` float32 arrays."""

    def __init__(self, images, channelOrder, size, resizeMethod):
        n = len(images)
        present = np.asarray(images.is_valid().to_numpy(zero_copy_only=False), bool)
        _, heights, widths, _, modes, data = images.flatten()
        heights, widths, modes = (a.fill_null(-1).to_numpy() for a in (heights, widths, modes))
        offsets = np.frombuffer(data.buffers()[1], np.int32, len(data) + 1, data.offset * 4)
        buffer = data.buffers()[2]
        channels = CHANNEL_ORDERS[channelOrder]
        self.arrays = [None] * n
        self.valid = np.zeros(n, bool)
        self.shapes = np.zeros((n, 3), np.int64)
        for i in range(n):
            mode, h, w = int(modes[i]), int(heights[i]), int(widths[i])
            if not present[i] or h <= 0 or w <= 0 or mode not in _IMAGE_DTYPES:
                continue
            dtype = np.dtype(_IMAGE_DTYPES[mode]).newbyteorder("<")
            c = _IMAGE_CHANNELS[mode]
            start, end = int(offsets[i]), int(offsets[i + 1])
            if end - start != h * w * c * dtype.itemsize:
                continue  # malformed struct: data does not match its header
            pixels = np.frombuffer(buffer, dtype, h * w * c, start).reshape(h, w, c)
            arr = imageToChannelOrder(pixels, channelOrder, size, resizeMethod)
            self.arrays[i] = arr
            self.valid[i] = True
            self.shapes[i] = (arr.shape[0], arr.shape[1], channels)

    def stack(self, rows):
        return np.stack([self.arrays[i] for i in rows])


# -- running a chunk -------------------------------------------------------------------------


def _runChunk(signature, feeds, outputNames, n):
    """Feed the valid rows of a chunk, grouped by shape, to the signature.

    :return: ``(validRows, {output: [(rows, array)]})``; each array's first dimension is
        its rows.
    """
    valid = np.ones(n, bool)
    for feed in feeds.values():
        valid &= feed.valid
    validRows = np.flatnonzero(valid)
    pieces = {name: [] for name in outputNames}
    if not len(validRows):
        return validRows, pieces
    keys = np.hstack([feed.shapes[validRows] for feed in feeds.values()] +
                     [np.zeros((len(validRows), 0), np.int64)])
    groups, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)
    for g in range(len(groups)):
        rows = validRows[inverse == g]
        out = signature({name: feed.stack(rows) for name, feed in feeds.items()})
        for name in outputNames:
            value = np.asarray(out[name])
            if value.ndim == 0 or value.shape[0] != len(rows):
                raise ValueError(
                    f"signature output {name!r} has shape {value.shape} for a batch of "
                    f"{len(rows)} rows; sparkdl needs outputs whose first dimension is the "
                    "batch (one entry per row)")
            pieces[name].append((rows, value))
    return validRows, pieces


def _listFromPieces(pieces, n, arrowType, npType):
    """Arrow ``list<arrowType>`` of ``n`` rows from ``[(rows, array)]``: each row's output
    flattened; rows not in any piece are null. Built from numpy buffers, not per row."""
    lengths = np.zeros(n, np.int64)
    mask = np.ones(n, bool)
    for rows, value in pieces:
        lengths[rows] = int(np.prod(value.shape[1:])) if value.ndim > 1 else 1
        mask[rows] = False
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] > np.iinfo(np.int32).max:
        raise ValueError("a chunk's outputs exceed 2**31 values; lower batchSize")
    if len(pieces) == 1:
        values = np.ascontiguousarray(pieces[0][1], npType).reshape(-1)
    else:
        values = np.empty(int(offsets[-1]), npType)
        for rows, value in pieces:
            width = int(np.prod(value.shape[1:])) if value.ndim > 1 else 1
            index = offsets[rows][:, None] + np.arange(width)
            values[index.ravel()] = np.asarray(value, npType).reshape(-1)
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)),
                                    pa.array(values, arrowType), mask=pa.array(mask))


def _structType(outputs):
    fields = ",".join(f"_{i}:array<{sparkType}>" for i, (_, sparkType) in enumerate(outputs))
    return f"struct<{fields}>"


def signatureUdf(handle, inputs, outputs, batchSize=256):
    """Build the Arrow UDF ``numeric columns -> struct of the signature's outputs``.

    :param handle: :class:`SavedModelHandle` of the graph.
    :param inputs: ``[(input name, column depth, per-row shape or None)]``, one per column the
        UDF is called with, in that order (see :class:`_ArrayFeed` for the shapes it takes).
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
        from sparkdl.engine.savedmodel import _ArrayFeed, _listFromPieces, _runChunk
        from sparkdl.utils.worker import iterChunks

        signature = handle.load()
        for chunk in iterChunks(batches, batchSize):
            arrays = chunk if isinstance(chunk, tuple) else (chunk,)
            n = len(arrays[0])
            feeds = {name: _ArrayFeed(arr, depth, shape)
                     for (name, depth, shape), arr in zip(inputs, arrays)}
            _, pieces = _runChunk(signature, feeds, outputNames, n)
            columns = [_listFromPieces(pieces[name], n, at, nt)
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


def _imageStructs(origins, pieces, n, channelOrder):
    """Float32 image structs (BGR order for 3/4 channels) from ``[(rows, N x H x W x C)]``;
    rows not in any piece are null."""
    from sparkdl.image.arrow import IMAGE_ARROW_TYPE
    from sparkdl.image.imageIO import imageTypeByName

    heights = np.full(n, -1, np.int32)
    widths = np.full(n, -1, np.int32)
    nChannels = np.full(n, -1, np.int32)
    modes = np.full(n, -1, np.int32)
    lengths = np.zeros(n, np.int64)
    mask = np.ones(n, bool)
    arrays = []
    for rows, value in pieces:
        value = np.asarray(value, np.float32)
        if value.ndim == 3:
            value = value[..., None]
        if value.ndim != 4 or value.shape[3] not in (1, 3, 4):
            raise ValueError(f"outputMode='image' needs an output of shape (batch, height, "
                             f"width, 1|3|4), got {value.shape}")
        if channelOrder == "RGB" and value.shape[3] in (3, 4):
            value = value[..., [2, 1, 0, 3][:value.shape[3]]]
        _, h, w, c = value.shape
        heights[rows], widths[rows], nChannels[rows] = h, w, c
        modes[rows] = imageTypeByName(f"CV_32FC{c}").ord
        lengths[rows] = h * w * c * 4
        mask[rows] = False
        arrays.append((rows, value))
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] > np.iinfo(np.int32).max:
        raise ValueError("a chunk's output images exceed 2 GiB; lower batchSize")
    data = np.empty(int(offsets[-1]), np.uint8)
    for rows, value in arrays:
        flat = np.ascontiguousarray(value, "<f4").reshape(len(rows), -1).view(np.uint8)
        index = offsets[rows][:, None] + np.arange(flat.shape[1])
        data[index.ravel()] = flat.ravel()
    binary = pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets.astype(np.int32)),
                                                    pa.py_buffer(data)])
    return pa.StructArray.from_arrays(
        [origins, pa.array(heights), pa.array(widths), pa.array(nChannels), pa.array(modes),
         binary],
        fields=list(IMAGE_ARROW_TYPE), mask=pa.array(mask))


def imageSignatureUdf(handle, inputName, outputName, channelOrder, size=None,
                      resizeMethod="bilinear", outputMode="vector", outputType="float",
                      batchSize=64):
    """Build the Arrow UDF ``image struct -> one signature output``.

    :param handle: :class:`SavedModelHandle` of the graph.
    :param inputName: the signature input fed with the images (``batch x H x W x C``).
    :param outputName: the signature output returned.
    :param channelOrder: 'L', 'RGB' or 'BGR': what the graph expects
        (:func:`imageToChannelOrder`).
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
        from sparkdl.engine.savedmodel import (_ImageFeed, _imageStructs, _listFromPieces,
                                               _runChunk)
        from sparkdl.utils.worker import iterChunks

        signature = handle.load()
        for chunk in iterChunks(batches, batchSize):
            n = len(chunk)
            feeds = {inputName: _ImageFeed(chunk, channelOrder, size, resizeMethod)}
            _, pieces = _runChunk(signature, feeds, [outputName], n)
            if outputMode == "image":
                origins = chunk.flatten()[0] if n else pa.array([], pa.string())
                yield _imageStructs(origins, pieces[outputName], n, channelOrder)
            else:
                yield _listFromPieces(pieces[outputName], n, arrowType, npType)

    return runImages
