"""Generated image fixtures: every Pillow mode sparkdl decodes, odd sizes, broken files, a
decompression bomb, and real photos from scikit-image. Nothing binary is committed."""
import io
import struct
import zlib

import numpy as np
from PIL import Image

HEIGHT, WIDTH = 37, 53  # odd and non-square, so (h, w) / (w, h) mix-ups show


def rng(seed=0):
    return np.random.default_rng(seed)


def rgb_array(seed=0, height=HEIGHT, width=WIDTH):
    return rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def rgba_array(seed=1, height=HEIGHT, width=WIDTH):
    return rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)


def mode_images():
    """``{name: (PIL image, expected RGB(A)/L uint8 array after sparkdl's decoding rule)}``."""
    rgb, rgba = rgb_array(), rgba_array()
    gray = rgb[..., 0]
    images = {
        "L": (Image.fromarray(gray), gray),
        "RGB": (Image.fromarray(rgb), rgb),
        "RGBA": (Image.fromarray(rgba), rgba),
        "LA": (Image.fromarray(rgba[..., :2].copy(), "LA"), rgba[..., 0]),
    }
    one = Image.fromarray(gray).convert("1")
    images["1"] = (one, np.asarray(one.convert("L")))
    i16 = rng(2).integers(0, 65536, (HEIGHT, WIDTH)).astype(np.uint16)
    images["I;16"] = (Image.fromarray(i16), (i16 >> 8).astype(np.uint8))
    i32 = rng(3).integers(-1000, 70000, (HEIGHT, WIDTH)).astype(np.int32)
    images["I"] = (Image.fromarray(i32), (np.clip(i32, 0, 65535) >> 8).astype(np.uint8))
    f32 = rng(4).uniform(-20, 300, (HEIGHT, WIDTH)).astype(np.float32)
    images["F"] = (Image.fromarray(f32), np.rint(np.clip(f32, 0, 255)).astype(np.uint8))
    pal = Image.fromarray(rgb).convert("P")
    images["P"] = (pal, np.asarray(pal.convert("RGB")))
    palt = Image.fromarray(rgb).convert("P")
    palt.info["transparency"] = 3
    images["P+transparency"] = (palt, np.asarray(palt.convert("RGBA")))
    cmyk = Image.fromarray(rgb).convert("CMYK")
    images["CMYK"] = (cmyk, np.asarray(cmyk.convert("RGB")))
    ycc = Image.fromarray(rgb).convert("YCbCr")
    images["YCbCr"] = (ycc, np.asarray(ycc.convert("RGB")))
    return images


def encode(img, fmt, **kwargs):
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def png_bytes(arr):
    return encode(Image.fromarray(arr), "PNG")


def bomb_png(width=20000, height=20000):
    """A tiny PNG whose header claims width x height pixels (4e8 > Pillow's 89.5 M limit)."""
    small = png_bytes(np.zeros((1, 1), np.uint8))
    ihdr_at = small.index(b"IHDR")
    body = bytearray(small[ihdr_at:ihdr_at + 17])
    body[4:12] = struct.pack(">II", width, height)
    crc = struct.pack(">I", zlib.crc32(bytes(body)) & 0xFFFFFFFF)
    return small[:ihdr_at] + bytes(body) + crc + small[ihdr_at + 21:]


def broken_files():
    """``{file name: bytes}`` of files no decoder accepts."""
    jpeg = encode(Image.fromarray(rgb_array()), "JPEG")
    return {
        "empty.png": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 3],
        "notes.txt": b"this is not an image\n",
        "garbage.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
        "bomb.png": bomb_png(),
    }


def photos():
    """Real photos bundled with scikit-image, as RGB uint8 arrays."""
    from skimage import data

    return {"chelsea": data.chelsea(), "coffee": data.coffee(), "astronaut": data.astronaut()}
