"""ImageNet-1k class names, read from the copy of Keras's class index shipped with sparkdl."""
import functools
import importlib.resources
import json

import numpy as np

__all__ = ["class_index", "decode_predictions"]


@functools.lru_cache(maxsize=None)
def _load():
    path = importlib.resources.files("sparkdl") / "resources" / "imagenet_class_index.json"
    return json.loads(path.read_text(encoding="utf-8"))


def class_index():
    """The ImageNet-1k class index, `{"0": ["n01440764", "tench"], ...}`.

    Same content as the `imagenet_class_index.json` that `keras.applications` downloads:
    class index (as a string) -> `[WordNet id, class name]`. Loaded once, then cached; the
    returned dict is a copy, so changing it does not change later results.
    """
    return {k: list(v) for k, v in _load().items()}


def decode_predictions(preds, top=5):
    """Decodes the prediction of an ImageNet model.

    Same as `keras.applications.imagenet_utils.decode_predictions`, but reads the class index
    shipped with sparkdl, so it works offline.

    :param preds: NumPy array (or tensor) encoding a batch of predictions, shape
        ``(samples, 1000)``.
    :param top: how many top guesses to return.
    :return: one list per sample of the top class prediction tuples
        ``(class_name, class_description, score)``.
    :raises ValueError: ``preds`` is not of shape ``(samples, 1000)``.
    """
    preds = np.asarray(preds)
    if preds.ndim != 2 or preds.shape[1] != 1000:
        raise ValueError(f"`decode_predictions` expects a batch of predictions (i.e. a 2D array "
                         f"of shape (samples, 1000)). Received array with shape: {preds.shape}")
    index = _load()
    results = []
    for pred in preds:
        top_indices = pred.argsort()[-top:][::-1]
        result = [tuple(index[str(i)]) + (pred[i],) for i in top_indices]
        result.sort(key=lambda x: x[2], reverse=True)
        results.append(result)
    return results
