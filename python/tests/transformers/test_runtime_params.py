"""The ``runtime`` and ``precision`` params of the model stages and SQL registrars: the
converted runtimes give Keras's results through Spark, the params persist with the stage, and
a runtime that cannot run a model fails with one line, or with ``"auto"`` falls back."""
import numpy as np
import pytest

import keras_models as km
from sparkdl import (DeepImageFeaturizer, DeepImagePredictor, KerasImageFileTransformer,
                     KerasTransformer, readImages, registerKerasUDF)
from sparkdl.param.persistence import SparkDLReadable
from sparkdl.resources import samplesDir
from numerics import assert_close


def by_origin(df, col):
    return {r.origin: np.asarray(r[col].toArray() if hasattr(r[col], "toArray") else r[col])
            for r in df.select("image.origin", col).collect()}


def test_featurizer_on_openvino_equals_tensorflow(spark):
    images = readImages(samplesDir())
    stage = DeepImageFeaturizer(inputCol="image", outputCol="f", modelName="EfficientNetLite0")
    assert (stage.getRuntime(), stage.getPrecision()) == ("tensorflow", "fp32")
    expected = by_origin(stage.transform(images), "f")
    assert len(expected) == 3 and max(np.abs(v).max() for v in expected.values()) > 1
    # (LiteRT through Spark: the KerasTransformer test below; both against Keras directly on
    # these photos: python/tests/test_runtimes.py.)
    got = by_origin(stage.copy({stage.runtime: "openvino"}).transform(images), "f")
    for origin, features in expected.items():
        assert_close(got[origin], features, 1e-4)


def loader(uri):
    return np.zeros((4, 4, 3), np.float32)


STAGES = [
    lambda path: DeepImageFeaturizer(inputCol="image", outputCol="f", modelName="MobileNetV2"),
    lambda path: DeepImagePredictor(inputCol="image", outputCol="p", modelName="MobileNetV2"),
    lambda path: KerasTransformer(inputCol="x", outputCol="y", modelFile=path),
    lambda path: KerasImageFileTransformer(inputCol="uri", outputCol="y", modelFile=path,
                                           imageLoader=loader),
]


@pytest.mark.parametrize("make", STAGES, ids=["featurizer", "predictor", "keras", "imagefile"])
def test_runtime_and_precision_save_and_load(spark, make, tmp_path):
    path = km.save(km.dense_model((8,)), tmp_path, "dense")
    stage = make(path)
    assert (stage.getRuntime(), stage.getPrecision()) == ("tensorflow", "fp32")
    stage.setRuntime("openvino").setPrecision("bf16")
    stage.save(str(tmp_path / "stage"))
    # (KerasImageFileTransformer carries a pickled imageLoader: loading it is opted into.)
    trusted = {"allowUserCode": True} if isinstance(stage, SparkDLReadable) else {}
    loaded = type(stage).load(str(tmp_path / "stage"), **trusted)
    assert (loaded.getRuntime(), loaded.getPrecision()) == ("openvino", "bf16")
    with pytest.raises(ValueError, match=r"runtime must be one of \['auto', 'tensorflow', "
                                         r"'openvino', 'litert'\], got 'onnx'"):
        stage.setRuntime("onnx")
    with pytest.raises(ValueError, match="precision must be one of .*got 'fp16'"):
        stage.setPrecision("fp16")


def test_keras_transformer_on_litert_equals_keras(spark, tmp_path):
    model = km.dense_model((8,))
    x = km.tensors((8,), count=5)
    df = spark.createDataFrame([(i, [float(v) for v in row]) for i, row in enumerate(x)],
                               "id int, x array<float>")
    stage = KerasTransformer(inputCol="x", outputCol="y", modelFile=km.save(model, tmp_path, "m"),
                             runtime="litert")
    got = [r.y for r in sorted(stage.transform(df).collect(), key=lambda r: r.id)]
    assert_close(np.array(got), km.predict(model, x), 1e-5)


def svd_file(tmp_path):
    """A model whose Lambda layer computes singular values: neither OpenVINO nor LiteRT's
    built-in ops convert Svd; TensorFlow runs it."""
    import keras

    inputs = keras.Input((4, 4))
    x = keras.layers.Dense(4, name="dense")(inputs)
    # (Keras loads a Lambda's code with globals of its own, where ``keras`` is not the module:
    # the lambda imports it, or the job fails on that and not on the runtime.)
    out = keras.layers.Lambda(lambda t: __import__("keras").ops.svd(t, compute_uv=False),
                              output_shape=(4,), name="singular_values")(x)
    model = keras.Model(inputs, out, name="svd_net")
    return model, km.save(model, tmp_path, "svd")


def test_unconvertible_model_one_line_error_and_auto_fallback(spark, tmp_path):
    model, path = svd_file(tmp_path)
    x = np.random.default_rng(0).random((3, 16), np.float32)
    df = spark.createDataFrame([(i, [float(v) for v in row]) for i, row in enumerate(x)],
                               "id int, x array<float>")
    stage = KerasTransformer(inputCol="x", outputCol="y", modelFile=path, safeMode=False,
                             runtime="litert")
    with pytest.raises(Exception) as err:
        stage.transform(df).collect()
    # The worker's traceback comes back in the job's error; its last line is the engine's.
    line = next((line for line in str(err.value).splitlines()
                 if "runtime 'litert' cannot convert modelFile" in line), None)
    assert line is not None, str(err.value)
    assert line.startswith("sparkdl.engine.runtimes.RuntimeUnavailableError: ") and path in line
    assert "layer 'singular_values' (op Svd)" in line
    got = stage.setRuntime("auto").transform(df).collect()
    got = np.array([r.y for r in sorted(got, key=lambda r: r.id)])
    assert_close(got, model.predict_on_batch(x.reshape(3, 4, 4)), 1e-5)


def test_sql_function_on_openvino(spark, tmp_path):
    model = km.dense_model((8,))
    x = km.tensors((8,), count=4)
    registerKerasUDF("dense_openvino", km.save(model, tmp_path, "m"), runtime="openvino")
    spark.createDataFrame([(i, [float(v) for v in row]) for i, row in enumerate(x)],
                          "id int, x array<float>").createOrReplaceTempView("runtime_rows")
    got = spark.sql("SELECT id, dense_openvino(x) AS y FROM runtime_rows ORDER BY id").collect()
    assert_close(np.array([r.y for r in got]), km.predict(model, x), 1e-5)
