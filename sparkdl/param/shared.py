"""Param mixins shared by sparkdl stages, in the style of ``pyspark.ml.param.shared``.

Converters validate at ``set`` time, so a bad value fails where it is given, naming the param.
"""
from pyspark.ml.param import Param, Params, TypeConverters

__all__ = [
    "SparkDLTypeConverters",
    "HasImageLoader",
    "HasTargetSize",
    "HasResizeMethod",
    "HasErrorCol",
    "HasBatchSize",
    "HasRuntime",
    "RUNTIMES",
    "PRECISIONS",
]

#: Values of the ``runtime`` param (what each means: ``sparkdl.engine.runtimes``).
RUNTIMES = ("auto", "tensorflow", "openvino", "litert")
#: Values of the ``precision`` param.
PRECISIONS = ("fp32", "bf16")


class SparkDLTypeConverters:
    """Converters for sparkdl params; each raises ``TypeError``/``ValueError`` with the reason."""

    @staticmethod
    def oneOf(name, choices):
        """A converter accepting one of the strings ``choices`` for the param ``name``."""
        choices = list(choices)

        def convert(value):
            value = TypeConverters.toString(value)
            if value not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {value!r}")
            return value

        return convert

    @staticmethod
    def toOptionalString(value):
        return None if value is None else TypeConverters.toString(value)

    @staticmethod
    def toCallable(value):
        if value is not None and not callable(value):
            raise TypeError(f"expected a function, got {type(value).__name__}")
        return value

    @staticmethod
    def toSize(value):
        """``(height, width)`` of two positive ints."""
        if value is None:
            return None
        size = TypeConverters.toListInt(value)
        if len(size) != 2 or min(size) <= 0:
            raise ValueError(f"expected (height, width) of two positive ints, got {value!r}")
        return size

    @staticmethod
    def toResizeMethod(value):
        from sparkdl.image.imageIO import resampleFilter

        value = TypeConverters.toString(value)
        resampleFilter(value)
        return value.lower()

    @staticmethod
    def toPositiveInt(value):
        value = TypeConverters.toInt(value)
        if value <= 0:
            raise ValueError(f"expected a positive integer, got {value}")
        return value


class HasImageLoader(Params):
    """Mixin for param imageLoader: a function ``uri -> RGB(A) array``, run on executors."""

    imageLoader = Param(
        Params._dummy(),
        "imageLoader",
        "function uri -> numpy array (H x W x C or 1 x H x W x C, RGB(A) channel order, "
        "uint8 or float32), run on the executors; None reads and decodes the file",
        typeConverter=SparkDLTypeConverters.toCallable,
    )

    def setImageLoader(self, value):
        return self._set(imageLoader=value)

    def getImageLoader(self):
        return self.getOrDefault(self.imageLoader)


class HasTargetSize(Params):
    """Mixin for param targetSize: ``(height, width)`` to resize images to, or None."""

    targetSize = Param(
        Params._dummy(),
        "targetSize",
        "(height, width) to resize images to; None keeps their size",
        typeConverter=SparkDLTypeConverters.toSize,
    )

    def setTargetSize(self, value):
        return self._set(targetSize=value)

    def getTargetSize(self):
        return self.getOrDefault(self.targetSize)


class HasResizeMethod(Params):
    """Mixin for param resizeMethod: a Pillow filter name."""

    resizeMethod = Param(
        Params._dummy(),
        "resizeMethod",
        "resampling filter for resizing: nearest, box, bilinear, hamming, bicubic or lanczos",
        typeConverter=SparkDLTypeConverters.toResizeMethod,
    )

    def setResizeMethod(self, value):
        return self._set(resizeMethod=value)

    def getResizeMethod(self):
        return self.getOrDefault(self.resizeMethod)


class HasErrorCol(Params):
    """Mixin for param errorCol: the column that keeps why a row could not be processed."""

    errorCol = Param(
        Params._dummy(),
        "errorCol",
        "output column with the reason a row's image is invalid (null when it is valid)",
        typeConverter=TypeConverters.toString,
    )

    def setErrorCol(self, value):
        return self._set(errorCol=value)

    def getErrorCol(self):
        return self.getOrDefault(self.errorCol)

    def _checkErrorCol(self, dataset, outputCol):
        """``errorCol`` may name an existing string column, an earlier stage's (e.g.
        :func:`sparkdl.readImages`' ``error``): :meth:`_withErrorCol` appends to it, so that
        ``readImages`` followed by any stage works with the defaults."""
        from pyspark.sql.types import StringType

        errorCol = self.getErrorCol()
        if errorCol == outputCol:
            raise ValueError(f"outputCol and errorCol must differ, both are {outputCol!r}")
        if errorCol in dataset.columns:
            dataType = dataset.schema[errorCol].dataType
            if not isinstance(dataType, StringType):
                raise TypeError(f"errorCol {errorCol!r} is a column of type "
                                f"{dataType.simpleString()}; an existing error column must hold "
                                "strings (the stage appends its reasons to it): choose another "
                                "errorCol")

    def _withErrorCol(self, dataset, reason):
        """``dataset`` with ``errorCol`` = ``reason`` (a string column, null when the row is
        fine); an existing ``errorCol`` keeps its reason, and a row bad for both gets
        ``"<earlier reason>; <this stage's reason>"``."""
        from pyspark.sql import functions as F

        errorCol = self.getErrorCol()
        if errorCol in dataset.columns:
            previous = F.col("`" + errorCol.replace("`", "``") + "`")
            reason = (F.when(previous.isNull(), reason).when(reason.isNull(), previous)
                      .otherwise(F.concat(previous, F.lit("; "), reason)))
        return dataset.withColumn(errorCol, reason)


class HasBatchSize(Params):
    """Mixin for param batchSize: rows per batch inside a task."""

    batchSize = Param(
        Params._dummy(),
        "batchSize",
        "number of rows processed together in a task (bounds its memory)",
        typeConverter=SparkDLTypeConverters.toPositiveInt,
    )

    def setBatchSize(self, value):
        return self._set(batchSize=value)

    def getBatchSize(self):
        return self.getOrDefault(self.batchSize)


class HasRuntime(Params):
    """Mixin for params ``runtime`` and ``precision``: what runs the model on the executors.

    ``runtime``: ``"tensorflow"`` (Keras's ``predict_on_batch``), ``"openvino"``, ``"litert"``
    (the model converted once per machine, needs ``sparkdl[openvino]`` / ``sparkdl[litert]``
    on the executors), or ``"auto"``: OpenVINO when installed, else LiteRT, else TensorFlow
    (and TensorFlow on a task with a GPU), falling back to TensorFlow with a logged warning
    when the runtime cannot convert the model. ``precision``: ``"fp32"`` (results equal
    Keras's within 1e-4) or ``"bf16"`` (OpenVINO on a CPU with bfloat16 instructions; faster,
    less exact; with ``"auto"`` it falls back to fp32 where unavailable).
    """

    runtime = Param(
        Params._dummy(), "runtime",
        "what runs the model: 'auto', 'tensorflow', 'openvino' or 'litert'",
        typeConverter=SparkDLTypeConverters.oneOf("runtime", RUNTIMES))
    precision = Param(
        Params._dummy(), "precision",
        "inference precision: 'fp32' or 'bf16' (OpenVINO on CPUs with bfloat16 only)",
        typeConverter=SparkDLTypeConverters.oneOf("precision", PRECISIONS))

    def __init__(self):
        super().__init__()
        # TensorFlow by default: results bit-identical to Keras and no conversion, whose
        # cost (once per machine and model) outweighs the gain on small jobs; see
        # docs/guide/runtimes.rst for the measurements.
        self._setDefault(runtime="tensorflow", precision="fp32")

    def setRuntime(self, value):
        return self._set(runtime=value)

    def getRuntime(self):
        return self.getOrDefault(self.runtime)

    def setPrecision(self, value):
        return self._set(precision=value)

    def getPrecision(self):
        return self.getOrDefault(self.precision)
