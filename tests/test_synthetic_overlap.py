"""Synthetic image identities (flrdf.data.synthetic_overlap, make-demo-data --version 3): a test image must not
depend on the other splits' counts, and eval / loc-eval warn when a set holds the model's training images."""

import hashlib
import json
from pathlib import Path

import pytest

from flrdf.data.synthetic import MARKER_FILE, main as make_demo_data_main
from flrdf.data.synthetic_overlap import generator_record, image_ids, training_overlap
from flrdf.data.synthetic_v2 import generator_record_v2, make_demo_data_v2, make_demo_data_v3

SIDE = 96  # the smallest v2/v3 image side: fast to render

# version 2 as the bundled demo model's data was made: a tree hashed with the generator of commit 249f5df
V2_TREE_SHA256 = "5899cef8c9c6bdcb67130e282cd630f2829da40b1c272d96ab60751cffc0bc03"


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != MARKER_FILE:
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def split_files(root: Path, split: str) -> dict[str, bytes]:
    """{class folder/k within the split: JPEG bytes} of a written tree."""
    lines = lambda name: dict(l.split(" ", 1) for l in (root / name).read_text().split("\n") if l)
    images, flags = lines("images.txt"), lines("train_test_split.txt")
    want = "1" if split == "train" else "0"
    out, counts = {}, {}
    for i, rel in images.items():
        if flags[i] == want:
            folder = rel.split("/")[0]
            k = counts[folder] = counts.get(folder, -1) + 1
            out[f"{folder}/{k}"] = (root / "images" / rel).read_bytes()
    return out


def test_v2_is_unchanged(tmp_path):
    root = make_demo_data_v2(tmp_path, num_classes=3, train_per_class=2, test_per_class=1, max_side=SIDE, seed=7)
    assert tree_hash(root) == V2_TREE_SHA256


def test_v3_test_images_do_not_change_with_the_train_counts(tmp_path):
    a = make_demo_data_v3(tmp_path / "a", num_classes=2, train_per_class=1, test_per_class=2, max_side=SIDE)
    b = make_demo_data_v3(tmp_path / "b", num_classes=2, train_per_class=3, test_per_class=2, max_side=SIDE)
    test_a, test_b = split_files(a, "test"), split_files(b, "test")
    assert len(test_a) == 4 and test_a == test_b
    train_a, train_b = split_files(a, "train"), split_files(b, "train")
    assert all(train_b[k] == v for k, v in train_a.items())        # the first training images too
    assert not set(test_b.values()) & set(train_b.values())        # and no image is in both splits
    # version 2 with the same counts: the test images move (the defect version 3 removes)
    v2a = make_demo_data_v2(tmp_path / "v2a", num_classes=2, train_per_class=1, test_per_class=2, max_side=SIDE)
    v2b = make_demo_data_v2(tmp_path / "v2b", num_classes=2, train_per_class=3, test_per_class=2, max_side=SIDE)
    assert split_files(v2a, "test") != split_files(v2b, "test")
    record = json.loads((a / MARKER_FILE).read_text())
    assert record["version"] == 3 and record == generator_record(tmp_path / "a") and record == generator_record(a)


def test_cli_version_3(tmp_path, capsys):
    assert make_demo_data_main(["--out", str(tmp_path), "--version", "3", "--classes", "2", "--train-per-class", "1",
                                "--test-per-class", "1", "--size", str(SIDE)]) == 0
    assert "version 3" in capsys.readouterr().out
    assert json.loads((tmp_path / "CUB_200_2011" / MARKER_FILE).read_text())["version"] == 3


@pytest.mark.parametrize("version", [2, 3])
def test_overlap_from_the_records_is_the_overlap_of_the_files(tmp_path, version):
    """A model trained on set A (5 train / 2 test per class); set B made with other counts (2 / 2), same seed.
    Version 2: 3 of B's 4 test images are byte-identical training images of A; version 3: none."""
    make = make_demo_data_v2 if version == 2 else make_demo_data_v3
    a = make(tmp_path / "a", num_classes=2, train_per_class=5, test_per_class=2, max_side=SIDE)
    b = make(tmp_path / "b", num_classes=2, train_per_class=2, test_per_class=2, max_side=SIDE)
    by_bytes = len(set(split_files(a, "train").values()) & set(split_files(b, "test").values()))
    assert by_bytes == (3 if version == 2 else 0)
    assert training_overlap(generator_record(a), generator_record(b), "test") == (by_bytes, 4)
    assert training_overlap(generator_record(a), generator_record(a), "test") == (0, 4)   # the set's own split
    train_bytes = len(set(split_files(a, "train").values()) & set(split_files(b, "train").values()))
    assert train_bytes == (2 if version == 2 else 4)                    # B's training split: A's first images
    assert training_overlap(generator_record(a), generator_record(b), "train") == (train_bytes, 4)


def test_the_demo_and_make_demo_data_defaults():
    """The bundled demo model's data (v2, 150 / 40 per class, seed 0) against make-demo-data --version 2 with its
    default counts (60 / 30): 30 of its 300 test images are the model's training images (the issue's count,
    found there by comparing files); with --version 3 none."""
    demo = generator_record_v2(10, 150, 40, seed=0)
    assert training_overlap(demo, generator_record_v2(10, 60, 30, seed=0), "test") == (30, 300)
    assert training_overlap(demo, generator_record_v2(10, 60, 30, seed=1), "test") == (0, 300)
    assert training_overlap(demo, generator_record_v2(10, 60, 30, seed=0, version=3), "test") == (0, 300)
    assert training_overlap(demo, demo, "test") == (0, 400)
    assert len(image_ids(demo, "train")) == 1500


@pytest.fixture(scope="module")
def sets_and_model(tmp_path_factory):
    """Sets A (5 / 2 per class) and B (2 / 2), version 2, seed 0; a tiny model file recording A as its data."""
    import torch

    from flrdf.config import Config
    from flrdf.engine.checkpoint import save_model_file
    from flrdf.model import FLRDF

    base = tmp_path_factory.mktemp("overlap")
    a = make_demo_data_v2(base / "a", num_classes=2, train_per_class=5, test_per_class=2, max_side=SIDE)
    b = make_demo_data_v2(base / "b", num_classes=2, train_per_class=2, test_per_class=2, max_side=SIDE)
    cfg = Config()
    cfg.model.backbone, cfg.model.pretrained, cfg.model.box_refine = "resnet18", False, "none"
    cfg.data.dataset, cfg.data.image_size, cfg.data.resize, cfg.data.num_workers = "cub", 64, 72, 0
    torch.manual_seed(0)
    path = base / "m.safetensors"
    save_model_file(path, FLRDF(cfg.model, 2), cfg, ["x", "y"], extra={"data_generator": generator_record(a)})
    return a, b, path


def test_eval_warns_when_the_set_holds_training_images(sets_and_model, capsys):
    from flrdf.engine.commands import eval_main

    a, b, model = sets_and_model
    assert eval_main(["--checkpoint", str(model), "--set", f"data.root={b}", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert "warning: 3 of the 4 test images of" in captured.err and "training images of this model" in captured.err
    assert len(result["warnings"]) == 1 and result["warnings"][0].startswith("3 of the 4 test images")
    # the model's own test split: no warning
    assert eval_main(["--checkpoint", str(model), "--set", f"data.root={a}", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err and json.loads(captured.out.strip().splitlines()[-1])["warnings"] == []


def test_loc_eval_warns_in_its_table(sets_and_model, tmp_path, capsys):
    from flrdf.engine.loc_report import main as loc_eval_main

    _, b, model = sets_and_model
    assert loc_eval_main(["--checkpoint", str(model), "--set", f"data.root={b}", "--methods", "", "--no-wsol",
                          "--worst", "0", "--device", "cpu", "--out", str(tmp_path / "le")]) == 0
    captured = capsys.readouterr()
    assert "warning: 3 of the 4 test images" in captured.err
    assert "**Warning**: 3 of the 4 test images" in (tmp_path / "le" / "table.md").read_text()


def test_the_bundled_demo_model_carries_its_data_and_refinement_records():
    """assets/demo_model.safetensors, resolved by scripts/resolve_refine.py (docs/results/demo_refine_decision.json):
    its data's generator record, so eval warns on make-demo-data --version 2's default set and not on its own."""
    from flrdf.engine.checkpoint import load_model

    root = Path(__file__).resolve().parents[1]
    loaded = load_model(root / "assets" / "demo_model.safetensors")
    record = loaded.extra["data_generator"]
    assert record == generator_record_v2(10, 150, 40, seed=0)
    assert training_overlap(record, generator_record_v2(10, 60, 30, seed=0), "test") == (30, 300)
    assert training_overlap(record, record, "test") == (0, 400)
    d = loaded.extra["refine_decision"]
    assert loaded.config.model.box_refine == d["decision"] == "grabcut" and d["requested"] == "auto"
    assert (d["n_box"], d["loc_acc_refined"], d["loc_acc_map"]) == (150, 0.833333, 0.66)
    assert json.loads((root / "docs" / "results" / "demo_refine_decision.json").read_text())["decision"] == "grabcut"


def test_the_evaluate_tab_shows_the_box_and_the_warning(sets_and_model, tmp_path, capsys):
    from dashboard.evaluate_tab import summary_markdown
    from flrdf.engine.loc_report import main as loc_eval_main, read_results

    _, b, model = sets_and_model
    assert loc_eval_main(["--checkpoint", str(model), "--set", f"data.root={b}", "--methods", "", "--no-wsol",
                          "--worst", "0", "--device", "cpu", "--out", str(tmp_path / "le")]) == 0
    capsys.readouterr()
    text = summary_markdown(read_results(tmp_path / "le"), tmp_path / "le")
    assert "FLRDF's box: the map's own box (model.box_refine=none" in text
    assert "**Warning**: 3 of the 4 test images" in text
