"""Image URIs on a real S3 server (moto on loopback) through the inference stages."""

from s3_server import s3_server
from sparkdl import DeepImageFeaturizer
from sparkdl.resources import samplesDir
from numerics import assert_close


def test_featurizer_fed_s3_uris_equals_local_files_and_bad_schemes_are_null(spark):
    featurizer = DeepImageFeaturizer(inputCol="uri", outputCol="f", modelName="MobileNetV3Small",
                                     weights=None)
    local = f"{samplesDir()}/coffee.jpg"
    with s3_server(spark) as client:
        with open(local, "rb") as f:
            client.put_object(Bucket="sparkdl-tests", Key="coffee.jpg", Body=f.read())
        uris = ["s3://sparkdl-tests/coffee.jpg", "s3a://sparkdl-tests/coffee.jpg",
                "nosuchfs://host/coffee.jpg", "s3a://sparkdl-tests/missing.jpg", local]
        df = spark.createDataFrame([(u,) for u in uris], "uri string")
        rows = featurizer.transform(df).collect()  # a row no file system reads fails no task
    want = rows[-1].f.toArray()
    for row in rows[:2]:
        assert_close(row.f.toArray(), want, 1e-5)
    assert rows[2].f is None and rows[3].f is None
