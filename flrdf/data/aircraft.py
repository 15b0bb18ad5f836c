"""Reader for FGVC-Aircraft 2013b.

Root: the folder holding ``fgvc-aircraft-2013b/``, that folder, or its
``data/``. Labels from ``images_<level>_<split>.txt`` (split on the first space:
names contain spaces and slashes), classes from variants/families/manufacturers
.txt (line index = label), boxes from images_box.txt. By default the 20-pixel
copyright banner is cropped (``crop_bottom=20``) and boxes are clipped to it.
"""

from __future__ import annotations

import os
from pathlib import Path

from flrdf.data.errors import DatasetError, line_error
from flrdf.data.imagesize import image_size
from flrdf.data.records import DatasetRecords, Record
from flrdf.data.textfiles import as_path, parse_float, read_lines, require_dir, require_file

SPLITS = ("trainval", "train", "val", "test")
LEVELS = {"variant": "variants.txt", "family": "families.txt", "manufacturer": "manufacturers.txt"}
BANNER = 20


def find_data_dir(root: str | os.PathLike) -> Path:
    base = as_path(root)
    candidates = (base / "fgvc-aircraft-2013b" / "data", base / "data", base)
    for candidate in candidates:
        if (candidate / "images_box.txt").is_file() or (candidate / "variants.txt").is_file():
            return candidate
    looked = ", ".join(str(c / "variants.txt") for c in candidates)
    raise DatasetError(f"not an FGVC-Aircraft root: expected one of {looked}")


def _class_names(path: Path) -> list[str]:
    names: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in read_lines(path):
        name = line.strip()
        if name in seen:
            raise line_error(path, lineno, f"duplicate class name (first on line {seen[name]})", line)
        seen[name] = lineno
        names.append(name)
    if not names:
        raise DatasetError(f"{path}: no class names")
    return names


def _boxes(path: Path, wanted: set[str]) -> dict[str, tuple[float, float, float, float]]:
    boxes: dict[str, tuple[float, float, float, float]] = {}
    for lineno, line in read_lines(path):
        parts = line.split()
        if len(parts) != 5:
            raise line_error(path, lineno, "expected '<image id> <xmin> <ymin> <xmax> <ymax>'", line)
        x1, y1, x2, y2 = (parse_float(path, lineno, p, n, line) for p, n in zip(parts[1:], ("xmin", "ymin", "xmax", "ymax")))
        if x2 <= x1 or y2 <= y1:
            raise line_error(path, lineno, "box must have xmax > xmin and ymax > ymin", line)
        if parts[0] in wanted:
            boxes[parts[0]] = (x1, y1, x2, y2)
    return boxes


def _clip(box: tuple[float, float, float, float], size: tuple[int, int] | None, crop_bottom: int):
    """Clip to the visible image (``None`` if nothing is left); an unknown size leaves the box as it is."""
    if size is None:
        return box
    width, height = size[0], size[1] - crop_bottom
    x1, y1, x2, y2 = box
    x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
    y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
    if x2 <= x1 or y2 <= y1:
        return None
    return (x1, y1, x2, y2)


def load(root: str | os.PathLike, split: str, annotation_level: str = "variant", crop_banner: bool = True) -> DatasetRecords:
    if split not in SPLITS:
        raise DatasetError(f"aircraft: unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if annotation_level not in LEVELS:
        raise DatasetError(
            f"aircraft: unknown annotation_level {annotation_level!r}; expected one of {', '.join(LEVELS)}"
        )
    data = find_data_dir(root)
    classes_path = require_file(data / LEVELS[annotation_level], "FGVC-Aircraft class list")
    labels_path = require_file(data / f"images_{annotation_level}_{split}.txt", "FGVC-Aircraft split labels")
    box_path = require_file(data / "images_box.txt", "FGVC-Aircraft boxes")
    image_dir = require_dir(data / "images", "FGVC-Aircraft images")

    class_names = _class_names(classes_path)
    label_of = {name: i for i, name in enumerate(class_names)}
    entries: list[tuple[str, int]] = []
    seen: dict[str, int] = {}
    for lineno, line in read_lines(labels_path):
        parts = line.strip().split(" ", 1)
        if len(parts) != 2 or not parts[1].strip():
            raise line_error(labels_path, lineno, "expected '<image id> <class name>'", line)
        image_id, name = parts[0], parts[1].strip()
        if not image_id.isdigit():
            raise line_error(labels_path, lineno, f"image id is not a number: {image_id!r}", line)
        if name not in label_of:
            raise line_error(labels_path, lineno, f"class {name!r} is not in {classes_path}", line)
        if image_id in seen:
            raise line_error(labels_path, lineno, f"duplicate image id {image_id} (first on line {seen[image_id]})", line)
        seen[image_id] = lineno
        entries.append((image_id, label_of[name]))

    crop_bottom = BANNER if crop_banner else 0
    boxes = _boxes(box_path, set(seen))
    records = []
    for image_id, label in entries:
        path = str(image_dir / f"{image_id}.jpg")
        box = boxes.get(image_id)
        if box is not None:
            # only the header is read; an unreadable image keeps its box as the file gives it
            # and fails (or is skipped) when it is loaded.
            box = _clip(box, image_size(path, exif=False), crop_bottom)
        records.append(Record(path=path, label=label, class_name=class_names[label], box=box))
    meta = {"root": str(data), "layout": "fgvc-aircraft-2013b", "annotation_level": annotation_level}
    return DatasetRecords(records, class_names, crop_bottom, meta, exif_transpose=False)
