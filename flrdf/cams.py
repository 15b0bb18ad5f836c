"""CAM baselines on FLRDF's raw branch, computed with the grad-cam library.

The Inspect tab shows them beside FLRDF's own localization map, and the
evaluator scores their boxes against FLRDF's at the same tau. The CAM model is
:class:`RawBranch` (backbone -> suppression -> GAP -> ``heads['raw']``), target
layer ``backbone.cam_target`` (ResNet: layer4; a timm model: its last feature stage, with grad-cam's
``reshape_transform`` for transformer tokens and channels-last stages).

Every grad-cam object hooks the model and runs its own forward and backward.
The methods marked ``shared`` only read the target layer's activations and
gradients, so :func:`compute_cams` runs ONE hooked forward+backward
(``ActivationsAndGradients``), releases the hooks, then lets each method's own
``compute_cam_per_layer`` / ``aggregate_multi_layers`` read those arrays - the
same code path as the method's ``__call__``, so outputs are identical.
Score-CAM reuses the activations too but needs extra forward passes by nature.

Hooks are module-global: while a pass is hooked, any other forward of the same
model would be recorded too. :func:`model_lock` serialises that per model.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from pytorch_grad_cam import (
    ActivationsAndGradients,
    EigenCAM,
    EigenGradCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from flrdf.boxes import BoxGrid, boxes_from_maps


@dataclass(frozen=True)
class CamMethod:
    key: str
    label: str
    cls: type[BaseCAM]
    shared: bool      # needs only the one hooked forward+backward
    slow: bool = False


METHODS: dict[str, CamMethod] = {m.key: m for m in (
    CamMethod("gradcam", "Grad-CAM", GradCAM, True),
    CamMethod("gradcam++", "Grad-CAM++", GradCAMPlusPlus, True),
    CamMethod("xgradcam", "XGrad-CAM", XGradCAM, True),
    CamMethod("layercam", "LayerCAM", LayerCAM, True),
    CamMethod("eigencam", "EigenCAM", EigenCAM, True),
    CamMethod("hirescam", "HiResCAM", HiResCAM, True),
    CamMethod("eigengradcam", "EigenGrad-CAM", EigenGradCAM, True),
    CamMethod("scorecam", "Score-CAM", ScoreCAM, False, slow=True),
)}
DEFAULT_METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "xgradcam", "layercam", "eigencam")
SCORECAM_BATCH = 64  # masked images per Score-CAM forward


class RawBranch(nn.Module):
    """FLRDF's raw-branch classifier as a plain ``images -> logits`` module for grad-cam."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def target_layer(self) -> nn.Module:
        """The module whose output is layer4 (the backbone's last stage)."""
        return self.model.backbone.cam_target

    @property
    def reshape_transform(self):
        """grad-cam's reshape_transform: None for CNNs; ViT tokens / Swin's NHWC to (B, C, h, w)."""
        return self.model.backbone.cam_reshape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, suppressed = self.model.raw_features(x)
        return self.model.heads["raw"](self.model.pool(suppressed))


# ---------------------------------------------------------------- per-model lock
_locks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The re-entrant lock that serialises hooked passes (and forwards beside them) on ``model``."""
    with _locks_guard:
        lock = _locks.get(model)
        if lock is None:
            lock = _locks[model] = threading.RLock()
        return lock


def check_methods(methods) -> list[str]:
    """Validate method keys (case-insensitive), keep order, drop duplicates."""
    out: list[str] = []
    for m in methods:
        key = str(m).lower()
        if key not in METHODS:
            raise ValueError(f"unknown CAM method {m!r}; choose from {list(METHODS)}")
        if key not in out:
            out.append(key)
    return out


def _targets(targets, batch: int) -> list[ClassifierOutputTarget]:
    ids = [int(t) for t in (targets.tolist() if isinstance(targets, torch.Tensor) else targets)]
    if len(ids) != batch:
        raise ValueError(f"need one target class per image: {len(ids)} targets for {batch} images")
    return [ClassifierOutputTarget(t) for t in ids]


class _Recorded:
    """Stands in for a CAM object's ``activations_and_grads``: the arrays of the shared pass."""

    def __init__(self, activations: list[torch.Tensor], gradients: list[torch.Tensor]):
        self.activations, self.gradients = activations, gradients

    def release(self) -> None:  # nothing hooked; BaseCAM.__del__ / __exit__ call this
        pass


def hooked_pass(wrapper: RawBranch, images: torch.Tensor, targets: list) -> _Recorded:
    """One forward + backward with grad-cam's hooks on the target layer; hooks released on return.

    The backward stops at the target layer (``inputs=``): parameter gradients are
    neither computed nor left on the model. The target layer's gradient is the
    same as in a full ``loss.backward()``.
    """
    layer = wrapper.target_layer
    captured: list[torch.Tensor] = []
    aag = ActivationsAndGradients(wrapper, [layer], wrapper.reshape_transform, detach=True)
    keep = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.enable_grad():
            x = images.detach().requires_grad_(True)  # a graph exists even for a frozen model
            outputs = aag(x)
            loss = sum(t(o) for t, o in zip(targets, outputs))
            loss.backward(inputs=captured)
        return _Recorded(list(aag.activations), list(aag.gradients))
    finally:
        keep.remove()
        aag.release()
        captured.clear()


def _method_maps(method: CamMethod, wrapper: RawBranch, images: torch.Tensor, targets: list,
                 recorded: _Recorded, at_grid: bool = False) -> np.ndarray:
    cam = method.cls(wrapper, [wrapper.target_layer], reshape_transform=wrapper.reshape_transform)
    cam.activations_and_grads.release()  # its own hooks: never used
    cam.activations_and_grads = recorded
    if at_grid:  # the library's scale_cam_image then min-max normalises without resizing
        cam.get_target_width_height = lambda _input: None
    if method.key == "scorecam":
        cam.batch_size = SCORECAM_BATCH
    return cam.aggregate_multi_layers(cam.compute_cam_per_layer(images, targets, False))


def compute_cams(model: nn.Module, images: torch.Tensor, targets, methods=DEFAULT_METHODS,
                 timings: dict[str, float] | None = None, at_grid: bool = False) -> dict[str, np.ndarray]:
    """CAMs of ``methods`` for each image's target class: ``{method: float32 (B, H, W) in [0, 1]}``.

    ``model`` is an FLRDF (eval mode), ``images`` a normalised (B, 3, H, W) batch on
    the model's device, ``targets`` B class ids. One hooked forward+backward
    serves every method. ``timings`` (optional) receives milliseconds per stage:
    ``pass`` and one entry per method. ``at_grid``: each CAM at the target layer's
    resolution (B, h, w), the method's own map (ReLU, min-max) before grad-cam
    upsamples it to the input - what MaxBoxAccV2 resizes to its frame.
    """
    keys = check_methods(methods)
    if not keys:
        return {}
    wrapper = RawBranch(model)
    tgts = _targets(targets, images.shape[0])
    with model_lock(model):
        t0 = time.perf_counter()
        recorded = hooked_pass(wrapper, images, tgts)
        if timings is not None:
            timings["pass"] = (time.perf_counter() - t0) * 1000
        out = {}
        for key in keys:
            t0 = time.perf_counter()
            out[key] = _method_maps(METHODS[key], wrapper, images, tgts, recorded, at_grid)
            if timings is not None:
                timings[key] = (time.perf_counter() - t0) * 1000
    return out


def standalone_cam(model: nn.Module, images: torch.Tensor, targets, method: str) -> np.ndarray:
    """The library's own way: one CAM object, its own hooked pass, hooks released. For checks."""
    spec = METHODS[check_methods([method])[0]]
    wrapper = RawBranch(model)
    with model_lock(model), spec.cls(wrapper, [wrapper.target_layer],
                                        reshape_transform=wrapper.reshape_transform) as cam:
        if spec.key == "scorecam":
            cam.batch_size = SCORECAM_BATCH
        out = cam(images, _targets(targets, images.shape[0]))
    model.zero_grad(set_to_none=True)  # the library's backward leaves parameter gradients behind
    return out


def to_grid(maps: np.ndarray, grid: BoxGrid) -> torch.Tensor:
    """Resample input-size (B, H, W) CAMs onto a box grid: area averaging when shrinking.

    grad-cam upsamples the layer4 CAM to the input with half-pixel centres, so grid
    cell k of a (h*u)-cell grid reads feature coordinate (k + 0.5)/u - 0.5 - the same
    cell as FLRDF's bilinearly upsampled map; the grid's cell -> pixel map then applies.
    """
    gh, gw = grid.shape
    if maps.shape[-2:] != (gh, gw):
        shrink = gh <= maps.shape[-2] and gw <= maps.shape[-1]
        interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        maps = np.stack([cv2.resize(np.asarray(m, dtype=np.float32), (gw, gh), interpolation=interp) for m in maps])
    return torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))


def cam_boxes(maps: dict[str, np.ndarray], tau: float, grid: BoxGrid) -> dict[str, torch.Tensor]:
    """One box per map and image, ``{method: (B, 4) x1 y1 x2 y2}`` in input pixels.

    The same rule as FLRDF's own box (flrdf.boxes.boxes_from_maps): min-max
    normalise, threshold at ``tau``, largest connected region; all methods in one
    batch. ``grid``: the model's box grid (:func:`box_grid`) - the maps are first
    resampled to it, so every method is thresholded at the same resolution as
    FLRDF's map and its cells map to pixels by their receptive-field centres.
    """
    if not isinstance(grid, BoxGrid):
        raise TypeError(f"cam_boxes needs the model's BoxGrid (flrdf.cams.box_grid), got {type(grid).__name__}")
    if not maps:
        return {}
    keys = list(maps)
    stacked = to_grid(np.concatenate([maps[k] for k in keys], axis=0), grid)
    boxes = boxes_from_maps(stacked, tau, grid.image_hw, upsample=1, normalize=True, grid=grid)
    return dict(zip(keys, boxes.split(maps[keys[0]].shape[0])))


def box_grid(model: nn.Module, image_hw: tuple[int, int]) -> BoxGrid:
    """The one grid every map of ``model`` is boxed on (FLRDF's map, the plain map, each CAM):
    layer4 cells at the backbone's real stride (16 or 32) x ``map_upsample``, cells mapped to
    pixels by their receptive-field centres (flrdf.boxes.box_grid)."""
    return model.box_grid((int(image_hw[0]), int(image_hw[1])))
