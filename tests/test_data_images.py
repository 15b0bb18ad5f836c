"""``load_image``: every pixel mode to RGB, EXIF orientation, banner crop, and refusal of
corrupt, truncated, missing and decompression-bomb images with the file named."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flrdf.data import ImageLoadError, load_image
from flrdf.data.images import to_rgb


def pixels(im: Image.Image) -> np.ndarray:
    assert im.mode == "RGB"
    return np.asarray(im).astype(int)


def test_rgb_and_bytes_and_crop(tmp_path):
    arr = np.zeros((50, 30, 3), np.uint8)
    arr[:30] = (10, 200, 30)
    arr[30:] = (250, 250, 250)  # the "banner"
    path = tmp_path / "a.png"
    Image.fromarray(arr).save(path)
    assert np.array_equal(pixels(load_image(path)), arr)
    assert np.array_equal(pixels(load_image(str(path))), arr)
    assert np.array_equal(pixels(load_image(path.read_bytes())), arr)
    cropped = load_image(path, crop_bottom=20)
    assert cropped.size == (30, 30)
    assert np.array_equal(pixels(cropped), arr[:30])
    with pytest.raises(ImageLoadError, match=f"{path}: cannot crop 50 rows from an image 50 rows high"):
        load_image(path, crop_bottom=50)


def test_grayscale_and_16bit_png(tmp_path):
    gray = np.array([[0, 100], [200, 255]], np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    assert np.array_equal(pixels(load_image(tmp_path / "g.png")), np.repeat(gray[..., None], 3, 2))

    deep = np.array([[0, 257 * 100], [257 * 200, 65535]], np.uint16)
    Image.fromarray(deep).save(tmp_path / "d16.png")
    with Image.open(tmp_path / "d16.png") as im:
        assert im.mode in ("I;16", "I")  # what Pillow decodes 16-bit grayscale PNG as
    assert np.array_equal(pixels(load_image(tmp_path / "d16.png")), np.repeat(gray[..., None], 3, 2))


def test_integer_and_float_modes():
    small = Image.fromarray(np.array([[0, 100], [200, 255]], np.int32), "I")
    assert pixels(to_rgb(small))[:, :, 0].tolist() == [[0, 100], [200, 255]]
    wide = Image.fromarray(np.array([[0, 25700], [51400, 65535]], np.int32), "I")
    assert pixels(to_rgb(wide))[:, :, 0].tolist() == [[0, 100], [200, 255]]
    unit = Image.fromarray(np.array([[0.0, 0.5], [1.0, 0.2]], np.float32), "F")
    assert pixels(to_rgb(unit))[:, :, 1].tolist() == [[0, 128], [255, 51]]


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, "JPEG", quality=95)
    with Image.open(path) as im:
        assert im.mode == "CMYK"
    got = pixels(load_image(path))
    assert np.abs(got - np.array([255, 0, 0])).max() <= 6  # pure red, up to JPEG rounding


def test_palette_and_alpha(tmp_path):
    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    pal.save(tmp_path / "p.png")
    assert pixels(load_image(tmp_path / "p.png")).tolist() == [[[255, 0, 0], [0, 0, 255]]]
    pal.info["transparency"] = 1  # index 1 transparent -> white
    pal.save(tmp_path / "pt.png", transparency=1)
    assert pixels(load_image(tmp_path / "pt.png")).tolist() == [[[255, 0, 0], [255, 255, 255]]]

    rgba = np.array([[[255, 0, 0, 255], [0, 0, 0, 0], [0, 0, 255, 128]]], np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    got = pixels(load_image(tmp_path / "a.png"))
    assert got[0, 0].tolist() == [255, 0, 0] and got[0, 1].tolist() == [255, 255, 255]
    assert np.abs(got[0, 2] - np.array([127, 127, 255])).max() <= 1
    la = Image.fromarray(np.array([[[0, 0], [0, 255]]], np.uint8), "LA")
    assert pixels(to_rgb(la)).tolist() == [[[255, 255, 255], [0, 0, 0]]]


def test_exif_orientation(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = (255, 0, 0)  # left half red
    arr[:, 20:] = (0, 0, 255)  # right half blue
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = 6  # stored image must be turned 90 degrees clockwise for display
    path = tmp_path / "rot.jpg"
    im.save(path, "JPEG", quality=95, exif=exif.tobytes())
    got = load_image(path)
    assert got.size == (20, 40)
    a = pixels(got)
    assert np.abs(a[5, 10] - [255, 0, 0]).max() < 30  # red on top
    assert np.abs(a[35, 10] - [0, 0, 255]).max() < 30  # blue at the bottom


def png_header_only(path: Path, width: int, height: int) -> None:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def test_decompression_bombs_refused_before_decoding(tmp_path):
    ours = tmp_path / "bomb.png"
    png_header_only(ours, 10_000, 10_000)  # 1e8 pixels: above our limit, below twice PIL's
    with pytest.raises(ImageLoadError, match=f"{ours}: image of 10000x10000 = 100000000 pixels exceeds the limit of 89478485"):
        load_image(ours)
    huge = tmp_path / "huge.png"
    png_header_only(huge, 30_000, 30_000)  # PIL itself refuses this at open
    with pytest.raises(ImageLoadError, match=f"{huge}: .*decompression bomb"):
        load_image(huge)
    small = tmp_path / "small.png"
    Image.new("RGB", (200, 200)).save(small)
    with pytest.raises(ImageLoadError, match="exceeds the limit of 10000"):
        load_image(small, max_pixels=10_000)


def test_corrupt_truncated_missing(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "JPEG", quality=95)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match=f"{truncated}: cannot decode image"):
        load_image(truncated)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not a JPEG at all" * 10)
    with pytest.raises(ImageLoadError, match=f"{garbage}: not a readable image"):
        load_image(garbage)
    with pytest.raises(ImageLoadError, match=f"{tmp_path / 'absent.jpg'}: image file not found"):
        load_image(tmp_path / "absent.jpg")
    with pytest.raises(ImageLoadError, match="<5 bytes>: not a readable image"):
        load_image(b"hello")
