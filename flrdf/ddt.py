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
as it trains and travels in the checkpoint with the weights. Under DDP each update folds in the
batch of every rank (one all-reduce of the batch's sums), so all ranks hold the same statistics.
The statistics and the projection are computed outside autocast in float32 (sums kept in float64):
a fp16 Gram matrix of a layer2 batch overflows.

The eigenvector's sign is arbitrary; :func:`orient` fixes it, and once fixed it is kept:
- once statistics exist, the new direction points the way of the previous one (v . v_prev >= 0),
  so the map cannot invert between two batches, and a checkpoint keeps the sign of the first batch;
- the first batch: the image border, mostly background, must project below the average cell;
- the first batch of maps with <= 2 rows or columns (every cell is on the border, the test ties):
  the components of v must sum to >= 0, i.e. the projection correlates positively with the
  channel mean (cov(d . v, d . 1) = lambda v . 1 for an eigenvector v), the paper's map.
The maths are pure functions, tested alone.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import nn


class DescriptorSums(NamedTuple):
    """Sums over the cell descriptors of a batch (float64): what ranks add up under DDP."""
    count: torch.Tensor         # () number of cells
    total: torch.Tensor         # (C,) sum of the descriptors
    gram: torch.Tensor          # (C, C) sum of their outer products
    border_count: torch.Tensor  # () cells on the image border
    border_total: torch.Tensor  # (C,) sum of their descriptors

    def pack(self) -> torch.Tensor:
        return torch.cat([self.count.reshape(1), self.total, self.gram.flatten(), self.border_count.reshape(1),
                          self.border_total])

    @classmethod
    def unpack(cls, flat: torch.Tensor, channels: int) -> "DescriptorSums":
        c = channels
        return cls(flat[0], flat[1:1 + c], flat[1 + c:1 + c + c * c].reshape(c, c), flat[1 + c + c * c],
                   flat[2 + c + c * c:])

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean (C,) and second moment (C, C) of the descriptors summed here."""
        return self.total / self.count, self.gram / self.count

    def border_shift(self) -> torch.Tensor:
        """(C,) the border cells' mean descriptor minus every cell's mean."""
        return self.border_total / self.border_count - self.total / self.count


def descriptor_sums(features: torch.Tensor) -> DescriptorSums:
    """:class:`DescriptorSums` of a (B, C, h, w) batch. Outside autocast: the products run in float32
    about the batch's own mean (no cancellation), the sums are returned in float64."""
    with torch.autocast(features.device.type, enabled=False):
        cells = features.detach().float().permute(0, 2, 3, 1)  # (B, h, w, C)
        d = cells.reshape(-1, features.shape[1])
        n = d.shape[0]
        mu = d.mean(dim=0)
        centred = d - mu
        gram = (centred.T @ centred).double() + n * torch.outer(mu.double(), mu.double())
        border = torch.ones(cells.shape[1:3], dtype=torch.bool, device=features.device)
        border[1:-1, 1:-1] = False
        edge = cells[:, border]  # (B, border cells, C)
        m = edge.shape[0] * edge.shape[1]
        f64 = {"dtype": torch.float64, "device": d.device}
        return DescriptorSums(torch.tensor(float(n), **f64), mu.double() * n, gram, torch.tensor(float(m), **f64),
                              edge.mean(dim=(0, 1)).double() * m)


def descriptor_moments(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (C,) and second moment (C, C) of the cell descriptors of a (B, C, h, w) batch (float64)."""
    return descriptor_sums(features).moments()


def first_component(mean: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Unit eigenvector (C,) of the covariance ``second - mean mean^T`` with the largest eigenvalue."""
    cov = second - torch.outer(mean, mean)
    cov = (cov + cov.T) / 2
    return torch.linalg.eigh(cov)[1][:, -1]


def orient(v: torch.Tensor, previous: torch.Tensor | None, border_shift: torch.Tensor, tiny: bool) -> torch.Tensor:
    """``v`` or ``-v`` by the rule of the module's docstring: along ``previous`` when there is one; else the
    border (``border_shift``: its mean descriptor minus the mean) below average; else, for a ``tiny`` map
    (<= 2 rows or columns), components summing to >= 0. Ties keep ``v``."""
    if previous is not None:
        score = float(v @ previous)
    elif not tiny:
        score = -float(v @ border_shift)
    else:
        score = float(v.sum())
    return -v if score < 0 else v


def project(features: torch.Tensor, mean: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """(B, h, w): each cell's descriptor, centred on ``mean``, projected on ``direction`` (float32,
    outside autocast)."""
    with torch.autocast(features.device.type, enabled=False):
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


def all_reduce_sums(sums: DescriptorSums) -> DescriptorSums:
    """Every rank's sums added (one all-reduce, on the features' device: CUDA under NCCL, the CPU under gloo);
    ``sums`` itself without a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return sums
    flat = sums.pack()
    dist.all_reduce(flat)
    return DescriptorSums.unpack(flat, sums.total.numel())


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

    @torch.compiler.disable  # a collective and an eigendecomposition, once per step: not worth tracing
    @torch.no_grad()
    def update(self, features: torch.Tensor) -> None:
        """Fold one batch's descriptors (every rank's, under DDP) into the running moments and recompute
        the direction, oriented by :func:`orient`. Every rank of a process group must call it together."""
        sums = all_reduce_sums(descriptor_sums(features))
        mean, second = sums.moments()
        k = 1.0 if not self.ready else self.momentum
        previous = self.direction.clone() if self.ready else None
        self.mean.mul_(1 - k).add_(mean, alpha=k)
        self.second.mul_(1 - k).add_(second, alpha=k)
        v = first_component(self.mean, self.second)
        self.direction.copy_(orient(v, previous, sums.border_shift(), min(features.shape[-2:]) <= 2))
        self.batches += 1

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """The DDT map (B, h, w) in [0, 1] of a batch of this stage's features."""
        if not self.ready:
            raise RuntimeError("model.loc_map=ddt has no descriptor statistics: they are accumulated from training "
                               "batches, and this model has seen none (never trained, or trained with model.loc_map=mean)")
        return positive_part(project(features, self.mean, self.direction))

    def extra_repr(self) -> str:
        return f"channels={self.mean.numel()}, momentum={self.momentum}"
