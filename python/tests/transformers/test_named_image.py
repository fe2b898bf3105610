"""DeepImageFeaturizer / DeepImagePredictor against Keras run directly, real weights on real
photos, and transfer learning on real labelled faces."""
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import LogisticRegression
from pyspark.sql import Row
from pyspark.sql.functions import arrow_udf

from sparkdl import DeepImageFeaturizer, DeepImagePredictor, readImages
from sparkdl.image.imageIO import imageArrayToStruct, imageSchema, imageStructToArray, invalidImageStruct
from sparkdl.models.registry import buildModel, getModelEntry
from sparkdl.resources import samplesDir
from numerics import assert_close


@pytest.fixture
def photos(spark):
    """The bundled photos (read by readImages), plus an invalid and a null image."""
    df = readImages(samplesDir(), pathGlobFilter="*.jpg").select("image").orderBy("image.origin")
    extra = spark.createDataFrame([Row(image=invalidImageStruct("file:/bad.jpg")), Row(image=None)],
                                  f"image {imageSchema.simpleString()}")
    return df.union(extra)


def keras_direct(images, name, pooling="avg", include_top=False, weights=None, resample="box"):
    """What the stage must equal: the same decoded pixels, resized with Pillow, the model's
    own preprocess_input, the model called directly."""
    import keras

    entry = getModelEntry(name)
    height, width = entry.inputSize
    batch = []
    for image in images:
        bgr = imageStructToArray(image)
        rgb = Image.fromarray(np.ascontiguousarray(bgr[:, :, ::-1]))
        batch.append(np.asarray(rgb.resize((width, height), Image.Resampling.BOX if resample == "box"
                                           else Image.Resampling.NEAREST), np.float32))
    if weights is None:
        keras.utils.set_random_seed(0)
    model = buildModel(entry, weights=weights, include_top=include_top, pooling=pooling)
    out = model.predict_on_batch(entry.resolvePreprocess()(np.stack(batch)))
    return np.asarray(out).reshape(len(batch), -1)


@pytest.mark.parametrize("name", ["MobileNetV2", "ResNet50", "MobileNetV3Small"])
def test_featurizer_equals_keras_direct(spark, photos, name):
    featurizer = DeepImageFeaturizer(inputCol="image", outputCol="features", modelName=name,
                                     weights=None, batchSize=2)
    rows = featurizer.transform(photos).collect()
    assert [r.features is None for r in rows] == [False, False, False, True, True]
    got = np.stack([r.features.toArray() for r in rows[:3]])
    expected = keras_direct([r.image for r in rows[:3]], name)
    assert got.shape == (3, getModelEntry(name).featureSize)
    assert_close(got, expected, 1e-4)


def test_featurizer_real_weights_and_unpooled_maps(spark, photos):
    images = [r.image for r in photos.limit(3).collect()]
    featurizer = DeepImageFeaturizer(inputCol="image", outputCol="features",
                                     modelName="EfficientNetLite0", pooling=None,
                                     scaleHint="SCALE_FAST")
    got = np.stack([r.features.toArray() for r in featurizer.transform(photos).limit(3).collect()])
    assert got.shape == (3, 7 * 7 * 1280)
    expected = keras_direct(images, "EfficientNetLite0", pooling=None, weights="imagenet",
                            resample="nearest")
    assert_close(got, expected, 1e-4)


def test_predictor_real_weights_on_real_photos(spark, photos):
    predictor = DeepImagePredictor(inputCol="image", outputCol="probs", modelName="EfficientNetLite0")
    all_rows = predictor.transform(photos).collect()
    assert all_rows[-1].image is None and all_rows[-1].probs is None
    rows = {os.path.basename(r.image.origin): r.probs for r in all_rows[:-1]}
    assert rows["bad.jpg"] is None and len(rows) == 4
    chelsea, coffee = rows["chelsea.jpg"].toArray(), rows["coffee.jpg"].toArray()
    assert chelsea.shape == (1000,) and abs(chelsea.sum() - 1) < 1e-4
    assert {281, 282, 285} <= set(np.argsort(-chelsea)[:5])
    assert int(np.argmax(coffee)) == 967

    decoded = predictor.setParams(decodePredictions=True, topK=3).transform(photos).collect()
    assert decoded[-1].probs is None
    by_name = {os.path.basename(r.image.origin): r.probs for r in decoded[:-1]}
    top = by_name["coffee.jpg"]
    assert len(top) == 3 and top[0]["class"] == "n07920052" and top[0].description == "espresso"
    assert top[0].probability == pytest.approx(float(coffee[967]), abs=1e-6)
    assert [p.probability for p in top] == sorted([p.probability for p in top], reverse=True)
    assert {"tabby", "tiger_cat", "Egyptian_cat"} == {p.description for p in by_name["chelsea.jpg"]}
    assert by_name["bad.jpg"] is None


def test_model_loads_once_per_worker_with_task_sized_threads(spark, photos):
    from sparkdl.engine import model_cache, runtime

    # In-memory images: the featurizer's UDF is the only Python UDF, so the local[2] workers
    # that ran it are the ones the probe below is served by.
    df = spark.createDataFrame([Row(image=r.image) for r in photos.collect()] * 2,
                               f"image {imageSchema.simpleString()}").repartition(4)
    featurizer = DeepImageFeaturizer(inputCol="image", outputCol="f", modelName="MobileNetV2",
                                     weights=None)
    assert df.rdd.getNumPartitions() == 4
    featurizer.transform(df).collect()
    featurizer.transform(df).collect()
    handle = featurizer._modelUdf(spark, includeTop=False, pooling="avg").func.__closure__
    key = next(c.cell_contents.key for c in handle if hasattr(c.cell_contents, "key"))

    @arrow_udf("struct<pid:int,loads:int,cpus:int>")
    def probe(ids: pa.Array) -> pa.Array:
        import os as _os

        n = len(ids)
        return pa.StructArray.from_arrays(
            [pa.array([_os.getpid()] * n, pa.int32()), pa.array([model_cache.loadCount(key)] * n, pa.int32()),
             pa.array([runtime.configure()["cpus"]] * n, pa.int32())], names=["pid", "loads", "cpus"])

    # Same kind of (Arrow) worker as the featurizer's, so the same reused processes answer.
    seen = [tuple(r.p) for r in spark.range(8).repartition(8).select(probe("id").alias("p")).collect()]
    loads = {pid: count for pid, count, _ in seen}
    assert all(count == 1 for count in loads.values() if count), seen  # 8 tasks, <= 1 load each
    assert any(loads.values()), seen
    assert {cpus for _, _, cpus in seen} == {1}  # spark.task.cpus


def test_bad_input_names_the_problem(spark):
    with pytest.raises(ValueError, match="supported models: .*EfficientNetLite0.*InceptionV3"):
        DeepImageFeaturizer(inputCol="image", outputCol="f", modelName="NoSuchNet")
    df = spark.createDataFrame([(1,)], "image int")
    with pytest.raises(TypeError, match="inputCol 'image' must be an image struct .* got int"):
        DeepImageFeaturizer(inputCol="image", outputCol="f", modelName="MobileNetV2").transform(df)
    with pytest.raises(ValueError, match="scaleHint"):
        DeepImagePredictor(scaleHint="SCALE_BEST")
    with pytest.raises(ValueError, match="pooling"):
        DeepImageFeaturizer(pooling="sum")


def test_persistence_alone(spark, photos, tmp_path):
    featurizer = DeepImageFeaturizer(inputCol="image", outputCol="f", modelName="MobileNetV2",
                                     weights=None, pooling="max", batchSize=7)
    featurizer.save(str(tmp_path / "f"))
    loaded = DeepImageFeaturizer.load(str(tmp_path / "f"))
    assert (loaded.getWeights(), loaded.getPooling(), loaded.getBatchSize()) == (None, "max", 7)
    a = [r.f for r in featurizer.transform(photos).collect()]
    assert a == [r.f for r in loaded.transform(photos).collect()]
    predictor = DeepImagePredictor(inputCol="image", outputCol="p", modelName="EfficientNetLite0",
                                   decodePredictions=True, topK=2)
    predictor.save(str(tmp_path / "p"))
    assert DeepImagePredictor.load(str(tmp_path / "p")).extractParamMap() == {
        DeepImagePredictor.load(str(tmp_path / "p")).getParam(p.name): v
        for p, v in predictor.extractParamMap().items()}


def lfw_frames(spark):
    """scikit-image's lfw_subset: 100 faces then 100 non-faces, 25x25 gray; seeded 100/100 split."""
    from skimage import data

    faces = (data.lfw_subset() * 255).round().astype(np.uint8)
    labels = np.array([1.0] * 100 + [0.0] * 100)
    order = np.random.default_rng(0).permutation(200)
    rows = [(imageArrayToStruct(faces[i], origin=f"lfw/{i}"), float(labels[i])) for i in order]
    schema = f"image {imageSchema.simpleString()}, label double"
    return spark.createDataFrame(rows[:100], schema), spark.createDataFrame(rows[100:], schema)


def transfer_pipeline():
    return Pipeline(stages=[
        # 25x25 faces are enlarged to 224x224: SCALE_SMOOTH (bicubic) suits that best.
        DeepImageFeaturizer(inputCol="image", outputCol="features", modelName="EfficientNetLite0",
                            scaleHint="SCALE_SMOOTH"),
        LogisticRegression(featuresCol="features", labelCol="label", maxIter=100, regParam=0.01),
    ])


def accuracy(predictions):
    rows = predictions.select("label", "prediction").collect()
    return sum(r.label == r.prediction for r in rows) / len(rows)


def test_transfer_learning_on_real_faces_and_fresh_session_reload(spark, tmp_path):
    train, test = lfw_frames(spark)
    model = transfer_pipeline().fit(train)
    predictions = model.transform(test)
    assert accuracy(predictions) >= 0.95
    model.save(str(tmp_path / "model"))
    test.write.parquet(str(tmp_path / "test.parquet"))
    expected = sorted((r.image.origin, r.prediction, tuple(r.probability))
                      for r in predictions.collect())
    # A fresh Python process and SparkSession loads the PipelineModel and predicts identically.
    script = (
        "import sys\n"
        "from sparkdl.utils.session import local_session\n"
        "spark = local_session('local[2]')\n"
        "from pyspark.ml import PipelineModel\n"
        f"m = PipelineModel.load({str(tmp_path / 'model')!r})\n"
        f"t = spark.read.parquet({str(tmp_path / 'test.parquet')!r})\n"
        "m.transform(t).select('image.origin', 'prediction', 'probability')"
        f".write.parquet({str(tmp_path / 'out.parquet')!r})\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    reloaded = sorted((r.origin, r.prediction, tuple(r.probability))
                      for r in spark.read.parquet(str(tmp_path / "out.parquet")).collect())
    assert [r[:2] for r in reloaded] == [e[:2] for e in expected]
    assert_close([r[2] for r in reloaded], [e[2] for e in expected], 1e-6)
    assert isinstance(PipelineModel.load(str(tmp_path / "model")).stages[0], DeepImageFeaturizer)


@pytest.mark.local_cluster
def test_transfer_learning_on_separate_executors(cluster_spark):
    train, test = lfw_frames(cluster_spark)
    # Two partitions with fixed contents and order: repartition(2) made them depend on which
    # executor's shuffle blocks arrived first, and L-BFGS sums gradients in partition order.
    def split(df):
        return df.repartitionByRange(2, "image.origin").sortWithinPartitions("image.origin")

    model = transfer_pipeline().fit(split(train))
    assert accuracy(model.transform(split(test))) >= 0.95


def test_file_bytes_and_uris_featurize_like_image_structs(spark, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    from sparkdl.resources import samplesDir as samples

    files = spark.read.format("binaryFile").load([samples(), str(tmp_path / "broken.jpg")]) \
        .select("path", "content")
    featurizer = DeepImageFeaturizer(outputCol="f", modelName="MobileNetV3Small", weights=None)
    structs = {r.image.origin.replace("file:///", "file:/"): r.f for r in featurizer.setInputCol("image")
               .transform(readImages(samples(), pathGlobFilter="*.jpg")).collect()}
    from_bytes = {r.path: r.f for r in featurizer.setInputCol("content").transform(files).collect()}
    from_uris = {r.path: r.f for r in featurizer.setInputCol("path").transform(files).collect()}
    broken = [p for p in from_bytes if p.endswith("broken.jpg")][0]
    assert from_bytes.pop(broken) is None and from_uris.pop(broken) is None
    assert sorted(from_bytes) == sorted(structs) == sorted(from_uris)
    for path, features in structs.items():
        assert_close(from_bytes[path].toArray(), features.toArray(), 1e-6)
        assert_close(from_uris[path].toArray(), features.toArray(), 1e-6)


def test_featurizer_on_read_images_decodes_in_its_own_worker(spark, tmp_path):
    """Selecting only the features, Spark chains readImages' decoding UDF and the featurizer's
    into one Python worker (the pixels never cross the JVM); results equal the unchained plan."""
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    images = readImages([samplesDir(), str(tmp_path)], pathGlobFilter="*.jpg")
    featurizer = DeepImageFeaturizer(inputCol="image", outputCol="f", modelName="MobileNetV3Small",
                                     weights=None, batchSize=2)
    chained = featurizer.transform(images).select("f")
    plan = chained._jdf.queryExecution().executedPlan().toString()
    assert plan.count("ArrowEvalPython") == 1 and "predictImages(decodeImages(" in plan, plan
    unchained = featurizer.transform(images).select("image.origin", "image.height", "f")
    plan = unchained._jdf.queryExecution().executedPlan().toString()
    assert "predictImages(decodeImages(" not in plan and plan.count("decodeImages(") == 1, plan
    expected = sorted((r.f is None, r.f and r.f.toArray().tolist()) for r in unchained.collect())
    got = sorted((r.f is None, r.f and r.f.toArray().tolist()) for r in chained.collect())
    assert len(got) == 4 and sum(none for none, _ in got) == 1
    assert_close([v for _, v in got if v], [v for _, v in expected if v], 1e-6)
