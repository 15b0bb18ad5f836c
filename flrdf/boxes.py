"""Maps to boxes, boxes to crops, and box arithmetic - batched pure functions.

Conventions: a box is (x1, y1, x2, y2) in continuous pixel coordinates of the
image it belongs to (pixel column j spans [j, j+1)), so a box covering the
whole H x W image is (0, 0, W, H). Maps are (B, h, w) tensors.

Geometry of a feature map (docs/GEOMETRY.md): in a ResNet of output stride s,
feature cell j's receptive field is centred on pixel j*s + c (c measured by
scripts/measure_rf_centre.py, :data:`RF_CENTRE`), not on the middle of the
tile [j*s, (j+1)*s). :func:`box_grid` is the one place that turns a backbone's
stride into a :class:`BoxGrid` - the cell -> pixel map every map -> box path
uses (FLRDF's map, the plain map, every CAM; the model, loc-eval and Inspect).
A thresholded region of cells [j1..j2] spans pixels
[centre(j1) - p/2, centre(j2) + p/2] (p: the grid's cell pitch), clipped to the
image. Without a grid (``grid=None``) a map's cells tile the image
(cell (i, j) covers [j*W/w, (j+1)*W/w) x [i*H/h, (i+1)*H/h)), the old rule.

Connected components run on the map's own device as an iterative 8-connected
max-label propagation, so the localization step has no per-sample Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align


# Receptive-field centre offset c (pixels, continuous coordinates) per output stride: cell j's
# centre is j*s + c. Measured on interior cells (docs/results/rf_centre.json): resnet18/50, random
# init and the demo's trained resnet18, all within +-0.1 px of the theory value 0.5 (every ResNet
# down-sampling layer centres output i on input 2i, so cell j sits on pixel j*s).
RF_CENTRE: dict[int, float] = {8: 0.5, 16: 0.5, 32: 0.5}


def rf_centre(stride: int) -> float:
    """The receptive-field centre offset c of a backbone with output ``stride`` (see :data:`RF_CENTRE`)."""
    return RF_CENTRE.get(int(stride), 0.5)


def feature_size(n: int, stride: int) -> int:
    """Cells along one side of a ResNet map for an ``n``-pixel input: each stride-2 layer gives ceil(n/2)."""
    for _ in range(int(round(torch.log2(torch.tensor(float(stride))).item()))):
        n = -(-n // 2)
    return max(1, n)


@dataclass(frozen=True)
class BoxGrid:
    """The cell -> pixel map of a (gh, gw) grid a map is thresholded on.

    Cell k's centre lies at pixel ``origin + k * pitch`` (both axes); a region of
    cells [k1..k2] spans [centre(k1) - pitch/2, centre(k2) + pitch/2], clipped
    to the image (``image_hw``).
    """
    shape: tuple[int, int]       # (gh, gw) cells
    pitch: float                 # pixels between neighbouring cell centres
    origin: float                # pixel coordinate of cell 0's centre
    image_hw: tuple[int, int]    # (H, W) of the image the boxes belong to

    def centres(self, n: int) -> torch.Tensor:
        return self.origin + self.pitch * torch.arange(n, dtype=torch.float32)


def box_grid(stride: int, image_hw: tuple[int, int], upsample: int = 1, cells: tuple[int, int] | None = None,
             centre: float | None = None) -> BoxGrid:
    """The grid of a backbone map with output ``stride`` on an ``image_hw`` input, upsampled by ``upsample``.

    Bilinear upsampling by u (align_corners=False) puts upsampled cell k on feature
    coordinate (k + 0.5)/u - 0.5, i.e. pixel c - s/2 + s/(2u) + k*s/u. ``cells`` (the map's (h, w)) and
    ``centre`` (c) default to a ResNet's (:func:`feature_size`, :func:`rf_centre`); other backbones pass
    their own (a patch embedding's cell j is centred on j*s + s/2).
    """
    up = max(1, int(upsample))
    s = float(stride)
    h, w = cells or (feature_size(image_hw[0], stride), feature_size(image_hw[1], stride))
    c = rf_centre(stride) if centre is None else float(centre)
    return BoxGrid((h * up, w * up), s / up, c - s / 2 + s / (2 * up), (int(image_hw[0]), int(image_hw[1])))


def map_to_image(maps: torch.Tensor, grid: BoxGrid, out_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """Sample (B, h, w) maps on a :class:`BoxGrid` at every pixel of the grid's image resampled to
    ``out_hw`` (default: the image itself): (B, H', W'), bilinear between cell centres, constant
    beyond the outermost centres. Unlike a plain resize, a cell's value lands on its
    receptive-field centre, where :func:`mask_to_boxes` puts it."""
    if maps.dim() != 3:
        raise ValueError(f"maps must be (B, h, w), got shape {tuple(maps.shape)}")
    if tuple(grid.shape) != tuple(maps.shape[1:]):
        raise ValueError(f"map of {tuple(maps.shape[1:])} cells does not match its box grid {grid.shape}")
    img_h, img_w = grid.image_hw
    out_h, out_w = out_hw or (img_h, img_w)

    def axis(n_out: int, n_img: int, n_cells: int) -> torch.Tensor:
        # output pixel p's centre, in image pixels, then in cells; normalised for align_corners=True
        x = (torch.arange(n_out, dtype=torch.float32, device=maps.device) + 0.5) * (n_img / n_out)
        u = (x - grid.origin) / grid.pitch
        return u * (2.0 / (n_cells - 1)) - 1.0 if n_cells > 1 else torch.zeros_like(u)

    gy = axis(out_h, img_h, maps.shape[1])
    gx = axis(out_w, img_w, maps.shape[2])
    coords = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)  # (H', W', 2) as (x, y)
    coords = coords.unsqueeze(0).expand(maps.shape[0], -1, -1, -1)
    out = F.grid_sample(maps.float().unsqueeze(1), coords, mode="bilinear", padding_mode="border", align_corners=True)
    return out.squeeze(1)


def render_on_grid(maps: torch.Tensor, grid: BoxGrid, out_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """(B, h, w) maps -> (B, H', W') pixels with the geometry their boxes use: a map coarser than ``grid``
    (a grid with ``map_upsample`` > 1) is first upsampled bilinearly to it, as :func:`boxes_from_maps` does,
    then every cell is drawn on its receptive-field centre (:func:`map_to_image`). Every overlay of a map
    (Inspect's FLRDF maps and CAMs) goes through here, so a peak sits inside the box cell it makes."""
    m = maps.detach().float()
    if tuple(m.shape[1:]) != tuple(grid.shape):
        m = F.interpolate(m.unsqueeze(1), size=tuple(grid.shape), mode="bilinear", align_corners=False).squeeze(1)
    return map_to_image(m, grid, out_hw)


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


def mask_to_boxes(mask: torch.Tensor, out_hw: tuple[int, int], grid: BoxGrid | None = None) -> torch.Tensor:
    """Bounding boxes (B, 4) of boolean (B, h, w) masks in an (H, W) image's pixels.

    With ``grid`` the cells map to pixels by their receptive-field centres
    (:class:`BoxGrid`); without, the cells tile the image. An empty mask gives the whole image.
    """
    if grid is not None and tuple(grid.shape) != tuple(mask.shape[1:]):
        raise ValueError(f"map of {tuple(mask.shape[1:])} cells does not match its box grid {grid.shape}")
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
    if grid is None:
        boxes = torch.stack([x1 * (out_w / w), y1 * (out_h / h), x2 * (out_w / w), y2 * (out_h / h)], dim=1).float()
    else:
        # region [k1, k2) of cells -> [centre(k1) - p/2, centre(k2 - 1) + p/2] = origin - p/2 + p*[k1, k2)
        lo = grid.origin - grid.pitch / 2
        boxes = (lo + grid.pitch * torch.stack([x1, y1, x2, y2], dim=1).float())
        limit = boxes.new_tensor([out_w, out_h, out_w, out_h])
        boxes = torch.minimum(boxes.clamp_min(0), limit)
    empty = ~rows.any(dim=1)
    whole = torch.tensor([0.0, 0.0, float(out_w), float(out_h)], device=mask.device)
    return torch.where(empty[:, None], whole.expand(b, 4), boxes)


def boxes_from_maps(
    maps: torch.Tensor, tau: float, out_hw: tuple[int, int], upsample: int = 1, normalize: bool = True,
    grid: BoxGrid | None = None,
) -> torch.Tensor:
    """Map -> box: (optionally) min-max normalise, upsample bilinearly by ``upsample``,
    threshold at ``tau``, keep the largest connected region, take its bounding box in
    (H, W) pixel coordinates. Empty or constant maps give the whole image.

    ``grid``: the cell -> pixel map of the map *after* upsampling (:func:`box_grid`
    with the same ``upsample``); None: the cells tile the image."""
    if maps.dim() != 3:
        raise ValueError(f"maps must be (B, h, w), got shape {tuple(maps.shape)}")
    m = normalize_maps(maps) if normalize else maps.float()
    if upsample > 1:
        size = (m.shape[1] * upsample, m.shape[2] * upsample)
        m = F.interpolate(m.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)
    mask = m >= tau
    if normalize:
        mask &= m > 0  # a constant (all-zero) map has no foreground
    return mask_to_boxes(largest_component(mask), out_hw, grid)


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
