"""Every entry point on a Spark Connect session gives what it gives on a classic one: each
test runs one representative use on the classic ``spark`` and on ``connect_spark`` (a server in
its own process: no SparkContext on the client side of the comparison) and compares."""
import os
import sys

import numpy as np
import pytest
from pyspark import cloudpickle
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.evaluation import Evaluator
from pyspark.ml.tuning import CrossValidator
from pyspark.sql import functions as F

import keras_models as km
import tiny_image_models as tim
from connect_helpers import classic_mode, sorted_rows
from sparkdl import (DeepImageFeaturizer, DeepImagePredictor, ImageLoader, KerasImageFileEstimator,
                     KerasImageFileTransformer, KerasTransformer, TFImageTransformer, TFInputGraph,
                     TFTransformer, readImages, registerKerasImageUDF, registerKerasUDF)
from numerics import assert_close

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def both(spark, connect_spark, run):
    """``run(session)`` on the classic session, then on the Connect one."""
    with classic_mode():
        classic = run(spark)
    return classic, run(connect_spark)


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    d = tmp_path_factory.mktemp("connect-pngs")
    paths = tim.write_pngs(d)
    (d / "notes.txt").write_bytes(b"not an image")
    return d, sorted(paths.values()) + [str(d / "notes.txt")]


def load_rgb16(uri):
    from PIL import Image

    return np.asarray(Image.open(uri).convert("RGB").resize((16, 16)),
                      np.float32) / 255.0


def test_read_images_and_image_loader(spark, connect_spark, pngs):
    folder, paths = pngs
    cols = ["origin", "height", "width", "nChannels", "mode", "data", "error"]

    def run(session):
        read = sorted_rows(readImages(str(folder)).select("image.*", "error"), "origin", cols)
        uris = session.createDataFrame([(p,) for p in paths], "uri string")
        loaded = ImageLoader(inputCol="uri", outputCol="image", targetSize=[8, 8]) \
            .transform(uris).select("uri", "image.height", "image.data")
        return read, sorted_rows(loaded, "uri", ["uri", "height", "data"])

    classic, remote = both(spark, connect_spark, run)
    assert len(classic[0]) == 6 and sum(r[1] == -1 for r in classic[0]) == 1
    assert [r[1] for r in classic[1]].count(8) == 5
    assert remote == classic


def test_read_images_merges_small_file_partitions(spark, connect_spark, tmp_path):
    from PIL import Image

    for i in range(300):
        Image.new("RGB", (2, 2), (i % 256, 0, 0)).save(tmp_path / f"{i:03d}.png")

    def run(session):
        # Spark's scan makes 10 partitions of these (31 files each); readImages one a core.
        df = readImages(str(tmp_path))
        return df.select(F.spark_partition_id().alias("p")).distinct().count(), df.count()

    classic, remote = both(spark, connect_spark, run)
    assert classic == remote == (4, 300)


def test_featurizer_and_predictor(spark, connect_spark, pngs):
    folder, _ = pngs

    def run(session):
        images = readImages(str(folder), dropInvalid=True, numPartitions=1)  # one worker loads
        f = DeepImageFeaturizer(inputCol="image", outputCol="f", modelName="MobileNetV3Small",
                                weights=None)
        p = DeepImagePredictor(inputCol="image", outputCol="p", modelName="MobileNetV3Small",
                               weights=None)
        out = p.transform(f.transform(images)).select("image.origin", "f", "p")
        return [(o, f.toArray(), p) for o, f, p in sorted_rows(out, "origin", ["origin", "f", "p"])]

    classic, remote = both(spark, connect_spark, run)
    assert len(classic) == 5 and [r[0] for r in remote] == [r[0] for r in classic]
    assert_close([r[1] for r in remote], [r[1] for r in classic])
    assert_close([r[2] for r in remote], [r[2] for r in classic])


def test_keras_image_file_transformer_and_sql(spark, connect_spark, pngs, tmp_path):
    _, paths = pngs
    model = tim.save(tim.classifier(), tmp_path / "cnn.keras")

    def run(session):
        uris = session.createDataFrame([(p,) for p in paths], "uri string")
        stage = KerasImageFileTransformer(inputCol="uri", outputCol="y", modelFile=model,
                                          imageLoader=load_rgb16)
        staged = sorted_rows(stage.transform(uris), "uri", ["uri", "y"])
        registerKerasImageUDF("connect_cnn", model)
        readImages(str(pngs[0]), dropInvalid=True).createOrReplaceTempView("connect_images")
        sql = sorted_rows(session.sql("SELECT image.origin AS origin, connect_cnn(image) AS y "
                                      "FROM connect_images"), "origin", ["origin", "y"])
        return staged, sql

    classic, remote = both(spark, connect_spark, run)
    expected = tim.predict(tim.classifier(), [load_rgb16(p) for p in sorted(pngs[1][:-1])])
    assert_close([r[1] for r in classic[0] if r[1] is not None], expected)
    for c, r in zip(classic, remote):
        assert [x[0] for x in r] == [x[0] for x in c]
        assert [x[1] is None for x in r] == [x[1] is None for x in c]
        assert_close([x[1] for x in r if x[1] is not None], [x[1] for x in c if x[1] is not None])


def test_keras_transformer_and_sql(spark, connect_spark, tmp_path):
    path = km.save(km.dense_model((8,)), tmp_path, "dense")
    x = km.tensors((8,), count=7)

    def run(session):
        df = session.createDataFrame(list(enumerate(km.as_column(x, "flat"))),
                                     "id int, x array<float>")
        stage = KerasTransformer(inputCol="x", outputCol="y", modelFile=path, batchSize=3)
        staged = [r[1] for r in sorted_rows(stage.transform(df), "id", ["id", "y"])]
        registerKerasUDF("connect_mlp", path)
        df.createOrReplaceTempView("connect_rows")
        sql = [r[1] for r in sorted_rows(session.sql("SELECT id, connect_mlp(x) AS y FROM "
                                                     "connect_rows"), "id", ["id", "y"])]
        return staged, sql

    classic, remote = both(spark, connect_spark, run)
    assert_close(classic[0], km.predict(km.dense_model((8,)), x))
    assert_close(remote[0], classic[0])
    assert_close(remote[1], classic[1])


def test_runtime_travels_with_the_model_on_connect(spark, connect_spark, tmp_path):
    """``runtime=`` on Connect: the KerasTransformer and the SQL function run on OpenVINO in
    bf16 (the one setting whose outputs differ visibly from Keras's fp32, so a runtime dropped
    on the way to the server's workers would show) and give the classic session's outputs.
    On a CPU without bfloat16 instructions the same request is refused on both sides with the
    runtime's reason (a dropped setting would run TensorFlow's fp32 without a word)."""
    from sparkdl.engine.runtimes import cpuHasBf16

    path = km.save(km.dense_model((8,)), tmp_path, "dense_bf16")
    x = km.tensors((8,), count=7)

    def transformed(session):
        df = session.createDataFrame(list(enumerate(km.as_column(x, "flat"))),
                                     "id int, x array<float>")
        stage = KerasTransformer(inputCol="x", outputCol="y", modelFile=path, batchSize=4,
                                 runtime="openvino", precision="bf16")
        return df, [r[1] for r in sorted_rows(stage.transform(df), "id", ["id", "y"])]

    def run(session):
        df, staged = transformed(session)
        registerKerasUDF("connect_mlp_bf16", path, runtime="openvino", precision="bf16")
        df.createOrReplaceTempView("connect_rows_bf16")
        sql = [r[1] for r in sorted_rows(session.sql("SELECT id, connect_mlp_bf16(x) AS y FROM "
                                                     "connect_rows_bf16"), "id", ["id", "y"])]
        return staged, sql

    if not cpuHasBf16():
        def refused(session):
            with pytest.raises(Exception, match="needs a CPU with bfloat16 instructions"):
                transformed(session)
            return True

        assert both(spark, connect_spark, refused) == (True, True)
        return
    classic, remote = both(spark, connect_spark, run)
    keras = np.asarray(km.predict(km.dense_model((8,)), x), np.float64)
    for outputs in classic + remote:
        gap = np.abs(np.asarray(outputs, np.float64) - keras).max()
        assert 1e-4 < gap < 0.1, gap  # bf16 ran (not TensorFlow's fp32), and it is the model
    assert_close(remote[0], classic[0])
    assert_close(remote[1], classic[1])


def test_tf_transformers(spark, connect_spark):
    import tensorflow as tf

    from sparkdl.image.imageIO import imageArrayToStruct, imageSchema

    class Affine(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
        def vec(self, x):
            return {"y": x * 2.0 + 1.0}

        @tf.function(input_signature=[tf.TensorSpec([None, 4, 4, 3], tf.float32, name="img")])
        def img(self, img):
            return {"f": tf.reduce_mean(img * [1.0, -2.0, 3.0], axis=[1, 2])}

    module = Affine()
    rng = np.random.default_rng(0)
    images = [imageArrayToStruct(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), origin=str(i))
              for i in range(3)]

    def run(session):
        df = session.createDataFrame([(i, [float(i), 2.0, -1.0]) for i in range(3)],
                                     "id int, x array<float>")
        t = TFTransformer(tfInputGraph=TFInputGraph.fromFunction(module.vec), inputMapping={"x": "x"},
                          outputMapping={"y": "y"})
        vec = [r[1] for r in sorted_rows(t.transform(df), "id", ["id", "y"])]
        idf = session.createDataFrame([(s,) for s in images], f"image {imageSchema.simpleString()}")
        ti = TFImageTransformer(inputCol="image", outputCol="f", graph=TFInputGraph.fromFunction(module.img),
                                channelOrder="RGB")
        img = [r[1].toArray() if hasattr(r[1], "toArray") else r[1]
               for r in sorted_rows(ti.transform(idf).select("image.origin", "f"), "origin",
                                    ["origin", "f"])]
        return vec, img

    classic, remote = both(spark, connect_spark, run)
    assert_close(classic[0], [[2.0 * i + 1, 5.0, -1.0] for i in range(3)])
    assert_close(remote[0], classic[0])
    assert_close(remote[1], classic[1])


def test_save_and_load_alone_and_in_a_pipeline(spark, connect_spark, tmp_path):
    path = km.save(km.dense_model((8,)), tmp_path, "dense")
    x = km.tensors((8,), count=5)

    def run(session):
        where = tmp_path / ("connect" if os.environ.get("SPARK_CONNECT_MODE_ENABLED") else "classic")
        df = session.createDataFrame(list(enumerate(km.as_column(x, "flat"))),
                                     "id int, x array<float>")
        stage = KerasTransformer(inputCol="x", outputCol="y", modelFile=path)
        stage.write().overwrite().save(str(where / "stage"))
        stage.write().overwrite().save(str(where / "stage"))  # over an existing one
        alone = KerasTransformer.load(str(where / "stage"))
        pipeline = Pipeline(stages=[stage]).fit(df)
        # No overwrite(): pyspark's own PipelineModel writer removes a path through the JVM.
        pipeline.save(str(where / "pipeline"))
        loaded = PipelineModel.load(str(where / "pipeline"))
        return ([r[1] for r in sorted_rows(alone.transform(df), "id", ["id", "y"])],
                [r[1] for r in sorted_rows(loaded.transform(df), "id", ["id", "y"])])

    classic, remote = both(spark, connect_spark, run)
    expected = km.predict(km.dense_model((8,)), x)
    assert_close(classic[0], expected)
    assert_close(classic[1], expected)
    assert_close(remote[0], expected)
    assert_close(remote[1], expected)


def test_model_above_the_grpc_message_limit_ships(connect_spark, tmp_path):
    """150 MB of weights: more than Connect's default 128 MiB gRPC message (one Dense
    kernel), shipped as a session artifact in chunks, not inside a plan or a UDF."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((6144,))
    model = keras.Model(inputs, keras.layers.Dense(6400, use_bias=False)(inputs))
    path = str(tmp_path / "big.keras")
    model.save(path)
    assert os.path.getsize(path) > 128 << 20
    x = np.random.default_rng(0).standard_normal((3, 6144)).astype(np.float32)
    df = connect_spark.createDataFrame([(i, r.tolist()) for i, r in enumerate(x)],
                                       "id int, x array<float>")
    out = KerasTransformer(inputCol="x", outputCol="y", modelFile=path).transform(df)
    got = [r[1] for r in sorted_rows(out, "id", ["id", "y"])]
    assert_close(got, model.predict(x, verbose=0))


def test_same_model_is_uploaded_once_per_session(connect_spark, tmp_path, monkeypatch):
    """Session artifacts are named by content hash: the same model again (another stage,
    a SQL function, a copy of the file elsewhere) uploads nothing."""
    import shutil

    uploads = []
    real = type(connect_spark).addArtifacts

    def counting(self, *paths, **kwargs):
        uploads.append(paths)
        return real(self, *paths, **kwargs)

    monkeypatch.setattr(type(connect_spark), "addArtifacts", counting)
    path = km.save(km.dense_model((8,), units=4), tmp_path, "once")  # content new to the session
    copy = str(tmp_path / "copy.keras")
    shutil.copy(path, copy)
    df = connect_spark.createDataFrame([(0, [1.0] * 8)], "id int, x array<float>")
    first = KerasTransformer(inputCol="x", outputCol="y", modelFile=path).transform(df).collect()
    again = KerasTransformer(inputCol="x", outputCol="y", modelFile=copy).transform(df).collect()
    registerKerasUDF("connect_once", copy)
    df.createOrReplaceTempView("connect_once_rows")
    sql = connect_spark.sql("SELECT connect_once(x) AS y FROM connect_once_rows").collect()
    assert len(uploads) == 1, uploads
    assert first[0].y == again[0].y == sql[0].y


class ArgmaxAccuracy(Evaluator):
    """Accuracy of argmax(scores) against an integer label (a Python evaluator: runs alike
    on both kinds of session)."""

    def _evaluate(self, dataset):
        from pyspark.ml.functions import vector_to_array

        arr = vector_to_array(F.col("scores"))
        hits = dataset.select((F.array_position(arr, F.array_max(arr)) - 1 == F.col("label"))
                              .cast("double").alias("hit"))
        return hits.agg(F.avg("hit")).first()[0]


def test_estimator_fit_fit_multiple_and_cross_validator(spark, connect_spark, tmp_path):
    import keras

    folder = tmp_path / "pictures"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(16):  # red vs blue
        from PIL import Image

        colour = (220, 30, 30) if i % 2 == 0 else (30, 30, 220)
        pixels = np.clip(np.array(colour) + rng.integers(-20, 20, (16, 16, 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"p{i}.png")
        rows.append((str(folder / f"p{i}.png"), i % 2, (i // 2) % 2))
    keras.utils.set_random_seed(1)
    cnn = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3),
                            keras.layers.GlobalAveragePooling2D(),
                            keras.layers.Dense(2, activation="softmax")])
    modelFile = str(tmp_path / "cnn.keras")
    cnn.save(modelFile)

    def run(session):
        df = session.createDataFrame(rows, "uri string, label int, fold int")
        est = KerasImageFileEstimator(
            inputCol="uri", outputCol="scores", labelCol="label", modelFile=modelFile,
            imageLoader=load_rgb16, kerasOptimizer="sgd", seed=5,
            kerasLoss="sparse_categorical_crossentropy",
            kerasFitParams={"epochs": 2, "batch_size": 8, "verbose": 0})
        fitted = est.fit(df)
        scores = [r[1].toArray() for r in sorted_rows(fitted.transform(df), "uri",
                                                       ["uri", "scores"])]
        grid = [{est.kerasFitParams: {"epochs": 1, "batch_size": 8, "verbose": 0}},
                {est.kerasFitParams: {"epochs": 2, "batch_size": 4, "verbose": 0}}]
        multiple = dict(est.fitMultiple(df, grid))
        # Fixed folds: rand(seed) folds depend on how each session partitions local data.
        cv = CrossValidator(estimator=est, estimatorParamMaps=grid, evaluator=ArgmaxAccuracy(),
                            numFolds=2, foldCol="fold").fit(df)
        return (scores, [multiple[i].fitSummary["history"]["loss"] for i in (0, 1)],
                cv.avgMetrics)

    classic, remote = both(spark, connect_spark, run)
    assert_close(remote[0], classic[0])
    for r, c in zip(remote[1], classic[1]):  # each param map's loss per epoch
        assert_close(r, c)
    assert_close(remote[2], classic[2])


def test_stage_save_overwrites_on_connect(connect_spark, tmp_path):
    """pyspark's MLWriter removes an old path through the JVM session, which a Connect client
    has not; sparkdl's writer asks the server."""
    stage = KerasTransformer(inputCol="x", outputCol="y", batchSize=7)
    stage.write().overwrite().save(str(tmp_path / "stage"))
    stage.setBatchSize(9).write().overwrite().save(str(tmp_path / "stage"))
    assert KerasTransformer.load(str(tmp_path / "stage")).getBatchSize() == 9
