"""DeepImageFeaturizer throughput against (a) a plain single-process Keras loop, (b) Spark's
own recipe (binaryFile -> pandas decode UDF -> pyspark.ml.functions.predict_batch_udf) and,
per inference runtime, (e) a plain single-process loop that uses that runtime directly.

Same >= 500 JPEGs of 500x375, ``--model`` at 224 (MobileNetV2 and ResNet50 with
weights=None, EfficientNetLite0 with its real ImageNet weights), avg-pooled features.
(b) sets TensorFlow's threads in each Python worker as sparkdl does (intra-op = the task's
cores = 1, inter-op 1: one task per core), as a careful user would; (b0) is the same recipe
left untuned (TensorFlow's defaults: every worker sizes its pools to all cores).
(d_<runtime>) is (c) with ``runtime=`` OpenVINO fp32, LiteRT fp32 or OpenVINO bf16; its peer
(e_<runtime>) decodes and resizes like (a) and predicts with the runtime's own Python API
(export to a SavedModel, convert, all cores), written as a user would.
(c) is readImages -> DeepImageFeaturizer on local[2], selecting the features only, so Spark
chains the two UDFs in one Python worker; (c2) feeds binaryFile's bytes straight to the
featurizer, which decodes inside its own UDF. Every variant runs once untimed first
(models built and cached), then ``--rounds`` rounds run every variant in turn; medians.
(b) runs in a Spark session of its own, interleaved with (a); (c) and (c2) in another, also
with (a).
Targets: c/a >= 1.0 and c/b >= 1.9; with the fastest fp32 runtime d/a >= 1.6 and d/e >= 1.0;
with bf16 d/a >= 2.5.
Also the peak RSS of the largest Python worker for 1x vs 4x the images, each in a fresh
session (target: < 10% growth).

    python benchmarks/bench_featurizer.py [--model MobileNetV2] [--count 500] [--rounds 7]
        [--runtimes openvino,litert,openvino-bf16] [--skip-memory]
"""
import argparse
import io
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import make_jpegs, save_result, spark_session, timed_rounds  # noqa: E402

MODEL = "MobileNetV2"
SIZE = (224, 224)
BATCH = 64
#: Models with real weights here (the others are benchmarked with weights=None).
REAL_WEIGHTS = {"EfficientNetLite0": "imagenet"}


def weights():
    return REAL_WEIGHTS.get(MODEL)


def build_model():
    """The featurizer's model, as DeepImageFeaturizer builds it."""
    import keras

    from sparkdl.models.registry import buildModel

    keras.utils.set_random_seed(0)
    return buildModel(MODEL, weights=weights(), include_top=False, pooling="avg")


def preprocess():
    """The model's own preprocess_input (registry)."""
    from sparkdl.engine.image_udf import resolve
    from sparkdl.models.registry import getModelEntry

    prep = resolve(getModelEntry(MODEL).preprocess)
    return prep or (lambda x: x)


def read_batches(files):
    """(a)'s and (e)'s input: Pillow decode + resize, float32 batches of BATCH."""
    import numpy as np
    from PIL import Image

    for start in range(0, len(files), BATCH):
        yield np.stack([
            np.asarray(Image.open(f).convert("RGB").resize(SIZE[::-1], Image.Resampling.BOX),
                       np.float32)
            for f in files[start:start + BATCH]])


def jpegs(folder):
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".jpg"))


def plain_loop(folder):
    """(a): one process, Pillow decode + resize, predict_on_batch, TF on all cores."""
    model = build_model()
    prep = preprocess()
    files = jpegs(folder)

    def run():
        for batch in read_batches(files):
            model.predict_on_batch(prep(batch))
    return run


def runtime_loop(folder, runtime, threads):
    """(e): one process, like (a), predicting with ``runtime``'s own API, as a user would
    write it: Keras's SavedModel export, then OpenVINO's convert_model + compile_model (an
    explicit f32 precision hint for fp32: on a CPU with bf16, OpenVINO defaults to bf16), or
    TFLiteConverter + ai_edge_litert's Interpreter with ``threads`` threads."""
    import tempfile

    import numpy as np

    model = build_model()
    prep = preprocess()
    files = jpegs(folder)
    name, _, precision = runtime.partition("-")
    with tempfile.TemporaryDirectory() as tmp:
        model.export(os.path.join(tmp, "sm"), format="tf_saved_model", verbose=False)
        if name == "openvino":
            import openvino as ov

            compiled = ov.Core().compile_model(
                ov.convert_model(os.path.join(tmp, "sm")), "CPU",
                {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"})

            def predict(x):
                return compiled(x)[0]
        else:
            import tensorflow as tf
            from ai_edge_litert.interpreter import Interpreter

            flatbuffer = tf.lite.TFLiteConverter.from_saved_model(os.path.join(tmp, "sm")).convert()
            interpreter = Interpreter(model_content=flatbuffer, num_threads=threads)
            runner = interpreter.get_signature_runner()
            (input_name,) = runner.get_input_details()

            def predict(x):
                return next(iter(runner(**{input_name: x}).values()))

    def run():
        for batch in read_batches(files):
            np.asarray(predict(np.ascontiguousarray(prep(batch))))
    return run


def spark_recipe(spark, folder, tuned=True):
    """(b): Spark's documented recipe for batch inference; ``tuned``: TensorFlow's threads
    per worker set as sparkdl sets them (the task's cores intra-op, 1 inter-op)."""
    import numpy as np
    import pandas as pd
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql.functions import pandas_udf
    from pyspark.sql.types import ArrayType, FloatType

    @pandas_udf(ArrayType(FloatType()))
    def decode(content: pd.Series) -> pd.Series:
        from PIL import Image

        return content.apply(lambda b: np.asarray(
            Image.open(io.BytesIO(b)).convert("RGB").resize(SIZE[::-1], Image.Resampling.BOX),
            np.float32).ravel())

    def make_predict_fn():
        if tuned:
            import tensorflow as tf
            from pyspark import TaskContext

            try:  # possible only before TensorFlow starts in this worker
                tf.config.threading.set_intra_op_parallelism_threads(TaskContext.get().cpus())
                tf.config.threading.set_inter_op_parallelism_threads(1)
            except RuntimeError:
                pass
        model = build_model()
        prep = preprocess()

        def predict(x):
            return model.predict_on_batch(prep(x))
        return predict

    predict = predict_batch_udf(make_predict_fn, return_type=ArrayType(FloatType()),
                                batch_size=BATCH, input_tensor_shapes=[list(SIZE) + [3]])

    def run():
        spark.read.format("binaryFile").option("pathGlobFilter", "*.jpg").load(folder) \
            .select(predict(decode("content"))).write.format("noop").mode("overwrite").save()
    return run


def sparkdl_featurizer(folder, runtime="tensorflow"):
    """(c): readImages -> DeepImageFeaturizer; (d_<runtime>): the same on another runtime
    (``"openvino"``, ``"litert"``, ``"openvino-bf16"``)."""
    from sparkdl import DeepImageFeaturizer, readImages

    name, _, precision = runtime.partition("-")
    # runtime/precision only when not the default: the (c) row runs on any sparkdl version.
    extra = {} if runtime == "tensorflow" else {"runtime": name, "precision": precision or "fp32"}
    featurizer = DeepImageFeaturizer(inputCol="image", outputCol="features", modelName=MODEL,
                                     weights=weights(), batchSize=BATCH, **extra)

    def run():
        featurizer.transform(readImages(folder, pathGlobFilter="*.jpg")) \
            .select("features").write.format("noop").mode("overwrite").save()
    return run


def sparkdl_featurizer_on_bytes(spark, folder):
    """(c2): binaryFile content -> DeepImageFeaturizer (decode inside the inference UDF)."""
    from sparkdl import DeepImageFeaturizer

    featurizer = DeepImageFeaturizer(inputCol="content", outputCol="features", modelName=MODEL,
                                     weights=weights(), batchSize=BATCH)

    def run():
        files = spark.read.format("binaryFile").option("pathGlobFilter", "*.jpg").load(folder)
        featurizer.transform(files).select("features").write.format("noop").mode("overwrite").save()
    return run


def worker_peak_rss_mb():
    """Peak RSS (VmHWM) of each live PySpark Python worker, in MB."""
    peaks = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ")
            if b"pyspark.daemon" not in cmd and b"pyspark/daemon" not in cmd:
                continue
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        peaks.append(int(line.split()[1]) / 1024)
        except OSError:
            continue
    return peaks


def memory_run(folder):
    """Peak worker RSS of (c) on ``folder`` in a fresh session (peaks are per process
    lifetime, so each size gets its own workers): the largest worker and their sum."""
    spark = spark_session("local[2]")
    start = time.perf_counter()
    sparkdl_featurizer(folder)()
    seconds = time.perf_counter() - start
    peaks = worker_peak_rss_mb()
    spark.stop()
    return max(peaks), sum(peaks), len(peaks), seconds


def main():
    global MODEL
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--dir", default="/tmp/sparkdl-bench-jpegs")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-spark-recipe", action="store_true")
    parser.add_argument("--skip-bytes", action="store_true", help="skip (c2)")
    parser.add_argument("--runtimes", default="openvino,litert,openvino-bf16",
                        help="runtimes of the (d) and (e) rows; empty: none")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    MODEL = args.model
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    folder = make_jpegs(args.dir, args.count)
    n = len(jpegs(folder))
    runtimes = [r for r in args.runtimes.split(",") if r]
    loop = plain_loop(folder)
    first = {}
    if not args.skip_spark_recipe:
        # (b) gets Spark workers of its own: sparkdl freezes a worker's heap when it caches a
        # model (see sparkdl.engine.model_cache), which would also speed up (b) in a shared
        # worker. (b0) gets another session: its workers' TensorFlow starts untuned.
        spark = spark_session("local[2]")
        first = timed_rounds({"a": loop, "b": spark_recipe(spark, folder)}, args.rounds)
        spark.stop()
        spark = spark_session("local[2]")
        untuned = timed_rounds({"a": loop, "b0": spark_recipe(spark, folder, tuned=False)},
                               args.rounds)
        spark.stop()
        first["a"] = (None, first["a"][1] + untuned["a"][1])
        first["b0"] = untuned["b0"]
    spark = spark_session("local[2]")
    variants = {"a": loop, "c": sparkdl_featurizer(folder)}
    if not args.skip_bytes:
        variants["c2"] = sparkdl_featurizer_on_bytes(spark, folder)
    for runtime in runtimes:
        variants[f"d_{runtime}"] = sparkdl_featurizer(folder, runtime)
        variants[f"e_{runtime}"] = runtime_loop(folder, runtime, os.cpu_count())
    second = timed_rounds(variants, args.rounds)
    runs = {name: list(ts) for name, (_, ts) in second.items()}
    for name, (_, ts) in first.items():
        runs[name] = ts + (runs[name] if name == "a" else [])
    med = {name: statistics.median(ts) for name, ts in runs.items()}
    rate = {name: round(n / t, 1) for name, t in med.items()}
    result = {
        "images": n, "model": f"{MODEL} {SIZE[0]}x{SIZE[1]} weights={weights()}",
        "master": "local[2]", "rounds": args.rounds,
        "img_per_s": rate,
        "c_over_a": round(med["a"] / med["c"], 2),
        "targets": {"c_over_a": 1.0, "c_over_b": 1.9, "d_fp32_best_over_a": 1.6,
                    "d_over_e": 1.0, "d_bf16_over_a": 2.5},
    }
    if "b" in med:
        result.update(c_over_b=round(med["b"] / med["c"], 2),
                      c_over_b0_untuned=round(med["b0"] / med["c"], 2),
                      b0_over_b=round(med["b"] / med["b0"], 2))
    if "c2" in med:
        result.update(c2_over_a=round(med["a"] / med["c2"], 2))
    for runtime in runtimes:
        d, e = med[f"d_{runtime}"], med[f"e_{runtime}"]
        result[f"d_{runtime}"] = {"over_a": round(med["a"] / d, 2), "over_e": round(e / d, 2),
                                  "over_c": round(med["c"] / d, 2)}
    result["runs_s"] = {k: [round(t, 3) for t in v] for k, v in runs.items()}
    result["load_average_1min"] = os.getloadavg()[0]
    if not args.skip_memory:
        spark.stop()
        folder_4x = make_jpegs(args.dir + "-4x", 4 * n)
        max_1x, sum_1x, workers_1x, _ = memory_run(folder)
        max_4x, sum_4x, workers_4x, t_4x = memory_run(folder_4x)
        result.update({
            "worker_peak_rss_mb_1x": round(max_1x, 1), "worker_peak_rss_mb_4x": round(max_4x, 1),
            "rss_growth_4x": round(max_4x / max_1x - 1, 3), "target_rss_growth": 0.10,
            "workers_peak_rss_sum_mb": {"1x": round(sum_1x, 1), "4x": round(sum_4x, 1)},
            "workers": {"1x": workers_1x, "4x": workers_4x},
            "c_4x_cold_img_per_s": round(4 * n / t_4x, 1),
        })
    else:
        spark.stop()
    save_result(f"featurizer_{MODEL}" if MODEL != "MobileNetV2" else "featurizer", result)


if __name__ == "__main__":
    main()
