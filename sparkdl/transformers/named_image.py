"""Named pretrained image models as Transformers: DeepImageFeaturizer and DeepImagePredictor."""
import numpy as np
import pyarrow as pa
from pyspark import keyword_only
from pyspark.ml import Transformer
from pyspark.ml.param import Param, Params, TypeConverters
from pyspark.ml.param.shared import HasInputCol, HasOutputCol
from pyspark.ml.util import DefaultParamsReadable, DefaultParamsWritable
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType, StringType

from sparkdl.param.shared import HasBatchSize, HasErrorCol, HasRuntime, SparkDLTypeConverters
from sparkdl.transformers.stage import checkColumn, withVectorColumn

__all__ = ["DeepImageFeaturizer", "DeepImagePredictor", "SCALE_HINTS"]

#: The original library's ``scaleHint`` names (java.awt.Image hints) -> Pillow filters:
#: AREA_AVERAGING is area averaging (box; the default, best when shrinking photos), SMOOTH
#: favours quality (bicubic; best when enlarging small images), DEFAULT is bilinear, FAST and
#: REPLICATE replicate pixels (nearest).
SCALE_HINTS = {
    "SCALE_AREA_AVERAGING": "box",
    "SCALE_SMOOTH": "bicubic",
    "SCALE_DEFAULT": "bilinear",
    "SCALE_FAST": "nearest",
    "SCALE_REPLICATE": "nearest",
}


def _toModelName(value):
    from sparkdl.models.registry import getModelEntry

    return getModelEntry(TypeConverters.toString(value)).name


_toScaleHint = SparkDLTypeConverters.oneOf("scaleHint", SCALE_HINTS)


def _toPooling(value):
    if value is None:
        return None
    value = TypeConverters.toString(value)
    if value not in ("avg", "max"):
        raise ValueError(f"pooling must be 'avg', 'max' or None, got {value!r}")
    return value


class _NamedImageParams(HasInputCol, HasOutputCol, HasBatchSize, HasRuntime, HasErrorCol):
    modelName = Param(Params._dummy(), "modelName",
                      "name of a model in sparkdl's registry (as in keras.applications)",
                      typeConverter=_toModelName)
    weights = Param(Params._dummy(), "weights",
                    "'imagenet' (Keras's cache/download on the driver, or the bundled package "
                    "for EfficientNetLite0), None (random init, seeded), or a local weights file",
                    typeConverter=SparkDLTypeConverters.toOptionalString)
    scaleHint = Param(Params._dummy(), "scaleHint",
                      "how images are resized to the model's input size: " + ", ".join(SCALE_HINTS),
                      typeConverter=_toScaleHint)

    def setInputCol(self, value):
        return self._set(inputCol=value)

    def setOutputCol(self, value):
        return self._set(outputCol=value)

    def getModelName(self):
        return self.getOrDefault(self.modelName)

    def setModelName(self, value):
        return self._set(modelName=value)

    def getWeights(self):
        return self.getOrDefault(self.weights)

    def setWeights(self, value):
        return self._set(weights=value)

    def getScaleHint(self):
        return self.getOrDefault(self.scaleHint)

    def setScaleHint(self, value):
        return self._set(scaleHint=value)

    def _validateInput(self, dataset):
        from sparkdl.image.imageIO import imageSchema, isImageSchema

        from sparkdl.models.registry import supportedModelNames

        if not self.isDefined(self.modelName):
            raise ValueError("modelName must be set; supported: "
                             + ", ".join(supportedModelNames()))
        col = self.getInputCol()
        dataType = checkColumn(dataset, col, "inputCol")
        if not (isImageSchema(dataType) or isinstance(dataType, (BinaryType, StringType))):
            raise TypeError(f"inputCol {col!r} must be an image struct {imageSchema.simpleString()}"
                            " (see sparkdl.readImages), image file bytes (binary) or image URIs "
                            f"(string), got {dataType.simpleString()}")
        if self._errorColOrNone() is not None:
            self._checkErrorCol(dataset, self.getOutputCol())

    def _errorColOrNone(self):
        """``errorCol`` when set (not None), else None: no error column, as in 1.x."""
        return self.getErrorCol() if self.isDefined(self.errorCol) else None

    def _withOutput(self, dataset, udf, vector=True):
        """``dataset`` with the UDF's output in ``outputCol`` (as a vector when ``vector``) and,
        with ``errorCol`` set, the reasons in ``errorCol`` (appended to an existing one)."""
        outputCol, column = self.getOutputCol(), udf(F.col(self.getInputCol()))
        if self._errorColOrNone() is None:
            if vector:
                return withVectorColumn(dataset, outputCol, column)
            return dataset.withColumn(outputCol, column)
        # The struct is materialized once (the UDF runs once); its fields are read from it.
        tmp = f"__{self.uid}_result"
        result = dataset.withColumn(tmp, column)
        output = F.col(f"{tmp}.output")
        if vector:
            result = withVectorColumn(result, outputCol, output)
        else:
            result = result.withColumn(outputCol, output)
        return self._withErrorCol(result, F.col(f"{tmp}.error")).drop(tmp)

    def _modelUdf(self, spark, includeTop, pooling, returnType="array<float>", postprocess=None):
        from sparkdl.engine.image_udf import imageModelUdf
        from sparkdl.engine.shipping import handleFor, registryModel
        from sparkdl.models.registry import getModelEntry

        entry = getModelEntry(self.getModelName())
        handle = handleFor(registryModel(entry, self.getWeights(), includeTop, pooling), spark)
        handle = handle.using(self.getRuntime(), self.getPrecision())
        return imageModelUdf(handle, entry.inputSize, entry.preprocess,
                             resizeMethod=SCALE_HINTS[self.getScaleHint()],
                             batchSize=self.getBatchSize(), returnType=returnType,
                             postprocess=postprocess,
                             withErrors=self._errorColOrNone() is not None)


class DeepImageFeaturizer(Transformer, _NamedImageParams, DefaultParamsReadable,
                          DefaultParamsWritable):
    """Applies a pretrained image model without its classifier to an image column, giving a
    feature vector per image: transfer learning is this stage followed by any Spark ML
    classifier (e.g. ``LogisticRegression``) in one ``Pipeline``.

    ``inputCol`` holds Spark's image struct (any of sparkdl's 8-bit or float modes), or image
    file bytes (``binary``, e.g. the ``content`` of Spark's ``binaryFile`` source), or image
    URIs (``string``). Bytes and URIs are decoded inside the inference UDF (by the rule of
    :mod:`sparkdl.image.imageIO`), so decoded pixels never cross the JVM: the fastest way to
    featurize files. Images are converted to RGB, resized to the model's input size with
    ``scaleHint`` and preprocessed exactly as the model's ``keras.applications``
    ``preprocess_input`` does. ``pooling="avg"`` (default) or
    ``"max"`` gives the pooled last feature map (e.g. 2048 values for InceptionV3, 1280 for
    EfficientNetLite0); ``pooling=None`` gives the flattened map, as the original library did
    (InceptionV3: 8 x 8 x 2048 = 131,072 values; see ``sparkdl.models.registry``).

    A bad row never fails the job: a null, invalid or malformed image struct, and a file
    that cannot be read (missing, unknown URI scheme) or decoded (empty, not an image), give
    a null vector. ``errorCol`` (unset by default: no extra column, as in 1.x) names a column
    for the reason of each such row (null for good and null rows), worded by
    ``sparkdl.utils.rows`` (e.g. ``"cannot read file: no filesystem for scheme s3a: ..."``,
    ``"empty file"``, ``"malformed image struct: data has 10 bytes, ..."``); an existing
    string column of that name (e.g. ``readImages``' ``error``) is appended to. Set it when
    the input is URIs or bytes, whose reasons no earlier stage gives.

    >>> from sparkdl import readImages, DeepImageFeaturizer
    >>> from pyspark.ml import Pipeline
    >>> from pyspark.ml.classification import LogisticRegression
    >>> featurizer = DeepImageFeaturizer(inputCol="image", outputCol="features",
    ...                                  modelName="EfficientNetLite0")
    >>> lr = LogisticRegression(featuresCol="features", labelCol="label")
    >>> model = Pipeline(stages=[featurizer, lr]).fit(train)          # doctest: +SKIP
    >>> model.write().overwrite().save("/tmp/featurizer-lr")          # doctest: +SKIP
    >>> PipelineModel.load("/tmp/featurizer-lr").transform(test)      # doctest: +SKIP
    """

    pooling = Param(Params._dummy(), "pooling", "'avg', 'max' or None (flattened feature map)",
                    typeConverter=_toPooling)

    @keyword_only
    def __init__(self, inputCol=None, outputCol=None, modelName=None,
                 scaleHint="SCALE_AREA_AVERAGING", pooling="avg", batchSize=64,
                 weights="imagenet",
                 runtime="tensorflow", precision="fp32", errorCol=None):
        super().__init__()
        self._setDefault(scaleHint="SCALE_AREA_AVERAGING", pooling="avg", batchSize=64,
                         weights="imagenet")
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, inputCol=None, outputCol=None, modelName=None,
                  scaleHint="SCALE_AREA_AVERAGING", pooling="avg", batchSize=64,
                  weights="imagenet",
                  runtime="tensorflow", precision="fp32", errorCol=None):
        """Sets params for this DeepImageFeaturizer."""
        return self._set(**self._input_kwargs)

    @classmethod
    def read(cls):
        """Reads sparkdl's saved stages and those saved by Deep Learning Pipelines 1.x
        (see :mod:`sparkdl.transformers.named_image_v1`)."""
        from sparkdl.transformers.named_image_v1 import FeaturizerReader

        return FeaturizerReader(cls)

    def getPooling(self):
        return self.getOrDefault(self.pooling)

    def setPooling(self, value):
        return self._set(pooling=value)

    def _transform(self, dataset):
        self._validateInput(dataset)
        udf = self._modelUdf(dataset.sparkSession, includeTop=False, pooling=self.getPooling())
        return self._withOutput(dataset, udf)


_DECODED_TYPE = "array<struct<class:string,description:string,probability:float>>"


def _decodePredictions(topK):
    """Postprocess for the engine UDF: probabilities -> top-K (class, description, prob)."""
    arrowType = pa.list_(pa.struct([("class", pa.string()), ("description", pa.string()),
                                    ("probability", pa.float32())]))

    def decode(probabilities, validRows, n):
        from sparkdl.models.imagenet import class_index

        index = class_index()
        rows = [None] * n
        top = np.argsort(-probabilities, axis=1, kind="stable")[:, :topK]
        for j, i in enumerate(validRows):
            rows[i] = [{"class": index[str(c)][0], "description": index[str(c)][1],
                        "probability": float(probabilities[j, c])} for c in top[j]]
        return pa.array(rows, arrowType)

    return decode


class DeepImagePredictor(Transformer, _NamedImageParams, DefaultParamsReadable,
                         DefaultParamsWritable):
    """Applies a pretrained ImageNet classifier to an image column.

    ``outputCol`` holds the 1000 class probabilities as a vector or, with
    ``decodePredictions=True``, the ``topK`` most likely classes as an
    ``array<struct<class: string, description: string, probability: float>>`` (WordNet id,
    readable name; the class index ships with sparkdl and works offline). Inputs (image
    structs, file bytes or URIs), resizing and preprocessing are those of
    :class:`DeepImageFeaturizer`. Bad rows give null, never a failed job; ``errorCol`` (unset
    by default) names a column for their reasons, as for :class:`DeepImageFeaturizer`.

    >>> from sparkdl import readImages, DeepImagePredictor
    >>> from sparkdl.resources import samplesDir
    >>> predictor = DeepImagePredictor(inputCol="image", outputCol="predicted",
    ...                                modelName="EfficientNetLite0", decodePredictions=True,
    ...                                topK=3)
    >>> row = predictor.transform(readImages(samplesDir(), pathGlobFilter="coffee.jpg")).first()
    >>> row.predicted[0].description
    'espresso'
    >>> predictor.save("/tmp/predictor")                                    # doctest: +SKIP
    >>> DeepImagePredictor.load("/tmp/predictor").getTopK()                 # doctest: +SKIP
    3
    """

    decodePredictions = Param(Params._dummy(), "decodePredictions",
                              "output the topK (class, description, probability) instead of the "
                              "probability vector", typeConverter=TypeConverters.toBoolean)
    topK = Param(Params._dummy(), "topK", "how many classes decodePredictions keeps",
                 typeConverter=SparkDLTypeConverters.toPositiveInt)

    @keyword_only
    def __init__(self, inputCol=None, outputCol=None, modelName=None, decodePredictions=False,
                 topK=5, scaleHint="SCALE_AREA_AVERAGING", batchSize=64, weights="imagenet",
                 runtime="tensorflow", precision="fp32", errorCol=None):
        super().__init__()
        self._setDefault(decodePredictions=False, topK=5, scaleHint="SCALE_AREA_AVERAGING",
                         batchSize=64, weights="imagenet")
        self._set(**self._input_kwargs)

    @keyword_only
    def setParams(self, inputCol=None, outputCol=None, modelName=None, decodePredictions=False,
                  topK=5, scaleHint="SCALE_AREA_AVERAGING", batchSize=64, weights="imagenet",
                  runtime="tensorflow", precision="fp32", errorCol=None):
        """Sets params for this DeepImagePredictor."""
        return self._set(**self._input_kwargs)

    def getDecodePredictions(self):
        return self.getOrDefault(self.decodePredictions)

    def getTopK(self):
        return self.getOrDefault(self.topK)

    def _transform(self, dataset):
        self._validateInput(dataset)
        if self.getDecodePredictions():
            udf = self._modelUdf(dataset.sparkSession, includeTop=True, pooling=None,
                                 returnType=_DECODED_TYPE,
                                 postprocess=_decodePredictions(self.getTopK()))
            return self._withOutput(dataset, udf, vector=False)
        udf = self._modelUdf(dataset.sparkSession, includeTop=True, pooling=None)
        return self._withOutput(dataset, udf)
