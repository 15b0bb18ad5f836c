"""Localization evaluation: the paper's Table 3, extended with CAM baselines and a tau sweep.

For a trained model and a split with ground-truth boxes, every image is scored by
several box sources on the same model, all GT-known (CONVENTIONS.md: the CAMs
explain the ground-truth class):

    flrdf     FLRDF's own box: the suppressed map (out.loc_map), tau, largest region
              (GrabCut-refined when the model's ``model.box_refine`` is grabcut, flrdf.refine)
    flrdf_map with a refining model only: the map's box before refinement - the rule the
              CAM rows below use, so the like-for-like comparison with them
              (``refine_all``: the plain and CAM rows are GrabCut-refined too, each seeded by
              its own map, so refinement's gain can be told from the map's)
    plain     the same rule on the map before suppression (out.plain_map)
    paper     the paper's map, whatever the model's box source: the channel mean of layer4's X'
              (out.paper_map), boxed on layer4's grid by the paper's rule
    paper_x   the same before suppression: the channel mean of X (out.paper_plain_map)
    <cam>     each CAM baseline of flrdf.cams (raw branch, layer4), boxes by
              flrdf.cams' rule on FLRDF's own box grid (flrdf.cams.box_grid:
              the backbone's real stride, cells mapped by their centres)
    centre    a fixed centred box covering half of each side: "knowing nothing"

For each: loc_acc (IoU >= 0.5) and mean IoU at the model's tau, and a sweep of
tau (localization accuracy at IoU 0.3/0.5/0.7 per tau; MaxBoxAcc = the best
over the sweep at 0.5; ``max_box_acc_357`` = the mean of the bests at the three
IoUs, with the largest region only - wsolevaluation's MaxBoxAccV2 considers
every region, so it is not that number). Classification top-1 per branch and
combined comes from the same forward pass. The worst-localized images (lowest
FLRDF IoU) are kept for a gallery. ``gate`` summarises the suppression gate over
the split (flrdf.suppression.GateTally: mean, p10/p50/p90, histogram).

``evaluate_localization`` is batched over a DataLoader and reports progress;
:mod:`flrdf.engine.loc_report` writes the result folder; ``main`` is the
``python -m flrdf loc-eval`` command, which the dashboard runs as a background
job and polls through ``progress.json``.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from flrdf.boxes import box_iou, boxes_from_maps, centre_boxes, normalize_maps
from flrdf.cams import DEFAULT_METHODS, METHODS, box_grid, check_methods, compute_cams, to_grid
from flrdf.data import to_uint8
from flrdf.model import PAPER_MAP_SOURCE
from flrdf.refine import RefineSettings, applied, refine_boxes
from flrdf.suppression import GateTally, capture_gates, tally_gates

FLRDF_KEY, FLRDF_MAP_KEY, PLAIN_KEY, CENTRE_KEY = "flrdf", "flrdf_map", "plain", "centre"
PAPER_KEY, PAPER_X_KEY = "paper", "paper_x"   # layer4's channel mean after (X') and before (X) suppression
TAUS = tuple(round(i / 20, 2) for i in range(21))   # 0.00, 0.05, ..., 1.00
IOU_THRESHOLDS = (0.3, 0.5, 0.7)
WORST_K = 12
REFINE_LABELS = {"grabcut": "GrabCut"}
CENTRE_FRACTION = 0.5


def method_label(key: str, map_source: str | None = None, box_refine: str = "none") -> str:
    """A map or box source's name in every table (loc-eval, analyze's MaxBoxAccV2, the dashboard);
    ``map_source``: the model's FL map (FLRDF.map_source; None: the paper's); ``box_refine``: the
    model's ``model.box_refine`` (FLRDF's own box says when it is refined)."""
    source = map_source or PAPER_MAP_SOURCE
    flrdf = "FLRDF (suppressed map)" if source == PAPER_MAP_SOURCE else f"FLRDF ({source}; beyond the paper)"
    refined = flrdf if box_refine in (None, "none") else f"{flrdf} + {REFINE_LABELS.get(box_refine, box_refine)}"
    fixed = {FLRDF_KEY: refined, FLRDF_MAP_KEY: f"{flrdf}, map box unrefined",
             PLAIN_KEY: "plain map (no suppression)", CENTRE_KEY: "centre box (baseline)",
             PAPER_KEY: "paper's map X' (layer4 channel mean, after suppression)",
             PAPER_X_KEY: "X (layer4 channel mean, before suppression)"}
    return fixed.get(key) or (METHODS[key].label if key in METHODS else key)


@dataclass
class WorstImage:
    iou: float
    index: int
    path: str
    label: int
    pred: int
    image: np.ndarray          # uint8 (H, W, 3) as the network saw it
    gt_box: list[float]        # input pixels
    box: list[float]           # FLRDF's box, input pixels


@dataclass
class _Tally:
    """Running counts of one box source."""
    sweep_hits: np.ndarray                 # (len(taus), len(IOU_THRESHOLDS))
    hits: int = 0                          # IoU >= 0.5 at the model's tau
    iou_sum: float = 0.0


@dataclass
class LocResult:
    summary: dict                          # everything results.json holds except the per-image rows
    per_image: list[dict] = field(default_factory=list)
    worst: list[WorstImage] = field(default_factory=list)


def _grid_up(maps: torch.Tensor, up: int) -> torch.Tensor:
    """FLRDF's own pre-threshold step: bilinear upsampling of (B, h, w) maps by ``up``."""
    m = maps.float()
    if up > 1:
        m = F.interpolate(m[:, None], scale_factor=up, mode="bilinear", align_corners=False)[:, 0]
    return m


def _rate(hits: float, n: int) -> float | None:
    return round(hits / n, 6) if n else None


@torch.no_grad()
def evaluate_localization(model, loader, *, methods=DEFAULT_METHODS, tau: float | None = None,
                          taus=TAUS, worst_k: int = WORST_K, records=None, precision=None,
                          progress=None, seed: int = 0, refine_all: bool = False) -> LocResult:
    """Score every box source on ``loader`` (batches of flrdf.data.FGVCDataset). See the module docstring.

    ``model``: an FLRDF in eval mode. ``records``: the dataset's records (for file
    names in the per-image rows). ``progress(n_done_in_batch)`` is called per batch.
    """
    from flrdf.engine.step import precision_for

    cams = check_methods(methods)
    refine = bool(getattr(model, "refines", False))
    if refine_all and not refine:
        raise ValueError("refining every method's boxes needs a refining model: --set model.box_refine=grabcut")
    refined_too = {PLAIN_KEY, PAPER_KEY, PAPER_X_KEY, *cams} if refine_all else set()
    keys = [FLRDF_KEY, *([FLRDF_MAP_KEY] if refine else []), PLAIN_KEY, PAPER_KEY, PAPER_X_KEY, *cams, CENTRE_KEY]
    tau = float(model.cfg.tau if tau is None else tau)
    taus = [float(t) for t in taus]
    device = next(model.parameters()).device
    precision = precision or precision_for(device, False, False)
    up = max(1, int(model.cfg.map_upsample))
    model.eval()
    torch.manual_seed(seed)  # the jigsaw branch's permutations

    tallies = {k: _Tally(np.zeros((len(taus), len(IOU_THRESHOLDS)))) for k in keys}
    cls_hits = {"top1": 0, "top5": 0, "top1_raw": 0, "top1_object": 0, "top1_jigsaw": 0}
    has_branch = {"object": False, "jigsaw": False}
    n_images = n_box = 0
    per_image: list[dict] = []
    worst_heap: list[tuple[float, int, WorstImage]] = []
    t_start = time.perf_counter()
    thr = torch.tensor(IOU_THRESHOLDS)
    gates = GateTally()

    for batch in loader:
        images = precision.prepare(batch["image"])
        labels = batch["label"].to(device)
        source = {"source": precision.prepare(batch["source"])} if "source" in batch else {}
        with precision.autocast(), capture_gates(model) as seen:
            out = model(images, tau=tau, with_jigsaw=True, **source)
        tally_gates(gates, seen)
        b, _, hh, ww = images.shape
        n_images += b

        # classification, per branch and combined
        k = min(5, out.logits.shape[1])
        top = out.logits.float().topk(k, dim=1).indices
        pred = top[:, 0]
        cls_hits["top1"] += int((pred == labels).sum())
        cls_hits["top5"] += int((top == labels[:, None]).any(1).sum())
        cls_hits["top1_raw"] += int((out.logits_raw.argmax(1) == labels).sum())
        for name, logits in (("object", out.logits_object), ("jigsaw", out.logits_jigsaw)):
            if logits is not None:
                has_branch[name] = True
                cls_hits[f"top1_{name}"] += int((logits.argmax(1) == labels).sum())

        mask = batch["has_box"].bool()
        if mask.any():
            idx = mask.nonzero()[:, 0]
            sel_images, sel_labels = images[idx], labels[idx.to(device)]
            gt = batch["box"][idx].float()
            m = len(idx)
            n_box += m
            # maps ready to threshold: (map, normalize flag = each source's own rule, the grid it is boxed on) -
            # the model's box grid, and layer4's for the paper's maps
            grid = box_grid(model, (hh, ww))
            paper_grid = model.paper_grid((hh, ww))
            map_key = FLRDF_MAP_KEY if refine else FLRDF_KEY
            sel = idx.to(device)
            grids: dict[str, tuple[torch.Tensor, bool, object]] = {
                map_key: (_grid_up(out.loc_map[sel].cpu(), up), False, grid),
                PLAIN_KEY: (_grid_up(out.plain_map[sel].cpu(), up), False, grid),
                PAPER_KEY: (_grid_up(out.paper_map[sel].cpu(), up), False, paper_grid),
                PAPER_X_KEY: (_grid_up(out.paper_plain_map[sel].cpu(), up), False, paper_grid),
            }
            if cams:
                with torch.enable_grad():
                    cam_maps = compute_cams(model, sel_images.float(), sel_labels.cpu(), cams)
                for key in cams:
                    grids[key] = (to_grid(cam_maps[key], grid), True, grid)
            centre = centre_boxes(m, (hh, ww), CENTRE_FRACTION)

            ious_at_tau: dict[str, torch.Tensor] = {}
            boxes_at_tau: dict[str, torch.Tensor] = {}
            view = batch["source"][idx] if "source" in batch else sel_images
            # refined boxes per (row, tau), each GrabCut pass done once; the forward refined FLRDF's at the model's tau
            refined: dict[tuple[str, float], torch.Tensor] = {(FLRDF_KEY, tau): out.boxes[idx.to(device)].cpu()} \
                if refine else {}
            for ti, t in enumerate(taus + [tau]):
                # one batched box call per (normalisation rule, grid)
                for norm, g in dict.fromkeys((nf, gg) for _, nf, gg in grids.values()):
                    group = [key for key, (_, nf, gg) in grids.items() if nf is norm and gg == g]
                    stacked = torch.cat([grids[key][0] for key in group])
                    boxes = boxes_from_maps(stacked, t, (hh, ww), upsample=1, normalize=norm, grid=g).split(m)
                    scored = dict(zip(group, boxes))
                    if refine and map_key in scored:   # the model's own rule: the map's box refined at this tau
                        if (FLRDF_KEY, t) not in refined:
                            refined[FLRDF_KEY, t] = model.refine(view, out.loc_map[idx.to(device)], scored[map_key],
                                                                 (hh, ww), t).cpu()
                        scored[FLRDF_KEY] = refined[FLRDF_KEY, t]
                    for key in [k for k in group if k in refined_too]:  # each seeded by its own map, same grid
                        if (key, t) not in refined:
                            seeds = normalize_maps(grids[key][0]) if norm else grids[key][0]
                            refined[key, t] = refine_boxes(view, seeds, scored[key], g, t,
                                                           RefineSettings.of(model.cfg))
                        scored[key] = refined[key, t]
                    for key, bx in scored.items():
                        iou = box_iou(bx, gt)
                        if ti == len(taus):              # the model's tau
                            ious_at_tau[key], boxes_at_tau[key] = iou, bx
                        else:
                            tallies[key].sweep_hits[ti] += (iou[:, None] >= thr[None]).sum(0).numpy()
            centre_iou = box_iou(centre, gt)
            ious_at_tau[CENTRE_KEY], boxes_at_tau[CENTRE_KEY] = centre_iou, centre
            tallies[CENTRE_KEY].sweep_hits += (centre_iou[:, None] >= thr[None]).sum(0).numpy()[None]
            for key in keys:
                tallies[key].hits += int((ious_at_tau[key] >= 0.5).sum())
                tallies[key].iou_sum += float(ious_at_tau[key].sum())

            # per-image rows and the worst FLRDF boxes
            sel_pred = pred[idx.to(device)].cpu()
            uint8 = None
            for j in range(m):
                i_ds = int(batch["index"][idx[j]]) if "index" in batch else len(per_image)
                path = records[i_ds].path if records is not None else str(i_ds)
                row = {"index": i_ds, "file": path, "label": int(sel_labels[j]), "pred": int(sel_pred[j])}
                row.update({f"iou_{key}": round(float(ious_at_tau[key][j]), 4) for key in keys})
                per_image.append(row)
                score = float(ious_at_tau[FLRDF_KEY][j])
                if worst_k > 0 and (len(worst_heap) < worst_k or -score > worst_heap[0][0]):
                    if uint8 is None:
                        uint8 = to_uint8(sel_images)
                    item = WorstImage(score, i_ds, path, row["label"], row["pred"], uint8[j],
                                      gt[j].tolist(), boxes_at_tau[FLRDF_KEY][j].tolist())
                    entry = (-score, -i_ds, item)  # ties: the lower dataset index is kept
                    if len(worst_heap) < worst_k:
                        heapq.heappush(worst_heap, entry)
                    else:
                        heapq.heapreplace(worst_heap, entry)
        if progress is not None:
            progress(b)

    rows = []
    for key in keys:
        t = tallies[key]
        sweep = t.sweep_hits / max(n_box, 1)
        best = int(np.argmax(sweep[:, 1])) if n_box else 0
        rows.append({
            "method": key, "label": method_label(key, getattr(model, "map_source", None), applied(model.cfg.box_refine))
            + (f" + {REFINE_LABELS.get(model.cfg.box_refine, model.cfg.box_refine)}" if key in refined_too else ""),
            "loc_acc": _rate(t.hits, n_box), "mean_iou": _rate(t.iou_sum, n_box),
            "max_box_acc": round(float(sweep[best, 1]), 6) if n_box else None,
            "best_tau": taus[best] if n_box and key != CENTRE_KEY else None,
            "max_box_acc_357": round(float(sweep.max(axis=0).mean()), 6) if n_box else None,
            "sweep": {f"iou{int(round(th * 100))}": [round(float(v), 6) for v in sweep[:, i]]
                      for i, th in enumerate(IOU_THRESHOLDS)} if n_box else None,
        })
    n = max(n_images, 1)
    classification = {"top1": _rate(cls_hits["top1"], n), "top5": _rate(cls_hits["top5"], n),
                      "top1_raw": _rate(cls_hits["top1_raw"], n),
                      "top1_object": _rate(cls_hits["top1_object"], n) if has_branch["object"] else None,
                      "top1_jigsaw": _rate(cls_hits["top1_jigsaw"], n) if has_branch["jigsaw"] else None,
                      "n": n_images}
    summary = {"tau": tau, "taus": taus, "box_refine": model.cfg.box_refine, "refine_all": bool(refine_all),
               "iou_thresholds": list(IOU_THRESHOLDS), "methods": keys,
               "cam_target": "ground-truth class (GT-known)", "centre_fraction": CENTRE_FRACTION,
               "n": n_images, "n_box": n_box, "rows": rows, "classification": classification,
               "gate": gates.summary(),
               "elapsed_s": round(time.perf_counter() - t_start, 2)}
    worst = [e[2] for e in sorted(worst_heap, key=lambda e: (-e[0], -e[1]))]
    return LocResult(summary, per_image, worst)
