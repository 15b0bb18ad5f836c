"""Issue 21: the paper's suppression controller as Inspect, loc-eval and analyze show it, on the bundled demo model
(layer2 DDT box source + GrabCut, learnable layer4 suppression), and the what-if on its gate."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flrdf.boxes import box_grid, box_iou, boxes_from_maps, render_on_grid
from flrdf.data import build_transform
from flrdf.engine.checkpoint import load_model
from flrdf.inspect import inspect_image
from flrdf.suppression import WhatIf, capture_suppression, suppression_whatif

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"


@pytest.fixture(scope="module")
def demo():
    return load_model(ROOT / "assets" / "demo_model.safetensors", "cpu")


@pytest.fixture(scope="module")
def shipped_example():
    entry = json.loads((EXAMPLES / "examples.json").read_text())[0]
    return EXAMPLES / entry["file"], entry["box"]


def _views(loaded, path, box):
    d = loaded.config.data
    x, gt, source = build_transform(False, d.resize, d.image_size, source_size=d.source_size).views(
        Image.open(path).convert("RGB"), box)
    return x[None], gt, source[None]


def _render(maps, grid):
    return render_on_grid(maps, grid).clamp(0, 1).numpy()


def test_inspect_shows_the_papers_suppressed_map_for_the_demo_model(demo, shipped_example):
    """Before / after / removed are layer4's X, X' and X - X' channel means on layer4's box geometry; the gate plot
    is this image's G; the box source (layer2 DDT) is named beyond the paper and is not the paper's map."""
    from dashboard.inspect_view import gate_plot, source_label, suppression_note

    path, box = shipped_example
    r = inspect_image(demo, path, cam_methods=[], gt_box=box)
    m = demo.model
    x, gt, _ = _views(demo, path, box)
    with torch.no_grad():
        f = m.features(x)
        g = m.suppression.controller(f.x).flatten()
    grid = m.paper_grid(tuple(x.shape[-2:]))
    s = r.suppression
    assert s.mode == "learnable" and s.stride == m.backbone.stride
    np.testing.assert_allclose(s.after.map, _render(m.channel_map(f.xs), grid)[0], atol=1e-5)
    np.testing.assert_allclose(s.before.map, _render(m.channel_map(f.x), grid)[0], atol=1e-5)
    np.testing.assert_allclose(s.removed.map, _render(m.channel_map(f.x - f.xs), grid)[0], atol=1e-5)
    assert not np.allclose(s.after.map, r.loc_map)            # the box source's map is another one (layer2 DDT)
    # each map's box: the paper's rule on layer4's grid at the request's tau
    want = boxes_from_maps(m.channel_map(f.xs), r.tau, (112, 112), upsample=m.cfg.map_upsample, normalize=False,
                           grid=grid)[0]
    assert s.after.box == pytest.approx(want.tolist(), abs=0.01)
    assert s.after.iou == pytest.approx(float(box_iou(want[None], gt.view(1, 4))[0]), abs=1e-4)
    # the controller: G per channel, sorted, is what the plot draws; the channels cut most by X_max (1 - G)
    plot = gate_plot(r)
    np.testing.assert_allclose(plot["G"].to_numpy(), np.sort(g.numpy()), atol=1e-6)
    cut = f.x[0].flatten(1).amax(1) * (1 - g)
    assert [c.index for c in s.channels] == cut.topk(len(s.channels)).indices.tolist()
    assert "Learnable controller" in suppression_note(r)
    assert source_label(r) == "box source: layer2 DDT map + GrabCut (beyond the paper)"
    assert not r.uses_paper_map


def test_whatif_scale_one_is_the_model_and_off_is_a_model_without_suppression(demo, shipped_example):
    path, box = shipped_example
    x, _, source = _views(demo, path, box)
    m = demo.model
    with torch.no_grad(), m.without_refinement():
        own = m(x, source=source)
        m.suppression.whatif = WhatIf("scale", 1.0)   # forced, though inactive: the arithmetic itself
        try:
            scaled = m(x, source=source)
        finally:
            m.suppression.whatif = None
        with suppression_whatif(m, WhatIf("off")):
            off = m(x, source=source)
    for a, b in ((own.logits, scaled.logits), (own.logits_raw, scaled.logits_raw), (own.boxes, scaled.boxes),
                 (own.paper_map, scaled.paper_map)):
        assert torch.equal(a, b)
    # "off": a copy of the model built with suppression=none, on the same weights
    from flrdf.model import FLRDF

    cfg = copy.deepcopy(m.cfg)
    cfg.suppression = "none"
    bare = FLRDF(cfg, m.num_classes).eval()
    state = {k: v for k, v in m.state_dict().items() if not k.startswith("suppression.controller.")}
    missing, unexpected = bare.load_state_dict(state, strict=False)
    assert not missing and not unexpected
    with torch.no_grad(), bare.without_refinement():
        want = bare(x, source=source)
    for a, b in ((off.logits, want.logits), (off.logits_raw, want.logits_raw), (off.paper_map, want.paper_map)):
        assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(off.logits_raw, own.logits_raw, atol=1e-3)
    # Inspect reports the same counterfactual: raw top-5 of the suppression-free copy
    r = inspect_image(demo, path, cam_methods=[], whatif=WhatIf("off"))
    probs = torch.softmax(want.logits_raw[0], -1)
    assert [n for n, _ in r.whatif.top5["raw"]] == [demo.class_names[i] for i in probs.topk(5).indices.tolist()]
    assert r.whatif.gate_mean is None
    # scale 1 in Inspect: no rerun, the model's own outputs
    same = inspect_image(demo, path, cam_methods=[], whatif=WhatIf("scale", 1.0))
    assert same.whatif is None and same.top5 == inspect_image(demo, path, cam_methods=[]).top5


def test_whatif_half_gate_lowers_x_prime_exactly_where_x_exceeds_the_new_bound(demo, shipped_example):
    path, box = shipped_example
    x, _, source = _views(demo, path, box)
    m = demo.model
    with torch.no_grad(), m.without_refinement():
        with capture_suppression(m) as own:
            m(x, source=source)
        with suppression_whatif(m, WhatIf("scale", 0.5)), capture_suppression(m) as half:
            m(x, source=source)
    X, G, xs = own[0].x, own[0].gate, own[0].xs
    xs_half = half[0].xs
    bound = X.amax(dim=(2, 3), keepdim=True) * G * 0.5
    above = X > bound
    assert above.any() and (~above).any()
    assert (xs_half[above] < xs[above]).all()
    assert torch.equal(xs_half[~above], xs[~above])
    assert torch.allclose(half[0].gate, (G * 0.5).clamp(0, 1))
    # constant delta and a scale clipped at 1
    with torch.no_grad(), suppression_whatif(m, WhatIf("constant", delta=0.3)), capture_suppression(m) as const:
        m.features(x)
    assert const[0].gate == 0.3 and torch.allclose(const[0].xs, torch.minimum(X, X.amax((2, 3), True) * 0.3))
    with torch.no_grad(), suppression_whatif(m, WhatIf("scale", 2.0)), capture_suppression(m) as big:
        m.features(x)
    assert float(big[0].gate.max()) == 1.0 and torch.allclose(big[0].gate, (G * 2).clamp(max=1))


def test_whatif_refuses_what_it_cannot_do(tiny_loaded, examples_dir):
    from flrdf.inspect import InspectError

    loaded = copy.deepcopy(tiny_loaded)
    loaded.model.suppression.mode, loaded.model.suppression.controller = "none", None
    path = examples_dir / "example_0.jpg"
    with pytest.raises(InspectError, match="no suppression gate to scale"):
        inspect_image(loaded, path, cam_methods=[], whatif=WhatIf("scale", 0.5))
    r = inspect_image(loaded, path, cam_methods=[], whatif=WhatIf("constant", delta=0.5))  # adding one is allowed
    assert r.whatif.gate_mean == 0.5 and r.suppression.mode == "none" and r.suppression.gates is None
    assert np.allclose(r.suppression.removed.map, 0)
    for bad in (dict(mode="magic"), dict(mode="scale", scale=-1.0), dict(mode="constant", delta=1.5)):
        with pytest.raises(ValueError):
            WhatIf(**bad)


@pytest.mark.parametrize("stride", [8, 16])
def test_a_single_cell_overlay_peaks_on_its_box_cell_centre(stride):
    """The overlay of a one-cell map peaks on the pixel holding that cell's receptive-field centre (j*s + 0.5),
    inside the box the same map gives - not half a stride further (a plain resize's (j + 0.5)*s)."""
    size = 112
    grid = box_grid(stride, (size, size))
    h, w = grid.shape
    for i, j in ((3, 5), (h - 2, 1)):
        cell = torch.zeros(1, h, w)
        cell[0, i, j] = 1.0
        pix = render_on_grid(cell, grid)[0]
        py, px = np.unravel_index(int(pix.argmax()), pix.shape)
        assert (py, px) == (i * stride, j * stride)
        bx = boxes_from_maps(cell, 0.5, (size, size), normalize=False, grid=grid)[0].tolist()
        assert bx == pytest.approx([j * stride + 0.5 - stride / 2, i * stride + 0.5 - stride / 2,
                                    j * stride + 0.5 + stride / 2, i * stride + 0.5 + stride / 2])
        assert bx[0] <= px + 0.5 <= bx[2] and (bx[0] + bx[2]) / 2 == pytest.approx(px + 0.5)


def test_inspect_overlays_use_the_box_geometry(demo, shipped_example):
    """The box source's map and every CAM are drawn as their boxes were found: on the model's box grid."""
    from flrdf.cams import box_grid as model_grid, compute_cams, to_grid

    path, box = shipped_example
    r = inspect_image(demo, path, cam_methods=["gradcam"], gt_box=box)
    x, _, source = _views(demo, path, box)
    m = demo.model
    grid = model_grid(m, (112, 112))
    with torch.no_grad(), m.without_refinement():
        out = m(x, source=source)
    np.testing.assert_allclose(r.loc_map, _render(out.loc_map, grid)[0], atol=1e-5)
    cam = compute_cams(m, x, [r.target], ["gradcam"])["gradcam"]
    np.testing.assert_allclose(r.cams[0].map, _render(to_grid(cam, grid), grid)[0], atol=1e-4)


@pytest.fixture(scope="module")
def demo_split(tmp_path_factory, demo):
    """Two test images per class of the demo's own generator (v2), at a small size."""
    from flrdf.config import apply_overrides
    from flrdf.data.synthetic_v2 import make_demo_data_v2
    from flrdf.engine.loaders import records_for

    root = make_demo_data_v2(tmp_path_factory.mktemp("v2"), num_classes=len(demo.class_names), train_per_class=1,
                             test_per_class=2, max_side=160, seed=7)
    cfg = apply_overrides(demo.config, [f"data.root={root.parent}", "data.num_workers=0"])
    return cfg, records_for(cfg.data, "test")


def test_loc_eval_has_the_papers_rows_with_their_own_figures(demo, demo_split):
    """loc-eval's 'paper' row is X' boxed by the paper's rule, 'paper_x' is X: loc_acc recomputed here."""
    from flrdf.engine.loaders import eval_loader
    from flrdf.engine.localization import PAPER_KEY, PAPER_X_KEY, evaluate_localization, method_label

    cfg, _ = demo_split
    m = demo.model
    with m.without_refinement():
        res = evaluate_localization(m, eval_loader(cfg.data, "test", 8, 0), methods=[], worst_k=0)
    rows = {r["method"]: r for r in res.summary["rows"]}
    assert {PAPER_KEY, PAPER_X_KEY} <= set(rows)
    assert method_label(PAPER_KEY).startswith("paper's map X'")
    hits = {PAPER_KEY: 0, PAPER_X_KEY: 0}
    n = 0
    for batch in eval_loader(cfg.data, "test", 8, 0):
        with torch.no_grad():
            f = m.features(batch["image"])
        for key, feats in ((PAPER_KEY, f.xs), (PAPER_X_KEY, f.x)):
            b = m.paper_boxes(m.channel_map(feats), (112, 112))
            hits[key] += int((box_iou(b, batch["box"].float()) >= 0.5).sum())
        n += len(batch["label"])
    for key in hits:
        assert rows[key]["loc_acc"] == pytest.approx(hits[key] / n, abs=1e-6)
    assert rows[PAPER_KEY]["loc_acc"] != rows["flrdf"]["loc_acc"] or rows[PAPER_KEY]["mean_iou"] != rows["flrdf"]["mean_iou"]


def test_analyze_max_box_acc_v2_of_the_papers_map_is_that_of_x_prime(demo, demo_split):
    from flrdf.engine.wsol_eval import PAPER_KEY, PAPER_X_KEY, evaluate_wsol, wsol_loader
    from flrdf.wsol_metrics import BoxAccumulator, scoremap_to_frame

    cfg, data = demo_split
    m = demo.model
    res = evaluate_wsol(m, wsol_loader(data, cfg.data.image_size, 8), methods=[], faith_limit=0)
    rows = {r["method"]: r for r in res["rows"]}
    assert {PAPER_KEY, PAPER_X_KEY} <= set(rows)
    acc = {PAPER_KEY: BoxAccumulator(), PAPER_X_KEY: BoxAccumulator()}
    for batch in wsol_loader(data, cfg.data.image_size, 8):
        with torch.no_grad():
            f = m.features(batch["image"])
        for key, feats in ((PAPER_KEY, f.xs), (PAPER_X_KEY, f.x)):
            for mp, gt in zip(m.channel_map(feats), batch["gt"].numpy()):
                acc[key].add(scoremap_to_frame(mp.numpy()), [gt])
    for key in acc:
        assert rows[key]["max_box_acc_v2"] == acc[key].summary()["max_box_acc_v2"]
