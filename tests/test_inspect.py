import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from flrdf.data import build_transform
from flrdf.data.errors import ImageLoadError
from flrdf.inspect import InspectError, inspect_image, valid_grids

FIVE = ["gradcam", "gradcam++", "xgradcam", "layercam", "eigencam"]


@pytest.fixture(scope="module")
def example(examples_dir):
    entry = json.loads((examples_dir / "examples.json").read_text())[0]
    return examples_dir / entry["file"], entry["box"]


def test_result_shapes_and_contents(tiny_loaded, example):
    path, box = example
    r = inspect_image(tiny_loaded, path, cam_methods=FIVE, gt_box=box)
    s = tiny_loaded.config.data.image_size
    for img in (r.image, r.loc_overlay, r.plain_overlay, r.object_image, r.jigsaw_image):
        assert img.shape == (s, s, 3) and img.dtype == np.uint8
    assert r.loc_map.shape == r.plain_map.shape == (s, s)
    assert r.preview.shape[:2] == (96, 96) and r.original_size == (96, 96)
    assert set(r.top5) == {"raw", "object", "jigsaw", "combined"}
    for rows in r.top5.values():
        assert len(rows) == 4 and all(n in tiny_loaded.class_names for n, _ in rows)
        probs = [p for _, p in rows]
        assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-4  # 4 classes: all of them
    assert r.target == r.predicted == tiny_loaded.class_names.index(r.top5["combined"][0][0])
    assert [c.method for c in r.cams] == FIVE
    for c in r.cams:
        assert c.overlay.shape == (s, s, 3) and c.map.shape == (s, s)
        assert 0 <= c.box[0] < c.box[2] <= s and 0 <= c.box[1] < c.box[3] <= s
        assert c.iou is not None and 0 <= c.iou <= 1
    assert 0 <= r.iou <= 1
    # every stage is reported (its value is a measurement: scripts/bench_inspect.py looks at it, no test does)
    stages = {"decode", "preprocess", "flrdf forward", "cam pass", "cam methods", "cam boxes", "render", "total"}
    assert stages <= set(r.timings_ms) and list(r.timings_ms)[-1] == "total"
    assert all(isinstance(v, float) and math.isfinite(v) for v in r.timings_ms.values())
    assert [c.method for c in r.cams] == FIVE and all(math.isfinite(c.ms) for c in r.cams)
    without = inspect_image(tiny_loaded, path, cam_methods=[])
    assert "cam pass" not in without.timings_ms and list(without.timings_ms)[-1] == "total"


def test_boxes_map_back_to_the_original_image(tiny_loaded, example):
    path, box = example
    r = inspect_image(tiny_loaded, path, cam_methods=[], gt_box=box)
    cfg = tiny_loaded.config.data
    # the GT box, carried to input pixels by the test transform, is what the IoU used
    _, gt_in = build_transform(False, cfg.resize, cfg.image_size)(Image.open(path).convert("RGB"), box)
    assert np.allclose(r.gt_box, gt_in.tolist(), atol=0.01)
    # mapping FLRDF's box forward again gives the input-pixel box back
    t = build_transform(False, cfg.resize, cfg.image_size)
    off = int(round((cfg.resize - cfg.image_size) / 2))
    again = t.map_box(r.box_original, r.original_size, off, off, False)
    assert np.allclose(again.tolist(), r.box, atol=0.05)


def test_gt_box_is_carried_to_the_input_and_scored_there(tiny_loaded, example):
    """A ground-truth box in original pixels lands where the test transform's arithmetic puts it (square
    resize, centre crop: worked out here by hand), and the IoU is that box's with FLRDF's, by hand."""
    path, _ = example
    cfg = tiny_loaded.config.data
    w, h = Image.open(path).size
    gt_original = [10.0, 20.0, 70.0, 80.0]
    r = inspect_image(tiny_loaded, path, cam_methods=[], gt_box=gt_original)
    s, off = cfg.resize / w, (cfg.resize - cfg.image_size) / 2
    expect = [min(max(gt_original[0] * s - off, 0), cfg.image_size), min(max(gt_original[1] * cfg.resize / h - off, 0),
              cfg.image_size), min(max(gt_original[2] * s - off, 0), cfg.image_size),
              min(max(gt_original[3] * cfg.resize / h - off, 0), cfg.image_size)]
    assert r.gt_box == pytest.approx(expect, abs=0.01)
    bx = r.box
    inter = max(0, min(bx[2], expect[2]) - max(bx[0], expect[0])) * max(0, min(bx[3], expect[3]) - max(bx[1], expect[1]))
    union = (bx[2] - bx[0]) * (bx[3] - bx[1]) + (expect[2] - expect[0]) * (expect[3] - expect[1]) - inter
    assert r.iou == pytest.approx(inter / union, abs=1e-3)


def test_jigsaw_is_reproducible_per_seed(tiny_loaded, example):
    path, _ = example
    a = inspect_image(tiny_loaded, path, cam_methods=[], seed=3)
    b = inspect_image(tiny_loaded, path, cam_methods=[], seed=3)
    c = inspect_image(tiny_loaded, path, cam_methods=[], seed=4)
    assert a.permutation == b.permutation and np.array_equal(a.jigsaw_image, b.jigsaw_image)
    assert a.permutation != c.permutation
    assert sorted(a.permutation) == list(range(16))
    one = inspect_image(tiny_loaded, path, cam_methods=[], jigsaw_n=1)
    assert one.permutation is None and np.array_equal(one.jigsaw_image, one.object_image)


def test_target_and_settings(tiny_loaded, example):
    path, _ = example
    r = inspect_image(tiny_loaded, path, tau=0.9, jigsaw_n=8, target=2, cam_methods=["gradcam"])
    assert (r.target, r.tau, r.jigsaw_n) == (2, 0.9, 8)
    assert valid_grids(64) == [1, 2, 4, 8, 16]
    with pytest.raises(InspectError, match="does not tile"):
        inspect_image(tiny_loaded, path, jigsaw_n=3)
    with pytest.raises(InspectError, match="out of range"):
        inspect_image(tiny_loaded, path, target=4)
    with pytest.raises(InspectError, match="tau"):
        inspect_image(tiny_loaded, path, tau=1.5)
    with pytest.raises(ValueError, match="unknown CAM method"):
        inspect_image(tiny_loaded, path, cam_methods=["magic"])
    with pytest.raises(InspectError, match="ground-truth box"):
        inspect_image(tiny_loaded, path, gt_box=[5, 5, 1, 1])


def test_pil_and_bytes_inputs(tiny_loaded, example):
    path, _ = example
    a = inspect_image(tiny_loaded, Image.open(path), cam_methods=[])
    b = inspect_image(tiny_loaded, path.read_bytes(), cam_methods=[])
    assert a.box == b.box and np.array_equal(a.image, b.image)


@pytest.mark.parametrize("kind", ["one_pixel", "rgba", "16bit", "cmyk"])
def test_unusual_images_work(tiny_loaded, odd_images, kind):
    r = inspect_image(tiny_loaded, odd_images[kind], cam_methods=["gradcam"])
    w, h = Image.open(odd_images[kind]).size
    assert r.original_size == (w, h) and r.image.shape == (64, 64, 3)
    x1, y1, x2, y2 = r.box_original
    assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h


@pytest.mark.parametrize("kind, message", [("not_image", "not a readable image"), ("truncated", "cannot decode"),
                                           ("huge", "decompression bomb")])
def test_bad_images_are_refused_readably(tiny_loaded, bad_inputs, kind, message):
    with pytest.raises(ImageLoadError, match=message):
        inspect_image(tiny_loaded, bad_inputs[kind])


def test_no_gradients_or_hooks_left(tiny_loaded, example):
    inspect_image(tiny_loaded, example[0], cam_methods=FIVE)
    m = tiny_loaded.model
    assert all(p.grad is None for p in m.parameters())
    assert not m.backbone.layer4._forward_hooks
    assert not m.training and torch.is_grad_enabled()


def test_a_layer2_map_model_is_inspected_on_its_own_grid(tiny_loaded, example):
    """model.loc_layer=layer2: Inspect's box is the layer2 map's (the model's own forward, on the
    stride-8 grid) and the captions name the map."""
    import copy

    from dashboard.inspect_view import cam_gallery, status_text

    loaded = copy.deepcopy(tiny_loaded)
    loaded.model.cfg.loc_layer = "layer2"
    loaded.config.model.loc_layer = "layer2"
    path, box = example
    r = inspect_image(loaded, path, cam_methods=["gradcam"], gt_box=box)
    assert r.map_source == "layer2, no suppression"
    assert loaded.model.box_grid((64, 64)).shape == (8 * 4, 8 * 4)
    t = build_transform(False, 72, 64)
    x, _ = t(Image.open(path).convert("RGB"))
    with torch.no_grad():
        out = loaded.model(x[None])
    assert torch.allclose(torch.tensor(r.box), out.boxes[0], atol=1e-4)
    assert out.loc_map.shape == (1, 8, 8)
    assert cam_gallery(r)[0][1].startswith("paper's map X'")   # the paper's map first, then the box source
    assert cam_gallery(r)[1][1].startswith("box source: layer2 channel-mean map (beyond the paper)")
    assert "box source: layer2 channel-mean map (beyond the paper)" in status_text(r, "tiny")


def test_a_ddt_map_model_is_inspected_with_its_own_statistics(tiny_loaded, example):
    """model.loc_map=ddt: Inspect's map and box are the model's DDT map (statistics from training
    batches) and the captions say DDT."""
    import copy

    from dashboard.inspect_view import cam_gallery, status_text
    from flrdf.ddt import DescriptorPCA

    loaded = copy.deepcopy(tiny_loaded)
    m = loaded.model
    m.cfg.loc_layer, m.cfg.loc_map, m.cfg.tau = "layer2", "ddt", 0.1
    loaded.config.model.loc_layer, loaded.config.model.loc_map = "layer2", "ddt"
    m.ddt = DescriptorPCA(m.backbone.out_channels // 4)
    path, box = example
    t = build_transform(False, 72, 64)
    x, _ = t(Image.open(path).convert("RGB"))
    with torch.no_grad():
        m.ddt.update(m.features(torch.stack([x, x.flip(-1)])).loc)
        out = m(x[None])
    r = inspect_image(loaded, path, cam_methods=["gradcam"], gt_box=box)
    assert r.map_source == "layer2, no suppression, DDT"
    assert torch.allclose(torch.tensor(r.box), out.boxes[0], atol=1e-4)
    assert cam_gallery(r)[1][1].startswith("box source: layer2 DDT map (beyond the paper)")
    assert "box source: layer2 DDT map (beyond the paper)" in status_text(r, "tiny")


def test_a_refining_model_shows_its_refined_box_and_the_map_box_it_crops(examples_dir):
    """model.box_refine=grabcut (the bundled demo model): the FLRDF box is GrabCut's, the map's own box
    (the object crop's) is kept beside it, and every view says which is which."""
    from pathlib import Path

    from dashboard.inspect_view import MAP_BOX_RGB, cam_gallery, cam_table, draw_boxes, status_text
    from flrdf.engine.checkpoint import load_model

    loaded = load_model(Path(__file__).resolve().parents[1] / "assets" / "demo_model.safetensors")
    loaded.model.cfg.box_refine = "grabcut"
    entry = json.loads((examples_dir / "examples.json").read_text())[2]
    r = inspect_image(loaded, examples_dir / entry["file"], cam_methods=["gradcam"], gt_box=entry["box"])
    assert r.box_refine == "grabcut" and r.map_box is not None and r.map_box != r.box
    d = loaded.config.data
    x, gt, source = build_transform(False, d.resize, d.image_size, source_size=d.source_size).views(
        Image.open(examples_dir / entry["file"]).convert("RGB"), entry["box"])
    with torch.no_grad():
        out = loaded.model(x[None], source=source[None])
    assert torch.allclose(torch.tensor(r.box), out.boxes[0], atol=0.01)
    assert torch.allclose(torch.tensor(r.map_box), out.map_boxes[0], atol=0.01)
    assert r.iou is not None and r.map_iou is not None
    assert cam_gallery(r)[1][1].startswith("box source: layer2 DDT map + GrabCut (beyond the paper)")
    table = cam_table(r)
    assert list(table["method"][:2]) == ["FLRDF (box source: layer2 DDT map + GrabCut (beyond the paper))",
                                         "FLRDF map box (object crop)"]
    assert "+ GrabCut" in status_text(r, "demo") and f"(map box {r.map_iou:.2f})" in status_text(r, "demo")
    drawn = draw_boxes(r.loc_overlay, r.box, r.gt_box, r.map_box)
    assert (drawn == np.array(MAP_BOX_RGB, np.uint8)).all(axis=-1).any()
    assert not np.array_equal(drawn, draw_boxes(r.loc_overlay, r.box, r.gt_box))
    # the same model without refinement: one box, no map-box row
    loaded.model.cfg.box_refine = "none"
    plain = inspect_image(loaded, examples_dir / entry["file"], cam_methods=[], gt_box=entry["box"])
    assert plain.map_box is None and plain.box == r.map_box
    assert "FLRDF map box (object crop)" not in list(cam_table(plain)["method"])
