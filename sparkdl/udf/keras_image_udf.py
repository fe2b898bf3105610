"""``registerKerasImageUDF``: a Keras image model as a Spark SQL function on image structs."""
import hashlib
import os

__all__ = ["registerKerasImageUDF", "PathPreprocessor"]


def _handleForModel(kerasModelOrFile, safeMode):
    """Driver-side engine handle for a Keras model object or a ``.keras``/``.h5`` file."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    from sparkdl.engine.handle import cachedHandle, kerasModelBytes, modelToBytes
    from sparkdl.transformers.keras_image import checkKerasModelFile

    if isinstance(kerasModelOrFile, keras.Model):
        data = modelToBytes(kerasModelOrFile)
        key = ("keras-bytes", hashlib.sha256(data).hexdigest(), safeMode)
        return cachedHandle(key, lambda: data, safeMode=safeMode)
    if not isinstance(kerasModelOrFile, (str, os.PathLike)):
        raise TypeError("kerasModelOrFile must be a keras.Model or the path of a .keras / .h5 "
                        f"file, got {type(kerasModelOrFile).__name__}")
    path = os.fspath(kerasModelOrFile)
    checkKerasModelFile(path, "registerKerasImageUDF")
    stat = os.stat(path) if os.path.exists(path) else None
    key = ("keras-file", path, stat and stat.st_mtime_ns, stat and stat.st_size, safeMode)
    with _safeModeAdvice(safeMode, f"modelFile {path!r}"):
        return cachedHandle(key, lambda: kerasModelBytes(path, safeMode), safeMode=safeMode)


class _safeModeAdvice:
    """Turns Keras' safe_mode refusal into advice for this function's ``safeMode`` argument."""

    def __init__(self, safeMode, what="the model"):
        self.safeMode, self.what = safeMode, what

    def __enter__(self):
        return self

    def __exit__(self, kind, e, tb):
        if self.safeMode and isinstance(e, ValueError) and "safe_mode" in str(e):
            keras = e.__cause__ or e  # kerasModelBytes wraps Keras' own error
            raise ValueError(
                f"{self.what} holds Python bytecode (e.g. a Lambda layer), which Keras refuses "
                "to load with safe_mode=True. If you trust it, call "
                f"registerKerasImageUDF(..., safeMode=False). Keras said: {keras}") from e
        return False


def _signature(handle, safeMode):
    from sparkdl.engine.image_file_udf import modelSignature

    with _safeModeAdvice(safeMode):  # an in-memory model holding Lambda bytecode
        return modelSignature(handle)


class PathPreprocessor:
    """Adapts a 1.x preprocessor (``file path -> image array``) to the array form: each
    image is written to a temporary PNG (lossless, RGB) whose path it is given, as 1.x did.
    ``registerKerasImageUDF(..., preprocessorInput="path")`` uses it."""

    def __init__(self, function):
        self.function = function

    def __call__(self, rgb):
        import tempfile

        import numpy as np
        from PIL import Image

        if rgb.dtype != np.uint8:
            raise ValueError("a preprocessor taking a file path needs 8-bit images; this one "
                             f"is {rgb.dtype}")
        with tempfile.NamedTemporaryFile(suffix=".png") as f:
            Image.fromarray(np.ascontiguousarray(rgb), "RGB").save(f, "PNG")
            f.flush()
            return self.function(f.name)


def registerKerasImageUDF(udfName, kerasModelOrFile, preprocessor=None, safeMode=True,
                          batchSize=64, preprocessorInput="array"):
    """Register a Keras image model as the Spark SQL function ``udfName``.

    The function takes an image column (Spark's image struct, e.g. from
    :func:`sparkdl.readImages` or ``spark.read.format("image")``) and returns the model's
    output for each image, flattened, as ``array<float>``. It works in the DataFrame API
    (through the returned function or ``F.expr``) and in plain SQL, including ``WHERE``
    clauses and joins. Registering the same name again replaces the function.

    Without ``preprocessor``, each image is converted to RGB (gray repeated, alpha dropped)
    and resized (bilinear) to the model's input ``height x width``, as float32 values 0-255;
    the model must then take fixed-size ``height x width x 3`` images. With ``preprocessor``,
    a function ``RGB array (H x W x 3; uint8 for 8-bit images, float32 for float ones) ->
    model input (H' x W' x C or 1 x H' x W' x C)``, run on the executors, builds each input
    instead of resizing; what it raises fails the query with the image's origin in the
    message.

    A preprocessor written for 1.x took a file path instead (``path -> image array``, e.g.
    ``img_to_array(load_img(path, target_size=...))``): pass ``preprocessorInput="path"`` and
    each image is written to a temporary PNG whose path it gets, as 1.x did; what it returns
    is the model's input (1.x cast it to uint8; it is used as returned here). The preprocessor
    is called once at registration on a blank image, so one that does not fit (a 1.x
    function given arrays, a wrong output shape) fails here with the reason, not in queries.

    Null and invalid images give null. The model is serialized once on the driver, loaded on
    the executors with Keras ``safe_mode=safeMode`` (a Lambda layer holding Python bytecode
    needs ``safeMode=False``, for models you trust) and cached per worker.

    :param udfName: name of the SQL function.
    :param kerasModelOrFile: a ``keras.Model`` or the path of a ``.keras`` / legacy ``.h5``
        file on the driver.
    :param preprocessor: optional ``RGB ndarray -> ndarray`` replacing the resize (or
        ``path -> ndarray`` with ``preprocessorInput="path"``).
    :param safeMode: load the model with Keras ``safe_mode``.
    :param batchSize: images per ``predict`` call.
    :param preprocessorInput: what ``preprocessor`` takes: ``"array"`` (an RGB array) or
        ``"path"`` (a PNG file's path, the 1.x form).
    :return: the registered function, usable on DataFrame columns.

    >>> from sparkdl import readImages, registerKerasImageUDF
    >>> registerKerasImageUDF("classify", "/tmp/model.keras")                    # doctest: +SKIP
    >>> readImages("/data/images").createOrReplaceTempView("images")             # doctest: +SKIP
    >>> spark.sql("SELECT image.origin, classify(image) AS scores FROM images "
    ...           "WHERE image.width > 100").show()                             # doctest: +SKIP
    """
    from pyspark.sql import SparkSession

    from sparkdl.engine.image_file_udf import (checkPreprocessor, formatShape,
                                               imagePreprocessorModelUdf)
    from sparkdl.engine.image_udf import imageModelUdf
    from sparkdl.param.shared import SparkDLTypeConverters

    if not isinstance(udfName, str) or not udfName:
        raise TypeError(f"udfName must be a non-empty string, got {udfName!r}")
    try:
        SparkDLTypeConverters.toCallable(preprocessor)
        batchSize = SparkDLTypeConverters.toPositiveInt(batchSize)
    except (TypeError, ValueError) as e:
        name = "preprocessor" if "function" in str(e) else "batchSize"
        raise type(e)(f"{name}: {e}") from None
    if preprocessorInput not in ("array", "path"):
        raise ValueError(f"preprocessorInput must be 'array' or 'path', got {preprocessorInput!r}")
    safeMode = bool(safeMode)

    handle = _handleForModel(kerasModelOrFile, safeMode)
    signature = _signature(handle, safeMode)
    inputShape = None
    if signature is not None:
        inputs, outputs = signature
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(f"the model has {len(inputs)} inputs and {len(outputs)} outputs; "
                             "registerKerasImageUDF needs one of each")
        inputShape = inputs[0]
        if len(inputShape) != 3:
            raise ValueError(f"the model takes inputs of shape batch x {formatShape(inputShape)}"
                             "; registerKerasImageUDF needs an image model: batch x height x "
                             "width x channels")
    if preprocessor is None:
        if inputShape is None or inputShape[2] != 3 or None in inputShape[:2]:
            shown = "unknown" if inputShape is None else f"batch x {formatShape(inputShape)}"
            raise ValueError(
                f"the model's input shape is {shown}; without a preprocessor, "
                "registerKerasImageUDF resizes images to a fixed height x width x 3 (RGB) "
                "input. Pass preprocessor=f (RGB array -> model input) for other models.")
        udf = imageModelUdf(handle, tuple(inputShape[:2]), preprocess=None, batchSize=batchSize)
    else:
        if preprocessorInput == "path":
            preprocessor = PathPreprocessor(preprocessor)
        try:
            checkPreprocessor(preprocessor, inputShape, what=f"preprocessor of {udfName!r}")
        except ValueError as e:
            hint = ("; a preprocessor written for 1.x takes a file path: pass "
                    "preprocessorInput='path'" if preprocessorInput == "array" else "")
            raise ValueError(f"{e}{hint}") from e.__cause__
        udf = imagePreprocessorModelUdf(handle, preprocessor, inputShape, batchSize=batchSize,
                                        name=udfName)
    return SparkSession.active().udf.register(udfName, udf)
