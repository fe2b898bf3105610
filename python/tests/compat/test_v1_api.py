"""1.x names and argument forms that still work here, each against an independent reference:
TFInputGraph's 1.x argument order and keyword names, "name:0" tensor names in every stage
param that names a tensor, translateInputMapping, the 1.x imageIO helpers, the 1.x module
paths."""
import importlib
import sys

import numpy as np
import pytest
from PIL import Image
from pyspark import cloudpickle
from pyspark.sql import Row

import fixtures

tf = pytest.importorskip("tensorflow")

from sparkdl import TFImageTransformer, TFInputGraph, TFTransformer  # noqa: E402
from sparkdl.image import imageIO  # noqa: E402
from numerics import assert_close

cloudpickle.register_pickle_by_value(sys.modules[__name__])

W = np.array([[1.0], [-1.0]], np.float32)


class TwoSignatures(tf.Module):
    def __init__(self):
        super().__init__()
        self.w = tf.Variable(W)

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="input_tensor")])
    def serve(self, x):
        return {"output_tensor": tf.sigmoid(tf.matmul(x, self.w))}

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def double(self, x):
        return {"y": 2 * x}


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("v1") / "sm")
    m = TwoSignatures()
    tf.saved_model.save(m, d, signatures={"serving_default": m.serve, "double": m.double})
    return d


@pytest.fixture(scope="module")
def tf1_dir(tmp_path_factory):
    """A TF1 SavedModel as 1.x users exported them: signature keys differ from tensor names."""
    d = str(tmp_path_factory.mktemp("v1") / "tf1")
    with tf.Graph().as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 2], name="input_tensor")
        y = tf.identity(tf.sigmoid(tf.matmul(x, tf.constant(W))), name="output_tensor")
        with tf.compat.v1.Session() as sess:
            builder = tf.compat.v1.saved_model.Builder(d)
            sig = tf.compat.v1.saved_model.predict_signature_def({"features": x}, {"score": y})
            builder.add_meta_graph_and_variables(sess, ["serve"],
                                                 signature_def_map={"predict": sig})
            builder.save()
    return d


def sigmoid_reference(xs):
    return 1 / (1 + np.exp(-(np.asarray(xs, np.float64) @ W.astype(np.float64))))


def test_from_saved_model_with_signature_takes_the_1x_order_and_names(saved_dir):
    # 1.x: fromSavedModelWithSignature(saved_model_dir, tag_set, signature_def_key)
    g = TFInputGraph.fromSavedModelWithSignature(saved_dir, "serve", "double")
    assert (g.signatureDefKey, g.tags, g.inputNames, g.outputNames) == (
        "double", ("serve",), ["x"], ["y"])
    with pytest.warns(DeprecationWarning, match="tag_set=.... is the 1.x name; use tags="):
        g2 = TFInputGraph.fromSavedModelWithSignature(
            saved_model_dir=saved_dir, tag_set="serve", signature_def_key="double")
    assert g2 == g
    with pytest.warns(DeprecationWarning, match="saved_model_dir"):
        g3 = TFInputGraph.fromSavedModel(saved_model_dir=saved_dir, tag_set="serve",
                                         feed_names=["input_tensor:0"],
                                         fetch_names=["output_tensor:0"])
    assert (g3.inputNames, g3.outputNames) == (["input_tensor"], ["output_tensor"])
    with pytest.raises(TypeError, match="both 'tag_set' .the 1.x name. and 'tags'"):
        TFInputGraph.fromSavedModel(saved_dir, tags="serve", tag_set="serve")
    # the pre-1.x-order call (dir, signature key) is refused with the reason, not TF's error
    with pytest.raises(ValueError, match=r"tags \['double'\] match no MetaGraph.*tag sets: "
                                         r"\[\['serve'\]\]; 'double' is a signature.*"
                                         r"signatureDefKey='double'"):
        TFInputGraph.fromSavedModelWithSignature(saved_dir, "double")


def test_translate_mappings_resolve_1x_names(saved_dir, tf1_dir):
    g = TFInputGraph.fromSavedModelWithSignature(tf1_dir, "serve", "predict")
    with pytest.warns(DeprecationWarning, match="translateInputMapping is not needed"):
        assert g.translateInputMapping({"inputCol": "features"}) == {"inputCol": "features"}
    with pytest.warns(DeprecationWarning):
        assert g.translateInputMapping([("inputCol", "input_tensor:0")]) == {
            "inputCol": "features"}
    with pytest.warns(DeprecationWarning, match="translateOutputMapping"):
        assert g.translateOutputMapping({"output_tensor:0": "outputCol"}) == {
            "score": "outputCol"}
    with pytest.raises(ValueError, match=r"'nope' is not in signature 'predict'.*"
                                         r"available: \['features'\]"):
        g.translateInputMapping({"inputCol": "nope"})


@pytest.mark.parametrize("graph_kind", ["function", "tf1"])
def test_tf_transformer_takes_tensor_names(spark, saved_dir, tf1_dir, graph_kind):
    """The 1.x README's TFTransformer mappings (tfx.tensor_name(...) -> "name:0") unchanged."""
    import sparkdl.graph.utils as tfx  # the 1.x module, kept for these helpers

    if graph_kind == "function":
        g = TFInputGraph.fromSavedModel(saved_dir)
    else:
        g = TFInputGraph.fromSavedModelWithSignature(tf1_dir, "serve", "predict")
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(5, 2)).tolist()
    df = spark.createDataFrame([Row(inputCol=x) for x in xs])
    t = TFTransformer(tfInputGraph=g,
                      inputMapping={"inputCol": tfx.tensor_name("input_tensor")},
                      outputMapping={tfx.tensor_name("output_tensor"): "outputCol"})
    got = np.array([r.outputCol for r in t.transform(df).orderBy("inputCol").collect()])
    expected = sigmoid_reference(sorted(xs))
    assert_close(got, expected, 1e-6)
    with pytest.raises(ValueError, match=r"'output:0' is not in signature.*available"):
        TFTransformer(tfInputGraph=g, inputMapping={"inputCol": "input_tensor:0"},
                      outputMapping={"output:0": "o"}).transform(df)


def test_tf_image_transformer_takes_tensor_names(spark):
    @tf.function(input_signature=[tf.TensorSpec([None, 4, 4, 3], tf.float32, name="image")])
    def mean(image):
        return {"mean": tf.reduce_mean(image, axis=[1, 2])}

    bgr = np.random.default_rng(1).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    df = spark.createDataFrame([Row(image=imageIO.imageArrayToStruct(bgr, "a"))],
                               f"image {imageIO.imageSchema.simpleString()}")
    t = TFImageTransformer(channelOrder="BGR", inputCol="image", outputCol="out", graph=mean,
                           inputTensor="image:0", outputTensor="mean:0")
    got = t.transform(df).first().out.toArray()
    np.testing.assert_allclose(got, bgr.reshape(-1, 3).mean(axis=0), rtol=1e-6)
    with pytest.raises(ValueError, match=r"inputTensor 'img:0' is not in signature"):
        t.copy({t.inputTensor: "img:0"}).transform(df)


@pytest.fixture(scope="module")
def png_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("v1png")
    Image.fromarray(fixtures.rgb_array(3)).save(d / "rgb.png")
    Image.fromarray(fixtures.rgba_array(4)).save(d / "rgba.png")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return str(d)


def test_pil_decode_and_read_images_with_custom_fn_match_sparks_reader(spark, png_files):
    with pytest.warns(DeprecationWarning, match="1.x helper; use sparkdl.readImages"):
        df = imageIO.readImagesWithCustomFn(png_files, decode_f=imageIO.PIL_decode)
    assert df.columns == ["image", "error"]
    got = {r.image.origin.rsplit("/", 1)[1]: r for r in df.collect()}
    spark_rows = (spark.read.format("image").option("dropInvalid", True).load(png_files)
                  .select("image").collect())
    for ref in spark_rows:
        name = ref.image.origin.rsplit("/", 1)[1]
        assert got[name].image.origin == ref.image.origin  # same URI form as Spark's reader
        assert (got[name].image.height, got[name].image.width, got[name].image.nChannels,
                got[name].image.mode) == (ref.image.height, ref.image.width,
                                          ref.image.nChannels, ref.image.mode)
        assert bytes(got[name].image.data) == bytes(ref.image.data)
        assert got[name].error is None
    broken = got["broken.png"]
    assert broken.image.height == -1 and broken.image.mode == -1
    # PIL_decode applies sparkdl's decoding rule: its reason is readImages' own wording.
    assert broken.error == "cannot identify image file: not a format Pillow decodes"


def test_read_images_with_custom_fn_reports_a_bad_decoder_per_row(spark, png_files):
    def decode(raw):  # a 1.x-style decoder returning a batch of one, or nothing
        if b"not really" in raw:
            return None
        return np.asarray(Image.open(__import__("io").BytesIO(raw)).convert("RGB"))[None, :, :, ::-1]

    rows = imageIO.readImagesWithCustomFn(png_files, decode, numPartition=2).collect()
    errors = {r.image.origin.rsplit("/", 1)[1]: r.error for r in rows}
    assert errors["rgb.png"] is None and errors["rgba.png"] is None
    assert errors["broken.png"] == ("decode_f returned NoneType, expected a numpy "
                                    "array H x W x C in BGR(A) order")


def test_create_resize_image_udf_equals_pillow(spark):
    bgr = fixtures.rgb_array(5, 9, 13)
    df = spark.createDataFrame([Row(image=imageIO.imageArrayToStruct(bgr, "x")),
                                Row(image=imageIO.invalidImageStruct("bad")), Row(image=None)],
                               f"image {imageIO.imageSchema.simpleString()}")
    with pytest.warns(DeprecationWarning, match="createResizeImageUDF"):
        resize = imageIO.createResizeImageUDF((4, 6))
    rows = df.select(resize("image").alias("image")).collect()
    expected = np.asarray(Image.fromarray(bgr[:, :, ::-1]).resize((6, 4), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(imageIO.imageStructToArray(rows[0].image), expected[:, :, ::-1])
    assert rows[0].image.origin == "x"
    assert rows[1].image.height == -1 and rows[2].image is None
    with pytest.raises(ValueError, match=r"size must be \(height, width\)"):
        imageIO.createResizeImageUDF((4,))


def test_1x_module_paths():
    sys.modules.pop("sparkdl.udf.keras_image_model", None)
    with pytest.warns(DeprecationWarning, match="keras_image_model is the 1.x module name"):
        module = importlib.import_module("sparkdl.udf.keras_image_model")
    import sparkdl

    assert module.registerKerasImageUDF is sparkdl.registerKerasImageUDF
    from sparkdl.estimators.keras_image_file_estimator import KerasImageFileEstimator

    assert KerasImageFileEstimator is sparkdl.KerasImageFileEstimator
    import sparkdl.graph.utils as tfx

    assert (tfx.tensor_name("a"), tfx.tensor_name("a:1"), tfx.op_name("a:0")) == ("a:0", "a:1", "a")
    with pytest.raises(NotImplementedError, match="TFInputGraph.fromFunction"):
        tfx.strip_and_freeze_until([], None)
