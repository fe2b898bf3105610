"""The per-worker model cache: one load per key, bounded, and a frozen heap that keeps
PySpark's per-task ``gc.collect()`` cheap without leaking evicted models."""
import gc
import weakref

import pytest

from sparkdl.engine import model_cache


class Model:
    """Stands in for a Keras model: an object graph with a reference cycle."""

    def __init__(self, name):
        self.name = name
        self.layers = [{"owner": self}]


@pytest.fixture(autouse=True)
def empty_cache(monkeypatch):
    monkeypatch.setattr(model_cache, "MAX_MODELS", 2)
    model_cache.clear()
    yield
    model_cache.clear()


def test_loads_once_per_key():
    calls = []
    first = model_cache.get("a", lambda: calls.append(1) or Model("a"))
    assert model_cache.get("a", lambda: calls.append(1) or Model("a")) is first
    assert len(calls) == 1


def test_cached_models_are_frozen_so_a_collection_skips_them():
    model_cache.get("a", lambda: Model("a"))
    assert gc.get_freeze_count() > 0
    # gc.get_objects() lists what the daemon's gc.collect() after each task walks.
    assert not any(isinstance(o, Model) for o in gc.get_objects())


def test_an_evicted_model_is_freed_despite_its_cycles():
    evicted = weakref.ref(model_cache.get("a", lambda: Model("a")))
    model_cache.get("b", lambda: Model("b"))
    model_cache.get("c", lambda: Model("c"))  # evicts "a" (MAX_MODELS = 2)
    assert evicted() is None
    assert model_cache.get("c", lambda: Model("c2")).name == "c"


def test_relaxed_predict_function_serves_every_batch_size_without_retracing():
    import keras
    import numpy as np

    from sparkdl.engine.shipping import relaxBatchDimension

    def model():
        return keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(2, 3),
                                 keras.layers.GlobalAveragePooling2D()])

    relaxed, plain = model(), model()
    relaxBatchDimension(relaxed)
    traces = relaxed.predict_function.experimental_get_tracing_count()
    for rows in (5, 3, 7):
        relaxed.predict_on_batch(np.zeros((rows, 8, 8, 3), np.float32))
        plain.predict_on_batch(np.zeros((rows, 8, 8, 3), np.float32))
    assert relaxed.predict_function.experimental_get_tracing_count() == traces == 2
    # Without it, the second batch size traces again, in the middle of a job.
    assert plain.predict_function.experimental_get_tracing_count() == 2
    # Inputs with unknown non-batch sizes are left alone (no predict function is made).
    ragged = keras.Sequential([keras.Input((None, 3)), keras.layers.Dense(2)])
    relaxBatchDimension(ragged)
    assert getattr(ragged, "predict_function", None) is None
