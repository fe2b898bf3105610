"""ImageLoader: URIs -> image structs, with the default decoder or a user function."""
import sys

import numpy as np
import pytest
from conftest import origin_name, struct_rgb
from PIL import Image
from pyspark.ml import Pipeline, PipelineModel

import fixtures
from sparkdl import ImageLoader, readImages
from sparkdl.image.imageIO import imageSchema

# Executors cannot import this test module: ship its functions by value, as for a notebook.
from pyspark import cloudpickle  # noqa: E402

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def uris(spark, paths):
    return spark.createDataFrame([(p,) for p in paths], "uri string")


def test_default_loader_matches_read_images(spark, png_dir, tmp_path):
    expected = {origin_name(r.image.origin): r.image for r in readImages(png_dir).collect()}
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    paths = [f"{png_dir}/{name}" for name in expected] + [f"file://{png_dir}/chelsea.png", str(empty), None]
    out = ImageLoader(inputCol="uri", outputCol="img").transform(uris(spark, paths))
    assert out.schema["img"].dataType == imageSchema and out.columns == ["uri", "img", "error"]
    rows = out.collect()
    for row in rows[: len(expected)]:
        want = expected[origin_name(row.uri)]
        assert row.error is None and row.img.origin == row.uri
        assert (row.img.height, row.img.width, row.img.mode) == (want.height, want.width, want.mode)
        assert bytes(row.img.data) == bytes(want.data)
    assert bytes(rows[len(expected)].img.data) == bytes(expected["chelsea.png"].data)
    assert rows[-2].img.height == -1 and rows[-2].error == "empty file"
    assert rows[-1].img is None and rows[-1].error is None


def test_missing_file_is_an_invalid_row(spark, tmp_path):
    row = ImageLoader(inputCol="uri", outputCol="img").transform(
        uris(spark, [str(tmp_path / "nope.png")])).first()
    assert row.img.height == -1 and "cannot read file" in row.error and "nope.png" in row.error


def test_target_size_is_height_width(spark, png_dir):
    loader = ImageLoader(inputCol="uri", outputCol="img", targetSize=[20, 31], resizeMethod="bicubic")
    row = loader.transform(uris(spark, [f"{png_dir}/RGB.png"])).first()
    assert (row.img.height, row.img.width, row.img.nChannels) == (20, 31, 3)
    expected = np.asarray(Image.fromarray(fixtures.rgb_array()).resize((31, 20), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(struct_rgb(row.img), expected)


def _user_loader(uri):
    """RGB float32 array; raises on purpose for one file."""
    if uri.endswith("bad"):
        raise RuntimeError("this loader refuses files named bad")
    return np.asarray(Image.open(uri).convert("RGB"), np.float32)[np.newaxis] / 255.0


def test_user_loader_rgb_is_stored_as_bgr_and_errors_are_kept(spark, png_dir):
    loader = ImageLoader(inputCol="uri", outputCol="img", imageLoader=_user_loader)
    rows = loader.transform(uris(spark, [f"{png_dir}/RGB.png", "/x/bad"])).collect()
    good, bad = rows
    assert (good.img.nChannels, good.img.mode) == (3, 21)  # CV_32FC3
    np.testing.assert_allclose(struct_rgb(good.img), fixtures.rgb_array() / 255.0, rtol=1e-6)
    assert bad.img.height == -1 and bad.img.origin == "/x/bad"
    assert bad.error == "imageLoader failed: RuntimeError: this loader refuses files named bad"


def test_input_column_is_validated(spark):
    df = spark.createDataFrame([(1,)], "n int")
    with pytest.raises(TypeError, match="inputCol 'n' must hold image URIs of type string, got int"):
        ImageLoader(inputCol="n", outputCol="img").transform(df)
    with pytest.raises(ValueError, match="inputCol 'missing'"):
        ImageLoader(inputCol="missing", outputCol="img").transform(df)


def test_params_are_validated_when_set():
    with pytest.raises(ValueError, match="resize method"):
        ImageLoader(resizeMethod="cubic-ish")
    with pytest.raises((TypeError, ValueError)):
        ImageLoader(targetSize=[0, 3])
    with pytest.raises(TypeError, match="function"):
        ImageLoader(imageLoader="not a function")


def test_persistence_alone_and_in_pipeline(spark, png_dir, tmp_path):
    paths = uris(spark, [f"{png_dir}/RGB.png", "/x/bad"])
    loader = ImageLoader(inputCol="uri", outputCol="img", imageLoader=_user_loader, targetSize=[8, 9])
    expected = loader.transform(paths).collect()
    loader.write().overwrite().save(str(tmp_path / "loader"))
    loaded = ImageLoader.load(str(tmp_path / "loader"), allowUserCode=True)
    assert loaded.uid == loader.uid and loaded.getTargetSize() == [8, 9]
    assert loaded.transform(paths).collect() == expected
    model = Pipeline(stages=[ImageLoader(inputCol="uri", outputCol="img", targetSize=[5, 7])]).fit(paths)
    model.save(str(tmp_path / "pipeline"))
    reloaded = PipelineModel.load(str(tmp_path / "pipeline"))
    assert reloaded.transform(paths).collect() == model.transform(paths).collect()
    assert reloaded.stages[0].getResizeMethod() == "bilinear"


@pytest.mark.local_cluster
def test_image_loader_on_separate_executors(cluster_spark, png_dir):
    paths = [f"{png_dir}/{n}.png" for n in ["RGB", "RGBA", "L", "chelsea"]]
    df = cluster_spark.createDataFrame([(p,) for p in paths], "uri string").repartition(2)
    rows = ImageLoader(inputCol="uri", outputCol="img", imageLoader=_user_loader).transform(df).collect()
    assert all(r.error is None and r.img.nChannels == 3 for r in rows)


def test_s3_and_s3a_uris_are_read_from_a_real_s3_server(spark, png_dir):
    from s3_server import s3_server

    with s3_server(spark) as client:
        with open(f"{png_dir}/RGB.png", "rb") as f:
            client.put_object(Bucket="sparkdl-tests", Key="photos/RGB.png", Body=f.read())
        client.put_object(Bucket="sparkdl-tests", Key="photos/empty.png", Body=b"")
        paths = ["s3://sparkdl-tests/photos/RGB.png", "s3a://sparkdl-tests/photos/RGB.png",
                 "s3a://sparkdl-tests/photos/empty.png", "s3://sparkdl-tests/photos/nope.png",
                 "nosuchfs://host/x.png", f"{png_dir}/RGB.png"]
        rows = ImageLoader(inputCol="uri", outputCol="img").transform(uris(spark, paths)).collect()
    local = rows[-1].img
    for row in rows[:2]:  # s3a:// is Hadoop's name for S3
        assert row.error is None, row.error
        assert (row.img.height, row.img.width) == (local.height, local.width)
        assert bytes(row.img.data) == bytes(local.data) and row.img.origin == row.uri
    assert rows[2].error == "empty file"
    assert rows[3].img.height == -1 and "cannot read file" in rows[3].error
    assert rows[3].error.count("nope.png") >= 1
    # No loader was set: the reason is the file system, not "imageLoader failed".
    assert rows[4].img.height == -1
    assert rows[4].error.startswith("cannot read file: no filesystem for scheme nosuchfs: "
                                    "nosuchfs://host/x.png"), rows[4].error
