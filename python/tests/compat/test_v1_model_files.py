"""Keras model files are recognised by their content, not their name: 1.x-era HDF5 models
often have no extension, and a misnamed file loads as what it is."""
import shutil

import numpy as np
import pytest

from sparkdl import KerasTransformer
from sparkdl.engine.shipping import kerasFileFormat, kerasModelBytes, modelFromBytes
from numerics import assert_close


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import keras

    d = tmp_path_factory.mktemp("model-files")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
    model.save(str(d / "m.h5"))
    model.save(str(d / "m.keras"))
    paths = {"model": model}
    for name, source in [("no-extension-h5", "m.h5"), ("h5-named-keras.keras", "m.h5"),
                         ("no-extension-keras", "m.keras"), ("keras-named-h5.h5", "m.keras")]:
        shutil.copy(d / source, d / name)
        paths[name] = str(d / name)
    (d / "text.h5").write_text("not a model")
    paths["text.h5"] = str(d / "text.h5")
    return paths


@pytest.mark.parametrize("name,kind", [("no-extension-h5", ".h5"), ("h5-named-keras.keras", ".h5"),
                                       ("no-extension-keras", ".keras"),
                                       ("keras-named-h5.h5", ".keras")])
def test_files_load_by_content(files, name, kind):
    assert kerasFileFormat(files[name]) == kind
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    loaded = modelFromBytes(kerasModelBytes(files[name]))
    assert_close(loaded.predict_on_batch(x), files["model"].predict_on_batch(x), 1e-6)


def test_a_file_that_is_no_keras_model_is_refused_by_content(files):
    with pytest.raises(ValueError, match=r"modelFile '.*text.h5' must be a Keras .keras file "
                                         r"\(a zip\) or legacy .h5 file \(HDF5\); its content "
                                         r"is neither"):
        kerasModelBytes(files["text.h5"])


def test_stage_with_an_extensionless_1x_file(spark, files):
    rows = [(np.arange(4, dtype=float).tolist(),), ((np.arange(4) - 2.0).tolist(),)]
    df = spark.createDataFrame(rows, "features array<double>")
    out = KerasTransformer(inputCol="features", outputCol="y",
                           modelFile=files["no-extension-h5"]).transform(df).collect()
    expected = files["model"].predict_on_batch(np.array([r[0] for r in rows], np.float32))
    assert_close([r.y for r in out], expected, 1e-6)
