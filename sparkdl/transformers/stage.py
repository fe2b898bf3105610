"""What sparkdl's stages and SQL registrars share on the driver, before they call the engine.

- Column checks with one wording: :func:`checkColumn`, :func:`checkStringColumn`,
  :func:`checkNewColumns`; :func:`quoteColumn` for names Spark must not split at dots.
- Output columns: :class:`HasOutputMode` (``'vector'`` or ``'image'``) and
  :func:`withVectorColumn` (an ``array<float>`` as an ML vector, nulls kept).
- User Keras models: :class:`HasKerasModel` (``modelFile``, ``safeMode`` and the bytes a saved
  stage carries) and :func:`checkKerasModelFile`.
"""
import os

from pyspark.ml.param import Param, Params, TypeConverters

from sparkdl.engine.image_file_udf import OUTPUT_MODES
from sparkdl.param.shared import SparkDLTypeConverters

__all__ = [
    "checkColumn",
    "checkStringColumn",
    "checkNewColumns",
    "quoteColumn",
    "toOutputMode",
    "HasOutputMode",
    "withVectorColumn",
    "checkKerasModelFile",
    "checkImageModel",
    "HasKerasModel",
]


def checkColumn(dataset, column, param):
    """Fail when ``column`` (named by ``param``, e.g. ``"inputCol"``) is not in ``dataset``;
    return its Spark type.

    :raises ValueError: naming the param, the column and the DataFrame's columns.
    """
    if column not in dataset.columns:
        raise ValueError(f"{param} {column!r} is not a column of the DataFrame; columns: "
                         f"{dataset.columns}")
    return dataset.schema[column].dataType


def checkStringColumn(dataset, column, param, holds="image URIs"):
    """:func:`checkColumn`, and the column must be a string column (it ``holds`` e.g. URIs).

    :raises TypeError: naming the param, the column and its type.
    """
    from pyspark.sql.types import StringType

    dataType = checkColumn(dataset, column, param)
    if not isinstance(dataType, StringType):
        raise TypeError(f"{param} {column!r} must hold {holds} of type string, got "
                        f"{dataType.simpleString()}")
    return dataType


def checkNewColumns(dataset, **columns):
    """Fail when an output column (``param=column``) already exists or two of them are equal."""
    seen = {}
    for param, column in columns.items():
        if column in dataset.columns:
            raise ValueError(f"{param} {column!r} is already a column of the DataFrame; "
                             "choose another name")
        if column in seen:
            raise ValueError(f"{seen[column]} and {param} must differ, both are {column!r}")
        seen[column] = param


def quoteColumn(column):
    """A column name as an expression that Spark does not split at dots."""
    return "`" + column.replace("`", "``") + "`"


#: Param converter of ``outputMode``: one of :data:`OUTPUT_MODES`.
toOutputMode = SparkDLTypeConverters.oneOf("outputMode", OUTPUT_MODES)


class HasOutputMode(Params):
    """Mixin for param outputMode: ``'vector'`` (the output flattened, as an ML vector) or
    ``'image'`` (an ``H x W x C`` output as a float32 image struct)."""

    outputMode = Param(Params._dummy(), "outputMode",
                       "'vector': the output flattened to an ML vector; 'image': an "
                       "H x W x C output as a float32 image struct",
                       typeConverter=toOutputMode)

    def setOutputMode(self, value):
        return self._set(outputMode=value)

    def getOutputMode(self):
        return self.getOrDefault(self.outputMode)


def withVectorColumn(dataset, outputCol, arrayColumn):
    """``dataset`` with ``outputCol`` = the ``array<float>`` column as an ML DenseVector.

    The array is materialized once in a temporary column (so the UDF runs once) and null rows
    stay null (``array_to_vector`` alone fails on nulls).
    """
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    tmp = f"__sparkdl_{outputCol}_array"
    return (
        dataset.withColumn(tmp, arrayColumn)
        .withColumn(outputCol, F.when(F.col(tmp).isNull(), F.lit(None))
                    .otherwise(array_to_vector(F.col(tmp))))
        .drop(tmp)
    )


def checkKerasModelFile(path, caller, alternative="sparkdl.TFImageTransformer"):
    """Refuse a directory (a TensorFlow SavedModel) with advice; the other checks happen where
    the engine reads the file (:func:`sparkdl.engine.shipping.kerasModelBytes`).

    :param caller: the stage or function named in the message.
    :param alternative: what runs a SavedModel instead.
    """
    if path is not None and os.path.isdir(path):
        raise ValueError(
            f"modelFile {path!r} is a directory (a TensorFlow SavedModel?); {caller} takes a "
            f"Keras .keras or legacy .h5 file. For a SavedModel use {alternative}.")


def checkImageModel(shapes, caller, what="the model"):
    """Check a Keras model's ``(inputShapes, outputShapes)``
    (:func:`sparkdl.engine.image_file_udf.modelShapes`) for an image stage: one input of
    ``batch x height x width x channels`` and one output.

    :return: ``(input shape, output shape)`` without the batch dimension, or
        ``(None, None)`` when Keras cannot tell.
    """
    from sparkdl.engine.image_file_udf import formatShape

    if shapes is None:
        return None, None
    inputs, outputs = shapes
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(f"{what} has {len(inputs)} inputs and {len(outputs)} outputs; "
                         f"{caller} needs one of each")
    if len(inputs[0]) != 3:
        raise ValueError(f"{what} takes inputs of shape batch x {formatShape(inputs[0])}; "
                         f"{caller} needs an image model: batch x height x width x channels")
    return inputs[0], outputs[0]


def _toBytes(value):
    if value is None:
        return None
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(value).__name__}")
    return bytes(value)


class HasKerasModel(Params):
    """Mixin for stages that run a user's Keras model: ``modelFile`` (a path on the driver),
    ``safeMode``, and the hidden ``modelBytes`` that a saved stage carries.

    The model is read once on the driver, shipped by the engine (broadcast ``.keras`` bytes),
    and loaded on executors with Keras ``safe_mode=safeMode``. Saving a stage copies the
    model's bytes into it, so a loaded stage no longer needs ``modelFile``.
    """

    modelFile = Param(Params._dummy(), "modelFile",
                      "path of a Keras model file (.keras or legacy .h5) on the driver",
                      typeConverter=TypeConverters.toString)
    safeMode = Param(Params._dummy(), "safeMode",
                     "load the model with Keras safe_mode, which refuses Lambda layers holding "
                     "Python bytecode; set False only for files you trust",
                     typeConverter=TypeConverters.toBoolean)
    modelBytes = Param(Params._dummy(), "modelBytes",
                       "the model as .keras bytes (filled when the stage is saved)",
                       typeConverter=_toBytes)

    _blobParams = {"modelBytes": "bytes"}

    def setModelFile(self, value):
        self.clear(self.modelBytes)
        return self._set(modelFile=value)

    def getModelFile(self):
        return self.getOrDefault(self.modelFile)

    def setSafeMode(self, value):
        return self._set(safeMode=value)

    def getSafeMode(self):
        return self.getOrDefault(self.safeMode)

    def _kerasModelSource(self):
        """The engine's source of this stage's model: the bytes a saved stage carries, else
        ``modelFile``."""
        from sparkdl.engine.shipping import kerasBytes, kerasFile

        if self.isSet(self.modelBytes):
            return kerasBytes(self.getOrDefault(self.modelBytes), self.getSafeMode(),
                              what="the stage's model")
        if not self.isSet(self.modelFile):
            raise ValueError("modelFile must be set to a Keras model file on the driver")
        return kerasFile(self.getModelFile(), self.getSafeMode())

    def _kerasModelHandle(self, spark):
        """Driver-side: the engine handle of this stage's model in ``spark`` (built and
        shipped once per file state)."""
        from sparkdl.engine.shipping import handleFor

        return handleFor(self._kerasModelSource(), spark)

    def _prepareForSave(self):
        if not self.isSet(self.modelBytes) and self.isSet(self.modelFile):
            self._set(modelBytes=self._kerasModelSource().build())
