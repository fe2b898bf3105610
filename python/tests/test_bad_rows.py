"""Bad rows, all in one matrix: each kind of bad row (malformed struct, invalid struct,
unreadable URI, unknown scheme, zero-byte or undecodable file, a user function that raises
or returns the wrong shape, a numeric row of the wrong length, null), fed to every stage and
SQL function that can receive it, gives a null output and its reason (the one wording of
``sparkdl.utils.rows``) in the stage's error column, or a null for SQL functions, never a
failed task; the good rows equal Keras run directly on the same inputs."""
import io
import sys

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from pyspark.sql import Row

import fixtures
import keras_models as km
import tiny_image_models as tim
from sparkdl import (DeepImageFeaturizer, DeepImagePredictor, ImageLoader,
                     KerasImageFileTransformer, KerasTransformer, readImages,
                     registerKerasImageUDF, registerKerasUDF)
from sparkdl.engine import codec
from sparkdl.image import arrow
from sparkdl.image.imageIO import (createResizeImageUDF, imageArrayToStruct, imageSchema,
                                   invalidImageStruct)
from sparkdl.models.registry import buildModel, getModelEntry
from sparkdl.utils.rows import RowError, RowErrors, reasonOf

# Executors cannot import this test module: ship its functions by value, as for a notebook.
from pyspark import cloudpickle  # noqa: E402
from numerics import assert_close

cloudpickle.register_pickle_by_value(sys.modules[__name__])
SIZE = tim.SIZE

MALFORMED = ("malformed image struct: data has 10 bytes, height x width x nChannels = "
             "4 x 4 x 3 needs 48")
INVALID = "invalid image (height -1, width -1)"
NOT_AN_IMAGE = "cannot identify image file: not a format Pillow decodes"


def malformed_struct(origin="file:/malformed.png"):
    """A 4 x 4 CV_8UC3 struct whose data holds 10 bytes instead of 48."""
    return Row(origin=origin, height=4, width=4, nChannels=3, mode=16, data=bytearray(10))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A good RGB PNG, a zero-byte one, an undecodable one and a missing one."""
    d = tmp_path_factory.mktemp("bad-rows")
    paths = {name: str(d / name) for name in ("good.png", "empty.png", "broken.png",
                                              "missing.png")}
    Image.fromarray(fixtures.rgb_array(3, 23, 29)).save(paths["good.png"])
    open(paths["empty.png"], "wb").close()
    with open(paths["broken.png"], "wb") as f:
        f.write(b"not an image")
    return paths


def uri_rows(files):
    """``[(uri, reason when sparkdl reads and decodes it)]``: each kind of bad URI."""
    missing = files["missing.png"]
    return [(files["good.png"], None),
            (missing, f"cannot read file: [Errno 2] No such file or directory: '{missing}'"),
            ("nosuch://x", "cannot read file: no filesystem for scheme nosuch: nosuch://x"),
            (files["empty.png"], "empty file"),
            (files["broken.png"], NOT_AN_IMAGE),
            (None, None)]


def assert_reasons(got, expected):
    """Exact reasons; one from pyarrow's file systems is checked up to pyarrow's own words."""
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        if e is not None and "no filesystem" in e:
            assert g is not None and g.startswith(e + " ("), g
        else:
            assert g == e


def good_rgb(files):
    return np.asarray(Image.open(files["good.png"]).convert("RGB"))


# -- the one decision ------------------------------------------------------------------------

def test_row_errors_words_row_failures_and_lets_job_failures_through():
    errors = RowErrors(5)
    with errors.attempt(0, "imageLoader"):
        raise ValueError("no such\nimage")
    with errors.attempt(1, "read"):
        raise FileNotFoundError(2, "No such file or directory", "/x.png")
    with errors.attempt(2, "preprocessor of 'f'"):
        raise RowError("preprocessor of 'f' returned shape 3 x 3; the model takes 16 x 16 x 3")
    with errors.attempt(3, "read"):
        pass
    errors.fail(4, "empty file")
    assert errors.reasons == [
        "imageLoader failed: ValueError: no such image",
        "cannot read file: [Errno 2] No such file or directory: '/x.png'",
        "preprocessor of 'f' returned shape 3 x 3; the model takes 16 x 16 x 3",
        None, "empty file"]
    assert errors.toArrow().equals(pa.array(errors.reasons, pa.string()))
    # Not a row's failure: out of memory, an interrupt, a worker told to exit.
    for fatal in (MemoryError(), KeyboardInterrupt(), SystemExit(1)):
        with pytest.raises(type(fatal)):
            with errors.attempt(3, "imageLoader"):
                raise fatal
    assert errors.reasons[3] is None
    assert reasonOf(OSError("boom"), "decode") == "cannot read file: boom"


# -- the matrix on one chunk, without Spark: each kind of bad row x each batch function ---------

def _struct_chunk(image):
    return pa.array([image], arrow.IMAGE_ARROW_TYPE)


URI_KINDS = ["good", "missing", "scheme", "empty", "broken", "null"]


@pytest.mark.parametrize("kind", URI_KINDS)
@pytest.mark.parametrize("reader", ["fileImages", "loadBatch"])
def test_each_bad_uri_in_each_reader(files, kind, reader):
    uri, reason = dict(zip(URI_KINDS, uri_rows(files)))[kind]
    uris = pa.array([uri], pa.string())
    if reader == "fileImages":
        errors = RowErrors(1)
        images = codec.fileImages(uris, errors)
        assert (images[0] is None) == (kind != "good")
        assert_reasons(errors.reasons, [reason])
    else:
        images, errors = arrow.loadBatch(uris)
        assert_reasons(errors.to_pylist(), [reason])
        assert images.is_null().to_pylist() == [kind == "null"]


@pytest.mark.parametrize("kind,content,reason", [
    ("empty", b"", "empty file"), ("broken", b"not an image", NOT_AN_IMAGE),
    ("null", None, None)])
@pytest.mark.parametrize("reader", ["fileImages", "decodeBatch"])
def test_each_bad_file_content_in_each_decoder(kind, content, reason, reader):
    contents = pa.array([content], pa.binary())
    if reader == "fileImages":
        errors = RowErrors(1)
        assert codec.fileImages(contents, errors) == [None]
        assert errors.reasons == [reason]
    else:
        images, errors = arrow.decodeBatch(pa.array(["file:/x"], pa.string()), contents)
        assert errors.to_pylist() == [reason]


@pytest.mark.parametrize("kind,image,reason", [
    ("malformed", malformed_struct(), MALFORMED),
    ("float malformed", Row(origin="f", height=2, width=2, nChannels=1, mode=5,
                            data=bytearray(4)),
     "malformed image struct: data has 4 bytes, height x width x nChannels = 2 x 2 x 1 x 4 "
     "bytes needs 16"),
    ("unknown mode", Row(origin="m", height=1, width=1, nChannels=3, mode=99, data=bytearray(3)),
     "malformed image struct: unsupported image mode 99; supported: CV_8UC1=0, CV_32FC1=5, "
     "CV_8UC3=16, CV_32FC3=21, CV_8UC4=24, CV_32FC4=29"),
    ("invalid", invalidImageStruct("file:/invalid.png"), INVALID),
    ("null", None, None)])
def test_each_bad_struct_in_the_codec(kind, image, reason):
    errors = RowErrors(1)
    assert codec.structPixels(_struct_chunk(image and image.asDict()), errors) == [None]
    assert errors.reasons == [reason]
    tensor, rows = codec.imagesToTensor(_struct_chunk(image and image.asDict()), (4, 4))
    assert tensor.shape == (0, 4, 4, 3) and len(rows) == 0


# -- image structs, URIs and bytes into the named-model stages -------------------------------

def keras_direct(rgbs, include_top=False):
    """MobileNetV3Small (weights=None, seeded as the stages do) on RGB arrays resized with
    Pillow's box filter (the stages' default scaleHint), its own preprocess_input."""
    import keras

    entry = getModelEntry("MobileNetV3Small")
    height, width = entry.inputSize
    batch = np.stack([np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BOX),
                                 np.float32) for rgb in rgbs])
    keras.utils.set_random_seed(0)
    model = buildModel(entry, weights=None, include_top=include_top,
                       pooling=None if include_top else "avg")
    return np.asarray(model.predict_on_batch(entry.resolvePreprocess()(batch))).reshape(len(rgbs), -1)


def named_image_inputs(spark, files):
    """One DataFrame: image structs, URIs and file bytes, each with its bad rows."""
    rgb = good_rgb(files)
    structs = [(imageArrayToStruct(np.ascontiguousarray(rgb[:, :, ::-1]), "file:/good.png"), None),
               (malformed_struct(), MALFORMED),
               (invalidImageStruct("file:/invalid.png"), INVALID),
               (None, None)]
    uris = uri_rows(files)
    with open(files["good.png"], "rb") as f:
        content = [(bytearray(f.read()), None), (bytearray(), "empty file"),
                   (bytearray(b"not an image"), NOT_AN_IMAGE), (None, None)]
    n = max(len(structs), len(uris), len(content))
    pad = lambda rows: rows + [(None, None)] * (n - len(rows))  # noqa: E731
    rows = [(i, s, u, c) for i, ((s, _), (u, _), (c, _))
            in enumerate(zip(pad(structs), pad(uris), pad(content)))]
    df = spark.createDataFrame(rows, f"id int, image {imageSchema.simpleString()}, uri string, "
                                     "content binary")
    reasons = {"image": [r for _, r in pad(structs)], "uri": [r for _, r in pad(uris)],
               "content": [r for _, r in pad(content)]}
    return df.coalesce(1), reasons, rgb


def test_featurizer_and_predictor_give_null_and_the_reason_for_every_bad_input(spark, files):
    df, reasons, rgb = named_image_inputs(spark, files)
    out = df
    for col in ("image", "uri", "content"):
        out = DeepImageFeaturizer(inputCol=col, outputCol=f"f_{col}", errorCol=f"why_{col}",
                                  modelName="MobileNetV3Small", weights=None,
                                  batchSize=3).transform(out)
    out = DeepImagePredictor(inputCol="uri", outputCol="p_uri", errorCol="pwhy_uri",
                             modelName="MobileNetV3Small", weights=None).transform(out)
    rows = sorted(out.collect(), key=lambda r: r.id)
    features = keras_direct([rgb])[0]
    for col in ("image", "uri", "content"):
        assert_reasons([getattr(r, f"why_{col}") for r in rows], reasons[col])
        got = [getattr(r, f"f_{col}") for r in rows]
        assert [g is None for g in got] == [k != 0 for k in range(len(rows))], col
        assert_close(got[0].toArray(), features, 1e-4)
    assert_reasons([r.pwhy_uri for r in rows], reasons["uri"])
    assert [r.p_uri is None for r in rows] == [k != 0 for k in range(len(rows))]
    assert_close(rows[0].p_uri.toArray(), keras_direct([rgb], True)[0], 1e-5)


def test_error_col_is_optional_persisted_and_keeps_read_images_chained(spark, files, tmp_path):
    featurizer = DeepImageFeaturizer(inputCol="image", outputCol="f", modelName="MobileNetV3Small",
                                     weights=None)
    images = readImages(files["good.png"])
    # Unset (the default): the output columns are 1.x's.
    assert featurizer.transform(images).columns == ["image", "error", "f"]
    assert not featurizer.isSet(featurizer.errorCol)
    featurizer.setErrorCol("why")
    featurizer.write().overwrite().save(str(tmp_path / "featurizer"))
    loaded = DeepImageFeaturizer.load(str(tmp_path / "featurizer"))
    assert loaded.getErrorCol() == "why"
    chained = loaded.transform(images).select("f", "why")
    plan = chained._jdf.queryExecution().executedPlan().toString()
    assert plan.count("ArrowEvalPython") == 1 and "predictImages(decodeImages(" in plan, plan
    # An existing error column (readImages') is appended to.
    appended = DeepImageFeaturizer(inputCol="image", outputCol="f", errorCol="error",
                                   modelName="MobileNetV3Small", weights=None)
    assert appended.transform(images).columns == ["image", "error", "f"]


# -- user code per image: KerasImageFileTransformer, registerKerasImageUDF --------------------

def load16(uri):
    """A user loader reading through sparkdl's file reader; 'shape' in the URI -> the wrong
    shape, 'flat' -> a 1-D array, 'refuse' -> raises."""
    from sparkdl.utils.fs import readBytes

    if "refuse" in uri:
        raise RuntimeError(f"this loader refuses {uri}")
    if "shape" in uri:
        return np.zeros((8, 8, 3), np.float32)
    if "flat" in uri:
        return np.zeros(768, np.float32)
    img = Image.open(io.BytesIO(readBytes(uri))).convert("RGB").resize((SIZE, SIZE))
    return np.asarray(img, np.float32) / 255.0


def test_keras_image_file_transformer_gives_null_and_the_reason(spark, files, tmp_path):
    model = tim.classifier(seed=3)
    path = tim.save(model, tmp_path / "m.keras")
    missing = files["missing.png"]
    cases = [(files["good.png"], None),
             (missing, "imageLoader failed: FileNotFoundError: [Errno 2] No such file or "
                       f"directory: '{missing}'"),
             ("nosuch://x", "imageLoader failed: OSError: no filesystem for scheme nosuch: "
                            "nosuch://x"),
             (files["empty.png"], "imageLoader failed: UnidentifiedImageError: cannot identify "
                                  "image file"),
             ("file:///refuse.png", "imageLoader failed: RuntimeError: this loader refuses "
                                    "file:///refuse.png"),
             ("file:///shape.png", "imageLoader returned shape 8 x 8 x 3; the model takes "
                                   "16 x 16 x 3"),
             ("file:///flat.png", "imageLoader returned an array of shape (768,); expected "
                                  "H x W x C or 1 x H x W x C"),
             (None, None)]
    df = spark.createDataFrame([(i, u) for i, (u, _) in enumerate(cases)], "id int, uri string")
    stage = KerasImageFileTransformer(inputCol="uri", outputCol="out", modelFile=path,
                                      imageLoader=load16, batchSize=3)
    rows = sorted(stage.transform(df.coalesce(1)).collect(), key=lambda r: r.id)
    for row, (_, reason) in zip(rows, cases):
        if reason is not None and reason.startswith(("imageLoader failed: OSError",
                                                     "imageLoader failed: Unidentified")):
            assert row.error.startswith(reason), row.error
        else:
            assert row.error == reason
    assert [r.out is None for r in rows] == [k != 0 for k in range(len(rows))]
    assert_close(rows[0].out.toArray(), tim.predict(model, [load16(files["good.png"])])[0], 1e-5)


def prep(rgb):
    """A user preprocessor: refuses 21-wide images, returns the image as is for 22-wide ones
    (the wrong shape), else the top-left 16 x 16 crop."""
    if rgb.shape[1] == 21:
        raise RuntimeError("no thanks")
    if rgb.shape[1] == 22:
        return rgb
    return rgb[:SIZE, :SIZE].astype(np.float32) / 255.0


def test_sql_image_functions_give_null_for_every_bad_row(spark, files):
    model = tim.classifier(seed=4)
    rgb = good_rgb(files)
    struct = lambda a, o: imageArrayToStruct(np.ascontiguousarray(a[:, :, ::-1]), o)  # noqa: E731
    images = [struct(rgb, "file:/good.png"), malformed_struct(),
              invalidImageStruct("file:/invalid.png"),
              struct(fixtures.rgb_array(5, 20, 21), "file:/refused.png"),
              struct(fixtures.rgb_array(6, 20, 22), "file:/wrong-shape.png"), None]
    uris = [u for u, _ in uri_rows(files)]
    df = spark.createDataFrame([(i, images[i], uris[i] if i < len(uris) else None)
                                for i in range(len(images))],
                               f"id int, image {imageSchema.simpleString()}, uri string")
    df.coalesce(1).createOrReplaceTempView("bad_rows_images")
    registerKerasImageUDF("bad_rows_resize", model, batchSize=2)
    registerKerasImageUDF("bad_rows_prep", model, preprocessor=prep, batchSize=2)
    rows = sorted(spark.sql("SELECT id, bad_rows_resize(image) AS r, bad_rows_resize(uri) AS u, "
                            "bad_rows_prep(image) AS p FROM bad_rows_images").collect(),
                  key=lambda r: r.id)
    resized = np.asarray(Image.fromarray(rgb).resize((SIZE, SIZE), Image.Resampling.BILINEAR),
                         np.float32)
    # Resized, the structs that the preprocessor refuses are good images.
    assert [r.r is None for r in rows] == [False, True, True, False, False, True]
    assert [r.u is None for r in rows] == [k != 0 for k in range(len(rows))]
    for got in (rows[0].r, rows[0].u):
        assert_close(got, tim.predict(model, [resized])[0], 1e-4)
    assert [r.p is None for r in rows] == [k != 0 for k in range(len(rows))]
    assert_close(rows[0].p, tim.predict(model, [prep(rgb)])[0], 1e-5)

    # The 1.x resize UDF: a malformed struct is null; invalid and null ones are kept as they are.
    resized = sorted(df.select("id", createResizeImageUDF((8, 8))("image").alias("r")).collect(),
                     key=lambda r: r.id)
    assert [r.r is None for r in resized] == [False, True, False, False, False, True]
    assert resized[0].r.height == 8 and resized[2].r.height == -1


# -- reading images: readImages, ImageLoader -------------------------------------------------

def test_image_loader_and_read_images_give_invalid_rows_with_the_reason(spark, files):
    df = spark.createDataFrame([(i, u) for i, (u, _) in enumerate(uri_rows(files))],
                               "id int, uri string")
    rows = sorted(ImageLoader(inputCol="uri", outputCol="img").transform(df.coalesce(1))
                  .collect(), key=lambda r: r.id)
    assert_reasons([r.error for r in rows], [r for _, r in uri_rows(files)])
    bgr = good_rgb(files)[:, :, ::-1]
    assert bytes(rows[0].img.data) == bgr.tobytes()
    assert [r.img.height for r in rows[1:-1]] == [-1] * 4 and rows[-1].img is None

    cases = [(files["good.png"], None),
             ("file:///refuse.png", "imageLoader failed: RuntimeError: this loader refuses "
                                    "file:///refuse.png"),
             ("file:///ints.png", "imageLoader returned an array of int64; expected uint8 or "
                                  "float32")]
    df = spark.createDataFrame([(i, u) for i, (u, _) in enumerate(cases)], "id int, uri string")
    rows = sorted(ImageLoader(inputCol="uri", outputCol="img", imageLoader=prep_loader)
                  .transform(df.coalesce(1)).collect(), key=lambda r: r.id)
    assert [r.error for r in rows] == [r for _, r in cases]
    assert bytes(rows[0].img.data) == bgr.tobytes()

    read = {r.image.origin.rsplit("/", 1)[1]: r.error for r in readImages(
        [files["good.png"], files["empty.png"], files["broken.png"]]).collect()}
    assert read == {"good.png": None, "empty.png": "empty file", "broken.png": NOT_AN_IMAGE}


def prep_loader(uri):
    if "refuse" in uri:
        raise RuntimeError(f"this loader refuses {uri}")
    if "ints" in uri:
        return np.zeros((4, 4, 3), np.int64)
    return np.asarray(Image.open(uri).convert("RGB"))


# -- numbers: KerasTransformer, registerKerasUDF ---------------------------------------------

def test_numeric_rows_of_the_wrong_length_or_null_give_null(spark, tmp_path):
    model = km.dense_model((8,))
    path = km.save(model, tmp_path, "dense8")
    x = km.tensors((8,), count=3)
    rows = [(i, r.tolist()) for i, r in enumerate(x)] + [(3, [1.0] * 7), (4, None),
                                                         (5, [1.0] * 7 + [None])]
    df = spark.createDataFrame(rows, "id int, x array<double>").coalesce(1)
    df.createOrReplaceTempView("bad_rows_numbers")
    registerKerasUDF("bad_rows_dense", path)
    out = KerasTransformer(inputCol="x", outputCol="y", modelFile=path).transform(df)
    got = sorted(out.selectExpr("id", "y", "bad_rows_dense(x) AS s").collect(), key=lambda r: r.id)
    expected = km.predict(model, x)
    for col in ("y", "s"):
        values = [getattr(r, col) for r in got]
        assert [v is None for v in values] == [False] * 3 + [True] * 3, col
        assert_close(np.array([list(v) for v in values[:3]]), expected, 1e-5)
