"""Cheap image size lookup (header only, no pixel decoding), EXIF rotation aware.

Readers that must clip boxes to the image (aircraft banner) use this.
"""

from __future__ import annotations

from PIL import Image

_ORIENTATION_TAG = 0x0112


def image_size(path: str, exif: bool = True) -> tuple[int, int] | None:
    """``(width, height)`` as ``load_image(path, exif_transpose=exif)`` will return it, or ``None`` when the
    header is unreadable."""
    try:
        with Image.open(path) as im:
            width, height = im.size
            try:
                orientation = im.getexif().get(_ORIENTATION_TAG, 1)
            except Exception:  # a broken EXIF block: load_image also ignores it
                orientation = 1
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    if exif and orientation in (5, 6, 7, 8):
        width, height = height, width
    return width, height
