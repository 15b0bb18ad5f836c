"""The dataset browser's data side: splits as records, their ``data-info`` counts and problems,
pages of thumbnails with ground-truth (and predicted) boxes, and a model's predictions over a split.

Reads datasets through ``flrdf.data.load_records`` (the readers every command uses), so the
browser shows exactly what training and evaluation will read. Records and predictions are
cached in memory (keyed by the root's and the checkpoint's mtimes), so paging and filtering
never re-read a split or re-run a model. No Gradio: ``dashboard.browse_tab`` lays it out and
checks every client-named path first (``dashboard.paths``).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from flrdf.data.errors import DatasetError
from flrdf.data.readers import dataset_splits, load_records
from flrdf.data.records import DatasetRecords, Record

DATASETS = ("demo", "cub", "aircraft", "cars", "folder")
GT_RGB = (52, 199, 89)
PRED_RGB = (255, 59, 48)
THUMB_SIDE = 224
_MAX_CACHED = 8


@dataclass(frozen=True)
class Prediction:
    label: int
    prob: float
    box: tuple[float, float, float, float]   # the image's own pixels (after any crop_bottom)


class _LRU:
    def __init__(self, size: int = _MAX_CACHED):
        self.size, self.items, self.lock = size, OrderedDict(), threading.Lock()

    def get(self, key):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        return None

    def put(self, key, value):
        with self.lock:
            self.items[key] = value
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value


_splits, _preds = _LRU(), _LRU()


def _mtime(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return 0


def splits_of(dataset: str, root: Path) -> list[str]:
    try:
        return dataset_splits(dataset, root)
    except DatasetError:
        return []


def load_split(dataset: str, root: Path, split: str) -> DatasetRecords:
    """The records of one split (cached until the root folder changes); ``DatasetError`` says what is wrong."""
    key = (dataset, str(root), split, _mtime(root))
    hit = _splits.get(key)
    return hit if hit is not None else _splits.put(key, load_records(dataset, root, split))


# ---------------------------------------------------------------- data-info
def split_info(data: DatasetRecords) -> dict:
    """``data-info``'s per-split counts, plus the classes the split lacks."""
    from flrdf.data.commands import split_summary

    out = split_summary(data)
    present = {r.label for r in data.records}
    out["classes_missing"] = [n for i, n in enumerate(data.class_names) if i not in present]
    return out


def dataset_info(dataset: str, root: Path) -> tuple[dict, list[str]]:
    """(summary as ``data-info`` prints it, problems as sentences) for every split of ``root``."""
    splits = splits_of(dataset, root)
    summary: dict = {"dataset": dataset, "root": str(root), "splits": {}}
    problems: list[str] = []
    if not splits:
        return summary, [f"no splits found under {root.name}/"]
    for s in splits:
        try:
            data = load_split(dataset, root, s)
        except DatasetError as exc:
            problems.append(f"split {s}: {exc}")
            continue
        info = split_info(data)
        summary.setdefault("num_classes", data.num_classes)
        summary.setdefault("layout", data.meta.get("layout"))
        summary["splits"][s] = info
        if info["missing_images"]:
            problems.append(f"split {s}: {info['missing_images']} image file(s) listed but missing, e.g. "
                            f"{Path(info['missing_examples'][0]).name}")
        if info["images"] and info["with_box"] < info["images"]:
            problems.append(f"split {s}: {info['images'] - info['with_box']} image(s) without a box "
                            "(localization metrics skip them)")
        if info["classes_missing"]:
            few = ", ".join(info["classes_missing"][:3]) + (" ..." if len(info["classes_missing"]) > 3 else "")
            problems.append(f"split {s}: {len(info['classes_missing'])} class(es) without images ({few})")
        if not info["images"]:
            problems.append(f"split {s}: no images")
    return summary, problems


def info_markdown(summary: dict, problems: list[str]) -> str:
    rows = [f"| {s} | {i['images']} | {i['with_box']} | {i['classes_present']} | {i['missing_images']} |"
            for s, i in summary.get("splits", {}).items()]
    head = (f"**{summary.get('dataset')}** - {summary.get('num_classes', '?')} classes"
            + (f", layout `{summary['layout']}`" if summary.get("layout") else ""))
    table = ("\n\n| split | images | with box | classes present | missing files |\n|---|---|---|---|---|\n"
             + "\n".join(rows)) if rows else ""
    probs = ("\n\n**Problems:**\n" + "\n".join(f"- {p}" for p in problems)) if problems else "\n\nNo problems found."
    return head + table + probs


# ---------------------------------------------------------------- selection and pictures
def select(records: list[Record], class_label: int | None = None, wrong_only: bool = False,
           preds: list[Prediction] | None = None) -> list[int]:
    """Indices of the records shown: one class (by GT label) and/or only those the model gets wrong."""
    idx = [i for i, r in enumerate(records) if class_label is None or r.label == class_label]
    if wrong_only and preds is not None:
        idx = [i for i in idx if preds[i].label != records[i].label]
    return idx


def _scaled_box(box, scale: float, w: int, h: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = (float(v) * scale for v in box)
    return (int(np.clip(round(x1), 0, w - 1)), int(np.clip(round(y1), 0, h - 1)),
            int(np.clip(round(x2), 0, w - 1)), int(np.clip(round(y2), 0, h - 1)))


def thumbnail(record: Record, crop_bottom: int = 0, pred: Prediction | None = None,
              class_names: list[str] | None = None, side: int = THUMB_SIDE) -> np.ndarray:
    """The image scaled to ``side`` px on its long side, GT box green, predicted box red with its class."""
    from flrdf.data.images import load_image

    img = np.asarray(load_image(record.path, crop_bottom=crop_bottom))
    h, w = img.shape[:2]
    scale = side / max(h, w)
    out = np.ascontiguousarray(cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))),
                                          interpolation=cv2.INTER_AREA))
    oh, ow = out.shape[:2]
    if record.box is not None:
        x1, y1, x2, y2 = _scaled_box(record.box, scale, ow, oh)
        cv2.rectangle(out, (x1, y1), (x2, y2), GT_RGB, 2)
    if pred is not None:
        x1, y1, x2, y2 = _scaled_box(pred.box, scale, ow, oh)
        cv2.rectangle(out, (x1, y1), (x2, y2), PRED_RGB, 2)
        name = class_names[pred.label] if class_names and pred.label < len(class_names) else str(pred.label)
        text = f"{name} {pred.prob * 100:.0f}%"
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
        cv2.rectangle(out, (0, oh - th - 6), (min(ow, tw + 4), oh), (0, 0, 0), -1)
        cv2.putText(out, text, (2, oh - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def caption(record: Record, pred: Prediction | None = None, class_names: list[str] | None = None) -> str:
    text = f"{Path(record.path).name} - {record.class_name}"
    if pred is not None:
        name = class_names[pred.label] if class_names and pred.label < len(class_names) else str(pred.label)
        text += f" -> {name} {'✓' if pred.label == record.label else '✗'}"
    return text


# ---------------------------------------------------------------- predictions
def predict_split(loaded, data: DatasetRecords, ckpt_key: tuple, data_key: tuple, batch_size: int = 16,
                  progress=None) -> list[Prediction]:
    """The model's combined prediction and FLRDF box for every record (cached per checkpoint and split)."""
    import torch

    from flrdf.boxes import box_to_image
    from flrdf.cams import model_lock
    from flrdf.data import build_transform, load_image

    key = (ckpt_key, data_key)
    hit = _preds.get(key)
    if hit is not None:
        return hit
    d = loaded.config.data
    transform = build_transform(False, d.resize, d.image_size, source_size=d.source_size or 0)
    device = next(loaded.model.parameters()).device
    out: list[Prediction] = []
    records = data.records
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        xs, sources, sizes = [], [], []
        for r in chunk:
            image = load_image(r.path, crop_bottom=data.crop_bottom)
            x, _, source = transform.views(image, None)
            xs.append(x)
            sources.append(source)
            sizes.append(image.size)
        zoom = {} if sources[0] is None else {"source": torch.stack(sources).to(device)}
        with model_lock(loaded.model), torch.no_grad():
            res = loaded.model(torch.stack(xs).to(device), **zoom)
        probs = res.logits.float().softmax(1).cpu()
        for i, size in enumerate(sizes):
            p, label = probs[i].max(0)
            box = box_to_image(res.boxes[i].cpu(), size, d.resize, d.image_size)
            out.append(Prediction(int(label), float(p), tuple(round(float(v), 1) for v in box)))
        if progress:
            progress(len(out), len(records))
    return _preds.put(key, out)


def cached_predictions(ckpt_key: tuple, data_key: tuple) -> list[Prediction] | None:
    return _preds.get((ckpt_key, data_key))
