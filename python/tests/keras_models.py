"""Tiny Keras models (a few Dense layers, seeded) for the array-model stages' tests, and the
rows that feed them: valid tensors plus null and malformed rows."""
import os

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def _seed():
    import keras

    keras.utils.set_random_seed(0)
    return keras


def dense_model(shape, units=3):
    """Input ``shape`` -> Dense(5, relu) on the last axis -> Dense(units); for rank > 1 the
    output keeps the leading dims (so outputs of rank > 1 are flattened by the stage)."""
    keras = _seed()
    x = keras.Input(shape, name="x")
    h = keras.layers.Dense(5, activation="relu")(x)
    return keras.Model(x, keras.layers.Dense(units)(h))


def two_input_model():
    """Inputs ``a`` (8,) and ``b`` (4, 6) -> one (3,) output."""
    keras = _seed()
    a = keras.Input((8,), name="a")
    b = keras.Input((4, 6), name="b")
    h = keras.layers.Concatenate()([keras.layers.Dense(4)(a),
                                    keras.layers.Dense(4)(keras.layers.Flatten()(b))])
    return keras.Model([a, b], keras.layers.Dense(3)(h))


def embedding_model():
    """An int32 input (5,) -> Embedding -> Flatten -> Dense(2)."""
    keras = _seed()
    x = keras.Input((5,), dtype="int32", name="tokens")
    h = keras.layers.Flatten()(keras.layers.Embedding(10, 3)(x))
    return keras.Model(x, keras.layers.Dense(2)(h))


def lambda_model():
    """(8,) -> Lambda (Python bytecode in the file) -> Dense(2)."""
    keras = _seed()
    x = keras.Input((8,), name="x")
    h = keras.layers.Lambda(lambda t: t * 2.0 + 1.0)(x)
    return keras.Model(x, keras.layers.Dense(2)(h))


def two_output_model():
    keras = _seed()
    x = keras.Input((8,), name="x")
    return keras.Model(x, [keras.layers.Dense(2)(x), keras.layers.Dense(3)(x)])


def save(model, folder, name):
    path = os.path.join(str(folder), f"{name}.keras")
    model.save(path)
    return path


def tensors(shape, count=5, seed=0, integer=False):
    rng = np.random.default_rng(seed)
    if integer:
        return rng.integers(-5, 6, (count,) + tuple(shape))
    return rng.standard_normal((count,) + tuple(shape))


def as_column(x, layout):
    """Rows of ``x`` as Python lists: ``"nested"`` keeps the dims, ``"flat"`` ravels."""
    return [r.ravel().tolist() if layout == "flat" else r.tolist() for r in x]


def malformed(shape, layout, integer=False):
    """Rows that must give null: a row one value short, one with a null element, and (for a
    nested column of rank > 1) one whose inner array is short."""
    good = np.zeros(shape, np.int64 if integer else np.float64)
    rows = []
    short = good.ravel().tolist()[:-1] if layout == "flat" else good.tolist()[:-1]
    rows.append(short)
    with_null = as_column(good[None], layout)[0]
    inner = with_null
    while isinstance(inner[-1], list):
        inner = inner[-1]
    inner[-1] = None
    rows.append(with_null)
    if layout == "nested" and len(shape) > 1:
        ragged = good.tolist()
        ragged[0] = ragged[0][:-1]
        rows.append(ragged)
    return rows


def spark_type(leaf, rank):
    return "array<" * rank + leaf + ">" * rank


def predict(model, x):
    """The model applied directly, one row per line."""
    out = model.predict(x if isinstance(x, list) else np.asarray(x, np.float32), verbose=0)
    return np.asarray(out).reshape(len(x[0]) if isinstance(x, list) else len(x), -1)
