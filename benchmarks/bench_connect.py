"""Spark Connect against a classic session: the same jobs on the same data, in one run.

(f) files -> features: ``readImages`` -> ``DeepImageFeaturizer`` (MobileNetV2 224,
weights=None, avg-pooled, batchSize 64) on the JPEGs of ``bench_featurizer.py``, features
written to the ``noop`` sink; (k) ``KerasTransformer`` on the 200k x 64 float Parquet rows of
``bench_keras_transformer.py`` (MLP 64-256-256-10). Classic: a local[2] session in this
process. Connect: a local[2] Connect server in a child process (its own JVM and Python
workers, a free loopback port), driven from this process through
``SparkSession.builder.remote``. Every variant runs once untimed (models shipped, loaded and
traced), then ``--rounds`` rounds run the four variants in turn; medians.
Target: Connect >= 0.9x classic (time_classic / time_connect) for both.

    python benchmarks/bench_connect.py [--count 500] [--rows 200000] [--rounds 5]
"""
import argparse
import contextlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench_keras_transformer import make_model, make_parquet  # noqa: E402
from common import make_jpegs, save_result, spark_session, timed_rounds  # noqa: E402

BATCH = 64


@contextlib.contextmanager
def connect_mode(on):
    """pyspark picks its Connect or classic flavour (``SparkSession.active()``, functions)
    from ``SPARK_CONNECT_MODE_ENABLED``; this process drives both kinds of session."""
    saved = os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)
    if on:
        os.environ["SPARK_CONNECT_MODE_ENABLED"] = "1"
    try:
        yield
    finally:
        os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)
        if saved is not None:
            os.environ["SPARK_CONNECT_MODE_ENABLED"] = saved


def featurize(folder, connect):
    from sparkdl import DeepImageFeaturizer, readImages

    featurizer = DeepImageFeaturizer(inputCol="image", outputCol="features",
                                     modelName="MobileNetV2", weights=None, batchSize=BATCH)

    def run():
        with connect_mode(connect):
            featurizer.transform(readImages(folder, pathGlobFilter="*.jpg")) \
                .select("features").write.format("noop").mode("overwrite").save()
    return run


def keras_transformer(session, data, model_path, connect):
    from sparkdl import KerasTransformer

    transformer = KerasTransformer(inputCol="features", outputCol="y", modelFile=model_path)

    def run():
        with connect_mode(connect):
            transformer.transform(session.read.parquet(data)) \
                .write.format("noop").mode("overwrite").save()
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--jpegs", default="/tmp/sparkdl-bench-jpegs")
    parser.add_argument("--arrays", default="/tmp/sparkdl-bench-arrays")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    folder = make_jpegs(args.jpegs, args.count)
    data = make_parquet(os.path.join(args.arrays, "data"), args.rows)
    model_path = os.path.join(args.arrays, "mlp.keras")
    make_model(model_path)

    from pyspark.sql.connect.session import SparkSession as ConnectSession

    from sparkdl.utils.session import start_connect_server

    classic = spark_session("local[2]")
    server = start_connect_server("local[2]", conf={"spark.ui.enabled": "false"})
    try:
        with connect_mode(True):
            remote = ConnectSession.builder.remote(server.url).getOrCreate()
        variants = {
            "f_classic": featurize(folder, False),
            "f_connect": featurize(folder, True),
            "k_classic": keras_transformer(classic, data, model_path, False),
            "k_connect": keras_transformer(remote, data, model_path, True),
        }
        times = timed_rounds(variants, rounds=args.rounds)
    finally:
        server.stop()
        classic.stop()
    med = {name: t[0] for name, t in times.items()}
    save_result("connect", {
        "images": args.count, "rows": args.rows, "master": "local[2] (both)",
        "featurizer_img_per_s": {"classic": round(args.count / med["f_classic"], 1),
                                 "connect": round(args.count / med["f_connect"], 1)},
        "featurizer_connect_over_classic": round(med["f_classic"] / med["f_connect"], 2),
        "keras_transformer_rows_per_s": {"classic": round(args.rows / med["k_classic"]),
                                         "connect": round(args.rows / med["k_connect"])},
        "keras_transformer_connect_over_classic": round(med["k_classic"] / med["k_connect"], 2),
        "targets": {"featurizer_connect_over_classic": 0.9,
                    "keras_transformer_connect_over_classic": 0.9},
        "median_s": {k: round(v, 3) for k, v in med.items()},
        "runs_s": {k: [round(x, 3) for x in t[1]] for k, t in times.items()},
        "load_average_1min": os.getloadavg()[0],
    })


if __name__ == "__main__":
    main()
