"""DDT (flrdf.ddt): the principal direction, its sign, the map, the running statistics, and the
model option ``model.loc_map=ddt`` (training updates them, evaluation uses them, the checkpoint keeps them)."""
import re

import numpy as np
import pytest
import torch

from flrdf.boxes import boxes_from_maps
from flrdf.config import ConfigError, ModelConfig, load_config
from flrdf.ddt import (DescriptorPCA, border_below_average, descriptor_moments, first_component, orient, positive_part,
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


def numpy_moments(f):
    """Mean and second moment of a (B, C, h, w) batch's cell descriptors, in numpy from the raw values."""
    d = np.moveaxis(f.numpy().astype(np.float64), 1, -1).reshape(-1, f.shape[1])
    return d.mean(axis=0), d.T @ d / len(d)


def numpy_direction(mean, second):
    return np.linalg.eigh(second - np.outer(mean, mean))[1][:, -1]


def test_running_statistics_are_an_ema_of_the_raw_moments_and_need_a_first_batch():
    f, offset, _ = scene()
    pca = DescriptorPCA(8, momentum=0.25)
    with pytest.raises(RuntimeError, match="no descriptor statistics"):
        pca(f)
    batches = [f[:3], f[3:5], f[5:]]
    mean, second = numpy_moments(batches[0])
    for i, b in enumerate(batches):
        pca.update(b)
        if i:
            m, s = numpy_moments(b)
            mean, second = 0.75 * mean + 0.25 * m, 0.75 * second + 0.25 * s
        np.testing.assert_allclose(pca.mean.numpy(), mean, atol=1e-6)
        np.testing.assert_allclose(pca.second.numpy(), second, atol=1e-5)
        assert abs(float(pca.direction.numpy() @ numpy_direction(mean, second))) > 0.9999
    assert int(pca.batches) == 3
    assert float(pca.direction @ offset.double()) > 0  # object positive
    assert border_below_average(project(f, pca.mean, pca.direction))


def test_fp16_autocast_statistics_and_maps_are_finite_and_match_fp32():
    """A batch whose fp16 Gram matrix overflows (layer2-like: 4,096 cells, activations up to ~30): under
    CPU fp16 autocast the moments, the direction and the maps equal the fp32 ones."""
    g = torch.Generator().manual_seed(0)
    f = (torch.relu(torch.randn(4, 16, 32, 32, generator=g) * 3 + 1) * 4)
    f[:, :, 10:20, 12:22] += 6.0 * torch.rand(16, generator=g)[:, None, None]
    half = f.half()  # what an fp16 network hands over
    d = half.permute(0, 2, 3, 1).reshape(-1, 16)
    with torch.autocast("cpu", dtype=torch.float16):
        assert not torch.isfinite(d.float().T @ d.float()).all()  # the naive product overflows under autocast
        fp16 = DescriptorPCA(16)
        fp16.update(half)
        fp16.update(half.flip(-1))
        maps16 = fp16(half)
    fp32 = DescriptorPCA(16)
    fp32.update(half.float())
    fp32.update(half.float().flip(-1))
    maps32 = fp32(half.float())
    for name in ("mean", "second", "direction"):
        assert torch.isfinite(getattr(fp16, name)).all(), name
    assert torch.allclose(fp16.mean, fp32.mean, rtol=1e-5) and torch.allclose(fp16.second, fp32.second, rtol=1e-5)
    assert float(fp16.direction @ fp32.direction) > 0.99999
    assert maps16.dtype == torch.float32 and torch.isfinite(maps16).all()
    assert torch.allclose(maps16, maps32, atol=1e-4)


def test_the_sign_never_flips_once_statistics_exist():
    """Batches whose object covers the border and leaves the centre empty: alone, each would orient the
    direction the other way (the border test inverts); the running direction keeps its sign."""
    f, offset, _ = scene(n=8, hw=12, seed=1)
    g = torch.Generator().manual_seed(5)
    inverted = torch.randn(4, 8, 12, 12, generator=g) * 0.3 + offset[None, :, None, None] * 3
    inverted[:, :, 3:9, 3:9] -= offset[:, None, None] * 3  # the same offset everywhere but the centre
    pca = DescriptorPCA(8, momentum=0.2)
    pca.update(f)
    first = pca.direction.clone()
    assert float(first @ offset.double()) > 0
    for _ in range(4):
        mean, second = descriptor_moments(inverted)
        alone = first_component(mean, second)
        alone = alone if border_below_average(project(inverted, mean, alone)) else -alone
        assert float(alone @ offset.double()) < 0  # the per-batch rule would invert the map
        previous = pca.direction.clone()
        pca.update(inverted)
        assert float(pca.direction @ previous) > 0
        assert float(pca.direction @ offset.double()) > 0
        pca.update(f)
    assert torch.allclose(orient(-first, first, torch.ones(8), False), first)


@pytest.mark.parametrize("hw", [(2, 2), (1, 5), (6, 2), (2, 1)])
def test_tiny_maps_take_the_sign_that_agrees_with_the_channel_mean(hw):
    """<= 2 rows or columns: every cell is on the border and the border test ties; the first direction's
    components sum to >= 0, so its projection rises with the channel mean (the paper's map)."""
    for seed in range(12):
        g = torch.Generator().manual_seed(seed)
        f = torch.relu(torch.randn(3, 8, *hw, generator=g))
        pca = DescriptorPCA(8)
        pca.update(f)
        v = pca.direction
        assert float(v.sum()) >= 0, seed
        p = project(f, pca.mean, v).flatten()
        cm = f.mean(dim=1).flatten()
        assert float(((p - p.mean()) * (cm - cm.mean())).sum()) >= 0, seed
    assert torch.equal(orient(-v, None, torch.zeros(8, dtype=v.dtype), True), v)  # whatever sign eigh returns


def _ddp_worker(rank, world, init, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        pca = DescriptorPCA(8, momentum=0.3)
        for step in range(3):
            pca.update(ddp_batch(rank, step))
        torch.save({k: v.clone() for k, v in pca.state_dict().items()}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def ddp_batch(rank, step):
    """Rank-specific data: another seed, another batch size, another offset."""
    f, _, _ = scene(n=2 + rank, hw=10, seed=10 * step + rank)
    return f + rank


def test_ddp_ranks_hold_the_statistics_of_all_ranks_data(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, f"file://{tmp_path}/pg", str(tmp_path)), nprocs=2, join=True)
    states = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for name in ("mean", "second", "direction", "batches"):
        assert torch.equal(states[0][name], states[1][name]), name
    mean = second = None
    for step in range(3):
        m, s = numpy_moments(torch.cat([ddp_batch(r, step) for r in (0, 1)]))
        mean, second = (m, s) if step == 0 else (0.7 * mean + 0.3 * m, 0.7 * second + 0.3 * s)
    np.testing.assert_allclose(states[0]["mean"].numpy(), mean, atol=1e-6)
    np.testing.assert_allclose(states[0]["second"].numpy(), second, rtol=1e-5, atol=1e-5)
    assert abs(float(states[0]["direction"].numpy() @ numpy_direction(mean, second))) > 0.9999


def test_the_shipped_examples_one_at_a_time_keep_the_demo_maps():
    """The bundled demo model, its statistics updated with one shipped example at a time (the smallest
    batch): two of the twelve fail the border test alone, yet the direction never flips and the maps'
    boxes stay as good as with the shipped statistics."""
    import json
    from pathlib import Path

    from PIL import Image

    from flrdf.boxes import box_iou
    from flrdf.data import build_transform
    from flrdf.engine.checkpoint import load_model

    assets = Path(__file__).resolve().parents[1] / "assets"
    loaded = load_model(assets / "demo_model.safetensors")
    model, d = loaded.model.eval(), loaded.config.data
    t = build_transform(False, d.resize, d.image_size)
    entries = json.loads((assets / "examples" / "examples.json").read_text())
    views = [t.views(Image.open(assets / "examples" / e["file"]).convert("RGB"), e["box"]) for e in entries]
    x = torch.stack([v[0] for v in views])
    gt = torch.stack([torch.as_tensor(v[1]).view(4) for v in views])
    with torch.no_grad():
        loc = model.features(x).loc

    def mean_iou():
        _, boxes = model.localize(loc, tuple(x.shape[-2:]))
        return float(torch.stack([box_iou(boxes[i:i + 1], gt[i:i + 1]).flatten()[0] for i in range(len(x))]).mean())

    ddt = model.ddt
    shipped, before = ddt.direction.clone(), mean_iou()
    alone = [border_below_average(project(loc[i:i + 1], ddt.mean, ddt.direction)) for i in range(len(x))]
    assert alone.count(False) == 2
    for i in range(len(x)):
        ddt.update(loc[i:i + 1])
        assert float(ddt.direction @ shipped) > 0.99, entries[i]["file"]
        assert mean_iou() > before - 0.01, entries[i]["file"]


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


def test_runtime_amp_dtype_fp16_trains_a_ddt_model_on_the_cpu(real_batch):
    """``runtime.amp_dtype=fp16`` forces fp16 autocast with a gradient scaler on any device (the precision of
    GPUs without bf16, checked on the CPU): a DDT model's training step keeps finite statistics."""
    from flrdf.engine.step import precision_for, train_step

    prec = precision_for(torch.device("cpu"), True, True, "fp16")
    assert prec.dtype is torch.float16 and prec.scaler is not None and not prec.channels_last
    assert precision_for(torch.device("cpu"), True, True, "auto").dtype is None  # auto: AMP on CUDA only
    assert precision_for(torch.device("cpu"), False, True, "fp16").dtype is None  # runtime.amp=false wins
    torch.manual_seed(0)
    model = FLRDF(ModelConfig(backbone="resnet18", pretrained=False, jigsaw_n=2, loc_layer="layer2", loc_map="ddt"), 5)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    small = torch.nn.functional.interpolate(real_batch, size=32, mode="area")  # fp16 convolutions are slow on a CPU
    for _ in range(2):
        terms = train_step(model.train(), small, torch.tensor([0, 1]), opt, prec)
        assert torch.isfinite(terms["loss_total"])
    assert int(model.ddt.batches) == 2 and all(torch.isfinite(b).all() for b in model.ddt.buffers())
    assert torch.isclose(model.ddt.direction.norm(), torch.tensor(1.0, dtype=torch.float64))
    with pytest.raises(ConfigError, match=re.escape("runtime.amp_dtype must be auto | bf16 | fp16, got 'half'")):
        load_config("demo", ["runtime.amp_dtype=half"])
