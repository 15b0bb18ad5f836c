"""analyze's embedding and calibration on the shared tiny run: one embedded row per image of the split, the
pooled features are the heads' inputs, ECE agrees with predictions.csv, the temperature comes from val."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flrdf.calibration import ece
from flrdf.engine.feature_report import read_embedding_csv


@pytest.fixture(scope="module")
def feature_dir(tiny_run, demo_root, tmp_path_factory):
    from flrdf.engine.analyze import main

    out = tmp_path_factory.mktemp("feature-analysis") / "out"
    # data.val_fraction: the validation part of the training split the temperature is fitted on
    rc = main(["--run", str(tiny_run), "--set", f"data.root={demo_root}", "data.val_fraction=0.25", "--device", "cpu",
               "--batch-size", "5", "--no-wsol", "--embedding", "tsne", "--out", str(out)])
    assert rc == 0
    return out


def test_embedding_rows_are_the_splits_images(feature_dir):
    with open(feature_dir / "predictions.csv") as f:
        preds = list(csv.DictReader(f))
    results = json.loads((feature_dir / "results.json").read_text())
    emb = results["embedding"]
    assert emb["method"] == "tsne" and set(emb["branches"]) == {"raw", "object"}
    for b in ("raw", "object"):
        rows = read_embedding_csv(feature_dir / f"embedding_{b}.csv")
        assert len(rows) == len(preds) == 12
        assert [(r["index"], r["file"]) for r in rows] == [(int(p["index"]), p["file"]) for p in preds]
        assert sorted(r["index"] for r in rows) == list(range(12))           # one row per image
        assert [r["pred"] for r in rows] == [int(p[f"{b}_pred1"]) for p in preds]
        assert [r["correct"] for r in rows] == [int(p[f"{b}_pred1"] == p["label"]) for p in preds]
        assert len({(r["x"], r["y"]) for r in rows}) == 12
        fig = emb["branches"][b]
        assert fig["dim"] == 512 and -1 <= fig["silhouette"] <= 1 and 0 <= fig["ncm_accuracy"] <= 1
    assert (feature_dir / "embedding.png").is_file()


def test_calibration_agrees_with_predictions_and_fits_on_val(feature_dir, tiny_run, demo_root):
    with open(feature_dir / "predictions.csv") as f:
        preds = list(csv.DictReader(f))
    cal = json.loads((feature_dir / "calibration.json").read_text())
    assert cal["bins"] == 15 and cal["n"] == 12 and set(cal["branches"]) == {"raw", "object", "combined"}
    from flrdf.config import apply_overrides
    from flrdf.engine.checkpoint import load_model
    from flrdf.engine.loaders import records_for

    cfg = apply_overrides(load_model(tiny_run, "cpu").config, [f"data.root={demo_root}", "data.val_fraction=0.25"])
    n_val = len(records_for(cfg.data, "val", cfg.runtime.seed).records)
    assert cal["temperature_split"] == "val" and cal["n_val"] == n_val == 8    # 2 of each class's 8 train images
    for b, c in cal["branches"].items():
        conf = [float(p[f"{b}_prob1"]) for p in preds]
        ok = [p[f"{b}_pred1"] == p["label"] for p in preds]
        assert c["ece"] == pytest.approx(ece(conf, ok), abs=1e-5), b        # csv probabilities are rounded to 1e-6
        assert c["temperature"] > 0 and 0 <= c["ece_scaled"] <= 1
        assert sum(c["reliability"]["count"]) == 12
    summary = json.loads((feature_dir / "results.json").read_text())["calibration"]
    assert summary["branches"]["combined"]["ece"] == cal["branches"]["combined"]["ece"]
    assert (feature_dir / "reliability.png").is_file()


def test_pooled_features_are_what_the_heads_read(tiny_run, demo_root):
    from torch.utils.data import DataLoader

    from flrdf.config import apply_overrides
    from flrdf.data import FGVCDataset
    from flrdf.engine.checkpoint import load_model
    from flrdf.engine.loaders import records_for, transform_for
    from flrdf.engine.predictions import predict_split
    from flrdf.engine.step import precision_for

    loaded = load_model(tiny_run, "cpu")
    cfg = apply_overrides(loaded.config, [f"data.root={demo_root}"])
    data = records_for(cfg.data, "test")
    ds = FGVCDataset(data, transform_for(cfg.data, False))
    extras: dict = {}
    rows, _ = predict_split(loaded.model, DataLoader(ds, batch_size=5), precision_for(torch.device("cpu"), False, False),
                            data.records, loaded.class_names, extras=extras)
    heads = loaded.model.heads
    for b in ("raw", "object"):
        feats = torch.from_numpy(extras["features"][b])
        assert feats.shape == (12, 512)
        with torch.no_grad():
            logits = heads[b](feats).numpy()
        assert np.allclose(logits, extras["logits"][b], atol=1e-4), b
        assert [int(v) for v in logits.argmax(1)] == [r[f"{b}_pred1"] for r in rows]
    assert np.allclose(extras["logits"]["combined"], extras["logits"]["raw"] + extras["logits"]["object"], atol=1e-4)


def test_analyze_tab_views_of_the_folder(feature_dir, demo_root, tiny_model_file, tmp_path):
    """The tab's module-level handlers: the maps, the point table (brushed), calibration, and a row sent to Inspect
    only from under the analysis's (readable) dataset root."""
    from dashboard.analyze_tab import EMPTY, brushed_points, send_point, view
    from dashboard.analyze_view import POINT_HEADERS, calibration_table, embedding_frame, points_table
    from dashboard.context import DashboardContext
    from dashboard.paths import PathError
    from flrdf.engine.analyze import read_results

    results = read_results(feature_dir)
    raw = embedding_frame(feature_dir, results, "raw")
    assert len(raw) == 12 and list(raw.columns)[:2] == ["x", "y"] and set(raw["outcome"]) <= {"right", "wrong"}
    table = points_table(feature_dir, results)
    assert sorted(r[0] for r in table) == list(range(12))
    wrong = [r for r in table if "wrong" in r[5:7]]
    assert table[:len(wrong)] == wrong                                  # images some branch gets wrong come first
    xs = sorted(raw["x"])
    narrowed = brushed_points(feature_dir, results, "raw", [xs[0], xs[5]])
    assert list(narrowed.columns) == POINT_HEADERS and len(narrowed) == 6
    assert [r[0] for r in calibration_table(results)] == ["raw", "object", "combined"]
    shown = view(feature_dir)
    assert len(shown) == len(EMPTY) and len(shown[15]) == 12 and shown[17] is not None   # points, reliability
    ctx = DashboardContext.create(tiny_model_file, tmp_path / "runs", "cpu", tmp_path / "none",
                                  allow_dirs=[demo_root])
    dest, msg = send_point(ctx, feature_dir, results, narrowed, (2, 1))
    sent_name = narrowed.values.tolist()[2][1]
    assert sent_name in msg and any(e.file == Path(dest) for e in ctx.browsed.values())
    closed = DashboardContext.create(tiny_model_file, tmp_path / "runs2", "cpu", tmp_path / "none")
    with pytest.raises(PathError):                                  # the dataset root is not one it may read
        send_point(closed, feature_dir, results, narrowed, (2, 1))
