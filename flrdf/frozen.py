"""Frozen backbone stages (``model.frozen_stages``), shared by the ResNet and the timm backbones: the modules
named keep their starting weights, and stay in eval mode so their normalisation statistics do not move."""

from __future__ import annotations

from torch import nn


class FrozenStages:
    """Mixin for an ``nn.Module`` backbone: :meth:`freeze` the first stages; :meth:`train` keeps them in eval mode."""

    frozen: list[nn.Module]

    def freeze(self, modules) -> None:
        self.frozen = list(modules)
        for module in self.frozen:
            module.requires_grad_(False)

    def train(self, mode: bool = True):
        """As nn.Module.train, but frozen stages stay in eval mode (their normalisation statistics do not move)."""
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self
