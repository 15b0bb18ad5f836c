"""Discriminative feature suppression (the FL module's DRS step, FLRDF eq. 1).

Pure functions for the maths plus the small modules that hold the learnable
controller. X' = min(X, X_max * G) where X_max is each channel's spatial
maximum and G a per-channel gate: sigmoid(Linear(GAP(X))) when learnable,
a constant delta when fixed.
"""

from __future__ import annotations

import torch
from torch import nn


def channel_max(x: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-channel spatial maximum, shape (B, C, 1, 1)."""
    return x.amax(dim=(2, 3), keepdim=True)


def suppress(x: torch.Tensor, gate: torch.Tensor | float) -> torch.Tensor:
    """Clip every value of ``x`` above ``channel_max(x) * gate``.

    ``gate`` is a float in [0, 1] or a tensor broadcastable to (B, C, 1, 1).
    """
    return torch.minimum(x, channel_max(x) * gate)


class SuppressionController(nn.Module):
    """Learnable gate G = sigmoid(f(GAP(X))), f = Linear(C, C, bias=False) ~ N(0, 0.01)."""

    def __init__(self, channels: int):
        super().__init__()
        self.fc = nn.Linear(channels, channels, bias=False)
        nn.init.normal_(self.fc.weight, mean=0.0, std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gap = x.mean(dim=(2, 3))
        return torch.sigmoid(self.fc(gap))[:, :, None, None]


class Suppression(nn.Module):
    """DRS block: ``mode`` is "learnable", "fixed" (constant ``delta``) or "none" (identity)."""

    MODES = ("learnable", "fixed", "none")

    def __init__(self, channels: int, mode: str = "learnable", delta: float = 0.7):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"suppression mode must be one of {self.MODES}, got {mode!r}")
        if not 0.0 <= delta <= 1.0:
            raise ValueError(f"suppression delta must lie in [0, 1], got {delta}")
        self.mode = mode
        self.delta = float(delta)
        self.controller = SuppressionController(channels) if mode == "learnable" else None

    def gate(self, x: torch.Tensor) -> torch.Tensor | float:
        return self.controller(x) if self.controller is not None else self.delta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "none":
            return x
        return suppress(x, self.gate(x))

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}" + (f", delta={self.delta}" if self.mode == "fixed" else "")
