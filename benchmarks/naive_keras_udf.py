"""The naive Spark recipe for a Keras model on an array column, as the benchmark's baseline:
a ``pandas_udf`` that ``np.stack``s the Series of arrays and calls the model, which it caches
in a module-level dict (so a reused Python worker loads it once). Kept in its own module so
workers import it, as a user's helper module would be."""
import numpy as np
import pandas as pd

_MODELS = {}


def cached_model(path):
    if path not in _MODELS:
        import keras

        _MODELS[path] = keras.saving.load_model(path, compile=False)
    return _MODELS[path]


def naive_udf(path):
    from pyspark.sql.functions import pandas_udf

    @pandas_udf("array<float>")
    def predict(features: pd.Series) -> pd.Series:
        x = np.stack(features.to_numpy()).astype(np.float32)
        out = cached_model(path).predict_on_batch(x)
        return pd.Series(list(np.asarray(out, np.float32)))

    return predict
