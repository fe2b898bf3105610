"""Spark's image struct and the one place where images change representation.

The column layout is Spark's ``ImageSchema.columnSchema``: ``origin, height, width, nChannels,
mode, data``, with ``data`` row-major and channels in OpenCV order (BGR / BGRA), as
``spark.read.format("image")`` gives. Arrays handed to or returned by users (loaders, models,
Pillow) are in RGB(A) order; :func:`imageArrayToStruct` / :func:`imageStructToArray` keep the
struct's BGR order, and every RGB <-> BGR conversion happens in this module.

Decoding rule (:func:`decodeImage`), applied to every Pillow mode:

========================================  ===============================================
Pillow mode                               result (8-bit, OpenCV mode)
========================================  ===============================================
``1``, ``L``                              1 channel, CV_8UC1 (for 1/2/4-bit gray PNGs
                                          Spark's reader gives 3 equal channels: Java
                                          decodes them through a palette)
``LA``, ``La``                            1 channel, alpha dropped (as Spark's reader does)
``I;16*``, ``I``                          1 channel, 16-bit samples clipped to [0, 65535]
                                          and scaled by ``>> 8``
``F``                                     1 channel, clipped to [0, 255] and rounded
``P``                                     BGRA (CV_8UC4) if the palette has transparency,
                                          else BGR (CV_8UC3)
``PA``, ``RGBA``, ``RGBa``                BGRA, CV_8UC4
``RGB``, ``RGBX``, ``CMYK``, ``YCbCr``,   BGR, CV_8UC3 (Pillow's conversion to RGB); the
                                          same for ``LAB``, ``HSV`` and any other mode
========================================  ===============================================

The EXIF orientation tag is applied (Spark's own reader ignores it); an animation gives its
first frame; the file extension is ignored (Pillow sniffs the content). Images with more
pixels than :data:`MAX_IMAGE_PIXELS` (Pillow's own limit, 89,478,485) are refused from their
header, before any pixel is allocated.
"""
import io
import warnings
from collections import namedtuple

import numpy as np
from PIL import Image, ImageOps
from pyspark.sql import Row
from pyspark.sql.types import (
    BinaryType,
    IntegerType,
    StringType,
    StructField,
    StructType,
)

from sparkdl.utils.rows import STRUCT, RowError, RowErrors

__all__ = [
    "ImageType",
    "imageSchema",
    "imageTypeByMode",
    "imageTypeByName",
    "isImageSchema",
    "imageArrayToStruct",
    "imageStructToArray",
    "imageStructToPIL",
    "PIL_to_imageStruct",
    "decodeImage",
    "pilToArray",
    "invalidImageStruct",
    "MAX_IMAGE_PIXELS",
    "DecodeError",
    # 1.x helpers, deprecated (see "Migrating from Deep Learning Pipelines 1.x")
    "readImagesWithCustomFn",
    "PIL_decode",
    "createResizeImageUDF",
]

#: Largest image (width * height) that is decoded; larger ones are refused from their header.
MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS

ImageType = namedtuple("ImageType", ["name", "ord", "nChannels", "dtype"])
ImageType.__doc__ = """An OpenCV image type: ``name`` (``"CV_8UC3"``), ``ord`` (the struct's ``mode``
number), ``nChannels`` and the numpy ``dtype`` of its samples."""

_IMAGE_TYPES = [
    ImageType("CV_8UC1", 0, 1, np.dtype("uint8")),
    ImageType("CV_32FC1", 5, 1, np.dtype("<f4")),
    ImageType("CV_8UC3", 16, 3, np.dtype("uint8")),
    ImageType("CV_32FC3", 21, 3, np.dtype("<f4")),
    ImageType("CV_8UC4", 24, 4, np.dtype("uint8")),
    ImageType("CV_32FC4", 29, 4, np.dtype("<f4")),
]
_BY_ORD = {t.ord: t for t in _IMAGE_TYPES}
_BY_NAME = {t.name: t for t in _IMAGE_TYPES}
_BY_SHAPE = {(t.nChannels, t.dtype): t for t in _IMAGE_TYPES}

#: Spark's ``undefined`` mode, used by invalid-image rows.
UNDEFINED_MODE = -1

IMAGE_FIELDS = ["origin", "height", "width", "nChannels", "mode", "data"]

#: Spark's image struct with every field nullable. Spark 4 rejects an Arrow/pandas UDF result
#: whose nullability differs from the declared type, so sparkdl declares this copy; columns
#: with Spark's own (non-nullable) schema are accepted as input too (:func:`isImageSchema`).
imageSchema = StructType(
    [
        StructField("origin", StringType(), True),
        StructField("height", IntegerType(), True),
        StructField("width", IntegerType(), True),
        StructField("nChannels", IntegerType(), True),
        StructField("mode", IntegerType(), True),
        StructField("data", BinaryType(), True),
    ]
)


class DecodeError(RowError):
    """An image file could not be decoded; the message says why (the row's reason, see
    ``sparkdl.utils.rows``). A ``ValueError``."""


def imageTypeByMode(mode):
    """The :class:`ImageType` of an OpenCV mode number (e.g. 16 for CV_8UC3)."""
    try:
        return _BY_ORD[mode]
    except KeyError:
        raise ValueError(
            f"unsupported image mode {mode!r}; supported: "
            + ", ".join(f"{t.name}={t.ord}" for t in _IMAGE_TYPES)
        ) from None


def imageTypeByName(name):
    """The :class:`ImageType` of an OpenCV mode name (e.g. ``"CV_8UC3"``)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unsupported image type {name!r}; supported: {sorted(_BY_NAME)}") from None


def isImageSchema(dataType):
    """True if ``dataType`` is Spark's image struct, with any field nullability."""
    if not isinstance(dataType, StructType) or dataType.names != IMAGE_FIELDS:
        return False
    return all(f.dataType == g.dataType for f, g in zip(dataType.fields, imageSchema.fields))


def _as_hwc(imgArray):
    if imgArray.ndim == 2:
        return imgArray[:, :, np.newaxis]
    if imgArray.ndim != 3:
        raise ValueError(f"image array must be H x W or H x W x C, got shape {imgArray.shape}")
    return imgArray


def imageArrayToStruct(imgArray, origin=""):
    """Build an image struct ``Row`` from an array already in the struct's channel order.

    :param imgArray: ``H x W`` or ``H x W x C`` array, C in (1, 3, 4), dtype uint8 or float32,
        channels in BGR(A) order.
    :param origin: the image's origin (URI).
    :return: a ``Row`` with the fields of :data:`imageSchema`, in schema order.
    """
    imgArray = _as_hwc(np.asarray(imgArray))
    height, width, nChannels = imgArray.shape
    dtype = imgArray.dtype
    if dtype == np.float64:
        raise ValueError("float64 images are not supported: convert to float32 or uint8")
    imageType = _BY_SHAPE.get((nChannels, dtype.newbyteorder("<") if dtype.kind == "f" else dtype))
    if imageType is None:
        raise ValueError(
            f"unsupported image array: {nChannels} channels of {dtype}; "
            "expected 1, 3 or 4 channels of uint8 or float32"
        )
    data = np.ascontiguousarray(imgArray, dtype=imageType.dtype).tobytes()
    return Row(
        origin=origin,
        height=int(height),
        width=int(width),
        nChannels=int(nChannels),
        mode=imageType.ord,
        data=bytearray(data),
    )


def invalidImageStruct(origin):
    """Spark's invalid-image row: height = width = nChannels = mode = -1 and empty data."""
    return Row(origin=origin, height=-1, width=-1, nChannels=-1, mode=UNDEFINED_MODE, data=bytearray())


def imageStructToArray(imageRow):
    """Return the pixels of an image struct as an ``H x W x C`` array in BGR(A) order.

    The array is a read-only view of the row's bytes (no copy).
    """
    imageType = imageTypeByMode(imageRow.mode)
    shape = (imageRow.height, imageRow.width, imageRow.nChannels)
    if imageType.nChannels != imageRow.nChannels:
        raise ValueError(f"image mode {imageType.name} does not match nChannels={imageRow.nChannels}")
    return np.frombuffer(imageRow.data, dtype=imageType.dtype).reshape(shape)


_PIL_RAW = {1: ("L", "L"), 3: ("RGB", "BGR"), 4: ("RGBA", "BGRA")}


def imageStructToPIL(imageRow):
    """Return an 8-bit image struct as a Pillow image in RGB(A) or L mode."""
    imageType = imageTypeByMode(imageRow.mode)
    if imageType.dtype != np.uint8:
        raise ValueError(f"only 8-bit images convert to Pillow, got {imageType.name}")
    pilMode, rawMode = _PIL_RAW[imageType.nChannels]
    size = (imageRow.width, imageRow.height)
    return Image.frombuffer(pilMode, size, bytes(imageRow.data), "raw", rawMode, 0, 1)


def PIL_to_imageStruct(img, origin=""):
    """Convert a Pillow image to an image struct ``Row`` by the module's decoding rule."""
    height, width, nChannels, mode, data = pilToStructFields(_to_8bit(img))
    return Row(
        origin=origin, height=height, width=width, nChannels=nChannels, mode=mode,
        data=bytearray(data),
    )


_CHANNELS_OF_PIL_MODE = {"L": 1, "RGB": 3, "RGBA": 4}


def pilToStructFields(img):
    """An ``L``/``RGB``/``RGBA`` Pillow image -> ``(height, width, nChannels, mode, data)``
    with ``data`` in the struct's BGR(A) order (one C-level pack, no numpy copy)."""
    nChannels = _CHANNELS_OF_PIL_MODE[img.mode]
    data = img.tobytes("raw", _PIL_RAW[nChannels][1])
    return img.height, img.width, nChannels, _BY_SHAPE[(nChannels, np.dtype("uint8"))].ord, data


def _to_8bit(img):
    """Apply the decoding rule: any Pillow mode -> ``L``, ``RGB`` or ``RGBA``."""
    mode = img.mode
    if mode in ("L", "RGB", "RGBA"):
        return img
    if mode in ("1", "LA", "La"):
        return img.convert("L")
    if mode.startswith("I"):
        arr = np.asarray(img).astype(np.int64)
        return Image.fromarray((np.clip(arr, 0, 65535) >> 8).astype(np.uint8), "L")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        return Image.fromarray(np.rint(np.clip(arr, 0, 255)).astype(np.uint8), "L")
    if mode == "P":
        return img.convert("RGBA" if "transparency" in img.info else "RGB")
    if mode in ("PA", "RGBa") or "A" in mode:
        return img.convert("RGBA")
    return img.convert("RGB")


def _open(raw):
    with warnings.catch_warnings():
        # Pillow only warns between 1x and 2x its limit; sparkdl refuses from 1x (below).
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(io.BytesIO(raw))
    if img.width * img.height > MAX_IMAGE_PIXELS:
        raise DecodeError(
            f"image of {img.width}x{img.height} pixels exceeds the limit of "
            f"{MAX_IMAGE_PIXELS} pixels (sparkdl.image.imageIO.MAX_IMAGE_PIXELS)"
        )
    return img


def decodeToPIL(raw):
    """Decode image file bytes to a Pillow image in ``L``, ``RGB`` or ``RGBA`` mode.

    Applies the module's decoding rule and the EXIF orientation.

    :raises DecodeError: with the reason, for anything that is not a decodable image.
    """
    if raw is None or len(raw) == 0:
        raise DecodeError("empty file")
    try:
        img = _open(raw)
        img.load()
        if img.getexif().get(0x0112, 1) != 1:
            img = ImageOps.exif_transpose(img)
        return _to_8bit(img)
    except DecodeError:
        raise
    except Image.UnidentifiedImageError:
        raise DecodeError("cannot identify image file: not a format Pillow decodes") from None
    except Exception as e:  # Pillow raises many types for bad files; keep the reason.
        raise DecodeError(f"{type(e).__name__}: {e}") from e


def decodeImage(raw):
    """Decode image file bytes to ``(height, width, nChannels, mode, data)`` in struct order.

    ``data`` is BGR(A) bytes, as in Spark's image struct.

    :raises DecodeError: with the reason, for anything that is not a decodable image.
    """
    return pilToStructFields(decodeToPIL(raw))


def pilToArray(img):
    """A Pillow ``L``/``RGB``/``RGBA`` image as an ``H x W x C`` uint8 array in RGB(A) order."""
    return _as_hwc(np.asarray(img))


#: Pillow resampling filters by name, for ``resizeMethod`` params.
RESIZE_METHODS = {
    "nearest": Image.Resampling.NEAREST,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def resampleFilter(name):
    """The Pillow filter for a resize method name (one of :data:`RESIZE_METHODS`)."""
    try:
        return RESIZE_METHODS[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError(
            f"unknown resize method {name!r}; supported: {sorted(RESIZE_METHODS)}"
        ) from None


def resizeImage(img, size, method="bilinear"):
    """Resize a Pillow image or an ``H x W [x C]`` array to ``size = (height, width)``.

    Channels are resized independently, so the channel order is kept whatever it is. A uint8
    array is resized as 8-bit (Pillow rounds), a float32 one channel by channel in float.

    :return: the same kind of object as ``img`` (Pillow image or array).
    """
    height, width = (int(s) for s in size)
    resample = resampleFilter(method)
    if isinstance(img, Image.Image):
        if img.size == (width, height):
            return img
        return img.resize((width, height), resample)
    arr = _as_hwc(np.asarray(img))
    if arr.shape[:2] == (height, width):
        return arr
    if arr.dtype == np.uint8:
        pilMode = {1: "L", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
        out = Image.fromarray(arr if arr.shape[2] > 1 else arr[:, :, 0], pilMode)
        return _as_hwc(np.asarray(out.resize((width, height), resample)))
    channels = [
        np.asarray(Image.fromarray(np.ascontiguousarray(arr[:, :, c], np.float32), "F")
                   .resize((width, height), resample))
        for c in range(arr.shape[2])
    ]
    return np.stack(channels, axis=-1)


def bgrToPIL(arr):
    """An ``H x W x 3|4`` uint8 array in the struct's BGR(A) order -> an ``RGB`` Pillow image
    (alpha dropped), unpacked by Pillow in one copy."""
    height, width, channels = arr.shape
    return Image.frombuffer("RGB", (width, height), np.ascontiguousarray(arr), "raw",
                            "BGR" if channels == 3 else "BGRX", 0, 1)


def rgbToStructOrder(arr):
    """RGB(A) -> BGR(A) (and back: the swap is its own inverse) on the last axis of an image
    (``H x W [x C]``) or a batch of them (``N x H x W x C``); gray is unchanged. sparkdl's one
    channel-order swap."""
    arr = np.asarray(arr)
    if arr.ndim < 3:
        arr = _as_hwc(arr)
    c = arr.shape[-1]
    if c == 3:
        return arr[..., ::-1]
    if c == 4:
        return arr[..., [2, 1, 0, 3]]
    return arr


# -- 1.x helpers (deprecated) ------------------------------------------------------------------
# Kept so that code written for Deep Learning Pipelines 1.x runs; each warns and names what to
# use instead. They follow this module's rules (channel order, bad files as rows with a reason).


def _deprecated(name, instead):
    warnings.warn(f"sparkdl.image.imageIO.{name} is a 1.x helper; use {instead}",
                  DeprecationWarning, stacklevel=3)


def PIL_decode(raw_bytes):
    """1.x helper (deprecated; use :func:`sparkdl.readImages`, which decodes the same way):
    image file bytes -> ``H x W x C`` uint8 array in the struct's BGR(A) order, the form
    :func:`readImagesWithCustomFn` takes from its ``decode_f``.

    Unlike 1.x (which reversed whatever array Pillow gave), it applies this module's decoding
    rule: every Pillow mode becomes 1, 3 or 4 channels, gray stays ``H x W x 1``, and the
    EXIF orientation is applied.

    :param raw_bytes: the file's bytes.
    :raises DecodeError: with the reason, for anything that is not a decodable image.
    """
    _deprecated("PIL_decode", "sparkdl.readImages")
    return np.ascontiguousarray(rgbToStructOrder(pilToArray(decodeToPIL(bytes(raw_bytes)))))


def _customDecodeRow(decode_f, origin, content):
    """``(image struct, error)`` for one file decoded by a user's ``decode_f``; what it
    raises, or returns that is not an image array, is the row's reason
    (``sparkdl.utils.rows``: ``"decode_f failed: <Type>: <message>"``)."""
    if content is None:
        return None, None
    errors = RowErrors(1)
    with errors.attempt(0, "decode_f"):
        arr = decode_f(bytes(content))
        if not isinstance(arr, np.ndarray):
            raise RowError(f"decode_f returned {type(arr).__name__}, expected a numpy array "
                           "H x W x C in BGR(A) order")
        if arr.ndim == 4 and arr.shape[0] == 1:  # a batch of one, as 1.x accepted
            arr = arr[0]
        return imageArrayToStruct(arr, origin=origin), None
    return invalidImageStruct(origin), errors.reasons[0]


def readImagesWithCustomFn(path, decode_f, numPartition=None):
    """1.x helper (deprecated; use :func:`sparkdl.readImages`, or
    :class:`sparkdl.ImageLoader` with ``imageLoader`` for your own decoder): read image files
    and decode each with ``decode_f``.

    Files are read by Spark's ``binaryFile`` source (recursively) in the active session.
    Unlike 1.x, where a failing ``decode_f`` gave a silent null image, a file it cannot
    decode becomes Spark's invalid-image row with the reason in an ``error`` column, as with
    :func:`sparkdl.readImages`.

    :param path: a file, directory or glob.
    :param decode_f: ``bytes -> ndarray`` ``H x W x C`` (C in 1, 3, 4; uint8 or float32) in
        the struct's BGR(A) order, e.g. :func:`PIL_decode`; a leading batch dimension of 1 is
        dropped.
    :param numPartition: repartition the files into this many partitions before decoding.
    :return: DataFrame with columns ``image`` (Spark's image struct) and ``error``.
    """
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    _deprecated("readImagesWithCustomFn", "sparkdl.readImages")
    if not callable(decode_f):
        raise TypeError(f"decode_f must be a function bytes -> ndarray, got "
                        f"{type(decode_f).__name__}")
    files = (SparkSession.active().read.format("binaryFile")
             .option("recursiveFileLookup", True).load(path)
             # Spark's image source names files file:///x, as readImages does
             .select(F.regexp_replace("path", "^file:/(?!/)", "file:///").alias("path"),
                     "content"))
    if numPartition is not None:
        if int(numPartition) <= 0:
            raise ValueError(f"numPartition must be a positive integer, got {numPartition}")
        files = files.repartition(int(numPartition))
    rowType = StructType([StructField("image", imageSchema, True),
                          StructField("error", StringType(), True)])
    decode = F.udf(lambda origin, content: _customDecodeRow(decode_f, origin, content), rowType)
    return files.select(decode("path", "content").alias("decoded")).select("decoded.*")


def createResizeImageUDF(size, method="bilinear"):
    """1.x helper (deprecated; stages resize themselves, and :class:`sparkdl.ImageLoader`
    takes ``targetSize``): a UDF resizing an image struct column to ``size``.

    Channels keep the struct's order; 8-bit and float images keep their type; null and
    invalid images are returned as they are, a malformed one (data that does not match its
    header) gives null. 1.x resized with Pillow's default filter of its day (nearest);
    ``method`` names the filter here (bilinear by default).

    >>> resize = createResizeImageUDF((224, 224))                             # doctest: +SKIP
    >>> df.select(resize("image").alias("image"))                             # doctest: +SKIP

    :param size: ``(height, width)``.
    :param method: a key of ``sparkdl.image.imageIO.RESIZE_METHODS`` (Pillow filters).
    :return: a UDF ``image struct -> image struct``.
    """
    from pyspark.sql import functions as F

    _deprecated("createResizeImageUDF", "the stages' own resizing or ImageLoader(targetSize=...)")
    if len(size) != 2:
        raise ValueError(f"size must be (height, width), got {size!r}")
    height, width = (int(s) for s in size)
    resampleFilter(method)  # an unknown method fails here, not in the query

    def resize(image):
        if image is None or image.height is None or image.height < 0:
            return image
        if (image.height, image.width) == (height, width):
            return image
        errors = RowErrors(1)  # a malformed struct is a row's failure: null, not a failed task
        with errors.attempt(0, STRUCT):
            arr = resizeImage(imageStructToArray(image), (height, width), method)
            return imageArrayToStruct(arr, origin=image.origin)
        return None

    return F.udf(resize, imageSchema)
