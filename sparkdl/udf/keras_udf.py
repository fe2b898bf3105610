"""registerKerasUDF: a Keras model on array columns as a Spark SQL function; and what both
registrars share (:func:`checkUdfName`, :func:`kerasSource`)."""
import os

__all__ = ["registerKerasUDF", "checkUdfName", "kerasSource"]

_ADVICE = "call registerKerasUDF(..., safeMode=False)"


def checkUdfName(udfName):
    """A SQL function name must be a non-empty string (``ValueError`` otherwise)."""
    if not isinstance(udfName, str) or not udfName:
        raise ValueError(f"udfName must be a non-empty string, got {udfName!r}")


def kerasSource(kerasModelOrFile, safeMode, caller, advice, alternative):
    """The engine source of a registrar's ``kerasModelOrFile``: a ``keras.Model`` or the path
    of a ``.keras`` / ``.h5`` file on the driver (a directory is refused with advice)."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    from sparkdl.engine.shipping import kerasFile, kerasObject
    from sparkdl.transformers.stage import checkKerasModelFile

    if isinstance(kerasModelOrFile, keras.Model):
        return kerasObject(kerasModelOrFile, safeMode)
    if not isinstance(kerasModelOrFile, (str, os.PathLike)):
        raise TypeError("kerasModelOrFile must be a keras.Model or the path of a .keras / .h5 "
                        f"file, got {type(kerasModelOrFile).__name__}")
    checkKerasModelFile(os.fspath(kerasModelOrFile), caller, alternative)
    return kerasFile(kerasModelOrFile, safeMode, advice)


def registerKerasUDF(udfName, kerasModelOrFile, safeMode=True, batchSize=None):
    """Register a Keras model as the Spark SQL function ``udfName``, usable as
    ``spark.sql("SELECT udfName(features) FROM t")`` (or ``F.expr`` / ``F.call_function``).

    The function takes one array column per model input (in ``model.inputs`` order) and
    returns the model's output per row, flattened, as ``array<float>``; it runs on the same
    engine as :class:`sparkdl.KerasTransformer` (model read and checked here on the driver,
    broadcast once, loaded once per Python worker, ``predict_on_batch`` on ``batchSize``
    rows). Arguments are arrays of integers or floats, flat (``prod(shape)`` values) or nested
    with one level per input dimension; null or malformed rows give null. Spark does not tell
    a SQL function its argument types in advance, so an argument of the wrong type (not an
    array of numbers, or of another rank) fails the query's task with a message naming the
    argument and the expected shape.

    Registering a name again replaces the previous function.

    :param udfName: the SQL function name.
    :param kerasModelOrFile: a ``keras.Model`` or the path of a ``.keras`` / ``.h5`` file on
        the driver. The model needs one output and fully known input shapes.
    :param safeMode: load with Keras ``safe_mode`` (refuses Lambda layers holding Python
        bytecode); set False only for models you trust.
    :param batchSize: rows per ``predict_on_batch`` call; None: as many rows as fit in
        16 MiB of input, at most the Arrow batch Spark sends.
    :return: the registered function (also usable in the DataFrame API).

    >>> import keras
    >>> from sparkdl import registerKerasUDF
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2)])
    >>> _ = registerKerasUDF("my_model", model)
    >>> spark.createDataFrame([([1.0] * 8,)], "features array<double>") \\
    ...     .createOrReplaceTempView("t")
    >>> len(spark.sql("SELECT my_model(features) AS y FROM t").first().y)
    2
    """
    from pyspark.sql import SparkSession

    from sparkdl.engine.shipping import handleFor
    from sparkdl.engine.tensor_udf import signatureOf, tensorModelUdf
    from sparkdl.param.shared import SparkDLTypeConverters

    checkUdfName(udfName)
    if batchSize is not None:
        batchSize = SparkDLTypeConverters.toPositiveInt(batchSize)
    safeMode = bool(safeMode)
    spark = SparkSession.active()
    handle = handleFor(kerasSource(kerasModelOrFile, safeMode, "registerKerasUDF", _ADVICE,
                                   "sparkdl.TFTransformer"), spark)
    try:
        inputs = handle.inspect(signatureOf, advice=_ADVICE).inputs
    except ValueError as e:
        raise ValueError(f"registerKerasUDF({udfName!r}): {e}") from e
    udf = tensorModelUdf(handle, inputs, batchSize,
                         names=[f"{udfName} argument {k + 1}" for k in range(len(inputs))])
    return spark.udf.register(udfName, udf)
