"""Every dataset layout of DATASETS.md, as small trees written here, read back through
``load_records``, ``FGVCDataset`` + ``DataLoader`` and ``data-info``; plus bad inputs."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from flrdf.data import (
    DATASETS,
    DatasetError,
    DatasetRecords,
    FGVCDataset,
    Record,
    build_transform,
    load_records,
)
from flrdf.data.commands import data_info_main
from waits import run_command

REPO = Path(__file__).resolve().parents[1]


def jpeg(path: Path, size=(40, 30), colour=(120, 60, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, "JPEG", quality=90)


def write(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


# ----------------------------------------------------------------------------- CUB
CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
# id, class id, is_train, (x, y, w, h)
CUB_IMAGES = [
    (1, 1, 1, (60.0, 27.0, 325.0, 304.0)),
    (2, 1, 0, (1.0, 2.0, 10.0, 20.0)),
    (3, 2, 1, (5.5, 6.5, 7.0, 8.0)),
    (4, 3, 0, (0.0, 0.0, 40.0, 30.0)),
    (5, 3, 1, (3.0, 4.0, 5.0, 6.0)),
]


def cub_rel(image_id: int, class_id: int) -> str:
    folder = CUB_CLASSES[class_id - 1]
    return f"{folder}/{folder[4:]}_{image_id:04d}_{image_id}.jpg"


def make_cub(parent: Path) -> Path:
    base = parent / "CUB_200_2011"
    for image_id, class_id, _, _ in CUB_IMAGES:
        jpeg(base / "images" / cub_rel(image_id, class_id))
    write(base / "classes.txt", [f"{i + 1} {name}" for i, name in enumerate(CUB_CLASSES)])
    write(base / "images.txt", [f"{i} {cub_rel(i, c)}" for i, c, _, _ in CUB_IMAGES])
    write(base / "image_class_labels.txt", [f"{i} {c}" for i, c, _, _ in CUB_IMAGES])
    write(base / "train_test_split.txt", [f"{i} {t}" for i, _, t, _ in CUB_IMAGES])
    write(base / "bounding_boxes.txt", [f"{i} {x} {y} {w} {h}" for i, _, _, (x, y, w, h) in CUB_IMAGES])
    return base


@pytest.mark.parametrize("use_parent", [False, True])
def test_cub_reads_both_roots(tmp_path, use_parent):
    base = make_cub(tmp_path)
    root = tmp_path if use_parent else base
    train = load_records("cub", root, "train")
    assert train.class_names == ["Black footed Albatross", "Laysan Albatross", "Sooty Albatross"]
    assert train.crop_bottom == 0
    assert train.records == [
        Record(str(base / "images" / cub_rel(1, 1)), 0, "Black footed Albatross", (60.0, 27.0, 385.0, 331.0)),
        Record(str(base / "images" / cub_rel(3, 2)), 1, "Laysan Albatross", (5.5, 6.5, 12.5, 14.5)),
        Record(str(base / "images" / cub_rel(5, 3)), 2, "Sooty Albatross", (3.0, 4.0, 8.0, 10.0)),
    ]
    test = load_records("cub", root, "test")
    assert [(r.label, r.box) for r in test.records] == [(0, (1.0, 2.0, 11.0, 22.0)), (2, (0.0, 0.0, 40.0, 30.0))]
    assert load_records("demo", root, "test").records == test.records


def test_cub_errors(tmp_path):
    base = make_cub(tmp_path)
    with pytest.raises(DatasetError, match="dataset root not found: .*nowhere"):
        load_records("cub", tmp_path / "nowhere", "train")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match=r"not a CUB-200-2011 root: expected .*empty/images\.txt or .*empty/CUB_200_2011/images\.txt"):
        load_records("cub", empty, "train")
    with pytest.raises(DatasetError, match="unknown split 'val'"):
        load_records("cub", base, "val")
    with pytest.raises(DatasetError, match="unknown option"):
        load_records("cub", base, "train", crop_banner=False)

    (base / "images.txt").write_text("1 a/b.jpg\n2 a/c.jpg\n3\n", encoding="utf-8")
    with pytest.raises(DatasetError) as info:
        load_records("cub", base, "train")
    assert f"{base / 'images.txt'}:3: expected '<id> <value>'" in str(info.value)

    make_cub(tmp_path)
    boxes = (base / "bounding_boxes.txt").read_text().splitlines()
    boxes[3] = "4 0.0 zero 40.0 30.0"
    write(base / "bounding_boxes.txt", boxes)
    with pytest.raises(DatasetError) as info:
        load_records("cub", base, "test")
    assert f"{base / 'bounding_boxes.txt'}:4: y is not a number: 'zero'" in str(info.value)

    make_cub(tmp_path)
    write(base / "image_class_labels.txt", ["1 1", "2 1", "3 9", "4 3", "5 3"])
    with pytest.raises(DatasetError) as info:
        load_records("cub", base, "train")
    assert f"{base / 'image_class_labels.txt'}:3: class id 9 is not in" in str(info.value)

    make_cub(tmp_path)
    write(base / "train_test_split.txt", ["1 1", "2 0", "3 1", "4 0", "4 1"])
    with pytest.raises(DatasetError, match=r"train_test_split\.txt:5: duplicate id 4 \(first on line 4\)"):
        load_records("cub", base, "train")

    make_cub(tmp_path)
    os.remove(base / "bounding_boxes.txt")
    with pytest.raises(DatasetError, match=f"file not found: {base / 'bounding_boxes.txt'}"):
        load_records("cub", base, "train")


# ----------------------------------------------------------------------------- aircraft
VARIANTS = ["707-320", "BAE 146-200", "F/A-18"]
FAMILIES = ["Boeing 707", "BAE 146", "F/A-18"]
MANUFACTURERS = ["Boeing", "British Aerospace", "McDonnell Douglas"]
# id, variant index, split, image size (w, h), box line
AIRCRAFT = [
    ("1025794", 0, "train", (60, 50), "0 0 59 49"),  # zeros; clipped to the banner
    ("0034309", 1, "train", (60, 50), "3 5 40 25"),  # unaffected
    ("2233445", 2, "val", (60, 50), "10 35 20 45"),  # entirely inside the banner -> no box
    ("0056978", 2, "test", (80, 60), "1 2 79 45"),  # clipped to height 40
    ("1111111", 1, "test", (60, 50), "5 6 70 20"),  # clipped to the width
]


def make_aircraft(parent: Path) -> Path:
    data = parent / "fgvc-aircraft-2013b" / "data"
    for image_id, _, _, size, _ in AIRCRAFT:
        jpeg(data / "images" / f"{image_id}.jpg", size)
    write(data / "variants.txt", VARIANTS)
    write(data / "families.txt", FAMILIES)
    write(data / "manufacturers.txt", MANUFACTURERS)
    write(data / "images_box.txt", [f"{i} {box}" for i, _, _, _, box in AIRCRAFT] + ["9999999 1 1 2 2"])
    for level, names in (("variant", VARIANTS), ("family", FAMILIES), ("manufacturer", MANUFACTURERS)):
        for split, members in (("train", {"train"}), ("val", {"val"}), ("trainval", {"train", "val"}), ("test", {"test"})):
            write(data / f"images_{level}_{split}.txt", [f"{i} {names[v]}" for i, v, s, _, _ in AIRCRAFT if s in members])
        write(data / f"images_{split}.txt", [i for i, _, s, _, _ in AIRCRAFT if s == split])
    return data


@pytest.mark.parametrize("which", ["parent", "top", "data"])
def test_aircraft_roots_banner_and_boxes(tmp_path, which):
    data = make_aircraft(tmp_path)
    root = {"parent": tmp_path, "top": data.parent, "data": data}[which]
    trainval = load_records("aircraft", root, "trainval")
    assert trainval.class_names == VARIANTS
    assert trainval.crop_bottom == 20
    img = lambda i: str(data / "images" / f"{i}.jpg")  # noqa: E731
    assert trainval.records == [
        Record(img("1025794"), 0, "707-320", (0.0, 0.0, 59.0, 30.0)),
        Record(img("0034309"), 1, "BAE 146-200", (3.0, 5.0, 40.0, 25.0)),
        Record(img("2233445"), 2, "F/A-18", None),
    ]
    test = load_records("aircraft", root, "test")
    assert test.records == [
        Record(img("0056978"), 2, "F/A-18", (1.0, 2.0, 79.0, 40.0)),
        Record(img("1111111"), 1, "BAE 146-200", (5.0, 6.0, 60.0, 20.0)),
    ]
    assert [r.label for r in load_records("aircraft", root, "train").records] == [0, 1]
    assert [r.path for r in load_records("aircraft", root, "val").records] == [img("2233445")]


def test_aircraft_levels_and_no_banner_crop(tmp_path):
    data = make_aircraft(tmp_path)
    family = load_records("aircraft", tmp_path, "trainval", annotation_level="family")
    assert family.class_names == FAMILIES
    assert [(r.label, r.class_name) for r in family.records] == [(0, "Boeing 707"), (1, "BAE 146"), (2, "F/A-18")]
    maker = load_records("aircraft", tmp_path, "test", annotation_level="manufacturer", crop_banner=False)
    assert maker.class_names == MANUFACTURERS
    assert maker.crop_bottom == 0
    assert [(r.class_name, r.box) for r in maker.records] == [
        ("McDonnell Douglas", (1.0, 2.0, 79.0, 45.0)),
        ("British Aerospace", (5.0, 6.0, 60.0, 20.0)),
    ]
    uncropped = load_records("aircraft", data, "val", crop_banner=False)
    assert uncropped.records[0].box == (10.0, 35.0, 20.0, 45.0)


def test_aircraft_errors(tmp_path):
    data = make_aircraft(tmp_path)
    with pytest.raises(DatasetError, match="unknown annotation_level 'model'"):
        load_records("aircraft", tmp_path, "test", annotation_level="model")
    with pytest.raises(DatasetError, match="unknown split 'training'"):
        load_records("aircraft", tmp_path, "training")
    with pytest.raises(DatasetError, match=r"not an FGVC-Aircraft root: expected one of .*fgvc-aircraft-2013b/data/variants\.txt"):
        load_records("aircraft", tmp_path / "fgvc-aircraft-2013b" / "data" / "images", "test")
    labels = data / "images_variant_test.txt"
    write(labels, ["0056978 F/A-18", "1111111 BAE 146-300"])
    with pytest.raises(DatasetError) as info:
        load_records("aircraft", tmp_path, "test")
    assert f"{labels}:2: class 'BAE 146-300' is not in {data / 'variants.txt'}" in str(info.value)
    write(labels, ["0056978F/A-18"])
    with pytest.raises(DatasetError, match=r"images_variant_test\.txt:1: expected '<image id> <class name>'"):
        load_records("aircraft", tmp_path, "test")
    make_aircraft(tmp_path)
    write(data / "images_box.txt", ["1025794 0 0 59 49", "0034309 3 5 40"])
    with pytest.raises(DatasetError, match=r"images_box\.txt:2: expected '<image id> <xmin> <ymin> <xmax> <ymax>'"):
        load_records("aircraft", tmp_path, "test")
    os.remove(data / "images_box.txt")
    with pytest.raises(DatasetError, match=f"FGVC-Aircraft boxes: file not found: {data / 'images_box.txt'}"):
        load_records("aircraft", tmp_path, "test")


# ----------------------------------------------------------------------------- cars
CAR_NAMES = ["AM General Hummer SUV 2000", "Ram C/V Cargo Van Minivan 2012", "Acura RL Sedan 2012"]
BOX_FIELDS = ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")
# fname, class (1-based), box
CAR_TRAIN = [("00001.jpg", 2, (1, 2, 30, 20)), ("00002.jpg", 1, (3, 4, 10, 12)), ("00003.jpg", 3, (5, 6, 38, 28))]
CAR_TEST = [("00001.jpg", 3, (2, 2, 20, 20)), ("00002.jpg", 2, (4, 5, 39, 29))]


def struct(rows: list[dict], fields: tuple[str, ...]) -> np.ndarray:
    arr = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    for i, row in enumerate(rows):
        for f in fields:
            arr[0, i][f] = row[f]
    return arr


def cell(names: list[str]) -> np.ndarray:
    return np.array([names], dtype=object)


def anno_rows(items, with_class=True):
    rows = []
    for fname, cls, box in items:
        row = dict(zip(BOX_FIELDS, box), fname=fname)
        if with_class:
            row["class"] = cls
        rows.append(row)
    return rows


def make_cars_devkit(parent: Path, labels_in_devkit: bool) -> Path:
    base = parent / "stanford_cars"
    for split, items in (("train", CAR_TRAIN), ("test", CAR_TEST)):
        for fname, _, _ in items:
            jpeg(base / f"cars_{split}" / fname)
    devkit = base / "devkit"
    devkit.mkdir(parents=True)
    scipy.io.savemat(devkit / "cars_meta.mat", {"class_names": cell(CAR_NAMES)})
    full = BOX_FIELDS + ("class", "fname")
    scipy.io.savemat(devkit / "cars_train_annos.mat", {"annotations": struct(anno_rows(CAR_TRAIN), full)})
    scipy.io.savemat(devkit / "cars_test_annos.mat",
                     {"annotations": struct(anno_rows(CAR_TEST, False), BOX_FIELDS + ("fname",))})
    where = devkit if labels_in_devkit else base
    scipy.io.savemat(where / "cars_test_annos_withlabels.mat", {"annotations": struct(anno_rows(CAR_TEST), full)})
    return base


def expected_cars(image_dir_of) -> dict[str, list[Record]]:
    return {
        split: [
            Record(str(image_dir_of(split, cls) / fname), cls - 1, CAR_NAMES[cls - 1], tuple(map(float, box)))
            for fname, cls, box in items
        ]
        for split, items in (("train", CAR_TRAIN), ("test", CAR_TEST))
    }


@pytest.mark.parametrize("labels_in_devkit", [False, True])
@pytest.mark.parametrize("use_parent", [False, True])
def test_cars_devkit(tmp_path, labels_in_devkit, use_parent):
    base = make_cars_devkit(tmp_path, labels_in_devkit)
    expected = expected_cars(lambda split, cls: base / f"cars_{split}")
    for split in ("train", "test"):
        got = load_records("cars", tmp_path if use_parent else base, split)
        assert got.class_names == CAR_NAMES
        assert got.records == expected[split]
        assert got.meta["layout"] == "devkit"


def test_cars_devkit_without_test_labels(tmp_path):
    base = make_cars_devkit(tmp_path, False)
    os.remove(base / "cars_test_annos_withlabels.mat")
    assert len(load_records("cars", tmp_path, "train")) == 3
    with pytest.raises(DatasetError) as info:
        load_records("cars", tmp_path, "test")
    message = str(info.value)
    assert str(base / "cars_test_annos_withlabels.mat") in message
    assert str(base / "devkit" / "cars_test_annos_withlabels.mat") in message


def test_cars_devkit_bad_record(tmp_path):
    base = make_cars_devkit(tmp_path, False)
    rows = anno_rows(CAR_TRAIN)
    rows[1]["class"] = 197
    path = base / "devkit" / "cars_train_annos.mat"
    scipy.io.savemat(path, {"annotations": struct(rows, BOX_FIELDS + ("class", "fname"))})
    with pytest.raises(DatasetError, match=f"{path}: record 2: class 197 is outside 1..3"):
        load_records("cars", tmp_path, "train")
    scipy.io.savemat(path, {"annotations": struct(anno_rows(CAR_TRAIN, False), BOX_FIELDS + ("fname",))})
    with pytest.raises(DatasetError, match=f"{path}: variable 'annotations' lacks field\\(s\\) class"):
        load_records("cars", tmp_path, "train")
    path.write_bytes(b"not a mat file")
    with pytest.raises(DatasetError, match=f"cannot read MATLAB file {path}"):
        load_records("cars", tmp_path, "train")


def make_cars_all_in_one(root: Path) -> Path:
    rows = []
    for n, (split, (_, cls, box)) in enumerate([("train", t) for t in CAR_TRAIN] + [("test", t) for t in CAR_TEST], 1):
        jpeg(root / "car_ims" / f"{n:06d}.jpg")
        rows.append(dict(zip(BOX_FIELDS, box), relative_im_path=f"car_ims/{n:06d}.jpg", test=int(split == "test"),
                         **{"class": cls}))
    fields = ("relative_im_path",) + BOX_FIELDS + ("class", "test")
    scipy.io.savemat(root / "cars_annos.mat", {"annotations": struct(rows, fields), "class_names": cell(CAR_NAMES)})
    return root


def test_cars_all_in_one(tmp_path):
    root = make_cars_all_in_one(tmp_path)
    train = load_records("cars", root, "train")
    assert train.class_names == CAR_NAMES
    assert train.meta["layout"] == "car_ims"
    assert train.records == [
        Record(str(root / "car_ims" / f"{n:06d}.jpg"), cls - 1, CAR_NAMES[cls - 1], tuple(map(float, box)))
        for n, (_, cls, box) in enumerate(CAR_TRAIN, 1)
    ]
    test = load_records("cars", root, "test")
    assert [(Path(r.path).name, r.label, r.box) for r in test.records] == [
        ("000004.jpg", 2, (2.0, 2.0, 20.0, 20.0)),
        ("000005.jpg", 1, (4.0, 5.0, 39.0, 29.0)),
    ]


def make_cars_kaggle(top: Path) -> Path:
    images = top / "car_data" / "car_data"
    for split, items in (("train", CAR_TRAIN), ("test", CAR_TEST)):
        for fname, cls, _ in items:
            jpeg(images / split / CAR_NAMES[cls - 1].replace("/", "-") / fname)
        write(top / f"anno_{split}.csv", [f"{f},{b[0]},{b[1]},{b[2]},{b[3]},{c}" for f, c, b in items])
    write(top / "names.csv", CAR_NAMES)
    return images


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_cars_kaggle_class_folders(tmp_path, depth):
    images = make_cars_kaggle(tmp_path)
    root = [tmp_path, tmp_path / "car_data", images][depth]
    expected = expected_cars(lambda split, cls: images / split / CAR_NAMES[cls - 1].replace("/", "-"))
    for split in ("train", "test"):
        got = load_records("cars", root, split)
        assert got.class_names == CAR_NAMES
        assert got.meta["layout"] == "kaggle"
        assert got.records == expected[split]
    assert "Ram C-V Cargo Van Minivan 2012" in load_records("cars", root, "test").records[1].path


def test_cars_kaggle_errors(tmp_path):
    images = make_cars_kaggle(tmp_path)
    write(tmp_path / "anno_test.csv", ["00001.jpg,2,2,20,20,3", "00002.jpg,4,5,39,29"])
    with pytest.raises(DatasetError) as info:
        load_records("cars", tmp_path, "test")
    assert f"{tmp_path / 'anno_test.csv'}:2: expected 'fname,x1,y1,x2,y2,class'" in str(info.value)
    write(tmp_path / "anno_test.csv", ["00001.jpg,2,2,20,20,3", "00002.jpg,4,5,39,29,x"])
    with pytest.raises(DatasetError, match=r"anno_test\.csv:2: class is not an integer: 'x'"):
        load_records("cars", tmp_path, "test")
    os.remove(tmp_path / "names.csv")
    with pytest.raises(DatasetError, match="names.csv not found; looked in"):
        load_records("cars", images, "train")


def test_cars_no_layout(tmp_path):
    (tmp_path / "something").mkdir()
    with pytest.raises(DatasetError) as info:
        load_records("cars", tmp_path, "train")
    message = str(info.value)
    assert message.startswith(f"no Stanford Cars layout found under {tmp_path}: looked for")
    for expected in ("devkit/cars_train_annos.mat", "stanford_cars/cars_annos.mat", "car_data/car_data/train/<class>/"):
        assert expected in message


# ----------------------------------------------------------------------------- folder
def make_folder(root: Path) -> Path:
    for rel in ("train/cat/a.jpg", "train/cat/b.JPG", "train/dog/c.png", "test/cat/d.jpg", "test/eel/e.jpeg"):
        jpeg(root / rel) if not rel.endswith(".png") else (root / rel).parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10)).save(root / "train/dog/c.png")
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    (root / "train" / ".hidden").mkdir()
    return root


def test_folder(tmp_path):
    root = make_folder(tmp_path)
    train = load_records("folder", root, "train")
    assert train.class_names == ["cat", "dog", "eel"]
    assert train.records == [
        Record(str(root / "train/cat/a.jpg"), 0, "cat", None),
        Record(str(root / "train/cat/b.JPG"), 0, "cat", None),
        Record(str(root / "train/dog/c.png"), 1, "dog", None),
    ]
    test = load_records("folder", root, "test")
    assert [(r.label, r.class_name) for r in test.records] == [(0, "cat"), (2, "eel")]
    with pytest.raises(DatasetError, match=r"image-folder split not found: .*/val .*split folders present: test, train"):
        load_records("folder", root, "val")


# ----------------------------------------------------------------------------- through the torch dataset
def test_every_layout_through_dataloader(tmp_path):
    from torch.utils.data import DataLoader

    make_cub(tmp_path / "cub")
    make_aircraft(tmp_path / "air")
    make_cars_kaggle(tmp_path / "cars")
    make_folder(tmp_path / "folder")
    transform = build_transform(False, 24, 20)
    cases = [("cub", tmp_path / "cub", "train"), ("aircraft", tmp_path / "air", "trainval"),
             ("cars", tmp_path / "cars", "test"), ("folder", tmp_path / "folder", "train")]
    for name, root, split in cases:
        data = load_records(name, root, split)
        batches = list(DataLoader(FGVCDataset(data, transform), batch_size=2, shuffle=False))
        labels = [int(v) for b in batches for v in b["label"]]
        assert labels == [r.label for r in data.records], name
        assert [int(v) for b in batches for v in b["index"]] == list(range(len(data)))
        assert all(b["image"].shape[1:] == (3, 20, 20) for b in batches)
        has_box = [bool(v) for b in batches for v in b["has_box"]]
        assert has_box == [r.box is not None for r in data.records], name
        boxes = [b["box"][i] for b in batches for i in range(len(b["label"]))]
        for record, box in zip(data.records, boxes):
            if record.box is None:
                assert all(math.isnan(v) for v in box.tolist())
    # one exact box: aircraft 0034309 is 60x50, 60x30 once the banner is cut; box (3, 5, 40, 25)
    # -> resize 24x24 scales by (0.4, 0.8) -> centre crop 20 shifts by 2 -> (-0.8, 2, 14, 18) -> clipped
    air = load_records("aircraft", tmp_path / "air", "trainval")
    sample = FGVCDataset(air, transform)[1]
    assert sample["image"].shape == (3, 20, 20)
    assert sample["box"].tolist() == pytest.approx([0.0, 2.0, 14.0, 18.0])


# ----------------------------------------------------------------------------- data-info
def run_info(capsys, *argv: str) -> tuple[int, str, str]:
    code = data_info_main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_data_info_summary_every_dataset(tmp_path, capsys):
    make_cub(tmp_path / "cub")
    make_aircraft(tmp_path / "air")
    make_cars_devkit(tmp_path / "cars", False)
    make_folder(tmp_path / "folder")
    code, out, err = run_info(capsys, "--dataset", "cub", "--root", str(tmp_path / "cub"))
    assert (code, err) == (0, "")
    info = json.loads(out)
    assert info["dataset"] == "cub" and info["num_classes"] == 3
    assert info["class_names_sample"] == ["Black footed Albatross", "Laysan Albatross", "Sooty Albatross"]
    assert info["splits"] == {
        "train": {"images": 3, "with_box": 3, "classes_present": 3, "missing_images": 0, "missing_examples": []},
        "test": {"images": 2, "with_box": 2, "classes_present": 2, "missing_images": 0, "missing_examples": []},
    }

    code, out, _ = run_info(capsys, "--dataset", "aircraft", "--root", str(tmp_path / "air"), "--annotation-level", "family")
    info = json.loads(out)
    assert code == 0 and info["annotation_level"] == "family" and info["crop_bottom"] == 20
    assert {s: (v["images"], v["with_box"]) for s, v in info["splits"].items()} == {
        "trainval": (3, 2), "train": (2, 2), "val": (1, 0), "test": (2, 2)}
    code, out, _ = run_info(capsys, "--dataset", "aircraft", "--root", str(tmp_path / "air"), "--split", "val",
                            "--no-crop-banner")
    assert code == 0 and json.loads(out)["splits"]["val"]["with_box"] == 1

    code, out, _ = run_info(capsys, "--dataset", "cars", "--root", str(tmp_path / "cars"))
    info = json.loads(out)
    assert info["layout"] == "devkit" and info["num_classes"] == 3
    assert {s: v["images"] for s, v in info["splits"].items()} == {"train": 3, "test": 2}

    os.remove(tmp_path / "folder" / "test" / "cat" / "d.jpg")
    (tmp_path / "folder" / "test" / "cat" / "d.jpg").mkdir()  # a folder named like an image is not an image
    code, out, _ = run_info(capsys, "--dataset", "folder", "--root", str(tmp_path / "folder"))
    info = json.loads(out)
    assert info["num_classes"] == 3
    assert {s: (v["images"], v["with_box"]) for s, v in info["splits"].items()} == {"test": (1, 0), "train": (3, 0)}


def test_data_info_records_and_missing(tmp_path, capsys):
    base = make_cub(tmp_path)
    os.remove(base / "images" / cub_rel(3, 2))
    code, out, _ = run_info(capsys, "--dataset", "cub", "--root", str(tmp_path), "--split", "train", "--records")
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[1] == {"path": str(base / "images" / cub_rel(3, 2)), "label": 1, "class_name": "Laysan Albatross",
                        "box": [5.5, 6.5, 12.5, 14.5]}
    assert len(lines) == 3
    code, out, _ = run_info(capsys, "--dataset", "cub", "--root", str(tmp_path), "--records")
    assert [json.loads(line)["split"] for line in out.splitlines()] == ["train"] * 3 + ["test"] * 2
    code, out, _ = run_info(capsys, "--dataset", "cub", "--root", str(tmp_path), "--split", "train")
    assert json.loads(out)["splits"]["train"]["missing_images"] == 1


def test_data_info_errors(tmp_path, capsys):
    make_cub(tmp_path)
    for argv, expected in [
        (["--dataset", "cub", "--root", str(tmp_path / "nope")], "dataset root not found"),
        (["--dataset", "cub", "--root", str(tmp_path), "--split", "val"], "unknown split 'val'"),
        (["--dataset", "cub", "--root", str(tmp_path), "--no-crop-banner"], "apply to --dataset aircraft only"),
        (["--dataset", "imagenet", "--root", str(tmp_path)], "invalid choice: 'imagenet'"),
        (["--root", str(tmp_path)], "the following arguments are required: --dataset"),
    ]:
        code, out, err = run_info(capsys, *argv)
        assert code == 2 and out == ""
        assert err.startswith("data-info: error: ") and expected in err
        assert err.count("\n") == 1 and "Traceback" not in err


def test_data_info_subprocess(tmp_path):
    data = make_aircraft(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "flrdf", "data-info", "--dataset", "aircraft", "--root", str(tmp_path),
           "--split", "test", "--records"]
    done = run_command(cmd, 300, "data-info", env=env, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line) for line in done.stdout.splitlines()] == [
        {"path": str(data / "images" / "0056978.jpg"), "label": 2, "class_name": "F/A-18", "box": [1.0, 2.0, 79.0, 40.0]},
        {"path": str(data / "images" / "1111111.jpg"), "label": 1, "class_name": "BAE 146-200", "box": [5.0, 6.0, 60.0, 20.0]},
    ]
    bad = run_command(cmd[:-4] + [str(tmp_path / "missing")], 300, "data-info", env=env, cwd=REPO)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().startswith("data-info: error: aircraft: dataset root not found:")
    assert "Traceback" not in bad.stderr


def test_public_names():
    assert DATASETS == ("cub", "aircraft", "cars", "folder")
    assert issubclass(DatasetError, ValueError)
    assert DatasetRecords([], []).crop_bottom == 0
