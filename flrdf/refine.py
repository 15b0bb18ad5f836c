"""Box refinement: the FL map's box snapped to the object's own edges (``model.box_refine``).

A feature map is coarse (a layer2 cell is 8 input pixels) and blurred by its receptive field,
so the box of a thresholded map overshoots the object where the map's blob spreads (above a
bird's head) and stops short where thin, weakly-responding parts are (its tail). The map does
not know where the object's *pixels* end; the image does. ``grabcut`` hands that question to
OpenCV's GrabCut (Rother et al., SIGGRAPH 2004: colour mixture models and a graph cut),
seeded by the map - the standard way weakly supervised methods turn a coarse seed into an
object mask (no box labels are involved):

    outside the map's box grown by ``refine_margin`` of its size on each side   sure background
    inside it, the map >= ``refine_sure``                                        sure foreground
    inside it, the map >= tau                                                    probable foreground
    the rest of the grown box                                                    probable background

The box is the bounding box of the largest connected region GrabCut labels foreground, on the
view the object crop is cut from (the source, ``data.source_size``, when the loader gives one)
resampled to at most ``refine_size`` px. Where GrabCut finds no foreground the map's box stays.
It runs per image on the CPU (a thread per core; OpenCV releases the GIL), so the model
refines in evaluation and inference only - training keeps the map's box (docs/PERFORMANCE.md
has the cost).

``model.box_refine=auto`` keeps GrabCut only where it raises loc_acc on the validation split: the
trainer measures both boxes there at the end of a run and records the decision and both figures
(flrdf.engine.refine_choice); until then an ``auto`` model reports the map's box.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from flrdf.boxes import BoxGrid, map_to_image, scale_boxes
from flrdf.data.transforms import to_uint8

REFINERS = ("none", "grabcut")
BOX_REFINE = (*REFINERS, "auto")  # model.box_refine: auto is resolved on the validation split (flrdf.engine.refine_choice)


def applied(box_refine: str) -> str:
    """The refiner a model with ``model.box_refine`` applies: an unresolved ``auto`` applies none (the map's box)."""
    return box_refine if box_refine in REFINERS else "none"


@dataclass(frozen=True)
class RefineSettings:
    """GrabCut's seeds and budget (the ``model.refine_*`` keys)."""
    sure: float = 0.6      # map >= sure (fraction of the peak) inside the box: sure foreground
    margin: float = 1.0    # the working area: the map's box grown by this fraction of its size per side
    iters: int = 5         # GrabCut iterations
    size: int = 224        # the view is resampled so that its longer side is at most this many px

    @classmethod
    def of(cls, cfg) -> "RefineSettings":
        return cls(cfg.refine_sure, cfg.refine_margin, cfg.refine_iters, cfg.refine_size)


def working_area(box, margin: float, hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """The map's ``box`` grown by ``margin`` of its size on each side, in whole pixels, clipped to the image."""
    h, w = hw
    x1, y1, x2, y2 = box
    gw, gh = margin * (x2 - x1), margin * (y2 - y1)
    return (max(0, int(np.floor(x1 - gw))), max(0, int(np.floor(y1 - gh))),
            min(w, int(np.ceil(x2 + gw))), min(h, int(np.ceil(y2 + gh))))


def seed_mask(prob: np.ndarray, box: tuple[float, float, float, float], tau: float, settings: RefineSettings) -> np.ndarray:
    """GrabCut's initial labels (H, W) uint8 for a map ``prob`` (H, W) sampled at the image's pixels
    and the map's ``box`` (x1, y1, x2, y2) in the same pixels (module docstring)."""
    h, w = prob.shape
    ax1, ay1, ax2, ay2 = working_area(box, settings.margin, (h, w))
    mask = np.full((h, w), cv2.GC_BGD, np.uint8)
    mask[ay1:ay2, ax1:ax2] = cv2.GC_PR_BGD
    bx1, by1, bx2, by2 = working_area(box, 0.0, (h, w))  # the box itself, in whole pixels
    inside = np.zeros((h, w), bool)
    inside[by1:by2, bx1:bx2] = True
    mask[inside & (prob >= tau)] = cv2.GC_PR_FGD
    mask[inside & (prob >= max(tau, settings.sure))] = cv2.GC_FGD
    return mask


def largest_region_box(foreground: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box (x1, y1, x2, y2), pixel edges, of the largest 8-connected region of a boolean mask."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(foreground.astype(np.uint8), connectivity=8)
    if n <= 1:
        return None
    j = 1 + int(stats[1:, cv2.CC_STAT_AREA].argmax())
    x, y, w, h = (int(v) for v in stats[j, :4])
    return x, y, x + w, y + h


def grabcut_box(image: np.ndarray, prob: np.ndarray, box, tau: float,
                settings: RefineSettings) -> tuple[int, int, int, int] | None:
    """GrabCut one RGB uint8 ``image`` (H, W, 3) seeded by its map ``prob`` (H, W) and the map's
    ``box`` (image pixels); the refined box, or None when GrabCut finds no foreground or no edge: a
    region that runs into the sure-background frame around the working area has leaked into
    look-alike surroundings (or the image has no contrast), and the map's box is the better guess."""
    mask = seed_mask(prob, box, tau, settings)
    fg_labels = (cv2.GC_FGD, cv2.GC_PR_FGD)
    if not np.isin(mask, fg_labels).any() or not np.isin(mask, (cv2.GC_BGD, cv2.GC_PR_BGD)).any():
        return None  # GrabCut needs both colour models
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)  # GrabCut's k-means draws from this thread's RNG: the same box every time
    try:
        cv2.grabCut(np.ascontiguousarray(image[:, :, ::-1]), mask, None, bgd, fgd, settings.iters,
                    cv2.GC_INIT_WITH_MASK)
    except cv2.error:  # degenerate colour statistics (e.g. a flat image)
        return None
    found = largest_region_box(np.isin(mask, fg_labels))
    if found is None or reaches_frame(found, working_area(box, settings.margin, prob.shape), prob.shape):
        return None
    return found


def reaches_frame(found, area, hw: tuple[int, int]) -> bool:
    """Whether a box reaches the sure-background frame around the working ``area``: a side of the
    area inside the image (the frame is there) that the box touches."""
    h, w = hw
    x1, y1, x2, y2 = found
    ax1, ay1, ax2, ay2 = area
    return (ax1 > 0 and x1 <= ax1) or (ay1 > 0 and y1 <= ay1) or (ax2 < w and x2 >= ax2) or (ay2 < h and y2 >= ay2)


def working_size(hw: tuple[int, int], limit: int) -> tuple[int, int]:
    """The view's size after resampling its longer side to at most ``limit`` px."""
    h, w = hw
    k = min(1.0, float(limit) / max(h, w))
    return max(1, round(h * k)), max(1, round(w * k))


def refine_boxes(view: torch.Tensor, maps: torch.Tensor, boxes: torch.Tensor, grid: BoxGrid, tau: float,
                 settings: RefineSettings = RefineSettings()) -> torch.Tensor:
    """GrabCut-refined boxes (B, 4) in the grid's image pixels (the network input's).

    ``view``: the normalised images the boxes are refined on (B, 3, S_h, S_w) - the input or its
    higher-resolution source, the same view; ``maps``: the FL maps (B, h, w) on ``grid``, the
    cell -> pixel map of the input; ``boxes``: their boxes at ``tau`` (B, 4), input pixels."""
    if len(boxes) == 0:
        return boxes
    in_h, in_w = grid.image_hw
    wh, ww = working_size(tuple(view.shape[-2:]), settings.size)
    images = to_uint8(view)
    probs = map_to_image(maps.detach().float().cpu(), grid, (wh, ww)).numpy()
    work_boxes = scale_boxes(boxes.detach().float().cpu(), (in_h, in_w), (wh, ww)).tolist()

    def one(i: int):
        image = images[i]
        if image.shape[:2] != (wh, ww):
            image = cv2.resize(image, (ww, wh), interpolation=cv2.INTER_AREA)
        return grabcut_box(image, probs[i], work_boxes[i], tau, settings)

    workers = max(1, min(len(boxes), torch.get_num_threads()))
    if workers == 1:
        found = [one(i) for i in range(len(boxes))]
    else:
        with ThreadPoolExecutor(workers) as pool:
            found = list(pool.map(one, range(len(boxes))))
    out = boxes.detach().float().cpu().clone()
    hit = [i for i, b in enumerate(found) if b is not None]
    if hit:
        out[hit] = scale_boxes(torch.tensor([found[i] for i in hit], dtype=torch.float32), (wh, ww), (in_h, in_w))
    return out.to(boxes.device)
