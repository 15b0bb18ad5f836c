import re

import pytest
import torch

from flrdf.boxes import boxes_from_maps, crop_resize, normalize_maps
from flrdf.config import LossConfig, ModelConfig
from flrdf.jigsaw import shuffle_patches
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


def _by_hand_gate(x: torch.Tensor, mode: str, suppression) -> torch.Tensor | float:
    """The DRS gate written out: sigmoid(W @ GAP(X)) (learnable) or the constant delta (fixed)."""
    if mode == "fixed":
        return suppression.delta
    fc = suppression.controller.fc
    logits = x.mean(dim=(2, 3)) @ fc.weight.T + (0.0 if fc.bias is None else fc.bias)
    return torch.sigmoid(logits)[:, :, None, None]


def _by_hand_suppress(x: torch.Tensor, gate) -> torch.Tensor:
    """X' = min(X, X_max * G), X_max each channel's spatial maximum (FLRDF eq. 1)."""
    return torch.minimum(x, x.amax(dim=(2, 3), keepdim=True) * gate)


@pytest.mark.parametrize("mode", ["learnable", "fixed"])
def test_layer3_suppression_is_applied_before_layer4(mode, real_batch):
    torch.manual_seed(0)
    model = FLRDF(small(suppression=mode, suppress_layer3=True), K).eval()
    assert model.suppression3 is not None and model.suppression3.mode == mode
    bb = model.backbone
    with torch.no_grad():
        f3 = bb.layer3(bb.layer2(bb.layer1(bb.stem(real_batch))))
        x = bb.layer4(_by_hand_suppress(f3, _by_hand_gate(f3, mode, model.suppression3)))
        xs = _by_hand_suppress(x, _by_hand_gate(x, mode, model.suppression))
        got_x, got_xs = model.raw_features(real_batch)
        out = model(real_batch)
        # the same weights without layer3 suppression give other layer4 features: it is not a no-op
        plain3 = FLRDF(small(suppression=mode), K).eval()
        plain3.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("suppression3.")})
        x_no3, _ = plain3.raw_features(real_batch)
    assert torch.allclose(got_x, x, atol=1e-5) and torch.allclose(got_xs, xs, atol=1e-5)
    assert torch.allclose(out.logits_raw, model.heads["raw"](xs.mean(dim=(2, 3))), atol=1e-5)
    assert torch.allclose(out.plain_map, normalize_maps(x.mean(dim=1)), atol=1e-5)
    assert not torch.allclose(x_no3, x, atol=1e-3)
    # training mode runs every branch with it
    train_out = model.train()(real_batch)
    assert train_out.logits_object.shape == train_out.logits_jigsaw.shape == (2, K)


def test_no_suppression_means_no_layer3_block_and_equal_maps(real_batch):
    m = FLRDF(small(suppression="none", suppress_layer3=True), K).eval()
    assert m.suppression3 is None
    with torch.no_grad():
        x, xs = m.raw_features(real_batch)
        out = m(real_batch)
    assert torch.equal(x, xs) and torch.equal(x, m.backbone(real_batch))
    assert torch.allclose(out.loc_map, out.plain_map)


@pytest.mark.parametrize("mode", ["learnable", "fixed"])
def test_suppressed_map_differs_from_the_plain_map_on_a_real_image(mode, real_batch):
    torch.manual_seed(0)
    model = FLRDF(small(suppression=mode), K).eval()
    with torch.no_grad():
        out = model(real_batch)
        x = model.backbone(real_batch)
    suppressed = normalize_maps(_by_hand_suppress(x, _by_hand_gate(x, mode, model.suppression)).mean(dim=1))
    assert torch.allclose(out.loc_map, suppressed, atol=1e-5)            # the map is the suppressed one ...
    assert torch.allclose(out.plain_map, normalize_maps(x.mean(dim=1)), atol=1e-5)  # ... the plain one is not
    for i in range(real_batch.shape[0]):
        assert (out.loc_map[i] - out.plain_map[i]).abs().max() > 0.05, i


def test_training_crops_the_boxes_the_model_reports(real_batch):
    """In a training step, the object branch sees crop_resize(images, boxes) of the boxes in the output,
    the boxes are the suppressed map's, and the jigsaw branch shuffles that crop."""
    from flrdf.engine.step import precision_for, train_step

    torch.manual_seed(0)
    model = FLRDF(small(jigsaw_n=4), K).train()
    seen = []
    handle = model.register_forward_hook(lambda _m, inputs, output: seen.append((inputs[0].detach().clone(), output)))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the weights stay those of the forward below
    try:
        train_step(model, real_batch, torch.tensor([0, 1]), opt, precision_for(torch.device("cpu"), False, False))
    finally:
        handle.remove()
    (images, out), = seen
    assert out.boxes is not None and out.object_images is not None
    assert torch.equal(out.object_images, crop_resize(images, out.boxes))
    up = model.cfg.map_upsample
    assert torch.equal(out.boxes, boxes_from_maps(out.loc_map, model.cfg.tau, (64, 64), upsample=up, normalize=False,
                                                  grid=model.box_grid((64, 64))))
    assert not torch.equal(out.object_images, images)  # a real crop, not the whole image
    # the object branch classifies that crop (in eval mode, so the extra backbone pass changes nothing)
    model.eval()
    with torch.no_grad():
        ev = model(images)
        again = model.heads["object"](model.pool(model.backbone(crop_resize(images, ev.boxes))))
    assert torch.allclose(ev.logits_object, again, atol=1e-5)
    assert torch.equal(ev.object_images, crop_resize(images, ev.boxes))
    # the jigsaw input is that crop, shuffled: the same patches, permuted
    perms = torch.stack([torch.randperm(16) for _ in range(2)])
    with torch.no_grad():
        ev = model(images, with_jigsaw=True, perms=perms)
    assert torch.equal(ev.jigsaw_images, shuffle_patches(ev.object_images, 4, perms=perms))


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
    torch.manual_seed(0)
    fine = FLRDF(small(backbone=backbone, layer4_stride=1), K).eval()
    coarse = FLRDF(small(backbone=backbone, layer4_stride=2), K).eval()
    coarse.load_state_dict(fine.state_dict())  # the same weights: stride is not a parameter
    x = torch.randn(1, 3, 64, 96)
    bb = fine.backbone
    with torch.no_grad():
        f3 = bb.layer3(bb.layer2(bb.layer1(bb.stem(x))))
        out, out2 = fine(x), coarse(x)
        # layer4's first block: with stride 1 its strided convolutions keep layer3's grid; the stride-2
        # model's outputs are exactly every second cell of them
        block, block2 = fine.backbone.layer4[0], coarse.backbone.layer4[0]
        down, down2 = block.downsample(f3), block2.downsample(f3)
    assert f3.shape[-2:] == (4, 6)
    assert out.loc_map.shape == out.plain_map.shape == (1, 4, 6)  # layer3's resolution: input / 16
    assert out2.loc_map.shape == (1, 2, 3)                          # input / 32
    assert down.shape[-2:] == (4, 6) and down2.shape[-2:] == (2, 3)
    assert torch.allclose(down[..., ::2, ::2], down2, rtol=1e-4, atol=1e-4)
    # the box is thresholded on the fine map (x map_upsample), in input pixels
    grid = fine.box_grid((64, 96))
    assert grid.shape == (4 * fine.cfg.map_upsample, 6 * fine.cfg.map_upsample) and grid.pitch == 16 / fine.cfg.map_upsample
    expected = boxes_from_maps(out.loc_map, fine.cfg.tau, (64, 96), upsample=fine.cfg.map_upsample, normalize=False,
                               grid=grid)
    assert torch.equal(out.boxes, expected)
    # every edge is half a cell from a cell centre of the stride-16 grid (4 px pitch), or the image border
    b = out.boxes[0]
    k = (b - grid.origin + grid.pitch / 2) / grid.pitch
    on_grid = torch.isclose(k, k.round(), atol=1e-4)
    at_border = (b == 0) | (b == torch.tensor([96.0, 64.0, 96.0, 64.0]))
    assert bool((on_grid | at_border).all()), b


@pytest.mark.parametrize("layer,stride", [("layer2", 8), ("layer3", 16)])
def test_loc_layer_maps_and_boxes_come_from_that_stage(layer, stride, real_batch):
    """model.loc_layer: the FL map is the channel mean of that stage's output, boxed on that stage's grid;
    the object branch crops those boxes; the raw branch is unchanged (it still pools suppressed layer4)."""
    torch.manual_seed(0)
    deep = FLRDF(small(layer4_stride=1), K).eval()
    model = FLRDF(small(layer4_stride=1, loc_layer=layer, tau=0.3), K).eval()
    model.load_state_dict(deep.state_dict())  # loc_layer adds no parameter
    bb = model.backbone
    with torch.no_grad():
        a2 = bb.layer2(bb.layer1(bb.stem(real_batch)))
        a3 = bb.layer3(a2)
        out, ref = model(real_batch), deep(real_batch)
    stage = a2 if layer == "layer2" else a3
    by_hand = normalize_maps(stage.mean(dim=1))
    assert out.loc_map.shape == (2, 64 // stride, 64 // stride)
    assert torch.allclose(out.loc_map, by_hand, atol=1e-6)
    assert torch.allclose(out.plain_map, by_hand, atol=1e-6)  # no suppression at this stage
    assert torch.equal(out.logits_raw, ref.logits_raw)
    assert not torch.allclose(out.loc_map[:, ::2, ::2] if layer == "layer2" else out.loc_map, ref.loc_map, atol=1e-3)
    grid = model.box_grid((64, 64))
    assert model.loc_stride == stride and grid.pitch == stride / model.cfg.map_upsample
    assert torch.equal(out.boxes, boxes_from_maps(by_hand, 0.3, (64, 64), upsample=model.cfg.map_upsample,
                                                  grid=grid, normalize=False))
    assert torch.equal(out.object_images, crop_resize(real_batch, out.boxes))
    maps = model.maps(real_batch)
    assert torch.allclose(maps[0], by_hand, atol=1e-6) and torch.allclose(maps[1], by_hand, atol=1e-6)


def test_loc_layer3_with_layer3_suppression_maps_the_suppressed_stage(real_batch):
    torch.manual_seed(0)
    model = FLRDF(small(layer4_stride=1, loc_layer="layer3", suppress_layer3=True, suppression="fixed", delta=0.5),
                  K).eval()
    bb = model.backbone
    with torch.no_grad():
        a3 = bb.layer3(bb.layer2(bb.layer1(bb.stem(real_batch))))
        out = model(real_batch)
    assert torch.allclose(out.plain_map, normalize_maps(a3.mean(dim=1)), atol=1e-6)
    assert torch.allclose(out.loc_map, normalize_maps(model.suppression3(a3).mean(dim=1)), atol=1e-6)
    assert not torch.allclose(out.loc_map, out.plain_map, atol=1e-3)


def test_unknown_loc_layer_is_a_config_error():
    from flrdf.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=re.escape("model.loc_layer must be layer4 | layer3 | layer2, got 'layer1'")):
        load_config("demo", ["model.loc_layer=layer1"])


def test_frozen_stages_keep_their_weights_and_bn_statistics(real_batch):
    """model.frozen_stages=2: stem, layer1 and layer2 are in no optimizer group, stay in eval mode
    through model.train(), and neither an SGD step nor a training forward moves them; layer3 does move."""
    from flrdf.config import OptimConfig
    from flrdf.engine.optim import build_optimizer

    torch.manual_seed(0)
    model = FLRDF(small(frozen_stages=2), K).train()
    bb = model.backbone
    frozen = {k: v.clone() for k, v in bb.state_dict().items() if k.startswith(("stem.", "layer1.", "layer2."))}
    layer3 = {k: v.clone() for k, v in bb.layer3.state_dict().items()}
    assert not bb.layer2.training and not bb.stem[1].training and bb.layer3.training
    opt = build_optimizer(model, OptimConfig())
    in_groups = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not any(id(p) in in_groups for m in (bb.stem, bb.layer1, bb.layer2) for p in m.parameters())
    assert all(id(p) in in_groups for p in bb.layer3.parameters())
    out = model(real_batch)
    flrdf_loss(out, torch.tensor([0, 1]), LossConfig())["loss_total"].backward()
    opt.step()
    assert all(torch.equal(bb.state_dict()[k], v) for k, v in frozen.items())
    assert any(not torch.equal(bb.layer3.state_dict()[k], v) for k, v in layer3.items())
    with pytest.raises(Exception, match="frozen_stages"):
        from flrdf.config import load_config
        load_config("demo", ["model.frozen_stages=4"])
