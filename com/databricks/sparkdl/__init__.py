"""Where PySpark looks for the class a Deep Learning Pipelines 1.x pipeline recorded.

``PipelineModel.load`` imports each stage's class by the name in its metadata; 1.x's
``DeepImageFeaturizer`` was the Scala class ``com.databricks.sparkdl.DeepImageFeaturizer``.
This module (``com`` and ``com.databricks`` are namespace packages, shared with anyone else's)
holds only a loader that returns the equivalent :class:`sparkdl.DeepImageFeaturizer`; see
:mod:`sparkdl.transformers.named_image_v1`.
"""
from sparkdl.transformers.named_image_v1 import FeaturizerReader

__all__ = ["DeepImageFeaturizer"]


class DeepImageFeaturizer:
    """Loader of 1.x-saved ``DeepImageFeaturizer`` stages: ``load`` returns a
    :class:`sparkdl.DeepImageFeaturizer`."""

    @classmethod
    def read(cls):
        from sparkdl.transformers.named_image import DeepImageFeaturizer as Featurizer

        return FeaturizerReader(Featurizer)

    @classmethod
    def load(cls, path):
        return cls.read().load(path)
