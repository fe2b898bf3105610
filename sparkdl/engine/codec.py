"""The engine's one codec: Arrow columns in, numpy batches to the model, Arrow columns out.

Every UDF builder of the engine is a composition of these pieces:

- **Images in.** :func:`structPixels` views each image struct's pixels in the Arrow buffer
  (``H x W x C`` in the struct's BGR(A) / gray order; the modes are
  :mod:`sparkdl.image.imageIO`'s one table). :func:`toChannelOrder` is the one channel-order
  conversion: alpha dropped, resized, then 'RGB', 'BGR' or 'L' (the swap itself is
  :func:`sparkdl.image.imageIO.rgbToStructOrder`). :func:`fileImages` decodes image file
  bytes or URIs by sparkdl's decoding rule; :func:`imagesToTensor` stacks any of these into
  one RGB batch; :class:`ImageFeed` feeds them at their own sizes.
- **Numbers in.** :class:`ArrayFeed` reads list columns, flat or nested, into rows of the
  shapes they hold (or a wanted one); :func:`columnToTensor` is its fixed-shape front with a
  zero-copy path for regular chunks. No per-row Python objects.
- **Rows grouped by shape.** :func:`groupByShape`: one model call per distinct row shape, so
  a row's output never depends on which rows share its batch.
- **Outputs out.** :func:`listColumn` (``array<...>`` from ``[(rows, array)]`` pieces, built
  from numpy buffers) and :func:`imageColumn` (float32 image structs, stored in BGR order).

A row that cannot be decoded or fed is left out of the batch and its output is null: the
codec never fails a task for a row's data. Its reason is worded by
:mod:`sparkdl.utils.rows` (pass a ``RowErrors`` to collect them).
"""
import math

import numpy as np
import pyarrow as pa

__all__ = [
    "CHANNEL_ORDERS",
    "structPixels",
    "toChannelOrder",
    "fileImages",
    "imagesToTensor",
    "ImageFeed",
    "ArrayFeed",
    "columnToTensor",
    "groupByShape",
    "listColumn",
    "imageColumn",
]

#: channelOrder -> number of channels the model gets.
CHANNEL_ORDERS = {"L": 1, "RGB": 3, "BGR": 3}

#: ITU-R 601-2 luma weights (as Pillow's ``convert("L")``), applied to R, G, B.
LUMA = (0.299, 0.587, 0.114)


# -- images in -------------------------------------------------------------------------------

def structPixels(images, errors=None):
    """Arrow image structs -> one ``H x W x C`` array per row in the struct's order (BGR(A)
    or gray; uint8 or float32), viewing the Arrow buffer; None for a null or invalid image,
    an unsupported mode, or data that does not match the struct's header.

    :param errors: a :class:`sparkdl.utils.rows.RowErrors` of the chunk, given the reason of
        each row that is not null but cannot be used (invalid image, unknown mode, malformed
        struct).
    """
    from sparkdl.image.imageIO import imageTypeByMode
    from sparkdl.utils.rows import STRUCT, RowErrors, malformedStruct

    n = len(images)
    if n == 0:
        return []
    errors = RowErrors(n) if errors is None else errors
    present = np.asarray(images.is_valid().to_numpy(zero_copy_only=False), bool)
    # flatten() applies the struct's slice offset to its children (field() may not).
    _, heights, widths, _, modes, data = images.flatten()
    heights, widths, modes = (a.fill_null(-1).to_numpy() for a in (heights, widths, modes))
    offsets = np.frombuffer(data.buffers()[1], np.int32, len(data) + 1, data.offset * 4)
    buffer = data.buffers()[2]
    out = [None] * n
    for i in range(n):
        if not present[i]:
            continue
        h, w = int(heights[i]), int(widths[i])
        if h <= 0 or w <= 0:
            errors.fail(i, f"invalid image (height {h}, width {w})")
            continue
        with errors.attempt(i, STRUCT):
            imageType = imageTypeByMode(int(modes[i]))
        if errors.failed(i):
            continue
        dtype, c = imageType.dtype, imageType.nChannels
        start, end = int(offsets[i]), int(offsets[i + 1])
        if end - start != h * w * c * dtype.itemsize:
            errors.fail(i, malformedStruct(end - start, h, w, c, dtype.itemsize))
            continue
        out[i] = np.frombuffer(buffer, dtype, h * w * c, start).reshape(h, w, c)
    return out


def toChannelOrder(pixels, channelOrder, size=None, resizeMethod="bilinear", dtype=np.float32):
    """The one channel-order conversion: an image as stored in the struct (``H x W x C``
    BGR(A) or gray, uint8 or float32) -> ``H' x W' x channels`` in ``channelOrder``.

    Steps: alpha is dropped; the image is resized to ``size = (height, width)`` when given
    (:func:`sparkdl.image.imageIO.resizeImage`: 8-bit images through Pillow as 8-bit, float
    ones channel by channel); then 'BGR' keeps the struct's order, 'RGB' swaps it
    (:func:`sparkdl.image.imageIO.rgbToStructOrder`), 'L' takes
    ``0.299 R + 0.587 G + 0.114 B`` in float32 (no rounding); a gray image is repeated to 3
    channels for 'RGB'/'BGR' and kept as is for 'L'. Values are not rescaled (0-255 for 8-bit
    images).

    :param dtype: the result's dtype; None keeps the stored one (uint8 or float32).
    """
    from sparkdl.image import imageIO

    arr = pixels if pixels.ndim == 3 else pixels[:, :, None]
    if (channelOrder == "RGB" and arr.dtype == np.uint8 and arr.shape[2] in (3, 4)
            and size is not None):
        # The usual case (8-bit photos into an RGB model): Pillow unpacks BGR(X) straight into
        # RGB while copying the pixels in, so neither alpha nor the channel swap costs a pass.
        # Pillow resizes channels independently: the values are those of the general path.
        rgb = imageIO.bgrToPIL(arr)
        out = np.asarray(imageIO.resizeImage(rgb, size, resizeMethod))
        return out if dtype is None else out.astype(dtype)
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if size is not None:
        arr = imageIO.resizeImage(np.ascontiguousarray(arr), size, resizeMethod)
    if dtype is not None:
        arr = arr.astype(dtype)
    if arr.shape[2] == 1:
        return arr if channelOrder == "L" else np.repeat(arr, 3, axis=2)
    if channelOrder == "BGR":
        return arr
    if channelOrder == "RGB":
        return np.ascontiguousarray(imageIO.rgbToStructOrder(arr))
    b, g, r = (arr[:, :, k].astype(np.float32) for k in range(3))
    gray = np.float32(LUMA[0]) * r + np.float32(LUMA[1]) * g + np.float32(LUMA[2]) * b
    return gray[:, :, None]


def fileImages(files, errors=None):
    """Image file bytes (binary) or URIs (string, read on the executor) -> one RGB Pillow image
    per row, decoded by :func:`sparkdl.image.imageIO.decodeToPIL`; None for a null, unreadable
    or undecodable file, whose reason goes to ``errors`` (a
    :class:`sparkdl.utils.rows.RowErrors` of the chunk) when given."""
    from sparkdl.image.imageIO import decodeToPIL
    from sparkdl.utils.fs import readBytes
    from sparkdl.utils.rows import DECODE, READ, RowErrors

    fromUri = pa.types.is_string(files.type) or pa.types.is_large_string(files.type)
    items = files.to_pylist()
    errors = RowErrors(len(items)) if errors is None else errors
    out = [None] * len(items)
    for i, item in enumerate(items):
        if item is None:
            continue
        with errors.attempt(i, READ if fromUri else DECODE):
            out[i] = decodeToPIL(readBytes(item) if fromUri else item).convert("RGB")
    return out


def imagesToTensor(images, size, resizeMethod="bilinear", errors=None, out=None):
    """A batch of images -> ``(tensor, validRows)``.

    ``images`` is an Arrow array of Spark image structs, of image file bytes (binary), or of
    image URIs (string; read on the executor). Bytes and URIs are decoded here by sparkdl's
    decoding rule, so decoded pixels never travel through the JVM. ``tensor`` is float32
    ``len(validRows) x height x width x 3`` in RGB order with values as stored (0-255 for
    8-bit images), ``validRows`` the indices of the rows it holds; null, invalid and
    undecodable images are left out (their outputs will be null), with their reasons in
    ``errors`` (a :class:`sparkdl.utils.rows.RowErrors` of the chunk) when given.

    :param out: a float32 ``N x height x width x 3`` array to fill, reused from chunk to chunk
        (``N`` at least the chunk's rows): ``tensor`` is then a view of it. A fresh batch of
        64 photos at 224 is 38 MB of new pages to fault in, about 0.15 ms an image.
    """
    from sparkdl.image.imageIO import resizeImage

    if pa.types.is_struct(images.type):
        items = structPixels(images, errors)

        def rgb(pixels):
            return toChannelOrder(pixels, "RGB", size, resizeMethod, dtype=None)
    else:
        items = fileImages(images, errors)

        def rgb(image):
            return resizeImage(image, size, resizeMethod)
    valid = [i for i, item in enumerate(items) if item is not None]
    shape = (len(valid),) + tuple(size) + (3,)
    if out is not None and out.shape[1:] == shape[1:] and len(out) >= len(valid):
        tensor = out[:len(valid)]
    else:
        tensor = np.empty(shape, np.float32)
    for j, i in enumerate(valid):
        tensor[j] = rgb(items[i])
    return tensor, np.asarray(valid, np.int64)


class ImageFeed:
    """An image-struct column of a chunk, converted to ``channelOrder`` float32 arrays (at
    their own size unless ``size`` is given), for :func:`groupByShape`."""

    def __init__(self, images, channelOrder, size, resizeMethod):
        n = len(images)
        channels = CHANNEL_ORDERS[channelOrder]
        self.arrays = [None] * n
        self.valid = np.zeros(n, bool)
        self.shapes = np.zeros((n, 3), np.int64)
        for i, pixels in enumerate(structPixels(images)):
            if pixels is None:
                continue
            arr = toChannelOrder(pixels, channelOrder, size, resizeMethod)
            self.arrays[i] = arr
            self.valid[i] = True
            self.shapes[i] = (arr.shape[0], arr.shape[1], channels)

    def stack(self, rows):
        return np.stack([self.arrays[i] for i in rows])


# -- numbers in ------------------------------------------------------------------------------

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


def _offsets(level):
    """Offsets of a list array's rows into its (unsliced) ``values``, for variable and
    fixed-size lists alike."""
    if pa.types.is_fixed_size_list(level.type):
        size = level.type.list_size
        return (np.arange(len(level) + 1, dtype=np.int64) + level.offset) * size
    return np.asarray(level.offsets, np.int64)


class ArrayFeed:
    """One numeric column of a chunk, as rows of a shape read from the rows, for
    :func:`groupByShape`.

    :param arr: the chunk's Arrow array (scalars, lists, lists of lists...).
    :param depth: list nesting depth of the column.
    :param rowShape: the per-row shape wanted (without the batch dimension; None for an
        unknown dimension), or None when the rank is unknown.

    A depth-1 column may feed a row shape that is fully known and of another rank: each row
    must then hold exactly that many values, read in row-major order. A null row, a null
    element or a ragged row is not valid.
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
            offsets = _offsets(level)
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
        if not len(rows):
            return self.values[:0].reshape((0,) + tuple(d or 0 for d in self.rowShape or ()))
        shape = tuple(int(s) for s in self.shapes[rows[0]])
        size = int(np.prod(shape)) if shape else 1
        lo = self.lo[rows]
        if len(rows) and lo[-1] - lo[0] == size * (len(rows) - 1) and np.all(np.diff(lo) == size):
            flat = self.values[lo[0]:lo[0] + size * len(rows)]  # contiguous: a view
        else:
            flat = self.values[(lo[:, None] + np.arange(size)).ravel()]
        return flat.reshape((len(rows),) + shape)


def shapeText(shape):
    """``(4, 6)`` -> ``'(4, 6)'``; ``(8,)`` -> ``'(8,)'``."""
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def expectedColumns(shape):
    """Human wording of the columns that fit an input of ``shape``."""
    size = math.prod(shape)
    if len(shape) == 1:
        return f"an array of {size} numbers"
    return (f"a flat array of {size} numbers or a nested array of rank {len(shape)} "
            f"(array{'<array' * (len(shape) - 1)}<number>{'>' * (len(shape) - 1)})")


def _listDepth(arrowType):
    depth = 0
    while (pa.types.is_list(arrowType) or pa.types.is_large_list(arrowType)
           or pa.types.is_fixed_size_list(arrowType)):
        depth, arrowType = depth + 1, arrowType.value_type
    return depth, arrowType


def _checkArrowType(arrowType, shape, name):
    depth, leaf = _listDepth(arrowType)
    if depth == 0 or not (pa.types.is_integer(leaf) or pa.types.is_floating(leaf)):
        raise TypeError(f"{name} feeds a model input of shape {shapeText(shape)} and must be "
                        f"{expectedColumns(shape)}; got Arrow type {arrowType}")
    if depth not in (1, len(shape)):
        raise TypeError(f"{name} feeds a model input of shape {shapeText(shape)} and must be "
                        f"{expectedColumns(shape)}; got Arrow type {arrowType} (rank {depth})")
    return depth


def columnToTensor(array, shape, dtype="float32", name="column"):
    """An Arrow list array (one chunk of a column) -> ``(tensor, rows)`` for an input of a
    fixed ``shape``.

    ``tensor`` has shape ``(len(rows), *shape)`` and ``dtype``; ``rows`` (int64) are the
    indices of the rows it holds: those that are not null, hold no null, and have the right
    length at every level. A column is *flat* (one level of ``prod(shape)`` numbers, C order)
    or *nested* (one level per dimension).

    - Fast path (no null and every list of the expected length at every level, the usual
      case): the leaf values buffer is viewed zero-copy through the list offsets and
      reshaped; the only copy is the cast to ``dtype``, when the column's differs.
    - Otherwise the rows are checked and gathered by :class:`ArrayFeed`, the one reader of
      numeric columns.

    :raises TypeError: ``array`` is not a list array of numbers of depth 1 or ``len(shape)``.
    """
    shape = tuple(shape)
    depth = _checkArrowType(array.type, shape, name)
    dims = [math.prod(shape)] if depth == 1 else list(shape)
    n = len(array)
    dtype = np.dtype(dtype)

    # Fast path: a regular chunk is one contiguous run of leaf values.
    level = array
    for d in dims:
        if level.null_count:
            break
        offsets = _offsets(level)
        if not (np.diff(offsets) == d).all():
            break
        level = level.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    else:
        if level.null_count == 0:
            values = level.to_numpy(zero_copy_only=False)
            return values.reshape((n,) + shape).astype(dtype, copy=False), np.arange(n)

    feed = ArrayFeed(array, depth, shape)
    rows = np.flatnonzero(feed.valid)
    return feed.stack(rows).astype(dtype, copy=False), rows


# -- rows grouped by shape -------------------------------------------------------------------

def groupByShape(rows, shapes):
    """``rows`` (indices into a chunk) grouped by their shapes: ``shapes[k]`` is the shape
    (an integer sequence, the same length for every row) of ``rows[k]``. Returns a list of
    row-index arrays, one per distinct shape: one model call each."""
    rows = np.asarray(rows, np.int64)
    if not len(rows):
        return []
    keys = np.asarray(shapes, np.int64).reshape(len(rows), -1)
    groups, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = np.asarray(inverse).reshape(-1)
    return [rows[inverse == g] for g in range(len(groups))]


# -- outputs out -----------------------------------------------------------------------------

def _int32Offsets(lengths, tooLarge):
    """Row lengths -> ``n + 1`` offsets (int64 values that fit Arrow's int32 offsets)."""
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] > np.iinfo(np.int32).max:
        raise ValueError(f"{tooLarge}; lower batchSize")
    return offsets


def listColumn(pieces, n, arrowType=pa.float32(), npType=np.float32):
    """Arrow ``list<arrowType>`` of ``n`` rows from ``[(rows, array)]``: each row's output
    (its entry of the array's first dimension) flattened; rows in no piece are null. Built
    from numpy buffers, not per row."""
    lengths = np.zeros(n, np.int64)
    mask = np.ones(n, bool)
    for rows, value in pieces:
        lengths[rows] = int(np.prod(value.shape[1:])) if value.ndim > 1 else 1
        mask[rows] = False
    offsets = _int32Offsets(lengths, "a chunk's outputs exceed 2**31 values")
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


def imageColumn(pieces, n, origins, channelOrder="RGB"):
    """Float32 image structs of ``n`` rows from ``[(rows, N x H x W [x C])]`` outputs, C in
    1, 3, 4, their channels in ``channelOrder`` ('RGB' is swapped to the struct's BGR order,
    'BGR' and 'L' are stored as they are); rows in no piece are null.

    :param origins: each row's origin (an Arrow string array or a list).
    :raises ValueError: an output is not image-shaped.
    """
    from sparkdl.image.arrow import structArray
    from sparkdl.image.imageIO import imageTypeByName, rgbToStructOrder

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
        if channelOrder == "RGB":
            value = rgbToStructOrder(value)
        _, h, w, c = value.shape
        heights[rows], widths[rows], nChannels[rows] = h, w, c
        modes[rows] = imageTypeByName(f"CV_32FC{c}").ord
        lengths[rows] = h * w * c * 4
        mask[rows] = False
        arrays.append((rows, value))
    offsets = _int32Offsets(lengths, "a chunk's output images exceed 2 GiB")
    data = np.empty(int(offsets[-1]), np.uint8)
    for rows, value in arrays:
        flat = np.ascontiguousarray(value, "<f4").reshape(len(rows), -1).view(np.uint8)
        index = offsets[rows][:, None] + np.arange(flat.shape[1])
        data[index.ravel()] = flat.ravel()
    binary = pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets.astype(np.int32)),
                                                    pa.py_buffer(data)])
    return structArray(origins, heights, widths, nChannels, modes, binary, nulls=mask)
