"""Every entry point on a Spark Connect session gives what it gives on a classic one."""
import tiny_image_models as tim
from connect_helpers import classic_mode, sorted_rows as rows
from sparkdl import ImageLoader, readImages


def test_read_images_and_image_loader(spark, connect_spark, tmp_path):
    paths = sorted(tim.write_pngs(tmp_path).values())
    (tmp_path / "notes.txt").write_bytes(b"not an image")
    cols = ["origin", "height", "width", "nChannels", "mode", "data", "error"]

    def run(session):
        read = rows(readImages(str(tmp_path)).select("image.*", "error"), "origin", cols)
        uris = session.createDataFrame([(p,) for p in paths], "uri string")
        loaded = ImageLoader(inputCol="uri", outputCol="image", targetSize=[8, 8]) \
            .transform(uris).select("uri", "image.height", "image.data")
        return read, rows(loaded, "uri", ["uri", "height", "data"])

    with classic_mode():
        classic = run(spark)
    assert len(classic[0]) == 6 and sum(r[1] == -1 for r in classic[0]) == 1
    assert [r[1] for r in classic[1]] == [8] * 5
    assert run(connect_spark) == classic


def test_stage_save_overwrites_on_connect(connect_spark, tmp_path):
    """pyspark's MLWriter removes an old path through the JVM session, which a Connect client
    has not; sparkdl's writer asks the server."""
    from sparkdl import KerasTransformer

    stage = KerasTransformer(inputCol="x", outputCol="y", batchSize=7)
    stage.write().overwrite().save(str(tmp_path / "stage"))
    stage.setBatchSize(9).write().overwrite().save(str(tmp_path / "stage"))
    assert KerasTransformer.load(str(tmp_path / "stage")).getBatchSize() == 9
