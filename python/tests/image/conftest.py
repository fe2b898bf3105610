import os

import numpy as np
import pytest
from PIL import Image

import fixtures


@pytest.fixture(scope="session")
def png_dir(tmp_path_factory):
    """8-bit PNGs of the modes Spark's reader and sparkdl agree on, plus real photos."""
    d = tmp_path_factory.mktemp("pngs")
    modes = fixtures.mode_images()
    for name in ["L", "RGB", "RGBA", "LA", "P", "P+transparency"]:
        img = modes[name][0]
        kwargs = {"transparency": img.info["transparency"]} if "transparency" in img.info else {}
        img.save(d / f"{name.replace('+', '_')}.png", **kwargs)
    for name, arr in fixtures.photos().items():
        Image.fromarray(arr).save(d / f"{name}.png")
    return str(d)


@pytest.fixture(scope="session")
def jpeg_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("jpegs")
    for name, arr in fixtures.photos().items():
        Image.fromarray(arr).save(d / f"{name}.jpg", quality=90)
    Image.fromarray(fixtures.rgb_array()[..., 0]).save(d / "gray.jpg", quality=90)
    return str(d)


@pytest.fixture(scope="session")
def mixed_dir(tmp_path_factory):
    """Valid images (one in a subfolder, one with a misleading extension) and broken files."""
    d = tmp_path_factory.mktemp("mixed")
    (d / "sub").mkdir()
    Image.fromarray(fixtures.rgb_array(5)).save(d / "good.png")
    Image.fromarray(fixtures.rgb_array(6)).save(d / "sub" / "nested.png")
    Image.fromarray(fixtures.rgb_array(7)).save(d / "really_a_png.jpg", format="PNG")
    for name, data in fixtures.broken_files().items():
        (d / name).write_bytes(data)
    return str(d)


def origin_name(origin):
    return os.path.basename(origin)


def struct_rgb(image):
    """An 8-bit image struct row -> RGB(A)/gray array (for comparisons)."""
    from sparkdl.image.imageIO import imageStructToArray, rgbToStructOrder

    arr = imageStructToArray(image)
    arr = rgbToStructOrder(arr)
    return arr[:, :, 0] if arr.shape[2] == 1 else arr
