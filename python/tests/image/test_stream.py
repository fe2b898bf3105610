"""readImagesStream: a folder that keeps filling, read as a stream, against readImages on the
same files; new files exactly once across restarts; bad files never stop the query; a model on
the stream equals the model on the batch and loads once per worker across micro-batches."""
import os
import sys

import numpy as np
from conftest import origin_name
from PIL import Image
from pyspark import cloudpickle
from pyspark.sql import functions as F

import fixtures
import tiny_image_models as tim
from numerics import assert_close
from sparkdl import readImages, readImagesStream, registerKerasImageUDF

cloudpickle.register_pickle_by_value(sys.modules[__name__])

TIMEOUT = 120  # seconds a query may take before the test fails instead of hanging


def run_available_now(df, sink, checkpoint, **options):
    """Process what the folder holds now into a Parquet ``sink``; returns the query's progress."""
    writer = df.writeStream.format("parquet").option("path", sink) \
        .option("checkpointLocation", checkpoint).trigger(availableNow=True)
    query = writer.start()
    try:
        assert query.awaitTermination(TIMEOUT), "the streaming query did not finish"
        assert query.exception() is None, query.exception()
        return query.recentProgress
    finally:
        query.stop()


def write_png(folder, name, seed, size=(23, 31)):
    path = os.path.join(folder, name)
    tmp = os.path.join(folder, "..", f".{name}.tmp")
    Image.fromarray(fixtures.rgb_array(seed, *size)).save(tmp, format="PNG")
    os.replace(tmp, path)  # as a producer should: written elsewhere, moved in whole
    return path


def test_stream_rows_equal_read_images_but_zero_byte_files_give_no_row(spark, mixed_dir, tmp_path):
    def rows(df):
        return {origin_name(r.image.origin): (r.image, r.error) for r in df.collect()}

    batch = rows(readImages(mixed_dir))
    run_available_now(readImagesStream(mixed_dir), str(tmp_path / "out"), str(tmp_path / "cp"))
    streamed = rows(spark.read.parquet(str(tmp_path / "out")))
    assert batch.pop("empty.png")[1] == "empty file"  # readImages lists it; Spark's scan cannot
    assert streamed == batch
    assert any(error for _, error in streamed.values())  # the broken files are invalid rows
    assert readImagesStream(mixed_dir).schema == readImages(mixed_dir).schema


def test_new_files_are_read_exactly_once_across_restarts(spark, tmp_path):
    folder = tmp_path / "incoming"
    folder.mkdir()
    sink, checkpoint = str(tmp_path / "out"), str(tmp_path / "cp")
    for i in range(3):
        write_png(str(folder), f"a{i}.png", i)
    run_available_now(readImagesStream(str(folder)), sink, checkpoint)
    for i in range(2):
        write_png(str(folder), f"b{i}.png", 10 + i)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    jpeg = fixtures.encode(Image.fromarray(fixtures.rgb_array(3)), "JPEG")
    (folder / "partial.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # still being written
    (folder / "zero.png").write_bytes(b"")
    run_available_now(readImagesStream(str(folder)), sink, checkpoint)  # restarted, same checkpoint
    run_available_now(readImagesStream(str(folder)), sink, checkpoint)  # nothing new

    out = spark.read.parquet(sink).collect()
    names = sorted(origin_name(r.image.origin) for r in out)
    assert names == ["a0.png", "a1.png", "a2.png", "b0.png", "b1.png", "broken.jpg", "partial.jpg"]
    errors = {origin_name(r.image.origin): r.error for r in out}
    assert errors["broken.jpg"] and errors["partial.jpg"]
    assert all(errors[n] is None for n in names if n.endswith(".png"))
    for r in out:
        if r.error is None:
            assert (r.image.height, r.image.width, r.image.nChannels) == (23, 31, 3)


def test_a_model_on_the_stream_equals_the_batch_and_keras(spark, tmp_path):
    folder = tmp_path / "incoming"
    folder.mkdir()
    for i in range(6):
        write_png(str(folder), f"p{i}.png", 20 + i, size=(17 + i, 29 - i))
    model = tim.classifier(seed=21)
    udf = registerKerasImageUDF("stream_classifier", model, batchSize=4)
    stream = readImagesStream(str(folder), maxFilesPerTrigger=2)
    scored = stream.select(F.col("image.origin").alias("origin"), udf("image").alias("p"))
    progress = run_available_now(scored, str(tmp_path / "out"), str(tmp_path / "cp"))
    assert sum(1 for p in progress if p["numInputRows"] > 0) == 3  # 6 files, 2 a micro-batch

    got = {r.origin: r.p for r in spark.read.parquet(str(tmp_path / "out")).collect()}
    batch = {r.origin: r.p for r in readImages(str(folder))
             .select(F.col("image.origin").alias("origin"), udf("image").alias("p")).collect()}
    assert sorted(got) == sorted(batch) and len(got) == 6
    for origin, p in batch.items():
        assert_close(got[origin], p, 1e-5)
    for origin, p in got.items():  # and Keras on the same pixels, resized as the UDF does
        rgb = Image.open(origin.replace("file://", "")).convert("RGB")
        pixels = np.asarray(rgb.resize((tim.SIZE, tim.SIZE), Image.Resampling.BILINEAR),
                            np.float32)
        assert_close(p, tim.predict(model, [pixels])[0], 1e-5)
