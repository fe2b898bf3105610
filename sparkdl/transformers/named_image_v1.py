"""DeepImageFeaturizer stages saved by Deep Learning Pipelines 1.x, read as sparkdl's.

1.x's ``DeepImageFeaturizer`` was a Scala stage (``com.databricks.sparkdl.DeepImageFeaturizer``)
saved by Spark's ``DefaultParamsWriter``: only ``metadata/`` (class, uid, ``paramMap``:
``inputCol``, ``outputCol``, ``modelName``, ``scaleHint``; Spark >= 2.4 adds
``defaultParamMap``). Its params map onto :class:`sparkdl.DeepImageFeaturizer` one to one,
plus what 1.x fixed: ImageNet weights, and its output, which was the model's last feature map
flattened (``pooling=None``) except for ResNet50, whose 1.x graph ended in Keras 2.1's average
pooling (``pooling="avg"``, 2048 values). A Spark ML model trained on 1.x features thus gets
features of the same size and meaning.

``PipelineModel.load`` finds the 1.x class through the ``com.databricks.sparkdl`` module that
sparkdl installs (it holds only this reader); ``DeepImageFeaturizer.load`` reads 1.x stages
too. Reading one runs no code from the saved files: only the four JSON params are used.
"""
from pyspark.ml.util import DefaultParamsReader, MLReader

__all__ = ["V1_CLASS", "V1_POOLING", "fromV1Metadata", "FeaturizerReader"]

#: The class name 1.x's metadata records.
V1_CLASS = "com.databricks.sparkdl.DeepImageFeaturizer"

#: pooling that reproduces 1.x's output for each 1.x model.
V1_POOLING = {"InceptionV3": None, "Xception": None, "ResNet50": "avg", "VGG16": None,
              "VGG19": None}

_V1_PARAMS = ("inputCol", "outputCol", "modelName", "scaleHint")


def fromV1Metadata(metadata, path=""):
    """The :class:`sparkdl.DeepImageFeaturizer` equal to the 1.x stage whose saved metadata
    (a dict, as ``DefaultParamsReader.loadMetadata`` returns) is given; its uid is kept.

    :param metadata: the 1.x stage's metadata.
    :param path: where it was read, for error messages.
    """
    from sparkdl.transformers.named_image import DeepImageFeaturizer

    params = dict(metadata.get("defaultParamMap") or {})
    params.update(metadata.get("paramMap") or {})
    where = f" at {path!r}" if path else ""
    unknown = sorted(set(params) - set(_V1_PARAMS))
    if unknown:
        raise ValueError(f"1.x DeepImageFeaturizer{where} has params {unknown} that 1.x never "
                         f"wrote; expected only {list(_V1_PARAMS)}")
    modelName = params.get("modelName")
    if modelName not in V1_POOLING:
        raise ValueError(f"1.x DeepImageFeaturizer{where} has modelName {modelName!r}; 1.x "
                         f"models: {sorted(V1_POOLING)}")
    stage = DeepImageFeaturizer(pooling=V1_POOLING[modelName], weights="imagenet",
                                **{k: params[k] for k in _V1_PARAMS if k in params})
    stage._resetUid(metadata["uid"])
    return stage


class FeaturizerReader(MLReader):
    """``DeepImageFeaturizer.read()``: sparkdl's own saved stages as usual, 1.x ones mapped
    by :func:`fromV1Metadata`."""

    def __init__(self, cls):
        super().__init__()
        self.cls = cls

    def load(self, path):
        metadata = DefaultParamsReader.loadMetadata(path, self.sparkSession)
        saved = metadata.get("class", "")
        if saved == V1_CLASS:
            return fromV1Metadata(metadata, path)
        # No module is imported on the saved files' word (pyspark's reader would import it).
        if saved.rpartition(".")[2] != self.cls.__name__:
            raise ValueError(f"{path!r} holds a saved {saved!r}, not a {self.cls.__name__}; "
                             "load it with its own class")
        instance = self.cls()
        instance._resetUid(metadata["uid"])
        DefaultParamsReader.getAndSetParams(instance, metadata)
        return instance
