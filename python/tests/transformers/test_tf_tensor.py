"""TFTransformer against the SavedModel called directly with TensorFlow."""
import shutil
import sys

import numpy as np
import pytest
from pyspark import cloudpickle
from pyspark.ml import PipelineModel
from pyspark.ml.feature import SQLTransformer
from pyspark.sql import functions as F

import tensorflow as tf  # noqa: E402  (a hard dependency: never skipped)

from sparkdl import TFImageTransformer, TFInputGraph, TFTransformer  # noqa: E402
from sparkdl.engine.shipping import handleFor, savedModel  # noqa: E402
from sparkdl.image.imageIO import imageArrayToStruct, imageSchema  # noqa: E402
from numerics import assert_close

cloudpickle.register_pickle_by_value(sys.modules[__name__])

W = (np.arange(6, dtype=np.float32).reshape(3, 2) - 2.5) / 3


class Multi(tf.Module):
    """Five inputs (float/int, rank 0/1/2), five outputs of five dtypes."""

    def __init__(self):
        super().__init__()
        self.w = tf.Variable(W)

    @tf.function(input_signature=[
        tf.TensorSpec([None, 3], tf.float32, name="x"),
        tf.TensorSpec([None, 2, 3], tf.float64, name="m"),
        tf.TensorSpec([None, 4], tf.int32, name="i"),
        tf.TensorSpec([None, 2, 2], tf.int64, name="j"),
        tf.TensorSpec([None], tf.float32, name="s"),
    ])
    def serve(self, x, m, i, j, s):
        return {
            "y": tf.matmul(x, self.w) + s[:, None],
            "mm": m * 2 + tf.reduce_sum(tf.cast(x, tf.float64), axis=1)[:, None, None],
            "isum": tf.reduce_sum(tf.cast(i, tf.int64), axis=1) + tf.reduce_sum(j, axis=[1, 2]),
            "iprod": i * 3,
            "flag": x[:, 0] > s,
        }


@pytest.fixture(scope="module")
def multi_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tft") / "multi")
    m = Multi()
    tf.saved_model.save(m, d, signatures=m.serve)
    return d


MAPPING_IN = {"xc": "x", "mc": "m", "ic": "i", "jc": "j", "sc": "s"}
MAPPING_OUT = {"y": "y_out", "mm": "mm_out", "isum": "isum_out", "iprod": "iprod_out",
               "flag": "flag_out"}
SCHEMA = ("id int, xc array<double>, mc array<array<float>>, ic array<int>, "
          "jc array<array<bigint>>, sc double")


def good_rows(n, seed=0):
    rng = np.random.default_rng(seed)
    return [(k, rng.normal(size=3).tolist(), rng.normal(size=(2, 3)).astype(np.float32).tolist(),
             rng.integers(-50, 50, 4).tolist(), rng.integers(-9, 9, (2, 2)).tolist(),
             float(rng.normal())) for k in range(n)]


def bad_rows(start):
    """Null rows, null elements, wrong lengths, ragged arrays -> null outputs."""
    _, x, m, i, j, s = good_rows(1, seed=9)[0]
    return [
        (start, None, m, i, j, s),
        (start + 1, [x[0], None, x[2]], m, i, j, s),
        (start + 2, x[:2], m, i, j, s),
        (start + 3, x, [m[0], m[1][:2]], i, j, s),  # ragged
        (start + 4, x, m, i, [j[0], None], s),
        (start + 5, x, m, i, j, None),
        (start + 6, x, [m[0]], i, j, s),  # 1 x 3 instead of 2 x 3
    ]


def direct(saved_dir, rows):
    """The signature called directly with TensorFlow on the good rows."""
    fn = tf.saved_model.load(saved_dir).signatures["serving_default"]
    out = fn(x=tf.constant([r[1] for r in rows], tf.float32),
             m=tf.constant([r[2] for r in rows], tf.float64),
             i=tf.constant([r[3] for r in rows], tf.int32),
             j=tf.constant([r[4] for r in rows], tf.int64),
             s=tf.constant([r[5] for r in rows], tf.float32))
    return {k: v.numpy() for k, v in out.items()}


def check_outputs(result_rows, saved_dir, good):
    by_id = {r.id: r for r in result_rows}
    want = direct(saved_dir, good)
    for k, row in enumerate(good):
        got = by_id[row[0]]
        assert_close(got.y_out, want["y"][k], 1e-5)
        assert_close(got.mm_out, want["mm"][k].ravel(), 1e-5)
        assert got.isum_out == [int(want["isum"][k])]
        assert got.iprod_out == want["iprod"][k].tolist()
        assert got.flag_out == [bool(want["flag"][k])]


def test_multi_input_multi_output_equals_tf(spark, multi_dir):
    good = good_rows(11)
    df = spark.createDataFrame(good + bad_rows(100), SCHEMA).repartition(3)
    t = TFTransformer(tfInputGraph=TFInputGraph.fromSavedModel(multi_dir),
                      inputMapping=MAPPING_IN, outputMapping=MAPPING_OUT, batchSize=4)
    out = t.transform(df)
    types = {f.name: f.dataType.simpleString() for f in out.schema.fields}
    assert [types[c] for c in MAPPING_OUT.values()] == [
        "array<float>", "array<double>", "array<bigint>", "array<int>", "array<boolean>"]
    rows = out.collect()
    assert out.columns == df.columns + list(MAPPING_OUT.values())
    nulls = [r.id for r in rows if r.y_out is None]
    assert sorted(nulls) == list(range(100, 107))
    assert all(getattr(r, c) is None for r in rows if r.id >= 100 for c in MAPPING_OUT.values())
    check_outputs(rows, multi_dir, good)


def test_fetch_subset_flat_rows_and_unknown_dims(spark, multi_dir):
    g = TFInputGraph.fromSavedModel(multi_dir, fetch_names=["mm"])
    assert g.outputNames == ["mm"]
    good = good_rows(5, seed=3)
    # m fed from flat rows of 6 values (row-major), the others as usual.
    flat = [(r[0], r[1], np.ravel(r[2]).tolist(), r[3], r[4], r[5]) for r in good]
    flat.append((9, good[0][1], [1.0] * 5, good[0][3], good[0][4], 0.0))  # 5 values: null
    df = spark.createDataFrame(flat, SCHEMA.replace("mc array<array<float>>", "mc array<float>"))
    rows = {r.id: r.mm_out for r in TFTransformer(
        tfInputGraph=g, inputMapping=MAPPING_IN, outputMapping={"mm": "mm_out"}).transform(df).collect()}
    want = direct(multi_dir, good)["mm"]
    for k, r in enumerate(good):
        assert_close(rows[r[0]], want[k].ravel(), 1e-5)
    assert rows[9] is None

    # Unknown row lengths: rows of different lengths are computed in separate calls.
    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="v")])
    def cumsum(v):
        return {"c": tf.cumsum(v, axis=1)}

    vals = [[1.0, 2.0], [3.0], [4.0, 5.0, 6.0], [], [7.0, 8.0], None]
    df = spark.createDataFrame([(v,) for v in vals], "v array<float>")
    got = TFTransformer(tfInputGraph=TFInputGraph.fromFunction(cumsum), inputMapping={"v": "v"},
                        outputMapping={"c": "c"}, batchSize=8).transform(df).collect()
    assert [r.c for r in got] == [None if v is None else np.cumsum(v).tolist() for v in vals]


def test_scalar_int_columns_and_cast(spark):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="a"),
                                  tf.TensorSpec([None], tf.int64, name="b")])
    def f(a, b):
        return {"p": a * tf.cast(b, tf.float32)}

    df = spark.createDataFrame([(1, 2), (3, None), (5, 6)], "a int, b smallint")
    t = TFTransformer(tfInputGraph=TFInputGraph.fromFunction(f), inputMapping={"a": "a", "b": "b"},
                      outputMapping={"p": "p"})
    assert [r.p for r in t.transform(df).collect()] == [[2.0], None, [30.0]]


def test_errors_name_the_problem_before_any_job(spark, multi_dir):
    g = TFInputGraph.fromSavedModel(multi_dir)
    df = spark.createDataFrame(good_rows(2), SCHEMA).withColumn("name", F.lit("a"))
    sc = spark.sparkContext
    sc.setJobGroup("tf-validation", "must stay empty")

    def fails(exc, match, inputMapping=MAPPING_IN, outputMapping=MAPPING_OUT, graph=g, data=df):
        t = TFTransformer(tfInputGraph=graph, inputMapping=inputMapping, outputMapping=outputMapping)
        with pytest.raises(exc, match=match):
            t.transform(data)

    fails(ValueError, r"inputMapping column 'nope' is not a column.*columns: \['id'",
          inputMapping={**MAPPING_IN, "nope": "x"})
    fails(ValueError, r"inputMapping 'xc' -> input 'xx' is not in signature 'serving_default'.*"
                      r"available: \['i', 'j', 'm', 's', 'x'\]", inputMapping={**MAPPING_IN, "xc": "xx"})
    fails(TypeError, r"inputMapping column 'name' must be numeric or an array.*got string",
          inputMapping={"name": "x", "mc": "m", "ic": "i", "jc": "j", "sc": "s"})
    fails(ValueError, r"not fed: \['s'\]", inputMapping={k: v for k, v in MAPPING_IN.items() if k != "sc"})
    fails(ValueError, r"column 'sc' \(double, rank 0\) cannot feed signature input 'x' of shape "
                      r"\[None, 3\]", inputMapping={**{k: v for k, v in MAPPING_IN.items() if k != "xc"},
                                                   "sc": "x", "id": "s"})
    fails(ValueError, r"column 'mc' \(array<array<float>>, rank 2\) cannot feed signature input 'x'",
          inputMapping={"xc": "m", "mc": "x", "ic": "i", "jc": "j", "sc": "s"})
    fails(TypeError, r"column 'xc' is array<double> but signature input 'i' is int32",
          inputMapping={"ic": "x", "mc": "m", "xc": "i", "jc": "j", "sc": "s"})
    fails(ValueError, r"outputMapping output 'yy' is not in signature.*available: \['flag', "
                      r"'iprod', 'isum', 'mm', 'y'\]", outputMapping={"yy": "a"})
    fails(ValueError, r"outputs 'y' and 'mm' to the same column 'a'", outputMapping={"y": "a", "mm": "a"})
    fails(ValueError, r"signature input 'x' is fed by two columns",
          inputMapping={**MAPPING_IN, "id": "x"})

    @tf.function(input_signature=[tf.TensorSpec([4, 3], tf.float32, name="x")])
    def fixed(x):
        return {"y": x}

    fails(ValueError, r"first \(batch\) dimension of None", graph=TFInputGraph.fromFunction(fixed),
          inputMapping={"xc": "x"}, outputMapping={"y": "y"})
    with pytest.raises(ValueError, match="tfInputGraph must be set"):
        TFTransformer(inputMapping=MAPPING_IN, outputMapping=MAPPING_OUT).transform(df)
    with pytest.raises(TypeError, match="expected a TFInputGraph"):
        TFTransformer(tfInputGraph=multi_dir)
    with pytest.raises(TypeError, match="inputMapping must map names to names"):
        TFTransformer(inputMapping={"a": 1})
    assert sc.statusTracker().getJobIdsForGroup("tf-validation") == []
    sc.setJobGroup(None, None)


def test_handle_is_built_once_per_graph(spark, multi_dir):
    g = TFInputGraph.fromSavedModel(multi_dir)
    def handle(graph):
        return handleFor(savedModel(graph), spark)

    assert handle(g) is handle(TFInputGraph.fromBytes(bytes(g)))
    assert handle(g) is not handle(
        TFInputGraph.fromSavedModelWithSignature(multi_dir, "serve", "serving_default"))


def test_graph_loads_once_per_worker(spark, multi_dir):
    import pyarrow as pa
    from pyspark.sql.functions import arrow_udf

    from sparkdl.engine import model_cache

    g = TFInputGraph.fromSavedModel(multi_dir)
    df = spark.createDataFrame(good_rows(12), SCHEMA).repartition(4)
    t = TFTransformer(tfInputGraph=g, inputMapping=MAPPING_IN, outputMapping=MAPPING_OUT, batchSize=2)
    t.transform(df).collect()
    t.transform(df).collect()
    key = handleFor(savedModel(g), spark).key

    @arrow_udf("struct<pid:int,loads:int>")
    def probe(ids: pa.Array) -> pa.Array:
        import os as _os

        n = len(ids)
        return pa.StructArray.from_arrays(
            [pa.array([_os.getpid()] * n, pa.int32()),
             pa.array([model_cache.loadCount(key)] * n, pa.int32())], names=["pid", "loads"])

    seen = [tuple(r.p) for r in spark.range(8).repartition(8).select(probe("id").alias("p")).collect()]
    loads = dict(seen)
    assert all(count <= 1 for count in loads.values()), seen  # 8 tasks, 12 chunks, <= 1 load each
    assert any(loads.values()), seen


def test_persistence_alone_and_in_pipeline(spark, multi_dir, tmp_path):
    copy = str(tmp_path / "sm")
    shutil.copytree(multi_dir, copy)
    t = TFTransformer(tfInputGraph=TFInputGraph.fromSavedModel(copy), inputMapping=MAPPING_IN,
                      outputMapping=MAPPING_OUT, batchSize=5)
    pipeline = PipelineModel(stages=[t, SQLTransformer(statement="SELECT *, id + 1 AS next FROM __THIS__")])
    t.save(str(tmp_path / "alone"))
    pipeline.save(str(tmp_path / "pipe"))
    shutil.rmtree(copy)  # the saved stages carry the SavedModel's bytes
    good = good_rows(6, seed=5)
    df = spark.createDataFrame(good, SCHEMA)
    loaded = TFTransformer.load(str(tmp_path / "alone"))
    assert loaded.getTFInputGraph() == t.getTFInputGraph()
    assert (loaded.getInputMapping(), loaded.getOutputMapping(), loaded.getBatchSize()) == (
        MAPPING_IN, MAPPING_OUT, 5)
    check_outputs(loaded.transform(df).collect(), multi_dir, good)
    stages = PipelineModel.load(str(tmp_path / "pipe")).stages
    assert isinstance(stages[0], TFTransformer)
    rows = PipelineModel(stages=stages).transform(df).collect()
    check_outputs(rows, multi_dir, good)
    assert [r.next for r in rows] == [r.id + 1 for r in rows]


@tf.function(input_signature=[tf.TensorSpec([None, 6, 8, 3], tf.float32, name="img")])
def _channel_means(img):
    return {"means": tf.reduce_mean(img, axis=[1, 2]) * tf.constant([1.0, 10.0, 100.0])}


@pytest.mark.local_cluster
def test_saved_pipeline_on_separate_executors(cluster_spark, multi_dir, tmp_path):
    """Both stages, saved and loaded with their SavedModel directory deleted, run on two
    executors in their own JVMs and Python workers."""
    copy = str(tmp_path / "sm")
    shutil.copytree(multi_dir, copy)
    model = PipelineModel(stages=[
        TFTransformer(tfInputGraph=TFInputGraph.fromSavedModel(copy), inputMapping=MAPPING_IN,
                      outputMapping=MAPPING_OUT, batchSize=3),
        TFImageTransformer(channelOrder="RGB", inputCol="image", outputCol="means",
                           graph=_channel_means, batchSize=2),
    ])
    model.save(str(tmp_path / "pipe"))
    shutil.rmtree(copy)
    good = good_rows(8, seed=7)
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (6, 8, 3), dtype=np.uint8) for _ in good]  # BGR, struct order
    df = cluster_spark.createDataFrame(
        [row + (imageArrayToStruct(img),) for row, img in zip(good, images)],
        f"{SCHEMA}, image {imageSchema.simpleString()}").repartition(2)
    rows = PipelineModel.load(str(tmp_path / "pipe")).transform(df).collect()
    check_outputs(rows, multi_dir, good)
    by_id = {r.id: r.means.toArray() for r in rows}
    for row, img in zip(good, images):
        rgb = img[:, :, ::-1].astype(np.float32)
        np.testing.assert_allclose(by_id[row[0]], rgb.mean(axis=(0, 1)) * [1, 10, 100], rtol=1e-5)
