"""wsolevaluation's MaxBoxAccV2 box protocol written out from its description (docs/WSOL.md,
docs/CONVENTIONS.md of the design notes) with numpy and cv2 only, one threshold at a time, deliberately slow and
plain: the independent reference the tests hold flrdf.wsol_metrics and flrdf.engine.wsol_eval to.
It imports nothing from flrdf."""

import cv2
import numpy as np


def protocol_best_ious(cam, gt_boxes, image_wh, step, largest_only=False):
    """wsolevaluation's box protocol as docs/WSOL.md states it, written out from scratch (numpy + cv2, one
    threshold at a time): the best IoU per threshold of ``cam`` (any resolution) against the image's boxes."""
    m = cv2.resize(np.asarray(cam, np.float32), (224, 224), interpolation=cv2.INTER_CUBIC)
    if np.isnan(m).any() or m.min() == m.max():
        m = np.zeros_like(m)
    else:
        m = m - m.min()
        m = m / m.max()
    u8 = (m * 255).astype(np.uint8)
    w, h = image_wh
    gts = [(int(x0 * 224 / w), int(y0 * 224 / h), int(x1 * 224 / w), int(y1 * 224 / h)) for x0, y0, x1, y1 in gt_boxes]

    def iou(a, b):   # inclusive pixels: a box (x0, y0, x1, y1) covers (x1 - x0 + 1) x (y1 - y0 + 1)
        iw = max(0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
        ih = max(0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
        union = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - iw * ih
        return 0.0 if union <= 0 else iw * ih / union

    out = []
    for t in np.arange(0, 1, step):
        _, binary = cv2.threshold(u8, int(t * np.max(u8)), 255, cv2.THRESH_BINARY)
        contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
        if largest_only and contours:
            contours = [max(contours, key=cv2.contourArea)]
        boxes = [(x, y, min(x + bw, 223), min(y + bh, 223)) for x, y, bw, bh in map(cv2.boundingRect, contours)]
        out.append(max(iou(b, g) for b in (boxes or [(0, 0, 0, 0)]) for g in gts))
    return np.array(out)


def protocol_max_box_acc(best_per_image) -> dict:
    """MaxBoxAcc at IoU 30/50/70 and their mean from each image's best IoU per threshold."""
    best = np.stack(best_per_image)                            # (images, thresholds)
    out = {f"max_box_acc_iou{k}": float((best >= k / 100).mean(axis=0).max()) for k in (30, 50, 70)}
    out["max_box_acc_v2"] = float(np.mean(list(out.values())))
    return out
