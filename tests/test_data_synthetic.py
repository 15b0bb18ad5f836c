"""The synthetic fine-grained set: deterministic, tight boxes, and a class that lives only in
the marks on the object - background, pose and colours do not depend on it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from flrdf.data import load_records
from flrdf.data.synthetic import (
    MAX_CLASSES,
    ClassSpec,
    class_specs,
    main,
    make_demo_data,
    render_sample,
    tight_box,
)


def tree_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_deterministic_for_a_seed(tmp_path):
    a = make_demo_data(tmp_path / "a", num_classes=3, train_per_class=2, test_per_class=1, image_size=64, seed=7)
    b = make_demo_data(tmp_path / "b", num_classes=3, train_per_class=2, test_per_class=1, image_size=64, seed=7)
    c = make_demo_data(tmp_path / "c", num_classes=3, train_per_class=2, test_per_class=1, image_size=64, seed=8)
    assert a == tmp_path / "a" / "CUB_200_2011"
    files_a, files_b, files_c = tree_bytes(a), tree_bytes(b), tree_bytes(c)
    assert files_a == files_b
    assert len([k for k in files_a if k.endswith(".jpg")]) == 9
    differing = [k for k in files_a if k.endswith(".jpg") and files_a[k] != files_c[k]]
    assert len(differing) == 9


def test_tree_reads_back_with_tight_boxes(tmp_path):
    root = make_demo_data(tmp_path, num_classes=4, train_per_class=2, test_per_class=1, image_size=96, seed=3)
    train = load_records("demo", tmp_path, "train")
    test = load_records("cub", root, "test")
    assert train.class_names == ["Fore striped Fish", "Hind striped Fish", "Fore dotted Fish", "Hind dotted Fish"]
    assert [r.label for r in train.records] == [0, 0, 1, 1, 2, 2, 3, 3]
    assert [r.label for r in test.records] == [0, 1, 2, 3]
    assert (root / "classes.txt").read_text().splitlines()[1] == "2 002.Hind_striped_Fish"
    assert (root / "images.txt").read_text().splitlines()[3] == "4 002.Hind_striped_Fish/Hind_striped_Fish_0001.jpg"
    specs = class_specs(4)
    # image number n (0-based) is class n // 3, drawn from seed key (seed, n)
    by_path = {r.path: r for r in train.records + test.records}
    for n, line in enumerate((root / "images.txt").read_text().splitlines()):
        sample = render_sample(specs[n // 3], (3, n), 96)
        assert by_path[str(root / "images" / line.split(" ", 1)[1])].box == tuple(map(float, sample.box))
    meta = json.loads((root / "flrdf_synthetic.json").read_text())
    assert meta["classes"] == 4 and meta["seed"] == 3


def test_box_is_the_tight_box_of_the_object():
    for n, spec in enumerate(class_specs(MAX_CLASSES)):
        sample = render_sample(spec, (0, n), 128)
        inside = sample.mask >= 0.5
        x1, y1, x2, y2 = sample.box
        assert sample.box == tight_box(sample.mask)
        assert inside[y1:y2, x1:x2].sum() == inside.sum()  # everything of the object is in the box
        assert inside[y1, x1:x2].any() and inside[y2 - 1, x1:x2].any()  # and each edge touches it
        assert inside[y1:y2, x1].any() and inside[y1:y2, x2 - 1].any()
        assert sample.image.shape == (128, 128, 3) and sample.image.dtype == np.uint8


def test_object_size_and_placement_vary_within_bounds():
    fractions, centres = [], []
    for n in range(40):
        s = render_sample(ClassSpec("striped", "fore"), (1, n), 256)
        x1, y1, x2, y2 = s.box
        assert 0 <= x1 < x2 <= 256 and 0 <= y1 < y2 <= 256
        fractions.append((x2 - x1) * (y2 - y1) / 256**2)
        centres.append(((x1 + x2) / 2, (y1 + y2) / 2))
    assert 0.08 <= min(fractions) and max(fractions) <= 0.5
    assert max(fractions) - min(fractions) > 0.15
    xs, ys = np.array(centres).T
    assert xs.std() > 20 and ys.std() > 20


def test_class_is_independent_of_background_and_pose():
    """Same image seed, different classes: identical box, identical object mask, and identical
    pixels everywhere off the object; the images differ only in the marks on the object."""
    specs = class_specs(MAX_CLASSES)
    for n in range(6):
        samples = [render_sample(spec, (5, n), 128) for spec in specs]
        reference = samples[0]
        off_object = reference.mask == 0
        for other in samples[1:]:
            assert other.box == reference.box
            assert np.array_equal(other.mask, reference.mask)
            assert np.array_equal(other.image[off_object], reference.image[off_object])
        distinct = {s.image.tobytes() for s in samples}
        assert len(distinct) == len(specs)  # every class changes some object pixels


def test_class_specs():
    assert [(s.pattern, s.position) for s in class_specs(4)] == [
        ("striped", "fore"), ("striped", "hind"), ("dotted", "fore"), ("dotted", "hind")]
    assert len({s.name for s in class_specs(MAX_CLASSES)}) == MAX_CLASSES
    assert class_specs(MAX_CLASSES)[2].position == "tail"
    with pytest.raises(ValueError, match=f"between 2 and {MAX_CLASSES}"):
        class_specs(MAX_CLASSES + 1)


def test_cli(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--classes", "2", "--train-per-class", "1", "--test-per-class", "1",
            "--size", "64", "--seed", "1"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert f"wrote 4 images in 2 classes to {tmp_path / 'CUB_200_2011'}" in out
    assert "make-demo-data" in err  # the tqdm bar
    assert len(load_records("cub", tmp_path, "train")) == 2
    assert main(argv) == 0  # rewriting its own tree is fine
    capsys.readouterr()
    assert main(["--out", str(tmp_path / "x"), "--classes", "1"]) == 2
    out, err = capsys.readouterr()
    assert err.strip() == f"make-demo-data: error: number of classes must be between 2 and {MAX_CLASSES}, got 1"
    real = tmp_path / "real" / "CUB_200_2011"
    real.mkdir(parents=True)
    (real / "images.txt").write_text("1 a.jpg\n")
    assert main(["--out", str(tmp_path / "real")]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (real / "images.txt").read_text() == "1 a.jpg\n"
