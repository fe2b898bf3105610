"""The image inference UDF: image structs in, model outputs out, in one Arrow UDF.

Per batch of ``batchSize`` rows: the structs' pixel bytes are viewed straight from the Arrow
buffers, converted to RGB, resized, stacked into one float32 tensor, preprocessed, and
predicted on; the output is handed back as an Arrow list array built from the prediction
tensor without per-row Python objects. Null and invalid images (Spark's invalid-image row, or
an unsupported mode) give null outputs, never a failed task.
"""
from typing import Iterator

import numpy as np
import pyarrow as pa
from PIL import Image

__all__ = ["imagesToTensor", "listArray", "imageModelUdf"]

_EIGHT_BIT = {0: ("L", "L"), 16: ("RGB", "BGR"), 24: ("RGBA", "BGRA")}
_FLOAT = {5: 1, 21: 3, 29: 4}


def _rgbImage(mode, height, width, data):
    """One struct's pixels -> RGB (PIL image for 8-bit, float32 array for float modes)."""
    if mode in _EIGHT_BIT:
        pilMode, raw = _EIGHT_BIT[mode]
        img = Image.frombuffer(pilMode, (width, height), data, "raw", raw, 0, 1)
        return img if pilMode == "RGB" else img.convert("RGB")
    channels = _FLOAT[mode]
    arr = np.frombuffer(data, "<f4").reshape(height, width, channels)
    if channels == 1:
        return np.repeat(arr, 3, axis=2)
    return arr[:, :, 2::-1]  # BGR(A) -> RGB, alpha dropped


def imagesToTensor(images, size, resizeMethod="bilinear"):
    """A batch of images -> ``(tensor, validRows)``.

    ``images`` is an Arrow array of Spark image structs, of image file bytes (binary), or of
    image URIs (string; read on the executor). Bytes and URIs are decoded here by sparkdl's
    decoding rule, so decoded pixels never travel through the JVM. ``tensor`` is float32
    ``len(validRows) x height x width x 3`` in RGB order with values as stored (0-255 for
    8-bit images), ``validRows`` the indices of the rows it holds; null, invalid and
    undecodable images are left out (their outputs will be null).
    """
    if pa.types.is_struct(images.type):
        rgb = _structImages(images)
    else:
        rgb = _fileImages(images, fromUri=pa.types.is_string(images.type)
                          or pa.types.is_large_string(images.type))
    from sparkdl.image.imageIO import resizeImage

    height, width = size
    valid = [i for i, img in enumerate(rgb) if img is not None]
    tensor = np.empty((len(valid), height, width, 3), np.float32)
    for j, i in enumerate(valid):
        tensor[j] = resizeImage(rgb[i], size, resizeMethod)
    return tensor, np.asarray(valid, np.int64)


def _structImages(images):
    """Image structs -> list of RGB images (None for null/invalid), viewing Arrow buffers."""
    n = len(images)
    if n == 0:
        return []
    present = np.asarray(images.is_valid().to_numpy(zero_copy_only=False), bool)
    # flatten() applies the struct's slice offset to its children (field() may not).
    _, heights, widths, _, modes, data = images.flatten()
    heights, widths, modes = (a.fill_null(-1).to_numpy() for a in (heights, widths, modes))
    offsets = np.frombuffer(data.buffers()[1], np.int32, len(data) + 1, data.offset * 4)
    buffer = data.buffers()[2]
    out = [None] * n
    for i in range(n):
        if not (present[i] and heights[i] > 0 and widths[i] > 0
                and (modes[i] in _EIGHT_BIT or modes[i] in _FLOAT)):
            continue
        start, end = int(offsets[i]), int(offsets[i + 1])
        pixels = memoryview(buffer)[start:end] if buffer is not None else b""
        out[i] = _rgbImage(int(modes[i]), int(heights[i]), int(widths[i]), pixels)
    return out


def _fileImages(files, fromUri):
    """Image file bytes (or URIs to read) -> list of RGB Pillow images (None if undecodable)."""
    from sparkdl.image.imageIO import DecodeError, decodeToPIL
    from sparkdl.utils.fs import readBytes

    out = []
    for item in files.to_pylist():
        try:
            raw = readBytes(item) if (fromUri and item is not None) else item
            out.append(None if raw is None else decodeToPIL(raw).convert("RGB"))
        except (DecodeError, OSError):
            out.append(None)
    return out


def listArray(values, validRows, n, valueType=pa.float32()):
    """``array<float>`` Arrow array of ``n`` rows: row ``validRows[j]`` holds ``values[j]``
    (flattened), every other row is null. Built from the numpy buffer, not per row."""
    values = np.ascontiguousarray(values, np.float32)
    values = values.reshape(len(validRows), -1) if len(validRows) else values.reshape(0, 0)
    width = values.shape[1]
    lengths = np.zeros(n, np.int32)
    lengths[validRows] = width
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    mask = np.ones(n, bool)
    mask[validRows] = False
    return pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(values.ravel(), valueType), mask=pa.array(mask)
    )


def imageModelUdf(handle, inputSize, preprocess=None, resizeMethod="bilinear", batchSize=64,
                  returnType="array<float>", postprocess=None):
    """Build the Arrow UDF ``image struct -> model output`` for one stage.

    :param handle: :class:`sparkdl.engine.handle.ModelHandle` of the Keras model.
    :param inputSize: ``(height, width)`` images are resized to.
    :param preprocess: dotted path of a function applied to the RGB float32 batch (e.g.
        ``"keras.applications.resnet50.preprocess_input"``), or None.
    :param resizeMethod: Pillow filter name.
    :param batchSize: rows per ``predict`` call; also bounds the task's memory.
    :param returnType: Spark type of the result; ``array<float>`` unless ``postprocess``.
    :param postprocess: ``f(predictions, validRows, n) -> pa.Array`` for other outputs.
    """
    from pyspark.sql.functions import arrow_udf

    @arrow_udf(returnType)
    def predictImages(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
        from sparkdl.engine.image_udf import imagesToTensor, listArray, resolve
        from sparkdl.utils.worker import iterChunks

        model = handle.load()
        prep = resolve(preprocess)
        for chunk in iterChunks(batches, batchSize):
            tensor, validRows = imagesToTensor(chunk, inputSize, resizeMethod)
            out = np.zeros((0, 0), np.float32)
            if len(validRows):
                out = model.predict_on_batch(prep(tensor) if prep else tensor)
                out = np.asarray(out, np.float32).reshape(len(validRows), -1)
            if postprocess is None:
                yield listArray(out, validRows, len(chunk))
            else:
                yield postprocess(out, validRows, len(chunk))

    return predictImages


def resolve(dottedPath):
    """Import ``"package.module.name"`` and return ``name`` (None for None)."""
    if dottedPath is None:
        return None
    import importlib

    module, _, name = dottedPath.rpartition(".")
    return getattr(importlib.import_module(module), name)
