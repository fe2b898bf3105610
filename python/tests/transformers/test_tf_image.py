"""TFImageTransformer against the same conversion done in numpy and the graph run with TF."""
import shutil

import numpy as np
import pytest
from pyspark.ml import PipelineModel
from pyspark.sql import Row

import tensorflow as tf  # noqa: E402  (a hard dependency: never skipped)

from sparkdl import TFImageTransformer, TFInputGraph  # noqa: E402
from sparkdl.image.imageIO import (imageArrayToStruct, imageSchema, imageStructToArray,  # noqa: E402
                                   invalidImageStruct, resizeImage)
from numerics import assert_close

H, W = 6, 8  # the fixed-size graphs' input


def images():
    """Struct-order (BGR(A)/gray) arrays of several modes and sizes."""
    rng = np.random.default_rng(0)
    return {
        "bgr": rng.integers(0, 256, (9, 11, 3), dtype=np.uint8),
        "bgra": rng.integers(0, 256, (5, 7, 4), dtype=np.uint8),
        "gray": rng.integers(0, 256, (H, W), dtype=np.uint8),
        "float": rng.uniform(0, 255, (H, W, 3)).astype(np.float32),
        "same": rng.integers(0, 256, (H, W, 3), dtype=np.uint8),
    }


@pytest.fixture
def image_df(spark):
    rows = [Row(image=imageArrayToStruct(a, origin=name)) for name, a in images().items()]
    rows += [Row(image=invalidImageStruct("bad")), Row(image=None)]
    return spark.createDataFrame(rows, f"image {imageSchema.simpleString()}")


def numpy_convert(bgr, order, size=None, method="bilinear"):
    """The documented conversion, written independently: drop alpha, Pillow resize, order."""
    arr = bgr if bgr.ndim == 3 else bgr[:, :, None]
    arr = arr[:, :, :3]
    if size is not None:
        arr = resizeImage(np.ascontiguousarray(arr), size, method)
    arr = arr.astype(np.float32)
    if arr.shape[2] == 1:
        return arr if order == "L" else np.concatenate([arr] * 3, axis=2)
    b, g, r = arr[..., 0], arr[..., 1], arr[..., 2]
    if order == "BGR":
        return arr
    if order == "RGB":
        return np.stack([r, g, b], axis=2)
    return (0.299 * r + 0.587 * g + 0.114 * b)[:, :, None].astype(np.float32)


def weighted(channels):
    """A tf.Module with per-channel weights, so a channel swap changes the output, and a
    spatial pooling plus a subsampling, so a resize or transpose does too."""

    class Weighted(tf.Module):
        def __init__(self):
            super().__init__()
            self.w = tf.Variable(np.array([1.0, -2.0, 3.5][:channels], np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, H, W, channels], tf.float32, name="img")])
        def __call__(self, img):
            weighted = img * self.w
            return {"features": tf.concat(
                [tf.reduce_mean(weighted, axis=[1, 2]),
                 tf.reshape(weighted[:, ::3, ::3, :], [tf.shape(img)[0], -1])], axis=1)}

    return Weighted()


def collect(t, df):
    return {(r.image.origin if r.image else None): r for r in t.transform(df).collect()}


@pytest.mark.parametrize("order", ["RGB", "BGR", "L"])
def test_vector_output_equals_numpy_and_tf(spark, image_df, order):
    module = weighted(1 if order == "L" else 3)
    t = TFImageTransformer(channelOrder=order, inputCol="image", outputCol="f", graph=module,
                           batchSize=2)
    rows = collect(t, image_df)
    assert rows["bad"].f is None and rows[None].f is None
    batch = np.stack([numpy_convert(a, order, (H, W)) for a in images().values()])
    want = module(batch)["features"].numpy()
    got = np.stack([rows[name].f.toArray() for name in images()])
    assert_close(got, want, 1e-5)


def test_image_output_at_each_images_own_size(spark, image_df):
    """A graph without fixed height/width: each image at its own size; outputMode='image'
    gives float32 structs in BGR order with the origin kept."""

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="x")])
    def tint(x):
        return {"y": x * tf.constant([0.5, 1.0, 2.0]) + 1.0}

    t = TFImageTransformer(channelOrder="RGB", inputCol="image", outputCol="out", graph=tint,
                           outputMode="image", batchSize=3)
    rows = collect(t, image_df)
    assert rows["bad"].out is None and rows[None].out is None
    for name, bgr in images().items():
        out = rows[name].out
        rgb = numpy_convert(bgr, "RGB")
        want_rgb = tint(rgb[None])["y"].numpy()[0]
        assert (out.origin, out.height, out.width, out.nChannels, out.mode) == (
            name, rgb.shape[0], rgb.shape[1], 3, 21)
        assert_close(imageStructToArray(out), want_rgb[:, :, ::-1], 1e-5)

    # The identity in RGB order gives back the input image (as float32), in struct order.
    ident = TFImageTransformer(channelOrder="RGB", inputCol="image", outputCol="out",
                               graph=TFInputGraph.fromFunction(tf.function(
                                   lambda x: {"x": tf.identity(x)},
                                   input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32,
                                                                  name="x")])),
                               outputMode="image")
    same = collect(ident, image_df)["same"].out
    np.testing.assert_array_equal(imageStructToArray(same), images()["same"].astype(np.float32))


def test_saved_model_path_named_tensors_and_persistence(spark, image_df, tmp_path):
    """A SavedModel directory with two outputs: outputTensor picks one; the saved stage,
    alone and in a PipelineModel, carries the SavedModel."""

    class TwoHeads(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, H, W, 3], tf.float32, name="img")])
        def serve(self, img):
            return {"sum": tf.reduce_sum(img, axis=[1, 2]), "max": tf.reduce_max(img, axis=[1, 2, 3])}

    d = str(tmp_path / "heads")
    m = TwoHeads()
    tf.saved_model.save(m, d, signatures=m.serve)
    with pytest.raises(ValueError, match=r"outputTensor must be set.*available: \['max', 'sum'\]"):
        TFImageTransformer(channelOrder="BGR", inputCol="image", outputCol="o",
                           graph=d).transform(image_df)
    with pytest.raises(ValueError, match=r"outputTensor 'min' is not in signature.*available: "
                                         r"\['max', 'sum'\]"):
        TFImageTransformer(channelOrder="BGR", inputCol="image", outputCol="o", graph=d,
                           inputTensor="img", outputTensor="min").transform(image_df)
    t = TFImageTransformer(channelOrder="BGR", inputCol="image", outputCol="o", graph=d,
                           inputTensor="img", outputTensor="sum", resizeMethod="nearest")
    t.save(str(tmp_path / "alone"))
    PipelineModel(stages=[t]).save(str(tmp_path / "pipe"))
    shutil.rmtree(d)
    want = {name: numpy_convert(a, "BGR", (H, W), "nearest") for name, a in images().items()}
    loaded = TFImageTransformer.load(str(tmp_path / "alone"))
    assert (loaded.getInputTensor(), loaded.getOutputTensor(), loaded.getResizeMethod(),
            loaded.getChannelOrder()) == ("img", "sum", "nearest", "BGR")
    assert loaded.getGraph() == t.getGraph()
    for stage in (loaded, PipelineModel.load(str(tmp_path / "pipe")).stages[0]):
        rows = collect(stage, image_df)
        for name, arr in want.items():
            np.testing.assert_allclose(rows[name].o.toArray(), arr.sum(axis=(0, 1)), rtol=1e-6)
        assert rows[None].o is None


def test_errors_name_the_problem(spark, image_df):
    module = weighted(3)
    with pytest.raises(ValueError, match=r"inputTensor 'img' takes 3 channels but channelOrder 'L' "
                                         r"gives 1"):
        TFImageTransformer(channelOrder="L", inputCol="image", outputCol="o",
                           graph=module).transform(image_df)
    with pytest.raises(TypeError, match=r"inputCol 'uri' must be an image struct"):
        TFImageTransformer(channelOrder="RGB", inputCol="uri", outputCol="o",
                           graph=module).transform(spark.createDataFrame([("a",)], "uri string"))
    with pytest.raises(ValueError, match=r"inputCol 'img' is not a column"):
        TFImageTransformer(channelOrder="RGB", inputCol="img", outputCol="o",
                           graph=module).transform(image_df)
    with pytest.raises(ValueError, match=r"outputMode 'image' needs outputTensor 'features' of shape"):
        TFImageTransformer(channelOrder="RGB", inputCol="image", outputCol="o", graph=module,
                           outputMode="image").transform(image_df)
    with pytest.raises(ValueError, match=r"channelOrder must be one of \['BGR', 'L', 'RGB'\]"):
        TFImageTransformer(channelOrder="RGBA")
    with pytest.raises(ValueError, match="outputMode must be one of"):
        TFImageTransformer(outputMode="tensor")
    with pytest.raises(ValueError, match="channelOrder must be set"):
        TFImageTransformer(inputCol="image", outputCol="o", graph=module).transform(image_df)

    @tf.function(input_signature=[tf.TensorSpec([None, H * W * 3], tf.float32)])
    def flat(x):
        return x

    @tf.function(input_signature=[tf.TensorSpec([None, H, W, 3], tf.float32, name="img"),
                                  tf.TensorSpec([None], tf.float32, name="scale")])
    def two(img, scale):
        return {"y": img * scale[:, None, None, None]}

    with pytest.raises(ValueError, match=r"inputTensor must be set.*available: \['img', 'scale'\]"):
        TFImageTransformer(channelOrder="RGB", inputCol="image", outputCol="o",
                           graph=two).transform(image_df)
    with pytest.raises(ValueError, match=r"has inputs \['img', 'scale'\].*feeds only inputTensor 'img'"):
        TFImageTransformer(channelOrder="RGB", inputCol="image", outputCol="o", graph=two,
                           inputTensor="img").transform(image_df)
    with pytest.raises(ValueError, match=r"inputTensor 'x' has shape \[None, 144\]; channelOrder "
                                         r"'RGB' images need \(None, height, width, 3\)"):
        TFImageTransformer(channelOrder="RGB", inputCol="image", outputCol="o",
                           graph=flat).transform(image_df)
