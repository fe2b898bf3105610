"""readImages vs Spark's own image reader (spark.read.format("image")).

Both read the same >= 500 JPEGs of 500x375 on local[2] and are fully materialized with the
``noop`` sink; each is run once untimed first, then timed (median of 3).
Target: readImages >= 1.5x the throughput of Spark's reader.

    python benchmarks/bench_read_images.py [--count 500] [--dir /tmp/sparkdl-bench-jpegs]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import make_jpegs, save_result, spark_session, timed  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--dir", default="/tmp/sparkdl-bench-jpegs")
    args = parser.parse_args()
    folder = make_jpegs(args.dir, args.count)
    spark = spark_session("local[2]")
    from sparkdl import readImages

    def ours():
        readImages(folder, pathGlobFilter="*.jpg").write.format("noop").mode("overwrite").save()

    def sparks():
        spark.read.format("image").option("pathGlobFilter", "*.jpg").load(folder) \
            .write.format("noop").mode("overwrite").save()

    t_spark, all_spark = timed(sparks)
    t_ours, all_ours = timed(ours)
    n = args.count
    save_result("read_images", {
        "images": n, "size": "500x375 JPEG", "master": "local[2]",
        "spark_image_reader_img_per_s": round(n / t_spark, 1),
        "readImages_img_per_s": round(n / t_ours, 1),
        "ratio_readImages_over_spark": round(t_spark / t_ours, 2),
        "target_ratio": 1.5,
        "runs_s": {"spark": [round(t, 3) for t in all_spark], "readImages": [round(t, 3) for t in all_ours]},
    })


if __name__ == "__main__":
    main()
