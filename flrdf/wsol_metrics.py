"""MaxBoxAccV2 as clovaai/wsolevaluation computes it - pure numpy/OpenCV maths.

The field's reference ("Evaluating Weakly Supervised Object Localization Methods
Right", CVPR 2020; its ``evaluation.py`` and ``inference.py``). Per image:

1. the score map, at whatever resolution the method produces it, is resized to
   the 224 x 224 full-image frame with bicubic interpolation
   (``cv2.INTER_CUBIC``) and min-max normalised; a constant or NaN map becomes
   zeros (:func:`scoremap_to_frame`, :func:`normalize_scoremap`);
2. it is scaled to uint8 (``(map * 255).astype(uint8)``) and, for each
   threshold t of ``np.arange(0, 1, step)`` (step 0.001, wsolevaluation's
   ``cam_curve_interval``; 0.01 as the named ``fast`` option), binarised with
   ``cv2.threshold(..., int(t * max), 255, THRESH_BINARY)`` (strictly greater);
3. EVERY contour of the binary map (``cv2.findContours``, ``RETR_TREE``,
   ``CHAIN_APPROX_SIMPLE``) gives its bounding rectangle, x1/y1 clipped to
   width-1/height-1; no contour gives the box (0, 0, 0, 0)
   (:func:`threshold_boxes`);
4. IoU uses wsolevaluation's inclusive-pixel convention (areas with ``+ 1``,
   :func:`multiple_iou`); the image counts as correct at threshold t and IoU
   k if ANY of t's boxes reaches k against any ground-truth box.

MaxBoxAcc(k) is the best accuracy over t; MaxBoxAccV2 the mean over
k = 30, 50, 70 (:class:`BoxAccumulator`). The largest contour alone (the
older "V1" box rule) comes from the same contours, for comparison.

Speed without changing a number: the uint8 map binarised at level L is the set
of pixels above L, so every level between two consecutive grey values present
in the map gives the same binary map, and every level at or above the map's
maximum the empty one. 1,000 thresholds thus collapse to at most 255 distinct
binarisations (100 to at most 100); each is traced once and its boxes shared by
all its thresholds (:func:`threshold_boxes`).

Ground-truth boxes are rescaled to the frame with :func:`resize_box`
(``int()`` of the scaled corners, as wsolevaluation does). No torch here: the
runner is :mod:`flrdf.engine.wsol_eval`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

FRAME = 224                               # wsolevaluation's _RESIZE_LENGTH
IOU_THRESHOLDS = (30, 50, 70)             # percent
THRESHOLD_STEPS = {"reference": 0.001,    # wsolevaluation's default cam_curve_interval
                   "fast": 0.01}          # the common faster choice
THRESHOLD_STEP = THRESHOLD_STEPS["reference"]
NULL_BOX = np.zeros((1, 4), dtype=np.int64)


def threshold_step(name_or_value) -> float:
    """``'reference'`` (0.001) / ``'fast'`` (0.01) / a number in (0, 1) -> the step."""
    if isinstance(name_or_value, str) and name_or_value in THRESHOLD_STEPS:
        return THRESHOLD_STEPS[name_or_value]
    try:
        step = float(name_or_value)
    except (TypeError, ValueError):
        raise ValueError(f"threshold step must be one of {list(THRESHOLD_STEPS)} or a number in (0, 1), "
                         f"got {name_or_value!r}") from None
    if not 0 < step < 1:
        raise ValueError(f"threshold step must lie in (0, 1), got {name_or_value!r}")
    return step


def step_name(step: float) -> str:
    """The name of a step (``reference``/``fast``) or its value as text."""
    return next((k for k, v in THRESHOLD_STEPS.items() if np.isclose(v, step, rtol=0, atol=1e-12)), f"{step:g}")


def cam_thresholds(step: float | str = THRESHOLD_STEP) -> np.ndarray:
    """``np.arange(0, 1, step)``: 1,000 values 0.000 ... 0.999 at the default step, 100 at ``fast``."""
    return np.arange(0, 1, threshold_step(step))


def normalize_scoremap(cam: np.ndarray) -> np.ndarray:
    """wsolevaluation's ``normalize_scoremap``: min-max to [0, 1]; NaN anywhere or a constant map -> zeros."""
    cam = np.array(cam, dtype=np.float32, copy=True)
    if np.isnan(cam).any() or cam.min() == cam.max():
        return np.zeros_like(cam)
    cam -= cam.min()
    cam /= cam.max()
    return cam


def scoremap_to_frame(cam: np.ndarray, frame: int = FRAME) -> np.ndarray:
    """A map of any resolution -> (frame, frame) float32 in [0, 1]: bicubic resize, then min-max."""
    cam = np.asarray(cam, dtype=np.float32)
    if cam.ndim != 2:
        raise ValueError(f"a score map must be 2-D (H, W), got shape {cam.shape}")
    resized = cv2.resize(cam, (frame, frame), interpolation=cv2.INTER_CUBIC)
    return normalize_scoremap(resized)


def resize_box(box, image_wh: tuple[float, float], frame: int = FRAME) -> tuple[int, int, int, int]:
    """A (x0, y0, x1, y1) box in an image of ``image_wh`` pixels -> the frame, ``int()`` of each corner."""
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = (float(v) for v in image_wh)
    if w <= 0 or h <= 0:
        raise ValueError(f"image size must be positive, got {image_wh!r}")
    return int(x0 * frame / w), int(y0 * frame / h), int(x1 * frame / w), int(y1 * frame / h)


@dataclass
class ThresholdBoxes:
    """The boxes of one map at every threshold, each distinct binarisation traced once.

    ``index[i]``: the binarisation threshold i gives; ``every[j]`` its (n, 4) boxes of every contour,
    ``largest[j]`` the (1, 4) box of its largest contour (both ``NULL_BOX`` for an empty map)."""
    index: np.ndarray
    every: list[np.ndarray]
    largest: list[np.ndarray]

    def at(self, multi_contour: bool = True) -> list[np.ndarray]:
        boxes = self.every if multi_contour else self.largest
        return [boxes[j] for j in self.index]


def _checked_uint8(scoremap: np.ndarray) -> np.ndarray:
    s = np.asarray(scoremap, dtype=np.float32)
    if s.ndim != 2:
        raise ValueError(f"scoremap must be 2-D, got shape {s.shape}")
    if np.isnan(s).any() or s.min() < 0 or s.max() > 1:
        raise ValueError("scoremap values must lie in [0, 1] (normalise it first)")
    return (s * 255).astype(np.uint8)


def threshold_boxes(scoremap: np.ndarray, thresholds) -> ThresholdBoxes:
    """Every contour's box and the largest contour's box at each threshold (see the module docstring).

    ``scoremap``: (H, W) in [0, 1] (already in the frame). Raises on values outside [0, 1] or NaN."""
    image = _checked_uint8(scoremap)
    height, width = image.shape
    levels = (np.asarray(thresholds, dtype=np.float64) * int(image.max())).astype(np.int64)  # int(t * max)
    values = np.unique(image)
    # how many grey values lie above each level: the binary map depends on nothing else (0: empty)
    above = len(values) - np.searchsorted(values, levels, side="right")
    keys, index = np.unique(above, return_inverse=True)
    every, largest = [], []
    for k in keys:
        if k == 0:
            every.append(NULL_BOX)
            largest.append(NULL_BOX)
            continue
        level = int(values[len(values) - k - 1]) if k < len(values) else -1
        binary = (image > level).astype(np.uint8) * 255       # cv2.threshold(THRESH_BINARY) at ``level``
        contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
        if len(contours) == 0:
            every.append(NULL_BOX)
            largest.append(NULL_BOX)
            continue
        boxes = np.array([(x, y, min(x + w, width - 1), min(y + h, height - 1))
                          for x, y, w, h in map(cv2.boundingRect, contours)], dtype=np.int64)
        biggest = 0 if len(contours) == 1 else int(np.argmax([cv2.contourArea(c) for c in contours]))
        every.append(boxes)
        largest.append(boxes[biggest:biggest + 1])          # the first of equal areas, as max() picks
    return ThresholdBoxes(index.reshape(-1), every, largest)


def boxes_at_thresholds(scoremap: np.ndarray, thresholds, multi_contour: bool = True) -> list[np.ndarray]:
    """Per threshold, the (n_t, 4) int boxes x0 y0 x1 y1 of the binarised map (see the module docstring).

    ``scoremap``: (H, W) in [0, 1] (already in the frame). Raises on values outside [0, 1] or NaN."""
    return threshold_boxes(scoremap, thresholds).at(multi_contour)


def multiple_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(num_a, num_b) IoU of int x0y0x1y1 boxes, wsolevaluation's ``calculate_multiple_iou`` (inclusive pixels)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)[:, None, :]
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)[None, :, :]
    ix = np.maximum(0, np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1)
    iy = np.maximum(0, np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1)
    inter = ix * iy
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    denom = area_a + area_b - inter
    bad = denom <= 0
    iou = inter / np.where(bad, 1, denom)
    iou[bad] = 0
    return iou


def best_ious(scoremap: np.ndarray, gt_boxes, thresholds) -> tuple[np.ndarray, np.ndarray]:
    """``(every, largest)``: per threshold, the best IoU against any ground-truth box of any contour's box,
    and of the largest contour's box; one contour pass serves both."""
    gt = np.asarray(gt_boxes, dtype=np.int64).reshape(-1, 4)
    tb = threshold_boxes(scoremap, thresholds)
    counts = np.array([len(b) for b in tb.every])
    per_box = multiple_iou(np.concatenate(tb.every), gt).max(axis=1)
    every = np.maximum.reduceat(per_box, np.cumsum(counts) - counts)     # best box of each binarisation
    largest = multiple_iou(np.concatenate(tb.largest), gt).max(axis=1)
    return every[tb.index], largest[tb.index]


def best_iou_per_threshold(scoremap: np.ndarray, gt_boxes, thresholds, multi_contour: bool = True) -> np.ndarray:
    """(len(thresholds),) the best IoU any box at each threshold reaches against any ground-truth box."""
    return best_ious(scoremap, gt_boxes, thresholds)[0 if multi_contour else 1]


@dataclass
class BoxAccumulator:
    """Running MaxBoxAccV2 over images: counts of correct images per (IoU threshold, map threshold)."""
    thresholds: np.ndarray = field(default_factory=cam_thresholds)
    iou_thresholds: tuple[int, ...] = IOU_THRESHOLDS
    multi_contour: bool = True
    count: int = 0
    correct: np.ndarray | None = None      # (len(iou_thresholds), len(thresholds))

    def __post_init__(self):
        self.thresholds = np.asarray(self.thresholds, dtype=np.float64)
        if self.correct is None:
            self.correct = np.zeros((len(self.iou_thresholds), len(self.thresholds)))

    def add(self, scoremap: np.ndarray, gt_boxes) -> np.ndarray:
        """Score one image's (frame-sized, normalised) map; returns its best IoU per threshold."""
        best = best_iou_per_threshold(scoremap, gt_boxes, self.thresholds, self.multi_contour)
        self.add_best(best)
        return best

    def add_best(self, best: np.ndarray) -> None:
        """Count one image from its best IoU per threshold (``best_ious``' ``every`` or ``largest``)."""
        best = np.asarray(best, dtype=np.float64)
        if best.shape != self.thresholds.shape:
            raise ValueError(f"need one IoU per threshold ({len(self.thresholds)}), got shape {best.shape}")
        for i, k in enumerate(self.iou_thresholds):
            self.correct[i] += best >= k / 100
        self.count += 1

    def accuracy(self) -> np.ndarray:
        """(len(iou_thresholds), len(thresholds)) accuracy in [0, 1]."""
        return self.correct / max(self.count, 1)

    def summary(self) -> dict:
        """``max_box_acc_v2`` (mean over the IoU thresholds), the best per IoU and the threshold where it is
        reached; fractions in [0, 1]; None for no image."""
        if not self.count:
            return {"max_box_acc_v2": None, "n": 0}
        acc = self.accuracy()
        out = {"n": self.count}
        for i, k in enumerate(self.iou_thresholds):
            j = int(np.argmax(acc[i]))
            out[f"max_box_acc_iou{k}"] = round(float(acc[i, j]), 6)
            out[f"best_threshold_iou{k}"] = round(float(self.thresholds[j]), 4)
        out["max_box_acc_v2"] = round(float(acc.max(axis=1).mean()), 6)
        return out


def max_box_acc_v2(scoremaps, gt_boxes, thresholds=None, multi_contour: bool = True) -> dict:
    """MaxBoxAccV2 of frame-sized, normalised ``scoremaps`` with one list of int boxes per image."""
    acc = BoxAccumulator(cam_thresholds() if thresholds is None else thresholds, multi_contour=multi_contour)
    for s, g in zip(scoremaps, gt_boxes):
        acc.add(s, g)
    return acc.summary()


__all__ = ["FRAME", "IOU_THRESHOLDS", "THRESHOLD_STEPS", "threshold_step", "step_name", "cam_thresholds",
           "normalize_scoremap", "scoremap_to_frame", "resize_box", "ThresholdBoxes", "threshold_boxes",
           "boxes_at_thresholds", "multiple_iou", "best_ious", "best_iou_per_threshold", "BoxAccumulator",
           "max_box_acc_v2"]
