"""Image model UDFs whose input tensors come from user code, run per image on the executors.

- :func:`imageFileModelUdf`: image URIs -> ``struct<output, error>``. A user ``imageLoader``
  (``uri -> H x W x C`` array, already preprocessed) builds each row's input; a loader that
  raises, or an array the model cannot take, gives a null output and the reason in ``error``.
  The output is the model's output flattened (``array<float>``) or, with ``outputMode="image"``,
  a float32 image struct.
- :func:`imagePreprocessorModelUdf`: image structs -> ``array<float>``, each image's input
  built by a user ``preprocessor`` (RGB ``H x W x C`` array -> model input) instead of resizing.

Per chunk of ``batchSize`` rows, the valid inputs are stacked and predicted on with one
``predict_on_batch`` per input shape (one call when the model's input shape is fixed), with
the worker-cached model of a :class:`sparkdl.engine.handle.ModelHandle`. Null in -> null out.
"""
from typing import Iterator

import numpy as np
import pyarrow as pa

__all__ = [
    "OUTPUT_MODES",
    "modelSignature",
    "formatShape",
    "imageFileModelUdf",
    "imagePreprocessorModelUdf",
    "checkPreprocessor",
]

#: ``outputMode`` values of :func:`imageFileModelUdf`.
OUTPUT_MODES = ("vector", "image")

_signatures = {}


def modelSignature(handle):
    """Driver-side: ``(inputShapes, outputShapes)`` of the handle's model, each a tuple of
    shapes without the batch dimension (``None`` for a variable dimension), or ``None`` when
    Keras cannot tell (e.g. a subclassed model). Loaded once per model content."""
    key = (handle.key, handle.safeMode)  # loading under safe_mode is part of the check
    if key not in _signatures:
        from sparkdl.engine.handle import modelFromBytes

        model = modelFromBytes(handle._broadcast.value, handle.safeMode)
        try:
            signature = (tuple(tuple(t.shape[1:]) for t in model.inputs),
                         tuple(tuple(t.shape[1:]) for t in model.outputs))
        except (AttributeError, ValueError, TypeError):
            signature = None
        _signatures[key] = signature
    return _signatures[key]


def formatShape(shape):
    """``(16, None, 3)`` -> ``'16 x any x 3'``."""
    return " x ".join("any" if d is None else str(d) for d in shape)


def _modelInput(arr, inputShape, what):
    """A user array -> float32 ``H x W x C`` the model takes; ``ValueError`` with the reason."""
    arr = np.asarray(arr)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(f"{what} returned an array of shape {arr.shape}; expected "
                         "H x W x C or 1 x H x W x C")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
            or arr.dtype == bool):
        raise ValueError(f"{what} returned an array of {arr.dtype}; expected uint8 or float32")
    if inputShape is not None and (
            len(inputShape) != 3
            or any(d is not None and d != s for d, s in zip(inputShape, arr.shape))):
        raise ValueError(f"{what} returned shape {formatShape(arr.shape)}; the model takes "
                         f"{formatShape(inputShape)}")
    return np.asarray(arr, np.float32)


def _predictByShape(model, inputs):
    """``{row: float32 array}`` -> ``{row: output array}``: one ``predict_on_batch`` per distinct
    input shape (so a fully convolutional model takes images of any size, and a row's output
    never depends on which rows share its batch)."""
    groups = {}
    for i, arr in inputs.items():
        groups.setdefault(arr.shape, []).append(i)
    outputs = {}
    for rows in groups.values():
        out = model.predict_on_batch(np.stack([inputs[i] for i in rows]))
        out = np.asarray(out, np.float32)
        for j, i in enumerate(rows):
            outputs[i] = out[j]
    return outputs


def _listArray(outputs, n):
    """``{row: array}`` -> Arrow ``list<float>`` of ``n`` rows (flattened; others null)."""
    lengths = np.zeros(n, np.int64)
    mask = np.ones(n, bool)
    for i, out in outputs.items():
        lengths[i] = out.size
        mask[i] = False
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    values = [outputs[i].ravel() for i in sorted(outputs)]
    flat = np.concatenate(values) if values else np.zeros(0, np.float32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat, pa.float32()),
                                    mask=pa.array(mask))


def _imageArray(outputs, origins, n):
    """``{row: H x W x C RGB output}`` -> Arrow image structs (float32, stored BGR)."""
    from sparkdl.image import imageIO
    from sparkdl.image.arrow import structArrayFromImages

    rows = [None] * n
    for i, out in outputs.items():
        if out.ndim == 2:
            out = out[:, :, np.newaxis]
        if out.ndim != 3 or out.shape[2] not in (1, 3, 4):
            raise ValueError(f"outputMode='image' needs a model output of H x W x C with C in "
                             f"1, 3, 4; got {formatShape(out.shape)}")
        rows[i] = imageIO.imageArrayToStruct(imageIO.rgbToStructOrder(out), origin=origins[i])
    return structArrayFromImages(rows)


def _resultType(outputMode):
    from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType

    from sparkdl.image.imageIO import imageSchema

    output = imageSchema if outputMode == "image" else ArrayType(FloatType(), True)
    return StructType([StructField("output", output, True), StructField("error", StringType(), True)])


def imageFileModelUdf(handle, imageLoader, inputShape=None, outputMode="vector", batchSize=64):
    """Build the Arrow UDF ``uri -> struct<output, error>`` for one stage.

    :param handle: :class:`sparkdl.engine.handle.ModelHandle` of a Keras model with one input
        ``(batch, height, width, channels)``.
    :param imageLoader: ``uri -> array`` (``H x W x C`` or ``1 x H x W x C``, any real dtype,
        cast to float32), run on the executors. What it raises becomes the row's ``error``.
    :param inputShape: the model's input shape without the batch dimension (``None`` for a
        variable one); an array that does not fit gives a null output and the reason.
    :param outputMode: ``"vector"``: ``output`` is the model's output flattened, as
        ``array<float>``; ``"image"``: a float32 image struct (CV_32FC1/3/4) of the model's
        ``H x W x C`` output, read as RGB(A) and stored in the struct's BGR(A) order.
    :param batchSize: rows per chunk (one ``predict_on_batch`` per input shape in a chunk).
    """
    from pyspark.sql.functions import arrow_udf

    if outputMode not in OUTPUT_MODES:
        raise ValueError(f"outputMode must be one of {OUTPUT_MODES}, got {outputMode!r}")
    inputShape = None if inputShape is None else tuple(inputShape)

    @arrow_udf(_resultType(outputMode))
    def predictFiles(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
        from sparkdl.engine.image_file_udf import _imageArray, _listArray, _modelInput, _predictByShape
        from sparkdl.image.arrow import iterChunks

        model = handle.load()
        for chunk in iterChunks(batches, batchSize):
            n = len(chunk)
            uris = chunk.to_pylist()
            errors, inputs = [None] * n, {}
            for i, uri in enumerate(uris):
                if uri is None:
                    continue
                try:
                    arr = imageLoader(uri)
                except Exception as e:  # the user's loader: the reason goes to the row's error
                    errors[i] = f"imageLoader failed: {type(e).__name__}: {e}"
                    continue
                try:
                    inputs[i] = _modelInput(arr, inputShape, "imageLoader")
                except ValueError as e:
                    errors[i] = str(e)
            outputs = _predictByShape(model, inputs) if inputs else {}
            if outputMode == "image":
                output = _imageArray(outputs, uris, n)
            else:
                output = _listArray(outputs, n)
            yield pa.StructArray.from_arrays([output, pa.array(errors, pa.string())],
                                             names=["output", "error"])

    return predictFiles


def _rgbImages(chunk):
    """Arrow image structs -> ``[(row, origin, RGB H x W x 3 array)]`` for the valid rows
    (uint8 for 8-bit images, float32 for float ones; gray repeated, alpha dropped)."""
    from sparkdl.image import imageIO

    class _Struct:
        __slots__ = ("height", "width", "nChannels", "mode", "data")

    images = []
    for i, row in enumerate(chunk.to_pylist()):
        if row is None or not row["height"] or row["height"] <= 0 or not row["width"] \
                or row["width"] <= 0:
            continue
        s = _Struct()
        s.height, s.width, s.nChannels, s.mode, s.data = (
            row["height"], row["width"], row["nChannels"], row["mode"], row["data"])
        try:
            arr = imageIO.imageStructToArray(s)
        except ValueError:  # an unsupported mode or a corrupt struct: a null output
            continue
        arr = imageIO.rgbToStructOrder(arr)[:, :, :3]
        if arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
        images.append((i, row["origin"], arr))
    return images


def imagePreprocessorModelUdf(handle, preprocessor, inputShape=None, batchSize=64, name=None):
    """Build the Arrow UDF ``image struct -> array<float>`` whose model input is
    ``preprocessor(rgb)`` for each image.

    :param preprocessor: ``RGB H x W x 3 array -> H' x W' x C (or 1 x H' x W' x C) array``
        run on the executors; it gets the image as stored (uint8 for 8-bit images, float32
        for float ones) and replaces resizing. Null or invalid images give null and are not
        passed to it. What it raises, or an array the model cannot take, fails the task with
        the image's origin in the message: a SQL function has no column to report it in.
    :param inputShape: the model's input shape without the batch dimension, or None.
    :param name: the SQL function's name, for messages.
    """
    from pyspark.sql.functions import arrow_udf

    inputShape = None if inputShape is None else tuple(inputShape)
    what = f"preprocessor of {name!r}" if name else "preprocessor"

    @arrow_udf("array<float>")
    def predictPreprocessed(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
        from sparkdl.engine.image_file_udf import _listArray, _modelInput, _predictByShape, _rgbImages
        from sparkdl.image.arrow import iterChunks

        model = handle.load()
        for chunk in iterChunks(batches, batchSize):
            inputs = {}
            for i, origin, rgb in _rgbImages(chunk):
                try:
                    out = preprocessor(rgb)
                except Exception as e:
                    raise RuntimeError(f"{what} failed on image {origin!r}: "
                                       f"{type(e).__name__}: {e}") from e
                try:
                    inputs[i] = _modelInput(out, inputShape, what)
                except ValueError as e:
                    raise ValueError(f"{e} (image {origin!r})") from None
            outputs = _predictByShape(model, inputs) if inputs else {}
            yield _listArray(outputs, len(chunk))

    return predictPreprocessed


def checkPreprocessor(preprocessor, inputShape=None, what="preprocessor"):
    """Driver-side, when a preprocessor is registered: call it once on a blank mid-gray RGB
    uint8 image (the model's input size when fixed, else 32 x 32) and check that the model
    can take what it returns, so a function that does not fit fails now, with the reason,
    rather than in every query that uses it.

    :raises ValueError: naming ``what``, with the function's error or the shapes.
    """
    fixed = inputShape is not None and len(inputShape) == 3 and None not in inputShape[:2]
    height, width = (inputShape[0], inputShape[1]) if fixed else (32, 32)
    try:
        out = preprocessor(np.full((height, width, 3), 128, np.uint8))
    except Exception as e:  # the user's function: report whatever it raised
        raise ValueError(f"{what} failed on a blank {height} x {width} RGB uint8 array: "
                         f"{type(e).__name__}: {e}") from e
    _modelInput(out, None if inputShape is None else tuple(inputShape), what)

