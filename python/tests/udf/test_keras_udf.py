"""registerKerasUDF: Keras models as Spark SQL functions on array columns."""
import numpy as np
import pytest

import keras_models as km
from sparkdl import registerKerasUDF
from numerics import assert_close


def sql_outputs(spark, query):
    return [r.y for r in sorted(spark.sql(query).collect(), key=lambda r: r.id)]


def view(spark, name, rows, schema):
    spark.createDataFrame(rows, schema).createOrReplaceTempView(name)


def test_sql_function_from_file_equals_keras_predict(spark, tmp_path):
    model = km.dense_model((3, 4, 2))
    path = km.save(model, tmp_path, "dense_3d")
    x = km.tensors((3, 4, 2), count=6)
    rows = [(i, r.tolist(), r.ravel().tolist()) for i, r in enumerate(x)]
    rows += [(6, None, [1.0] * 23), (7, km.malformed((3, 4, 2), "nested")[2], None)]
    view(spark, "t3d", rows, "id int, nested array<array<array<double>>>, flat array<float>")
    registerKerasUDF("keras_3d", path, batchSize=4)
    expected = km.predict(model, x)
    for col in ("nested", "flat"):
        got = sql_outputs(spark, f"SELECT id, keras_3d({col}) AS y FROM t3d")
        assert got[6:] == [None, None]
        assert_close(np.array(got[:6]), expected, 1e-5)
    assert spark.sql("SELECT keras_3d(flat) AS y FROM t3d").schema["y"].simpleString() \
        == "y:array<float>"


def test_model_object_multi_input_and_re_registration(spark):
    model = km.two_input_model()
    a, b = km.tensors((8,), count=5, seed=1), km.tensors((4, 6), count=5, seed=2)
    rows = [(i, a[i].tolist(), b[i].astype(np.int64).tolist()) for i in range(5)]
    view(spark, "t2", rows + [(5, None, b[0].astype(np.int64).tolist())],
         "id int, a array<double>, b array<array<bigint>>")
    registerKerasUDF("keras_fn", model)
    got = sql_outputs(spark, "SELECT id, keras_fn(a, b) AS y FROM t2")
    assert got[5] is None
    expected = model.predict([a.astype(np.float32), b.astype(np.int64).astype(np.float32)], verbose=0)
    assert_close(np.array(got[:5]), expected, 1e-5)

    # Registering the name again replaces the function (now a one-input model of (8,)).
    other = km.dense_model((8,), units=2)
    registerKerasUDF("keras_fn", other)
    got = sql_outputs(spark, "SELECT id, keras_fn(a) AS y FROM t2")
    assert got[5] is None
    assert_close(np.array(got[:5]), km.predict(other, a), 1e-5)


def test_wrong_argument_type_fails_with_the_expected_shape(spark):
    registerKerasUDF("keras_8", km.dense_model((8,)))
    view(spark, "tstr", [(0, "not an array")], "id int, s string")
    with pytest.raises(Exception, match=r"keras_8 argument 1 feeds a model input of shape \(8,\) "
                                        r"and must be an array of 8 numbers; got Arrow type string"):
        spark.sql("SELECT id, keras_8(s) AS y FROM tstr").collect()


def test_lambda_model_refused_at_registration_unless_safe_mode_is_off(spark, tmp_path):
    model = km.lambda_model()
    path = km.save(model, tmp_path, "lambda")
    # One wording, naming what to change in this call (not a stage's param).
    advice = r"If you trust it, call registerKerasUDF\(\.\.\., safeMode=False\)"
    with pytest.raises(ValueError, match=r"modelFile '.*lambda.keras' holds Python bytecode.*"
                                         + advice):
        registerKerasUDF("keras_lambda", path)
    with pytest.raises(ValueError, match="the model holds Python bytecode.*" + advice):
        registerKerasUDF("keras_lambda", model)
    registerKerasUDF("keras_lambda", path, safeMode=False)
    x = km.tensors((8,), count=3)
    view(spark, "tl", [(i, r.tolist()) for i, r in enumerate(x)], "id int, x array<float>")
    got = sql_outputs(spark, "SELECT id, keras_lambda(x) AS y FROM tl")
    assert_close(np.array(got), km.predict(model, x), 1e-5)


def test_registration_errors(spark, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        registerKerasUDF("keras_missing", str(tmp_path / "missing.keras"))
    with pytest.raises(ValueError, match="2 outputs"):
        registerKerasUDF("keras_two_out", km.two_output_model())
    with pytest.raises(ValueError, match="udfName"):
        registerKerasUDF("", km.dense_model((8,)))
