"""The README's main job: local Spark, sparkdl's bundled sample photos, read into a DataFrame.

Run with ``python -m sparkdl.demo [PATH]`` (``make demo``).
"""
import sys
import time


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    from sparkdl.resources import samplesDir
    from sparkdl.utils.session import local_session

    path = argv[0] if argv else samplesDir()
    spark = local_session("local[*]", app_name="sparkdl-demo")
    spark.sparkContext.setLogLevel("ERROR")
    from sparkdl import readImages

    start = time.time()
    df = readImages(path)
    df.selectExpr(
        "substring_index(image.origin, '/', -1) AS file", "image.height", "image.width",
        "image.nChannels", "image.mode", "length(image.data) AS bytes", "error",
    ).show(truncate=False)
    print(f"read {df.count()} images from {path} in {time.time() - start:.1f} s")
    spark.stop()


if __name__ == "__main__":
    main()
