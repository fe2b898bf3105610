"""KerasImageFileEstimator training throughput vs plain ``model.fit`` in one process, and the
driver's peak memory for 1x vs 10x the rows.

Like for like: both train the same small CNN on the same 64x64 PNGs decoded once by the same
``imageLoader`` (sparkdl from the Parquet store of decoded arrays it writes before training,
the baseline from those arrays in memory: ``model.fit(x, y)``), with the same optimizer,
loss and metrics (``accuracy``) and the same TensorFlow threads (the estimator's training
task gets ``spark.task.cpus`` = 1 intra-op thread; the baseline, in a fresh process, too).
Throughput is samples/s over the epochs after the first; ``--rounds`` rounds alternate a
baseline process and a sparkdl fit; medians over all those epochs.
Driver memory: the driver's peak RSS (VmHWM) of one fit on 1x and on 10x the rows, each in
a fresh process (a peak read after other work in the same process could not show growth).
Targets: fit >= 0.7x plain; driver peak RSS growth from 1x to 10x rows < 10%.
Also reported: ``numWorkers=--workers`` (HorovodRunner, same global batch) vs one task.

    python benchmarks/bench_estimator.py [--count 512] [--epochs 4] [--workers 2]
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import save_result, spark_session  # noqa: E402

SIZE = 64


def loader(uri):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(uri).convert("RGB"), np.float32) / 255.0


def make_shapes(folder, count):
    import numpy as np
    from PIL import Image, ImageDraw

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(count):
        path = os.path.join(folder, f"s{i:05d}.png")
        label = i % 2
        if not os.path.exists(path):
            img = Image.new("RGB", (SIZE, SIZE), tuple(int(v) for v in rng.integers(0, 60, 3)))
            r = int(rng.integers(8, 20))
            cx, cy = (int(v) for v in rng.integers(r + 1, SIZE - r - 1, 2))
            draw = ImageDraw.Draw(img)
            (draw.ellipse if label == 0 else draw.rectangle)(
                [cx - r, cy - r, cx + r, cy + r], fill=tuple(int(v) for v in rng.integers(120, 256, 3)))
            img.save(path)
        rows.append((path, label))
    return rows


def cnn_file(path):
    import keras

    keras.utils.set_random_seed(0)
    keras.Sequential([
        keras.Input((SIZE, SIZE, 3)),
        keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(2, activation="softmax"),
    ]).save(path)
    return path


def decoded(rows):
    """The images decoded once by ``loader``, and their labels: what both sides train on."""
    import numpy as np

    return np.stack([loader(p) for p, _ in rows]), np.array([y for _, y in rows], np.int32)


def plain_fit(rows, model_path, epochs, batch, threads):
    """The baseline, in a fresh process: ``model.fit`` on the pre-decoded arrays, with the
    TensorFlow threads, optimizer, loss and metrics the estimator's training task uses."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    from sparkdl.estimators.training import EpochTimer

    x, y = decoded(rows)
    keras.utils.set_random_seed(0)
    model = keras.saving.load_model(model_path)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    timer = EpochTimer()
    model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=True, verbose=0, callbacks=[timer])
    return timer.seconds


def fit_once(spark, rows, model_path, epochs, batch):
    from sparkdl import KerasImageFileEstimator

    estimator = KerasImageFileEstimator(
        inputCol="uri", outputCol="prediction", labelCol="label", modelFile=model_path,
        imageLoader=loader, kerasLoss="sparse_categorical_crossentropy",
        kerasFitParams={"epochs": epochs, "batch_size": batch, "verbose": 0})
    return estimator, estimator.fit(spark.createDataFrame(rows, "uri string, label int"))


def child(mode, args):
    """Run ``mode`` in a fresh Python process; returns its JSON answer."""
    import json
    import subprocess

    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", mode, "--count", str(args.count),
         "--epochs", str(args.epochs), "--batch", str(args.batch), "--dir", args.dir,
         "--threads", str(args.threads)],
        check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def run_child(args, rows, model_path):
    import json

    if args.child == "plain":
        answer = {"epoch_seconds": plain_fit(rows, model_path, args.epochs, args.batch,
                                             args.threads)}
    else:  # "memory-<k>": the driver's peak RSS over one fit on k x the rows
        k = int(args.child.split("-")[1])
        spark = spark_session("local[2]")
        fit_once(spark, rows * k, model_path, 1, args.batch)
        answer = {"driver_peak_rss_mb": peak_rss_mb()}
        spark.stop()
    print(json.dumps(answer), flush=True)


def peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="TensorFlow threads of the baseline: the estimator's training task "
                             "gets spark.task.cpus (1) intra-op threads")
    parser.add_argument("--dir", default="/tmp/sparkdl-bench-shapes")
    parser.add_argument("--workers", type=int, default=2, help="numWorkers figure (1: skip)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    rows = make_shapes(args.dir, args.count)
    model_path = os.path.join(args.dir, "cnn.keras")
    if args.child:
        return run_child(args, rows, model_path)
    cnn_file(model_path)
    spark = spark_session("local[2]")
    estimator, _ = fit_once(spark, rows, model_path, args.epochs, args.batch)  # warm-up
    plain, ours = [], []
    for _ in range(args.rounds):  # interleaved: a fresh baseline process, then one fit
        plain += child("plain", args)["epoch_seconds"][1:]
        _, model = fit_once(spark, rows, model_path, args.epochs, args.batch)
        ours += model.fitSummary["history"]["epoch_seconds"][1:]
    plain_rate = len(rows) / statistics.median(plain)
    our_rate = len(rows) / statistics.median(ours)
    workers = {}
    if args.workers > 1:
        # Same global batch: batch_size is per worker.
        df = spark.createDataFrame(rows, "uri string, label int")
        dist = estimator.copy().setNumWorkers(args.workers).setKerasFitParams(
            {"epochs": args.epochs, "batch_size": args.batch // args.workers, "verbose": 0})
        dist.fit(df)  # warm-up
        start = time.perf_counter()
        summary = dist.fit(df).fitSummary
        wall = time.perf_counter() - start
        epoch_rows = summary["stepsPerEpoch"] * args.workers * (args.batch // args.workers)
        rate = epoch_rows / statistics.median(summary["history"]["epoch_seconds"][1:])
        workers = {"workers": args.workers,
                   "sparkdl_fit_workers_samples_per_s": round(rate, 1),
                   "ratio_workers_over_one_task": round(rate / our_rate, 2),
                   "sparkdl_fit_workers_wall_s_incl_materialize": round(wall, 2)}
    spark.stop()
    # Driver memory: each size in a fresh process, so a peak (VmHWM) can only be its own.
    rss_1x = child("memory-1", args)["driver_peak_rss_mb"]
    rss_10x = child("memory-10", args)["driver_peak_rss_mb"]
    save_result("estimator", {
        "samples": len(rows), "image": f"{SIZE}x{SIZE} PNG", "epochs": args.epochs,
        "batch_size": args.batch, "master": "local[2]", "rounds": args.rounds,
        "baseline": (f"model.fit on the pre-decoded arrays, fresh process, TF intra-op "
                     f"{args.threads} / inter-op 1, adam, metrics=['accuracy']"),
        "plain_fit_samples_per_s": round(plain_rate, 1),
        "sparkdl_fit_samples_per_s": round(our_rate, 1),
        "ratio_fit_over_plain": round(our_rate / plain_rate, 2), "target_ratio": 0.7,
        "driver_peak_rss_mb_1x": round(rss_1x, 1), "driver_peak_rss_mb_10x": round(rss_10x, 1),
        "driver_rss_growth_10x": round(rss_10x / rss_1x - 1, 3), "target_rss_growth": 0.10,
        "epoch_seconds": {"plain": [round(t, 3) for t in plain],
                          "sparkdl": [round(t, 3) for t in ours]},
        **workers,
    })


if __name__ == "__main__":
    main()
