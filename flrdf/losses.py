"""FLRDF loss (eq. 2-5): L_total = a*L_raw + b*L_obj + g*L_jig, each term kept for logging.

``loss.weighting`` chooses (a, b, g) from (alpha, beta, gamma):
  fixed       as given (the paper's recipe, alpha = beta = gamma = 1; default)
  normalized  divided by the sum of the present branches' weights, so the total
              has the scale of one loss
  scheduled   beta and gamma ramp linearly from 0 to their values over
              ``loss.ramp_epochs`` epochs (counted after the raw warm-up); alpha fixed
:func:`branch_weights` is the pure function; the trainer passes the epoch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from flrdf.config import LossConfig
from flrdf.model import FLRDFOutput

LOSS_KEYS = ("loss_raw", "loss_object", "loss_jigsaw", "loss_total")
WEIGHTINGS = ("fixed", "normalized", "scheduled")


def branch_weights(cfg: LossConfig, present: tuple[bool, bool, bool] = (True, True, True),
                   epoch: float | None = None) -> tuple[float, float, float]:
    """(raw, object, jigsaw) weights of the total loss. ``present``: which branches have logits;
    ``epoch``: training progress in epochs since the ramp starts (``scheduled``; None = ramp done)."""
    a, b, g = cfg.alpha, cfg.beta, cfg.gamma
    if cfg.weighting == "fixed":
        return a, b, g
    if cfg.weighting == "normalized":
        total = sum(w for w, p in zip((a, b, g), present) if p)
        return (a / total, b / total, g / total) if total > 0 else (a, b, g)
    if cfg.weighting == "scheduled":
        ramp = 1.0 if epoch is None or cfg.ramp_epochs <= 0 else min(1.0, max(0.0, epoch / cfg.ramp_epochs))
        return a, b * ramp, g * ramp
    raise ValueError(f"loss.weighting must be one of {WEIGHTINGS}, got {cfg.weighting!r}")


def flrdf_loss(out: FLRDFOutput, targets: torch.Tensor, cfg: LossConfig | None = None,
               epoch: float | None = None) -> dict[str, torch.Tensor]:
    """Cross-entropy of each present branch and their weighted sum; absent branches give 0."""
    cfg = cfg or LossConfig()
    zero = out.logits_raw.new_zeros((), dtype=torch.float32)

    def ce(logits: torch.Tensor | None) -> torch.Tensor:
        if logits is None:
            return zero
        return F.cross_entropy(logits.float(), targets, label_smoothing=cfg.label_smoothing)

    terms = {"loss_raw": ce(out.logits_raw), "loss_object": ce(out.logits_object), "loss_jigsaw": ce(out.logits_jigsaw)}
    present = (True, out.logits_object is not None, out.logits_jigsaw is not None)
    a, b, g = branch_weights(cfg, present, epoch)
    terms["loss_total"] = a * terms["loss_raw"] + b * terms["loss_object"] + g * terms["loss_jigsaw"]
    return terms
