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
from numerics import assert_close

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
    loaded = KerasImageFileModel.load(str(tmp_path / "model"), allowUserCode=True)
    a = [r.prediction for r in model.transform(frame(spark, test)).collect()]
    b = [r.prediction for r in loaded.transform(frame(spark, test)).collect()]
    assert_close([v.toArray() for v in a], [v.toArray() for v in b], 1e-6)


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
    with pytest.raises(ValueError, match=r"outputMode must be one of \['vector', 'image'\], got 'vec'"):
        KerasImageFileEstimator(outputMode="vec")
    with pytest.raises(ValueError, match="needs one-hot vector labels"):
        estimator(cnn_file, loss="categorical_crossentropy").fit(frame(spark, pictures["shapes"][:8]))
    with pytest.raises(TypeError, match="labelCol 'label' must be a one-hot ML vector"):
        estimator(cnn_file).fit(spark.createDataFrame([("a", "x")], "uri string, label string"))


def test_estimator_persistence(spark, pictures, cnn_file, tmp_path):
    est = estimator(cnn_file)
    est.save(str(tmp_path / "est"))
    loaded = KerasImageFileEstimator.load(str(tmp_path / "est"), allowUserCode=True)
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
    # Two fixed partitions (no shuffle): the stored rows, hence the training order, are the
    # same every run. repartition(2) made them depend on which executor's shuffle blocks
    # arrived first, and one order in a few trained a model with 0.8 accuracy.
    rows = cluster_spark.sparkContext.parallelize(train, 2)
    model = estimator(cnn_file).fit(cluster_spark.createDataFrame(rows, "uri string, label int"))
    loss = model.fitSummary["history"]["loss"]
    # Every run the same: 0.745, 0.528, 0.158, ..., 0.0226 (the default seed no longer
    # changes with the driver process either).
    assert loss[-1] < 0.1, loss
    assert accuracy(model.transform(frame(cluster_spark, test))) >= 0.9  # measured: 1.0


def test_seed_makes_training_reproducible(spark, pictures, cnn_file):
    df = frame(spark, pictures["shapes"][:48])
    test = frame(spark, pictures["shapes"][200:208])

    def predictions(seed):
        model = estimator(cnn_file, epochs=2).setSeed(seed).fit(df)
        return np.array([r.prediction.toArray() for r in model.transform(test).collect()])

    first = predictions(7)
    assert_close(predictions(7), first, 1e-6)
    assert np.abs(predictions(8) - first).max() > 1e-4


def test_default_seed_is_the_same_in_every_process():
    # PySpark's HasSeed default is hash(class name): another number in every process.
    import subprocess

    code = "from sparkdl import KerasImageFileEstimator as E; print(E().getSeed())"
    seeds = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=dict(os.environ, PYTHONHASHSEED=str(h)), check=True).stdout
             for h in (1, 2)}
    assert len(seeds) == 1 and KerasImageFileEstimator().getSeed() == int(seeds.pop())


# -- numWorkers > 1: one model trained data-parallel with HorovodRunner -----------------------
def test_shards_are_disjoint_balanced_and_cover_the_usable_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sparkdl.estimators.store import readRows, shard, usableRows

    # Three files (named so that creation order is not name order), several row groups each,
    # with every kind of unusable row; x holds the row's id.
    rng = np.random.default_rng(5)
    expected = {False: [], True: []}  # usable ids in file-name order, train / validation
    rowId = 0
    for name, count in (("part-2.parquet", 23), ("part-0.parquet", 17), ("part-1.parquet", 9)):
        rows = []
        for _ in range(count):
            kind = rng.integers(0, 6)
            fold = int(rng.integers(0, 1000))
            row = {"x": [float(rowId)], "error": "boom" if kind == 0 else None,
                   "loaded": kind != 1, "label": None if kind == 2 else int(rowId % 2),
                   "fold": fold}
            if kind >= 3:
                expected[fold < 300].append((name, rowId))
            rows.append(row)
            rowId += 1
        table = pa.Table.from_pylist(rows, pa.schema([
            ("x", pa.list_(pa.float32())), ("error", pa.string()), ("loaded", pa.bool_()),
            ("label", pa.int32()), ("fold", pa.int32())]))
        pq.write_table(table, str(tmp_path / name), row_group_size=4)
    for validation in (False, True):
        want = [i for _, i in sorted(expected[validation], key=lambda e: e[0])]
        plan = usableRows(str(tmp_path), validation, 300)
        for size in (1, 2, 3, 4):
            shards = []
            for rank in range(size):
                got = [int(v) for x, _ in readRows(shard(plan, rank, size), (1,), "index")
                       for v in x.ravel()]
                shards.append(got)
            # In rank order the shards are exactly the usable rows in stored order: disjoint
            # and covering; their sizes differ by at most one row.
            assert sum(shards, []) == want, (validation, size)
            assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert len(expected[False]) >= 10 and expected[True]  # the data exercised both folds


def test_two_workers_learn_shapes_and_serve_through_transform(spark, pictures, cnn_file):
    train, test = pictures["shapes"][:160], pictures["shapes"][160:]
    # batch_size is per worker: 2 x 8 rows per step, as many steps as the one-task test.
    est = estimator(cnn_file).setNumWorkers(2).setKerasFitParams(
        {"epochs": 12, "batch_size": 8, "verbose": 0})
    model = est.fit(frame(spark, train))
    assert isinstance(model, KerasImageFileModel)
    summary = model.fitSummary
    assert summary["numWorkers"] == 2 and summary["workerRows"] == [80, 80]
    assert summary["stepsPerEpoch"] == 10
    assert len(summary["history"]["loss"]) == 12
    assert summary["history"]["loss"][-1] < summary["history"]["loss"][0]
    assert accuracy(model.transform(frame(spark, test))) >= 0.9


def test_two_workers_equal_one_process_with_the_global_batch(spark, pictures, cnn_file, tmp_path):
    """Two workers with per-worker batch B end with the weights (and report the losses) of
    plain Keras in one process, fed batches of 2B made of each worker's next B rows: the
    gradients really are averaged, the shards are the two halves of the usable training rows
    in stored order, validation rows stay out of training and rank 0 validates on all."""
    import glob

    import keras
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sparkdl.engine.shipping import modelFromBytes

    B, EPOCHS, CUT = 8, 2, 250
    store = str(tmp_path / "store")
    est = estimator(cnn_file).setNumWorkers(2).setKerasFitParams(
        {"epochs": EPOCHS, "batch_size": B, "verbose": 0, "shuffle": False,
         "validation_split": CUT / 1000})
    # SGD: its step is proportional to the gradient. Adam's normalized step turns float
    # rounding in near-zero gradients (two averaged halves vs one batch) into whole steps.
    est.setKerasOptimizer({"class_name": "SGD", "config": {"learning_rate": 0.1}})
    est._set(storeDir=store)
    model = est.fit(frame(spark, pictures["shapes"][:48]))

    stored = pa.concat_tables(pq.read_table(f) for f in sorted(glob.glob(store + "/*.parquet")))
    rows = stored.to_pylist()
    usable = [r for r in rows if r["error"] is None and r["loaded"] and r["label"] is not None]
    assert len(usable) == 48

    def arrays(rs):
        return (np.array([r["x"] for r in rs], np.float32).reshape(-1, SIZE, SIZE, 3),
                np.array([r["label"] for r in rs], np.int32))

    trainRows = [r for r in usable if r["fold"] >= CUT]
    xv, yv = arrays([r for r in usable if r["fold"] < CUT])
    half = len(trainRows) // 2
    shards = [trainRows[:half], trainRows[half:]]
    steps = len(trainRows) // (2 * B)
    assert model.fitSummary["workerRows"] == [len(s) for s in shards] and len(xv) > 0
    assert model.fitSummary["stepsPerEpoch"] == steps

    reference = keras.saving.load_model(cnn_file)
    reference.compile(optimizer=keras.optimizers.get(est.getKerasOptimizer()),
                      loss=est.getKerasLoss(), metrics=["accuracy"], jit_compile=False)
    cursors = [0, 0]
    losses, valLosses = [], []
    for _ in range(EPOCHS):
        batch = []
        for _ in range(steps):  # each worker streams its shard round and round
            for rank, shard in enumerate(shards):
                batch += [shard[(cursors[rank] + j) % len(shard)] for j in range(B)]
                cursors[rank] += B
        x, y = arrays(batch)
        h = reference.fit(x, y, batch_size=2 * B, epochs=1, shuffle=False, verbose=0)
        losses.append(h.history["loss"][0])
        valLosses.append(reference.evaluate(xv, yv, batch_size=B, verbose=0)[0])

    fitted = modelFromBytes(model.getOrDefault("modelBytes"))
    moved = 0.0
    for got, want, start in zip(fitted.get_weights(), reference.get_weights(),
                                keras.saving.load_model(cnn_file).get_weights()):
        assert_close(got, want, 1e-4)
        moved = max(moved, np.abs(want - start).max())
    assert moved > 1e-3  # training moved the weights: agreeing was not trivial
    history = model.fitSummary["history"]
    np.testing.assert_allclose(history["loss"], losses, rtol=1e-4)
    np.testing.assert_allclose(history["val_loss"], valLosses, rtol=1e-4)


def test_num_workers_is_checked_persisted_and_needs_the_task_slots(spark, pictures, cnn_file,
                                                                   tmp_path):
    with pytest.raises(ValueError, match="numWorkers must be an integer >= 1, got 0"):
        KerasImageFileEstimator(numWorkers=0)
    est = estimator(cnn_file).setNumWorkers(3)
    est.save(str(tmp_path / "est"))
    assert KerasImageFileEstimator.load(str(tmp_path / "est"),
                                        allowUserCode=True).getNumWorkers() == 3
    # local[2] has two task slots: HorovodRunner's message, before any data is materialized.
    with pytest.raises(RuntimeError, match=r"HorovodRunner\(np=3\) needs 3 task slots .* "
                                           r"cluster has 2 task slot"):
        est.fit(frame(spark, pictures["shapes"][:8]))
