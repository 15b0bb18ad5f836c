"""MaxBoxAccV2 (wsolevaluation's protocol) and faithfulness for every map of a model, in the full-image frame.

Each image is resized whole to the model's input size (no crop, aspect not
kept - wsolevaluation's test transform) and its ground-truth box rescaled to the
224 x 224 frame (``flrdf.wsol_metrics.resize_box``). For each map source

    flrdf     FLRDF's map (channel mean of X', or of model.loc_layer's stage: the model's loc_map)
    plain     that stage's map before suppression (its channel mean)
    paper     the paper's map for every model: the channel mean of layer4's X' (after suppression)
    paper_x   the channel mean of layer4's X (before suppression)
    <cam>     each CAM of flrdf.cams (raw branch, layer4, GT-known target class)

the map is brought to the frame (bicubic, min-max) and scored by
``flrdf.wsol_metrics.BoxAccumulator`` (every contour, thresholds
``np.arange(0, 1, 0.01)``, IoU 30/50/70) - and, for comparison, by the same
accumulator keeping only the largest contour (``max_box_acc_v2_largest``).

Faithfulness, on the first ``faith_limit`` images with a box: grad-cam's own
``pytorch_grad_cam.metrics`` - ROAD most-relevant-first (``ROADMostRelevantFirst``,
the top 20 % of the map imputed away; lower = more faithful), ROAD
least-relevant-first (``ROADLeastRelevantFirst``, all but the top 20 % imputed, with the imputer's noise drawn from
torch's RNG seeded by ``seed``;
higher = more faithful) and ``CamMultImageConfidenceChange`` (the image
multiplied by the map) - each the change of the target class's softmax
probability on the raw branch (:class:`flrdf.cams.RawBranch`), every map given
at input resolution in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from flrdf.cams import DEFAULT_METHODS, RawBranch, check_methods, compute_cams, model_lock
from flrdf.wsol_metrics import FRAME, BoxAccumulator, cam_thresholds, resize_box, scoremap_to_frame

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


def to_input_size(maps: torch.Tensor, hw: tuple[int, int]) -> np.ndarray:
    """(B, h, w) maps -> (B, H, W) float32 in [0, 1], bilinear, min-max per image (what grad-cam's CAMs are)."""
    from flrdf.boxes import normalize_maps

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


def evaluate_wsol(model, loader, *, methods=DEFAULT_METHODS, thresholds=None, faith_limit: int = FAITH_LIMIT,
                  progress=None, seed: int = 0) -> dict:
    """Score every map source on ``loader`` (batches of :class:`FullFrameDataset`). Returns
    ``{"rows": [...], "n_box", "faith_n", "frame", "thresholds"}``; rows are fractions in [0, 1]."""
    cams = check_methods(methods)
    keys = [FLRDF_KEY, PLAIN_KEY, PAPER_KEY, PAPER_X_KEY, *cams]
    th = cam_thresholds() if thresholds is None else np.asarray(thresholds)
    every = {k: BoxAccumulator(th) for k in keys}
    largest = {k: BoxAccumulator(th, multi_contour=False) for k in keys}
    faith = {k: {m: [] for m in FAITH_KEYS} for k in keys}
    faith_n = 0
    device = next(model.parameters()).device
    model.eval()
    torch.manual_seed(seed)  # ROAD's imputer adds random noise: the same images give the same numbers
    for batch in loader:
        images = batch["image"].to(device)
        mask = batch["has_box"].bool()
        if mask.any():
            idx = mask.nonzero()[:, 0]
            sel, labels, gts = images[idx.to(device)], batch["label"][idx], batch["gt"][idx].numpy()
            feats = input_maps(model, sel)
            maps = {k: v.numpy() for k, v in feats.items()}
            if cams:
                maps.update(compute_cams(model, sel, labels, cams))
            for key in keys:
                for j in range(len(idx)):
                    frame = scoremap_to_frame(maps[key][j])
                    every[key].add(frame, [gts[j]])
                    largest[key].add(frame, [gts[j]])
            take = max(0, min(len(idx), faith_limit - faith_n))
            if take:
                hw = tuple(sel.shape[-2:])
                at_input = {k: (to_input_size(feats[k][:take], hw) if k in feats else maps[k][:take]) for k in keys}
                scores = faithfulness(model, sel[:take], labels[:take].tolist(), at_input)
                for key in keys:
                    for m in FAITH_KEYS:
                        faith[key][m] += scores[key][m]
                faith_n += take
        if progress is not None:
            progress(len(batch["label"]))
    rows = []
    for key in keys:
        s = every[key].summary()
        row = {"method": key, **{k: v for k, v in s.items() if k != "n"},
               "max_box_acc_v2_largest": largest[key].summary().get("max_box_acc_v2")}
        for m in FAITH_KEYS:
            row[m] = round(float(np.mean(faith[key][m])), 6) if faith[key][m] else None
        rows.append(row)
    n_box = every[keys[0]].count
    return {"rows": rows, "n_box": n_box, "faith_n": faith_n, "frame": FRAME,
            "map_source": getattr(model, "map_source", None),
            "thresholds": {"start": float(th[0]) if len(th) else None, "count": int(len(th)),
                           "step": float(th[1] - th[0]) if len(th) > 1 else None},
            "faith_target": "softmax probability of the ground-truth class, raw branch"}


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


__all__ = ["FullFrameDataset", "evaluate_wsol", "faithfulness", "wsol_loader", "add_to_summary", "FAITH_KEYS",
           "WSOL_ROW_KEYS"]
