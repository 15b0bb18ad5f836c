"""Region discriminative feature training's input: n x n patch shuffling (FLRDF Fig. 3).

Batched and pure: every sample gets its own random permutation of its patches.
"""

from __future__ import annotations

import torch


def check_grid(hw: tuple[int, int], n: int) -> None:
    h, w = hw
    if n < 1:
        raise ValueError(f"jigsaw grid n must be >= 1, got {n}")
    if h % n or w % n:
        raise ValueError(
            f"jigsaw grid n={n} does not tile a {h}x{w} input: both sides must be divisible by n "
            f"(divisors of {h} and {w} work, e.g. n in {[d for d in (1, 2, 3, 4, 7, 8) if h % d == 0 and w % d == 0]})"
        )


def random_permutations(batch: int, k: int, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """(batch, k) independent random permutations of range(k)."""
    noise = torch.rand(batch, k, generator=generator, device="cpu" if generator is not None else device)
    return noise.argsort(dim=1).to(device)


def shuffle_patches(images: torch.Tensor, n: int, perms: torch.Tensor | None = None,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Cut each (C, H, W) image into an n x n grid and reorder the patches.

    ``perms[b, k]`` is the source patch placed at position k of sample b (row-major);
    drawn at random per sample when not given. n = 1 returns the input unchanged.
    """
    b, c, h, w = images.shape
    check_grid((h, w), n)
    if n == 1:
        return images
    ph, pw = h // n, w // n
    patches = images.reshape(b, c, n, ph, n, pw).permute(0, 2, 4, 1, 3, 5).reshape(b, n * n, c, ph, pw)
    if perms is None:
        perms = random_permutations(b, n * n, device=images.device, generator=generator)
    index = perms.to(images.device).view(b, n * n, 1, 1, 1).expand(-1, -1, c, ph, pw)
    shuffled = patches.gather(1, index)
    return shuffled.reshape(b, n, n, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)
