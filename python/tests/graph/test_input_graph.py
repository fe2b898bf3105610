"""TFInputGraph: SavedModels, tf.functions and tf.Modules as one signature with bytes."""
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest

import tensorflow as tf  # noqa: E402  (a hard dependency: never skipped)

from sparkdl.engine.savedmodel import loadSignature  # noqa: E402
from sparkdl.graph.input import TFInputGraph, TensorInfo  # noqa: E402
from numerics import assert_close

W = np.arange(6, dtype=np.float32).reshape(3, 2) / 7


class Affine(tf.Module):
    """Two signatures: a multi-input / multi-output one and a single-input one."""

    def __init__(self):
        super().__init__()
        self.w = tf.Variable(W)

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x"),
                                  tf.TensorSpec([None, 2, 2], tf.int64, name="m")])
    def both(self, x, m):
        return {"y": tf.matmul(x, self.w), "msum": tf.reduce_sum(m, axis=[1, 2]),
                "half": tf.cast(m, tf.float64) / 2}

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="x")])
    def only_x(self, x):
        return {"z": x * 3}


@pytest.fixture(scope="module")
def multi_sig_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("sm") / "affine")
    m = Affine()
    tf.saved_model.save(m, d, signatures={"serving_default": m.both, "only_x": m.only_x})
    return d


def run_bytes(graph, feed):
    """Run the graph the way an executor does: from its bytes, in a fresh load."""
    sig = loadSignature(bytes(graph), graph.key, graph.signatureDefKey, graph.tags)
    return sig(feed)


def test_from_saved_model_reads_the_signature_and_carries_its_bytes(multi_sig_dir, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(multi_sig_dir, copy)
    g = TFInputGraph.fromSavedModel(copy)
    assert g.signatureDefKey == "serving_default"
    assert g.inputs == (TensorInfo("m", "int64", (None, 2, 2)), TensorInfo("x", "float32", (None, 3)))
    assert g.outputNames == ["half", "msum", "y"]
    assert g.output("half") == TensorInfo("half", "float64", (None, 2, 2))
    shutil.rmtree(copy)  # the graph holds the SavedModel itself
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    m = np.arange(16, dtype=np.int64).reshape(4, 2, 2)
    out = run_bytes(g, {"x": x, "m": m})
    assert_close(out["y"], x @ W, 1e-5)
    np.testing.assert_array_equal(out["msum"], m.sum(axis=(1, 2)))
    np.testing.assert_array_equal(out["half"], m / 2)


def test_signature_choice_and_feed_fetch_names(multi_sig_dir):
    g = TFInputGraph.fromSavedModelWithSignature(multi_sig_dir, signatureDefKey="only_x")
    assert (g.inputNames, g.outputNames) == (["x"], ["z"])
    g = TFInputGraph.fromSavedModel(multi_sig_dir, tags="serve", feed_names=["x", "m"],
                                    fetch_names=["y"])
    assert g.outputNames == ["y"] and g.inputNames == ["m", "x"]
    with pytest.raises(ValueError, match=r"no signature 'nope'; its signatures: \['only_x', "
                                         r"'serving_default'\]"):
        TFInputGraph.fromSavedModelWithSignature(multi_sig_dir, signatureDefKey="nope")
    with pytest.raises(ValueError, match=r"feed_names must feed every input.*missing: \['m'\]"):
        TFInputGraph.fromSavedModel(multi_sig_dir, feed_names=["x"])
    with pytest.raises(ValueError, match=r"fetch_names 'q' .*available: \['half', 'msum', 'y'\]"):
        TFInputGraph.fromSavedModel(multi_sig_dir, fetch_names=["q"])
    with pytest.raises(FileNotFoundError, match="no/such/dir"):
        TFInputGraph.fromSavedModel("no/such/dir")


def test_serialized_form_and_pickle(multi_sig_dir):
    g = TFInputGraph.fromSavedModel(multi_sig_dir)
    again = TFInputGraph.fromSavedModel(multi_sig_dir)
    assert bytes(again) == bytes(g) and again.key == g.key  # deterministic zip
    for copy in (TFInputGraph.fromBytes(bytes(g)), pickle.loads(pickle.dumps(g))):
        assert copy == g and copy.inputs == g.inputs and copy.outputs == g.outputs
        assert copy.signatureDefKey == g.signatureDefKey and copy.tags is None
    assert g != TFInputGraph.fromSavedModelWithSignature(multi_sig_dir, signatureDefKey="only_x")
    with pytest.raises(ValueError, match="not a serialized TFInputGraph"):
        import io
        import zipfile

        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("x", b"1")
        TFInputGraph.fromBytes(buf.getvalue())


def test_from_tf_function_with_a_captured_variable():
    v = tf.Variable([[1.0, -1.0], [0.5, 2.0]])

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="features")])
    def f(features):
        return {"out": tf.matmul(features, v), "norm": tf.norm(features, axis=1)}

    g = TFInputGraph.fromFunction(f)
    assert g.inputs == (TensorInfo("features", "float32", (None, 2)),)
    assert g.outputNames == ["norm", "out"]
    x = np.array([[1, 2], [3, 4], [0, 0]], np.float32)
    got, want = run_bytes(g, {"features": x}), f(x)
    assert_close(got["out"], want["out"].numpy(), 1e-5)
    assert_close(got["norm"], want["norm"].numpy(), 1e-5)


def test_from_function_variants():
    class Scale(tf.Module):
        def __init__(self):
            super().__init__()
            self.k = tf.Variable(3.0)

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32)])
        def __call__(self, x):
            return x * self.k  # a single tensor: output_0

    class Named(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32, name="n")])
        def serve(self, n):
            return {"sq": n * n}

    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    g = TFInputGraph.fromFunction(Scale())
    assert (g.inputNames, g.outputNames) == (["x"], ["output_0"])
    np.testing.assert_allclose(run_bytes(g, {"x": x})["output_0"], 3 * x)

    g = TFInputGraph.fromFunction(Named())
    assert g.input("n").dtype == "int32"
    np.testing.assert_array_equal(run_bytes(g, {"n": np.array([2, 3], np.int32)})["sq"], [4, 9])

    def plain(a, b):
        return {"s": a + tf.cast(b, tf.float32)}

    specs = [tf.TensorSpec([None, 2], tf.float32, name="a"), tf.TensorSpec([None, 2], tf.int32, name="b")]
    for fn, sig in [(plain, specs), (tf.function(plain), specs),
                    (tf.function(plain).get_concrete_function(*specs), None)]:
        g = TFInputGraph.fromFunction(fn, input_signature=sig)
        assert g.inputNames == ["a", "b"]
        out = run_bytes(g, {"a": np.ones((1, 2), np.float32), "b": np.array([[1, 2]], np.int32)})
        np.testing.assert_array_equal(out["s"], [[2, 3]])


def test_from_function_errors():
    with pytest.raises(ValueError, match="input_signature"):
        TFInputGraph.fromFunction(tf.function(lambda x: {"y": x}))

    class Two(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def a(self, x):
            return x

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def b(self, x):
            return x

    with pytest.raises(ValueError, match=r"exactly one tf.function attribute; found \['a', 'b'\]"):
        TFInputGraph.fromFunction(Two())
    with pytest.raises(TypeError, match="fromFunction expects"):
        TFInputGraph.fromFunction(42)
    with pytest.raises(NotImplementedError, match="fromFunction"):
        TFInputGraph.fromGraph(None, None, ["x"], ["y"])


def test_tf1_saved_model_with_tensor_names(tmp_path):
    """A TF1 SavedModel, as the original library's users exported them: its signature is
    called by key, and the TF1 tensor names still work as feed/fetch names."""
    d = str(tmp_path / "tf1")
    with tf.Graph().as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="input")
        w = tf.compat.v1.get_variable("w", initializer=tf.constant(W))
        y = tf.identity(tf.matmul(x, w), name="output")
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            builder = tf.compat.v1.saved_model.Builder(d)
            sig = tf.compat.v1.saved_model.predict_signature_def({"x_in": x}, {"y_out": y})
            builder.add_meta_graph_and_variables(sess, ["serve"], signature_def_map={"predict": sig})
            builder.save()
    g = TFInputGraph.fromSavedModel(d, "serve", feed_names=["input:0"], fetch_names=["output"])
    assert (g.signatureDefKey, g.tags, g.inputNames, g.outputNames) == (
        "predict", ("serve",), ["x_in"], ["y_out"])
    x = np.ones((2, 3), np.float32)
    assert_close(run_bytes(g, {"x_in": x})["y_out"], x @ W, 1e-5)


def test_public_names_do_not_import_tensorflow():
    code = ("import sys, sparkdl\n"
            "sparkdl.TFInputGraph, sparkdl.TFTransformer, sparkdl.TFImageTransformer\n"
            "assert 'tensorflow' not in sys.modules\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert out.returncode == 0, out.stderr
