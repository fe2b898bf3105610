"""readImages vs Spark's own image reader (spark.read.format("image")).

Both read the same >= 500 JPEGs of 500x375 on local[2] and are fully materialized with the
``noop`` sink; each is run once untimed first, then ``--rounds`` rounds run both in turn
(interleaved, so a shared machine's drift falls on both alike); medians. Throughput divides
by the rows each reader actually produced (the folder may hold more than ``--count`` files
from an earlier, larger run; both read them all).
Target: readImages >= 1.5x the throughput of Spark's reader.

    python benchmarks/bench_read_images.py [--count 500] [--dir /tmp/sparkdl-bench-jpegs]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import make_jpegs, save_result, spark_session, timed_rounds  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--dir", default="/tmp/sparkdl-bench-jpegs")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    folder = make_jpegs(args.dir, args.count)
    spark = spark_session("local[2]")
    from sparkdl import readImages

    def ours():
        readImages(folder, pathGlobFilter="*.jpg").write.format("noop").mode("overwrite").save()

    def sparks():
        spark.read.format("image").option("pathGlobFilter", "*.jpg").load(folder) \
            .write.format("noop").mode("overwrite").save()

    # The rows each reader really produces (every *.jpg of the folder), not --count.
    n = readImages(folder, pathGlobFilter="*.jpg").count()
    n_spark = spark.read.format("image").option("pathGlobFilter", "*.jpg").load(folder).count()
    assert n == n_spark, (n, n_spark)
    timings = timed_rounds({"spark": sparks, "readImages": ours}, args.rounds)
    (t_spark, all_spark), (t_ours, all_ours) = timings["spark"], timings["readImages"]
    save_result("read_images", {
        "images": n, "size": "500x375 JPEG", "master": "local[2]",
        "spark_image_reader_img_per_s": round(n / t_spark, 1),
        "readImages_img_per_s": round(n / t_ours, 1),
        "ratio_readImages_over_spark": round(t_spark / t_ours, 2),
        "target_ratio": 1.5, "rounds": args.rounds, "interleaved": True,
        "runs_s": {"spark": [round(t, 3) for t in all_spark], "readImages": [round(t, 3) for t in all_ours]},
    })


if __name__ == "__main__":
    main()
