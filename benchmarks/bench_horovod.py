"""HorovodRunner: launch overhead and data-parallel training throughput.

- Launch overhead, np=2 as a barrier job on local[2], per backend: from ``run()`` being called
  on the driver to rank 0's ``main`` starting, and to its first training step starting and
  ending (the first step includes tracing the train function and the first reduction).
- Throughput: samples/s of np=2 (two ranks, one core each, DistributedOptimizer averaging
  gradients) vs one process (np=-1, all cores), same model and the same global batch,
  measured on the epochs after the first.

Each configuration runs once untimed (warm-up), then ``--repeat`` rounds run every
configuration in turn (so that all see the same machine load); figures are medians.

    python benchmarks/bench_horovod.py [--samples 2048] [--batch 256] [--epochs 4] [--repeat 3]
"""
import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import save_result, spark_session  # noqa: E402

SIZE, CLASSES = 32, 10


def train(samples, global_batch, epochs):
    """One rank: a small CNN on its shard of a synthetic 32x32 image set; returns timings.

    A convnet has much compute per parameter, like real vision models, so the step time is
    not just the gradient exchange (~30k parameters, ~60 MFLOP per sample per step)."""
    main_start = time.time()
    import keras
    import numpy as np

    from sparkdl import horovod as shvd
    from sparkdl.horovod.tensorflow.keras import (
        BroadcastGlobalVariablesCallback,
        DistributedOptimizer,
    )

    rank, size = shvd.rank(), shvd.size()
    rng = np.random.default_rng(rank)
    n = samples // size
    x = rng.normal(size=(n, SIZE, SIZE, 3)).astype("float32")
    y = rng.integers(0, CLASSES, size=(n,))
    keras.utils.set_random_seed(rank)
    model = keras.Sequential([
        keras.Input((SIZE, SIZE, 3)),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(CLASSES),
    ])
    model.compile(optimizer=DistributedOptimizer(keras.optimizers.SGD(0.01)),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=False)
    times = {"main_start": main_start, "epochs": []}

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            times.setdefault("first_step_begin", time.time())

        def on_train_batch_end(self, batch, logs=None):
            times.setdefault("first_step_end", time.time())

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times["epochs"].append(time.perf_counter() - self.start)

    model.fit(x, y, batch_size=global_batch // size, epochs=epochs, shuffle=False, verbose=0,
              callbacks=[BroadcastGlobalVariablesCallback(0), Timer()])
    times["size"] = size
    return times


def run_once(np_, backend, args):
    from sparkdl.horovod import HorovodRunner

    runner = HorovodRunner(np=np_, backend=backend, driver_log_verbosity="log_callback_only")
    called = time.time()
    times = runner.run(train, samples=args.samples, global_batch=args.batch, epochs=args.epochs)
    epochs = times["epochs"][1:] or times["epochs"]  # the first one traces the step
    steady = statistics.median(epochs)
    return {
        "to_main_s": times["main_start"] - called,
        "to_first_step_s": times["first_step_begin"] - called,
        "to_first_step_end_s": times["first_step_end"] - called,
        "samples_per_s": args.samples / steady,
    }


def median_of(runs):
    return {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0]}


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=256, help="global batch size")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    spark_session("local[2]")
    from sparkdl.horovod.runner import horovod_available

    backends = ["horovod", "tensorflow"] if horovod_available() else ["tensorflow"]
    result = {
        "master": "local[2]", "samples": args.samples, "global_batch": args.batch,
        "epochs": args.epochs,
        "model": f"CNN {SIZE}x{SIZE}x3 conv32-conv32-pool-conv64-gap-{CLASSES}, SGD",
    }
    configs = {"one_process": (-1, backends[0])}
    configs.update({f"np2_{b}": (2, b) for b in backends})
    for np_, backend in configs.values():  # warm-up: Python workers, OS caches
        run_once(np_, backend, args)
    # Rounds interleave the configurations, so that each sees the same machine load.
    runs = {name: [] for name in configs}
    for _ in range(args.repeat):
        for name, (np_, backend) in configs.items():
            runs[name].append(run_once(np_, backend, args))
    for name in configs:
        result[name] = median_of(runs[name])
        result[name]["runs_samples_per_s"] = [round(r["samples_per_s"]) for r in runs[name]]
    for backend in backends:
        result[f"np2_{backend}"]["speedup_vs_one_process"] = round(
            result[f"np2_{backend}"]["samples_per_s"] / result["one_process"]["samples_per_s"], 2)
    save_result("horovod", result)


if __name__ == "__main__":
    main()
