"""MaxBoxAccV2 (wsolevaluation's protocol) and faithfulness for every map of a model, in the full-image frame.

The frame. wsolevaluation resizes each test image whole to 224 x 224 (no crop,
aspect not kept), runs its model on it, resizes the model's map to 224 x 224
(bicubic) and scores it against the ground-truth boxes rescaled to 224 x 224.
Its models are trained and tested at 224; ours at ``data.image_size`` (448 in
the paper's recipe), and a model shown images at a size it never saw would be
scored on different maps. So each image is resized whole (bilinear, no crop) to
the model's own input size and run through the model; everything after that is
the protocol's: every map is scored in the 224 x 224 frame against boxes
rescaled to it (``flrdf.wsol_metrics.resize_box``). With ``data.image_size =
224`` this is wsolevaluation's pipeline step for step; otherwise only the
model's input differs, and ``model_input`` in the result says so.

One resize path for every map. Each source gives its map at its own grid
resolution, before any upsampling:

    flrdf     FLRDF's map (channel mean of X', or of model.loc_layer's stage: the model's loc_map)
    plain     that stage's map before suppression (its channel mean)
    paper     the paper's map for every model: the channel mean of layer4's X' (after suppression)
    paper_x   the channel mean of layer4's X (before suppression)
    <cam>     each CAM of flrdf.cams at layer4's resolution (raw branch, GT-known target class):
              the method's own map (ReLU, min-max) before grad-cam upsamples it to the input

and every key :func:`input_maps` returns gets the same treatment: bicubic to the
frame, min-max (``scoremap_to_frame``), scored by ``flrdf.wsol_metrics.best_ious``
(every contour, thresholds ``np.arange(0, 1, 0.001)`` - or 0.01, the named
``fast`` step - IoU 30/50/70); the same contours' largest one gives, for
comparison, ``max_box_acc_v2_largest``.

Faithfulness, on the first ``faith_limit`` images with a box: grad-cam's own
``pytorch_grad_cam.metrics`` - ROAD most-relevant-first (``ROADMostRelevantFirst``,
the top 20 % of the map imputed away; lower = more faithful), ROAD
least-relevant-first (``ROADLeastRelevantFirst``, all but the top 20 % imputed, with the imputer's noise drawn from
torch's RNG seeded by ``seed``;
higher = more faithful) and ``CamMultImageConfidenceChange`` (the image
multiplied by the map) - each the change of the target class's softmax
probability on the raw branch (:class:`flrdf.cams.RawBranch`), every map
brought from its grid to the input resolution the same way (bilinear, min-max,
:func:`to_input_size`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from flrdf.cams import DEFAULT_METHODS, RawBranch, check_methods, compute_cams, model_lock
from flrdf.wsol_metrics import (FRAME, BoxAccumulator, best_ious, cam_thresholds, resize_box, scoremap_to_frame,
                                step_name)

FLRDF_KEY, PLAIN_KEY, PAPER_KEY, PAPER_X_KEY = "flrdf", "plain", "paper", "paper_x"  # as flrdf.engine.localization
FAITH_KEYS = ("road_morf", "road_lerf", "cam_mult_conf_change")
FAITH_LIMIT = 64


class FullFrameDataset(Dataset):
    """Records -> ``{image: the whole image at size x size, normalised; label; gt: frame box (4 ints) or -1s;
    has_box; index}``."""

    def __init__(self, data, size: int, frame: int = FRAME):
        from flrdf.data.transforms import IMAGENET_MEAN, IMAGENET_STD

        self.data, self.records, self.size, self.frame = data, data.records, int(size), int(frame)
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        from PIL import Image
        from torchvision.transforms import functional as TF

        from flrdf.data import load_image

        rec = self.records[i]
        image = load_image(rec.path, crop_bottom=self.data.crop_bottom)
        x = TF.normalize(TF.to_tensor(image.resize((self.size, self.size), Image.BILINEAR)), self.mean, self.std)
        gt = resize_box(rec.box, image.size, self.frame) if rec.box is not None else (-1, -1, -1, -1)
        return {"image": x, "label": int(rec.label), "gt": torch.tensor(gt, dtype=torch.int64),
                "has_box": rec.box is not None, "index": i}


def input_maps(model, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """FLRDF's map, the plain map and the paper's layer4 maps (X', X) at feature resolution, (B, h, w) in [0, 1]."""
    with torch.no_grad(), model_lock(model):
        f = model.features(images)
        maps = {FLRDF_KEY: model.fl_map(f.loc), PLAIN_KEY: model.channel_map(f.plain),
                PAPER_KEY: model.channel_map(f.xs), PAPER_X_KEY: model.channel_map(f.x)}
    return {k: v.cpu() for k, v in maps.items()}


def grid_maps(model, images: torch.Tensor, labels, cams) -> dict[str, np.ndarray]:
    """Every map source at its own grid resolution: :func:`input_maps`' keys, then each CAM of ``cams``
    (``flrdf.cams.compute_cams(at_grid=True)``); ``{key: float32 (B, h, w)}``."""
    maps = {k: v.numpy().astype(np.float32) for k, v in input_maps(model, images).items()}
    if cams:
        maps.update(compute_cams(model, images, labels, cams, at_grid=True))
    return maps


def to_input_size(maps, hw: tuple[int, int]) -> np.ndarray:
    """(B, h, w) maps -> (B, H, W) float32 in [0, 1], bilinear (half-pixel centres), min-max per image."""
    from flrdf.boxes import normalize_maps

    maps = torch.as_tensor(np.asarray(maps, dtype=np.float32))
    up = F.interpolate(maps[:, None].float(), size=hw, mode="bilinear", align_corners=False)[:, 0]
    return normalize_maps(up).numpy().astype(np.float32)


def faithfulness(model, images: torch.Tensor, labels, maps: dict[str, np.ndarray]) -> dict[str, dict[str, list]]:
    """``{source: {metric: [value per image]}}`` with grad-cam's metrics on the raw branch (see module doc)."""
    from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
    from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirst, ROADMostRelevantFirst
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    wrapper = RawBranch(model).eval()
    targets = [ClassifierOutputSoftmaxTarget(int(t)) for t in labels]
    metrics = {"road_morf": ROADMostRelevantFirst(), "road_lerf": ROADLeastRelevantFirst(),
               "cam_mult_conf_change": CamMultImageConfidenceChange()}
    out: dict[str, dict[str, list]] = {}
    with model_lock(model):
        for key, cams in maps.items():
            cams = np.ascontiguousarray(cams, dtype=np.float32)
            out[key] = {name: [float(v) for v in np.ravel(m(images, cams, targets, wrapper))]
                        for name, m in metrics.items()}
    return out


def evaluate_wsol(model, loader, *, methods=DEFAULT_METHODS, thresholds=None, step="reference",
                  faith_limit: int = FAITH_LIMIT, progress=None, seed: int = 0) -> dict:
    """Score every map source on ``loader`` (batches of :class:`FullFrameDataset`). ``step``: the threshold
    step, ``'reference'`` (0.001, wsolevaluation's) or ``'fast'`` (0.01); ``thresholds`` overrides it.
    Returns ``{"rows": [...], "n_box", "faith_n", "frame", "model_input", "thresholds", ...}``; rows are
    fractions in [0, 1], one per map source in :func:`grid_maps`' order."""
    cams = check_methods(methods)
    th = cam_thresholds(step) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    every: dict[str, BoxAccumulator] = {}
    largest: dict[str, BoxAccumulator] = {}
    faith: dict[str, dict[str, list]] = {}
    faith_n, model_input = 0, None
    device = next(model.parameters()).device
    model.eval()
    torch.manual_seed(seed)  # ROAD's imputer adds random noise: the same images give the same numbers
    for batch in loader:
        images = batch["image"].to(device)
        mask = batch["has_box"].bool()
        if mask.any():
            idx = mask.nonzero()[:, 0]
            sel, labels, gts = images[idx.to(device)], batch["label"][idx], batch["gt"][idx].numpy()
            model_input = list(sel.shape[-2:])
            maps = grid_maps(model, sel, labels, cams)
            for key, m in maps.items():
                acc_every = every.setdefault(key, BoxAccumulator(th))
                acc_largest = largest.setdefault(key, BoxAccumulator(th, multi_contour=False))
                for j in range(len(idx)):
                    best_every, best_largest = best_ious(scoremap_to_frame(m[j]), [gts[j]], th)
                    acc_every.add_best(best_every)
                    acc_largest.add_best(best_largest)
            take = max(0, min(len(idx), faith_limit - faith_n))
            if take:
                hw = tuple(sel.shape[-2:])
                at_input = {k: to_input_size(m[:take], hw) for k, m in maps.items()}
                scores = faithfulness(model, sel[:take], labels[:take].tolist(), at_input)
                for key, per_metric in scores.items():
                    for name, values in per_metric.items():
                        faith.setdefault(key, {k: [] for k in FAITH_KEYS})[name] += values
                faith_n += take
        if progress is not None:
            progress(len(batch["label"]))
    rows = []
    for key, acc in every.items():
        s = acc.summary()
        row = {"method": key, **{k: v for k, v in s.items() if k != "n"},
               "max_box_acc_v2_largest": largest[key].summary().get("max_box_acc_v2")}
        for m in FAITH_KEYS:
            values = faith.get(key, {}).get(m)
            row[m] = round(float(np.mean(values)), 6) if values else None
        rows.append(row)
    n_box = next(iter(every.values())).count if every else 0
    step_value = float(th[1] - th[0]) if len(th) > 1 else None
    return {"rows": rows, "n_box": n_box, "faith_n": faith_n, "frame": FRAME, "model_input": model_input,
            "map_resize": "each map at its own grid resolution, bicubic to the frame, min-max",
            "map_source": getattr(model, "map_source", None),
            "thresholds": {"start": float(th[0]) if len(th) else None, "count": int(len(th)),
                           "step": None if step_value is None else round(step_value, 6),
                           "name": None if step_value is None else step_name(step_value)},
            "faith_target": "softmax probability of the ground-truth class, raw branch"}


STEP_HELP = ("MaxBoxAccV2's threshold step: reference = 0.001, wsolevaluation's (1,000 thresholds; default); "
             "fast = 0.01 (100 thresholds)")


def protocol_text(wsol: dict) -> str:
    """The settings of an ``evaluate_wsol`` result in words (tables and the dashboard)."""
    t, frame = wsol["thresholds"], wsol["frame"]
    inp = wsol.get("model_input")
    step = "" if t.get("step") is None else f" (step {t['step']:g}{', ' + t['name'] if t.get('name') else ''})"
    return (f"{frame} x {frame} full-image frame" + (f", model input {inp[0]} x {inp[1]}" if inp else "")
            + f", every map from its own grid bicubic to the frame, min-max, {t['count']} thresholds{step}, "
              "every contour")


WSOL_ROW_KEYS = ("max_box_acc_v2", "max_box_acc_iou30", "max_box_acc_iou50", "max_box_acc_iou70",
                 "max_box_acc_v2_largest", *FAITH_KEYS)


def add_to_summary(summary: dict, wsol: dict) -> dict:
    """Put evaluate_wsol's figures into a loc-eval summary: each row of the same method gets the
    ``WSOL_ROW_KEYS`` (None where the method has none, e.g. the centre box); ``summary['wsol']`` the settings."""
    by_method = {r["method"]: r for r in wsol["rows"]}
    for row in summary["rows"]:
        src = by_method.get(row["method"], {})
        row.update({k: src.get(k) for k in WSOL_ROW_KEYS})
    summary["wsol"] = {k: v for k, v in wsol.items() if k != "rows"}
    return summary


def wsol_loader(data, image_size: int, batch_size: int = 16, workers: int = 0):
    from torch.utils.data import DataLoader

    return DataLoader(FullFrameDataset(data, image_size), batch_size=max(1, batch_size), shuffle=False,
                      num_workers=max(0, workers))


__all__ = ["FullFrameDataset", "evaluate_wsol", "grid_maps", "to_input_size", "protocol_text", "STEP_HELP", "faithfulness", "wsol_loader", "add_to_summary", "FAITH_KEYS",
           "WSOL_ROW_KEYS"]
