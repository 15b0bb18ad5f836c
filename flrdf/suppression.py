"""Discriminative feature suppression (the FL module's DRS step, FLRDF eq. 1).

Pure functions for the maths plus the small modules that hold the learnable
controller. X' = min(X, X_max * G) where X_max is each channel's spatial
maximum and G a per-channel gate: sigmoid(Linear(GAP(X))) when learnable,
a constant delta when fixed.

What-if (Inspect's counterfactual controller, no retraining): a :class:`WhatIf`
replaces the gate for the forwards inside :func:`suppression_whatif` - G scaled
(clipped to [0, 1]), a constant delta, or suppression off (X' = X).
:func:`most_suppressed` ranks the channels by how much their peak was cut,
X_max * (1 - G).

The learnable controller's bias starts at logit(gate_init) (``model.gate_init``,
default 0.7, the paper's figure), so G starts near that value rather than at
DRS's 0.5; checkpoints saved before the bias existed load with a zero bias,
which is exactly their old behaviour. :class:`GateTally` and
:func:`capture_gates` report the gate's distribution (Inspect, eval, loc-eval).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
from torch import nn

GATE_BINS = 1000   # GateTally's resolution: percentiles to 0.001
HIST_BINS = 20     # the coarse histogram reported


def channel_max(x: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-channel spatial maximum, shape (B, C, 1, 1)."""
    return x.amax(dim=(2, 3), keepdim=True)


def suppress(x: torch.Tensor, gate: torch.Tensor | float) -> torch.Tensor:
    """Clip every value of ``x`` above ``channel_max(x) * gate``.

    ``gate`` is a float in [0, 1] or a tensor broadcastable to (B, C, 1, 1).
    """
    return torch.minimum(x, channel_max(x) * gate)


def logit(p: float) -> float:
    if not 0.0 < p < 1.0:
        raise ValueError(f"gate_init must lie strictly between 0 and 1, got {p}")
    return math.log(p / (1.0 - p))


class SuppressionController(nn.Module):
    """Learnable gate G = sigmoid(f(GAP(X))), f = Linear(C, C): weight ~ N(0, 0.01),
    bias = logit(``gate_init``), so G starts near ``gate_init``."""

    def __init__(self, channels: int, gate_init: float = 0.7):
        super().__init__()
        self.fc = nn.Linear(channels, channels, bias=True)
        nn.init.normal_(self.fc.weight, mean=0.0, std=0.01)
        nn.init.constant_(self.fc.bias, logit(gate_init))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints from before the bias (DRS's bias-free Linear): zero bias = their old behaviour
        if prefix + "fc.weight" in state_dict and prefix + "fc.bias" not in state_dict:
            w = state_dict[prefix + "fc.weight"]
            state_dict[prefix + "fc.bias"] = torch.zeros(w.shape[0], dtype=w.dtype, device=w.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gap = x.mean(dim=(2, 3))
        return torch.sigmoid(self.fc(gap))[:, :, None, None]


@dataclass(frozen=True)
class WhatIf:
    """A counterfactual suppression controller for one request (Inspect's what-if):

    ``model``     the model's own gate (no change)
    ``scale``     G * ``scale``, clipped to [0, 1] (a learnable or fixed gate)
    ``constant``  G = ``delta`` for every channel
    ``off``       no suppression: X' = X
    """
    mode: str = "model"
    scale: float = 1.0
    delta: float = 0.7

    MODES = ("model", "scale", "constant", "off")

    def __post_init__(self):
        if self.mode not in self.MODES:
            raise ValueError(f"what-if mode must be one of {self.MODES}, got {self.mode!r}")
        if not (math.isfinite(self.scale) and self.scale >= 0):
            raise ValueError(f"what-if scale must be a number >= 0, got {self.scale}")
        if not 0.0 <= self.delta <= 1.0:
            raise ValueError(f"what-if delta must lie in [0, 1], got {self.delta}")

    @property
    def active(self) -> bool:
        """False when it reproduces the model exactly (its own gate, or a scale of 1)."""
        return not (self.mode == "model" or (self.mode == "scale" and self.scale == 1.0))

    def describe(self) -> str:
        return {"model": "the model's own gate", "scale": f"G x {self.scale:g} (clipped to [0, 1])",
                "constant": f"G = {self.delta:g} for every channel", "off": "suppression off (X' = X)"}[self.mode]


def whatif_gate(gate: torch.Tensor | float | None, whatif: WhatIf) -> torch.Tensor | float | None:
    """The gate a :class:`WhatIf` puts in place of ``gate`` (None: no suppression)."""
    if whatif.mode == "off":
        return None
    if whatif.mode == "constant":
        return float(whatif.delta)
    if gate is None:
        if whatif.mode == "scale":
            raise ValueError("this model has no suppression gate to scale (model.suppression=none): "
                             "choose a constant delta instead")
        return None
    if whatif.mode == "scale":
        if isinstance(gate, torch.Tensor):
            return (gate * whatif.scale).clamp(0.0, 1.0)
        return min(1.0, max(0.0, float(gate) * whatif.scale))
    return gate


def most_suppressed(x: torch.Tensor, gate: torch.Tensor | float, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` channels of one image's features ``x`` (C, h, w) whose peak suppression cut most,
    by X_max * (1 - G): ``(channel indices, amounts)``, largest first."""
    x_max = x.detach().float().flatten(1).amax(dim=1)
    g = gate.detach().float().flatten() if isinstance(gate, torch.Tensor) else torch.full_like(x_max, float(gate))
    cut = x_max * (1.0 - g)
    amounts, idx = cut.topk(min(int(k), cut.numel()))
    return idx, amounts


class Suppression(nn.Module):
    """DRS block: ``mode`` is "learnable", "fixed" (constant ``delta``) or "none" (identity).

    ``whatif`` (set by :func:`suppression_whatif` only) replaces the gate for the forwards
    inside that block."""

    MODES = ("learnable", "fixed", "none")

    def __init__(self, channels: int, mode: str = "learnable", delta: float = 0.7, gate_init: float = 0.7):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"suppression mode must be one of {self.MODES}, got {mode!r}")
        if not 0.0 <= delta <= 1.0:
            raise ValueError(f"suppression delta must lie in [0, 1], got {delta}")
        self.mode = mode
        self.delta = float(delta)
        self.controller = SuppressionController(channels, gate_init) if mode == "learnable" else None
        self.whatif: WhatIf | None = None
        self.records: list | None = None  # set by capture_suppression: each forward appends a SuppressionRecord

    def gate(self, x: torch.Tensor) -> torch.Tensor | float:
        return self.controller(x) if self.controller is not None else self.delta

    def applied_gate(self, x: torch.Tensor) -> torch.Tensor | float | None:
        """The gate this forward applies to ``x``: the model's own, or the what-if's; None: X' = X."""
        own = None if self.mode == "none" else self.gate(x)
        return own if self.whatif is None else whatif_gate(own, self.whatif)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = None if self.mode == "none" and self.whatif is None else self.applied_gate(x)
        out = x if gate is None else suppress(x, gate)
        if self.records is not None:
            self.records.append(SuppressionRecord(x.detach(), gate.detach() if isinstance(gate, torch.Tensor) else gate,
                                                  out.detach()))
        return out

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}" + (f", delta={self.delta}" if self.mode == "fixed" else "")


# ---------------------------------------------------------------- the gate's distribution
class GateTally:
    """Running histogram of per-channel gate values (all images, all channels) on [0, 1].

    Constant memory (``GATE_BINS`` counts), so a whole split can be summarised;
    ``counts`` can be all-reduced across ranks before :meth:`summary`.
    """

    def __init__(self):
        self.counts = torch.zeros(GATE_BINS, dtype=torch.float64)
        self.total = 0.0

    def add(self, gates: torch.Tensor | float, n_channels: int | None = None, n_images: int = 1) -> None:
        """Add a (B, C[, 1, 1]) gate tensor, or a constant gate for ``n_images`` x ``n_channels`` values."""
        if isinstance(gates, torch.Tensor):
            g = gates.detach().float().flatten().cpu()
        else:
            g = torch.full((int(n_channels or 1) * n_images,), float(gates))
        self.counts += torch.histc(g.clamp(0, 1), bins=GATE_BINS, min=0.0, max=1.0).double()
        self.total += float(g.double().sum())

    def summary(self) -> dict | None:
        return gate_summary(self.counts, self.total)


def gate_summary(counts: torch.Tensor, total: float) -> dict | None:
    """mean, p10/p50/p90 and a ``HIST_BINS``-bin histogram from a ``GATE_BINS``-bin count vector."""
    n = float(counts.sum())
    if n <= 0:
        return None
    cdf = counts.cumsum(0) / n
    centres = (torch.arange(GATE_BINS, dtype=torch.float64) + 0.5) / GATE_BINS

    def pct(q: float) -> float:
        return round(float(centres[int(torch.searchsorted(cdf, torch.tensor(q, dtype=torch.float64)))]), 4)

    coarse = counts.view(HIST_BINS, GATE_BINS // HIST_BINS).sum(1) / n
    return {"mean": round(total / n, 4), "p10": pct(0.10), "p50": pct(0.50), "p90": pct(0.90), "n": int(n),
            "hist_edges": [round(i / HIST_BINS, 4) for i in range(HIST_BINS + 1)],
            "hist": [round(float(v), 6) for v in coarse]}


def gate_stats(gates: torch.Tensor) -> dict:
    """Per-channel gate statistics of one image's (C,) or (1, C, 1, 1) gate (exact percentiles)."""
    g = gates.detach().float().flatten().cpu()
    q = torch.quantile(g, torch.tensor([0.1, 0.5, 0.9]))
    hist = torch.histc(g.clamp(0, 1), bins=HIST_BINS, min=0.0, max=1.0) / g.numel()
    return {"mean": round(float(g.mean()), 4), "p10": round(float(q[0]), 4), "p50": round(float(q[1]), 4),
            "p90": round(float(q[2]), 4), "n": int(g.numel()),
            "hist_edges": [round(i / HIST_BINS, 4) for i in range(HIST_BINS + 1)],
            "hist": [round(float(v), 6) for v in hist]}


@contextlib.contextmanager
def capture_gates(model: nn.Module):
    """Record the layer4 suppression gate of every forward inside the block.

    Yields a list that receives one (B, C) tensor per forward (learnable), or
    ``(delta, B, C)`` tuples (fixed); stays empty for ``suppression=none``.
    """
    block: Suppression | None = getattr(model, "suppression", None)
    seen: list = []
    if block is None:  # a model without a suppression block (e.g. a stand-in in tests) has no gate
        handle = None
    elif block.controller is not None:
        handle = block.controller.register_forward_hook(lambda _m, _i, out: seen.append(out.detach().flatten(1)))
    elif block.mode == "fixed":
        handle = block.register_forward_hook(lambda _m, inp, _o: seen.append((block.delta, *inp[0].shape[:2])))
    else:
        handle = None
    try:
        yield seen
    finally:
        if handle is not None:
            handle.remove()


def tally_gates(tally: GateTally, seen: list) -> None:
    """Move what :func:`capture_gates` recorded into ``tally`` (and empty the list)."""
    for item in seen:
        if isinstance(item, tuple):
            delta, b, c = item
            tally.add(delta, n_channels=c, n_images=b)
        else:
            tally.add(item)
    seen.clear()


@contextlib.contextmanager
def suppression_whatif(model: nn.Module, whatif: WhatIf | None):
    """Run the forwards inside the block with ``model``'s layer4 suppression gate replaced by ``whatif``
    (the caller holds the model's lock: flrdf.cams.model_lock). ``None`` or an inactive what-if
    changes nothing."""
    block: Suppression | None = getattr(model, "suppression", None)
    if block is None or whatif is None or not whatif.active:
        yield model
        return
    whatif_gate(0.5 if block.mode != "none" else None, whatif)  # the refusal (scale without a gate), before any forward
    saved, block.whatif = block.whatif, whatif
    try:
        yield model
    finally:
        block.whatif = saved


@dataclass
class SuppressionRecord:
    """One forward's layer4 suppression: X, the gate applied (None: none) and X'."""
    x: torch.Tensor
    gate: torch.Tensor | float | None
    xs: torch.Tensor


@contextlib.contextmanager
def capture_suppression(model: nn.Module):
    """Record X, the applied gate and X' of every forward of ``model``'s layer4 suppression inside the
    block (a list of :class:`SuppressionRecord`, detached; empty for a model without the block)."""
    block: Suppression | None = getattr(model, "suppression", None)
    seen: list[SuppressionRecord] = []
    if block is None:
        yield seen
        return
    saved, block.records = block.records, seen
    try:
        yield seen
    finally:
        block.records = saved
