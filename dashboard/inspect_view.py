"""InspectResult -> the values the Inspect tab's output components take.

Pure functions (numpy, pandas, cv2): the tab module wires components and
events; this module decides what each output shows. Kept apart so the layout
can be tested and reused (e.g. by an export) without a running server.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd

from flrdf.engine.localization import REFINE_LABELS
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


def refine_name(r: InspectResult) -> str:
    return REFINE_LABELS.get(r.box_refine, r.box_refine)


BEYOND = " (beyond the paper)"


def source_label(r: InspectResult) -> str:
    """The box source's map, named: the paper's X', or what the project adds (marked beyond the paper)."""
    name = r.box_source.removesuffix(BEYOND)
    beyond = r.box_source.endswith(BEYOND) or r.map_box is not None
    refined = "" if r.map_box is None else f" + {refine_name(r)}"
    return f"box source: {name}{refined}{BEYOND if beyond else ''}"


def source_image(r: InspectResult) -> np.ndarray:
    """The box source's map with FLRDF's box (red), the map's own box when refined (white) and the ground truth."""
    return enlarge(draw_boxes(r.loc_overlay, r.box, r.gt_box, r.map_box))


def _caption(name: str, iou: float | None) -> str:
    return name if iou is None else f"{name} - IoU {iou:.2f}"


def cam_gallery(r: InspectResult) -> list[tuple[np.ndarray, str]]:
    """The paper's map X' first, then the box source's map when it is another one (and that stage's plain
    map), then each CAM overlay with its box; captions carry the IoU."""
    items = []
    if r.suppression is not None:
        a = r.suppression.after
        items.append((draw_boxes(a.overlay, a.box, r.gt_box), _caption("paper's map X' (layer4, after suppression)",
                                                                        a.iou)))
    if not r.uses_paper_map or r.suppression is None:
        items.append((draw_boxes(r.loc_overlay, r.box, r.gt_box, r.map_box), _caption(source_label(r), r.iou)))
        if r.loc_layer != "layer4":
            items.append((draw_boxes(r.plain_overlay, r.plain_box, r.gt_box),
                          _caption(f"plain map: {r.loc_layer} channel mean, no suppression", r.plain_iou)))
    items += [(draw_boxes(c.overlay, c.box, r.gt_box), _caption(c.label, c.iou)) for c in r.cams]
    return items


def cam_table(r: InspectResult) -> pd.DataFrame:
    """Every box on the page with its IoU: FLRDF's (refined), the map's, the paper's X' and X boxes, the CAMs'."""
    rows = [{"method": f"FLRDF ({source_label(r)})", "box (input px)": _fmt(r.box),
             "box (original px)": _fmt(r.box_original), "IoU vs GT": _num(r.iou), "ms": None}]
    if r.map_box is not None:
        rows.append({"method": "FLRDF map box (object crop)", "box (input px)": _fmt(r.map_box),
                     "box (original px)": None, "IoU vs GT": _num(r.map_iou), "ms": None})
    if r.suppression is not None:
        for m, name in ((r.suppression.after, "paper's map X' (layer4, after suppression)"),
                        (r.suppression.before, "X (layer4, before suppression)")):
            rows.append({"method": name, "box (input px)": _fmt(m.box), "box (original px)": None,
                         "IoU vs GT": _num(m.iou), "ms": None})
    rows += [{"method": c.label, "box (input px)": _fmt(c.box), "box (original px)": _fmt(c.box_original),
              "IoU vs GT": _num(c.iou), "ms": round(c.ms, 1)} for c in r.cams]
    return pd.DataFrame(rows)


def timing_table(r: InspectResult) -> pd.DataFrame:
    return pd.DataFrame({"stage": list(r.timings_ms), "ms": [round(v, 1) for v in r.timings_ms.values()]})


# ---------------------------------------------------------------- the suppression controller (the paper's FL module)
SUPPRESSION_TITLES = {"before": "X: layer4, before suppression", "after": "X': after suppression (paper's map)",
                      "removed": "X - X': what suppression removed"}


def suppression_images(r: InspectResult) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """X, X' and X - X' overlays, each with its box at tau (red) and the ground truth (green)."""
    s = r.suppression
    if s is None:
        return None, None, None
    return tuple(enlarge(draw_boxes(m.overlay, m.box, r.gt_box)) for m in (s.before, s.after, s.removed))


def suppression_note(r: InspectResult) -> str:
    """One line on the controller of this image: what it is, its gate, and the paper's boxes' IoUs."""
    s = r.suppression
    if s is None:
        return "This model has no layer4 suppression block."
    ious = ""
    if s.after.iou is not None:
        ious = f" · box IoU: X' **{s.after.iou:.2f}**, X {s.before.iou:.2f}"
    if s.mode == "none":
        return f"**No suppression** in this model (model.suppression=none): X' = X, nothing is removed.{ious}"
    if s.mode == "fixed":
        head = f"**Fixed controller**: G = delta = {s.delta:g} for every channel"
    else:
        g = s.gates
        head = (f"**Learnable controller** (paper eq. 1): G = sigmoid(f(GAP(X))) over {len(g)} channels, "
                f"mean {float(g.mean()):.2f} (min {float(g.min()):.2f}, max {float(g.max()):.2f})")
    return f"{head} · X' = min(X, X_max·G), tau {r.tau:g}{ious}"


GATE_X, GATE_Y = "channel (sorted by G)", "G"


def gate_plot(r: InspectResult) -> pd.DataFrame:
    """gr.LinePlot data: this image's gate G per channel, sorted ascending (its mean: :func:`gate_label`)."""
    s = r.suppression
    g = np.sort(np.asarray(s.gates, dtype=np.float64)) if s is not None and s.gates is not None else np.zeros(0)
    return pd.DataFrame({GATE_X: np.arange(len(g)), GATE_Y: g})


def gate_label(r: InspectResult) -> str:
    s = r.suppression
    if s is None or s.gates is None:
        return "Controller: no gate (no suppression)"
    return f"Controller: G per channel, sorted · mean {float(np.mean(s.gates)):.3f}"


def channel_gallery(r: InspectResult) -> list[tuple[np.ndarray, str]]:
    """The channels suppression cut most (largest X_max·(1 - G)): each channel's X / X_max over the image."""
    s = r.suppression
    if s is None:
        return []
    return [(enlarge(c.overlay, 160), f"ch {c.index} · G {c.gate:.2f} · X_max {c.x_max:.1f} · cut {c.cut:.1f}")
            for c in s.channels]


def whatif_image(r: InspectResult) -> np.ndarray | None:
    w = r.whatif
    return None if w is None else enlarge(draw_boxes(w.after.overlay, w.after.box, r.gt_box))


def whatif_note(r: InspectResult) -> str:
    w = r.whatif
    if w is None:
        return ("**What-if** (no retraining): choose a counterfactual gate on the left - scale G, a constant "
                "delta, or suppression off - to see X', its box and the raw branch under it.")
    gate = "suppression off" if w.gate_mean is None else f"mean G {w.gate_mean:.2f}"
    own = r.suppression.gates if r.suppression is not None else None
    if own is not None and w.gate_mean is not None:
        gate += f" (the model's {float(np.mean(own)):.2f})"
    iou = "" if w.after.iou is None else (f" · X' box IoU **{w.after.iou:.2f}**"
                                          + (f" (the model's {r.suppression.after.iou:.2f})"
                                             if r.suppression is not None else ""))
    return f"**What-if: {w.whatif.describe()}** · {gate}{iou} · one more forward, {w.ms:.0f} ms"


def whatif_table(r: InspectResult) -> pd.DataFrame:
    """Rank x (raw, combined) for the model's own gate and the counterfactual one."""
    w = r.whatif
    if w is None:
        return pd.DataFrame({"rank": []})
    cols = {"rank": list(range(1, 1 + max(len(v) for v in w.top5.values())))}
    for branch in ("raw", "combined"):
        for name, rows in ((f"{branch} (model)", r.top5.get(branch, [])), (f"{branch} (what-if)", w.top5[branch])):
            cells = [f"{n} ({p * 100:.1f}%)" for n, p in rows]
            cols[name] = cells + [""] * (len(cols["rank"]) - len(cells))
    return pd.DataFrame(cols)


def status_text(r: InspectResult, model_name: str) -> str:
    """A compact block: the prediction, the box and where it comes from, the crop, the settings."""
    names = r.class_names
    p = dict(r.top5["combined"]).get(names[r.predicted], 0) * 100
    target = f" · CAM target: {names[r.target]}{' (predicted)' if r.target == r.predicted else ''}"
    lines = [f"**Prediction:** {names[r.predicted]} ({p:.1f}%){target}"]
    box = f"**Box:** {source_label(r)}"
    if r.iou is not None:
        box += f" · IoU with ground truth **{r.iou:.2f}**"
        if r.map_iou is not None:
            box += f" (map box {r.map_iou:.2f})"
        if r.suppression is not None and not r.uses_paper_map and r.suppression.after.iou is not None:
            box += f" · paper's X' box {r.suppression.after.iou:.2f}"
    lines.append(box)
    gate = gate_text(r.gate)
    if gate:
        lines.append(gate)
    lines.append(f"**Crop:** {crop_note(r).removeprefix('crop: ')}"
                 + (" (the map's box, white)" if r.map_box is not None else ""))
    lines.append(f"tau {r.tau:g} · n {r.jigsaw_n} · seed {r.seed} · {r.timings_ms.get('total', 0):.0f} ms "
                 f"server-side · model `{model_name}`")
    return "  \n".join(lines)


SPARK = "▁▂▃▄▅▆▇█"


def gate_text(g: dict | None) -> str:
    """One line for the suppression gate of this image: mean, percentiles and a histogram over [0, 1]."""
    if not g:
        return ""
    top = max(g["hist"]) or 1.0
    bars = "".join(" " if v <= 0 else SPARK[min(len(SPARK) - 1, int(v / top * (len(SPARK) - 1) + 0.5))]
                   for v in g["hist"])
    return (f"**Gate G** over {g['n']} channels: mean {g['mean']:.2f}, "
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
