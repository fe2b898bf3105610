"""sparkdl on a Spark Connect session: pretrained predictions, a Keras model on array columns
(as a stage and as a SQL function, checked against Keras run directly) and HorovodRunner.

    python examples/spark_connect.py                      # a local Connect server (free port)
    python examples/spark_connect.py --remote sc://host:15002

With ``--remote``, the sample photos' folder must be readable by the server's executors.
"""
import argparse
import os
import sys
import tempfile

import numpy as np


def rank_sum():
    """Each rank adds rank + 1 through the backend; rank 0's result comes back."""
    import tensorflow as tf

    from sparkdl import horovod as shvd
    from sparkdl.horovod.tensorflow import allreduce

    total = float(allreduce(tf.constant(float(shvd.rank() + 1)), average=False))
    shvd.log_to_driver(f"rank {shvd.rank()} of {shvd.size()}: sum {total}")
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--remote", help="Spark Connect URL (default: start a local server)")
    args = parser.parse_args()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from pyspark.sql import SparkSession

    from sparkdl.utils.session import start_connect_server

    server = None
    if args.remote is None:
        server = start_connect_server("local[2]")
        print(f"started a local Spark Connect server at {server.url.split('/;')[0]}")
    try:
        spark = SparkSession.builder.remote(args.remote or server.url).getOrCreate()
        run(spark)
        spark.stop()
    finally:
        if server is not None:
            server.stop()


def run(spark):
    import keras

    from sparkdl import (DeepImagePredictor, HorovodRunner, KerasTransformer, readImages,
                         registerKerasUDF)
    from sparkdl.resources import samplesDir

    # 1. Pretrained predictions (EfficientNetLite0's ImageNet weights work offline).
    images = readImages(samplesDir(), dropInvalid=True)
    predictor = DeepImagePredictor(inputCol="image", outputCol="top", modelName="EfficientNetLite0",
                                   decodePredictions=True, topK=1)
    for row in predictor.transform(images).select("image.origin", "top").collect():
        top = row.top[0]
        print(f"{os.path.basename(row.origin):28s} {top.description:20s} {top.probability:.3f}")

    # 2. Your own Keras model: a stage and a SQL function on the same session.
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    path = os.path.join(tempfile.mkdtemp(), "mlp.keras")
    model.save(path)
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    df = spark.createDataFrame([(i, r.tolist()) for i, r in enumerate(x)], "id int, x array<float>")
    staged = KerasTransformer(inputCol="x", outputCol="y", modelFile=path).transform(df)
    registerKerasUDF("mlp", path)
    df.createOrReplaceTempView("rows")
    sql = spark.sql("SELECT id, mlp(x) AS y FROM rows ORDER BY id").collect()
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose([r.y for r in sorted(staged.collect())], expected, atol=1e-5)
    np.testing.assert_allclose([r.y for r in sql], expected, atol=1e-5)
    print("KerasTransformer and the SQL function agree with model.predict")

    # 3. HorovodRunner: a barrier job whose task 0 hosts the rendezvous; logs come at the end.
    total = HorovodRunner(np=2, backend="tensorflow",
                          driver_log_verbosity="log_callback_only").run(rank_sum)
    print(f"HorovodRunner(np=2): rank 0 returned {total} (expected 3.0)")


if __name__ == "__main__":
    main()
