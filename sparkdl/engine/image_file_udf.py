"""Image model UDFs whose input tensors come from user code, run per image on the executors.

- :func:`imageFileModelUdf`: image URIs -> ``struct<output, error>``. A user ``imageLoader``
  (``uri -> H x W x C`` array, already preprocessed) builds each row's input; a loader that
  raises, or an array the model cannot take, gives a null output and the reason in ``error``.
  The output is the model's output flattened (``array<float>``) or, with ``outputMode="image"``,
  a float32 image struct.
- :func:`imagePreprocessorModelUdf`: image structs -> ``array<float>``, each image's input
  built by a user ``preprocessor`` (RGB ``H x W x C`` array -> model input) instead of resizing.
- :func:`loaderArraysUdf`: image URIs -> ``struct<x, error>``, the loader's arrays flattened
  (the estimator stores them for training).

Per chunk of ``batchSize`` rows, the valid inputs are stacked and predicted on with one call
per input shape (:func:`sparkdl.engine.codec.groupByShape`; one call when the model's input
shape is fixed), with the worker-cached model of a :class:`sparkdl.engine.shipping.Handle`.
Null in -> null out.
"""
from typing import Iterator

import numpy as np
import pyarrow as pa

__all__ = [
    "OUTPUT_MODES",
    "modelShapes",
    "formatShape",
    "imageFileModelUdf",
    "imagePreprocessorModelUdf",
    "checkPreprocessor",
    "loaderArraysUdf",
]

#: ``outputMode`` values of :func:`imageFileModelUdf`.
OUTPUT_MODES = ("vector", "image")


def modelShapes(model):
    """``(inputShapes, outputShapes)`` of a Keras model, each a tuple of shapes without the
    batch dimension (``None`` for a variable dimension), or ``None`` when Keras cannot tell
    (e.g. a subclassed model). Read on the driver with
    :meth:`sparkdl.engine.shipping.Handle.inspect`."""
    try:
        return (tuple(tuple(t.shape[1:]) for t in model.inputs),
                tuple(tuple(t.shape[1:]) for t in model.outputs))
    except (AttributeError, ValueError, TypeError):
        return None


def formatShape(shape):
    """``(16, None, 3)`` -> ``'16 x any x 3'``."""
    return " x ".join("any" if d is None else str(d) for d in shape)


def _modelInput(arr, inputShape, what):
    """A user array -> float32 ``H x W x C`` the model takes;
    :class:`sparkdl.utils.rows.RowError` (a ``ValueError``) with the reason."""
    from sparkdl.utils.rows import RowError

    arr = np.asarray(arr)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise RowError(f"{what} returned an array of shape {arr.shape}; expected "
                         "H x W x C or 1 x H x W x C")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
            or arr.dtype == bool):
        raise RowError(f"{what} returned an array of {arr.dtype}; expected uint8 or float32")
    if inputShape is not None and (
            len(inputShape) != 3
            or any(d is not None and d != s for d, s in zip(inputShape, arr.shape))):
        raise RowError(f"{what} returned shape {formatShape(arr.shape)}; the model takes "
                         f"{formatShape(inputShape)}")
    return np.asarray(arr, np.float32)


def _predictByShape(model, inputs):
    """``{row: float32 array}`` -> ``[(rows, outputs)]``: one call per distinct input shape
    (so a fully convolutional model takes images of any size, and a row's output never
    depends on which rows share its batch)."""
    from sparkdl.engine.codec import groupByShape

    rows = np.array(sorted(inputs), np.int64)
    pieces = []
    for group in groupByShape(rows, [inputs[i].shape for i in rows]):
        out = model.predict(np.stack([inputs[i] for i in group]))
        pieces.append((group, np.asarray(out, np.float32)))
    return pieces


def _loadInputs(imageLoader, uris, errors, inputShape=None, convert=None):
    """Run the user's ``imageLoader`` on each URI and make the model's input of what it
    returns (``_modelInput``, or ``convert``): ``{row: array}``; a row's failure goes to
    ``errors`` (:class:`sparkdl.utils.rows.RowErrors`). A null URI is neither loaded nor an
    error."""
    convert = convert or (lambda arr: _modelInput(arr, inputShape, "imageLoader"))
    inputs = {}
    for i, uri in enumerate(uris):
        if uri is None:
            continue
        with errors.attempt(i, "imageLoader"):
            inputs[i] = convert(imageLoader(uri))
    return inputs


def _resultType(outputMode):
    from pyspark.sql.types import ArrayType, FloatType, StringType, StructField, StructType

    from sparkdl.image.imageIO import imageSchema

    output = imageSchema if outputMode == "image" else ArrayType(FloatType(), True)
    return StructType([StructField("output", output, True), StructField("error", StringType(), True)])


def imageFileModelUdf(handle, imageLoader, inputShape=None, outputMode="vector", batchSize=64):
    """Build the Arrow UDF ``uri -> struct<output, error>`` for one stage.

    :param handle: :class:`sparkdl.engine.shipping.Handle` of a Keras model with one input
        ``(batch, height, width, channels)``.
    :param imageLoader: ``uri -> array`` (``H x W x C`` or ``1 x H x W x C``, any real dtype,
        cast to float32), run on the executors. What it raises becomes the row's ``error``.
    :param inputShape: the model's input shape without the batch dimension (``None`` for a
        variable one); an array that does not fit gives a null output and the reason.
    :param outputMode: ``"vector"``: ``output`` is the model's output flattened, as
        ``array<float>``; ``"image"``: a float32 image struct (CV_32FC1/3/4) of the model's
        ``H x W x C`` output, read as RGB(A) and stored in the struct's BGR(A) order.
    :param batchSize: rows per chunk (one call per input shape in a chunk).
    """
    from pyspark.sql.functions import arrow_udf

    if outputMode not in OUTPUT_MODES:
        raise ValueError(f"outputMode must be one of {OUTPUT_MODES}, got {outputMode!r}")
    inputShape = None if inputShape is None else tuple(inputShape)

    @arrow_udf(_resultType(outputMode))
    def predictFiles(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
        from sparkdl.engine.codec import imageColumn, listColumn
        from sparkdl.engine.image_file_udf import _loadInputs, _predictByShape
        from sparkdl.utils.rows import RowErrors
        from sparkdl.utils.worker import iterChunks

        model = handle.load()
        for chunk in iterChunks(batches, batchSize):
            n = len(chunk)
            uris = chunk.to_pylist()
            errors = RowErrors(n)
            inputs = _loadInputs(imageLoader, uris, errors, inputShape)
            pieces = _predictByShape(model, inputs) if inputs else []
            if outputMode == "image":
                output = imageColumn(pieces, n, uris, "RGB")
            else:
                output = listColumn(pieces, n)
            yield pa.StructArray.from_arrays([output, errors.toArrow()],
                                             names=["output", "error"])

    return predictFiles


def imagePreprocessorModelUdf(handle, preprocessor, inputShape=None, batchSize=64, name=None):
    """Build the Arrow UDF ``image struct -> array<float>`` whose model input is
    ``preprocessor(rgb)`` for each image.

    :param preprocessor: ``RGB H x W x 3 array -> H' x W' x C (or 1 x H' x W' x C) array``
        run on the executors; it gets the image as stored (uint8 for 8-bit images, float32
        for float ones) and replaces resizing. Null, invalid or malformed images give null
        and are not passed to it. What it raises, or an array the model cannot take, gives
        null for that row, never a failed task (a row's failure, :mod:`sparkdl.utils.rows`;
        a SQL function has no column for the reason).
    :param inputShape: the model's input shape without the batch dimension, or None.
    :param name: the SQL function's name, for messages.
    """
    from pyspark.sql.functions import arrow_udf

    inputShape = None if inputShape is None else tuple(inputShape)
    what = f"preprocessor of {name!r}" if name else "preprocessor"

    @arrow_udf("array<float>")
    def predictPreprocessed(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
        from sparkdl.engine.codec import listColumn, structPixels, toChannelOrder
        from sparkdl.engine.image_file_udf import _modelInput, _predictByShape
        from sparkdl.utils.rows import RowErrors
        from sparkdl.utils.worker import iterChunks

        model = handle.load()
        for chunk in iterChunks(batches, batchSize):
            errors = RowErrors(len(chunk))
            inputs = {}
            for i, pixels in enumerate(structPixels(chunk, errors)):
                if pixels is None:
                    continue
                with errors.attempt(i, what):
                    out = preprocessor(toChannelOrder(pixels, "RGB", dtype=None))
                    inputs[i] = _modelInput(out, inputShape, what)
            pieces = _predictByShape(model, inputs) if inputs else []
            yield listColumn(pieces, len(chunk))

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


def loaderArraysUdf(imageLoader, batchSize=64):
    """Build the Arrow UDF ``uri -> struct<x: array<float>, error: string>``: the user's
    ``imageLoader`` output flattened to float32 (null for a null URI), or null and the reason
    it failed. Loads no model (the worker's heap is frozen once)."""
    from pyspark.sql.functions import arrow_udf

    @arrow_udf("struct<x:array<float>,error:string>")
    def loadArrays(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
        from sparkdl.engine.image_file_udf import _loadInputs
        from sparkdl.utils.rows import RowErrors
        from sparkdl.utils.worker import freezeWorkerHeap, iterChunks

        freezeWorkerHeap()
        for uris in iterChunks(batches, batchSize):
            errors = RowErrors(len(uris))
            # e.g. a ragged list fails the cast: this row's reason
            loaded = _loadInputs(imageLoader, uris.to_pylist(), errors,
                                 convert=lambda arr: np.asarray(arr, np.float32).ravel())
            xs = [loaded.get(i) for i in range(len(uris))]
            yield pa.StructArray.from_arrays(
                [pa.array(xs, pa.list_(pa.float32())), errors.toArrow()], names=["x", "error"])

    return loadArrays
