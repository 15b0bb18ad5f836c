"""FLRDF loss (eq. 2-5): L_total = alpha*L_raw + beta*L_obj + gamma*L_jig, each term kept for logging."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from flrdf.config import LossConfig
from flrdf.model import FLRDFOutput

LOSS_KEYS = ("loss_raw", "loss_object", "loss_jigsaw", "loss_total")


def flrdf_loss(out: FLRDFOutput, targets: torch.Tensor, cfg: LossConfig | None = None) -> dict[str, torch.Tensor]:
    """Cross-entropy of each present branch and their weighted sum; absent branches give 0."""
    cfg = cfg or LossConfig()
    zero = out.logits_raw.new_zeros((), dtype=torch.float32)

    def ce(logits: torch.Tensor | None) -> torch.Tensor:
        if logits is None:
            return zero
        return F.cross_entropy(logits.float(), targets, label_smoothing=cfg.label_smoothing)

    terms = {"loss_raw": ce(out.logits_raw), "loss_object": ce(out.logits_object), "loss_jigsaw": ce(out.logits_jigsaw)}
    terms["loss_total"] = cfg.alpha * terms["loss_raw"] + cfg.beta * terms["loss_object"] + cfg.gamma * terms["loss_jigsaw"]
    return terms
