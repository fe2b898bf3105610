"""registerKerasImageUDF: a Keras image model as a SQL function, against the model applied
directly to the same decoded (+ resized, or user-preprocessed) pixels."""
import os
import sys

import numpy as np
import pytest
from PIL import Image
from pyspark.sql import Row
from pyspark.sql import functions as F

import fixtures
import tiny_image_models as tim
from sparkdl import readImages, registerKerasImageUDF
from sparkdl.image.imageIO import (imageArrayToStruct, imageSchema, imageStructToArray,
                                   invalidImageStruct, rgbToStructOrder)

# Executors cannot import this test module: ship its functions by value, as for a notebook.
from pyspark import cloudpickle  # noqa: E402
from numerics import assert_close

cloudpickle.register_pickle_by_value(sys.modules[__name__])

SIZE = tim.SIZE


def struct_rgb(image):
    """What the UDF sees: the struct's pixels as RGB (gray repeated, alpha dropped)."""
    rgb = rgbToStructOrder(imageStructToArray(image))[:, :, :3]
    return np.repeat(rgb, 3, axis=2) if rgb.shape[2] == 1 else np.ascontiguousarray(rgb)


def resized(image):
    """The default path: RGB resized (bilinear) to the model's 16 x 16, float32 0-255."""
    img = Image.fromarray(struct_rgb(image)).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    return np.asarray(img, np.float32)


def crop_scale(rgb):
    """A user preprocessor: the top-left 16 x 16 crop scaled to [-1, 1] (1 x H x W x C)."""
    return (rgb[np.newaxis, :SIZE, :SIZE].astype(np.float32) / 127.5) - 1.0


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    return tim.write_pngs(tmp_path_factory.mktemp("keras-image-udf-pngs"))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("keras-image-udf-models")
    a, b = tim.classifier(seed=5), tim.classifier(seed=6)
    return {"a": (a, tim.save(a, d / "a.keras")), "b": (b, tim.save(b, d / "b.keras"))}


@pytest.fixture
def images(spark, pngs):
    """The PNGs read by readImages, plus an invalid and a null image, as view ``images``."""
    df = readImages(sorted(pngs.values())).select("image")
    extra = spark.createDataFrame([Row(image=invalidImageStruct("file:/bad.png")), Row(image=None)],
                                  f"image {imageSchema.simpleString()}")
    df = df.union(extra)
    df.createOrReplaceTempView("images")
    return df


def by_origin(rows, col="p"):
    return {r.origin: getattr(r, col) for r in rows}


def expected_for(model, images, prepare=resized):
    valid = [i for i in images if i is not None and i.height > 0]
    return dict(zip([i.origin for i in valid],
                    tim.predict(model, [prepare(i) for i in valid])))


def test_sql_where_and_nulls_equal_keras_direct(spark, images, models):
    model, path = models["a"]
    registerKerasImageUDF("kimg_where", path, batchSize=2)
    structs = [r.image for r in images.collect()]
    expected = expected_for(model, structs)
    rows = spark.sql("SELECT image.origin AS origin, kimg_where(image) AS p FROM images "
                     "WHERE image.width > 20 OR image IS NULL").collect()
    got = by_origin(rows)
    assert set(got) == {None} | {i.origin for i in structs if i is not None and i.width > 20}
    assert got[None] is None
    for origin in set(got) - {None}:
        assert_close(got[origin], expected[origin], 1e-5)
    invalid = spark.sql("SELECT kimg_where(image) AS p FROM images WHERE image.height = -1").collect()
    assert [r.p for r in invalid] == [None]
    assert spark.sql("SELECT kimg_where(image) AS p FROM images").schema["p"].dataType.simpleString() \
        == "array<float>"


def test_join_and_dataframe_api(spark, images, models):
    model, path = models["a"]
    udf = registerKerasImageUDF("kimg_join", path)
    structs = [r.image for r in images.collect() if r.image is not None]
    expected = expected_for(model, structs)
    labels = spark.createDataFrame([(os.path.basename(i.origin), i.origin, n)
                                    for n, i in enumerate(structs)], "name string, origin string, n int")
    labels.createOrReplaceTempView("labels")
    rows = spark.sql("SELECT l.name, l.origin, kimg_join(i.image) AS p FROM images i "
                     "JOIN labels l ON i.image.origin = l.origin WHERE l.name LIKE '%.png'").collect()
    assert len(rows) == len(structs) == len(expected) + 1
    for r in rows:
        if r.origin == "file:/bad.png":  # the invalid image
            assert r.p is None
        else:
            assert_close(r.p, expected[r.origin], 1e-5)
    via_api = images.select(F.col("image.origin").alias("origin"), udf("image").alias("p"))
    via_expr = images.select(F.col("image.origin").alias("origin"), F.expr("kimg_join(image) AS p"))
    assert by_origin(via_api.collect()) == by_origin(via_expr.collect())
    api, joined = by_origin(via_api.collect()), by_origin(rows)
    assert api.pop(None) is None and set(api) == set(joined)
    # The join feeds the model other batches than the plain select: equal within float noise.
    for origin, p in joined.items():
        assert (p is None) == (api[origin] is None), origin
        if p is not None:
            assert_close(api[origin], p, 1e-5)


def test_registering_a_name_again_replaces_the_function(spark, images, models):
    structs = [r.image for r in images.collect()]
    query = "SELECT image.origin AS origin, kimg_again(image) AS p FROM images WHERE image.height > 0"
    for name in ["a", "b", "a"]:
        model, path = models[name]
        registerKerasImageUDF("kimg_again", path)
        got = by_origin(spark.sql(query).collect())
        expected = expected_for(model, structs)
        assert set(got) == set(expected)
        for origin, p in got.items():
            assert_close(p, expected[origin], 1e-5)


def test_preprocessor_replaces_resizing_and_in_memory_models_work(spark, images):
    model = tim.classifier(seed=7)
    registerKerasImageUDF("kimg_prep", model, preprocessor=crop_scale, batchSize=3)
    structs = [r.image for r in images.collect()]
    expected = expected_for(model, structs, prepare=lambda i: crop_scale(struct_rgb(i))[0])
    got = by_origin(spark.sql("SELECT image.origin AS origin, kimg_prep(image) AS p FROM images")
                    .collect())
    assert got[None] is None and got["file:/bad.png"] is None
    for origin, p in expected.items():
        assert_close(got[origin], p, 1e-5)

    # Float images reach the preprocessor as float32 RGB.
    floats = fixtures.rgb_array(15, 20, 18).astype(np.float32)
    df = spark.createDataFrame([Row(image=imageArrayToStruct(floats[:, :, ::-1], "f"))],
                               f"image {imageSchema.simpleString()}")
    registerKerasImageUDF("kimg_float", model, preprocessor=lambda rgb: rgb[:SIZE, :SIZE] * 0.5)
    got = df.selectExpr("kimg_float(image) AS p").first().p
    assert_close(got, tim.predict(model, [floats[:SIZE, :SIZE] * 0.5])[0], 1e-5)

    # A fully convolutional model takes each preprocessed image at its own size.
    i2i = tim.image_to_image(channels=2)
    registerKerasImageUDF("kimg_full", i2i, preprocessor=lambda rgb: rgb / 255.0)
    got = by_origin(spark.sql("SELECT image.origin AS origin, kimg_full(image) AS p FROM images "
                              "WHERE image.height > 0").collect())
    for image in structs:
        if image is not None and image.height > 0:
            direct = tim.predict(i2i, [struct_rgb(image) / 255.0])[0]
            assert_close(got[image.origin], direct.ravel(), 1e-5)


def test_a_failing_preprocessor_gives_null_rows_not_a_failed_query(spark, images, models):
    model = models["a"][0]

    def refuse(rgb):
        if rgb.shape[1] > 20:  # wide images only: registration checks it on a blank 16 x 16
            raise RuntimeError("no thanks")
        return rgb[:SIZE, :SIZE]

    registerKerasImageUDF("kimg_refuse", models["a"][1], preprocessor=refuse)
    got = by_origin(spark.sql("SELECT image.origin AS origin, kimg_refuse(image) AS p "
                              "FROM images").collect())
    structs = [r.image for r in images.collect() if r.image is not None and r.image.height > 0]
    wide = [i for i in structs if i.width > 20]
    narrow = [i for i in structs if i.width <= 20]
    assert wide and narrow
    assert all(got[i.origin] is None for i in wide)
    expected = expected_for(model, narrow, prepare=lambda i: struct_rgb(i)[:SIZE, :SIZE])
    for origin, p in expected.items():
        assert_close(got[origin], p, 1e-5)

    registerKerasImageUDF("kimg_shape", models["a"][1], preprocessor=lambda rgb: rgb)
    got = spark.sql("SELECT kimg_shape(image) AS p FROM images WHERE image.width > 20").collect()
    assert got and all(r.p is None for r in got)


def test_safe_mode_refusal_and_opt_in(spark, images, tmp_path):
    import keras

    model = tim.classifier(seed=8, lambda_layer=True)
    path = tim.save(model, tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match="modelFile '.*lambda.keras' holds Python bytecode.*"
                                         "registerKerasImageUDF\\(..., safeMode=False\\)"):
        registerKerasImageUDF("kimg_lambda", path)
    with pytest.raises(ValueError, match="registerKerasImageUDF\\(..., safeMode=False\\)"):
        registerKerasImageUDF("kimg_lambda", model)
    registerKerasImageUDF("kimg_lambda", path, safeMode=False)
    structs = [r.image for r in images.collect()]
    expected = expected_for(keras.saving.load_model(path, safe_mode=False), structs)
    got = by_origin(spark.sql("SELECT image.origin AS origin, kimg_lambda(image) AS p FROM images "
                              "WHERE image.height > 0").collect())
    for origin, p in expected.items():
        assert_close(got[origin], p, 1e-5)


def test_bad_arguments_are_refused_at_registration(spark, tmp_path, models):
    with pytest.raises(FileNotFoundError, match="modelFile '.*nope.keras' does not exist"):
        registerKerasImageUDF("k", str(tmp_path / "nope.keras"))
    with pytest.raises(ValueError, match="is a directory .*use sparkdl.TFImageTransformer"):
        registerKerasImageUDF("k", str(tmp_path))
    with pytest.raises(ValueError, match="batch x any x any x 3; without a preprocessor"):
        registerKerasImageUDF("k", tim.image_to_image())
    with pytest.raises(ValueError, match="takes inputs of shape batch x 8"):
        registerKerasImageUDF("k", tim.dense_model(), preprocessor=crop_scale)
    with pytest.raises(TypeError, match="preprocessor: expected a function"):
        registerKerasImageUDF("k", models["a"][1], preprocessor="crop")
    with pytest.raises(ValueError, match="batchSize: expected a positive integer"):
        registerKerasImageUDF("k", models["a"][1], batchSize=0)
    with pytest.raises(TypeError, match="kerasModelOrFile must be a keras.Model or the path"):
        registerKerasImageUDF("k", 42)


@pytest.mark.local_cluster
def test_sql_on_separate_executors(cluster_spark, pngs, models):
    model, path = models["b"]
    df = readImages(sorted(pngs.values()), numPartitions=2)
    df.createOrReplaceTempView("cluster_images")
    registerKerasImageUDF("kimg_cluster", path, preprocessor=crop_scale)
    registerKerasImageUDF("kimg_cluster_resize", path)
    rows = cluster_spark.sql("SELECT image, kimg_cluster(image) AS p, kimg_cluster_resize(image) AS q "
                             "FROM cluster_images").collect()
    assert len(rows) == len(pngs)
    images = [r.image for r in rows]
    assert_close([r.p for r in rows],
                 tim.predict(model, [crop_scale(struct_rgb(i))[0] for i in images]), 1e-5)
    assert_close([r.q for r in rows], tim.predict(model, [resized(i) for i in images]), 1e-5)
