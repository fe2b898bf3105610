"""``registerKerasImageUDF``: a Keras image model as a Spark SQL function on image structs."""
__all__ = ["registerKerasImageUDF", "PathPreprocessor"]

_ADVICE = "call registerKerasImageUDF(..., safeMode=False)"


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
                          batchSize=64, preprocessorInput="array", runtime="tensorflow",
                          precision="fp32"):
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
    :param runtime: what runs the model: ``"tensorflow"``, ``"openvino"``, ``"litert"`` or
        ``"auto"`` (see the guide's "Inference runtimes").
    :param precision: ``"fp32"`` or ``"bf16"`` (OpenVINO on CPUs with bfloat16).
    :return: the registered function, usable on DataFrame columns.

    >>> from sparkdl import readImages, registerKerasImageUDF
    >>> registerKerasImageUDF("classify", "/tmp/model.keras")                    # doctest: +SKIP
    >>> readImages("/data/images").createOrReplaceTempView("images")             # doctest: +SKIP
    >>> spark.sql("SELECT image.origin, classify(image) AS scores FROM images "
    ...           "WHERE image.width > 100").show()                             # doctest: +SKIP
    """
    from pyspark.sql import SparkSession

    from sparkdl.engine.image_file_udf import (checkPreprocessor, formatShape,
                                               imagePreprocessorModelUdf, modelShapes)
    from sparkdl.engine.image_udf import imageModelUdf
    from sparkdl.engine.shipping import handleFor
    from sparkdl.param.shared import SparkDLTypeConverters
    from sparkdl.transformers.stage import checkImageModel
    from sparkdl.udf.keras_udf import checkUdfName, kerasSource

    checkUdfName(udfName)
    try:
        SparkDLTypeConverters.toCallable(preprocessor)
        batchSize = SparkDLTypeConverters.toPositiveInt(batchSize)
    except (TypeError, ValueError) as e:
        name = "preprocessor" if "function" in str(e) else "batchSize"
        raise type(e)(f"{name}: {e}") from None
    if preprocessorInput not in ("array", "path"):
        raise ValueError(f"preprocessorInput must be 'array' or 'path', got {preprocessorInput!r}")
    safeMode = bool(safeMode)

    spark = SparkSession.active()
    handle = handleFor(kerasSource(kerasModelOrFile, safeMode, "registerKerasImageUDF", _ADVICE,
                                   "sparkdl.TFImageTransformer"),
                       spark).using(runtime, precision)
    inputShape, _ = checkImageModel(handle.inspect(modelShapes, advice=_ADVICE),
                                    "registerKerasImageUDF")
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
    return spark.udf.register(udfName, udf)
