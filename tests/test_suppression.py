import pytest
import torch

from flrdf.suppression import Suppression, SuppressionController, channel_max, suppress


def test_suppress_hand_computed():
    x = torch.tensor([[[[1.0, 4.0], [2.0, 8.0]], [[0.0, 1.0], [3.0, 2.0]]]])  # (1, 2, 2, 2)
    out = suppress(x, 0.5)
    # channel 0: max 8 -> bound 4; channel 1: max 3 -> bound 1.5
    expected = torch.tensor([[[[1.0, 4.0], [2.0, 4.0]], [[0.0, 1.0], [1.5, 1.5]]]])
    assert torch.equal(out, expected)
    assert torch.equal(channel_max(x).flatten(), torch.tensor([8.0, 3.0]))


def test_suppress_per_channel_gate_and_bound():
    torch.manual_seed(0)
    x = torch.rand(3, 4, 5, 6)
    gate = torch.rand(3, 4, 1, 1)
    out = suppress(x, gate)
    bound = x.amax(dim=(2, 3), keepdim=True) * gate
    assert torch.all(out <= bound + 1e-7)
    assert torch.equal(out[x <= bound.expand_as(x)], x[x <= bound.expand_as(x)])
    assert torch.equal(suppress(x, 1.0), x)


def test_fixed_variant_uses_delta():
    x = torch.rand(2, 3, 4, 4)
    block = Suppression(3, "fixed", delta=0.3)
    assert torch.allclose(block(x), suppress(x, 0.3))
    assert not list(block.parameters())


def test_none_variant_is_identity():
    x = torch.rand(2, 3, 4, 4)
    assert Suppression(3, "none")(x) is x


def test_learnable_controller_starts_near_gate_init_and_gets_gradient():
    torch.manual_seed(0)
    assert torch.all((SuppressionController(16)(torch.rand(4, 16, 7, 7)) - 0.7).abs() < 0.1)  # default 0.7
    ctrl = SuppressionController(16, gate_init=0.5)  # DRS's own start
    x = torch.rand(4, 16, 7, 7)
    g = ctrl(x)
    assert g.shape == (4, 16, 1, 1)
    assert torch.all((g - 0.5).abs() < 0.1)
    block = Suppression(16, "learnable")
    block(x).sum().backward()
    grad = block.controller.fc.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        Suppression(3, "sometimes")
    with pytest.raises(ValueError, match="delta"):
        Suppression(3, "fixed", delta=1.5)
