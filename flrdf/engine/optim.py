"""The optimizer's parameter groups: backbone vs new layers (two learning rates), and,
with ``optim.no_decay_norm_bias``, a zero-weight-decay twin of each for the norm layers,
the biases and the suppression controller (timm's / torchvision references'
``norm_weight_decay=0`` habit).

The default (off) decays everything, as the FGVC code bases behind the paper's
recipe do. Group order is fixed: 0 = backbone, 1 = new layers (the trainer logs
their learning rates), then the zero-decay twins when present.
"""

from __future__ import annotations

import torch
from torch import nn

from flrdf.config import OptimConfig

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)


def no_decay_ids(model: nn.Module) -> set[int]:
    """ids of the parameters that the option exempts from weight decay: every parameter of a norm layer or
    of a suppression controller, and every bias."""
    from flrdf.suppression import SuppressionController

    ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, (*_NORMS, SuppressionController)):
            ids.update(id(p) for p in module.parameters())
    for name, p in model.named_parameters():
        if name.endswith(".bias") or name == "bias":
            ids.add(id(p))
    return ids


def param_groups(model, cfg: OptimConfig) -> list[dict]:
    """SGD parameter groups (see the module docstring); every trainable parameter in exactly one group."""
    backbone, new = model.param_groups()
    groups = [{"name": "backbone", "params": backbone, "lr": cfg.lr_backbone, "weight_decay": cfg.weight_decay},
              {"name": "new", "params": new, "lr": cfg.lr_new, "weight_decay": cfg.weight_decay}]
    if not cfg.no_decay_norm_bias:
        return groups
    exempt = no_decay_ids(model)
    twins = []
    for g in groups:
        keep = [p for p in g["params"] if id(p) not in exempt]
        free = [p for p in g["params"] if id(p) in exempt]
        g["params"] = keep
        if free:
            twins.append({**g, "name": g["name"] + "_no_decay", "params": free, "weight_decay": 0.0})
    return groups + twins


def build_optimizer(model, cfg: OptimConfig) -> torch.optim.SGD:
    return torch.optim.SGD(param_groups(model, cfg), lr=cfg.lr_new, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)
