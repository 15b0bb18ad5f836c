"""Zoom with real detail: the object crop cut from a higher-resolution source of the same view.

The FL module finds the box on the network input (``h x w`` px). When the loader
also yields the *source* - the same augmented view rendered at ``S_h x S_w`` px from
the original pixels (``data.source_size``, ``flrdf.data.transforms``) - the box is
scaled to source pixels and cut from there with ``torchvision.ops.roi_align``
(batched, no per-sample loop), so the object and jigsaw branches see detail the
input no longer has (MMAL-Net and NTS-Net zoom the same way). The raw branch is
untouched. Pure functions; no gradient flows through the crop (as in FLRDF).
"""

from __future__ import annotations

import torch
from torchvision.ops import roi_align


def check_source(images: torch.Tensor, source: torch.Tensor) -> None:
    """A source must be a (B, C, S_h, S_w) batch matching the input's B and C, at least as large."""
    if source.dim() != 4:
        raise ValueError(f"source must be a (B, C, H, W) batch, got shape {tuple(source.shape)}")
    if source.shape[:2] != images.shape[:2]:
        raise ValueError(f"source batch/channels {tuple(source.shape[:2])} do not match the input's "
                         f"{tuple(images.shape[:2])}")
    if source.shape[-2] < images.shape[-2] or source.shape[-1] < images.shape[-1]:
        raise ValueError(f"source ({source.shape[-2]}x{source.shape[-1]}) is smaller than the input "
                         f"({images.shape[-2]}x{images.shape[-1]}): it must render the same view at a higher resolution")


def source_boxes(boxes: torch.Tensor, input_hw: tuple[int, int], source_hw: tuple[int, int]) -> torch.Tensor:
    """(B, 4) boxes in input pixels -> the same boxes in source pixels (the source shows the same
    view, so this is a pure per-axis scale of edge coordinates)."""
    sy = source_hw[0] / input_hw[0]
    sx = source_hw[1] / input_hw[1]
    return boxes * boxes.new_tensor([sx, sy, sx, sy])


def crop_from_source(source: torch.Tensor, boxes: torch.Tensor, input_hw: tuple[int, int],
                     out_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """Cut each input-pixel box out of its source image and resample it to ``out_hw`` (default:
    the input size). ``aligned=True`` with adaptive sampling (``sampling_ratio=0``): where the box
    covers fewer source pixels than the output it is bilinear upsampling (as the input-path crop);
    where it covers more, each output pixel averages ceil(box/out) x ceil(box/out) bilinear samples,
    so a detailed source is downsampled without aliasing."""
    b = source.shape[0]
    out_hw = out_hw or tuple(input_hw)
    scaled = source_boxes(boxes.to(source.device).float(), input_hw, tuple(source.shape[-2:]))
    idx = torch.arange(b, device=source.device, dtype=scaled.dtype).unsqueeze(1)
    rois = torch.cat([idx, scaled], dim=1).to(source.dtype)
    return roi_align(source, rois, output_size=out_hw, spatial_scale=1.0, sampling_ratio=0, aligned=True)
