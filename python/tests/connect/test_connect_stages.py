"""Every entry point on a Spark Connect session gives what it gives on a classic one."""
import tiny_image_models as tim
from connect_helpers import classic_mode, sorted_rows as rows
from sparkdl import readImages


def test_read_images(spark, connect_spark, tmp_path):
    tim.write_pngs(tmp_path)
    (tmp_path / "notes.txt").write_bytes(b"not an image")
    cols = ["origin", "height", "width", "nChannels", "mode", "data", "error"]

    def run(session):
        return rows(readImages(str(tmp_path))
                    .select("image.*", "error"), "origin", cols)

    with classic_mode():
        classic = run(spark)
    assert len(classic) == 6 and sum(r[1] == -1 for r in classic) == 1
    assert run(connect_spark) == classic
