"""Maps to boxes, boxes to crops, and box arithmetic - batched pure functions.

Conventions: a box is (x1, y1, x2, y2) in continuous pixel coordinates of the
image it belongs to (pixel column j spans [j, j+1)), so a box covering the
whole H x W image is (0, 0, W, H). Maps are (B, h, w) tensors; a map cell
(i, j) covers pixels [j*W/w, (j+1)*W/w) x [i*H/h, (i+1)*H/h).

Connected components run on the map's own device as an iterative 8-connected
max-label propagation, so the localization step has no per-sample Python loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align


def normalize_maps(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Min-max normalise each (h, w) map of a (B, h, w) batch to [0, 1]; a constant map becomes zeros."""
    flat = maps.flatten(1).float()
    lo = flat.amin(dim=1, keepdim=True)
    hi = flat.amax(dim=1, keepdim=True)
    span = hi - lo
    out = torch.where(span > eps, (flat - lo) / span.clamp_min(eps), torch.zeros_like(flat))
    return out.view_as(maps)


def largest_component(mask: torch.Tensor, max_iters: int | None = None) -> torch.Tensor:
    """Keep only the largest 8-connected region of each (h, w) boolean mask in a (B, h, w) batch.

    Ties go to the region containing the highest flat index. Empty masks stay empty.
    """
    if mask.dim() != 3:
        raise ValueError(f"mask must be (B, h, w), got shape {tuple(mask.shape)}")
    b, h, w = mask.shape
    if mask.numel() == 0:
        return mask.clone()
    fmask = mask.float()
    # Every foreground pixel starts with a unique positive label; labels spread to 8-neighbours by max-pooling.
    ids = torch.arange(1, h * w + 1, device=mask.device, dtype=torch.float32).view(1, h, w)
    labels = (ids * fmask).unsqueeze(1)
    fmask4 = fmask.unsqueeze(1)
    limit = max_iters if max_iters is not None else h * w
    check_every = max(1, min(h, w) // 2)
    for it in range(limit):
        new = F.max_pool2d(labels, kernel_size=3, stride=1, padding=1) * fmask4
        done_check = (it + 1) % check_every == 0
        if done_check and torch.equal(new, labels):
            break
        labels = new
    labels = labels.squeeze(1).long().flatten(1)  # (B, h*w), 0 = background
    counts = torch.zeros(b, h * w + 1, device=mask.device, dtype=torch.float32)
    counts.scatter_add_(1, labels, torch.ones_like(labels, dtype=torch.float32))
    counts[:, 0] = 0
    best = counts.argmax(dim=1, keepdim=True)
    keep = (labels == best) & (labels > 0)
    return keep.view(b, h, w)


def mask_to_boxes(mask: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """Bounding boxes (B, 4) of boolean (B, h, w) masks, scaled exactly to an (H, W) image.

    An empty mask gives the whole image.
    """
    b, h, w = mask.shape
    out_h, out_w = out_hw
    rows = mask.any(dim=2)  # (B, h)
    cols = mask.any(dim=1)  # (B, w)
    r_idx = torch.arange(h, device=mask.device)
    c_idx = torch.arange(w, device=mask.device)
    big = max(h, w) + 1
    y1 = torch.where(rows, r_idx, big).amin(dim=1)
    y2 = torch.where(rows, r_idx, -1).amax(dim=1) + 1
    x1 = torch.where(cols, c_idx, big).amin(dim=1)
    x2 = torch.where(cols, c_idx, -1).amax(dim=1) + 1
    boxes = torch.stack([x1 * (out_w / w), y1 * (out_h / h), x2 * (out_w / w), y2 * (out_h / h)], dim=1).float()
    empty = ~rows.any(dim=1)
    whole = torch.tensor([0.0, 0.0, float(out_w), float(out_h)], device=mask.device)
    return torch.where(empty[:, None], whole.expand(b, 4), boxes)


def boxes_from_maps(
    maps: torch.Tensor, tau: float, out_hw: tuple[int, int], upsample: int = 1, normalize: bool = True
) -> torch.Tensor:
    """Map -> box: (optionally) min-max normalise, upsample bilinearly by ``upsample``,
    threshold at ``tau``, keep the largest connected region, take its bounding box in
    (H, W) pixel coordinates. Empty or constant maps give the whole image."""
    if maps.dim() != 3:
        raise ValueError(f"maps must be (B, h, w), got shape {tuple(maps.shape)}")
    m = normalize_maps(maps) if normalize else maps.float()
    if upsample > 1:
        size = (m.shape[1] * upsample, m.shape[2] * upsample)
        m = F.interpolate(m.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)
    mask = m >= tau
    if normalize:
        mask &= m > 0  # a constant (all-zero) map has no foreground
    return mask_to_boxes(largest_component(mask), out_hw)


def crop_resize(images: torch.Tensor, boxes: torch.Tensor, out_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """Cut each box out of its image and resize it bilinearly to ``out_hw`` (default: the input size), batched."""
    b, _, h, w = images.shape
    out_hw = out_hw or (h, w)
    idx = torch.arange(b, device=images.device, dtype=boxes.dtype).unsqueeze(1)
    rois = torch.cat([idx, boxes.to(images.device)], dim=1).to(images.dtype)
    # aligned=True with one sample per bin is exactly bilinear resampling (align_corners=False) of the box.
    return roi_align(images, rois, output_size=out_hw, spatial_scale=1.0, sampling_ratio=1, aligned=True)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of matching rows of two (N, 4) box tensors (not the N x M matrix)."""
    a = a.float()
    b = b.float()
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    inter = (rb - lt).clamp_min(0).prod(dim=1)
    area_a = (a[:, 2:] - a[:, :2]).clamp_min(0).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).clamp_min(0).prod(dim=1)
    union = area_a + area_b - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(union))


def scale_boxes(boxes: torch.Tensor, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> torch.Tensor:
    """Rescale boxes from an (H, W) image to an (H', W') image."""
    sy = to_hw[0] / from_hw[0]
    sx = to_hw[1] / from_hw[1]
    return boxes * boxes.new_tensor([sx, sy, sx, sy])


def centre_boxes(n: int, hw: tuple[int, int], fraction: float = 0.5) -> torch.Tensor:
    """The 'know nothing' baseline: a centred box covering ``fraction`` of each side."""
    h, w = hw
    m = (1 - fraction) / 2
    return torch.tensor([[w * m, h * m, w * (1 - m), h * (1 - m)]], dtype=torch.float32).repeat(n, 1)


def box_to_image(box: torch.Tensor, image_wh: tuple[int, int], resize: int, crop: int) -> torch.Tensor:
    """Map boxes from the test transform's output (square resize to ``resize``, centre crop
    ``crop``) back to the original image's pixel coordinates, clipped to the image."""
    w, h = image_wh
    offset = int(round((resize - crop) / 2.0))
    b = box.float() + offset
    b = b * b.new_tensor([w / resize, h / resize, w / resize, h / resize])
    return torch.stack([b[..., 0].clamp(0, w), b[..., 1].clamp(0, h), b[..., 2].clamp(0, w), b[..., 3].clamp(0, h)], -1)
