"""KerasImageFileEstimator: the checks of labels and loader arrays against the model before
any training, and a storeDir on a real S3 server (moto on loopback) training the same model
as a local one."""
import os
import sys

import numpy as np
import pytest
from PIL import Image
from pyspark import cloudpickle
from pyspark.ml.linalg import Vectors

from s3_server import s3_server
from sparkdl import KerasImageFileEstimator
from numerics import assert_close

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def load_rgb(uri):
    return np.asarray(Image.open(uri).convert("RGB"), np.float32) / 255.0


def load_gray(uri):  # 8 x 8 x 1: not what the model takes
    return np.asarray(Image.open(uri).convert("L"), np.float32)[..., None] / 255.0


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """24 tiny pictures: bright (label 1) or dark (label 0)."""
    d = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(24):
        label = i % 2
        pixels = rng.integers(0, 100, (8, 8, 3)) + 150 * label
        path = str(d / f"img_{i:02d}.png")
        Image.fromarray(pixels.astype(np.uint8)).save(path)
        rows.append((path, label))
    return rows


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(2, activation="softmax")])
    path = str(tmp_path_factory.mktemp("tiny_model") / "tiny.keras")
    model.save(path)
    return path


def estimator(model, loader=load_rgb, loss="sparse_categorical_crossentropy", epochs=2):
    return KerasImageFileEstimator(
        inputCol="uri", outputCol="prediction", labelCol="label", modelFile=model,
        imageLoader=loader, kerasOptimizer={"class_name": "adam", "config": {"learning_rate": 0.01}},
        kerasLoss=loss, kerasFitParams={"epochs": epochs, "batch_size": 4, "verbose": 0})


def test_label_out_of_the_models_range_fails_fit_naming_the_column(spark, images, tiny_model):
    rows = images[:8] + [(images[8][0], 5)]
    df = spark.createDataFrame(rows, "uri string, label int")
    with pytest.raises(ValueError, match=r"^labelCol 'label' has 5; the model's output has 2 "
                                         r"units \(labels 0\.\.1 for sparse_categorical_"
                                         r"crossentropy\)$"):
        estimator(tiny_model).fit(df)


def test_one_hot_width_other_than_the_models_output_fails_fit(spark, images, tiny_model):
    df = spark.createDataFrame([(u, Vectors.dense(np.eye(3)[y])) for u, y in images[:8]],
                               ["uri", "label"])
    with pytest.raises(ValueError, match=r"^labelCol 'label' has one-hot vectors of size 3; "
                                         r"the model's output has 2 units$"):
        estimator(tiny_model, loss="categorical_crossentropy").fit(df)


def test_loader_shape_other_than_the_models_input_fails_fit(spark, images, tiny_model):
    df = spark.createDataFrame(images[:8], "uri string, label int")
    with pytest.raises(ValueError, match=r"^imageLoader returned an array of shape 8 x 8 x 1 "
                                         r"for inputCol 'uri' \('.*img_00\.png'\); the model's "
                                         r"input is 8 x 8 x 3$"):
        estimator(tiny_model, loader=load_gray).fit(df)


def test_loader_shape_check_loads_a_bounded_sample(spark, images, tmp_path):
    from sparkdl.estimators.checks import SAMPLE_ROWS, checkLoaderShape

    calls = tmp_path / "calls"
    calls.mkdir()

    def counting(uri):  # one file per call, written by the executor that loads
        open(os.path.join(str(calls), os.path.basename(uri)), "w").close()
        return load_rgb(uri)

    df = spark.sparkContext.parallelize(images, 2).toDF("uri string, label int")
    checkLoaderShape(df, "uri", "label", counting, (8, 8, 3))
    assert 0 < len(os.listdir(calls)) <= SAMPLE_ROWS < len(images)


def _weights(model):
    from sparkdl.engine.shipping import modelFromBytes

    return modelFromBytes(model.getOrDefault("modelBytes")).get_weights()


def test_s3_store_dir_trains_the_model_a_local_store_dir_trains(spark, images, tiny_model, tmp_path):
    # Two fixed partitions, no shuffle: the same rows in the same order on every store.
    rows = spark.sparkContext.parallelize(images + [(images[0][0], None)], 2)
    df = spark.createDataFrame(rows, "uri string, label int")
    local = estimator(tiny_model).setSeed(3)
    local._set(storeDir=str(tmp_path / "store"))
    want = local.fit(df)
    with s3_server(spark, bucket="store-bucket") as client:
        for scheme in ("s3", "s3a"):
            est = estimator(tiny_model).setSeed(3)
            est._set(storeDir=f"{scheme}://store-bucket/{scheme}/store")
            got = est.fit(df)
            keys = sorted(o["Key"] for o in client.list_objects_v2(
                Bucket="store-bucket", Prefix=f"{scheme}/store/")["Contents"])
            assert keys == [f"{scheme}/store/part-00000.parquet",
                            f"{scheme}/store/part-00001.parquet"]
            for k in ("rows", "usable", "nullLabels"):
                assert got.fitSummary[k] == want.fitSummary[k]
            np.testing.assert_allclose(got.fitSummary["history"]["loss"],
                                       want.fitSummary["history"]["loss"], rtol=1e-5)
            for a, b in zip(_weights(got), _weights(want)):
                assert_close(a, b, 1e-5)
    assert want.fitSummary["usable"] == 24 and want.fitSummary["nullLabels"] == 1
    import keras

    start = keras.saving.load_model(tiny_model).get_weights()
    assert max(np.abs(a - b).max() for a, b in zip(_weights(want), start)) > 1e-3  # it trained
