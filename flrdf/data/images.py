"""Decoding one image file into the RGB picture the model sees.

``load_image`` is the only place pixels are read: it refuses decompression
bombs before decoding, names the file on any decoding problem
(``ImageLoadError``), applies EXIF orientation (``exif_transpose``; off for the
dataset readers whose boxes are annotated in the stored pixel orientation - CUB,
Cars, Aircraft, as torchvision and the papers' loaders read them), converts every
mode to 8-bit RGB and cuts ``crop_bottom`` rows (FGVC-Aircraft's banner).
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from flrdf.data.errors import ImageLoadError

DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own default limit
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})
_WHITE = (255, 255, 255)



def _describe(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return str(getattr(source, "name", "<file object>"))


def _to_8bit(im: Image.Image) -> Image.Image:
    """Integer / float single-channel modes (16-bit PNG/TIFF, 32-bit) -> 8-bit 'L'.

    I;16*: value / 257 (full 16-bit range). I (32-bit int): same when any value
    exceeds 255, otherwise taken as already 8-bit. F: [0, 1] data scaled by 255
    when its maximum is <= 1, else clipped to [0, 255].
    """
    arr = np.asarray(im)
    if im.mode.startswith("I;16"):
        out = arr.astype(np.float32) / 257.0
    elif im.mode == "I":
        out = arr.astype(np.float64)
        out = np.clip(out, 0, 65535) / 257.0 if out.max(initial=0) > 255 else np.clip(out, 0, 255)
    else:  # F
        out = np.nan_to_num(arr.astype(np.float64))
        out = out * 255.0 if out.max(initial=0) <= 1.0 else out
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "L")


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> 'RGB'; transparency is composited on white."""
    if im.mode == "RGB":
        return im
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode in ("I", "F") or im.mode.startswith("I;16"):
        im = _to_8bit(im)
    if im.mode in _ALPHA_MODES:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def load_image(source, crop_bottom: int = 0, max_pixels: int = DEFAULT_MAX_PIXELS,
               exif_transpose: bool = True) -> Image.Image:
    """Read ``source`` (path, bytes or binary file object) as an RGB ``PIL.Image``.

    Raises ``ImageLoadError`` (message names the file) when the file is missing,
    not an image, truncated or corrupt, larger than ``max_pixels`` (checked from
    the header, before decoding; PIL's own bomb limit applies too), or no rows
    remain after ``crop_bottom``. ``exif_transpose=False`` keeps the pixels as stored (no EXIF rotation).
    """
    name = _describe(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                width, height = im.size
                if width * height > max_pixels:
                    raise ImageLoadError(
                        f"{name}: image of {width}x{height} = {width * height} pixels exceeds the limit "
                        f"of {max_pixels} (possible decompression bomb); refused"
                    )
                im.load()
                picture = im
                if exif_transpose:
                    try:
                        picture = ImageOps.exif_transpose(im)
                    except Exception:  # broken EXIF: keep the stored orientation
                        picture = im
                picture = to_rgb(picture)
                if picture is im:
                    picture = im.copy()
    except ImageLoadError:
        raise
    except FileNotFoundError:
        raise ImageLoadError(f"{name}: image file not found") from None
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(f"{name}: refused as a possible decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"{name}: not a readable image (unknown or corrupt format)") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageLoadError(f"{name}: cannot decode image ({exc})") from None
    if crop_bottom:
        if crop_bottom < 0 or crop_bottom >= picture.height:
            raise ImageLoadError(f"{name}: cannot crop {crop_bottom} rows from an image {picture.height} rows high")
        picture = picture.crop((0, 0, picture.width, picture.height - crop_bottom))
    return picture
