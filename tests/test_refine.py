"""flrdf.refine (GrabCut box refinement) and boxes.map_to_image: the maths alone, then in the model."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from flrdf.boxes import box_grid, box_iou, boxes_from_maps, map_to_image
from flrdf.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from flrdf.refine import (RefineSettings, grabcut_box, largest_region_box, reaches_frame, refine_boxes, seed_mask,
                          working_area, working_size)

ASSETS = Path(__file__).resolve().parents[1] / "assets"


@pytest.fixture(scope="module")
def demo_views():
    """The shipped examples as the bundled demo model sees them: input, zoom source, ground-truth boxes."""
    import json

    from PIL import Image

    from flrdf.data import build_transform
    from flrdf.engine.checkpoint import load_model

    d = load_model(ASSETS / "demo_model.safetensors").config.data
    folder = ASSETS / "examples"
    t = build_transform(False, d.resize, d.image_size, source_size=d.source_size)
    views = [t.views(Image.open(folder / e["file"]).convert("RGB"), e["box"])
             for e in json.loads((folder / "examples.json").read_text())]
    return (torch.stack([v[0] for v in views]), torch.stack([v[2] for v in views]),
            torch.stack([v[1].view(4) for v in views]))


def test_map_to_image_puts_each_cell_on_its_receptive_field_centre():
    grid = box_grid(8, (112, 112))
    m = torch.zeros(2, 14, 14)
    m[0, 5, 9] = 1.0
    m[1] = 0.25
    out = map_to_image(m, grid)
    assert out.shape == (2, 112, 112)
    # cell (5, 9) is centred on pixel (5*8 + 0.5, 9*8 + 0.5): pixel row 40, column 72 holds its value
    assert divmod(int(out[0].argmax()), 112) == (40, 72) and float(out[0, 40, 72]) == pytest.approx(1.0)
    assert float(out[0, 40, 76]) == pytest.approx(0.5, abs=1e-5)  # half-way to the next centre
    assert torch.allclose(out[1], torch.full((112, 112), 0.25))
    # resampled to 56 px: the same geometry, half as many pixels
    half = map_to_image(m, grid, (56, 56))
    # its pixel (20, 36) is centred on input pixel (41, 73): cell (5.0625, 9.0625), bilinear weight 0.9375^2
    assert half.shape == (2, 56, 56) and float(half[0, 20, 36]) == pytest.approx(0.9375 ** 2, abs=1e-5)
    with pytest.raises(ValueError, match="does not match its box grid"):
        map_to_image(torch.zeros(1, 7, 7), grid)


def test_seed_mask_labels_each_region():
    prob = np.zeros((40, 40), np.float32)
    prob[10:20, 10:20] = 0.3
    prob[13:17, 13:17] = 0.9
    prob[30:35, 30:35] = 0.9          # a strong response outside the map's box: not a seed
    mask = seed_mask(prob, (10, 10, 20, 20), tau=0.2, settings=RefineSettings(sure=0.6, margin=0.5))
    assert mask[0, 0] == cv2.GC_BGD and mask[32, 32] == cv2.GC_BGD      # outside the grown box
    assert mask[6, 6] == cv2.GC_PR_BGD and mask[24, 24] == cv2.GC_PR_BGD  # the 5 px margin
    assert mask[5, 5] == cv2.GC_PR_BGD and mask[4, 4] == cv2.GC_BGD
    assert mask[11, 11] == cv2.GC_PR_FGD and mask[14, 14] == cv2.GC_FGD
    assert (mask == cv2.GC_FGD).sum() == 16 and (mask == cv2.GC_PR_FGD).sum() == 100 - 16


def test_largest_region_box():
    fg = np.zeros((20, 30), bool)
    fg[2:4, 2:4] = True
    fg[5:12, 10:25] = True
    assert largest_region_box(fg) == (10, 5, 25, 12)
    assert largest_region_box(np.zeros((5, 5), bool)) is None


def _scene(seed: int = 0, size: int = 112):
    """A flat-coloured 'bird' (body, head, a thin tail to the left) on busy clutter of other colours,
    and a blurry map that covers its body and head and spills above them - the demo's typical miss."""
    rng = np.random.default_rng(seed)
    img = rng.integers((80, 0, 80), (256, 90, 256), (size // 8, size // 8, 3)).astype(np.uint8)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_NEAREST)
    img = np.clip(img.astype(int) + rng.integers(-25, 25, (size, size, 3)), 0, 255).astype(np.uint8)
    shape = np.zeros((size, size), np.uint8)
    cv2.ellipse(shape, (64, 64), (20, 14), 0, 0, 360, 1, -1)      # body
    cv2.circle(shape, (82, 52), 8, 1, -1)                          # head
    cv2.rectangle(shape, (22, 61), (44, 67), 1, -1)                # tail
    img[shape > 0] = (30, 200, 60)
    ys, xs = np.nonzero(shape)
    truth = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
    yy, xx = np.mgrid[0:14, 0:14]
    cx, cy = (68 - 0.5) / 8, (58 - 0.5) / 8                        # on the body, spilling over the head's top
    cells = np.exp(-(((xx - cx) / 2.0) ** 2 + ((yy - cy) / 1.4) ** 2))
    return img, torch.tensor(cells, dtype=torch.float32)[None], truth


def _normalised(img: np.ndarray) -> torch.Tensor:
    x = torch.tensor(img, dtype=torch.float32).permute(2, 0, 1)[None] / 255
    return (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]


def test_grabcut_snaps_the_map_box_to_the_object():
    img, cells, truth = _scene()
    grid = box_grid(8, (112, 112))
    map_box = boxes_from_maps(cells, 0.2, (112, 112), normalize=False, grid=grid)
    refined = refine_boxes(_normalised(img), cells, map_box, grid, 0.2, RefineSettings(size=112))
    before, after = float(box_iou(map_box, truth[None])), float(box_iou(refined, truth[None]))
    assert before < 0.55, before                          # the map's box misses the tail, overshoots the head
    assert after > 0.85, after
    # pixel edges: the tail's tip and the head's top are found to within 2 px
    assert abs(float(refined[0, 0]) - float(truth[0])) <= 2 and abs(float(refined[0, 1]) - float(truth[1])) <= 2
    # from a 2x view of the same image (the zoom source), boxes come back in input pixels
    big = cv2.resize(img, (224, 224), interpolation=cv2.INTER_LINEAR)
    refined2 = refine_boxes(_normalised(big), cells, map_box, grid, 0.2, RefineSettings(size=224))
    assert float(box_iou(refined2, truth[None])) > 0.85


def test_refinement_is_deterministic_across_threads_and_keeps_the_map_box_without_foreground():
    scenes = [_scene(s) for s in range(4)]
    view = torch.cat([_normalised(s[0]) for s in scenes])
    cells = torch.cat([s[1] for s in scenes])
    cells[3] = 0.0                                        # no foreground at all: the map's box (the whole image) stays
    grid = box_grid(8, (112, 112))
    boxes = boxes_from_maps(cells, 0.2, (112, 112), normalize=False, grid=grid)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = refine_boxes(view, cells, boxes, grid, 0.2, RefineSettings(size=112))
        torch.set_num_threads(2)
        two = refine_boxes(view, cells, boxes, grid, 0.2, RefineSettings(size=112))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two) and not torch.equal(one[:3], boxes[:3])
    assert one[3].tolist() == [0.0, 0.0, 112.0, 112.0]
    # a flat image gives GrabCut nothing to separate: no box is invented. The sure-foreground seeds (the map
    # >= refine_sure inside its box: all of 24..40 here) are never relabelled, and nothing joins them
    flat = np.full((64, 64, 3), 128, np.uint8)
    prob = np.zeros((64, 64), np.float32)
    prob[24:40, 24:40] = 1.0
    assert grabcut_box(flat, prob, (24, 24, 40, 40), 0.2, RefineSettings(margin=0.5)) == (24, 24, 40, 40)
    # with sure seeds on part of the box only, the rest of the flat box is not added to them
    prob[24:40, 32:40] = 0.4
    assert grabcut_box(flat, prob, (24, 24, 40, 40), 0.2, RefineSettings(margin=0.5)) == (24, 24, 32, 40)
    # a region that runs into the sure-background frame has leaked: only sides inside the image have a frame
    area = working_area((24, 24, 40, 40), 0.5, (64, 64))
    assert area == (16, 16, 48, 48)
    assert not reaches_frame((20, 22, 44, 42), area, (64, 64))
    assert reaches_frame((16, 22, 44, 42), area, (64, 64)) and reaches_frame((20, 22, 44, 48), area, (64, 64))
    edge = working_area((0, 24, 16, 40), 0.5, (64, 64))   # clipped at the image's left border: no frame there
    assert edge == (0, 16, 24, 48) and not reaches_frame((0, 20, 20, 40), edge, (64, 64))
    # the same seeds on an object that ends inside the frame: its box
    obj = flat.copy()
    obj[22:42, 20:44] = (200, 40, 40)
    assert grabcut_box(obj, prob, (24, 24, 40, 40), 0.2, RefineSettings(margin=0.5)) == (20, 22, 44, 42)


def test_working_size_caps_the_longer_side():
    assert working_size((336, 336), 224) == (224, 224)
    assert working_size((112, 112), 224) == (112, 112)
    assert working_size((300, 600), 224) == (112, 224)


def test_model_refines_in_evaluation_only_and_crops_the_map_box(demo_views):
    """The bundled demo model on the shipped examples: training and the trainer's per-epoch evaluation keep
    the map's box; evaluation refines the reported box and nothing else (the object branch still crops the
    map's box it was trained on)."""
    from flrdf.engine.checkpoint import load_model

    model = load_model(ASSETS / "demo_model.safetensors").model
    model.cfg.box_refine = "grabcut"
    x, source, _ = demo_views
    with torch.no_grad():
        with model.without_refinement():
            kept = model(x, source=source)
        out = model(x, source=source)
        model.cfg.box_refine = "none"
        ref = model(x, source=source)
        model.cfg.box_refine = "grabcut"
        model.train()
        trained = model(x, source=source)
        model.eval()
    assert torch.equal(kept.boxes, kept.map_boxes) and torch.equal(trained.boxes, trained.map_boxes)
    assert torch.equal(out.map_boxes, ref.boxes) and torch.equal(out.logits, ref.logits)
    assert torch.equal(out.object_images, ref.object_images)
    assert not torch.equal(out.boxes, out.map_boxes)
    # refined on the zoom source and brought back to input pixels: closer to the ground truth than the map's box
    # (mean IoU on the 12 examples 0.61 vs 0.51, measured on the 2-core CPU); boxes left in source pixels
    # (3x) or cut from the wrong view would fall far below the map's
    _, _, gt = demo_views
    assert float(box_iou(out.boxes, gt).mean()) > float(box_iou(out.map_boxes, gt).mean()) + 0.05
    hw = tuple(x.shape[-2:])
    assert (out.boxes >= 0).all() and (out.boxes[:, 2:] <= torch.tensor(hw[::-1])).all()
    assert (out.boxes[:, 2:] > out.boxes[:, :2]).all()


def test_model_refine_finds_a_known_object_from_the_zoom_source():
    """FLRDF.refine with a layer2 model (stride 8, 112 px input) on a 3x zoom source of a scene whose object
    box is known: the refined box comes back in input pixels, on the object's edges."""
    from flrdf.config import load_config
    from flrdf.model import FLRDF

    cfg = load_config("demo", ["model.weights=null", "model.box_refine=grabcut"])
    model = FLRDF(cfg.model, 3).eval()
    assert model.loc_stride == 8
    img, cells, truth = _scene()
    grid = box_grid(8, (112, 112))
    map_box = boxes_from_maps(cells, 0.2, (112, 112), normalize=False, grid=grid)
    source = _normalised(cv2.resize(img, (336, 336), interpolation=cv2.INTER_NEAREST))
    refined = model.refine(source, cells, map_box, (112, 112), tau=0.2)
    assert float(box_iou(refined, truth[None])) > 0.85 > float(box_iou(map_box, truth[None]))
    assert (refined[0] - truth).abs().max() <= 3, (refined, truth)


@pytest.mark.parametrize("key,value,match", [
    ("box_refine", "crf", "none | grabcut | auto"), ("refine_sure", 1.5, r"\[0, 1\]"), ("refine_margin", -1, ">= 0"),
    ("refine_iters", 0, ">= 1"), ("refine_size", 8, ">= 16"),
])
def test_config_rejects_bad_refinement_settings(key, value, match):
    from flrdf.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=match):
        load_config("demo", [f"model.{key}={value}"])


def test_bench_refine_reports_cost_and_accuracy(tiny_run, demo_root, tmp_path):
    """scripts/bench_refine.py on a real (tiny) run: cost per image and ratio to the forward, loc_acc
    beside the map's own box, for each working size asked."""
    import importlib.util
    import json

    spec = importlib.util.spec_from_file_location("bench_refine", ASSETS.parent / "scripts" / "bench_refine.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    assert bench.main(["--model", str(tiny_run), "--root", str(demo_root), "--split", "test", "--sizes", "32,64",
                       "--threads", "1", "--rounds", "1", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["n"] == 12 and [r["refine_size"] for r in result["rows"]] == [32, 64]
    for row in result["rows"]:
        assert row["refine_ms_per_image"] > 0 and row["forward_ms_per_image"] > 0
        assert row["refine_over_forward"] == pytest.approx(row["refine_ms_per_image"] / row["forward_ms_per_image"],
                                                           rel=0.02, abs=0.02)  # of the rounded figures
    # its accuracy figures are the evaluator's, reached by another path (the model's forward refining at that
    # working size; the map's box: refinement off)
    from flrdf.engine.checkpoint import load_model
    from flrdf.engine.evaluate import evaluate
    from flrdf.engine.loaders import eval_loader
    from flrdf.engine.step import precision_for

    prec = precision_for(torch.device("cpu"), False, False)
    for refine, size, got in (("grabcut", 32, result["rows"][0]), ("grabcut", 64, result["rows"][1]),
                              ("none", 64, result["map_box"])):
        loaded = load_model(tiny_run, "cpu", [f"data.root={demo_root}", f"model.box_refine={refine}",
                                              f"model.refine_size={size}"])
        ref = evaluate(loaded.model, eval_loader(loaded.config.data, "test", 50, 0), prec)
        assert got["loc_acc"] == pytest.approx(ref["loc_acc"], abs=1e-4) and got["mean_iou"] == pytest.approx(
            ref["mean_iou"], abs=1e-4), (refine, size)
