"""The image struct helpers and the decoding rule, without Spark."""
import io

import numpy as np
import pytest
from PIL import Image

import fixtures
from sparkdl.image import imageIO
from sparkdl.image.imageIO import (
    PIL_to_imageStruct,
    decodeImage,
    imageArrayToStruct,
    imageSchema,
    imageStructToArray,
    imageStructToPIL,
    resizeImage,
)


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_array_struct_round_trip(channels, dtype):
    arr = (fixtures.rng(channels).random((37, 53, channels)) * 255).astype(dtype)
    row = imageArrayToStruct(arr, origin="mem://x")
    assert row.__fields__ == imageSchema.names
    expected_mode = {(1, np.uint8): 0, (3, np.uint8): 16, (4, np.uint8): 24,
                     (1, np.float32): 5, (3, np.float32): 21, (4, np.float32): 29}[(channels, dtype)]
    assert (row.origin, row.height, row.width, row.nChannels, row.mode) == (
        "mem://x", 37, 53, channels, expected_mode)
    back = imageStructToArray(row)
    assert back.dtype == dtype and back.shape == (37, 53, channels)
    np.testing.assert_array_equal(back, arr)


def test_struct_to_array_is_zero_copy():
    row = imageArrayToStruct(fixtures.rgb_array())
    arr = imageStructToArray(row)
    assert not arr.flags.owndata


def test_two_dimensional_array_is_one_channel():
    row = imageArrayToStruct(fixtures.rgb_array()[..., 0])
    assert (row.nChannels, row.mode) == (1, 0)


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 2), np.uint8), np.zeros((4, 4, 3), np.float64),
                                 np.zeros((4, 4, 3), np.int16), np.zeros(4, np.uint8)])
def test_unsupported_arrays_are_refused(bad):
    with pytest.raises(ValueError):
        imageArrayToStruct(bad)


def test_pil_conversions_state_channel_order():
    # Pure red in RGB is (B, G, R) = (0, 0, 255) in the struct.
    red = Image.new("RGB", (5, 3), (255, 0, 0))
    row = PIL_to_imageStruct(red)
    assert (row.height, row.width, row.nChannels) == (3, 5, 3)
    assert bytes(row.data[:3]) == bytes([0, 0, 255])
    back = imageStructToPIL(row)
    assert back.mode == "RGB" and back.getpixel((0, 0)) == (255, 0, 0)
    rgba = Image.new("RGBA", (5, 3), (255, 10, 20, 128))
    row = PIL_to_imageStruct(rgba)
    assert bytes(row.data[:4]) == bytes([20, 10, 255, 128])
    assert imageStructToPIL(row).getpixel((4, 2)) == (255, 10, 20, 128)
    gray = Image.new("L", (5, 3), 77)
    row = PIL_to_imageStruct(gray)
    assert row.nChannels == 1 and imageStructToPIL(row).getpixel((0, 0)) == 77


def test_float_struct_does_not_convert_to_pil():
    with pytest.raises(ValueError, match="8-bit"):
        imageStructToPIL(imageArrayToStruct(np.zeros((2, 2, 3), np.float32)))


@pytest.mark.parametrize("mode", sorted(fixtures.mode_images()))
def test_decoding_rule_for_every_mode(mode):
    img, expected = fixtures.mode_images()[mode]
    fmt = "TIFF" if mode in ("I", "F", "CMYK", "YCbCr") else "PNG"
    if mode == "YCbCr":
        fmt = "JPEG"
    kwargs = {"transparency": img.info["transparency"]} if "transparency" in img.info else {}
    raw = fixtures.encode(img, fmt, **kwargs)
    height, width, nChannels, ocvMode, data = decodeImage(raw)
    assert (height, width) == (fixtures.HEIGHT, fixtures.WIDTH)
    expected_channels = 1 if expected.ndim == 2 else expected.shape[2]
    assert nChannels == expected_channels
    assert ocvMode == {1: 0, 3: 16, 4: 24}[nChannels]
    got = imageIO.rgbToStructOrder(np.frombuffer(data, np.uint8).reshape(height, width, nChannels))
    if fmt == "JPEG":  # lossy: compare with Pillow's own decode of the same bytes
        expected = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))
    np.testing.assert_array_equal(got.reshape(expected.shape), expected)


def test_exif_orientation_is_applied():
    arr = fixtures.rgb_array()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    raw = fixtures.encode(Image.fromarray(arr), "PNG", exif=exif)
    height, width, _, _, data = decodeImage(raw)
    assert (height, width) == (fixtures.WIDTH, fixtures.HEIGHT)
    got = imageIO.rgbToStructOrder(np.frombuffer(data, np.uint8).reshape(height, width, 3))
    np.testing.assert_array_equal(got, np.rot90(arr, k=-1))


def test_animation_gives_first_frame():
    frames = [Image.new("RGB", (8, 6), c) for c in [(255, 0, 0), (0, 255, 0)]]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    height, width, nChannels, _, data = decodeImage(buf.getvalue())
    assert (height, width) == (6, 8)
    assert bytes(data[:3]) == bytes([0, 0, 255])  # red, as BGR


@pytest.mark.parametrize("name", sorted(fixtures.broken_files()))
def test_broken_files_raise_decode_error(name):
    with pytest.raises(imageIO.DecodeError) as info:
        decodeImage(fixtures.broken_files()[name])
    assert str(info.value)


def test_bomb_is_refused_before_allocation(monkeypatch):
    # Between Pillow's warning (1x) and error (2x) thresholds: sparkdl refuses from 1x.
    with pytest.raises(imageIO.DecodeError, match="exceeds the limit of 89478485 pixels"):
        decodeImage(fixtures.bomb_png(10000, 10000))
    with pytest.raises(imageIO.DecodeError, match="DecompressionBombError"):
        decodeImage(fixtures.bomb_png(20000, 20000))
    # The limit is sparkdl's own and can be lowered (it is read at each call).
    monkeypatch.setattr(imageIO, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(imageIO.DecodeError, match="exceeds"):
        decodeImage(fixtures.png_bytes(fixtures.rgb_array()))


@pytest.mark.parametrize("method", ["nearest", "bilinear", "bicubic", "lanczos", "box"])
def test_resize_is_height_width(method):
    arr = fixtures.rgb_array()
    out = resizeImage(arr, (20, 31), method)
    assert out.shape == (20, 31, 3) and out.dtype == np.uint8
    expected = np.asarray(Image.fromarray(arr).resize((31, 20), imageIO.RESIZE_METHODS[method]))
    np.testing.assert_array_equal(out, expected)
    pil = resizeImage(Image.fromarray(arr), (20, 31), method)
    assert pil.size == (31, 20)
    floats = resizeImage(arr.astype(np.float32), (20, 31), method)
    assert floats.shape == (20, 31, 3) and floats.dtype == np.float32
    # 8-bit Pillow uses fixed-point kernels (and clips overshoot), float ones do not.
    assert np.abs(np.clip(floats, 0, 255) - expected).mean() < 0.5


def test_unknown_resize_method_names_the_choices():
    with pytest.raises(ValueError, match="bilinear"):
        resizeImage(fixtures.rgb_array(), (2, 2), "cubic-ish")


def test_spark_schema_accepted_with_either_nullability(spark):
    from pyspark.ml.image import ImageSchema

    assert imageIO.isImageSchema(ImageSchema.columnSchema)
    assert imageIO.isImageSchema(imageSchema)
