import pytest
import torch

from flrdf.jigsaw import shuffle_patches


def patch_ids(n, h, w, b=1):
    """Images whose every pixel holds the index of its patch."""
    ids = torch.arange(n * n).view(n, n).repeat_interleave(h // n, 0).repeat_interleave(w // n, 1)
    return ids.float()[None, None].repeat(b, 2, 1, 1)


def test_output_is_a_permutation_of_patches():
    torch.manual_seed(0)
    b, n, h, w = 8, 4, 32, 48
    x = torch.rand(b, 3, h, w)
    y = shuffle_patches(x, n)
    ph, pw = h // n, w // n
    for s in range(b):
        src = {x[s, :, i * ph:(i + 1) * ph, j * pw:(j + 1) * pw].flatten().numpy().tobytes() for i in range(n) for j in range(n)}
        dst = [y[s, :, i * ph:(i + 1) * ph, j * pw:(j + 1) * pw].flatten().numpy().tobytes() for i in range(n) for j in range(n)]
        assert sorted(dst) == sorted(src) and len(set(dst)) == n * n


def test_explicit_permutation_places_patches():
    x = patch_ids(2, 4, 4)
    y = shuffle_patches(x, 2, perms=torch.tensor([[3, 2, 1, 0]]))
    assert y[0, 0, 0, 0] == 3 and y[0, 0, 0, 3] == 2 and y[0, 0, 3, 0] == 1 and y[0, 0, 3, 3] == 0


def test_permutations_differ_across_samples():
    torch.manual_seed(1)
    y = shuffle_patches(patch_ids(4, 16, 16, b=8), 4)
    orders = {tuple(y[s, 0, ::4, ::4].flatten().tolist()) for s in range(8)}
    assert len(orders) == 8


def test_n1_is_identity():
    x = torch.rand(2, 3, 10, 14)
    assert torch.equal(shuffle_patches(x, 1), x)


def test_n_must_tile():
    with pytest.raises(ValueError, match="does not tile"):
        shuffle_patches(torch.rand(1, 3, 30, 30), 4)
