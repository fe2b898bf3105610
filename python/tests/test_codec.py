"""The engine's codec on Arrow arrays built here (no Spark): images in, rows grouped by shape,
outputs out, each checked against numpy or Pillow directly."""
import numpy as np
import pyarrow as pa
from PIL import Image

from sparkdl.engine import codec
from sparkdl.image.arrow import IMAGE_ARROW_TYPE


def struct(arr, mode, origin="x"):
    h, w, c = arr.shape
    return {"origin": origin, "height": h, "width": w, "nChannels": c, "mode": mode,
            "data": arr.tobytes()}


def test_struct_pixels_view_the_buffer_and_leave_out_bad_rows():
    rng = np.random.default_rng(1)
    bgr = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    gray = rng.random((2, 5, 1)).astype(np.float32)
    short = struct(bgr, 16)
    short["data"] = short["data"][:-1]  # the header promises one byte more than there is
    rows = [struct(bgr, 16), None, struct(gray, 5), short, struct(bgr, 99),
            {"origin": "bad", "height": -1, "width": -1, "nChannels": -1, "mode": -1, "data": b""}]
    images = pa.array(rows, IMAGE_ARROW_TYPE)
    got = codec.structPixels(images)
    np.testing.assert_array_equal(got[0], bgr)
    np.testing.assert_array_equal(got[2], gray)
    assert got[1] is None and got[3] is None and got[4] is None and got[5] is None
    # A slice starts where the slice starts.
    np.testing.assert_array_equal(codec.structPixels(images.slice(2, 2))[0], gray)
    # The inference batch leaves the bad rows out: their outputs are null, the task goes on.
    tensor, rows = codec.imagesToTensor(images, (3, 4))
    assert rows.tolist() == [0, 2]
    np.testing.assert_array_equal(tensor[0], bgr[:, :, ::-1])


def test_one_channel_order_conversion_matches_pillow():
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 256, (6, 7, 4), dtype=np.uint8)
    bgra = rgba[:, :, [2, 1, 0, 3]]
    rgb = rgba[:, :, :3]
    np.testing.assert_array_equal(codec.toChannelOrder(bgra, "RGB"), rgb.astype(np.float32))
    np.testing.assert_array_equal(codec.toChannelOrder(bgra, "BGR"), bgra[:, :, :3])
    luma = codec.toChannelOrder(bgra, "L")[:, :, 0]
    pil = np.asarray(Image.fromarray(rgb, "RGB").convert("L"), np.float32)
    assert np.abs(luma - pil).max() <= 0.5  # Pillow rounds, the codec does not
    resized = codec.toChannelOrder(bgra, "RGB", size=(3, 5), resizeMethod="box", dtype=None)
    want = np.asarray(Image.fromarray(rgb, "RGB").resize((5, 3), Image.Resampling.BOX))
    assert resized.dtype == np.uint8
    np.testing.assert_array_equal(resized, want)
    gray = rng.integers(0, 256, (4, 4, 1), dtype=np.uint8)
    np.testing.assert_array_equal(codec.toChannelOrder(gray, "RGB"),
                                  np.repeat(gray, 3, axis=2).astype(np.float32))


def test_rows_are_grouped_by_shape_and_outputs_return_to_their_rows():
    shapes = [(2, 3), (4, 4), (2, 3), (4, 4), (1, 1)]
    groups = codec.groupByShape([0, 2, 5, 7, 9], shapes)
    assert sorted(g.tolist() for g in groups) == [[0, 5], [2, 7], [9]]
    assert codec.groupByShape([], np.zeros((0, 2))) == []
    out = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    column = codec.listColumn([(np.array([4, 0]), out[:2]), (np.array([2]), out[2:])], 6)
    assert column.to_pylist() == [[4, 5, 6, 7], None, [8, 9, 10, 11], None, [0, 1, 2, 3], None]


def test_image_outputs_are_stored_in_struct_order():
    rgb = np.random.default_rng(3).random((2, 3, 4, 3)).astype(np.float32)
    images = codec.imageColumn([(np.array([0, 2]), rgb)], 3, ["a", "b", "c"], "RGB")
    rows = images.to_pylist()
    assert rows[1] is None and rows[0]["origin"] == "a" and rows[2]["mode"] == 21
    stored = np.frombuffer(rows[2]["data"], "<f4").reshape(3, 4, 3)
    np.testing.assert_array_equal(stored, rgb[1][:, :, ::-1])
