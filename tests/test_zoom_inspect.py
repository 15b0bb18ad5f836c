"""Inspect with a zoom source: the object crop is cut from the uploaded image's own pixels
(the test view rendered at the model's source_size, as ``eval`` renders it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from flrdf.config import Config
from flrdf.data import build_transform, to_uint8
from flrdf.engine.checkpoint import load_model, save_model_file
from flrdf.inspect import inspect_image
from flrdf.model import FLRDF


def model_file(tmp_path, source_size: int):
    torch.manual_seed(0)
    cfg = Config()
    cfg.model.backbone, cfg.model.pretrained, cfg.model.jigsaw_n = "resnet18", False, 4
    cfg.data.image_size, cfg.data.resize, cfg.data.source_size = 64, 72, source_size
    path = tmp_path / f"zoom{source_size}.safetensors"
    save_model_file(path, FLRDF(cfg.model, 3), cfg, ["a", "b", "c"])
    return load_model(path)


def detailed_image(side=288) -> Image.Image:
    """A photo-sized image whose centre holds a 2-px checkerboard: visible at 128 px across the
    view, averaged away at the 64 px input."""
    rng = np.random.default_rng(0)
    arr = np.full((side, side, 3), 120, np.uint8)
    yy, xx = np.mgrid[0:side, 0:side]
    board = (((yy // 2) + (xx // 2)) % 2 * 200 + 20).astype(np.uint8)
    c = side // 4
    arr[c:3 * c, c:3 * c] = board[c:3 * c, c:3 * c, None]
    arr += rng.integers(0, 3, arr.shape, dtype=np.uint8)
    return Image.fromarray(arr)


def centre_box(monkeypatch, model) -> None:
    """Fix the FL box to the centre half of the input (a random-init model's box is arbitrary)."""
    def localize(suppressed, image_hw, tau=None):
        box = torch.tensor([[16.0, 16.0, 48.0, 48.0]]).expand(suppressed.shape[0], 4)
        return model.channel_map(suppressed), box

    monkeypatch.setattr(model, "localize", localize)


def test_inspect_crop_comes_from_the_uploaded_image(tmp_path, monkeypatch):
    image = detailed_image()
    zoom, plain = model_file(tmp_path, 128), model_file(tmp_path, 0)
    centre_box(monkeypatch, zoom.model)
    centre_box(monkeypatch, plain.model)
    r = inspect_image(zoom, image, cam_methods=[])
    assert r.crop_source_px == 128 and r.crop_detail == 1.0  # 288 * 64/72 = 256 real px >= 128
    # exactly what the model gives for the eval loader's input and source
    x, _, source = build_transform(False, 72, 64, source_size=128).views(image)
    with torch.no_grad():
        out = zoom.model.eval()(x[None], with_jigsaw=False, source=source[None])
    assert np.array_equal(r.object_image, to_uint8(out.object_images)[0])
    assert r.box == [round(float(v), 2) for v in out.boxes[0]]
    # same weights, no source: the crop is the input's (the checkerboard is gone)
    p = inspect_image(plain, image, cam_methods=[])
    assert p.crop_source_px == 0 and p.crop_detail is None and p.box == r.box
    def detail(img):
        return float(np.abs(np.diff(img.astype(np.float32), axis=1)).mean())
    assert r.box == [16.0, 16.0, 48.0, 48.0]
    assert detail(r.object_image) > 25 and detail(p.object_image) < 5


def test_inspect_small_upload_reports_its_detail(tmp_path):
    zoom = model_file(tmp_path, 128)
    r = inspect_image(zoom, detailed_image(96), cam_methods=[])
    assert r.object_image.shape == (64, 64, 3)
    assert r.crop_detail == pytest.approx(96 * 64 / 72 / 128, abs=1e-4)
