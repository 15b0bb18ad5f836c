"""Reader for Stanford Cars in the three layouts users have (detected automatically).

1. devkit (torchvision's layout): ``[root/stanford_cars/]`` cars_train/, cars_test/,
   devkit/{cars_meta,cars_train_annos}.mat; test labels in
   ``cars_test_annos_withlabels.mat`` beside devkit/ or inside it.
2. all-in-one: ``car_ims/`` + ``cars_annos.mat`` (field ``test``: 1 = test image).
3. Kaggle class-folder copy: ``car_data/car_data/{train,test}/<class>/<file>`` with
   ``anno_train.csv``/``anno_test.csv`` (fname,x1,y1,x2,y2,class; no header) and
   ``names.csv``; root may be the folder above car_data, car_data, or car_data/car_data.
Boxes are kept as the files give them (x1 y1 x2 y2 pixels); classes are 1-based on disk.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from flrdf.data.errors import DatasetError, line_error
from flrdf.data.matfiles import as_int, as_number, as_text, load_mat, record_error, string_list, struct_records
from flrdf.data.records import DatasetRecords, Record
from flrdf.data.textfiles import as_path, parse_float, parse_int, read_lines, require_dir, require_file

SPLITS = ("train", "test")
_BOX_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")


def _unique(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p not in out:
            out.append(p)
    return out


def detect_layout(root: str | os.PathLike) -> tuple[str, Path]:
    """``(layout, folder)`` with layout in ``devkit``, ``car_ims``, ``kaggle``."""
    base = as_path(root)
    if not base.is_dir():
        raise DatasetError(f"Stanford Cars root not found: {base}")
    looked: list[str] = []
    for d in (base, base / "stanford_cars"):
        marker = d / "devkit" / "cars_train_annos.mat"
        looked.append(str(marker))
        if marker.is_file():
            return "devkit", d
    for d in (base, base / "stanford_cars"):
        marker = d / "cars_annos.mat"
        looked.append(str(marker))
        if marker.is_file():
            return "car_ims", d
    for d in (base / "car_data" / "car_data", base / "car_data", base):
        looked.append(str(d / "train") + "/<class>/")
        if (d / "train").is_dir() or (d / "test").is_dir():
            return "kaggle", d
    raise DatasetError(f"no Stanford Cars layout found under {base}: looked for {'; '.join(looked)}")


def _box(path: Path, number: int, values: dict) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (as_number(path, number, f, values[f]) for f in _BOX_FIELDS)
    if x2 <= x1 or y2 <= y1:
        raise record_error(path, number, f"box ({x1}, {y1}, {x2}, {y2}) must have x2 > x1 and y2 > y1")
    return (x1, y1, x2, y2)


def _label(path: Path, number: int, class_id: int, class_names: list[str]) -> int:
    if not 1 <= class_id <= len(class_names):
        raise record_error(path, number, f"class {class_id} is outside 1..{len(class_names)}")
    return class_id - 1


def _load_devkit(d: Path, split: str) -> DatasetRecords:
    meta = require_file(d / "devkit" / "cars_meta.mat", "Stanford Cars class names")
    class_names = string_list(meta, load_mat(meta), "class_names")
    if split == "train":
        annos = require_file(d / "devkit" / "cars_train_annos.mat", "Stanford Cars train annotations")
    else:
        places = (d / "cars_test_annos_withlabels.mat", d / "devkit" / "cars_test_annos_withlabels.mat")
        found = [p for p in places if p.is_file()]
        if not found:
            raise DatasetError(
                f"Stanford Cars test labels not found: looked for {places[0]} and {places[1]} "
                "(devkit/cars_test_annos.mat has no class field)"
            )
        annos = found[0]
    image_dir = require_dir(d / f"cars_{split}", f"Stanford Cars {split} images")
    records = []
    for number, values in struct_records(annos, load_mat(annos), "annotations", _BOX_FIELDS + ("class", "fname")):
        label = _label(annos, number, as_int(annos, number, "class", values["class"]), class_names)
        fname = as_text(annos, number, "fname", values["fname"])
        records.append(Record(str(image_dir / fname), label, class_names[label], _box(annos, number, values)))
    return DatasetRecords(records, class_names, 0, {"root": str(d), "layout": "devkit", "annotations": str(annos)},
                          exif_transpose=False)


def _load_car_ims(d: Path, split: str) -> DatasetRecords:
    annos = d / "cars_annos.mat"
    contents = load_mat(annos)
    meta = d / "devkit" / "cars_meta.mat"
    if "class_names" in contents:
        class_names = string_list(annos, contents, "class_names")
    elif meta.is_file():
        class_names = string_list(meta, load_mat(meta), "class_names")
    else:
        raise DatasetError(f"Stanford Cars class names not found: neither 'class_names' in {annos} nor {meta}")
    want = 1 if split == "test" else 0
    records = []
    fields = ("relative_im_path",) + _BOX_FIELDS + ("class", "test")
    for number, values in struct_records(annos, contents, "annotations", fields):
        flag = as_int(annos, number, "test", values["test"])
        if flag not in (0, 1):
            raise record_error(annos, number, f"field 'test' must be 0 or 1, got {flag}")
        if flag != want:
            continue
        label = _label(annos, number, as_int(annos, number, "class", values["class"]), class_names)
        rel = as_text(annos, number, "relative_im_path", values["relative_im_path"])
        records.append(Record(str(d / rel), label, class_names[label], _box(annos, number, values)))
    return DatasetRecords(records, class_names, 0, {"root": str(d), "layout": "car_ims", "annotations": str(annos)},
                          exif_transpose=False)


def _csv_rows(path: Path):
    for lineno, line in read_lines(path):
        try:
            rows = list(csv.reader(io.StringIO(line)))
        except csv.Error as exc:
            raise line_error(path, lineno, f"bad CSV ({exc})", line) from None
        yield lineno, line, [c.strip() for c in rows[0]] if rows else []


def _find_csv(candidates: list[Path], name: str) -> Path:
    for d in candidates:
        if (d / name).is_file():
            return d / name
    raise DatasetError(f"Stanford Cars (Kaggle copy): {name} not found; looked in {', '.join(map(str, candidates))}")


def _load_kaggle(d: Path, base: Path, split: str) -> DatasetRecords:
    candidates = _unique([base, d, d.parent, d.parent.parent, base.parent])
    names_path = _find_csv(candidates, "names.csv")
    annos = _find_csv(candidates, f"anno_{split}.csv")
    class_names = []
    for lineno, line, cells in _csv_rows(names_path):
        if len(cells) != 1 or not cells[0]:
            raise line_error(names_path, lineno, "expected one class name per line", line)
        class_names.append(cells[0])
    image_dir = require_dir(d / split, f"Stanford Cars {split} images")
    records = []
    for lineno, line, cells in _csv_rows(annos):
        if len(cells) != 6:
            raise line_error(annos, lineno, "expected 'fname,x1,y1,x2,y2,class'", line)
        x1, y1, x2, y2 = (parse_float(annos, lineno, c, n, line) for c, n in zip(cells[1:5], ("x1", "y1", "x2", "y2")))
        if x2 <= x1 or y2 <= y1:
            raise line_error(annos, lineno, "box must have x2 > x1 and y2 > y1", line)
        class_id = parse_int(annos, lineno, cells[5], "class", line)
        if not 1 <= class_id <= len(class_names):
            raise line_error(annos, lineno, f"class {class_id} is outside 1..{len(class_names)} ({names_path})", line)
        label = class_id - 1
        folder = image_dir / class_names[label].replace("/", "-")
        records.append(Record(str(folder / cells[0]), label, class_names[label], (x1, y1, x2, y2)))
    missing = sorted({str(Path(r.path).parent) for r in records if not Path(r.path).parent.is_dir()})
    if missing:
        raise DatasetError(f"Stanford Cars (Kaggle copy): class folder not found: {missing[0]} (named in {annos})")
    return DatasetRecords(records, class_names, 0, {"root": str(d), "layout": "kaggle", "annotations": str(annos)},
                          exif_transpose=False)


def load(root: str | os.PathLike, split: str) -> DatasetRecords:
    if split not in SPLITS:
        raise DatasetError(f"cars: unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    layout, d = detect_layout(root)
    if layout == "devkit":
        return _load_devkit(d, split)
    if layout == "car_ims":
        return _load_car_ims(d, split)
    return _load_kaggle(d, as_path(root), split)
