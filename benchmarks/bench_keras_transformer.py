"""KerasTransformer throughput against (i) ``model.predict`` in one process and (ii) the
naive Spark recipe (a ``pandas_udf`` that ``np.stack``s the Series, model cached in a
module-level dict: ``naive_keras_udf.py``).

>= 200k rows of 64 float32 values, written to Parquet once (two files) and read back; a
seeded MLP 64 -> 256 -> 256 -> 10 (relu). (ii) and (iii) run on local[2] and are fully
materialized with the ``noop`` sink (input and output columns); (i) is
``model.predict_on_batch`` on the same numpy array in the batches sparkdl predicts in (as
sparkdl calls it), TensorFlow on all cores. (ii) and (iii) each run in a child process with
a Spark session of its own (so neither shares Python workers with the other); every variant
runs once untimed first (models loaded, functions traced), then ``--repeat`` rounds run
(i), (ii), (iii) and the floors in turn, so a shared machine's load falls on all alike;
medians.
Targets: iii/i >= 0.4 and iii/ii >= 1.5. Two floors are timed alongside: the same read and
noop write without a UDF, and with an Arrow UDF of the same types that does no work (the
cost of Spark's Arrow UDF plumbing, which no UDF can go below), and the CPU seconds each
variant spends in the driver, the JVM and the Python workers (from /proc, Linux).

    python benchmarks/bench_keras_transformer.py [--rows 200000] [--batch-size N] [--repeat 7]
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import save_result, spark_session  # noqa: E402

WIDTH = 64


def make_parquet(folder, rows, seed=0, files=2):
    """``rows`` x 64 float32 (column ``features``, plus ``id``) in ``files`` Parquet files;
    reused when already there."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    marker = os.path.join(folder, f"_rows_{rows}")
    if os.path.exists(marker):
        return folder
    os.makedirs(folder, exist_ok=True)
    for f in os.listdir(folder):
        os.remove(os.path.join(folder, f))
    rng = np.random.default_rng(seed)
    per = -(-rows // files)
    for k in range(files):
        n = min(per, rows - k * per)
        values = rng.standard_normal(n * WIDTH, dtype=np.float32)
        features = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * WIDTH),
                                            pa.array(values))
        table = pa.table({"id": pa.array(np.arange(k * per, k * per + n)), "features": features})
        pq.write_table(table, os.path.join(folder, f"part-{k:03d}.parquet"))
    open(marker, "w").close()
    return folder


def read_numpy(folder):
    import numpy as np
    import pyarrow.parquet as pq

    table = pq.read_table(folder, columns=["features"])
    column = table.column("features").combine_chunks()
    return np.asarray(column.flatten().to_numpy(), np.float32).reshape(len(column), WIDTH)


def make_model(path):
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((WIDTH,)),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dense(256, activation="relu"),
        keras.layers.Dense(10),
    ])
    model.save(path)
    return model


def child_variants(own, spark, data, model_path, batch_size):
    """The Spark variants of one child process: ``own`` ("ii" or "iii") and the floors."""
    from naive_keras_udf import naive_udf

    from sparkdl import KerasTransformer

    def naive():
        df = spark.read.parquet(data)
        df.withColumn("y", naive_udf(model_path)("features")) \
            .write.format("noop").mode("overwrite").save()

    transformer = KerasTransformer(inputCol="features", outputCol="y",
                                   modelFile=model_path, batchSize=batch_size or None)

    def sparkdl():
        transformer.transform(spark.read.parquet(data)) \
            .write.format("noop").mode("overwrite").save()

    def scan_only():  # floor: the same read and noop write, no UDF
        spark.read.parquet(data).write.format("noop").mode("overwrite").save()

    noop = noop_arrow_udf()

    def arrow_noop():  # floor: the same Arrow UDF plumbing, a constant 10-float output
        spark.read.parquet(data).withColumn("y", noop("features")) \
            .write.format("noop").mode("overwrite").save()

    return {own: naive if own == "ii" else sparkdl, "scan_only": scan_only,
            "arrow_noop": arrow_noop}


def serve(own, data, model_path, batch_size):
    """Child process: a Spark session of its own; runs each variant once untimed, says
    ``ready``, then runs the variant named on each stdin line and answers its seconds and
    CPU seconds as one JSON line."""
    import json

    spark = spark_session("local[2]")
    variants = child_variants(own, spark, data, model_path, batch_size)
    for fn in variants.values():
        fn()
    arrow_batch = int(spark.conf.get("spark.sql.parquet.columnarReaderBatchSize"))
    print(json.dumps({"ready": True, "arrow_batch": arrow_batch,
                      "max_records": spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")}),
          flush=True)
    for line in sys.stdin:
        name = line.strip()
        before = cpu_seconds()
        start = time.perf_counter()
        variants[name]()
        seconds = time.perf_counter() - start
        after = cpu_seconds()
        cpu = {k: after[k] - before[k] for k in after} if before is not None else None
        print(json.dumps({"s": seconds, "cpu": cpu}), flush=True)
    spark.stop()


class Child:
    """A ``serve`` subprocess driven one variant at a time."""

    def __init__(self, own, args, data, model_path):
        import subprocess

        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve", own, "--dir", args.dir,
             "--rows", str(args.rows), "--batch-size", str(args.batch_size)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = self._answer()

    def _answer(self):
        import json

        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("benchmark child process ended early")
            if line.startswith("{"):
                return json.loads(line)

    def run(self, name):
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=0,
                        help="KerasTransformer batchSize; 0 (default) leaves it unset (auto)")
    parser.add_argument("--dir", default="/tmp/sparkdl-bench-arrays")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--serve", choices=("ii", "iii"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Workers import naive_keras_udf (the naive recipe's module-level model cache) from here.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in [HERE, os.environ.get("PYTHONPATH")] if p)
    data = os.path.join(args.dir, "data")
    model_path = os.path.join(args.dir, "mlp.keras")
    if args.serve:
        return serve(args.serve, data, model_path, args.batch_size)
    make_parquet(data, args.rows)
    model = make_model(model_path)
    x = read_numpy(data)
    # The naive recipe (ii) and sparkdl (iii) each get a Spark session in a process of its
    # own, so workers of their own (sparkdl freezes a worker's heap when it caches a model,
    # sparkdl.engine.model_cache, which would also speed up (ii) in a shared worker); the
    # parent interleaves them round by round with (i) and the floors.
    children = {own: Child(own, args, data, model_path) for own in ("ii", "iii")}
    from sparkdl.engine.tensor_udf import TensorInput, autoBatchSize

    # (i) predicts in the batches the transformer predicts in: batchSize, or with auto the
    # Arrow batch Spark hands over from Parquet (columnarReaderBatchSize rows).
    arrow_batch = children["iii"].info["arrow_batch"]
    batch = args.batch_size or min(arrow_batch,
                                   autoBatchSize([TensorInput("x", (WIDTH,), "float32")]))

    def in_process():  # predict_on_batch in the transformer's batches, as sparkdl calls it
        for start in range(0, len(x), batch):
            model.predict_on_batch(x[start:start + batch])

    runs = {name: [] for name in ("i", "ii", "iii", "scan_only", "arrow_noop")}
    cpus = {name: [] for name in runs}
    # One untimed round first: Spark ends a Python worker idle for a minute, and the first
    # child to be ready waited for the other's warm-up; its workers may have to start again.
    for rnd in range(-1, args.repeat):
        before = cpu_seconds()
        start = time.perf_counter()
        in_process()
        seconds = time.perf_counter() - start
        if rnd >= 0:
            runs["i"].append(seconds)
            if before is not None:
                after = cpu_seconds()
                cpus["i"].append({"driver": after["driver"] - before["driver"]})
        for child, name in (("ii", "ii"), ("iii", "iii"), ("iii", "scan_only"),
                            ("iii", "arrow_noop")):
            answer = children[child].run(name)
            if rnd >= 0:
                runs[name].append(answer["s"])
                if answer["cpu"]:
                    cpus[name].append(answer["cpu"])
    for child in children.values():
        child.close()
    med = {name: statistics.median(r) for name, r in runs.items()}
    cpu = {name: {k: round(statistics.median(c[k] for c in cs), 2) for k in cs[0]}
           for name, cs in cpus.items() if cs}
    n = args.rows
    save_result("keras_transformer", {
        "rows": n, "row": f"{WIDTH} float32", "model": "MLP 64-256-256-10 relu",
        "master": "local[2]", "batch_size": args.batch_size or f"auto ({batch})",
        "arrow_max_records_per_batch": children["iii"].info["max_records"],
        "i_predict_on_batch_rows_per_s": round(n / med["i"]),
        "ii_naive_pandas_udf_rows_per_s": round(n / med["ii"]),
        "iii_keras_transformer_rows_per_s": round(n / med["iii"]),
        "iii_over_i": round(med["i"] / med["iii"], 2),
        "iii_over_ii": round(med["ii"] / med["iii"], 2),
        "ii_over_i": round(med["i"] / med["ii"], 2),
        "targets": {"iii_over_i": 0.4, "iii_over_ii": 1.5},
        "interleaved": "i, ii, iii, floors in turn each round; ii and iii in their own processes",
        "floors_s": {"scan_only": round(med["scan_only"], 3),
                     "arrow_noop_udf": round(med["arrow_noop"], 3)},
        "median_s": {k: round(v, 3) for k, v in med.items()},
        "cpu_s": cpu,
        "runs_s": {k: [round(t, 3) for t in v] for k, v in runs.items()},
        "load_average_1min": os.getloadavg()[0],
    })


def noop_arrow_udf():
    """An Arrow UDF with KerasTransformer's input and output types that does no work."""
    from typing import Iterator

    import numpy as np
    import pyarrow as pa
    from pyspark.sql.functions import arrow_udf

    @arrow_udf("array<float>")
    def noop(batches: Iterator[pa.Array]) -> Iterator[pa.Array]:
        for batch in batches:
            n = len(batch)
            yield pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * 10),
                                           pa.array(np.zeros(n * 10, np.float32)))
    return noop


def cpu_seconds():
    """CPU seconds used so far by this process ("driver"), its JVM ("jvm") and the JVM's
    Python workers ("workers"), from /proc (Linux); None elsewhere. Workers are reused
    between jobs (worker reuse), so differences over a job count its work."""
    if not os.path.isdir("/proc/self"):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    stats = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                head, _, rest = f.read().rpartition(")")
            fields = rest.split()
            stats[int(pid)] = (head.partition("(")[2], int(fields[1]),
                               (int(fields[11]) + int(fields[12])) / tick)
        except (OSError, IndexError, ValueError):
            continue
    children = {}
    for pid, (_, ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    out = {"driver": 0.0, "jvm": 0.0, "workers": 0.0}
    stack = [(os.getpid(), "driver")]
    while stack:
        pid, role = stack.pop()
        name, _, cpu = stats.get(pid, ("", 0, 0.0))
        role = "jvm" if name == "java" else ("workers" if role == "jvm" else role)
        out[role] += cpu
        stack += [(c, role) for c in children.get(pid, [])]
    return out


if __name__ == "__main__":
    main()
