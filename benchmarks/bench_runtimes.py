"""The engine's inference runtimes, model only: TensorFlow ``predict_on_batch`` vs OpenVINO
fp32, LiteRT (XNNPACK) and OpenVINO bf16, through ``sparkdl.engine.runtimes.compileModel``.

Same preprocessed input for all (``--batch`` real photos: the benchmark JPEGs, resized and
preprocessed as the featurizer does), the same thread count (``--threads``, default 2: the
cores of a local[2] machine; TensorFlow intra-op = threads, inter-op = 1, as the engine sets
it). Every variant predicts once untimed (traced, compiled), then ``--rounds`` rounds run every
variant in turn; medians. Agreement with TensorFlow: max absolute difference of the outputs,
and for classifiers how many top-1 classes agree. Conversion seconds (export + convert +
compile: what each Python worker pays once per model) are reported too.
These numbers are what ``runtime="auto"`` is chosen by (see ``sparkdl/engine/runtimes.py``).

    python benchmarks/bench_runtimes.py [--models EfficientNetLite0,MobileNetV2,ResNet50,MLP]
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import make_jpegs, save_result  # noqa: E402

MODELS = ("EfficientNetLite0", "MobileNetV2", "ResNet50", "MLP")


def build(name):
    """(keras model, input batch builder, is_classifier, description)."""
    import keras

    keras.utils.set_random_seed(0)
    if name == "MLP":
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(256, activation="relu"),
                                  keras.layers.Dense(256, activation="relu"),
                                  keras.layers.Dense(10)])
        return model, False, "MLP 64-256-256-10, rows of 64 floats"
    from sparkdl.models.registry import buildModel

    if name == "EfficientNetLite0":
        return (buildModel(name, weights="imagenet", include_top=True), True,
                "EfficientNetLite0 224, ImageNet weights, with its classifier")
    return (buildModel(name, weights=None, include_top=False, pooling="avg"), False,
            f"{name} 224, weights=None, avg-pooled features")


def inputs(name, folder, batch):
    import numpy as np

    if name == "MLP":
        return np.random.default_rng(0).standard_normal((batch, 64), dtype=np.float32)
    from PIL import Image

    from sparkdl.engine.image_udf import resolve
    from sparkdl.models.registry import getModelEntry

    entry = getModelEntry(name)
    files = sorted(f for f in os.listdir(folder) if f.endswith(".jpg"))[:batch]
    x = np.stack([np.asarray(Image.open(os.path.join(folder, f)).convert("RGB")
                             .resize(entry.inputSize[::-1], Image.Resampling.BILINEAR), np.float32)
                  for f in files])
    return resolve(entry.preprocess)(x)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", default="/tmp/sparkdl-bench-jpegs")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import numpy as np
    import tensorflow as tf

    from sparkdl.engine import runtimes

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    folder = make_jpegs(args.dir, max(500, args.batch))
    variants = [("tensorflow", "fp32"), ("openvino", "fp32"), ("litert", "fp32")]
    if runtimes.cpuHasBf16():
        variants.append(("openvino", "bf16"))
    rows = {}
    for name in args.models.split(","):
        model, classifier, what = build(name)
        x = inputs(name, folder, args.batch)
        predictors, convert_s = {}, {}
        for runtime, precision in variants:
            start = time.perf_counter()
            predictors[f"{runtime}_{precision}"] = runtimes.compileModel(
                model, runtime, precision, threads=args.threads, modelName=name)
            convert_s[f"{runtime}_{precision}"] = round(time.perf_counter() - start, 2)
        outputs = {k: np.asarray(p.predict(x), np.float32) for k, p in predictors.items()}
        times = {k: [] for k in predictors}
        for _ in range(args.rounds):
            for k, p in predictors.items():
                start = time.perf_counter()
                p.predict(x)
                times[k].append(time.perf_counter() - start)
        ref = outputs["tensorflow_fp32"]
        tf_s = statistics.median(times["tensorflow_fp32"])
        row = {"model": what, "conversion_s": convert_s}
        for k in predictors:
            med = statistics.median(times[k])
            entry = {"img_per_s": round(len(x) / med, 1), "over_tensorflow": round(tf_s / med, 2),
                     "max_abs_diff": float(f"{np.abs(outputs[k] - ref).max():.2g}"),
                     "runs_s": [round(t, 3) for t in times[k]]}
            if classifier:
                entry["top1_agrees"] = (f"{int((outputs[k].argmax(1) == ref.argmax(1)).sum())}"
                                        f"/{len(ref)}")
            row[k] = entry
        rows[name] = row
        print(name, {k: (v["img_per_s"], v["over_tensorflow"]) for k, v in row.items()
                     if isinstance(v, dict) and "img_per_s" in v}, flush=True)
        del predictors, model
    save_result("runtimes", {"batch": args.batch, "threads": args.threads,
                             "rounds": args.rounds, "models": rows,
                             "load_average_1min": os.getloadavg()[0]})


if __name__ == "__main__":
    main()
