"""MaxBoxAccV2 exactly as clovaai/wsolevaluation defines it - pure numpy/OpenCV maths.

The field's reference ("Evaluating Weakly Supervised Object Localization Methods
Right", CVPR 2020; its ``evaluation.py`` and ``inference.py``). Per image:

1. the score map is resized to the 224 x 224 full-image frame with bicubic
   interpolation (``cv2.INTER_CUBIC``) and min-max normalised; a constant or
   NaN map becomes zeros (:func:`normalize_scoremap`);
2. it is scaled to uint8 (``(map * 255).astype(uint8)``) and, for each
   threshold t of ``np.arange(0, 1, step)``, binarised with
   ``cv2.threshold(..., int(t * max), 255, THRESH_BINARY)`` (strictly greater);
3. EVERY contour of the binary map (``cv2.findContours``, ``RETR_TREE``,
   ``CHAIN_APPROX_SIMPLE``) gives its bounding rectangle, x1/y1 clipped to
   width-1/height-1; no contour gives the box (0, 0, 0, 0)
   (:func:`boxes_at_thresholds`);
4. IoU uses wsolevaluation's inclusive-pixel convention (areas with ``+ 1``,
   :func:`multiple_iou`); the image counts as correct at threshold t and IoU
   k if ANY of t's boxes reaches k against any ground-truth box.

MaxBoxAcc(k) is the best accuracy over t; MaxBoxAccV2 the mean over
k = 30, 50, 70 (:class:`BoxAccumulator`). ``multi_contour=False`` gives the
older largest-contour variant (MaxBoxAcc "V1" box rule) for comparison.

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
THRESHOLD_STEP = 0.01                     # the common faster choice; wsolevaluation's default is 0.001


def cam_thresholds(step: float = THRESHOLD_STEP) -> np.ndarray:
    """``np.arange(0, 1, step)``: 100 values 0.00 ... 0.99 at the default step."""
    if not 0 < step < 1:
        raise ValueError(f"threshold step must lie in (0, 1), got {step!r}")
    return np.arange(0, 1, step)


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


def boxes_at_thresholds(scoremap: np.ndarray, thresholds, multi_contour: bool = True) -> list[np.ndarray]:
    """Per threshold, the (n_t, 4) int boxes x0 y0 x1 y1 of the binarised map (see the module docstring).

    ``scoremap``: (H, W) in [0, 1] (already in the frame). Raises on values outside [0, 1] or NaN."""
    s = np.asarray(scoremap, dtype=np.float32)
    if s.ndim != 2:
        raise ValueError(f"scoremap must be 2-D, got shape {s.shape}")
    if np.isnan(s).any() or s.min() < 0 or s.max() > 1:
        raise ValueError("scoremap values must lie in [0, 1] (normalise it first)")
    height, width = s.shape
    image = np.expand_dims((s * 255).astype(np.uint8), 2)
    peak = int(np.max(image))
    out = []
    for t in thresholds:
        _, binary = cv2.threshold(image, int(t * peak), 255, cv2.THRESH_BINARY)
        contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
        if len(contours) == 0:
            out.append(np.zeros((1, 4), dtype=np.int64))
            continue
        if not multi_contour:
            contours = [max(contours, key=cv2.contourArea)]
        boxes = []
        for c in contours:
            x, y, w, h = cv2.boundingRect(c)
            boxes.append([x, y, min(x + w, width - 1), min(y + h, height - 1)])
        out.append(np.asarray(boxes, dtype=np.int64))
    return out


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


def best_iou_per_threshold(scoremap: np.ndarray, gt_boxes, thresholds, multi_contour: bool = True) -> np.ndarray:
    """(len(thresholds),) the best IoU any box at each threshold reaches against any ground-truth box."""
    gt = np.asarray(gt_boxes, dtype=np.int64).reshape(-1, 4)
    return np.array([multiple_iou(bx, gt).max() for bx in boxes_at_thresholds(scoremap, thresholds, multi_contour)])


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
        for i, k in enumerate(self.iou_thresholds):
            self.correct[i] += best >= k / 100
        self.count += 1
        return best

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


__all__ = ["FRAME", "IOU_THRESHOLDS", "cam_thresholds", "normalize_scoremap", "scoremap_to_frame", "resize_box",
           "boxes_at_thresholds", "multiple_iou", "best_iou_per_threshold", "BoxAccumulator", "max_box_acc_v2"]
