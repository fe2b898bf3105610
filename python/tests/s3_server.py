"""A real S3 server on loopback (moto in server mode) for the remote-file tests.

``s3_server(spark)`` starts it and points boto3 (the tests' reference), pyarrow on the driver
and Spark's Python workers (through ``SparkContext.environment``, which every UDF created
afterwards carries) at it with the standard AWS variables; nothing leaves 127.0.0.1.
"""
import contextlib
import os

AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}


@contextlib.contextmanager
def s3_server(spark, bucket="sparkdl-tests"):
    """Yields a boto3 client of a fresh S3 server holding an empty ``bucket``."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = dict(AWS, AWS_ENDPOINT_URL=f"http://{host}:{port}")
    saved = {k: os.environ.get(k) for k in env}
    sc = spark.sparkContext
    saved_sc = {k: sc.environment.get(k) for k in env}
    os.environ.update(env)
    sc.environment.update(env)
    from sparkdl.utils import fs

    fs._FILESYSTEMS.clear()  # the driver's cached S3 clients point at an earlier server
    try:
        client = boto3.client("s3")
        client.create_bucket(Bucket=bucket)
        yield client
    finally:
        for target, old in ((os.environ, saved), (sc.environment, saved_sc)):
            for k, v in old.items():
                if v is None:
                    target.pop(k, None)
                else:
                    target[k] = v
        fs._FILESYSTEMS.clear()
        server.stop()
