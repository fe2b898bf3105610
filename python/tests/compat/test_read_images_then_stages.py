"""readImages -> any sparkdl stage works with the defaults: readImages' ``error`` column is an
earlier stage's, and a stage whose ``errorCol`` names it appends its own reasons to it."""
import os
import sys

import numpy as np
import pytest
from PIL import Image
from pyspark import cloudpickle
from pyspark.sql import functions as F

import tiny_image_models
from sparkdl import ImageLoader, KerasImageFileTransformer, readImages
from numerics import assert_close

cloudpickle.register_pickle_by_value(sys.modules[__name__])


def load(uri):
    path = uri.replace("file://", "")
    return np.asarray(Image.open(path).convert("RGB").resize((16, 16)), np.float32) / 255


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("read-then-stage")
    tiny_image_models.write_pngs(d)
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    model = str(d / "model.keras")
    tiny_image_models.classifier().save(model)
    return str(d), model


def test_keras_image_file_transformer_after_read_images_with_defaults(spark, image_dir):
    directory, model_file = image_dir
    images = readImages(directory, pathGlobFilter="*.png").withColumn("uri", F.col("image.origin"))
    out = KerasImageFileTransformer(inputCol="uri", outputCol="scores", modelFile=model_file,
                                    imageLoader=load).transform(images)
    rows = {os.path.basename(r.uri): r for r in out.select("uri", "scores", "error").collect()}
    assert len(rows) == 6
    model = tiny_image_models._keras().models.load_model(model_file, compile=False)
    for name, row in rows.items():
        if name == "broken.png":
            continue
        assert row.error is None
        expected = tiny_image_models.predict(model, [load(row.uri)])[0]
        assert_close(row.scores.toArray(), expected, 1e-5)
    broken = rows["broken.png"]
    assert broken.scores is None
    # readImages' reason first, then the stage's own, in the one error column
    first, second = broken.error.split("; ", 1)
    assert first.startswith("DecodeError") or "cannot identify" in first
    assert "UnidentifiedImageError" in second or "cannot identify" in second


def test_image_loader_after_read_images_and_a_non_string_error_column(spark, image_dir):
    directory, _ = image_dir
    images = readImages(directory, pathGlobFilter="*.png").withColumn("uri", F.col("image.origin"))
    out = ImageLoader(inputCol="uri", outputCol="loaded").transform(images)
    errors = {os.path.basename(r.uri): r.error for r in out.select("uri", "error").collect()}
    assert [n for n, e in errors.items() if e is not None] == ["broken.png"]
    assert errors["broken.png"].count("; ") == 1
    with pytest.raises(TypeError, match=r"errorCol 'error' is a column of type int; an existing "
                                        r"error column must hold strings"):
        ImageLoader(inputCol="uri", outputCol="loaded").transform(
            images.withColumn("error", F.lit(1)))
    with pytest.raises(ValueError, match="must differ"):
        ImageLoader(inputCol="uri", outputCol="error").transform(images)
