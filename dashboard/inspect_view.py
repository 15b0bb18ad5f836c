"""InspectResult -> the values the Inspect tab's output components take.

Pure functions (numpy, pandas, cv2): the tab module wires components and
events; this module decides what each output shows. Kept apart so the layout
can be tested and reused (e.g. by an export) without a running server.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from flrdf.engine.localization import FLRDF_KEY, REFINE_LABELS, method_label
from flrdf.inspect import InspectResult

BOX_COLOURS = {"FLRDF box": "#ff3b30", "ground truth": "#34c759"}
PRED_RGB = (255, 59, 48)
GT_RGB = (52, 199, 89)
MAP_BOX_RGB = (255, 255, 255)
MIN_DISPLAY = 256  # tiny originals are shown enlarged (nearest neighbour)
DISPLAY_SIDE = 480  # the preview is shown 320 px high: no need to send the 768 px rendering


def _scaled(box, scale: float, w: int, h: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = (float(v) * scale for v in box)
    x1, x2 = sorted((int(np.clip(round(x1), 0, w - 1)), int(np.clip(round(x2), 1, w))))
    y1, y2 = sorted((int(np.clip(round(y1), 0, h - 1)), int(np.clip(round(y2), 1, h))))
    return x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)


def annotated_preview(r: InspectResult) -> tuple[np.ndarray, list[tuple[tuple[int, int, int, int], str]]]:
    """(image, [(box, label)]) for gr.AnnotatedImage: the original image with FLRDF's box (and the GT box), at
    most ``DISPLAY_SIDE`` px (Gradio sends one full-size mask per box beside it: smaller is much cheaper)."""
    img = fit(enlarge(r.preview))
    h, w = img.shape[:2]
    scale = w / r.original_size[0]
    boxes = [(_scaled(r.box_original, scale, w, h), "FLRDF box")]
    if r.gt_box_original is not None:
        boxes.append((_scaled(r.gt_box_original, scale, w, h), "ground truth"))
    return img, boxes


def fit(image: np.ndarray | None, side: int = DISPLAY_SIDE) -> np.ndarray | None:
    """``image`` shrunk (area interpolation) so its long side is at most ``side`` px: the size it is shown at."""
    if image is None or max(image.shape[:2]) <= side:
        return image
    scale = side / max(image.shape[:2])
    return cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                      interpolation=cv2.INTER_AREA)


def enlarge(image: np.ndarray | None, min_side: int = MIN_DISPLAY) -> np.ndarray | None:
    """Small network-resolution images scaled up (nearest neighbour, whole factor) for display."""
    if image is None:
        return None
    up = max(1, int(np.ceil(min_side / max(image.shape[:2]))))
    if up == 1:
        return image
    return cv2.resize(image, (image.shape[1] * up, image.shape[0] * up), interpolation=cv2.INTER_NEAREST)


def draw_boxes(image: np.ndarray, box, gt_box=None, map_box=None) -> np.ndarray:
    """Box outlines (input pixels) drawn on a copy of an (S, S, 3) image; ``map_box``: the map's own box
    before refinement (thin, white), when the model refines its boxes."""
    out = np.ascontiguousarray(image.copy())
    h, w = out.shape[:2]
    thick = max(1, round(w / 128))
    if map_box is not None:
        x1, y1, x2, y2 = _scaled(map_box, 1.0, w, h)
        cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), MAP_BOX_RGB, max(1, thick // 2))
    if gt_box is not None:
        x1, y1, x2, y2 = _scaled(gt_box, 1.0, w, h)
        cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), GT_RGB, thick)
    x1, y1, x2, y2 = _scaled(box, 1.0, w, h)
    cv2.rectangle(out, (x1, y1), (x2 - 1, y2 - 1), PRED_RGB, thick)
    return out


def top5_table(r: InspectResult) -> pd.DataFrame:
    """Rank x branch (combined first), each cell 'class (p %)'."""
    cols = {"rank": list(range(1, 1 + max(len(v) for v in r.top5.values())))}
    order = ["combined"] + [b for b in r.top5 if b != "combined"]
    for branch in order:
        rows = r.top5[branch]
        cells = [f"{name} ({p * 100:.1f}%)" for name, p in rows]
        cols[branch] = cells + [""] * (len(cols["rank"]) - len(cells))
    return pd.DataFrame(cols)


def combined_label(r: InspectResult) -> dict[str, float]:
    """gr.Label value: combined top-5 as {class: probability}."""
    return {name: p for name, p in r.top5.get("combined", [])}


def cam_gallery(r: InspectResult) -> list[tuple[np.ndarray, str]]:
    """FLRDF's own maps first, then each CAM overlay with its box; captions carry the IoU."""
    def caption(name: str, iou: float | None) -> str:
        return name if iou is None else f"{name} - IoU {iou:.2f}"

    items = [(draw_boxes(r.loc_overlay, r.box, r.gt_box, r.map_box),
              caption(method_label(FLRDF_KEY, r.map_source, r.box_refine), r.iou))]
    items += [(draw_boxes(c.overlay, c.box, r.gt_box), caption(c.label, c.iou)) for c in r.cams]
    return items


def cam_table(r: InspectResult) -> pd.DataFrame:
    rows = [{"method": "FLRDF" if r.map_box is None else f"FLRDF ({REFINE_LABELS.get(r.box_refine, r.box_refine)})",
             "box (input px)": _fmt(r.box), "box (original px)": _fmt(r.box_original),
             "IoU vs GT": _num(r.iou), "ms": None}]
    if r.map_box is not None:
        rows.append({"method": "FLRDF map box (object crop)", "box (input px)": _fmt(r.map_box),
                     "box (original px)": None, "IoU vs GT": _num(r.map_iou), "ms": None})
    rows += [{"method": c.label, "box (input px)": _fmt(c.box), "box (original px)": _fmt(c.box_original),
              "IoU vs GT": _num(c.iou), "ms": round(c.ms, 1)} for c in r.cams]
    return pd.DataFrame(rows)


def timing_table(r: InspectResult) -> pd.DataFrame:
    return pd.DataFrame({"stage": list(r.timings_ms), "ms": [round(v, 1) for v in r.timings_ms.values()]})


def status_text(r: InspectResult, model_name: str) -> str:
    names = r.class_names
    parts = [f"**Prediction:** {names[r.predicted]} ({dict(r.top5['combined']).get(names[r.predicted], 0) * 100:.1f}%)",
             f"CAM target: {names[r.target]}{' (predicted)' if r.target == r.predicted else ''}",
             f"tau {r.tau:g}, n {r.jigsaw_n}, seed {r.seed}", f"map: {r.map_source}"]
    if r.map_box is not None:
        parts.append(f"box: the map's box (white) refined by {REFINE_LABELS.get(r.box_refine, r.box_refine)}; "
                     "the object crop comes from the map's box")
    if r.iou is not None:
        parts.append(f"FLRDF box IoU with ground truth: **{r.iou:.2f}**"
                     + (f" (map box {r.map_iou:.2f})" if r.map_iou is not None else ""))
    parts.append(crop_note(r))
    parts.append(f"{r.timings_ms.get('total', 0):.0f} ms server-side")
    text = " · ".join(parts) + f"  \nmodel: `{model_name}`"
    gate = gate_text(r.gate)
    return text + (f"  \n{gate}" if gate else "")


SPARK = "▁▂▃▄▅▆▇█"


def gate_text(g: dict | None) -> str:
    """One line for the suppression gate of this image: mean, percentiles and a histogram over [0, 1]."""
    if not g:
        return ""
    top = max(g["hist"]) or 1.0
    bars = "".join(" " if v <= 0 else SPARK[min(len(SPARK) - 1, int(v / top * (len(SPARK) - 1) + 0.5))]
                   for v in g["hist"])
    return (f"suppression gate G over {g['n']} channels: mean {g['mean']:.2f}, "
            f"p10 / p50 / p90 {g['p10']:.2f} / {g['p50']:.2f} / {g['p90']:.2f} · 0 `{bars}` 1")


def crop_note(r: InspectResult) -> str:
    """Where the object crop was cut from (what the object branch sees)."""
    if not getattr(r, "crop_source_px", 0):
        return f"crop: from the {r.image.shape[1]} px input"
    detail = "" if r.crop_detail is None or r.crop_detail >= 1 else f", {r.crop_detail * 100:.0f}% real detail"
    return f"crop: from the uploaded image (view at {r.crop_source_px} px{detail})"


def _fmt(box) -> str:
    return "[" + ", ".join(f"{float(v):.0f}" for v in box) + "]"


def _num(v: float | None) -> float | None:
    return None if v is None else round(float(v), 3)
