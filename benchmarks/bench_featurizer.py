"""DeepImageFeaturizer throughput against (a) a plain single-process Keras loop and (b) Spark's
own recipe (binaryFile -> pandas decode UDF -> pyspark.ml.functions.predict_batch_udf).

Same >= 500 JPEGs of 500x375, MobileNetV2 at 224 with weights=None, avg-pooled features.
(c) is readImages -> DeepImageFeaturizer on local[2], selecting the features only, so Spark
chains the two UDFs in one Python worker; (c2) feeds binaryFile's bytes straight to the
featurizer, which decodes inside its own UDF. Every variant runs once untimed first
(models built and cached), then ``--rounds`` rounds run every variant in turn; medians.
(b) runs in a Spark session of its own, interleaved with (a); (c) and (c2) in another, also
with (a).
Targets: c/a >= 1.0 and c/b >= 1.9.
Also the peak RSS of the largest Python worker for 1x vs 4x the images, each in a fresh
session (target: < 10% growth).

    python benchmarks/bench_featurizer.py [--count 500] [--rounds 7] [--skip-memory]
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


def build_model():
    import keras

    keras.utils.set_random_seed(0)
    return keras.applications.MobileNetV2(include_top=False, weights=None, pooling="avg",
                                          input_shape=SIZE + (3,))


def plain_loop(folder):
    """(a): one process, Pillow decode + resize, predict_on_batch, TF on all cores."""
    import keras
    import numpy as np
    from PIL import Image

    model = build_model()
    prep = keras.applications.mobilenet_v2.preprocess_input
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".jpg"))

    def run():
        for start in range(0, len(files), BATCH):
            batch = np.stack([
                np.asarray(Image.open(f).convert("RGB").resize(SIZE[::-1], Image.Resampling.BOX), np.float32)
                for f in files[start:start + BATCH]])
            model.predict_on_batch(prep(batch))
    return run


def spark_recipe(spark, folder):
    """(b): Spark's documented recipe for batch inference."""
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
        import keras

        model = build_model()
        prep = keras.applications.mobilenet_v2.preprocess_input

        def predict(x):
            return model.predict_on_batch(prep(x))
        return predict

    predict = predict_batch_udf(make_predict_fn, return_type=ArrayType(FloatType()),
                                batch_size=BATCH, input_tensor_shapes=[list(SIZE) + [3]])

    def run():
        spark.read.format("binaryFile").option("pathGlobFilter", "*.jpg").load(folder) \
            .select(predict(decode("content"))).write.format("noop").mode("overwrite").save()
    return run


def sparkdl_featurizer(folder):
    """(c): readImages -> DeepImageFeaturizer."""
    from sparkdl import DeepImageFeaturizer, readImages

    featurizer = DeepImageFeaturizer(inputCol="image", outputCol="features", modelName=MODEL,
                                     weights=None, batchSize=BATCH)

    def run():
        featurizer.transform(readImages(folder, pathGlobFilter="*.jpg")) \
            .select("features").write.format("noop").mode("overwrite").save()
    return run


def sparkdl_featurizer_on_bytes(spark, folder):
    """(c2): binaryFile content -> DeepImageFeaturizer (decode inside the inference UDF)."""
    from sparkdl import DeepImageFeaturizer

    featurizer = DeepImageFeaturizer(inputCol="content", outputCol="features", modelName=MODEL,
                                     weights=None, batchSize=BATCH)

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
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--dir", default="/tmp/sparkdl-bench-jpegs")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    folder = make_jpegs(args.dir, args.count)
    n = len([f for f in os.listdir(folder) if f.endswith(".jpg")])
    # (b) gets Spark workers of its own: sparkdl freezes a worker's heap when it caches a
    # model (see sparkdl.engine.model_cache), which would also speed up (b) in a shared worker.
    loop = plain_loop(folder)
    spark = spark_session("local[2]")
    first = timed_rounds({"a": loop, "b": spark_recipe(spark, folder)}, args.rounds)
    spark.stop()
    spark = spark_session("local[2]")
    second = timed_rounds({"a": loop, "c": sparkdl_featurizer(folder),
                           "c2": sparkdl_featurizer_on_bytes(spark, folder)}, args.rounds)
    runs_a = first["a"][1] + second["a"][1]
    t_a = statistics.median(runs_a)
    (t_b, runs_b), (t_c, runs_c), (t_c2, runs_c2) = first["b"], second["c"], second["c2"]
    result = {
        "images": n, "model": f"{MODEL} {SIZE[0]}x{SIZE[1]} weights=None", "master": "local[2]",
        "a_plain_loop_img_per_s": round(n / t_a, 1),
        "b_spark_recipe_img_per_s": round(n / t_b, 1),
        "c_sparkdl_img_per_s": round(n / t_c, 1),
        "c_over_a": round(t_a / t_c, 2), "c_over_b": round(t_b / t_c, 2),
        "c2_bytes_in_img_per_s": round(n / t_c2, 1),
        "c2_over_a": round(t_a / t_c2, 2), "c2_over_b": round(t_b / t_c2, 2),
        "targets": {"c_over_a": 1.0, "c_over_b": 1.9},
        "runs_s": {"a": runs_a, "b": runs_b, "c": runs_c, "c2": runs_c2},
    }
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
    save_result("featurizer", result)


if __name__ == "__main__":
    main()
