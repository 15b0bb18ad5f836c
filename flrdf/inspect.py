"""One image through a loaded FLRDF model, as plain data for the Inspect tab (and scripts).

``inspect_image`` decodes the image (``flrdf.data.load_image``), applies the
model's test transform, runs the full model (raw, object and jigsaw branches,
jigsaw shuffle seeded per request), computes the requested CAM baselines
(``flrdf.cams``) for the same target class with boxes at the same tau, and
renders every picture as uint8 RGB at the network's input resolution. Boxes
are given in input pixels and mapped back to the original image's pixels.
No UI imports: the dashboard only lays the result out.

The suppression stage is always reported (``InspectResult.suppression``), whatever map
the model's boxes come from: layer4's channel mean before suppression (X), after it
(X', the paper's localization map) and what suppression removed (X - X'), each on the
paper's layer4 box grid with its box at tau; the controller's gate G per channel and
the channels it cut most. ``whatif`` (flrdf.suppression.WhatIf) reruns the model once
with a counterfactual gate and reports X', its box and the raw and combined top-5 under
it. Every map picture is drawn with the geometry its box uses
(flrdf.boxes.render_on_grid): a cell's value sits on its receptive-field centre.

The object crop shows what the object branch sees. For a model trained with a
zoom source (``data.source_size``) it is cut from the uploaded image itself: the
test transform's view of it rendered at ``source_size`` px (capped at the image's
own pixels) exactly as the evaluation loader renders it, so Inspect's crop and
predictions are those of ``eval``. For a model trained without one, the crop is
cut from the network input, as that model's object branch always saw it (a
sharper crop would be an input it was never trained on).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam.utils.image import show_cam_on_image

from flrdf.boxes import BoxGrid, box_iou, box_to_image, boxes_from_maps, render_on_grid
from flrdf.cams import METHODS, box_grid, cam_boxes, check_methods, compute_cams, model_lock, to_grid
from flrdf.data import build_transform, load_image, to_uint8
from flrdf.data.errors import ImageLoadError
from flrdf.data.images import to_rgb
from flrdf.engine.checkpoint import LoadedModel
from flrdf.jigsaw import random_permutations
from flrdf.model import PAPER_MAP_SOURCE
from flrdf.refine import applied
from flrdf.suppression import (WhatIf, capture_suppression, gate_stats, most_suppressed, suppression_whatif,
                               whatif_gate)

BRANCHES = ("raw", "object", "jigsaw", "combined")
TOP_K = 5
PREVIEW_SIDE = 768  # longest side of the original-image preview
TOP_CHANNELS = 6    # the channels the controller cut most, shown one by one


class InspectError(ValueError):
    """A request that cannot be served (bad image, bad setting); the message says why."""


@dataclass
class CamView:
    method: str                    # key in flrdf.cams.METHODS
    label: str                     # display name
    map: np.ndarray                # float32 (S, S) in [0, 1]
    overlay: np.ndarray            # uint8 (S, S, 3)
    box: list[float]               # input pixels
    box_original: list[float]      # original-image pixels
    iou: float | None              # vs the ground-truth box, when given
    ms: float                      # this method's own cost (the shared pass is timed apart)


@dataclass
class MapView:
    """One map as Inspect shows it: on its box geometry, with its box at tau."""
    key: str                       # before | after | removed | whatif
    map: np.ndarray                # float32 (S, S) in [0, 1]
    overlay: np.ndarray            # uint8 (S, S, 3)
    box: list[float]               # input pixels, the paper's rule (tau, largest region)
    iou: float | None              # vs the ground-truth box, when given


@dataclass
class ChannelView:
    """One of the channels the suppression controller cut most."""
    index: int
    gate: float                    # G of this channel
    x_max: float                   # its peak activation
    cut: float                     # X_max * (1 - G): how far its peak was lowered
    overlay: np.ndarray            # uint8 (S, S, 3): X[c] / X_max over the image


@dataclass
class SuppressionView:
    """The paper's FL module for one image (layer4), whatever map the model's boxes come from."""
    mode: str                      # learnable | fixed | none (model.suppression)
    delta: float | None            # the constant gate of a fixed controller
    before: MapView                # channel mean of X
    after: MapView                 # channel mean of X' = min(X, X_max * G): the paper's localization map
    removed: MapView               # channel mean of X - X': where the peaks were cut
    gates: np.ndarray | None       # float32 (C,) G per channel for this image; None without suppression
    channels: list[ChannelView]    # the TOP_CHANNELS most cut, largest cut first
    stride: int                    # layer4's input pixels per cell


@dataclass
class WhatIfView:
    """The model rerun with a counterfactual suppression gate (flrdf.suppression.WhatIf)."""
    whatif: WhatIf
    after: MapView                 # X' under the counterfactual, with its box
    gate_mean: float | None        # mean of the counterfactual gate (None: suppression off)
    top5: dict[str, list[tuple[str, float]]]  # raw and combined top-5 under it
    ms: float


@dataclass
class InspectResult:
    image: np.ndarray              # uint8 (S, S, 3): what the network sees
    preview: np.ndarray            # uint8 original image, longest side <= PREVIEW_SIDE
    original_size: tuple[int, int]  # (W, H) of the decoded original
    box: list[float]               # FLRDF's foreground box, input pixels (GrabCut-refined with model.box_refine)
    box_original: list[float]      # same, original-image pixels
    loc_map: np.ndarray            # float32 (S, S): the FL map (model.loc_layer), upsampled
    plain_map: np.ndarray          # float32 (S, S): the map before suppression
    loc_overlay: np.ndarray        # uint8 (S, S, 3)
    plain_overlay: np.ndarray      # uint8 (S, S, 3)
    object_image: np.ndarray | None   # uint8 (S, S, 3): the cropped, enlarged foreground
    jigsaw_image: np.ndarray | None   # uint8 (S, S, 3): its shuffled patches
    top5: dict[str, list[tuple[str, float]]]  # branch -> [(class name, probability)]
    predicted: int                 # combined prediction
    target: int                    # class the CAMs explain
    class_names: list[str]
    tau: float
    jigsaw_n: int
    seed: int
    permutation: list[int] | None  # source patch at each grid position (row-major)
    gt_box: list[float] | None = None           # input pixels
    gt_box_original: list[float] | None = None  # original-image pixels, as given
    iou: float | None = None       # FLRDF box vs ground truth
    cams: list[CamView] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    gate: dict | None = None       # layer4 suppression gate of this image (flrdf.suppression.gate_stats); None: no suppression
    crop_source_px: int = 0        # 0: object crop cut from the input; else from the image's view at this size
    crop_detail: float | None = None  # share of that view's pixels that are the image's own (<= 1)
    map_source: str = PAPER_MAP_SOURCE  # what loc_map is (FLRDF.map_source)
    box_refine: str = "none"       # model.box_refine: how ``box`` was made from the map's box
    map_box: list[float] | None = None  # the map's own box (input pixels), the object crop's; set when refined
    map_iou: float | None = None   # that box vs ground truth
    uses_paper_map: bool = True    # the box source is the paper's map X' (layer4 channel mean)
    box_source: str = "the paper's map X' (layer4, after suppression)"  # FLRDF.box_source
    loc_layer: str = "layer4"      # model.loc_layer: the stage loc_map and plain_map come from
    plain_box: list[float] | None = None  # the plain map's own box at tau (the same rule as the box source's map)
    plain_iou: float | None = None
    suppression: SuppressionView | None = None
    whatif: WhatIfView | None = None

    def preview_scale(self) -> float:
        """Factor from original-image pixels to preview pixels."""
        return self.preview.shape[1] / self.original_size[0]


# ---------------------------------------------------------------- small helpers
_refine_pool: ThreadPoolExecutor | None = None


def _refiner() -> ThreadPoolExecutor:
    """Worker threads for GrabCut refinement beside the requests' other work (created on first use; two, for
    Inspect's two concurrent requests)."""
    global _refine_pool
    if _refine_pool is None:
        _refine_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="inspect-refine")
    return _refine_pool


def valid_grids(size: int) -> list[int]:
    """Jigsaw grids n that tile a size x size input (n <= 16)."""
    return [n for n in range(1, min(size, 16) + 1) if size % n == 0]


def overlay(image: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """Jet heat-map over a uint8 image (grad-cam's show_cam_on_image)."""
    return show_cam_on_image(image.astype(np.float32) / 255, np.clip(heat, 0, 1), use_rgb=True)


def on_grid(maps: torch.Tensor, grid: BoxGrid) -> np.ndarray:
    """(B, h, w) maps -> float32 (B, H, W) pixels drawn with their boxes' geometry (flrdf.boxes.render_on_grid)."""
    return render_on_grid(maps.detach().float().cpu(), grid).clamp(0, 1).numpy().astype(np.float32)


def _preview(pil: Image.Image) -> np.ndarray:
    scale = min(1.0, PREVIEW_SIDE / max(pil.size))
    if scale < 1.0:
        pil = pil.resize((max(1, round(pil.width * scale)), max(1, round(pil.height * scale))), Image.BILINEAR)
    return np.asarray(pil, dtype=np.uint8).copy()


def _open(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if isinstance(image, (str, Path, bytes, bytearray)):
        return load_image(image)
    raise InspectError(f"expected an image path, bytes or a PIL image, got {type(image).__name__}")


def _topk(logits: torch.Tensor, names: list[str]) -> list[tuple[str, float]]:
    probs = torch.softmax(logits.float(), dim=-1)
    p, idx = probs.topk(min(TOP_K, probs.numel()))
    return [(names[i], float(v)) for v, i in zip(p.tolist(), idx.tolist())]


def _box_list(box: torch.Tensor) -> list[float]:
    return [round(float(v), 2) for v in box.tolist()]


def _iou(a: torch.Tensor, gt: torch.Tensor | None) -> float | None:
    return None if gt is None else float(box_iou(a.view(1, 4), gt.view(1, 4))[0])


def _gt(gt_box) -> list[float] | None:
    if gt_box is None:
        return None
    try:
        vals = [float(v) for v in gt_box]
    except (TypeError, ValueError):
        raise InspectError(f"ground-truth box must be 4 numbers x1 y1 x2 y2, got {gt_box!r}") from None
    if len(vals) != 4 or not (vals[2] > vals[0] and vals[3] > vals[1]):
        raise InspectError(f"ground-truth box must be 4 numbers x1 y1 x2 y2 with x2 > x1, y2 > y1, got {gt_box!r}")
    return vals


def gate_values(gate, channels: int) -> np.ndarray | None:
    """The first image's applied gate as float32 (C,): a (B, C, 1, 1) tensor's first row, a constant repeated;
    None: no gate."""
    if gate is None:
        return None
    if isinstance(gate, torch.Tensor):
        return gate[0].detach().float().flatten().cpu().numpy()
    return np.full(channels, float(gate), dtype=np.float32)


def _map_views(model, maps: torch.Tensor, keys, image_np: np.ndarray, tau: float, gt: torch.Tensor | None,
               hw: tuple[int, int]) -> list[MapView]:
    """Layer4 maps (n, h4, w4) in [0, 1] -> MapViews on the paper's grid, boxes by the paper's rule."""
    grid = model.paper_grid(hw)
    boxes = model.paper_boxes(maps.float().cpu(), hw, tau)
    pixels = on_grid(maps, grid)
    return [MapView(k, pixels[i], overlay(image_np, pixels[i]), _box_list(boxes[i]), _iou(boxes[i], gt))
            for i, k in enumerate(keys)]


def suppression_view(model, record, image_np: np.ndarray, tau: float, gt: torch.Tensor | None,
                     hw: tuple[int, int], top_k: int = TOP_CHANNELS) -> SuppressionView:
    """X, X' and X - X' of one image (a flrdf.suppression.SuppressionRecord) as Inspect shows them."""
    x, xs = record.x[:1].float(), record.xs[:1].float()
    maps = torch.cat([model.channel_map(x), model.channel_map(xs), model.channel_map(x - xs)])
    before, after, removed = _map_views(model, maps, ("before", "after", "removed"), image_np, tau, gt, hw)
    block = model.suppression
    gates = gate_values(record.gate, x.shape[1])
    channels = []
    if gates is not None:
        idx, cuts = most_suppressed(x[0], torch.from_numpy(gates), top_k)
        grid = model.paper_grid(hw)
        peaks = x[0].flatten(1).amax(dim=1)
        rel = (x[0, idx] / peaks[idx].clamp_min(1e-12)[:, None, None]).clamp(0, 1)
        pixels = on_grid(rel, grid)
        for j, c in enumerate(idx.tolist()):
            channels.append(ChannelView(int(c), round(float(gates[c]), 4), round(float(peaks[c]), 4),
                                        round(float(cuts[j]), 4), overlay(image_np, pixels[j])))
    return SuppressionView(block.mode, block.delta if block.mode == "fixed" else None, before, after, removed,
                           gates, channels, int(model.backbone.stride))


def whatif_view(model, x: torch.Tensor, zoom: dict, whatif: WhatIf, names: list[str], image_np: np.ndarray,
                tau: float, n: int, gt: torch.Tensor | None) -> WhatIfView:
    """The model rerun with ``whatif``'s gate in place of its own (the crop too, where the box comes from X')."""
    t0 = time.perf_counter()
    with model_lock(model), torch.inference_mode(), model.without_refinement(), \
            suppression_whatif(model, whatif), capture_suppression(model) as seen:
        out = model(x, tau=tau, jigsaw_n=n, with_jigsaw=False, **zoom)
    rec = seen[0]
    (after,) = _map_views(model, model.channel_map(rec.xs[:1]), ("whatif",), image_np, tau, gt, x.shape[-2:])
    g = gate_values(rec.gate, rec.x.shape[1])
    top5 = {"raw": _topk(out.logits_raw[0], names), "combined": _topk(out.logits[0], names)}
    return WhatIfView(whatif, after, None if g is None else round(float(g.mean()), 4), top5,
                      round((time.perf_counter() - t0) * 1000, 2))


# ---------------------------------------------------------------- the request
def inspect_image(loaded: LoadedModel, image, tau: float | None = None, jigsaw_n: int | None = None,
                  target: int | None = None, cam_methods=("gradcam",), gt_box=None, *, seed: int = 0,
                  device: str | torch.device | None = None, whatif: WhatIf | None = None) -> InspectResult:
    """Everything the Inspect tab shows for one image.

    ``image``: path, bytes or PIL image. ``tau``/``jigsaw_n``: default to the
    model's config. ``target``: class id the CAMs explain (default: the
    combined prediction). ``gt_box``: x1 y1 x2 y2 in the original image's pixels.
    ``seed`` fixes the jigsaw permutation. ``whatif``: a counterfactual suppression
    gate, reported beside the model's own (``InspectResult.whatif``; None or the model's
    own gate: no rerun). Raises ``InspectError`` (or the
    data layer's ``ImageLoadError``, also a ValueError) with a readable message.
    """
    times: dict[str, float] = {}
    t_all = t0 = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t0
        now = time.perf_counter()
        times[name] = (now - t0) * 1000
        t0 = now

    model, cfg, names = loaded.model, loaded.config, loaded.class_names
    size, resize = cfg.data.image_size, cfg.data.resize
    tau = float(cfg.model.tau if tau is None else tau)
    if not 0.0 <= tau <= 1.0:
        raise InspectError(f"tau must lie in [0, 1], got {tau}")
    n = int(cfg.model.jigsaw_n if jigsaw_n is None else jigsaw_n)
    if n not in valid_grids(size):
        raise InspectError(f"jigsaw grid n={n} does not tile the {size}x{size} input; "
                           f"choose one of {valid_grids(size)}")
    if target is not None and not 0 <= int(target) < len(names):
        raise InspectError(f"target class {target} is out of range: "
                           f"this model has {len(names)} classes (0..{len(names) - 1})")
    methods = check_methods(cam_methods or [])
    gt = _gt(gt_box)
    if whatif is not None and not isinstance(whatif, WhatIf):
        raise InspectError(f"whatif must be a flrdf.suppression.WhatIf, got {type(whatif).__name__}")
    if whatif is not None and model.suppression.mode == "none":
        try:  # the what-if's own refusal (a scale needs a gate), before any forward
            whatif_gate(None, whatif)
        except ValueError as exc:
            raise InspectError(str(exc)) from None
    device = torch.device(device) if device is not None else next(model.parameters()).device

    try:
        pil = _open(image)
    except ImageLoadError:
        raise
    except (OSError, ValueError) as exc:
        raise InspectError(f"cannot read the image: {exc}") from None
    lap("decode")

    source_size = int(cfg.data.source_size or 0)
    transform = build_transform(False, resize, size, source_size=source_size)
    tensor, gt_in, source = transform.views(pil, gt)
    x = tensor.unsqueeze(0).to(device)
    zoom = {} if source is None else {"source": source.unsqueeze(0).to(device)}
    perms = random_permutations(1, n * n, generator=torch.Generator().manual_seed(int(seed)))
    lap("preprocess")

    refines = bool(model.refines)
    with model_lock(model), torch.inference_mode(), capture_suppression(model) as seen, model.without_refinement():
        out = model(x, tau=tau, jigsaw_n=n, with_jigsaw=True, perms=perms, **zoom)
    # The model's GrabCut refinement (OpenCV: it releases the GIL) runs on another core while the CAMs and the
    # suppression view are computed; the same call as inside the model's forward, so the same box.
    refined_box = _refiner().submit(model.refine, zoom.get("source", x), out.loc_map, out.map_boxes,
                                    tuple(x.shape[-2:]), tau) if refines else None
    lap("flrdf forward")
    record = seen[0] if seen else None

    logits = {"raw": out.logits_raw[0], "object": out.logits_object, "jigsaw": out.logits_jigsaw,
              "combined": out.logits[0]}
    top5 = {b: _topk(v if b in ("raw", "combined") else v[0], names) for b, v in logits.items() if v is not None}
    predicted = int(out.logits[0].argmax())
    tgt = predicted if target is None else int(target)

    cam_ms: dict[str, float] = {}
    maps = compute_cams(model, x, [tgt], methods, timings=cam_ms) if methods else {}
    if methods:
        times["cam pass"] = cam_ms.pop("pass")
        times["cam methods"] = sum(cam_ms.values())
        t0 = time.perf_counter()
    grid = box_grid(model, x.shape[-2:])  # FLRDF's own box grid, as loc-eval
    boxes = cam_boxes(maps, tau, grid)
    if methods:
        lap("cam boxes")

    orig_size = pil.size
    image_np = to_uint8(x)[0]
    hw = tuple(x.shape[-2:])
    loc, plain = on_grid(torch.cat([out.loc_map[:1], out.plain_map[:1]]).cpu(), grid)
    pred_box = None  # FLRDF's reported box: set once the refinement (if any) has come back
    map_box = (out.map_boxes if out.map_boxes is not None else out.boxes)[0].cpu()
    refined = applied(model.cfg.box_refine) != "none"
    gt_t = None if gt_in is None else gt_in.view(4)
    plain_box = boxes_from_maps(out.plain_map[:1].float().cpu(), tau, hw, upsample=model.cfg.map_upsample,
                                normalize=False, grid=grid)[0]
    cams = []
    for key in methods:
        b = boxes[key][0]
        cam = on_grid(to_grid(maps[key][:1], grid), grid)[0]  # the grid its box was found on, drawn as boxes are
        cams.append(CamView(key, METHODS[key].label, cam, overlay(image_np, cam), _box_list(b),
                            _box_list(box_to_image(b, orig_size, resize, size)), _iou(b, gt_t), cam_ms[key]))
    suppression = None if record is None else suppression_view(model, record, image_np, tau, gt_t, hw)
    gate = None if suppression is None or suppression.gates is None else gate_stats(torch.from_numpy(suppression.gates))
    lap("suppression view")
    what = None
    if whatif is not None and whatif.active:
        what = whatif_view(model, x, zoom, whatif, names, image_np, tau, n, gt_t)
        lap("what-if forward")
    if refined_box is not None:
        out.boxes = refined_box.result()
        lap("refinement (waited for)")
    pred_box = out.boxes[0].cpu()
    result = InspectResult(
        image=image_np,
        preview=_preview(pil),
        original_size=orig_size,
        box=_box_list(pred_box),
        box_original=_box_list(box_to_image(pred_box, orig_size, resize, size)),
        loc_map=loc,
        plain_map=plain,
        loc_overlay=overlay(image_np, loc),
        plain_overlay=overlay(image_np, plain),
        object_image=None if out.object_images is None else to_uint8(out.object_images)[0],
        jigsaw_image=None if out.jigsaw_images is None else to_uint8(out.jigsaw_images)[0],
        top5=top5,
        predicted=predicted,
        target=tgt,
        class_names=list(names),
        tau=tau,
        jigsaw_n=n,
        seed=int(seed),
        permutation=perms[0].tolist() if out.jigsaw_images is not None and n > 1 else None,
        gt_box=None if gt_t is None else _box_list(gt_t),
        gt_box_original=gt,
        iou=_iou(pred_box, gt_t),
        cams=cams,
        gate=gate,
        crop_source_px=source_size,
        crop_detail=round(transform.source_detail(orig_size), 4) if source_size else None,
        map_source=model.map_source,
        box_refine=applied(model.cfg.box_refine),
        map_box=_box_list(map_box) if refined else None,
        map_iou=_iou(map_box, gt_t) if refined else None,
        uses_paper_map=bool(model.uses_paper_map),
        box_source=model.box_source,
        loc_layer=model.cfg.loc_layer,
        plain_box=_box_list(plain_box),
        plain_iou=_iou(plain_box, gt_t),
        suppression=suppression,
        whatif=what,
    )
    lap("render")
    times["total"] = (time.perf_counter() - t_all) * 1000
    result.timings_ms = {k: round(v, 2) for k, v in times.items()}
    return result
