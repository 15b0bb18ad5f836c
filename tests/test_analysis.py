"""flrdf.analysis (maths on known inputs) and ``python -m flrdf analyze`` on the shared tiny trained run."""

import csv
import json

import numpy as np
import pytest
import torch

from flrdf.analysis import (agreement, class_order, confused_pairs, confusion_matrix, most_confused_with,
                            per_class_accuracy, top1, worst_block)


def test_confusion_matrix_rows_true_columns_predicted():
    cm = confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 0, 0], 4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [2, 0, 1, 0], [0, 0, 0, 0]]
    assert cm.sum() == 6 and top1(cm) == pytest.approx(3 / 6)
    acc = per_class_accuracy(cm)
    assert acc[:3].tolist() == pytest.approx([0.5, 1.0, 1 / 3]) and np.isnan(acc[3])
    assert confused_pairs(cm, 5) == [(2, 0, 2), (0, 1, 1)]
    assert most_confused_with(cm) == [1, None, 0, None]
    with pytest.raises(ValueError, match="class ids"):
        confusion_matrix([0, 5], [0, 0], 4)


def test_order_puts_confused_classes_together_and_finds_the_worst_block():
    k = 12
    cm = np.diag(np.full(k, 10))
    for a, b in ((0, 7), (7, 3), (3, 0)):       # classes 0, 3, 7 confuse each other heavily
        cm[a, b] = cm[b, a] = 5
    cm[5, 9] = cm[9, 5] = 1
    order = class_order(cm).tolist()
    assert sorted(order) == list(range(k))
    pos = sorted(order.index(c) for c in (0, 3, 7))
    assert pos[2] - pos[0] == 2                  # adjacent
    start, stop, errors = worst_block(cm, np.array(order), 3)
    assert sorted(order[start:stop]) == [0, 3, 7] and errors == 30
    assert class_order(np.diag(np.full(5, 3))).tolist() == list(range(5))   # no confusion: identity


def test_order_recovers_hidden_confusion_groups_at_200_classes():
    rng = np.random.default_rng(0)
    k = 200
    y = np.repeat(np.arange(k), 30)
    groups = rng.permutation(k).reshape(40, 5)          # 40 hidden groups of 5 mutually confused classes
    group_of = {c: g for g in groups for c in g}
    p = y.copy()
    wrong = rng.random(len(y)) < 0.3
    p[wrong] = [rng.choice(group_of[c]) for c in y[wrong]]
    cm = confusion_matrix(y, p, k)
    pos = {c: i for i, c in enumerate(class_order(cm).tolist())}
    assert all(max(pos[c] for c in g) - min(pos[c] for c in g) == 4 for g in groups)   # every group contiguous
    start, stop, errors = worst_block(cm, class_order(cm), 20)
    assert stop - start == 20 and errors == max(
        int((cm[np.ix_(o, o)] - np.diag(np.diag(cm[np.ix_(o, o)]))).sum())
        for o in (class_order(cm)[s:s + 20] for s in range(0, 181)))


def test_agreement_partitions_the_images():
    y = [0, 1, 2, 3, 4]
    a = agreement(y, [0, 1, 9, 9, 4], [0, 9, 2, 9, 9])
    assert a["both_right"].tolist() == [0] and a["a_only"].tolist() == [1, 4]
    assert a["b_only"].tolist() == [2] and a["both_wrong"].tolist() == [3]


@pytest.fixture(scope="module")
def analysis_dir(tiny_run, demo_root, tmp_path_factory):
    from flrdf.engine.analyze import main

    out = tmp_path_factory.mktemp("analysis") / "out"
    rc = main(["--run", str(tiny_run), "--set", f"data.root={demo_root}", "--device", "cpu", "--batch-size", "5",
               "--methods", "gradcam", "--faithfulness-limit", "3", "--embedding", "tsne", "--out", str(out)])
    assert rc == 0
    return out


def test_confusion_is_consistent_with_eval_per_branch(analysis_dir, tiny_run, demo_root):
    """The confusion matrix sums to n and its diagonal over n is eval's top-1, for every branch."""
    from flrdf.config import apply_overrides
    from flrdf.engine.checkpoint import load_model
    from flrdf.engine.evaluate import evaluate
    from flrdf.engine.loaders import eval_loader
    from flrdf.engine.step import precision_for

    loaded = load_model(tiny_run, "cpu")
    cfg = apply_overrides(loaded.config, [f"data.root={demo_root}"])
    ref = evaluate(loaded.model, eval_loader(cfg.data, "test", 5, 0), precision_for(torch.device("cpu"), False, False),
                   jigsaw=True)
    results = json.loads((analysis_dir / "results.json").read_text())
    assert results["n"] == ref["n"] == 12
    keys = {"combined": "top1", "raw": "top1_raw", "object": "top1_object", "jigsaw": "top1_jigsaw"}
    assert set(results["branches"]) == set(keys)
    for branch, key in keys.items():
        cm = np.loadtxt(analysis_dir / f"confusion_{branch}.csv", delimiter=",", dtype=np.int64)
        assert cm.shape == (4, 4) and cm.sum() == ref["n"], branch
        assert np.trace(cm) / cm.sum() == pytest.approx(ref[key], abs=1e-6), branch
        assert results["top1"][branch] == pytest.approx(ref[key], abs=1e-6)


def test_predictions_csv_and_the_views(analysis_dir, tiny_run):
    with open(analysis_dir / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12
    for r in rows:
        probs = [float(r[f"combined_prob{i}"]) for i in range(1, 5)]
        assert probs == sorted(probs, reverse=True) and sum(probs) == pytest.approx(1, abs=1e-4)  # 4 classes
        assert 0 <= float(r["iou"]) <= 1 and float(r["box_x2"]) > float(r["box_x1"])
    results = json.loads((analysis_dir / "results.json").read_text())
    per_class = results["per_class"]
    assert sum(c["n"] for c in per_class) == 12
    wrong = sum(1 for r in rows if r["combined_pred1"] != r["label"])
    counted = sum(p["count"] for p in results["pairs"])
    assert counted == wrong                       # 4 classes: every off-diagonal cell is among the top 10
    for p in results["pairs"]:
        assert 0 < len(p["images"]) <= min(p["count"], 6)
        assert all((analysis_dir / im["png"]).is_file() for im in p["images"])
    ag = results["agreement"]["counts"]
    assert sum(ag.values()) == 12
    assert len(results["agreement"]["rescued"]) == min(ag["object_only"], 12)
    for name in ("confusion.png", "confusion_zoom.png", "per_class.png", "per_class.csv", "wsol.csv", "wsol.md"):
        assert (analysis_dir / name).is_file(), name
    wsol = {r["method"]: r for r in results["wsol"]["rows"]}
    assert list(wsol) == ["flrdf", "plain", "paper", "paper_x", "gradcam"] and results["wsol"]["n_box"] == 12
    for r in wsol.values():
        assert r["max_box_acc_v2"] == pytest.approx(np.mean([r["max_box_acc_iou30"], r["max_box_acc_iou50"],
                                                             r["max_box_acc_iou70"]]), abs=1e-5)
        assert all(np.isfinite(r[k]) for k in ("road_morf", "road_lerf", "cam_mult_conf_change"))
    assert results["wsol"]["faith_n"] == 3
    # wsolevaluation's step by default: 1,000 thresholds, recorded, and named in wsol.md
    assert results["wsol"]["thresholds"] == {"start": 0.0, "count": 1000, "step": 0.001, "name": "reference"}
    assert results["wsol"]["frame"] == 224 and results["wsol"]["model_input"] == [results["image_size"]] * 2
    assert "1000 thresholds (step 0.001, reference)" in (analysis_dir / "wsol.md").read_text()


def _gradcam_at_grid(model, images, labels):
    """Grad-CAM at layer4's resolution from its definition (ReLU of the gradient-weighted channel sum)."""
    from flrdf.cams import RawBranch

    acts = []
    hook = model.backbone.layer4.register_forward_hook(lambda _m, _i, out: acts.append(out))
    try:
        with torch.enable_grad():
            logits = RawBranch(model)(images)
            grads = torch.autograd.grad(logits[torch.arange(len(labels)), torch.as_tensor(labels)].sum(), acts[0])[0]
    finally:
        hook.remove()
    model.zero_grad(set_to_none=True)
    return torch.relu((grads.mean(dim=(2, 3), keepdim=True) * acts[0].detach()).sum(dim=1)).numpy()


def test_every_map_is_scored_from_its_grid_by_the_protocol(tiny_run, demo_root):
    """evaluate_wsol against the independent protocol (tests/wsol_reference.py): each map taken at its own grid
    resolution - FLRDF's and the plain map from model.maps, Grad-CAM computed here from its definition - goes
    once, bicubically, to the 224 frame; boxes come from the original image's pixels. Faithfulness's
    map x image confidence change is the raw branch's softmax change, computed here, with each grid map
    brought to the input by bilinear resizing and min-max (cv2, not the library)."""
    import cv2
    from PIL import Image

    from flrdf.cams import RawBranch
    from flrdf.config import apply_overrides
    from flrdf.engine.checkpoint import load_model
    from flrdf.engine.loaders import records_for
    from flrdf.engine.wsol_eval import evaluate_wsol, wsol_loader
    from wsol_reference import protocol_best_ious, protocol_max_box_acc

    loaded = load_model(tiny_run, "cpu")
    model = loaded.model.eval()
    cfg = apply_overrides(loaded.config, [f"data.root={demo_root}"])
    data = records_for(cfg.data, "test")
    assert not data.crop_bottom and all(r.box is not None for r in data.records)
    got = evaluate_wsol(model, wsol_loader(data, cfg.data.image_size, 5), methods=["gradcam"], step="fast",
                        faith_limit=3)
    assert got["thresholds"] == {"start": 0.0, "count": 100, "step": 0.01, "name": "fast"}
    assert got["frame"] == 224 and got["model_input"] == [cfg.data.image_size] * 2 and got["n_box"] == 12
    batch = next(iter(wsol_loader(data, cfg.data.image_size, 12)))
    images, labels = batch["image"], batch["label"].tolist()
    with torch.no_grad():
        flrdf_map, plain_map = (m.numpy() for m in model.maps(images))
        f = model.features(images)  # the paper's layer4 maps: channel means of X' and X
        paper, paper_x = (model.channel_map(t).numpy() for t in (f.xs, f.x))
    grid = {"flrdf": flrdf_map, "plain": plain_map, "paper": paper, "paper_x": paper_x,
            "gradcam": _gradcam_at_grid(model, images, labels)}
    assert [r["method"] for r in got["rows"]] == list(grid)
    for row in got["rows"]:
        key = row["method"]
        every, largest = [], []
        for rec, cam in zip(data.records, grid[key]):
            wh = Image.open(rec.path).size
            every.append(protocol_best_ious(cam, [rec.box], wh, 0.01))
            largest.append(protocol_best_ious(cam, [rec.box], wh, 0.01, largest_only=True))
        want = protocol_max_box_acc(every)
        assert {k: row[k] for k in want} == pytest.approx(want, abs=1e-6), key
        assert row["max_box_acc_v2_largest"] == pytest.approx(protocol_max_box_acc(largest)["max_box_acc_v2"],
                                                              abs=1e-6), key
    # faithfulness: p(class | image * map) - p(class | image) on the raw branch, the first 3 images
    x, t = images[:3], labels[:3]
    with torch.no_grad():
        before = torch.softmax(RawBranch(model)(x), 1)[torch.arange(3), t]
    size = (x.shape[-1], x.shape[-2])
    for row in got["rows"]:
        up = np.stack([cv2.resize(m.astype(np.float32), size, interpolation=cv2.INTER_LINEAR) for m in grid[row["method"]][:3]])
        lo, hi = up.min(axis=(1, 2), keepdims=True), up.max(axis=(1, 2), keepdims=True)
        at_input = np.where(hi > lo, (up - lo) / np.where(hi > lo, hi - lo, 1), 0).astype(np.float32)
        with torch.no_grad():
            after = torch.softmax(RawBranch(model)(x * torch.from_numpy(at_input)[:, None]), 1)[torch.arange(3), t]
        assert row["cam_mult_conf_change"] == pytest.approx(float((after - before).mean()), abs=1e-4), row["method"]


def test_loc_eval_table_carries_max_box_acc_v2_beside_the_largest_region_figure(tiny_run, demo_root, tmp_path):
    from flrdf.config import apply_overrides
    from flrdf.engine.checkpoint import load_model
    from flrdf.engine.loaders import records_for
    from flrdf.engine.loc_report import main as loc_eval_main, read_results
    from flrdf.engine.wsol_eval import evaluate_wsol, wsol_loader

    out = tmp_path / "loc"
    assert loc_eval_main(["--run", str(tiny_run), "--set", f"data.root={demo_root}", "--methods", "gradcam",
                          "--device", "cpu", "--worst", "0", "--faithfulness-limit", "2", "--out", str(out)]) == 0
    rows = {r["method"]: r for r in read_results(out)["rows"]}
    loaded = load_model(tiny_run, "cpu")
    cfg = apply_overrides(loaded.config, [f"data.root={demo_root}"])
    data = records_for(cfg.data, "test")
    direct = evaluate_wsol(loaded.model, wsol_loader(data, cfg.data.image_size, 4), methods=["gradcam"], faith_limit=2)
    for r in direct["rows"]:
        assert rows[r["method"]]["max_box_acc_v2"] == r["max_box_acc_v2"]
        assert rows[r["method"]]["road_morf"] == pytest.approx(r["road_morf"], abs=1e-6)
        assert rows[r["method"]]["max_box_acc_357"] is not None       # the largest-region figure stays
    assert rows["centre"]["max_box_acc_v2"] is None
    table = (out / "table.md").read_text()
    assert "largest-region MaxBoxAcc@{.3,.5,.7}" in table and "MaxBoxAccV2 (wsolevaluation)" in table
