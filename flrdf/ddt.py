"""Deep Descriptor Transforming (DDT; Wei et al., "Deep Descriptor Transforming for Image
Co-Localization", IJCAI 2017; the pseudo-box source of PSOL, CVPR 2020): an alternative FL map.

The channel mean of a feature map (the paper's map) is high wherever the network responds
strongly - on the class's discriminative parts and on textured clutter alike. DDT instead asks
which direction in descriptor space separates what the training images have in common (the
object) from the rest: the first principal component of all cell descriptors of the training
images. Each cell's projection on it, centred on the descriptors' mean, is positive on the common
object and negative elsewhere; the map is that projection's positive part over its per-image
maximum, so ``model.tau`` keeps its meaning (a fraction of the peak).

:class:`DescriptorPCA` keeps the mean and the second moment as running (EMA) buffers, updated from
each training batch's descriptors of ``model.loc_layer``, so the direction follows the backbone
as it trains and travels in the checkpoint with the weights. The eigenvector's sign is arbitrary;
it is fixed so that the image border, mostly background, projects below the average cell.
The maths are pure functions, tested alone.
"""

from __future__ import annotations

import torch
from torch import nn


def descriptor_moments(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (C,) and second moment (C, C) of the cell descriptors of a (B, C, h, w) batch (float32
    products, returned in float64 for the running sums)."""
    d = features.detach().float().permute(0, 2, 3, 1).reshape(-1, features.shape[1])
    return d.mean(dim=0).double(), (d.T @ d / d.shape[0]).double()


def first_component(mean: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Unit eigenvector (C,) of the covariance ``second - mean mean^T`` with the largest eigenvalue."""
    cov = second - torch.outer(mean, mean)
    cov = (cov + cov.T) / 2
    return torch.linalg.eigh(cov)[1][:, -1]


def project(features: torch.Tensor, mean: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """(B, h, w): each cell's descriptor, centred on ``mean``, projected on ``direction``."""
    f = features.detach().float()
    return torch.einsum("bchw,c->bhw", f - mean.float()[None, :, None, None], direction.float())


def border_below_average(projection: torch.Tensor) -> bool:
    """True when the cells on the image border project below the average cell (object positive)."""
    p = projection
    border = torch.cat([p[:, 0], p[:, -1], p[:, 1:-1, 0], p[:, 1:-1, -1]], dim=1)
    return bool(border.mean() < p.mean())


def positive_part(projection: torch.Tensor) -> torch.Tensor:
    """The DDT map: a projection's positive part over its per-image maximum, (B, h, w) in [0, 1]
    (all zeros for an image without a positive cell: no foreground, the box is the whole image)."""
    peak = projection.flatten(1).amax(dim=1).clamp_min(1e-12)
    return (projection / peak[:, None, None]).clamp(0.0, 1.0)


class DescriptorPCA(nn.Module):
    """Running DDT statistics of one feature stage (``channels`` descriptors) and its map."""

    def __init__(self, channels: int, momentum: float = 0.05):
        super().__init__()
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must lie in (0, 1], got {momentum}")
        self.momentum = momentum
        self.register_buffer("mean", torch.zeros(channels, dtype=torch.float64))
        self.register_buffer("second", torch.zeros(channels, channels, dtype=torch.float64))
        self.register_buffer("direction", torch.zeros(channels, dtype=torch.float64))
        self.register_buffer("batches", torch.zeros((), dtype=torch.long))

    @property
    def ready(self) -> bool:
        return int(self.batches) > 0

    @torch.no_grad()
    def update(self, features: torch.Tensor) -> None:
        """Fold one batch's descriptors into the running moments and recompute the direction."""
        mean, second = descriptor_moments(features)
        k = 1.0 if not self.ready else self.momentum
        self.mean.mul_(1 - k).add_(mean, alpha=k)
        self.second.mul_(1 - k).add_(second, alpha=k)
        v = first_component(self.mean, self.second)
        if not border_below_average(project(features, self.mean, v)):
            v = -v
        self.direction.copy_(v)
        self.batches += 1

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """The DDT map (B, h, w) in [0, 1] of a batch of this stage's features."""
        if not self.ready:
            raise RuntimeError("model.loc_map=ddt has no descriptor statistics: they are accumulated from training "
                               "batches, and this model has seen none (never trained, or trained with model.loc_map=mean)")
        return positive_part(project(features, self.mean, self.direction))

    def extra_repr(self) -> str:
        return f"channels={self.mean.numel()}, momentum={self.momentum}"
