"""Deep Learning Pipelines for Apache Spark 4 on TensorFlow/Keras 3.

Public names are imported lazily, so ``import sparkdl`` is fast and never imports TensorFlow;
the module that defines a name is imported on first use.
"""
import importlib

__version__ = "2.0.0.dev0"

# public name -> module that defines it
_EXPORTS = {
    "readImages": "sparkdl.image.reader",
    "readImagesStream": "sparkdl.image.reader",
    "ImageLoader": "sparkdl.transformers.image_loader",
    "DeepImageFeaturizer": "sparkdl.transformers.named_image",
    "DeepImagePredictor": "sparkdl.transformers.named_image",
    "KerasImageFileTransformer": "sparkdl.transformers.keras_image",
    "registerKerasImageUDF": "sparkdl.udf.keras_image_udf",
    "KerasImageFileEstimator": "sparkdl.estimators.keras_image_file_estimator",
    "KerasImageFileModel": "sparkdl.estimators.keras_image_file_estimator",
    "TFInputGraph": "sparkdl.graph.input",
    "TFTransformer": "sparkdl.transformers.tf_tensor",
    "TFImageTransformer": "sparkdl.transformers.tf_image",
    "KerasTransformer": "sparkdl.transformers.keras_tensor",
    "registerKerasUDF": "sparkdl.udf.keras_udf",
    "HorovodRunner": "sparkdl.horovod.runner",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sparkdl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
