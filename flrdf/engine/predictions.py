"""Per-image predictions of every branch: the table ``predictions.csv`` that classification analysis reads.

One forward pass per batch exactly as :func:`flrdf.engine.evaluate.evaluate` runs
it (test transform, zoom source, jigsaw shuffles from a generator seeded 0), so
``trace(confusion) / n`` of each branch equals ``eval``'s top-1. Per image: the
true class, each branch's top-5 classes with softmax probabilities (``combined``
is the model's test-time prediction, raw + object logits), FLRDF's box in input
pixels and its IoU with the ground truth (empty without a box).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch

from flrdf.boxes import box_iou
from flrdf.jigsaw import random_permutations

TOPK = 5
BRANCH_LOGITS = {"combined": "logits", "raw": "logits_raw", "object": "logits_object", "jigsaw": "logits_jigsaw"}


def columns(branches, k: int = TOPK) -> list[str]:
    cols = ["index", "file", "label", "class_name"]
    for b in branches:
        cols += [f"{b}_pred{r}" for r in range(1, k + 1)] + [f"{b}_prob{r}" for r in range(1, k + 1)]
    return cols + ["box_x1", "box_y1", "box_x2", "box_y2", "gt_x1", "gt_y1", "gt_x2", "gt_y2", "iou"]


@torch.no_grad()
def predict_split(model, loader, precision, records, class_names, progress=None, k: int = TOPK,
                  extras: dict | None = None) -> tuple[list, list]:
    """(rows, branches): one dict per image (see :func:`columns`), and the branches the model has.

    ``extras`` (a dict, filled in place) also keeps, from the same forward pass and in row order,
    ``extras["logits"][branch]`` (N, K) float32 and ``extras["features"]["raw" | "object"]`` (N, C)
    float32: the pooled features each head reads (GAP of X', GAP of the object crop's layer4)."""
    model.eval()
    n = model.cfg.jigsaw_n
    gen = torch.Generator().manual_seed(0)
    rows: list[dict] = []
    branches: list[str] = []
    for batch in loader:
        images = precision.prepare(batch["image"])
        perms = random_permutations(images.shape[0], n * n, device=images.device, generator=gen)
        source = {"source": precision.prepare(batch["source"])} if "source" in batch else {}
        with precision.autocast():
            out = model(images, with_jigsaw=True, perms=perms, **source)
        tops = {}
        for b, attr in BRANCH_LOGITS.items():
            logits = getattr(out, attr)
            if logits is None:
                continue
            probs = logits.float().softmax(1)
            kk = min(k, probs.shape[1])
            tops[b] = probs.topk(kk, dim=1)
        if not branches:
            branches = list(tops)
        if extras is not None:
            for b, attr in BRANCH_LOGITS.items():
                if getattr(out, attr) is not None:
                    extras.setdefault("logits", {}).setdefault(b, []).append(getattr(out, attr).float().cpu().numpy())
            for b, t in (("raw", out.pooled_raw), ("object", out.pooled_object)):
                if t is not None:
                    extras.setdefault("features", {}).setdefault(b, []).append(t.float().cpu().numpy())
        boxes = out.boxes.float().cpu() if out.boxes is not None else None
        gt = batch["box"].float()
        ious = box_iou(boxes, gt) if boxes is not None else None
        for j in range(images.shape[0]):
            i_ds = int(batch["index"][j])
            label = int(batch["label"][j])
            row = {"index": i_ds, "file": records[i_ds].path, "label": label,
                   "class_name": class_names[label] if 0 <= label < len(class_names) else str(label)}
            for b, (vals, idx) in tops.items():
                for r in range(k):
                    row[f"{b}_pred{r + 1}"] = int(idx[j, r]) if r < idx.shape[1] else ""
                    row[f"{b}_prob{r + 1}"] = round(float(vals[j, r]), 6) if r < idx.shape[1] else ""
            has = bool(batch["has_box"][j])
            bx = boxes[j].tolist() if boxes is not None else [math.nan] * 4
            for name, v in zip(("box_x1", "box_y1", "box_x2", "box_y2"), bx):
                row[name] = round(v, 2)
            for name, v in zip(("gt_x1", "gt_y1", "gt_x2", "gt_y2"), gt[j].tolist()):
                row[name] = round(v, 2) if has else ""
            row["iou"] = round(float(ious[j]), 4) if has and ious is not None else ""
            rows.append(row)
        if progress is not None:
            progress(images.shape[0])
    if extras is not None:
        import numpy as np

        for key in ("logits", "features"):
            extras[key] = {b: np.concatenate(parts) for b, parts in extras.get(key, {}).items()}
    return rows, branches


def write_predictions(path: Path, rows: list[dict], branches) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns(branches))
        w.writeheader()
        w.writerows(rows)


def read_predictions(path: Path) -> tuple[list[dict], list[str]]:
    """Rows of a predictions.csv (numbers parsed) and its branches, in file order."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        branches = [b for b in BRANCH_LOGITS if f"{b}_pred1" in fields]
        rows = []
        for raw in reader:
            row = dict(raw)
            for key in ("index", "label"):
                row[key] = int(row[key])
            for b in branches:
                for r in range(1, TOPK + 1):
                    if row.get(f"{b}_pred{r}", "") != "":
                        row[f"{b}_pred{r}"] = int(row[f"{b}_pred{r}"])
                        row[f"{b}_prob{r}"] = float(row[f"{b}_prob{r}"])
            for key in ("box_x1", "box_y1", "box_x2", "box_y2", "gt_x1", "gt_y1", "gt_x2", "gt_y2", "iou"):
                row[key] = float(row[key]) if row.get(key, "") != "" else None
            rows.append(row)
    return rows, branches


__all__ = ["predict_split", "write_predictions", "read_predictions", "columns", "TOPK"]
