"""Loading a saved stage never runs code the loader did not opt into: a blob keeps the codec
its class declares whatever the files say, and a stage holding user code (a pickled
``imageLoader``, ``safeMode=False`` over a Lambda model) is refused unless the loader passes
``allowUserCode=True`` or sets ``spark.sparkdl.load.allowUserCode``."""
import glob
import json
import os
import pickle
import shutil
import sys

import numpy as np
import pytest
from PIL import Image
from pyspark.ml import PipelineModel

import keras_models as km
import tiny_image_models as tim
from sparkdl import KerasImageFileTransformer, KerasTransformer
from sparkdl.param.persistence import ALLOW_USER_CODE_CONF

from pyspark import cloudpickle  # noqa: E402
from numerics import assert_close

cloudpickle.register_pickle_by_value(sys.modules[__name__])
SIZE = tim.SIZE


class _WritesMarker:
    """Unpickling this runs ``exec``, which writes ``path``: the attacker's payload."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return exec, (f"open({self.path!r}, 'w').write('code ran')",)


def _stage_dirs(tmp_path):
    return [str(tmp_path / "stage")] + glob.glob(str(tmp_path / "pipeline" / "stages" / "*"))


def _save_both(stage, tmp_path):
    stage.write().overwrite().save(str(tmp_path / "stage"))
    PipelineModel(stages=[stage]).write().overwrite().save(str(tmp_path / "pipeline"))


@pytest.fixture
def unset_conf_after(spark):
    yield
    spark.conf.unset(ALLOW_USER_CODE_CONF)


def test_a_blob_rewritten_to_pickle_is_loaded_as_bytes_and_never_run(spark, tmp_path):
    marker = tmp_path / "marker"
    payload = pickle.dumps(_WritesMarker(str(marker)))
    stage = KerasTransformer(inputCol="x", outputCol="y")
    stage._set(modelBytes=b"the model's bytes")
    _save_both(stage, tmp_path)
    for directory in _stage_dirs(tmp_path):  # the attacker rewrites the blob and its codec
        shutil.rmtree(os.path.join(directory, "blobs"))
        spark.createDataFrame([("modelBytes", "pickle", bytearray(payload))],
                              "name string, codec string, value binary") \
            .write.parquet(os.path.join(directory, "blobs"))

    for allow in (None, True):  # declared bytes stay bytes, even for a loader who opts in
        loaded = KerasTransformer.load(str(tmp_path / "stage"), allowUserCode=allow)
        assert loaded.getOrDefault("modelBytes") == payload
    assert PipelineModel.load(str(tmp_path / "pipeline")).stages[0] \
        .getOrDefault("modelBytes") == payload
    assert not marker.exists()
    pickle.loads(payload)  # the payload was live all along
    assert marker.exists()


def test_saved_safe_mode_off_is_refused_unless_the_loader_opts_in(spark, tmp_path,
                                                                    unset_conf_after):
    import keras

    path = km.save(km.lambda_model(), tmp_path, "lambda")
    x = km.tensors((8,), count=3)
    df = spark.createDataFrame([(row.tolist(),) for row in x], "x array<double>")
    stage = KerasTransformer(inputCol="x", outputCol="y", modelFile=path, safeMode=False)
    _save_both(stage, tmp_path)
    refused = (r"KerasTransformer saved at .* holds param 'safeMode', safeMode=False.*"
               r"KerasTransformer.load\(path, allowUserCode=True\).*"
               r"spark.sparkdl.load.allowUserCode=true")
    with pytest.raises(ValueError, match=refused):
        KerasTransformer.load(str(tmp_path / "stage"))
    with pytest.raises(ValueError, match=refused):
        PipelineModel.load(str(tmp_path / "pipeline"))

    # Moving the value into the saved defaults does not get around it.
    (meta,) = glob.glob(str(tmp_path / "stage" / "metadata" / "part-*"))
    with open(meta) as f:
        metadata = json.loads(f.read())
    metadata["defaultParamMap"]["safeMode"] = metadata["paramMap"].pop("safeMode")
    with open(meta, "w") as f:
        f.write(json.dumps(metadata))
    for crc in glob.glob(str(tmp_path / "stage" / "metadata" / ".*.crc")):
        os.remove(crc)  # the attacker rewrites Hadoop's checksum too
    with pytest.raises(ValueError, match=refused):
        KerasTransformer.load(str(tmp_path / "stage"))

    direct = keras.saving.load_model(path, safe_mode=False).predict_on_batch(x.astype("float32"))
    loaded = KerasTransformer.load(str(tmp_path / "stage"), allowUserCode=True)
    got = np.array([r.y for r in loaded.transform(df).collect()])
    assert_close(got, direct, 1e-5)
    spark.conf.set(ALLOW_USER_CODE_CONF, "true")
    (reloaded,) = PipelineModel.load(str(tmp_path / "pipeline")).stages
    assert reloaded.getSafeMode() is False
    assert reloaded.getOrDefault("modelBytes") == loaded.getOrDefault("modelBytes")


def load16(uri):
    img = Image.open(uri).convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR)
    return np.asarray(img, np.float32) / 255.0


def test_a_saved_image_loader_needs_the_opt_in(spark, tmp_path, unset_conf_after):
    (tmp_path / "pngs").mkdir()
    pngs = tim.write_pngs(tmp_path / "pngs")
    df = spark.createDataFrame([(p,) for p in sorted(pngs.values())], "uri string")
    model = tim.classifier(seed=4)
    stage = KerasImageFileTransformer(inputCol="uri", outputCol="out", imageLoader=load16,
                                      modelFile=tim.save(model, tmp_path / "m.keras"))
    _save_both(stage, tmp_path)
    refused = (r"KerasImageFileTransformer saved at .* holds param 'imageLoader', a pickled "
               r"Python function.*allowUserCode=True.*spark.sparkdl.load.allowUserCode=true")
    with pytest.raises(ValueError, match=refused):
        KerasImageFileTransformer.load(str(tmp_path / "stage"))
    with pytest.raises(ValueError, match=refused):
        PipelineModel.load(str(tmp_path / "pipeline"))

    loaded = KerasImageFileTransformer.load(str(tmp_path / "stage"), allowUserCode=True)
    rows = loaded.transform(df).collect()
    expected = tim.predict(model, [load16(r.uri) for r in rows])
    assert_close([r.out.toArray() for r in rows], expected, 1e-5)
    spark.conf.set(ALLOW_USER_CODE_CONF, "true")
    (reloaded,) = PipelineModel.load(str(tmp_path / "pipeline")).stages
    uri = sorted(pngs.values())[0]
    np.testing.assert_array_equal(reloaded.getImageLoader()(uri), load16(uri))


def test_a_blob_param_smuggled_into_the_json_params_is_refused(spark, tmp_path, monkeypatch):
    """TFImageTransformer's ``graph`` converter reads a SavedModel directory named by a string;
    a saved stage must not get TensorFlow to load one at ``load``."""
    from sparkdl import TFImageTransformer
    from sparkdl.graph.input import TFInputGraph

    opened = []
    monkeypatch.setattr(TFInputGraph, "fromSavedModel",
                        classmethod(lambda cls, path, *a, **k: opened.append(path)))
    TFImageTransformer(inputCol="image", outputCol="out", channelOrder="RGB") \
        .save(str(tmp_path / "stage"))
    (meta,) = glob.glob(str(tmp_path / "stage" / "metadata" / "part-*"))
    with open(meta) as f:
        metadata = json.loads(f.read())
    metadata["paramMap"]["graph"] = str(tmp_path / "attacker-savedmodel")
    with open(meta, "w") as f:
        f.write(json.dumps(metadata))
    for crc in glob.glob(str(tmp_path / "stage" / "metadata" / ".*.crc")):
        os.remove(crc)
    with pytest.raises(ValueError, match="TFImageTransformer saved at .* holds blob param "
                                         "'graph' among its JSON params"):
        TFImageTransformer.load(str(tmp_path / "stage"), allowUserCode=True)
    assert opened == []
