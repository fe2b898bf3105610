"""The examples of the 1.x README (databricks/spark-deep-learning v1.6.0), run as written
except for the edits that Spark 4, TensorFlow 2 and Keras 3 force, each marked ``# EDIT:``
with its reason. Edits made only so the test is fast or offline (a tiny model instead of
ImageNet InceptionV3, temporary paths) are marked ``# TEST:``. Each example's result is then
checked against Keras / TensorFlow / numpy run directly.
"""
import os
import sys

import numpy as np
import pytest
from PIL import Image
from pyspark import cloudpickle

import tiny_image_models
from numerics import assert_close

cloudpickle.register_pickle_by_value(sys.modules[__name__])

tf = pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def sample_img_dir(tmp_path_factory):
    """JPEG photos and PNGs of several sizes (the README's /data/myimages)."""
    from sparkdl.resources import samplesDir

    d = tmp_path_factory.mktemp("myimages")
    for name in sorted(os.listdir(samplesDir())):
        if name.endswith(".jpg"):
            Image.open(os.path.join(samplesDir(), name)).save(d / name)
    tiny_image_models.write_pngs(d)
    return str(d)


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    # TEST: a tiny seeded classifier (16 x 16 RGB -> 5) saved as legacy HDF5 like the README's
    # InceptionV3(weights="imagenet").save('/tmp/model-full.h5'); no download here.
    path = str(tmp_path_factory.mktemp("models") / "model-full-tmp.h5")
    tiny_image_models.classifier().save(path)
    return path


def test_working_with_images(spark, sample_img_dir):
    # EDIT: pyspark.ml.image.ImageSchema is gone from Spark 4.
    from sparkdl import readImages
    image_df = readImages(sample_img_dir)

    from sparkdl.image import imageIO as imageIO
    custom_df = imageIO.readImagesWithCustomFn(sample_img_dir, decode_f=imageIO.PIL_decode)
    custom_df.show()

    a = {r.image.origin: bytes(r.image.data) for r in image_df.collect()}
    b = {r.image.origin: bytes(r.image.data) for r in custom_df.collect()}
    assert a == b and len(a) == 8


def test_transfer_learning(spark, sample_img_dir):
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.evaluation import MulticlassClassificationEvaluator
    from pyspark.ml import Pipeline
    from sparkdl import DeepImageFeaturizer

    # TEST: EfficientNetLite0 instead of InceptionV3: its ImageNet weights work offline (no
    # download here) and it is small.
    featurizer = DeepImageFeaturizer(inputCol="image", outputCol="features",
                                     modelName="EfficientNetLite0")
    lr = LogisticRegression(maxIter=20, regParam=0.05, elasticNetParam=0.3, labelCol="label")
    p = Pipeline(stages=[featurizer, lr])

    from pyspark.sql import functions as F
    from sparkdl import readImages
    train_images_df = (readImages(sample_img_dir, pathGlobFilter="*.jpg")
                       .withColumn("uri", F.col("image.origin"))
                       .withColumn("label", (F.col("uri").contains("coffee")).cast("double")))
    model = p.fit(train_images_df)    # train_images_df is a dataset of images and labels

    # Inspect training error
    # EDIT: the 1.x README selected no "prediction" column here and then evaluated it.
    df = model.transform(train_images_df.limit(10)).select("image", "probability", "uri", "label",
                                                           "prediction")
    predictionAndLabels = df.select("prediction", "label")
    evaluator = MulticlassClassificationEvaluator(metricName="accuracy")
    accuracy = evaluator.evaluate(predictionAndLabels)
    print("Training set accuracy = " + str(accuracy))

    rows = df.collect()
    assert accuracy == np.mean([r.prediction == r.label for r in rows])
    lrModel = model.stages[1]
    assert lrModel.numFeatures == 1280  # pooled by default here (1.x: flattened maps)


def test_distributed_hyperparameter_tuning(spark, sample_img_dir, tiny_model_file,
                                           monkeypatch):
    # TEST: record the estimator's driver-memory checks (models returned to the driver at once)
    from sparkdl.estimators import driver_memory
    checks = []
    check = driver_memory.checkDriverMemory
    monkeypatch.setattr(driver_memory, "checkDriverMemory",
                        lambda s, size, n: checks.append((size, n)) or check(s, size, n))

    import PIL.Image
    import numpy as np
    from keras.applications.imagenet_utils import preprocess_input
    from sparkdl.estimators.keras_image_file_estimator import KerasImageFileEstimator

    def load_image_from_uri(local_uri):
        # EDIT: Pillow 10 removed Image.ANTIALIAS (its LANCZOS); TEST: the tiny model's 16 x 16.
        img = (PIL.Image.open(local_uri).convert('RGB').resize((16, 16), PIL.Image.LANCZOS))
        img_arr = np.array(img).astype(np.float32)
        img_tnsr = preprocess_input(img_arr[np.newaxis, :])
        return img_tnsr

    estimator = KerasImageFileEstimator(inputCol="uri",
                                        outputCol="prediction",
                                        labelCol="one_hot_label",
                                        imageLoader=load_image_from_uri,
                                        kerasOptimizer='adam',
                                        kerasLoss='categorical_crossentropy',
                                        modelFile=tiny_model_file  # local file path for model
                                        )

    from pyspark.ml.evaluation import BinaryClassificationEvaluator
    from pyspark.ml.tuning import CrossValidator, ParamGridBuilder

    paramGrid = (
        ParamGridBuilder()
        .addGrid(estimator.kerasFitParams, [{"batch_size": 32, "verbose": 0},
                                            {"batch_size": 64, "verbose": 0}])
        .build()
    )
    bc = BinaryClassificationEvaluator(rawPredictionCol="prediction", labelCol="label")
    cv = CrossValidator(estimator=estimator, estimatorParamMaps=paramGrid, evaluator=bc,
                        numFolds=2)

    # TEST: train_df, as the README leaves it to the reader: uris, a 0/1 label and its one-hot
    # vector over the tiny model's 5 outputs.
    from pyspark.ml.linalg import Vectors
    files = sorted(os.path.join(sample_img_dir, f) for f in os.listdir(sample_img_dir))
    from pyspark.ml.linalg import VectorUDT
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType
    schema = StructType([StructField("uri", StringType()), StructField("label", DoubleType()),
                         StructField("one_hot_label", VectorUDT())])
    train_df = spark.createDataFrame(
        [(f, float(i % 2), Vectors.dense(np.eye(5)[i % 2])) for i, f in enumerate(files * 2)],
        schema)
    cvModel = cv.fit(train_df)

    assert len(cvModel.avgMetrics) == 2 and all(0 <= m <= 1 for m in cvModel.avgMetrics)
    # each fold trains both param maps at once, then the best is refitted alone
    assert [n for _, n in checks] == [2, 2, 1] and all(size > 0 for size, _ in checks)
    best = cvModel.bestModel
    rows = best.transform(train_df.limit(3)).collect()
    # the fitted model serves what Keras computes with its trained weights on the same loader
    import keras
    trained = os.path.join(os.path.dirname(tiny_model_file), "best.keras")
    with open(trained, "wb") as f:
        f.write(best.getOrDefault(best.modelBytes))
    direct = keras.models.load_model(trained, compile=False)
    expected = direct.predict_on_batch(np.concatenate([load_image_from_uri(r.uri) for r in rows]))
    assert_close([r.prediction.toArray() for r in rows], expected, 1e-5)


def test_applying_popular_image_models(spark, sample_img_dir):
    # EDIT: ImageSchema.readImages is gone from Spark 4.
    from sparkdl import readImages
    from sparkdl import DeepImagePredictor

    image_df = readImages(sample_img_dir)

    # TEST: EfficientNetLite0 instead of InceptionV3: its ImageNet weights work offline.
    predictor = DeepImagePredictor(inputCol="image", outputCol="predicted_labels",
                                   modelName="EfficientNetLite0", decodePredictions=True,
                                   topK=10)
    predictions_df = predictor.transform(image_df)

    top = {}
    for row in predictions_df.collect():
        probabilities = [p.probability for p in row.predicted_labels]
        assert len(probabilities) == 10 and probabilities == sorted(probabilities, reverse=True)
        assert 0 < sum(probabilities) <= 1 + 1e-5
        top[os.path.basename(row.image.origin)] = row.predicted_labels[0].description
    assert top["coffee.jpg"] == "espresso"  # the photo's known content


def test_tf_image_transformer(spark, sample_img_dir):
    # EDIT: TF1 graph, session and placeholder -> a tf.function with the image batch as input.
    from sparkdl import TFImageTransformer
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32,
                                                 name="image")])
    def resized_images(image):
        return {"resized": tf.image.resize(image, (299, 299))}

    transformer = TFImageTransformer(channelOrder="BGR",  # EDIT: was a graph-building argument
                                     inputCol="image", outputCol="predictions",
                                     graph=resized_images, inputTensor="image:0",
                                     outputTensor="resized:0", outputMode="image")

    # EDIT: ImageSchema.readImages is gone from Spark 4.
    from sparkdl import readImages
    image_df = readImages(sample_img_dir, pathGlobFilter="*.png")
    processed_image_df = transformer.transform(image_df)

    from sparkdl.image.imageIO import imageStructToArray
    for row in processed_image_df.collect():
        got = imageStructToArray(row.predictions)
        bgr = imageStructToArray(row.image)
        if bgr.shape[2] != 3:
            continue  # gray and BGRA go through channel conversion, tested elsewhere
        expected = tf.image.resize(bgr[None].astype(np.float32), (299, 299)).numpy()[0]
        np.testing.assert_allclose(got, expected, atol=1e-3)


def test_keras_image_file_transformer(spark, sample_img_dir, tiny_model_file):
    from keras.applications.inception_v3 import preprocess_input
    from keras.preprocessing.image import img_to_array, load_img
    import numpy as np
    import os
    from pyspark.sql.types import StringType
    from sparkdl import KerasImageFileTransformer

    def loadAndPreprocessKerasInceptionV3(uri):
        # this is a typical way to load and prep images in keras
        # TEST: the tiny model's 16 x 16 instead of InceptionV3's 299 x 299
        image = img_to_array(load_img(uri, target_size=(16, 16)))
        image = np.expand_dims(image, axis=0)
        return preprocess_input(image)

    transformer = KerasImageFileTransformer(inputCol="uri", outputCol="predictions",
                                            modelFile=tiny_model_file,  # local file path for model
                                            imageLoader=loadAndPreprocessKerasInceptionV3,
                                            outputMode="vector")

    files = [os.path.abspath(os.path.join(dirpath, f)) for dirpath in [sample_img_dir]
             for f in os.listdir(sample_img_dir) if f.endswith('.jpg')]
    # EDIT: sqlContext is gone from Spark 4's shells; the session is `spark`.
    uri_df = spark.createDataFrame(files, StringType()).toDF("uri")

    keras_pred_df = transformer.transform(uri_df)

    import keras
    model = keras.models.load_model(tiny_model_file, compile=False)
    rows = keras_pred_df.collect()
    expected = model.predict_on_batch(np.concatenate([loadAndPreprocessKerasInceptionV3(r.uri)
                                                      for r in rows]))
    assert_close([r.predictions.toArray() for r in rows], expected, 1e-5)


def test_tf_transformer_on_tensors(spark):
    import numpy as np
    from pyspark.sql.types import Row

    n_sample = 1000
    center_0 = [-1.5, 1.5]
    center_1 = [1.5, -1.5]

    def to_row(args):
        xy, l = args
        return Row(inputCol=xy, label=l)

    np.random.seed(0)  # TEST: reproducible samples
    samples_0 = [np.random.randn(2) + center_0 for _ in range(n_sample // 2)]
    labels_0 = [0 for _ in range(n_sample // 2)]
    samples_1 = [np.random.randn(2) + center_1 for _ in range(n_sample // 2)]
    labels_1 = [1 for _ in range(n_sample // 2)]

    rows = map(to_row, zip(map(lambda x: x.tolist(), samples_0 + samples_1), labels_0 + labels_1))
    sdf = spark.createDataFrame(rows)

    import tensorflow as tf

    w0 = np.array([[1], [-1]]).astype(np.float32)

    # EDIT: TF1 placeholder and session -> a tf.function; the TensorSpec's name and the output
    # key play the placeholder's and the op's names.
    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="input_tensor")])
    def build_graph(X):
        return {"output_tensor": tf.sigmoid(tf.matmul(X, w0))}

    from sparkdl import TFTransformer
    from sparkdl.graph.input import TFInputGraph
    import sparkdl.graph.utils as tfx

    # EDIT: TFInputGraph.fromGraph(session.graph, session, ...) is TF1.
    gin = TFInputGraph.fromFunction(build_graph)

    transformer = TFTransformer(
        tfInputGraph=gin,
        inputMapping={'inputCol': tfx.tensor_name("input_tensor")},
        outputMapping={tfx.tensor_name("output_tensor"): 'outputCol'})

    odf = transformer.transform(sdf)

    got = odf.select("inputCol", "outputCol").collect()
    xs = np.array([r.inputCol for r in got])
    expected = 1 / (1 + np.exp(-(xs @ w0.astype(np.float64))))
    assert_close([r.outputCol for r in got], expected, 1e-6)


def test_keras_transformer(spark, tmp_path):
    from sparkdl import KerasTransformer
    from keras.models import Sequential
    from keras.layers import Dense
    import numpy as np

    # Generate random input data
    num_features = 10
    num_examples = 100
    input_data = [{"features": np.random.randn(num_features).tolist()} for i in range(num_examples)]
    # EDIT: sqlContext is gone from Spark 4's shells; the session is `spark`.
    input_df = spark.createDataFrame(input_data)

    # Create and save a single-hidden-layer Keras model for binary classification
    model = Sequential()
    model.add(Dense(units=20, input_shape=[num_features], activation='relu'))
    model.add(Dense(units=1, activation='sigmoid'))
    # EDIT: Keras 3 saves only to a .keras (or .h5) path; TEST: a temporary directory.
    model_path = str(tmp_path / "simple-binary-classification.keras")
    model.save(model_path)

    # Create transformer and apply it to our input data
    transformer = KerasTransformer(inputCol="features", outputCol="predictions", modelFile=model_path)
    final_df = transformer.transform(input_df)

    rows = final_df.collect()
    expected = model.predict_on_batch(np.array([r.features for r in rows], np.float32))
    assert_close([r.predictions for r in rows], expected, 1e-5)


def test_deploying_models_as_sql_functions(spark, sample_img_dir, tiny_model_file):
    from sparkdl.udf.keras_image_model import registerKerasImageUDF

    # TEST: the tiny model, from its file, instead of InceptionV3(weights="imagenet").
    registerKerasImageUDF("my_custom_keras_model_udf", tiny_model_file)

    # EDIT: ImageSchema.readImages is gone from Spark 4.
    from sparkdl import readImages
    image_df = readImages(sample_img_dir, pathGlobFilter="*.png")
    image_df.registerTempTable("sample_images")

    rows = spark.sql("SELECT image, my_custom_keras_model_udf(image) as predictions "
                     "from sample_images").collect()

    import keras
    from sparkdl.image.imageIO import imageStructToArray
    model = keras.models.load_model(tiny_model_file, compile=False)
    batch = []
    for r in rows:  # documented: RGB (gray repeated, alpha dropped), bilinear to 16 x 16
        arr = imageStructToArray(r.image)
        rgb = np.repeat(arr, 3, axis=2) if arr.shape[2] == 1 else arr[:, :, 2::-1]
        resized = Image.fromarray(np.ascontiguousarray(rgb)).resize((16, 16),
                                                                    Image.Resampling.BILINEAR)
        batch.append(np.asarray(resized, np.float32))
    expected = model.predict_on_batch(np.stack(batch))
    assert_close([r.predictions for r in rows], expected, 1e-4)


def test_sql_function_with_a_1x_path_preprocessor(spark, sample_img_dir, tiny_model_file,
                                                  tmp_path):
    import keras
    from sparkdl.udf.keras_image_model import registerKerasImageUDF

    def keras_load_img(fpath):
        from keras.preprocessing.image import load_img, img_to_array
        import numpy as np
        img = load_img(fpath, target_size=(16, 16))  # TEST: the tiny model's 16 x 16
        return img_to_array(img).astype(np.uint8)

    model = keras.models.load_model(tiny_model_file, compile=False)  # TEST: not InceptionV3
    # The 1.x call as written: the preprocessor would get arrays here, so it is refused now,
    # at registration, saying what to do (not later, in every query).
    with pytest.raises(ValueError, match=r"preprocessor of 'inceptionV3_udf_with_preprocessing' "
                                         r"failed on a blank 16 x 16 RGB uint8 array: .*; a "
                                         r"preprocessor written for 1.x takes a file path: pass "
                                         r"preprocessorInput='path'"):
        registerKerasImageUDF("inceptionV3_udf_with_preprocessing", model, keras_load_img)
    # EDIT: say that the preprocessor takes a path (here the default is an RGB array).
    registerKerasImageUDF("inceptionV3_udf_with_preprocessing", model, keras_load_img,
                          preprocessorInput="path")

    from sparkdl import readImages  # EDIT: ImageSchema.readImages is gone from Spark 4.
    image_df = readImages(sample_img_dir, pathGlobFilter="*.jpg")
    image_df.createOrReplaceTempView("sample_images")
    rows = spark.sql("SELECT image, inceptionV3_udf_with_preprocessing(image) as predictions "
                     "from sample_images").collect()

    from sparkdl.image.imageIO import imageStructToArray
    batch = []
    for r in rows:  # 1.x's route, done here without sparkdl: the image as a PNG file
        png = str(tmp_path / "direct.png")
        Image.fromarray(np.ascontiguousarray(imageStructToArray(r.image)[:, :, ::-1])).save(png)
        batch.append(keras_load_img(png))
    expected = model.predict_on_batch(np.stack(batch).astype(np.float32))
    assert_close([r.predictions for r in rows], expected, 1e-4)
    with pytest.raises(ValueError, match="preprocessorInput must be 'array' or 'path'"):
        registerKerasImageUDF("x", model, keras_load_img, preprocessorInput="file")
