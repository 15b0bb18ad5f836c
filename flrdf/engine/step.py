"""One optimisation step and the device/precision setup it runs under.

Shared by the training loop and the benchmark so both measure the same thing:
AMP on CUDA (bf16 where supported, else fp16 with a gradient scaler),
channels_last inputs, no host synchronisation inside the step.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from flrdf.config import LossConfig
from flrdf.losses import flrdf_loss


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but CUDA is not available on this machine")
    return device


def default_workers() -> int:
    return max(0, min(8, (os.cpu_count() or 1) - 1))


@dataclass
class Precision:
    device: torch.device
    dtype: torch.dtype | None          # autocast dtype, None = full precision
    scaler: torch.amp.GradScaler | None
    channels_last: bool

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        return images.contiguous(memory_format=torch.channels_last) if self.channels_last else images

    def describe(self) -> str:
        return f"{self.device} {str(self.dtype).replace('torch.', '') if self.dtype else 'fp32'}" + (
            " channels_last" if self.channels_last else "")


def precision_for(device: torch.device, amp: bool = True, channels_last: bool = True,
                  amp_dtype: str = "auto") -> Precision:
    """``amp_dtype`` (``runtime.amp_dtype``): ``auto`` = AMP on CUDA only, bf16 where supported, else fp16
    with a scaler; ``bf16`` / ``fp16`` = that autocast dtype on any device (fp16 with a scaler)."""
    if amp and amp_dtype == "bf16":
        return Precision(device, torch.bfloat16, None, channels_last and device.type == "cuda")
    if amp and amp_dtype == "fp16":
        return Precision(device, torch.float16, torch.amp.GradScaler(device.type), channels_last and device.type == "cuda")
    if device.type != "cuda" or not amp:
        return Precision(device, None, None, channels_last and device.type == "cuda")
    if torch.cuda.is_bf16_supported():
        return Precision(device, torch.bfloat16, None, channels_last)
    return Precision(device, torch.float16, torch.amp.GradScaler("cuda"), channels_last)


def train_step(model, images, labels, optimizer, precision: Precision, loss_cfg: LossConfig | None = None,
               raw_only: bool = False, grad_clip: float = 0.0, loss_epoch: float | None = None,
               source: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Forward, loss, backward, optimizer step. Returns the detached loss terms (still on device).
    ``source``: the batch's zoom source (``data.source_size``), moved like the images."""
    images = precision.prepare(images)
    labels = labels.to(precision.device, non_blocking=True)
    kwargs = {} if source is None or raw_only else {"source": precision.prepare(source)}
    with precision.autocast():
        out = model(images, raw_only=raw_only, **kwargs)
    terms = flrdf_loss(out, labels, loss_cfg, epoch=loss_epoch)
    optimizer.zero_grad(set_to_none=True)
    loss = terms["loss_total"]
    if precision.scaler is not None:
        precision.scaler.scale(loss).backward()
        if grad_clip > 0:
            precision.scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        precision.scaler.step(optimizer)
        precision.scaler.update()
    else:
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
    return {k: v.detach() for k, v in terms.items()}
