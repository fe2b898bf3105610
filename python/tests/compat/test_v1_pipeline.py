"""Stages and pipelines saved by Deep Learning Pipelines 1.x load here.

No Spark 2.4 runs here, so the 1.x files are built by hand, byte for byte as Spark 2.x's
Scala ``DefaultParamsWriter`` wrote them (one JSON line in ``metadata/part-00000``, a
``_SUCCESS`` marker; Spark 2.3 wrote no ``defaultParamMap``), and the logistic regression's
``data/`` with the Parquet schema Spark 2.1+ writes. The loaded pipeline's output is compared
with Keras's ResNet50 run directly and the regression computed with numpy.
"""
import json
import os

import numpy as np
import pytest
from PIL import Image
from pyspark.ml import PipelineModel
from pyspark.ml.linalg import DenseMatrix, DenseVector, MatrixUDT, VectorUDT
from pyspark.sql.types import BooleanType, IntegerType, StructField, StructType

from sparkdl import DeepImageFeaturizer, readImages
from sparkdl.image.imageIO import imageStructToArray
from sparkdl.resources import samplesDir
from numerics import assert_close

FEATURIZER_UID = "deepImageFeaturizer_6f1c2e8a9b3d"
LR_UID = "LogisticRegression_4a1b9d3e5c7f"
PIPELINE_UID = "PipelineModel_2d4e6f8a0b1c"


def write_metadata(path, metadata):
    """As Spark 2.x's Scala writer: ``sc.parallelize(Seq(json), 1).saveAsTextFile``."""
    os.makedirs(os.path.join(path, "metadata"))
    with open(os.path.join(path, "metadata", "part-00000"), "w") as f:
        f.write(json.dumps(metadata, separators=(",", ":")) + "\n")
    open(os.path.join(path, "metadata", "_SUCCESS"), "w").close()


def featurizer_metadata(modelName, scaleHint=None, sparkVersion="2.4.4", uid=FEATURIZER_UID):
    params = {"inputCol": "image", "outputCol": "features", "modelName": modelName}
    if scaleHint:
        params["scaleHint"] = scaleHint
    metadata = {"class": "com.databricks.sparkdl.DeepImageFeaturizer",
                "timestamp": 1554224232187, "sparkVersion": sparkVersion, "uid": uid,
                "paramMap": params}
    if sparkVersion >= "2.4":
        metadata["defaultParamMap"] = {"scaleHint": "SCALE_AREA_AVERAGING"}
    return metadata


def write_v1_pipeline(spark, path, weights, intercept):
    """A 1.x PipelineModel: [DeepImageFeaturizer(ResNet50), LogisticRegressionModel]."""
    write_metadata(path, {"class": "org.apache.spark.ml.PipelineModel",
                          "timestamp": 1554224240001, "sparkVersion": "2.4.4",
                          "uid": PIPELINE_UID, "paramMap": {"stageUids": [FEATURIZER_UID, LR_UID]},
                          "defaultParamMap": {}})
    write_metadata(os.path.join(path, "stages", f"0_{FEATURIZER_UID}"),
                   featurizer_metadata("ResNet50"))
    lr = os.path.join(path, "stages", f"1_{LR_UID}")
    write_metadata(lr, {
        "class": "org.apache.spark.ml.classification.LogisticRegressionModel",
        "timestamp": 1554224239876, "sparkVersion": "2.4.4", "uid": LR_UID,
        "paramMap": {"regParam": 0.05, "elasticNetParam": 0.3, "maxIter": 20,
                     "labelCol": "label"},
        "defaultParamMap": {"aggregationDepth": 2, "elasticNetParam": 0.0, "family": "auto",
                            "featuresCol": "features", "fitIntercept": True,
                            "labelCol": "label", "maxIter": 100, "predictionCol": "prediction",
                            "probabilityCol": "probability",
                            "rawPredictionCol": "rawPrediction", "regParam": 0.0,
                            "standardization": True, "threshold": 0.5, "tol": 1e-06}})
    schema = StructType([StructField("numClasses", IntegerType(), False),
                         StructField("numFeatures", IntegerType(), False),
                         StructField("interceptVector", VectorUDT(), True),
                         StructField("coefficientMatrix", MatrixUDT(), True),
                         StructField("isMultinomial", BooleanType(), False)])
    row = (2, len(weights), DenseVector([intercept]),
           DenseMatrix(1, len(weights), [float(w) for w in weights], isTransposed=True), False)
    spark.createDataFrame([row], schema).coalesce(1).write.parquet(os.path.join(lr, "data"))


def resnet50_direct(images):
    """1.x's ResNet50 features, computed without sparkdl: area-averaged resize to 224 x 224
    (1.x's default SCALE_AREA_AVERAGING), RGB, Keras's preprocess_input, ResNet50 without its
    top, average-pooled (2048 values), seeded random weights as the stage's weights=None."""
    import keras

    batch = []
    for image in images:
        rgb = Image.fromarray(np.ascontiguousarray(imageStructToArray(image)[:, :, ::-1]))
        batch.append(np.asarray(rgb.resize((224, 224), Image.Resampling.BOX), np.float32))
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, include_top=False, pooling="avg",
                                        input_shape=(224, 224, 3))
    x = keras.applications.resnet50.preprocess_input(np.stack(batch))
    return np.asarray(model.predict_on_batch(x), np.float64)


def test_v1_pipeline_loads_and_predicts_like_its_parts(spark, tmp_path):
    rng = np.random.default_rng(0)
    weights, intercept = rng.normal(size=2048) / 10, 0.25
    path = str(tmp_path / "v1-pipeline")
    write_v1_pipeline(spark, path, weights, intercept)

    model = PipelineModel.load(path)  # 1.x: No module named 'com'
    featurizer, lr = model.stages
    assert type(featurizer) is DeepImageFeaturizer and featurizer.uid == FEATURIZER_UID
    assert (featurizer.getModelName(), featurizer.getScaleHint(), featurizer.getPooling(),
            featurizer.getWeights()) == ("ResNet50", "SCALE_AREA_AVERAGING", "avg", "imagenet")
    assert lr.uid == LR_UID and lr.numFeatures == 2048
    # Forced edit: ImageNet weights cannot be downloaded here; seeded random ones instead.
    featurizer.setWeights(None)

    images = readImages(samplesDir(), pathGlobFilter="*.jpg").orderBy("image.origin")
    rows = model.transform(images).select("image", "features", "probability",
                                          "prediction").collect()
    features = resnet50_direct([r.image for r in rows])
    got = np.stack([r.features.toArray() for r in rows])
    assert_close(got, features, 1e-4)
    p1 = 1 / (1 + np.exp(-(features @ weights + intercept)))
    assert_close([r.probability[1] for r in rows], p1, 1e-4)
    assert [r.prediction for r in rows] == [float(p > 0.5) for p in p1]

    # saved again, it is sparkdl's own stage
    again = str(tmp_path / "resaved")
    model.write().save(again)
    metadata = spark.read.text(os.path.join(again, "stages", f"0_{FEATURIZER_UID}",
                                            "metadata")).first()[0]
    assert json.loads(metadata)["class"] == "sparkdl.transformers.named_image.DeepImageFeaturizer"
    reloaded = PipelineModel.load(again).stages[0]
    assert reloaded.extractParamMap() == featurizer.extractParamMap()


@pytest.mark.parametrize("modelName,pooling", [("InceptionV3", None), ("Xception", None),
                                               ("VGG16", None), ("VGG19", None),
                                               ("ResNet50", "avg")])
def test_v1_featurizer_alone_maps_its_params(spark, tmp_path, modelName, pooling):
    """Spark 2.3's format (no defaultParamMap); the 1.x output size is kept: flattened maps,
    except ResNet50, whose 1.x graph ended in average pooling."""
    path = str(tmp_path / "featurizer")
    write_metadata(path, featurizer_metadata(modelName, "SCALE_FAST", sparkVersion="2.3.0"))
    stage = DeepImageFeaturizer.load(path)
    assert type(stage) is DeepImageFeaturizer and stage.uid == FEATURIZER_UID
    assert (stage.getInputCol(), stage.getOutputCol(), stage.getModelName(),
            stage.getScaleHint(), stage.getPooling(), stage.getWeights()) == (
        "image", "features", modelName, "SCALE_FAST", pooling, "imagenet")


def test_v1_featurizer_with_unknown_content_is_refused(spark, tmp_path):
    path = str(tmp_path / "test-net")
    write_metadata(path, featurizer_metadata("_test"))  # 1.x's Scala-only test graph
    with pytest.raises(ValueError, match=r"1.x DeepImageFeaturizer at .* has modelName '_test'; "
                                         r"1.x models: \['InceptionV3', 'ResNet50'"):
        DeepImageFeaturizer.load(path)
    path = str(tmp_path / "extra")
    metadata = featurizer_metadata("VGG16")
    metadata["paramMap"]["graphBytes"] = "..."
    write_metadata(path, metadata)
    with pytest.raises(ValueError, match=r"has params \['graphBytes'\] that 1.x never wrote"):
        DeepImageFeaturizer.load(path)
    path = str(tmp_path / "other")
    write_metadata(path, dict(featurizer_metadata("VGG16"), **{"class": "os.DeepImagePredictor"}))
    with pytest.raises(ValueError, match=r"holds a saved 'os.DeepImagePredictor', not a "
                                         r"DeepImageFeaturizer"):
        DeepImageFeaturizer.load(path)
