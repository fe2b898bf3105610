"""``registerKerasImageUDF``: a Keras image model as a Spark SQL function on image structs."""
__all__ = ["registerKerasImageUDF"]

_ADVICE = "call registerKerasImageUDF(..., safeMode=False)"


def registerKerasImageUDF(udfName, kerasModelOrFile, preprocessor=None, safeMode=True,
                          batchSize=64):
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

    Null and invalid images give null. The model is serialized once on the driver, loaded on
    the executors with Keras ``safe_mode=safeMode`` (a Lambda layer holding Python bytecode
    needs ``safeMode=False``, for models you trust) and cached per worker.

    :param udfName: name of the SQL function.
    :param kerasModelOrFile: a ``keras.Model`` or the path of a ``.keras`` / legacy ``.h5``
        file on the driver.
    :param preprocessor: optional ``RGB ndarray -> ndarray`` replacing the resize.
    :param safeMode: load the model with Keras ``safe_mode``.
    :param batchSize: images per ``predict`` call.
    :return: the registered function, usable on DataFrame columns.

    >>> from sparkdl import readImages, registerKerasImageUDF
    >>> registerKerasImageUDF("classify", "/tmp/model.keras")                    # doctest: +SKIP
    >>> readImages("/data/images").createOrReplaceTempView("images")             # doctest: +SKIP
    >>> spark.sql("SELECT image.origin, classify(image) AS scores FROM images "
    ...           "WHERE image.width > 100").show()                             # doctest: +SKIP
    """
    from pyspark.sql import SparkSession

    from sparkdl.engine.image_file_udf import formatShape, imagePreprocessorModelUdf, modelShapes
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
    safeMode = bool(safeMode)

    spark = SparkSession.active()
    handle = handleFor(kerasSource(kerasModelOrFile, safeMode, "registerKerasImageUDF", _ADVICE,
                                   "sparkdl.TFImageTransformer"),
                       spark)
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
        udf = imagePreprocessorModelUdf(handle, preprocessor, inputShape, batchSize=batchSize,
                                        name=udfName)
    return spark.udf.register(udfName, udf)
