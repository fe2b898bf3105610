"""The ImageNet class index shipped as package data, and decode_predictions on it."""
import hashlib
import importlib.resources
import subprocess
import sys

import numpy as np
import pytest

from sparkdl.models import imagenet

# keras/src/applications/imagenet_utils.py pins this MD5 for its imagenet_class_index.json.
KERAS_CLASS_INDEX_MD5 = "c2c37ea517e94d9795004a39431a14cb"


def test_class_index_is_byte_identical_to_keras():
    path = importlib.resources.files("sparkdl") / "resources" / "imagenet_class_index.json"
    assert hashlib.md5(path.read_bytes()).hexdigest() == KERAS_CLASS_INDEX_MD5


def test_class_index():
    index = imagenet.class_index()
    assert len(index) == 1000 and set(index) == {str(i) for i in range(1000)}
    assert index["0"] == ["n01440764", "tench"]
    assert index["282"] == ["n02123159", "tiger_cat"]
    assert index["967"] == ["n07920052", "espresso"]
    index["0"][1] = "changed"
    assert imagenet.class_index()["0"][1] == "tench"  # callers get a copy


def test_decode_predictions():
    preds = np.zeros((2, 1000), dtype=np.float32)
    preds[0, [281, 282, 285]] = [0.1, 0.2, 0.7]
    preds[1, 967] = 1.0
    decoded = imagenet.decode_predictions(preds, top=3)
    assert [name for _, name, _ in decoded[0]] == ["Egyptian_cat", "tiger_cat", "tabby"]
    assert decoded[1][0] == ("n07920052", "espresso", np.float32(1.0))
    assert len(imagenet.decode_predictions(preds)[0]) == 5
    with pytest.raises(ValueError, match="shape"):
        imagenet.decode_predictions(np.zeros((2, 10)))


def test_imports_stay_light():
    code = ("import sys, sparkdl.models, sparkdl.models.imagenet, sparkdl.models.torch_state_dict; "
            "heavy = {'tensorflow', 'keras', 'torch', 'pyspark'} & set(sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)
