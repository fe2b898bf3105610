"""KerasTransformer: user Keras models on array columns, against the model run directly."""
import os

import numpy as np
import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.linalg import Vectors, VectorUDT
from pyspark.sql.types import IntegerType, StructField, StructType

import keras_models as km
from sparkdl import KerasTransformer
from numerics import assert_close


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("keras-models")


def frame(spark, column, sparkType, extra=()):
    """DataFrame (id, x) of the given rows plus ``extra`` rows and a null row, ids in order."""
    rows = list(column) + list(extra) + [None]
    return spark.createDataFrame(list(enumerate(rows)), f"id int, x {sparkType}")


def outputs(df, col="y"):
    """``col`` by id (sorted here: orderBy would run the UDF twice, once to sample)."""
    return [r[col] for r in sorted(df.collect(), key=lambda r: r.id)]


def no_job_runs(spark, fn):
    """Run ``fn`` (expected to raise) and assert it started no Spark job."""
    sc = spark.sparkContext
    group = f"no-job-{id(fn)}"
    sc.setJobGroup(group, "validation must fail before any job")
    try:
        fn()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    assert sc.statusTracker().getJobIdsForGroup(group) == []


CASES = [
    ((8,), "flat", "float"), ((8,), "flat", "int"), ((8,), "flat", "double"),
    ((4, 6), "nested", "float"), ((4, 6), "flat", "double"), ((4, 6), "nested", "bigint"),
    ((3, 4, 2), "nested", "double"), ((3, 4, 2), "flat", "float"), ((3, 4, 2), "nested", "int"),
]


@pytest.mark.parametrize("shape,layout,leaf", CASES,
                         ids=[f"{'x'.join(map(str, s))}-{l}-{t}" for s, l, t in CASES])
def test_outputs_equal_keras_predict(spark, model_dir, shape, layout, leaf):
    model = km.dense_model(shape)
    path = km.save(model, model_dir, f"dense_{'x'.join(map(str, shape))}")
    x = km.tensors(shape, count=7, integer=leaf in ("int", "bigint"))
    rank = 1 if layout == "flat" else len(shape)
    bad = km.malformed(shape, layout, integer=leaf in ("int", "bigint"))
    df = frame(spark, km.as_column(x, layout), km.spark_type(leaf, rank), bad)
    stage = KerasTransformer(inputCol="x", outputCol="y", modelFile=path, batchSize=3)
    out = stage.transform(df)
    assert out.schema["y"].simpleString() == "y:array<float>"
    got = outputs(out)
    assert got[len(x):] == [None] * (len(bad) + 1)
    assert_close(np.array(got[:len(x)]), km.predict(model, x), 1e-5)


def test_vector_column_is_a_flat_array(spark, model_dir):
    model = km.dense_model((4, 6))
    path = km.save(model, model_dir, "dense_vector")
    x = km.tensors((4, 6), count=4)
    df = spark.createDataFrame([(i, Vectors.dense(r.ravel())) for i, r in enumerate(x)]
                               + [(4, Vectors.dense([1.0, 2.0])), (5, None)],
                               StructType([StructField("id", IntegerType()), StructField("x", VectorUDT())]))
    got = outputs(KerasTransformer(inputCol="x", outputCol="y", modelFile=path).transform(df))
    assert got[4:] == [None, None]
    assert_close(np.array(got[:4]), km.predict(model, x), 1e-5)


def test_integer_model_input_gets_integers(spark, model_dir):
    model = km.embedding_model()
    path = km.save(model, model_dir, "embedding")
    x = np.random.default_rng(1).integers(0, 10, (6, 5))
    df = frame(spark, x.tolist(), "array<bigint>")
    got = outputs(KerasTransformer(inputCol="x", outputCol="y", modelFile=path).transform(df))
    assert got[-1] is None
    expected = np.asarray(model.predict(x.astype(np.int32), verbose=0))
    assert_close(np.array(got[:-1]), expected, 1e-5)


def test_multi_input_model_with_input_cols(spark, model_dir):
    model = km.two_input_model()
    path = km.save(model, model_dir, "two_inputs")
    a, b = km.tensors((8,), count=5, seed=1), km.tensors((4, 6), count=5, seed=2)
    rows = [(i, a[i].tolist(), b[i].tolist()) for i in range(5)]
    rows += [(5, None, b[0].tolist()), (6, a[0].tolist(), None), (7, a[0].tolist(), [[1.0]])]
    df = spark.createDataFrame(rows, "id int, a array<double>, b array<array<double>>")
    stage = KerasTransformer(inputCols=["a", "b"], outputCol="y", modelFile=path, batchSize=4)
    got = outputs(stage.transform(df))
    assert got[5:] == [None, None, None]
    expected = np.asarray(model.predict([a.astype(np.float32), b.astype(np.float32)], verbose=0))
    assert_close(np.array(got[:5]), expected, 1e-5)
    # Columns are matched to model.inputs by position: swapped, b (rank 2) cannot feed a (8,).
    swapped = KerasTransformer(inputCols=["b", "a"], outputCol="y", modelFile=path)
    with pytest.raises(TypeError, match=r"inputCols\[0\] 'b' feeds model input 'a' of shape \(8,\)"):
        no_job_runs(spark, lambda: swapped.transform(df))
    single = KerasTransformer(inputCol="a", outputCol="y", modelFile=path)
    with pytest.raises(ValueError, match="takes 2 input"):
        single.transform(df)


def test_errors_at_transform_time_name_the_column_or_param(spark, model_dir, tmp_path):
    path = km.save(km.dense_model((4, 6)), model_dir, "dense_errors")
    df = spark.createDataFrame([(0, "a", [[[1.0]]], [1.0])],
                               "id int, s string, deep array<array<array<double>>>, ok array<double>")

    def fails(stage, error, pattern):
        with pytest.raises(error, match=pattern):
            no_job_runs(spark, lambda: stage.transform(df))

    fails(KerasTransformer(inputCol="nope", outputCol="y", modelFile=path), ValueError,
          r"inputCol 'nope' is not a column")
    fails(KerasTransformer(inputCol="s", outputCol="y", modelFile=path), TypeError,
          r"inputCol 's' feeds model input 'x' of shape \(4, 6\) and must be a flat array of 24 "
          r"numbers or a nested array of rank 2.*got string")
    fails(KerasTransformer(inputCol="deep", outputCol="y", modelFile=path), TypeError,
          r"inputCol 'deep' .*\(4, 6\).*rank 3")
    fails(KerasTransformer(inputCol="ok", outputCol="y"), ValueError, "modelFile must be set")
    fails(KerasTransformer(inputCol="ok", outputCol="y", modelFile=str(tmp_path / "no.keras")),
          FileNotFoundError, r"modelFile '.*no.keras' does not exist")
    fails(KerasTransformer(inputCol="ok", inputCols=["ok"], outputCol="y", modelFile=path),
          ValueError, "either inputCol .* or inputCols")
    fails(KerasTransformer(outputCol="y", modelFile=path), ValueError, "inputCol .* must be set")
    two = km.save(km.two_output_model(), model_dir, "two_outputs")
    fails(KerasTransformer(inputCol="ok", outputCol="y", modelFile=two), ValueError,
          r"modelFile '.*two_outputs.keras': the Keras model has 2 outputs")
    with pytest.raises(ValueError, match="positive integer"):
        KerasTransformer(batchSize=0)


def test_lambda_model_is_refused_unless_safe_mode_is_off(spark, model_dir):
    model = km.lambda_model()
    path = km.save(model, model_dir, "lambda")
    x = km.tensors((8,), count=4)
    df = frame(spark, x.tolist(), "array<double>")
    with pytest.raises(ValueError, match="safeMode param to False"):
        no_job_runs(spark, lambda: KerasTransformer(inputCol="x", outputCol="y",
                                                    modelFile=path).transform(df))
    stage = KerasTransformer(inputCol="x", outputCol="y", modelFile=path, safeMode=False)
    got = outputs(stage.transform(df))
    assert_close(np.array(got[:-1]), km.predict(model, x), 1e-5)


def test_persistence_alone_and_in_pipeline_carries_the_model(spark, tmp_path):
    model = km.dense_model((3, 4, 2))
    path = km.save(model, tmp_path, "dense_persist")
    x = km.tensors((3, 4, 2), count=4)
    df = frame(spark, km.as_column(x, "nested"), "array<array<array<double>>>")
    stage = KerasTransformer(inputCol="x", outputCol="y", modelFile=path, batchSize=2)
    expected = outputs(stage.transform(df))
    stage.write().overwrite().save(str(tmp_path / "stage"))
    pipeline = Pipeline(stages=[KerasTransformer(inputCol="x", outputCol="y", modelFile=path)]).fit(df)
    pipeline.write().overwrite().save(str(tmp_path / "pipeline"))
    os.remove(path)  # the saved stages must carry the model's bytes

    loaded = KerasTransformer.load(str(tmp_path / "stage"))
    assert loaded.uid == stage.uid and loaded.getBatchSize() == 2 and loaded.getSafeMode()
    assert outputs(loaded.transform(df)) == expected
    reloaded = PipelineModel.load(str(tmp_path / "pipeline"))
    assert outputs(reloaded.transform(df)) == expected
    assert_close(np.array(expected[:-1]), km.predict(model, x), 1e-5)


@pytest.mark.local_cluster
def test_on_separate_executors(cluster_spark, tmp_path):
    model = km.two_input_model()
    path = km.save(model, tmp_path, "two_inputs_cluster")
    a, b = km.tensors((8,), count=40, seed=3), km.tensors((4, 6), count=40, seed=4)
    rows = [(i, a[i].ravel().tolist(), b[i].ravel().tolist()) for i in range(40)] + [(40, None, None)]
    df = cluster_spark.createDataFrame(rows, "id int, a array<float>, b array<float>").repartition(4)
    stage = KerasTransformer(inputCols=["a", "b"], outputCol="y", modelFile=path, batchSize=8)
    got = outputs(stage.transform(df))
    assert got[-1] is None
    expected = np.asarray(model.predict([a.astype(np.float32), b.astype(np.float32)], verbose=0))
    assert_close(np.array(got[:-1]), expected, 1e-5)
