"""Zoom with real detail (issue 12, section 3): the loader's source view is the input view at a
higher resolution, and the model's object crop is cut from it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from flrdf.boxes import crop_resize
from flrdf.config import ConfigError, ModelConfig, load_config
from flrdf.data import build_transform
from flrdf.jigsaw import shuffle_patches
from flrdf.model import FLRDF
from flrdf.zoom import crop_from_source, source_boxes

PLAIN = dict(mean=(0, 0, 0), std=(1, 1, 1))


def photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth but asymmetric test picture (low-frequency noise + a ramp), so a view that
    forgot the flip or shifted the crop differs clearly from the right one."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(1, 3, 12, 12, generator=g)
    img = F.interpolate(noise, size=(height, width), mode="bicubic", align_corners=False)[0]
    img = 0.6 * img + 0.4 * torch.linspace(0, 1, width).view(1, 1, width)
    arr = (img.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(arr)


def down(source: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(source[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


@pytest.mark.parametrize("source_size", [224, 336])
def test_source_downscaled_is_the_input_view_for_random_crops_and_flips(source_size):
    image = photo(420, 300, seed=1)
    transform = build_transform(True, 128, 112, source_size=source_size, **PLAIN)
    plain = build_transform(True, 128, 112, **PLAIN)
    box = (40.0, 60.0, 200.0, 250.0)
    flips = set()
    for seed in range(10):
        torch.manual_seed(seed)
        x, b, source = transform.views(image, box)
        torch.manual_seed(seed)
        x_old, b_old = plain(image, box)
        # the input view and its box are exactly today's
        assert torch.equal(x, x_old) and torch.equal(b, b_old)
        assert source.shape == (3, source_size, source_size) and source.dtype == torch.float32
        diff = (down(source, 112) - x).abs()
        assert float(diff.mean()) < 0.005 and float(diff.max()) < 0.03, (seed, float(diff.mean()), float(diff.max()))
        # a mirrored source would not match: the flip really is shared
        mirrored = (down(source.flip(-1), 112) - x).abs().mean()
        assert float(mirrored) > 5 * float(diff.mean())
        torch.manual_seed(seed)
        flips.add(bool(transform._params()[2]))
    assert flips == {True, False}


def test_test_transform_source_and_small_images():
    big = photo(640, 480, seed=2)
    transform = build_transform(False, 128, 112, source_size=224, **PLAIN)
    x, b, source = transform.views(big, None)
    assert b is None and source.shape == (3, 224, 224)
    assert float((down(source, 112) - x).abs().mean()) < 0.01
    assert transform.source_detail(big.size) == 1.0  # 480 * 112/128 = 420 real pixels >= 224
    # an image smaller than the source: the tensor keeps its size, the detail is the image's own
    small = photo(150, 150, seed=3)
    x, _, source = transform.views(small, None)
    assert source.shape == (3, 224, 224)
    assert transform.source_detail(small.size) == pytest.approx(150 * 112 / 128 / 224)
    assert float((down(source, 112) - x).abs().mean()) < 0.01
    # no source size: views is __call__ plus None
    x0, b0, s0 = build_transform(False, 128, 112, **PLAIN).views(big, (100, 120, 300, 400))
    sx, sy = 128 / 640, 128 / 480
    assert s0 is None and b0.tolist() == pytest.approx([100 * sx - 8, 120 * sy - 8, 300 * sx - 8, 400 * sy - 8])


def test_source_size_is_checked():
    with pytest.raises(ValueError, match=r"source_size must be 0 \(off\) or an integer >= crop \(112\)"):
        build_transform(True, 128, 112, source_size=64)
    with pytest.raises(ValueError, match="source_size"):
        build_transform(True, 128, 112, source_size=-1)
    assert load_config("cub").data.source_size == 0  # off in the paper configs
    assert load_config("demo").data.source_size == 336  # the demo zooms from a 3x source
    assert load_config("demo", ["data.source_size=0"]).data.source_size == 0
    assert load_config("cub", ["data.source_size=null"]).data.source_size is None
    with pytest.raises(ConfigError, match=r"data.source_size must be 0/null \(off\) or >= data.image_size \(448\)"):
        load_config("cub", ["data.source_size=224"])


# ---------------------------------------------------------------- the crop from the source
def smooth_batch(b=3, size=64, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.randn(b, 3, 8, 8, generator=g), size=(size, size), mode="bicubic", align_corners=False)


def test_crop_from_a_2x_upsampled_source_equals_the_input_crop():
    images = smooth_batch()
    source = F.interpolate(images, scale_factor=2, mode="bilinear", align_corners=False)
    boxes = torch.tensor([[0.0, 0.0, 64.0, 64.0], [10.0, 5.0, 30.0, 45.0], [33.5, 20.25, 60.0, 41.0]])
    assert source_boxes(boxes, (64, 64), (128, 128)).tolist()[2] == [67.0, 40.5, 120.0, 82.0]
    old = crop_resize(images, boxes)
    new = crop_from_source(source, boxes, (64, 64))
    assert new.shape == old.shape
    err = (new - old).abs()
    assert float(err.mean()) < 0.02 * float(old.abs().mean()) + 1e-3 and float(err.max()) < 0.1


def checker_source(b=2, size=128) -> torch.Tensor:
    """A 1-px checkerboard: at half the resolution (2x2 area average) it is perfectly flat."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    board = ((yy + xx) % 2).float() * 2 - 1
    return board.expand(b, 3, size, size).clone()


def test_detail_only_in_the_source_survives_the_crop():
    source = checker_source()
    images = F.avg_pool2d(source, 2)  # what the input view holds: no trace of the checkerboard
    assert float(images.abs().max()) == 0.0
    boxes = torch.tensor([[8.0, 8.0, 24.0, 24.0], [30.0, 10.0, 62.0, 42.0]])
    old = crop_resize(images, boxes)
    new = crop_from_source(source, boxes, (64, 64))
    assert float(old.abs().max()) == 0.0
    # neighbouring output pixels alternate strongly: the pattern is there
    assert float((new[..., :, 1:] - new[..., :, :-1]).abs().mean()) > 0.3


def model_with_boxes(monkeypatch, boxes: torch.Tensor, **cfg) -> FLRDF:
    torch.manual_seed(0)
    model = FLRDF(ModelConfig(backbone="resnet18", pretrained=False, jigsaw_n=2, **cfg), 5)

    def localize(suppressed, image_hw, tau=None):
        return model.channel_map(suppressed), boxes.to(suppressed.device)

    monkeypatch.setattr(model, "localize", localize)
    return model


def test_model_cuts_object_and_jigsaw_from_the_source(monkeypatch):
    boxes = torch.tensor([[8.0, 8.0, 24.0, 24.0], [30.0, 10.0, 62.0, 42.0]])
    model = model_with_boxes(monkeypatch, boxes).eval()
    source = checker_source()
    images = F.avg_pool2d(source, 2)
    perms = torch.tensor([[3, 2, 1, 0], [1, 0, 3, 2]])
    with torch.no_grad():
        plain = model(images, with_jigsaw=True, perms=perms)
        zoom = model(images, with_jigsaw=True, perms=perms, source=source)
    assert torch.equal(plain.logits_raw, zoom.logits_raw)  # the raw branch is unchanged
    assert torch.equal(plain.boxes, zoom.boxes)
    assert float(plain.object_images.abs().max()) == 0.0
    assert torch.allclose(zoom.object_images, crop_from_source(source, boxes, (64, 64)))
    assert float((zoom.object_images[..., 1:] - zoom.object_images[..., :-1]).abs().mean()) > 0.3
    assert torch.equal(zoom.jigsaw_images, shuffle_patches(zoom.object_images, 2, perms=perms))
    assert not torch.allclose(plain.logits_object, zoom.logits_object)


def test_model_with_an_upsampled_source_matches_the_old_path_and_trains():
    torch.manual_seed(0)
    model = FLRDF(ModelConfig(backbone="resnet18", pretrained=False, jigsaw_n=2, layer4_stride=1), 5).eval()
    images = smooth_batch(seed=4)
    source = F.interpolate(images, scale_factor=2, mode="bilinear", align_corners=False)
    with torch.no_grad():
        old = model(images)
        new = model(images, source=source)
    assert torch.equal(old.boxes, new.boxes)
    err = (new.object_images - old.object_images).abs()
    assert float(err.mean()) < 0.02 * float(old.object_images.abs().mean()) + 1e-3
    # training: gradients reach every head; none flows into the source
    model.train()
    source.requires_grad_(True)
    out = model(images, source=source)
    (out.logits_raw.sum() + out.logits_object.sum() + out.logits_jigsaw.sum()).backward()
    assert all(model.heads[k].weight.grad is not None for k in ("raw", "object", "jigsaw"))
    assert source.grad is None


def test_bad_sources_are_refused():
    model = FLRDF(ModelConfig(backbone="resnet18", pretrained=False, jigsaw_n=2), 5).eval()
    images = torch.randn(2, 3, 64, 64)
    with pytest.raises(ValueError, match=r"source batch/channels \(3, 3\) do not match the input's \(2, 3\)"):
        model(images, source=torch.randn(3, 3, 128, 128))
    with pytest.raises(ValueError, match=r"source \(32x32\) is smaller than the input \(64x64\)"):
        model(images, source=torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"source must be a \(B, C, H, W\) batch"):
        model(images, source=torch.randn(3, 128, 128))
