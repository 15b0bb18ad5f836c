"""DDT (flrdf.ddt): the principal direction, its sign, the map, the running statistics, and the
model option ``model.loc_map=ddt`` (training updates them, evaluation uses them, the checkpoint keeps them)."""
import re

import pytest
import torch

from flrdf.boxes import boxes_from_maps
from flrdf.config import ConfigError, ModelConfig, load_config
from flrdf.ddt import (DescriptorPCA, border_below_average, descriptor_moments, first_component, positive_part,
                       project)
from flrdf.model import FLRDF


def scene(n=6, c=8, hw=12, seed=0):
    """Feature maps of a square 'object' on noise: object cells share one descriptor offset."""
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(n, c, hw, hw, generator=g) * 0.3
    offset = torch.randn(c, generator=g)
    boxes = []
    for i in range(n):
        y, x = 2 + i % 4, 3 + (i * 2) % 4
        f[i, :, y:y + 5, x:x + 4] += offset[:, None, None] * 3
        boxes.append((x, y, x + 4, y + 5))
    return f, offset, boxes


def test_moments_and_first_component_match_a_hand_pca():
    f, offset, _ = scene()
    mean, second = descriptor_moments(f)
    d = f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]).double()
    assert torch.allclose(mean, d.mean(0), atol=1e-6)
    v = first_component(mean, second)
    ref = torch.linalg.svd(d - d.mean(0), full_matrices=False).Vh[0]
    assert torch.isclose(v.norm(), torch.tensor(1.0, dtype=v.dtype))
    assert abs(float(v @ ref)) > 0.999
    assert abs(float(v @ offset.double() / offset.norm())) > 0.95  # the object's offset is the main direction


def test_the_sign_puts_the_object_positive_and_the_map_is_its_positive_part():
    f, offset, boxes = scene()
    mean, second = descriptor_moments(f)
    v = first_component(mean, second)
    for sign in (1, -1):
        p = project(f, mean, sign * v)
        assert border_below_average(p) == (float(sign * v @ offset.double()) > 0)
    v = v if border_below_average(project(f, mean, v)) else -v
    m = positive_part(project(f, mean, v))
    assert m.min() >= 0 and torch.allclose(m.flatten(1).amax(1), torch.ones(len(m)))
    got = boxes_from_maps(m, 0.5, (12, 12), normalize=False)
    assert got.tolist() == [list(map(float, b)) for b in boxes]
    assert positive_part(-torch.ones(1, 3, 3)).abs().sum() == 0  # nothing positive: an empty map


def test_running_statistics_are_an_ema_and_need_a_first_batch():
    f, _, _ = scene()
    pca = DescriptorPCA(8, momentum=0.25)
    with pytest.raises(RuntimeError, match="no descriptor statistics"):
        pca(f)
    pca.update(f[:3])
    m1, s1 = descriptor_moments(f[:3])
    assert torch.allclose(pca.mean, m1) and torch.allclose(pca.second, s1)
    pca.update(f[3:])
    m2, s2 = descriptor_moments(f[3:])
    assert torch.allclose(pca.mean, 0.75 * m1 + 0.25 * m2) and torch.allclose(pca.second, 0.75 * s1 + 0.25 * s2)
    assert int(pca.batches) == 2
    assert torch.allclose(pca.direction.abs(), first_component(pca.mean, pca.second).abs())
    assert border_below_average(project(f, pca.mean, pca.direction))


def test_model_trains_the_statistics_boxes_from_them_and_keeps_them_in_its_state(real_batch):
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="resnet18", pretrained=False, jigsaw_n=2, loc_layer="layer2", loc_map="ddt", tau=0.2)
    model = FLRDF(cfg, 5)
    assert model.map_source == "layer2, no suppression, DDT"
    model.train()
    model(real_batch)
    assert int(model.ddt.batches) == 1
    model.eval()
    with torch.no_grad():
        out = model(real_batch)
        bb = model.backbone
        a2 = bb.layer2(bb.layer1(bb.stem(real_batch)))
    assert int(model.ddt.batches) == 1  # evaluation does not update
    by_hand = positive_part(project(a2, model.ddt.mean, model.ddt.direction))
    assert torch.allclose(out.loc_map, by_hand, atol=1e-5)
    assert torch.equal(out.boxes, boxes_from_maps(by_hand, 0.2, (64, 64), upsample=cfg.map_upsample,
                                                  normalize=False, grid=model.box_grid((64, 64))))
    assert torch.allclose(model.maps(real_batch)[0], by_hand, atol=1e-5)
    clone = FLRDF(cfg, 5).eval()
    clone.load_state_dict(model.state_dict())
    assert torch.equal(clone.ddt.direction, model.ddt.direction) and int(clone.ddt.batches) == 1
    with torch.no_grad():
        assert torch.allclose(clone(real_batch).loc_map, out.loc_map)


def test_a_model_never_trained_with_ddt_says_so():
    model = FLRDF(ModelConfig(backbone="resnet18", pretrained=False, jigsaw_n=2, loc_map="ddt"), 5).eval()
    with pytest.raises(RuntimeError, match="model.loc_map=ddt has no descriptor statistics"):
        model(torch.randn(1, 3, 64, 64))


def test_loc_map_is_validated():
    with pytest.raises(ConfigError, match=re.escape("model.loc_map must be mean | ddt, got 'pca'")):
        load_config("demo", ["model.loc_map=pca"])
    with pytest.raises(ConfigError, match="model.ddt_momentum"):
        load_config("demo", ["model.ddt_momentum=0"])


def test_a_half_model_file_keeps_the_ddt_statistics_exact(tmp_path, real_batch):
    from flrdf.config import Config
    from flrdf.engine.checkpoint import load_model, save_model_file

    torch.manual_seed(0)
    cfg = Config()
    cfg.model.backbone, cfg.model.pretrained, cfg.model.jigsaw_n = "resnet18", False, 2
    cfg.model.loc_layer, cfg.model.loc_map = "layer2", "ddt"
    model = FLRDF(cfg.model, 5).train()
    model(real_batch)
    save_model_file(tmp_path / "m.safetensors", model.eval(), cfg, [str(i) for i in range(5)], half=True)
    loaded = load_model(tmp_path / "m.safetensors").model
    assert loaded.backbone.layer1[0].conv1.weight.dtype == torch.float32
    for name in ("mean", "second", "direction"):
        assert torch.equal(getattr(loaded.ddt, name), getattr(model.ddt, name)), name
    assert int(loaded.ddt.batches) == 1
