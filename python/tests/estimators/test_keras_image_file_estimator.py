"""KerasImageFileEstimator: real learning on generated pictures, through the fitted model's
transform (the serving path), with every label kind, CrossValidator, persistence and bad rows."""
import os
import sys

import numpy as np
import pytest
from PIL import Image, ImageDraw
from pyspark import cloudpickle
from pyspark.ml.evaluation import Evaluator
from pyspark.ml.linalg import SparseVector, Vectors
from pyspark.ml.tuning import CrossValidator, ParamGridBuilder
from pyspark.sql import functions as F

from sparkdl import KerasImageFileEstimator, KerasImageFileModel

cloudpickle.register_pickle_by_value(sys.modules[__name__])

SIZE = 64  # the 64x64 shapes


def load_rgb(uri):
    """The loader used to train and to serve: RGB in [0, 1]."""
    if uri.endswith("broken.png"):
        raise ValueError("unreadable on purpose")
    return np.asarray(Image.open(uri).convert("RGB"), np.float32) / 255.0


def draw(path, shape, colour, rng):
    img = Image.new("RGB", (SIZE, SIZE), tuple(int(c) for c in rng.integers(0, 60, 3)))
    d = ImageDraw.Draw(img)
    r = int(rng.integers(SIZE // 5, SIZE // 3))
    cx, cy = (int(v) for v in rng.integers(r + 1, SIZE - r - 1, 2))
    box = [cx - r, cy - r, cx + r, cy + r]
    (d.ellipse if shape == "circle" else d.rectangle)(box, fill=colour)
    img.save(path)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    """Circles vs squares (label by shape, random colours) and red vs blue (label by colour)."""
    d = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(0)
    shapes, colours = [], []
    for i in range(240):
        label = i % 2
        path = str(d / f"shape_{i}.png")
        draw(path, "circle" if label == 0 else "square", tuple(rng.integers(120, 256, 3)), rng)
        shapes.append((path, label))
        path = str(d / f"colour_{i}.png")
        draw(path, ["circle", "square"][int(rng.integers(0, 2))],
             (230, 30, 30) if label == 0 else (30, 30, 230), rng)
        colours.append((path, label))
    (d / "broken.png").write_bytes(b"x")
    return {"shapes": shapes, "colours": colours, "broken": str(d / "broken.png")}


@pytest.fixture(scope="module")
def cnn_file(tmp_path_factory):
    import keras

    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((SIZE, SIZE, 3)),
        keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.GlobalMaxPooling2D(),
        keras.layers.Dense(2, activation="softmax"),
    ])
    path = str(tmp_path_factory.mktemp("model") / "cnn.keras")
    model.save(path)
    return path


def frame(spark, rows, label="index"):
    if label == "index":
        return spark.createDataFrame(rows, "uri string, label int")
    if label == "dense":
        return spark.createDataFrame([(u, Vectors.dense(np.eye(2)[y])) for u, y in rows], ["uri", "label"])
    return spark.createDataFrame([(u, SparseVector(2, {y: 1.0})) for u, y in rows], ["uri", "label"])


def accuracy(predictions, labelCol="label"):
    rows = predictions.select("prediction", labelCol).collect()
    hits = [int(np.argmax(r.prediction.toArray())) == (int(np.argmax(r[labelCol].toArray()))
            if hasattr(r[labelCol], "toArray") else r[labelCol]) for r in rows]
    return sum(hits) / len(hits)


def estimator(cnn_file, loss="sparse_categorical_crossentropy", epochs=12):
    return KerasImageFileEstimator(
        inputCol="uri", outputCol="prediction", labelCol="label", modelFile=cnn_file,
        imageLoader=load_rgb, kerasOptimizer={"class_name": "adam", "config": {"learning_rate": 0.01}},
        kerasLoss=loss, kerasFitParams={"epochs": epochs, "batch_size": 16, "verbose": 0})


def test_learns_shapes_and_serves_through_transform(spark, pictures, cnn_file, tmp_path):
    train, test = pictures["shapes"][:160], pictures["shapes"][160:]
    model = estimator(cnn_file).fit(frame(spark, train))
    assert isinstance(model, KerasImageFileModel)
    assert model.fitSummary["usable"] == 160 and model.fitSummary["history"]["loss"]
    assert accuracy(model.transform(frame(spark, test))) >= 0.9
    model.save(str(tmp_path / "model"))
    loaded = KerasImageFileModel.load(str(tmp_path / "model"))
    a = [r.prediction for r in model.transform(frame(spark, test)).collect()]
    b = [r.prediction for r in loaded.transform(frame(spark, test)).collect()]
    np.testing.assert_allclose([v.toArray() for v in a], [v.toArray() for v in b], atol=1e-6)


@pytest.mark.parametrize("label,loss", [("dense", "categorical_crossentropy"),
                                        ("sparse", "categorical_crossentropy")])
def test_colour_labels_with_one_hot_vectors_train_and_serve_alike(spark, pictures, cnn_file, label, loss):
    # Red vs blue: a model trained on BGR and served on RGB (the original's bug) would fail.
    train, test = pictures["colours"][:120], pictures["colours"][160:]
    model = estimator(cnn_file, loss=loss, epochs=8).fit(frame(spark, train, label))
    assert accuracy(model.transform(frame(spark, test, label))) >= 0.95


class ArgmaxAccuracy(Evaluator):
    """Accuracy of argmax(prediction vector) against an integer label."""

    def _evaluate(self, dataset):
        from pyspark.ml.functions import vector_to_array

        arr = vector_to_array(F.col("prediction"))
        hits = dataset.select((F.array_position(arr, F.array_max(arr)) - 1 == F.col("label"))
                              .cast("double").alias("hit"))
        return hits.agg(F.avg("hit")).first()[0]


def test_cross_validator_picks_the_better_settings(spark, pictures, cnn_file):
    est = estimator(cnn_file)
    # Each map overrides both the optimizer and the fit params. A learning rate too small to
    # move the weights keeps the first at its initial accuracy (0.4 on these pictures), while
    # the second learns red vs blue (>= 0.9): the gap does not depend on training noise.
    grid = [{est.kerasOptimizer: {"class_name": "adam", "config": {"learning_rate": 1e-9}},
             est.kerasFitParams: {"epochs": 1, "batch_size": 64, "verbose": 0}},
            {est.kerasOptimizer: {"class_name": "adam", "config": {"learning_rate": 0.01}},
             est.kerasFitParams: {"epochs": 8, "batch_size": 16, "verbose": 0}}]
    cv = CrossValidator(estimator=est, estimatorParamMaps=grid, evaluator=ArgmaxAccuracy(),
                        numFolds=2, parallelism=2, seed=3)
    cvModel = cv.fit(frame(spark, pictures["colours"][:160]))
    assert cvModel.avgMetrics[1] > cvModel.avgMetrics[0] + 0.25, cvModel.avgMetrics
    assert cvModel.bestModel.fitSummary is not None
    assert accuracy(cvModel.bestModel.transform(frame(spark, pictures["colours"][160:]))) >= 0.9


def test_bad_rows_are_skipped_and_counted(spark, pictures, cnn_file):
    rows = pictures["shapes"][:40] + [(pictures["broken"], 0), (None, 1)]
    df = spark.createDataFrame(rows + [(pictures["shapes"][41][0], None)], "uri string, label int")
    model = estimator(cnn_file, epochs=1).fit(df)
    summary = model.fitSummary
    assert (summary["usable"], summary["loaderErrors"], summary["nullUris"], summary["nullLabels"]) == (40, 1, 1, 1)
    empty = spark.createDataFrame([(pictures["broken"], 0)], "uri string, label int")
    with pytest.raises(ValueError, match="no usable training rows"):
        estimator(cnn_file, epochs=1).fit(empty)


def test_invalid_settings_fail_early(spark, pictures, cnn_file):
    with pytest.raises(ValueError, match="kerasOptimizer 'adamm'"):
        KerasImageFileEstimator(kerasOptimizer="adamm")
    with pytest.raises(ValueError, match="kerasLoss 'no_such_loss'"):
        KerasImageFileEstimator(kerasLoss="no_such_loss")
    with pytest.raises(ValueError, match="kerasFitParams has arguments"):
        KerasImageFileEstimator(kerasFitParams={"epochs": 1, "x": 3})
    with pytest.raises(ValueError, match="needs one-hot vector labels"):
        estimator(cnn_file, loss="categorical_crossentropy").fit(frame(spark, pictures["shapes"][:8]))
    with pytest.raises(TypeError, match="labelCol 'label' must be a one-hot ML vector"):
        estimator(cnn_file).fit(spark.createDataFrame([("a", "x")], "uri string, label string"))


def test_estimator_persistence(spark, pictures, cnn_file, tmp_path):
    est = estimator(cnn_file)
    est.save(str(tmp_path / "est"))
    loaded = KerasImageFileEstimator.load(str(tmp_path / "est"))
    assert loaded.getKerasFitParams() == est.getKerasFitParams()
    assert loaded.getKerasOptimizer() == est.getKerasOptimizer()
    assert loaded.getKerasLoss() == est.getKerasLoss()
    uri = pictures["shapes"][0][0]
    np.testing.assert_array_equal(loaded.getImageLoader()(uri), load_rgb(uri))
    # The saved estimator carries its model: it trains with the original file gone.
    os.rename(cnn_file, cnn_file + ".moved")
    try:
        model = loaded.setKerasFitParams({"epochs": 1, "verbose": 0}).fit(frame(spark, pictures["shapes"][:16]))
        assert model.fitSummary["usable"] == 16
    finally:
        os.rename(cnn_file + ".moved", cnn_file)


@pytest.mark.local_cluster
def test_fit_on_separate_executors(cluster_spark, pictures, cnn_file):
    train, test = pictures["shapes"][:160], pictures["shapes"][160:]
    model = estimator(cnn_file).fit(frame(cluster_spark, train).repartition(2))
    assert accuracy(model.transform(frame(cluster_spark, test))) >= 0.9


def test_seed_makes_training_reproducible(spark, pictures, cnn_file):
    df = frame(spark, pictures["shapes"][:48])
    test = frame(spark, pictures["shapes"][200:208])

    def predictions(seed):
        model = estimator(cnn_file, epochs=2).setSeed(seed).fit(df)
        return np.array([r.prediction.toArray() for r in model.transform(test).collect()])

    first = predictions(7)
    np.testing.assert_allclose(predictions(7), first, atol=1e-6)
    assert np.abs(predictions(8) - first).max() > 1e-4
