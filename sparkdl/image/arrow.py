"""Vectorized image work on Arrow batches, run inside sparkdl's Arrow UDFs on the executors.

Decoded images leave as one Arrow ``StructArray`` per chunk (Spark's image struct), built from
column arrays, never from per-row ``Row`` objects.
"""
import numpy as np
import pyarrow as pa

from sparkdl.image import imageIO
from sparkdl.utils.rows import DECODE, READ, RowError, RowErrors

__all__ = [
    "IMAGE_ARROW_TYPE",
    "decodeBatch",
    "loadBatch",
    "structArray",
]

IMAGE_ARROW_TYPE = pa.struct(
    [
        ("origin", pa.string()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("nChannels", pa.int32()),
        ("mode", pa.int32()),
        ("data", pa.binary()),
    ]
)


class _Builder:
    """Column-wise accumulator for image structs plus the rows' reasons
    (:class:`sparkdl.utils.rows.RowErrors`): a failed row is Spark's invalid-image row."""

    def __init__(self, n):
        self.origin = [None] * n
        self.height = np.full(n, -1, np.int32)
        self.width = np.full(n, -1, np.int32)
        self.nChannels = np.full(n, -1, np.int32)
        self.mode = np.full(n, imageIO.UNDEFINED_MODE, np.int32)
        self.data = [b""] * n
        self.valid = np.ones(n, bool)
        self.errors = RowErrors(n)

    def set(self, i, origin, height, width, nChannels, mode, data):
        self.origin[i] = origin
        self.height[i], self.width[i], self.nChannels[i], self.mode[i] = height, width, nChannels, mode
        self.data[i] = data

    def null(self, i):
        self.valid[i] = False

    def finish(self):
        for i, reason in enumerate(self.errors.reasons):
            if reason is not None:  # Spark's invalid-image row, its origin kept
                self.height[i] = self.width[i] = self.nChannels[i] = -1
                self.mode[i], self.data[i] = imageIO.UNDEFINED_MODE, b""
        images = structArray(self.origin, self.height, self.width, self.nChannels, self.mode,
                             self.data, nulls=~self.valid)
        return images, self.errors.toArrow()


def _arrayToStructFields(arr):
    """A user/loader RGB(A) array -> (height, width, nChannels, mode, BGR bytes)."""
    arr = imageIO.rgbToStructOrder(arr)
    if arr.dtype not in (np.uint8, np.float32):
        raise RowError(f"imageLoader returned an array of {arr.dtype}; expected uint8 or "
                       "float32")
    row = imageIO.imageArrayToStruct(arr)
    return row.height, row.width, row.nChannels, row.mode, bytes(row.data)


def decodeBatch(origins, contents):
    """Decode a batch of image files.

    :param origins: Arrow string array of origins (URIs).
    :param contents: Arrow binary array of file bytes (null -> null image).
    :return: ``(images, errors)``: a StructArray of image structs (Spark's invalid-image row
        for undecodable files) and a string array with the reason for each invalid one.
    """
    n = len(contents)
    out = _Builder(n)
    origins = origins.to_pylist()
    for i, raw in enumerate(contents.to_pylist()):
        if raw is None:
            out.null(i)
            continue
        out.origin[i] = origins[i]
        with out.errors.attempt(i, DECODE):
            out.set(i, origins[i], *imageIO.decodeImage(raw))
    return out.finish()


def loadBatch(uris, loader=None, targetSize=None, resizeMethod="bilinear"):
    """Load a batch of images by URI, on the executor.

    :param uris: Arrow string array of URIs or paths (null -> null image).
    :param loader: ``None`` to read each file (:func:`sparkdl.utils.fs.readBytes`) and decode
        it like :func:`decodeBatch`, or a user function ``uri -> RGB(A) array``. A file that
        cannot be read or decoded, or an exception the loader raises, marks that row invalid
        with the reason worded by :mod:`sparkdl.utils.rows`, and does not fail the task.
    :return: ``(images, errors)`` as for :func:`decodeBatch`.
    """
    from sparkdl.utils.fs import readBytes

    out = _Builder(len(uris))
    for i, uri in enumerate(uris.to_pylist()):
        if uri is None:
            out.null(i)
            continue
        out.origin[i] = uri
        with out.errors.attempt(i, READ if loader is None else "imageLoader"):
            if loader is None:
                img = imageIO.decodeToPIL(readBytes(uri))
                if targetSize is not None:
                    img = imageIO.resizeImage(img, targetSize, resizeMethod)
                out.set(i, uri, *imageIO.pilToStructFields(img))
            else:
                arr = np.asarray(loader(uri))
                if arr.ndim == 4 and arr.shape[0] == 1:
                    arr = arr[0]
                if targetSize is not None:
                    arr = imageIO.resizeImage(arr, targetSize, resizeMethod)
                out.set(i, uri, *_arrayToStructFields(arr))
    return out.finish()


def structArray(origins, heights, widths, nChannels, modes, data, nulls=None):
    """sparkdl's one builder of image-struct columns: an Arrow ``StructArray`` of
    :data:`IMAGE_ARROW_TYPE` from its columns (Arrow arrays, numpy arrays or lists; ``data``
    holds each row's bytes in the struct's order), with the rows of the bool mask ``nulls``
    null."""
    def column(values, arrowType):
        return values if isinstance(values, pa.Array) else pa.array(values, arrowType)

    return pa.StructArray.from_arrays(
        [column(origins, pa.string()), column(heights, pa.int32()), column(widths, pa.int32()),
         column(nChannels, pa.int32()), column(modes, pa.int32()), column(data, pa.binary())],
        fields=list(IMAGE_ARROW_TYPE),
        mask=None if nulls is None else pa.array(np.asarray(nulls, bool)))
