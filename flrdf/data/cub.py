"""Reader for CUB-200-2011 (and the synthetic demo set, which uses its layout).

Root: ``CUB_200_2011/`` itself or the folder above it. Files (single-space
separated, 1-based ids): images.txt, classes.txt, image_class_labels.txt,
train_test_split.txt, bounding_boxes.txt (x y w h -> box x1 y1 x2 y2).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from flrdf.data.errors import DatasetError, line_error
from flrdf.data.records import DatasetRecords, Record
from flrdf.data.textfiles import as_path, parse_float, parse_int, read_lines, require_dir, require_file

SPLITS = ("train", "test")
FILES = ("images.txt", "classes.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt")
_PREFIX = re.compile(r"^\d+\.")


def display_name(folder_name: str) -> str:
    """``'001.Black_footed_Albatross'`` -> ``'Black footed Albatross'``."""
    return _PREFIX.sub("", folder_name).replace("_", " ")


def find_root(root: str | os.PathLike) -> Path:
    base = as_path(root)
    for candidate in (base, base / "CUB_200_2011"):
        if (candidate / "images.txt").is_file():
            return candidate
    raise DatasetError(
        f"not a CUB-200-2011 root: expected {base / 'images.txt'} or "
        f"{base / 'CUB_200_2011' / 'images.txt'}"
    )


def _two_columns(path: Path) -> dict[int, tuple[int, str]]:
    """``id rest`` lines -> {id: (line number, rest)}; duplicate ids are an error."""
    out: dict[int, tuple[int, str]] = {}
    for lineno, line in read_lines(path):
        parts = line.strip().split(" ", 1)
        if len(parts) != 2 or not parts[1].strip():
            raise line_error(path, lineno, "expected '<id> <value>'", line)
        key = parse_int(path, lineno, parts[0], "id", line)
        if key in out:
            raise line_error(path, lineno, f"duplicate id {key} (first on line {out[key][0]})", line)
        out[key] = (lineno, parts[1].strip())
    return out


def _boxes(path: Path) -> dict[int, tuple[float, float, float, float]]:
    boxes: dict[int, tuple[float, float, float, float]] = {}
    for lineno, line in read_lines(path):
        parts = line.split()
        if len(parts) != 5:
            raise line_error(path, lineno, "expected '<image id> <x> <y> <width> <height>'", line)
        image_id = parse_int(path, lineno, parts[0], "image id", line)
        x, y, w, h = (parse_float(path, lineno, p, n, line) for p, n in zip(parts[1:], ("x", "y", "width", "height")))
        if w <= 0 or h <= 0:
            raise line_error(path, lineno, "box width and height must be positive", line)
        if image_id in boxes:
            raise line_error(path, lineno, f"duplicate image id {image_id}", line)
        boxes[image_id] = (x, y, x + w, y + h)
    return boxes


def load(root: str | os.PathLike, split: str) -> DatasetRecords:
    if split not in SPLITS:
        raise DatasetError(f"cub: unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    base = find_root(root)
    for name in FILES:
        require_file(base / name, "CUB-200-2011 annotation")
    image_dir = require_dir(base / "images", "CUB-200-2011 images")

    classes_path = base / "classes.txt"
    classes = _two_columns(classes_path)
    class_ids = sorted(classes)
    label_of = {cid: i for i, cid in enumerate(class_ids)}
    class_names = [display_name(classes[cid][1]) for cid in class_ids]

    images_path = base / "images.txt"
    images = _two_columns(images_path)
    labels_path = base / "image_class_labels.txt"
    labels = _two_columns(labels_path)
    split_path = base / "train_test_split.txt"
    flags = _two_columns(split_path)
    boxes = _boxes(base / "bounding_boxes.txt")

    want = 1 if split == "train" else 0
    records: list[Record] = []
    for image_id in sorted(images):
        lineno, rel = images[image_id]
        if image_id not in labels:
            raise line_error(images_path, lineno, f"image id {image_id} has no line in {labels_path}")
        if image_id not in flags:
            raise line_error(images_path, lineno, f"image id {image_id} has no line in {split_path}")
        flag_line, flag_text = flags[image_id]
        if flag_text not in ("0", "1"):
            raise line_error(split_path, flag_line, f"is_training_image must be 0 or 1, got {flag_text!r}")
        if int(flag_text) != want:
            continue
        label_line, label_text = labels[image_id]
        class_id = parse_int(labels_path, label_line, label_text, "class id", label_text)
        if class_id not in label_of:
            raise line_error(labels_path, label_line, f"class id {class_id} is not in {classes_path}")
        label = label_of[class_id]
        records.append(
            Record(
                path=str(image_dir / rel),
                label=label,
                class_name=class_names[label],
                box=boxes.get(image_id),
            )
        )
    return DatasetRecords(records, class_names, 0, {"root": str(base), "layout": "CUB_200_2011"},
                          exif_transpose=False)
