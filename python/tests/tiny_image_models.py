"""Tiny seeded Keras image models and PNG files for the Keras image stage and UDF tests."""
import os

import numpy as np
from PIL import Image

import fixtures

SIZE = 16  # the classifier's input: SIZE x SIZE x 3


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    return keras


def classifier(seed=0, input_shape=(SIZE, SIZE, 3), lambda_layer=False):
    """Conv2D + GlobalAveragePooling + Dense(5); optionally a Lambda layer (Python bytecode)."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape)
    x = inputs
    if lambda_layer:
        x = keras.layers.Lambda(lambda t: t * 2.0 - 1.0)(x)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(5)(x))


def image_to_image(channels=3, seed=0):
    """A 1x1 Conv2D taking RGB images of any size to ``channels`` channels."""
    keras = _keras()
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 3))
    return keras.Model(inputs, keras.layers.Conv2D(channels, 1)(inputs))


def dense_model():
    """Not an image model: input (batch, 8)."""
    keras = _keras()
    inputs = keras.Input((8,))
    return keras.Model(inputs, keras.layers.Dense(2)(inputs))


def save(model, path):
    model.save(str(path))
    return str(path)


def predict(model, batch):
    return np.asarray(model.predict_on_batch(np.asarray(batch, np.float32)), np.float32)


def write_pngs(directory):
    """RGB PNGs of several sizes (one already SIZE x SIZE), a gray one and an RGBA one.
    Returns ``{name: path}``."""
    paths = {}
    arrays = {
        "square.png": fixtures.rgb_array(10, SIZE, SIZE),
        "wide.png": fixtures.rgb_array(11, 37, 53),
        "tall.png": fixtures.rgb_array(12, 29, 19),
        "gray.png": fixtures.rgb_array(13, 23, 31)[..., 0],
        "rgba.png": fixtures.rgba_array(14, 21, 17),
    }
    for name, arr in arrays.items():
        path = os.path.join(str(directory), name)
        Image.fromarray(arr).save(path)
        paths[name] = path
    return paths
