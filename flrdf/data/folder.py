"""Reader for a plain image-folder tree: ``root/<split>/<class>/<image>`` (no boxes).

Classes are the sorted union of class-folder names over every split folder, so
a label means the same class in train and test even when a split lacks a class.
Hidden files and folders are ignored; image files are matched by extension.
"""

from __future__ import annotations

import os
from pathlib import Path

from flrdf.data.errors import DatasetError
from flrdf.data.records import DatasetRecords, Record
from flrdf.data.textfiles import as_path

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def splits(root: str | os.PathLike) -> list[str]:
    """The split folders present under ``root`` (those holding at least one class folder)."""
    base = as_path(root)
    if not base.is_dir():
        raise DatasetError(f"image-folder root not found: {base}")
    return [p.name for p in _subdirs(base) if _subdirs(p)]


def load(root: str | os.PathLike, split: str) -> DatasetRecords:
    base = as_path(root)
    present = splits(base)
    if split not in present:
        raise DatasetError(
            f"image-folder split not found: {base / split} (expected {base}/<split>/<class>/<image>; "
            f"split folders present: {', '.join(present) or 'none'})"
        )
    class_names = sorted({c.name for s in present for c in _subdirs(base / s)})
    label_of = {name: i for i, name in enumerate(class_names)}
    records = []
    for class_dir in _subdirs(base / split):
        label = label_of[class_dir.name]
        for file in sorted(class_dir.iterdir()):
            if file.is_file() and not file.name.startswith(".") and file.suffix.lower() in IMAGE_EXTENSIONS:
                records.append(Record(str(file), label, class_dir.name, None))
    if not records:
        raise DatasetError(f"no images found under {base / split} (extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return DatasetRecords(records, class_names, 0, {"root": str(base), "layout": "folder"})
