"""Vectorized image work on Arrow batches, run inside sparkdl's Arrow UDFs on the executors.

Decoded images leave as one Arrow ``StructArray`` per chunk (Spark's image struct), built from
column arrays, never from per-row ``Row`` objects.
"""
import numpy as np
import pyarrow as pa

from sparkdl.image import imageIO

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
    """Column-wise accumulator for image structs plus an error-reason column."""

    def __init__(self, n):
        self.origin = [None] * n
        self.height = np.full(n, -1, np.int32)
        self.width = np.full(n, -1, np.int32)
        self.nChannels = np.full(n, -1, np.int32)
        self.mode = np.full(n, imageIO.UNDEFINED_MODE, np.int32)
        self.data = [b""] * n
        self.valid = np.ones(n, bool)
        self.error = [None] * n

    def set(self, i, origin, height, width, nChannels, mode, data):
        self.origin[i] = origin
        self.height[i], self.width[i], self.nChannels[i], self.mode[i] = height, width, nChannels, mode
        self.data[i] = data

    def invalid(self, i, origin, reason):
        self.origin[i] = origin
        self.error[i] = reason

    def null(self, i):
        self.valid[i] = False

    def finish(self):
        images = structArray(self.origin, self.height, self.width, self.nChannels, self.mode,
                             self.data, nulls=~self.valid)
        return images, pa.array(self.error, pa.string())


def _arrayToStructFields(arr):
    """A user/loader RGB(A) array -> (height, width, nChannels, mode, BGR bytes)."""
    arr = imageIO.rgbToStructOrder(arr)
    if arr.dtype not in (np.uint8, np.float32):
        raise ValueError(f"image loader returned {arr.dtype}; expected uint8 or float32")
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
        try:
            out.set(i, origins[i], *imageIO.decodeImage(raw))
        except imageIO.DecodeError as e:
            out.invalid(i, origins[i], str(e))
    return out.finish()


def loadBatch(uris, loader=None, targetSize=None, resizeMethod="bilinear"):
    """Load a batch of images by URI, on the executor.

    :param uris: Arrow string array of URIs or paths (null -> null image).
    :param loader: ``None`` to read each file (:func:`sparkdl.utils.fs.readBytes`) and decode
        it like :func:`decodeBatch`, or a user function ``uri -> RGB(A) array``; an exception
        it raises marks that row invalid with the exception as the reason, and does not fail
        the task.
    :return: ``(images, errors)`` as for :func:`decodeBatch`.
    """
    from sparkdl.utils.fs import readBytes

    out = _Builder(len(uris))
    for i, uri in enumerate(uris.to_pylist()):
        if uri is None:
            out.null(i)
            continue
        try:
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
        except (imageIO.DecodeError, OSError) as e:
            reason = str(e) if isinstance(e, imageIO.DecodeError) else f"cannot read file: {e}"
            out.invalid(i, uri, reason)
        except Exception as e:  # the user's loader: any failure becomes this row's reason.
            out.invalid(i, uri, f"imageLoader failed: {type(e).__name__}: {e}")
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
