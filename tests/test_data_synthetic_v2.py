"""The synthetic set, version 2 (classes by the fine appearance of wing and head), and version 1
kept as it was: deterministic trees, read by the cub reader, tight boxes, the stated object size
and detail size, a class that changes only the detail pixels, the version recorded, and the
helper scripts working on a v2 tree."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flrdf.data import load_records
from flrdf.data.commands import data_info_main
from flrdf.data.synthetic import MARKER_FILE, class_specs, main, make_demo_data, render_sample
from flrdf.data.synthetic_v2 import (
    BOX_FRACTION,
    DETAIL_AT_128,
    HEAD_PATTERNS,
    MAX_CLASSES,
    WING_PATTERNS,
    ClassSpecV2,
    class_specs_v2,
    make_demo_data_v2,
    render_sample_v2,
)

REPO = Path(__file__).resolve().parents[1]


def tree_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_v2_deterministic_for_a_seed_and_version_recorded(tmp_path):
    a = make_demo_data_v2(tmp_path / "a", num_classes=3, train_per_class=2, test_per_class=1, max_side=120, seed=7)
    b = make_demo_data_v2(tmp_path / "b", num_classes=3, train_per_class=2, test_per_class=1, max_side=120, seed=7)
    c = make_demo_data_v2(tmp_path / "c", num_classes=3, train_per_class=2, test_per_class=1, max_side=120, seed=8)
    files_a, files_b, files_c = tree_bytes(a), tree_bytes(b), tree_bytes(c)
    assert files_a == files_b
    jpgs = [k for k in files_a if k.endswith(".jpg")]
    assert len(jpgs) == 9
    assert all(files_a[k] != files_c[k] for k in jpgs)
    meta = json.loads((a / MARKER_FILE).read_text())
    assert meta["version"] == 2 and meta["generator"] == "flrdf.data.synthetic_v2" and meta["seed"] == 7
    assert meta["class_specs"][:2] == [{"wing": "onebar", "head": "eyering"}, {"wing": "twobar", "head": "browed"}]
    v1 = make_demo_data(tmp_path / "v1", num_classes=2, train_per_class=1, test_per_class=0, image_size=64)
    assert json.loads((v1 / MARKER_FILE).read_text())["version"] == 1


def test_v2_tree_reads_back_with_tight_boxes_and_varied_sizes(tmp_path, capsys):
    root = make_demo_data_v2(tmp_path, num_classes=4, train_per_class=3, test_per_class=2, max_side=150, seed=3)
    train = load_records("demo", tmp_path, "train")
    test = load_records("cub", root, "test")
    assert train.class_names == ["Eyering Onebar Bird", "Browed Twobar Bird", "Eyelined Spotted Bird",
                                 "Moustached Streaked Bird"]
    assert [r.label for r in test.records] == [0, 0, 1, 1, 2, 2, 3, 3]
    specs = class_specs_v2(4)
    by_path = {r.path: r for r in train.records + test.records}
    sizes = set()
    for n, line in enumerate((root / "images.txt").read_text().splitlines()):
        sample = render_sample_v2(specs[n // 5], (3, n), 150)
        assert by_path[str(root / "images" / line.split(" ", 1)[1])].box == tuple(map(float, sample.box))
        h, w = sample.image.shape[:2]
        assert 100 <= w <= 150 and 100 <= h <= 150
        sizes.add((w, h))
    assert len(sizes) > 10  # sizes and aspects vary per image
    assert data_info_main(["--dataset", "cub", "--root", str(root)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_classes"] == 4
    assert info["splits"]["train"] == {"images": 12, "with_box": 12, "classes_present": 4, "missing_images": 0,
                                       "missing_examples": []}
    assert info["splits"]["test"]["images"] == 8


def test_v2_box_is_the_tight_box_of_the_object():
    for n, spec in enumerate(class_specs_v2(MAX_CLASSES)):
        s = render_sample_v2(spec, (0, n), 256)
        inside = s.mask >= 0.5
        x1, y1, x2, y2 = s.box
        assert inside[y1:y2, x1:x2].sum() == inside.sum()
        assert inside[y1, x1:x2].any() and inside[y2 - 1, x1:x2].any()
        assert inside[y1:y2, x1].any() and inside[y1:y2, x2 - 1].any()
        assert s.image.dtype == np.uint8 and s.image.shape[:2] == s.mask.shape


def test_v2_object_and_detail_sizes_stay_in_the_stated_ranges():
    fractions, units_in, units_src, centres, flips = [], [], [], [], set()
    for n in range(60):
        s = render_sample_v2(ClassSpecV2("twobar", "eyering"), (1, n))
        h, w = s.image.shape[:2]
        assert 256 <= w <= 384 and 256 <= h <= 384
        x1, y1, x2, y2 = s.box
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        fractions.append((x2 - x1) * (y2 - y1) / (w * h))
        units_src.append(s.detail_px)
        units_in.append(s.detail_px * 128 / math.sqrt(w * h))
        centres.append(((x1 + x2) / 2 / w, (y1 + y2) / 2 / h))
        flips.add(s.centres["head"][0] > s.centres["wing"][0])  # head right of the wing: facing right
    assert 0.05 <= min(fractions) and max(fractions) <= 0.30
    assert max(fractions) - min(fractions) > 0.12
    assert BOX_FRACTION[0] * 0.8 <= np.median(fractions) <= BOX_FRACTION[1]
    assert min(units_in) >= DETAIL_AT_128[0] - 1e-6 and max(units_in) <= DETAIL_AT_128[1] + 1e-6
    assert min(units_src) >= 5.0 and max(units_src) <= 12.5
    xs, ys = np.array(centres).T
    assert xs.std() > 0.1 and ys.std() > 0.1  # placed anywhere
    assert flips == {True, False}  # both facings within one class


def test_v2_class_changes_only_the_detail_pixels():
    """Same image seed, every class: identical size, box, object mask and pose, identical pixels
    everywhere off the wing and the head; the images differ only inside those two parts."""
    specs = class_specs_v2(MAX_CLASSES)
    for n in range(4):
        samples = [render_sample_v2(spec, (5, n), 200) for spec in specs]
        ref = samples[0]
        detail_area = (ref.parts["wing"] > 0) | (ref.parts["head"] > 0)
        for other in samples[1:]:
            assert other.box == ref.box and other.centres == ref.centres and other.detail_px == ref.detail_px
            assert np.array_equal(other.mask, ref.mask)
            assert np.array_equal(other.image[~detail_area], ref.image[~detail_area])
        assert len({s.image.tobytes() for s in samples}) == len(specs)
        # a class differing in the wing only changes wing pixels; in the head only, head pixels
        by = {(s.wing, s.head): smp for s, smp in zip(specs, samples)}
        wing_only = by["onebar", "eyering"].image != by["twobar", "eyering"].image
        head_only = by["onebar", "eyering"].image != by["onebar", "browed"].image
        assert wing_only.any() and not wing_only[ref.parts["wing"] == 0].any()
        assert head_only.any() and not head_only[ref.parts["head"] == 0].any()


def test_v2_pose_and_scene_streams_do_not_read_the_class():
    """The random streams are keyed by (seed, image number) only: the same key gives the same pose
    for any class, and different keys give different poses within one class."""
    a = render_sample_v2(ClassSpecV2("spotted", "crowned"), (2, 11), 200)
    b = render_sample_v2(ClassSpecV2("chevron", "moustached"), (2, 11), 200)
    c = render_sample_v2(ClassSpecV2("spotted", "crowned"), (2, 12), 200)
    assert a.box == b.box and np.array_equal(a.mask, b.mask) and a.centres == b.centres
    assert a.box != c.box and a.centres != c.centres


def test_class_specs_v2():
    specs = class_specs_v2(MAX_CLASSES)
    assert MAX_CLASSES == 25 == len({(s.wing, s.head) for s in specs}) == len({s.name for s in specs})
    ten = class_specs_v2(10)
    # the demo's ten: every wing and every head pattern twice, so neither part alone names a class
    assert sorted(s.wing for s in ten) == sorted(WING_PATTERNS * 2)
    assert sorted(s.head for s in ten) == sorted(HEAD_PATTERNS * 2)
    with pytest.raises(ValueError, match="between 2 and 25 for version 2"):
        class_specs_v2(26)
    with pytest.raises(ValueError, match="unknown class"):
        render_sample_v2(ClassSpecV2("plain", "eyering"), 0)


def test_cli_version_2(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--version", "2", "--classes", "12", "--train-per-class", "1",
            "--test-per-class", "0", "--size", "128", "--seed", "1"]
    assert main(argv) == 0
    out, _ = capsys.readouterr()
    assert "wrote 12 images in 12 classes to" in out and "version 2" in out
    root = tmp_path / "CUB_200_2011"
    assert json.loads((root / MARKER_FILE).read_text())["version"] == 2
    assert len(load_records("cub", tmp_path, "train")) == 12
    assert main(["--out", str(tmp_path / "x"), "--version", "2", "--classes", "30"]) == 2
    assert "between 2 and 25 for version 2, got 30" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "y"), "--version", "4"]) == 2  # argparse: invalid choice
    assert "invalid choice" in capsys.readouterr().err


# Made with the generator as it was before version 2 existed (commit 8c4069a): version 1's pixels,
# boxes and text files must not move. (A different OpenCV or NumPy release could change rendering
# itself; then regenerate them from that commit with the same library versions.)
V1_RENDER_SHA256 = "ee289fe007035e6b078318a88718cde599ff1d938d08b8f4d6496fdb54a4d832"
V1_TEXT_SHA256 = {
    "images.txt": "169ca853b57c1680912e9ab1f838ece8f589cf18b30e9d975324d5cc90936c51",
    "classes.txt": "6ce46103acd63df1864cd6e4464c9907969404a3a053f0f43a08bf8893ea0d46",
    "image_class_labels.txt": "8b570f0c0d2f6923fb1f87c9a89e0fdb39bd712f14d5b91107b0f4c36b6cb0f8",
    "train_test_split.txt": "e7454dfd45613ccb97029de46438cc47e7ac5b7b825e6c5c60f67c18caa52db1",
    "bounding_boxes.txt": "6a316e429ee985e463fc8bb798bc9bd79ba28024216584c755ef41958da56ac2",
}


def test_v1_output_unchanged(tmp_path):
    h = hashlib.sha256()
    from flrdf.data.synthetic import MAX_CLASSES as V1_MAX

    for n, spec in enumerate(class_specs(V1_MAX)):
        s = render_sample(spec, (11, n), 96)
        h.update(s.image.tobytes())
        h.update(repr(s.box).encode())
    assert h.hexdigest() == V1_RENDER_SHA256
    root = make_demo_data(tmp_path, num_classes=3, train_per_class=2, test_per_class=1, image_size=80, seed=5)
    for name, digest in V1_TEXT_SHA256.items():
        assert hashlib.sha256((root / name).read_bytes()).hexdigest() == digest, name
    # the default CLI is still version 1
    assert main(["--out", str(tmp_path / "cli"), "--classes", "3", "--train-per-class", "2", "--test-per-class", "1",
                 "--size", "80", "--seed", "5"]) == 0
    assert tree_bytes(tmp_path / "cli" / "CUB_200_2011") == tree_bytes(root)


def test_crop_set_and_examples_scripts_on_a_v2_tree(tmp_path):
    make_demo_data_v2(tmp_path / "v2", num_classes=3, train_per_class=2, test_per_class=2, max_side=160, seed=4)
    crops, examples = tmp_path / "crops", tmp_path / "examples"
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_crop_set.py"), "--root", str(tmp_path / "v2"),
                    "--out", str(crops), "--size", "48"], check=True, capture_output=True, cwd=REPO)
    from PIL import Image

    files = sorted(crops.rglob("*.jpg"))
    assert len(files) == 12 and {p.parent.parent.name for p in files} == {"train", "test"}
    assert {p.parent.name for p in files} == {"Eyering Onebar Bird", "Browed Twobar Bird", "Eyelined Spotted Bird"}
    assert all(Image.open(p).size == (48, 48) for p in files)
    subprocess.run([sys.executable, str(REPO / "scripts" / "make_examples.py"), "--root", str(tmp_path / "v2"),
                    "--out", str(examples), "--count", "4"], check=True, capture_output=True, cwd=REPO)
    entries = json.loads((examples / "examples.json").read_text())
    test = {Path(r.path).name: r for r in load_records("cub", tmp_path / "v2", "test").records}
    assert len(entries) == 4 and {e["label"] for e in entries} == {0, 1, 2}
    for e in entries:
        assert (examples / e["file"]).is_file() and e["box"] == list(test[e["file"]].box)
