"""KerasImageFileTransformer against the same Keras model applied directly to the loader's
arrays: vectors, float32 image structs, loader failures, safe_mode, validation, persistence."""
import os
import shutil
import sys

import numpy as np
import pytest
from PIL import Image
from pyspark.ml import PipelineModel
from pyspark.ml.linalg import VectorUDT

import tiny_image_models as tim
from sparkdl import KerasImageFileTransformer
from sparkdl.image.imageIO import imageSchema, imageStructToArray, rgbToStructOrder

# Executors cannot import this test module: ship its functions by value, as for a notebook.
from pyspark import cloudpickle  # noqa: E402
from numerics import assert_close

cloudpickle.register_pickle_by_value(sys.modules[__name__])
SIZE = tim.SIZE  # executor-side functions use this, not the tim module


def load16(uri):
    """RGB, resized to the classifier's 16 x 16, scaled to [0, 1]; refuses names with 'bad'."""
    if "bad" in os.path.basename(uri):
        raise RuntimeError("this loader refuses files named bad")
    img = Image.open(uri).convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    return np.asarray(img, np.float32)[np.newaxis] / 255.0  # 1 x H x W x C is accepted too


def load_native(uri):
    """RGB float32 at the file's own size."""
    return np.asarray(Image.open(uri).convert("RGB"), np.float32)


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    return tim.write_pngs(tmp_path_factory.mktemp("keras-image-pngs"))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return tim.save(tim.classifier(), tmp_path_factory.mktemp("keras-image-model") / "m.keras")


def uris(spark, paths):
    return spark.createDataFrame([(p,) for p in paths], "uri string")


def vectors(rows, col="out"):
    return np.stack([getattr(r, col).toArray() for r in rows])


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_vectors_equal_keras_direct_with_nulls_and_loader_errors(spark, pngs, tmp_path, fmt):
    model = tim.classifier(seed=1)
    path = tim.save(model, tmp_path / f"m.{fmt}")
    good = list(pngs.values())
    paths = good + [str(tmp_path / "bad.png"), None, str(tmp_path / "missing.png")]
    stage = KerasImageFileTransformer(inputCol="uri", outputCol="out", modelFile=path,
                                      imageLoader=load16, batchSize=2)
    out = stage.transform(uris(spark, paths))
    assert out.columns == ["uri", "out", "error"]
    assert isinstance(out.schema["out"].dataType, VectorUDT)
    rows = out.collect()
    assert [r.uri for r in rows] == paths
    expected = tim.predict(model, [load16(p)[0] for p in good])
    got = vectors(rows[:len(good)])
    assert got.shape == (len(good), 5)
    assert_close(got, expected, 1e-5)
    assert all(r.error is None for r in rows[:len(good)])
    bad, null, missing = rows[len(good):]
    assert bad.out is None and bad.error == ("imageLoader failed: RuntimeError: this loader "
                                             "refuses files named bad")
    assert null.out is None and null.error is None
    assert missing.out is None and missing.error.startswith("imageLoader failed: FileNotFoundError")


def test_arrays_the_model_cannot_take_give_null_with_the_reason(spark, pngs, model_file):
    """A fixed 16 x 16 x 3 model: native-size arrays other than 16 x 16 are refused per row."""
    stage = KerasImageFileTransformer(inputCol="uri", outputCol="out", modelFile=model_file,
                                      imageLoader=load_native)
    rows = stage.transform(uris(spark, [pngs["square.png"], pngs["wide.png"]])).collect()
    square, wide = rows
    model = tim.classifier()
    assert_close(square.out.toArray(),
                 tim.predict(model, [load_native(pngs["square.png"])])[0], 1e-5)
    assert wide.out is None
    assert wide.error == "imageLoader returned shape 37 x 53 x 3; the model takes 16 x 16 x 3"

    flat = stage.copy({stage.imageLoader: lambda uri: np.zeros(SIZE * SIZE * 3)})
    row = flat.transform(uris(spark, [pngs["square.png"]])).first()
    assert row.out is None and row.error == ("imageLoader returned an array of shape (768,); "
                                             "expected H x W x C or 1 x H x W x C")


@pytest.mark.parametrize("channels,mode", [(3, 21), (1, 5), (4, 29)])
def test_image_output_mode_gives_float32_structs_of_the_model_output(spark, pngs, tmp_path,
                                                                     channels, mode):
    model = tim.image_to_image(channels)
    path = tim.save(model, tmp_path / "i2i.keras")
    names = ["wide.png", "tall.png", "square.png"]  # different sizes in one batch
    stage = KerasImageFileTransformer(inputCol="uri", outputCol="img", modelFile=path,
                                      imageLoader=load_native, outputMode="image")
    out = stage.transform(uris(spark, [pngs[n] for n in names] + [None, "/nope/bad.png"]))
    assert out.schema["img"].dataType == imageSchema
    rows = out.collect()
    for name, row in zip(names, rows):
        direct = tim.predict(model, [load_native(pngs[name])])[0]
        img = row.img
        assert (img.origin, img.height, img.width, img.nChannels, img.mode) == (
            pngs[name], direct.shape[0], direct.shape[1], channels, mode)
        pixels = rgbToStructOrder(imageStructToArray(img))  # struct BGR(A) -> RGB(A)
        assert pixels.dtype == np.float32
        assert_close(pixels, direct, 1e-5)
    assert rows[3].img is None and rows[3].error is None
    assert rows[4].img is None and rows[4].error.startswith("imageLoader failed: FileNotFoundError")


def test_safe_mode_refuses_lambda_layers_and_the_opt_in_runs_them(spark, pngs, tmp_path):
    import keras

    path = tim.save(tim.classifier(seed=2, lambda_layer=True), tmp_path / "lambda.keras")
    df = uris(spark, [pngs["square.png"], pngs["wide.png"]])
    stage = KerasImageFileTransformer(inputCol="uri", outputCol="out", modelFile=path,
                                      imageLoader=load16)
    with pytest.raises(ValueError, match="set the stage's safeMode param to False"):
        stage.transform(df)
    rows = stage.setSafeMode(False).transform(df).collect()
    direct = keras.saving.load_model(path, safe_mode=False)
    expected = tim.predict(direct, [load16(r.uri)[0] for r in rows])
    assert_close(vectors(rows), expected, 1e-5)

    # A saved stage carries the opt-in (honoured when the loader opts in too); its carried
    # bytes are refused again with safeMode=True.
    stage.save(str(tmp_path / "stage"))
    os.remove(path)
    loaded = KerasImageFileTransformer.load(str(tmp_path / "stage"), allowUserCode=True)
    assert loaded.getSafeMode() is False
    with pytest.raises(ValueError, match="stage's model holds Python bytecode.*safeMode param"):
        loaded.setSafeMode(True).transform(df)
    assert loaded.setSafeMode(False).transform(df).collect() == rows


def _no_job_started(spark, action):
    sc = spark.sparkContext
    group = f"validation-{id(action)}"
    sc.setJobGroup(group, "validation must not start jobs")
    try:
        with pytest.raises(Exception) as info:
            action()
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    assert sc.statusTracker().getJobIdsForGroup(group) == []
    return info.value


def test_errors_at_transform_time_name_the_param_or_column(spark, pngs, model_file, tmp_path):
    df = uris(spark, [pngs["square.png"]])

    def stage(**kwargs):
        params = dict(inputCol="uri", outputCol="out", modelFile=model_file, imageLoader=load16)
        params.update(kwargs)
        return KerasImageFileTransformer(**params)

    cases = [
        (stage(modelFile=str(tmp_path / "none.keras")), df, FileNotFoundError,
         "modelFile '.*none.keras' does not exist"),
        (stage(modelFile=str(tmp_path)), df, ValueError,
         "is a directory .*SavedModel.*use sparkdl.TFImageTransformer"),
        (stage(modelFile=tim.save(tim.dense_model(), tmp_path / "dense.keras")), df, ValueError,
         "takes inputs of shape batch x 8; .*batch x height x width x channels"),
        (stage(outputMode="image"), df, ValueError,
         "outputMode='image' needs a model output of batch x height x width x channels"),
        (stage(imageLoader=None), df, ValueError, "imageLoader must be set"),
        (stage(), spark.createDataFrame([(1,)], "uri int"), TypeError,
         "inputCol 'uri' must hold image URIs of type string, got int"),
        (stage(inputCol="path"), df, ValueError, "inputCol 'path' is not a column"),
        (stage(outputCol="uri"), df, ValueError, "outputCol 'uri' is already a column"),
        (stage(errorCol="out"), df, ValueError, "outputCol and errorCol must differ"),
    ]
    for transformer, data, error, message in cases:
        raised = _no_job_started(spark, lambda: transformer.transform(data))
        assert isinstance(raised, error), (message, raised)
        assert __import__("re").search(message, str(raised)), (message, str(raised))
    with pytest.raises(ValueError, match="outputMode must be one of \\['vector', 'image'\\]"):
        KerasImageFileTransformer(outputMode="probabilities")
    with pytest.raises(TypeError, match="expected a function"):
        KerasImageFileTransformer(imageLoader="load16")


def test_persistence_alone_and_in_pipeline_model_carries_the_model(spark, pngs, tmp_path):
    path = tim.save(tim.classifier(seed=3), tmp_path / "model.keras")
    df = uris(spark, list(pngs.values()) + [None])
    stage = KerasImageFileTransformer(inputCol="uri", outputCol="out", modelFile=path,
                                      imageLoader=load16, batchSize=3, errorCol="why")
    expected = stage.transform(df).collect()
    stage.save(str(tmp_path / "stage"))
    PipelineModel(stages=[stage]).save(str(tmp_path / "pipeline"))
    os.remove(path)  # the saved stages must carry the model's bytes, not the driver's file

    loaded = KerasImageFileTransformer.load(str(tmp_path / "stage"), allowUserCode=True)
    assert (loaded.getBatchSize(), loaded.getErrorCol(), loaded.getOutputMode()) == (3, "why", "vector")
    assert loaded.getModelFile() == path and loaded.uid == stage.uid
    assert loaded.transform(df).collect() == expected
    spark.conf.set("spark.sparkdl.load.allowUserCode", "true")  # imageLoader is user code
    try:
        pipeline = PipelineModel.load(str(tmp_path / "pipeline"))
    finally:
        spark.conf.unset("spark.sparkdl.load.allowUserCode")
    assert isinstance(pipeline.stages[0], KerasImageFileTransformer)
    assert pipeline.transform(df).collect() == expected

    # Setting a new model file replaces the carried model.
    image_path = tim.save(tim.image_to_image(), tmp_path / "i2i.keras")
    loaded.setParams(modelFile=image_path, imageLoader=load_native, outputMode="image")
    row = loaded.transform(uris(spark, [pngs["tall.png"]])).first()
    assert (row.out.height, row.out.width, row.out.mode) == (29, 19, 21)


@pytest.mark.local_cluster
def test_on_separate_executors(cluster_spark, pngs, tmp_path):
    model = tim.classifier(seed=4)
    path = tim.save(model, tmp_path / "m.keras")
    paths = list(pngs.values()) * 3 + [None, str(tmp_path / "bad.png")]
    df = uris(cluster_spark, paths).repartition(2)
    stage = KerasImageFileTransformer(inputCol="uri", outputCol="out", modelFile=path,
                                      imageLoader=load16, batchSize=4)
    rows = {}
    for r in stage.transform(df).collect():
        rows.setdefault(r.uri, r)
    good = list(pngs.values())
    expected = tim.predict(model, [load16(p)[0] for p in good])
    assert_close(np.stack([rows[p].out.toArray() for p in good]), expected, 1e-5)
    assert rows[None].out is None and "refuses files named bad" in rows[paths[-1]].error


def test_importing_the_stage_and_udf_modules_does_not_import_tensorflow():
    import subprocess

    code = ("import sys, sparkdl\n"
            "sparkdl.KerasImageFileTransformer, sparkdl.registerKerasImageUDF\n"
            "import sparkdl.engine.image_file_udf\n"
            "heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert done.returncode == 0, done.stderr
