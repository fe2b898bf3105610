"""The engine's inference runtimes against Keras run directly: OpenVINO and LiteRT give Keras's
features within 1e-4 on real photos, refuse what they cannot run with one line naming the
runtime, the model and the layer, and ``"auto"`` falls back to TensorFlow instead of failing.
"""
import logging
import os

import numpy as np
import pytest

import ai_edge_litert  # noqa: F401  (test extra: a missing runtime must fail, not skip)
import openvino  # noqa: F401

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from sparkdl.engine import runtimes  # noqa: E402
from sparkdl.engine.image_udf import resolve  # noqa: E402
from sparkdl.models.registry import buildModel, getModelEntry  # noqa: E402
from numerics import assert_close

SAMPLES = os.path.join(os.path.dirname(runtimes.__file__), "..", "resources", "samples")


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Converted models go to a cache of this module's own."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPARKDL_RUNTIME_CACHE", str(tmp_path_factory.mktemp("runtime-cache")))
        yield


def photos(name):
    """The bundled sample photos, resized and preprocessed for registry model ``name``."""
    entry = getModelEntry(name)
    files = sorted(f for f in os.listdir(SAMPLES) if f.endswith(".jpg"))
    x = np.stack([np.asarray(Image.open(os.path.join(SAMPLES, f)).convert("RGB")
                             .resize(entry.inputSize[::-1], Image.Resampling.BILINEAR),
                             np.float32) for f in files])
    return resolve(entry.preprocess)(x) if entry.preprocess else x


@pytest.fixture(scope="module")
def lite0():
    return buildModel("EfficientNetLite0", weights="imagenet", include_top=False, pooling="avg")


@pytest.mark.parametrize("runtime", ["openvino", "litert"])
def test_efficientnet_lite0_features_of_real_photos_equal_keras(lite0, runtime):
    x = photos("EfficientNetLite0")
    expected = lite0.predict_on_batch(x)
    predictor = runtimes.compileModel(lite0, runtime, threads=2, key="lite0-real")
    assert predictor.runtime == runtime and predictor.precision == "fp32"
    got = predictor.predict(x)
    assert got.shape == expected.shape == (3, 1280)
    assert np.abs(expected).max() > 1.0  # real features, not a vanishing random-init output
    assert_close(got, expected, 1e-4)
    # A batch of another size (a partition's last rows) is predicted alike.
    assert_close(predictor.predict(x[:1]), expected[:1], 1e-4)


@pytest.mark.parametrize("name, runtime", [("ResNet50", "openvino"), ("VGG16", "litert")])
def test_random_init_architectures_equal_keras(name, runtime):
    # MobileNets are not used here: with weights=None their features vanish (~1e-11), so
    # 1e-4 could not tell a wrong conversion from a right one.
    keras.utils.set_random_seed(0)
    model = buildModel(name, weights=None, include_top=False, pooling="avg")
    x = photos(name)
    expected = model.predict_on_batch(x)
    assert np.abs(expected).max() > 0.1
    got = runtimes.compileModel(model, runtime, threads=2).predict(x)
    assert_close(got, expected, 1e-4)


def test_bf16_is_opt_in_and_close_to_fp32(lite0):
    if not runtimes.cpuHasBf16():
        with pytest.raises(runtimes.RuntimeUnavailableError, match="bfloat16"):
            runtimes.compileModel(lite0, "openvino", "bf16", key="lite0-real")
        return
    x = photos("EfficientNetLite0")
    fp32 = runtimes.compileModel(lite0, "openvino", "fp32", key="lite0-real").predict(x)
    bf16 = runtimes.compileModel(lite0, "openvino", "bf16", key="lite0-real").predict(x)
    diff = np.abs(bf16 - fp32).max()
    # bf16 is really used (OpenVINO's fp32 hint is honoured), and stays close.
    assert 1e-4 < diff < 0.1 * np.abs(fp32).max()


def small_model(name="small"):
    keras.utils.set_random_seed(0)
    image, extra = keras.Input((8, 8, 3), name="image"), keras.Input((5,), name="extra")
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(image))
    out = keras.layers.Dense(3)(keras.layers.Concatenate()([x, extra]))
    return keras.Model([image, extra], out, name=name)


@pytest.mark.parametrize("runtime", ["openvino", "litert"])
def test_several_inputs_are_fed_in_keras_order(runtime):
    # OpenVINO lists a converted model's inputs by name, not in the model's order.
    model = small_model()
    rng = np.random.default_rng(0)
    a, b = rng.random((6, 8, 8, 3), np.float32), rng.random((6, 5), np.float32)
    got = runtimes.compileModel(model, runtime, threads=1).predict([a, b])
    assert_close(got, model.predict_on_batch([a, b]), 1e-5)


@keras.saving.register_keras_serializable("sparkdl_tests")
class SingularValues(keras.layers.Layer):
    """An op (Svd) that neither OpenVINO nor LiteRT's built-in ops convert."""

    def call(self, x):
        return tf.linalg.svd(x, compute_uv=False)


def svd_model():
    inputs = keras.Input((4, 4))
    x = keras.layers.Dense(4, name="dense")(inputs)
    return keras.Model(inputs, SingularValues(name="singular_values")(x), name="svd_net")


@pytest.mark.parametrize("runtime", ["openvino", "litert"])
def test_unconvertible_layer_is_one_line_naming_runtime_model_and_layer(runtime):
    with pytest.raises(runtimes.RuntimeUnavailableError) as err:
        runtimes.compileModel(svd_model(), runtime, modelName="modelFile 'my_model.keras'")
    message = str(err.value)
    assert "\n" not in message
    assert f"runtime {runtime!r} cannot convert modelFile 'my_model.keras'" in message
    assert "layer 'singular_values'" in message and "Svd" in message


def test_auto_falls_back_to_tensorflow_with_a_log_line(caplog):
    model = svd_model()
    x = np.random.default_rng(0).random((3, 4, 4), np.float32)
    with caplog.at_level(logging.WARNING, logger="sparkdl.engine.runtimes"):
        predictor = runtimes.compileModel(model, "auto")
    assert predictor.runtime == "tensorflow"
    assert "falls back to TensorFlow" in caplog.text and "singular_values" in caplog.text
    assert_close(predictor.predict(x), model.predict_on_batch(x), 1e-6)


def test_a_runtime_that_is_not_installed(monkeypatch):
    monkeypatch.setitem(runtimes._MODULES, "openvino", "sparkdl_no_such_module")
    with pytest.raises(runtimes.RuntimeUnavailableError,
                       match=r"runtime 'openvino' is not installed .*sparkdl\[openvino\].*'m1'"):
        runtimes.compileModel(small_model(name="m1"), "openvino")
    # auto takes the next installed runtime, and TensorFlow when none is.
    assert runtimes.resolveRuntime("auto") == "litert"
    monkeypatch.setitem(runtimes._MODULES, "litert", "sparkdl_no_such_module")
    assert runtimes.compileModel(small_model(), "auto").runtime == "tensorflow"


def test_auto_prefers_openvino_and_tensorflow_on_a_gpu_task():
    assert runtimes.resolveRuntime("auto") == "openvino"
    assert runtimes.resolveRuntime("auto", gpus=["0"]) == "tensorflow"
    assert runtimes.resolveRuntime("litert", gpus=["0"]) == "litert"


def test_bf16_without_cpu_support(monkeypatch, caplog):
    monkeypatch.setattr(runtimes, "cpuHasBf16", lambda: False)
    with pytest.raises(runtimes.RuntimeUnavailableError, match="precision 'bf16'.*'m2'"):
        runtimes.compileModel(small_model(name="m2"), "openvino", "bf16")
    for runtime in ("litert", "tensorflow"):
        with pytest.raises(runtimes.RuntimeUnavailableError, match="fp32 only"):
            runtimes.compileModel(small_model(), runtime, "bf16")
    with caplog.at_level(logging.WARNING, logger="sparkdl.engine.runtimes"):
        predictor = runtimes.compileModel(small_model(), "auto", "bf16", key="small")
    assert (predictor.runtime, predictor.precision) == ("openvino", "fp32")
    assert "running fp32" in caplog.text


def test_a_machine_converts_a_model_once():
    loads = []

    def load():
        loads.append(1)
        return small_model()

    rng = np.random.default_rng(0)
    a, b = rng.random((2, 8, 8, 3), np.float32), rng.random((2, 5), np.float32)
    for runtime in ("openvino", "litert"):
        first = runtimes.compileModel(load, runtime, key="once").predict([a, b])
        # A second worker of the machine: no Keras load, no conversion, the same result.
        second = runtimes.compileModel(load, runtime, key="once").predict([a, b])
        np.testing.assert_array_equal(first, second)
    assert len(loads) == 2


def test_a_cache_folder_others_can_write_is_not_used(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    monkeypatch.setenv("SPARKDL_RUNTIME_CACHE", str(shared))
    assert runtimes.cacheDir() is None
    model = small_model()
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 8, 8, 3), np.float32), rng.random((2, 5), np.float32)
    got = runtimes.compileModel(model, "litert", key="k").predict([a, b])
    assert_close(got, model.predict_on_batch([a, b]), 1e-5)
    assert os.listdir(shared) == []


def test_choices_are_checked():
    with pytest.raises(ValueError, match="runtime must be one of 'auto', 'tensorflow'.*'onnx'"):
        runtimes.checkRuntime("onnx")
    with pytest.raises(ValueError, match="precision must be one of 'fp32', 'bf16'; got 'fp16'"):
        runtimes.checkPrecision("fp16")
