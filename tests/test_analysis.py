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
               "--methods", "gradcam", "--faithfulness-limit", "3", "--out", str(out)])
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


def test_faithfulness_is_the_librarys_own_numbers(tiny_run, demo_root):
    """evaluate_wsol's faithfulness equals calling pytorch_grad_cam.metrics directly on the same maps."""
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    from flrdf.cams import RawBranch, compute_cams
    from flrdf.config import apply_overrides
    from flrdf.engine.checkpoint import load_model
    from flrdf.engine.loaders import records_for
    from flrdf.engine.wsol_eval import faithfulness, wsol_loader

    loaded = load_model(tiny_run, "cpu")
    cfg = apply_overrides(loaded.config, [f"data.root={demo_root}"])
    batch = next(iter(wsol_loader(records_for(cfg.data, "test"), cfg.data.image_size, 3)))
    labels = batch["label"].tolist()
    maps = compute_cams(loaded.model, batch["image"], labels, ["gradcam"])
    got = faithfulness(loaded.model, batch["image"], labels, maps)["gradcam"]["cam_mult_conf_change"]
    want = CamMultImageConfidenceChange()(batch["image"], maps["gradcam"],
                                          [ClassifierOutputSoftmaxTarget(t) for t in labels],
                                          RawBranch(loaded.model).eval())
    assert got == pytest.approx(np.ravel(want).tolist(), abs=1e-6)


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
