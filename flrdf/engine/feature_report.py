"""The feature-space and calibration part of an analysis folder (``python -m flrdf analyze``).

    OUT/embedding_raw.csv      per image: index, file, label, class_name, pred, correct, x, y - the 2-D map
    OUT/embedding_object.csv   (flrdf.embedding.project) of the branch's pooled features; rows in
                               predictions.csv's order, one per image of the split
    OUT/embedding.png          both maps side by side, coloured by class, wrong predictions marked x
    OUT/calibration.json       per branch (raw, object, combined): ECE (15 bins), NLL, reliability bins, at
                               T = 1 and at the temperature fitted on the validation split (flrdf.calibration)
    OUT/reliability.png        the reliability diagrams

Inputs come from the one forward pass that writes predictions.csv (``predict_split``'s
``extras``: logits and pooled features); the temperature from a second pass over the
validation split's images (``data.val_fraction``), never from the analysed split's labels.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable

import numpy as np

from flrdf.calibration import BINS, calibration_report
from flrdf.embedding import available_method, project, separation
from flrdf.engine.rundir import write_json

EMBED_BRANCHES = ("raw", "object")
CALIB_BRANCHES = ("raw", "object", "combined")
EMBED_COLUMNS = ("index", "file", "label", "class_name", "pred", "correct", "x", "y")
CALIBRATION = "calibration.json"


def embedding_rows(rows: list[dict], xy: np.ndarray, branch: str) -> list[dict]:
    if len(rows) != len(xy):
        raise ValueError(f"{len(rows)} predictions but {len(xy)} embedded points")
    out = []
    for r, (x, y) in zip(rows, xy):
        pred = r.get(f"{branch}_pred1")
        out.append({"index": r["index"], "file": r["file"], "label": r["label"], "class_name": r["class_name"],
                    "pred": pred, "correct": int(pred == r["label"]), "x": round(float(x), 5),
                    "y": round(float(y), 5)})
    return out


def write_embedding_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(EMBED_COLUMNS))
        w.writeheader()
        w.writerows(rows)


def read_embedding_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("index", "label", "pred", "correct"):
            r[k] = int(r[k])
        r["x"], r["y"] = float(r["x"]), float(r["y"])
    return rows


def write_embeddings(out: Path, rows: list[dict], features: dict, method: str, seed: int = 0,
                     log: Callable[[str], None] | None = None) -> dict:
    """embedding_<b>.csv per branch with features, the side-by-side picture, and the separation figures."""
    method = available_method(method)
    result = {"method": method, "branches": {}}
    maps = {}
    for b in EMBED_BRANCHES:
        if b not in features:
            continue
        if log:
            log(f"projecting the {b} branch's features ({method})")
        xy = project(features[b], method, seed=seed)
        labels = np.array([r["label"] for r in rows])
        maps[b] = embedding_rows(rows, xy, b)
        write_embedding_csv(out / f"embedding_{b}.csv", maps[b])
        result["branches"][b] = {"file": f"embedding_{b}.csv", "dim": int(features[b].shape[1]),
                                 **separation(features[b], labels)}
    if maps:
        embedding_chart(maps, method, result["branches"], out / "embedding.png")
        result["png"] = "embedding.png"
    return result


def write_calibration(out: Path, rows: list[dict], logits: dict, val: dict | None, note: str | None,
                      bins: int = BINS) -> dict:
    """calibration.json and reliability.png; ``val``: {"logits": {b: ...}, "labels": ...} of the validation split."""
    labels = np.array([r["label"] for r in rows], dtype=np.int64)
    kept = {b: logits[b] for b in CALIB_BRANCHES if b in logits}
    report = calibration_report(kept, labels, val["logits"] if val else None, val["labels"] if val else None,
                                bins, note)
    write_json(out / CALIBRATION, report)
    reliability_chart(report, out / "reliability.png")
    return report


def calibration_summary(report: dict) -> dict:
    """The few numbers results.json keeps (the bins stay in calibration.json)."""
    keep = ("ece", "ece_scaled", "nll", "nll_scaled", "temperature", "accuracy", "mean_confidence")
    return {"bins": report["bins"], "temperature_split": report["temperature_split"], "n_val": report["n_val"],
            "note": report["note"], "file": CALIBRATION,
            "branches": {b: {k: v.get(k) for k in keep} for b, v in report["branches"].items()}}


# ---------------------------------------------------------------- pictures
def _figure(w: float, h: float, cols: int):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110)
    return fig, fig.subplots(1, cols, squeeze=False)[0]


def embedding_chart(maps: dict, method: str, figures: dict, path: Path) -> None:
    import matplotlib

    fig, axes = _figure(5.2 * len(maps), 5.0, len(maps))
    cmap = matplotlib.colormaps["tab20"]
    for ax, (b, pts) in zip(axes, maps.items()):
        x = np.array([p["x"] for p in pts])
        y = np.array([p["y"] for p in pts])
        lab = np.array([p["label"] for p in pts])
        ok = np.array([p["correct"] for p in pts], dtype=bool)
        ax.scatter(x[ok], y[ok], c=[cmap(v % 20) for v in lab[ok]], s=9, linewidths=0)
        ax.scatter(x[~ok], y[~ok], c=[cmap(v % 20) for v in lab[~ok]], s=22, marker="x", linewidths=1.0)
        f = figures.get(b, {})
        sil = "n/a" if f.get("silhouette") is None else f"{f['silhouette']:.3f}"
        ncm = "n/a" if f.get("ncm_accuracy") is None else f"{100 * f['ncm_accuracy']:.1f} %"
        ax.set_title(f"{b} branch ({method}): silhouette {sil}, nearest-class-mean {ncm}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("pooled features, coloured by true class; x = wrong prediction of that branch", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def reliability_chart(report: dict, path: Path) -> None:
    branches = report["branches"]
    fig, axes = _figure(4.0 * max(1, len(branches)), 4.0, max(1, len(branches)))
    for ax, (b, r) in zip(axes, branches.items()):
        rel = r["reliability"]
        edges = np.array(rel["edges"])
        width = edges[1] - edges[0]
        acc = [0 if a is None else a for a in rel["accuracy"]]
        ax.bar(edges[:-1], acc, width, align="edge", color="#3b6fb6", edgecolor="white", label="accuracy (T = 1)")
        if r.get("reliability_scaled"):
            acc_t = [np.nan if a is None else a for a in r["reliability_scaled"]["accuracy"]]
            ax.plot(edges[:-1] + width / 2, acc_t, "o", color="#e07020", markersize=4,
                    label=f"accuracy (T = {r['temperature']:.2f}, fitted on val)")
        ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=1)
        ece_t = "" if r.get("ece_scaled") is None else f" -> {100 * r['ece_scaled']:.1f} % scaled"
        ax.set_title(f"{b}: ECE {100 * r['ece']:.1f} %{ece_t}", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top-1 probability)", fontsize=8)
        ax.set_ylabel("accuracy", fontsize=8)
        ax.legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)


__all__ = ["write_embeddings", "write_calibration", "calibration_summary", "read_embedding_csv", "embedding_rows",
           "EMBED_COLUMNS", "CALIBRATION"]
