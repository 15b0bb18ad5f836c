import pytest
import torch

from flrdf.config import LossConfig, ModelConfig
from flrdf.losses import flrdf_loss
from flrdf.model import FLRDF

K = 5


def small(**kw):
    kw.setdefault("backbone", "resnet18")
    kw.setdefault("pretrained", False)
    kw.setdefault("jigsaw_n", 2)
    return ModelConfig(**kw)


@pytest.mark.parametrize("hw", [(64, 64), (96, 96), (96, 64)])
def test_train_and_eval_shapes(hw):
    torch.manual_seed(0)
    model = FLRDF(small(), K)
    x = torch.randn(3, 3, *hw)
    model.train()
    out = model(x)
    fh, fw = hw[0] // 32, hw[1] // 32
    for logits in (out.logits_raw, out.logits_object, out.logits_jigsaw, out.logits):
        assert logits.shape == (3, K)
    assert out.loc_map.shape == out.plain_map.shape == (3, fh, fw)
    assert out.boxes.shape == (3, 4)
    assert out.object_images.shape == out.jigsaw_images.shape == (3, 3, *hw)
    assert torch.all(out.boxes[:, 2] <= hw[1]) and torch.all(out.boxes[:, 3] <= hw[0])
    model.eval()
    with torch.no_grad():
        ev = model(x)
    assert ev.logits_jigsaw is None and ev.jigsaw_images is None
    assert torch.allclose(ev.logits, ev.logits_raw + ev.logits_object)
    assert float(ev.loc_map.min()) >= 0 and float(ev.loc_map.max()) <= 1
    with torch.no_grad():
        ev = model(x, with_jigsaw=True)
    assert ev.logits_jigsaw.shape == (3, K)


@pytest.mark.parametrize("branches,present", [
    ("raw", {"raw"}), ("raw+fl", {"raw", "object"}), ("raw+rdf", {"raw", "jigsaw"}), ("full", {"raw", "object", "jigsaw"}),
])
def test_ablation_branches(branches, present):
    model = FLRDF(small(branches=branches), K).train()
    out = model(torch.randn(2, 3, 64, 64))
    assert set(out.branch_logits()) == present
    assert set(model.heads) == present
    if branches == "raw+rdf":  # jigsaw of the raw image, no crop
        assert out.object_images is None and out.jigsaw_images is not None


def test_suppression_variants_and_layer3():
    for mode in ("learnable", "fixed", "none"):
        FLRDF(small(suppression=mode, suppress_layer3=True), K).train()(torch.randn(2, 3, 64, 64))
    m = FLRDF(small(suppression="none"), K).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 3, 64, 64))
    assert torch.allclose(out.loc_map, out.plain_map)


def test_jigsaw_n_must_tile_input():
    model = FLRDF(small(jigsaw_n=3), K).train()
    with pytest.raises(ValueError, match="does not tile"):
        model(torch.randn(1, 3, 64, 64))


def test_raw_only_warmup_forward():
    out = FLRDF(small(), K).train()(torch.randn(2, 3, 64, 64), raw_only=True)
    assert out.logits_object is None and out.logits_jigsaw is None


def test_sgd_steps_lower_total_loss():
    torch.manual_seed(0)
    model = FLRDF(small(), K).train()
    x = torch.randn(8, 3, 64, 64)
    y = torch.arange(8) % K
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(10):
        torch.manual_seed(1)  # same jigsaw permutations every step
        terms = flrdf_loss(model(x), y, LossConfig())
        opt.zero_grad()
        terms["loss_total"].backward()
        opt.step()
        losses.append(terms["loss_total"].item())
    assert max(losses[-3:]) < losses[0] * 0.6, losses


def test_loss_terms_weighted():
    torch.manual_seed(0)
    out = FLRDF(small(), K).train()(torch.randn(2, 3, 64, 64))
    y = torch.tensor([0, 1])
    t = flrdf_loss(out, y, LossConfig(alpha=1.0, beta=0.5, gamma=2.0))
    assert torch.allclose(t["loss_total"], t["loss_raw"] + 0.5 * t["loss_object"] + 2.0 * t["loss_jigsaw"])


def test_weights_from_local_file(tmp_path):
    from torchvision.models import resnet18
    from safetensors.torch import save_file

    ref = resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "r18.pth")
    save_file(ref.state_dict(), str(tmp_path / "r18.safetensors"))
    for name in ("r18.pth", "r18.safetensors"):
        m = FLRDF(small(weights=str(tmp_path / name)), K)
        assert torch.equal(m.backbone.stem[0].weight, ref.conv1.weight)
        assert m.backbone.init.startswith("file:")
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="does not match"):
        FLRDF(small(weights=str(tmp_path / "bad.pth")), K)


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
def test_layer4_stride_one_doubles_map_resolution(backbone):
    model = FLRDF(small(backbone=backbone, layer4_stride=1), K).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 96))
    assert out.loc_map.shape == (1, 4, 6)
