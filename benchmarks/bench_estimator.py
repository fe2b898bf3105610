"""KerasImageFileEstimator training throughput vs plain ``model.fit`` in one process, and the
driver's peak memory for 1x vs 10x the rows.

Both train the same small CNN on the same 64x64 PNGs with the same ``imageLoader``: the plain
baseline through a Keras ``PyDataset`` that calls the loader, sparkdl through ``fit`` on
local[2] (one training task). Throughput is samples/s over the epochs after the first.
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


def plain_fit(rows, model_path, epochs, batch):
    import keras
    import numpy as np

    from sparkdl.estimators.training import EpochTimer

    class Files(keras.utils.PyDataset):
        def __len__(self):
            return (len(rows) + batch - 1) // batch

        def __getitem__(self, i):
            part = rows[i * batch:(i + 1) * batch]
            return (np.stack([loader(p) for p, _ in part]), np.array([y for _, y in part]))

    model = keras.saving.load_model(model_path)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    timer = EpochTimer()
    model.fit(Files(), epochs=epochs, verbose=0, callbacks=[timer])
    return timer.seconds


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
    parser.add_argument("--dir", default="/tmp/sparkdl-bench-shapes")
    parser.add_argument("--workers", type=int, default=2, help="numWorkers figure (1: skip)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    rows = make_shapes(args.dir, args.count)
    model_path = cnn_file(os.path.join(args.dir, "cnn.keras"))
    spark = spark_session("local[2]")
    from sparkdl import KerasImageFileEstimator

    plain = plain_fit(rows, model_path, args.epochs, args.batch)
    estimator = KerasImageFileEstimator(
        inputCol="uri", outputCol="prediction", labelCol="label", modelFile=model_path,
        imageLoader=loader, kerasLoss="sparse_categorical_crossentropy",
        kerasFitParams={"epochs": args.epochs, "batch_size": args.batch, "verbose": 0})
    df = spark.createDataFrame(rows, "uri string, label int")
    estimator.fit(df)  # warm-up: Spark, workers, TF
    start = time.perf_counter()
    model = estimator.fit(df)
    fit_wall = time.perf_counter() - start
    ours = model.fitSummary["history"]["epoch_seconds"]
    rss_1x = peak_rss_mb()
    estimator.setKerasFitParams({"epochs": 1, "batch_size": args.batch, "verbose": 0}) \
        .fit(spark.createDataFrame(rows * 10, "uri string, label int"))
    rss_10x = peak_rss_mb()
    plain_rate = len(rows) / statistics.median(plain[1:])
    our_rate = len(rows) / statistics.median(ours[1:])
    workers = {}
    if args.workers > 1:
        # Same global batch: batch_size is per worker.
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
    save_result("estimator", {
        "samples": len(rows), "image": f"{SIZE}x{SIZE} PNG", "epochs": args.epochs,
        "batch_size": args.batch, "master": "local[2]",
        "plain_fit_samples_per_s": round(plain_rate, 1),
        "sparkdl_fit_samples_per_s": round(our_rate, 1),
        "ratio_fit_over_plain": round(our_rate / plain_rate, 2), "target_ratio": 0.7,
        "sparkdl_fit_wall_s_incl_materialize": round(fit_wall, 2),
        "driver_peak_rss_mb_1x": round(rss_1x, 1), "driver_peak_rss_mb_10x": round(rss_10x, 1),
        "driver_rss_growth_10x": round(rss_10x / rss_1x - 1, 3), "target_rss_growth": 0.10,
        "epoch_seconds": {"plain": [round(t, 3) for t in plain], "sparkdl": [round(t, 3) for t in ours]},
        **workers,
    })


if __name__ == "__main__":
    main()
