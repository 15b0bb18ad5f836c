"""model.box_refine=auto (flrdf.engine.refine_choice): GrabCut kept only where it raises loc_acc on the
validation split; the decision and both figures recorded; eval / loc-eval say which box they report."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from flrdf.boxes import box_grid, boxes_from_maps
from flrdf.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from flrdf.engine.refine_choice import RefineDecision, box_statement, decide, figures, tally
from flrdf.refine import RefineSettings, refine_boxes

ROOT = Path(__file__).resolve().parents[1]
SIZE, STRIDE, TAU = 112, 8, 0.2
GRID = box_grid(STRIDE, (SIZE, SIZE))


def _cells(prob_box, sure_box) -> torch.Tensor:
    """A 14 x 14 map: 0.4 on the cells whose centre lies in ``prob_box``, 1.0 in ``sure_box``, else 0."""
    centres = np.arange(SIZE // STRIDE) * STRIDE + (STRIDE - 1) / 2
    yy, xx = np.meshgrid(centres, centres, indexing="ij")
    inside = lambda b: (xx >= b[0]) & (xx < b[2]) & (yy >= b[1]) & (yy < b[3])
    m = inside(prob_box) * 0.4
    m[inside(sure_box)] = 1.0
    return torch.tensor(m, dtype=torch.float32)


def _ground(rng) -> np.ndarray:
    return np.clip(120 + rng.integers(-10, 10, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)


def helps(dx: int, rng):
    """A flat red square on grey; the map's blob spills 12 px around it (map box IoU 0.25): GrabCut finds the
    square's edges."""
    img = _ground(rng)
    img[48:72, 44 + dx:68 + dx] = (200, 40, 40)
    return img, _cells((32 + dx, 36, 80 + dx, 84), (48 + dx, 52, 64 + dx, 68)), [44 + dx, 48, 68 + dx, 72]


def hurts(dx: int, rng):
    """An object whose red third stands out and whose other two thirds have the background's colour; the map
    covers all of it (map box IoU 0.70): GrabCut keeps only the red third (IoU 0.30)."""
    img = _ground(rng)
    img[40:72, 32 + dx:48 + dx] = (200, 40, 40)
    return img, _cells((32 + dx, 40, 80 + dx, 72), (32 + dx, 40, 48 + dx, 72)), [32 + dx, 40, 80 + dx, 72]


def _normalised(images) -> torch.Tensor:
    x = torch.tensor(np.stack(images), dtype=torch.float32).permute(0, 3, 1, 2) / 255
    return (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]


def _scored(scenes):
    images, cells, gt = zip(*scenes)
    cells, gt = torch.stack(cells), torch.tensor(gt, dtype=torch.float32)
    map_boxes = boxes_from_maps(cells, TAU, (SIZE, SIZE), normalize=False, grid=GRID)
    refined = refine_boxes(_normalised(images), cells, map_boxes, GRID, TAU, RefineSettings(size=SIZE))
    return refined, map_boxes, gt


@pytest.mark.parametrize("kinds, refined_acc, map_acc, decision", [
    ((helps, helps, helps, hurts), 0.75, 0.25, "grabcut"),   # refinement helps on 3 of 4: kept
    ((hurts, hurts, hurts, helps), 0.25, 0.75, "none"),      # refinement hurts on 3 of 4: dropped
])
def test_auto_keeps_grabcut_only_where_it_raises_loc_acc(kinds, refined_acc, map_acc, decision):
    rng = np.random.default_rng(0)
    scenes = [kind(dx, rng) for kind, dx in zip(kinds, (-16, 0, 16, 8))]
    refined, map_boxes, gt = _scored(scenes)
    f = figures(tally(refined, map_boxes, gt))
    assert f["n_box"] == 4
    assert f["loc_acc_refined"] == refined_acc and f["loc_acc_map"] == map_acc   # known by construction
    assert decide(f["loc_acc_refined"], f["loc_acc_map"]) == decision


def test_constructed_scenes_are_what_they_claim():
    """Each helping scene: the map's box misses (IoU 0.25), the refined box is the square to 1 px; each
    hurting scene: the map's box hits (0.70) and the refined box is the red third alone."""
    from flrdf.boxes import box_iou

    rng = np.random.default_rng(0)
    refined, map_boxes, gt = _scored([helps(0, rng), hurts(0, rng)])
    iou_map, iou_ref = box_iou(map_boxes, gt), box_iou(refined, gt)
    assert iou_map[0] == pytest.approx(0.25, abs=0.01) and (refined[0] - gt[0]).abs().max() <= 1
    assert iou_map[1] == pytest.approx(0.70, abs=0.01)
    # the red third's right edge (48), not the object's (80); the left and top edges: the seeds' blur (3 px)
    assert abs(float(refined[1, 2]) - 48) <= 1 and float(refined[1, 3]) == pytest.approx(72, abs=1)
    assert iou_ref[1] < 0.35


def test_a_tie_keeps_the_map_box():
    assert decide(0.5, 0.5) == "none" and decide(0.51, 0.5) == "grabcut" and decide(0.49, 0.5) == "none"


def test_box_statement_says_which_box_and_why():
    d = RefineDecision("auto", "grabcut", "val", 150, 0.1, 0.833333, 0.66, 0.683, 0.542)
    assert box_statement("grabcut", d) == ("box: GrabCut-refined (val loc_acc 83.3 vs 66.0 for the map's box, "
                                           "n = 150; model.box_refine=auto)")
    assert "measured at tau 0.1, scored now at 0.3" in box_statement("grabcut", d.to_dict(), tau=0.3)
    no = RefineDecision("auto", "none", "val", 40, 0.5, 0.3775, 0.415, 0.4, 0.45)
    assert box_statement("none", no) == ("box: the map's own box (val loc_acc 41.5 vs 37.8 GrabCut-refined, "
                                         "n = 40; model.box_refine=auto)")
    assert box_statement("auto").startswith("box: the map's own box (model.box_refine=auto is unresolved")
    assert box_statement("none", d, overridden=True) == "box: the map's own box (--set model.box_refine=none)"
    assert box_statement("grabcut") == ("box: GrabCut-refined (model.box_refine=grabcut in the model's config; "
                                        "not decided on validation)")


def test_an_unresolved_auto_model_reports_the_map_box():
    from flrdf.config import Config
    from flrdf.model import FLRDF

    cfg = Config()
    cfg.model.backbone, cfg.model.pretrained, cfg.model.box_refine = "resnet18", False, "auto"
    torch.manual_seed(0)
    model = FLRDF(cfg.model, 3).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert not model.refines and torch.equal(out.boxes, out.map_boxes)


def test_training_resolves_auto_on_validation_and_eval_says_so(demo_root, tmp_path, capsys):
    """A tiny run with a validation split and box_refine=auto: the final checkpoint's config holds the decision,
    its extra the figures, which are the evaluator's own loc_acc of each box on that split; the exported model
    file carries both; eval and loc-eval state the box they report."""
    from conftest import run_cli, tiny

    from flrdf.engine.checkpoint import load_model, read_checkpoint
    from flrdf.engine.commands import eval_main, export_main
    from flrdf.engine.evaluate import evaluate
    from flrdf.engine.loaders import eval_loader
    from flrdf.engine.loc_report import main as loc_eval_main
    from flrdf.engine.step import precision_for

    run = tmp_path / "run"
    proc = run_cli(["train", "--config", "demo", "--out", str(run),
                    *tiny(demo_root, **{"optim.epochs": 1, "data.val_fraction": 0.25, "model.box_refine": "auto"})])
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "box_refine: auto" in (run / "config.yaml").read_text()   # what was asked
    state = read_checkpoint(run / "checkpoints" / "last.pt")
    d = state["extra"]["refine_decision"]
    assert d["requested"] == "auto" and d["split"] == "val" and d["n_box"] == 8 and d["tau"] == state["config"]["model"]["tau"]
    assert state["config"]["model"]["box_refine"] == d["decision"] == decide(d["loc_acc_refined"], d["loc_acc_map"])
    assert json.loads((run / "status.json").read_text())["refine_decision"] == d
    # the figures are the evaluator's: the model forced to each box, on the same validation split
    prec = precision_for(torch.device("cpu"), False, False)
    for value, key in (("grabcut", "loc_acc_refined"), ("none", "loc_acc_map")):
        loaded = load_model(run, "cpu", [f"model.box_refine={value}"])
        got = evaluate(loaded.model, eval_loader(loaded.config.data, "val", 8, 0), prec)
        assert got["loc_acc"] == pytest.approx(d[key], abs=1e-6), value
        assert got["mean_iou"] == pytest.approx(d[key.replace("loc_acc", "mean_iou")], abs=1e-5), value
    # the data's generator record went with the model (flrdf.data.synthetic_overlap)
    assert state["extra"]["data_generator"] == json.loads((demo_root / "CUB_200_2011" / "flrdf_synthetic.json").read_text())
    model_file = tmp_path / "m.safetensors"
    assert export_main(["--checkpoint", str(run), "--model-out", str(model_file)]) == 0
    carried = load_model(model_file)
    assert carried.extra["refine_decision"] == d and carried.extra["data_generator"] == state["extra"]["data_generator"]
    capsys.readouterr()
    assert eval_main(["--checkpoint", str(model_file), "--set", f"data.root={demo_root}", "--device", "cpu"]) == 0
    said = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["box"]
    what = "GrabCut-refined" if d["decision"] == "grabcut" else "the map's own box"
    assert said.startswith(f"box: {what} (val loc_acc ") and "model.box_refine=auto" in said
    assert loc_eval_main(["--checkpoint", str(model_file), "--set", f"data.root={demo_root}", "--methods", "",
                          "--no-wsol", "--worst", "0", "--device", "cpu", "--out", str(tmp_path / "le")]) == 0
    assert f"FLRDF's {said}" in capsys.readouterr().out


def test_a_run_without_validation_leaves_auto_unresolved(tiny_run, demo_root, capsys):
    """tiny_run: the demo config (auto) with data.val_fraction=0: nothing to decide on; eval reports the map's
    box (its loc_acc is the map box's) and says so."""
    from flrdf.engine.checkpoint import load_model, read_checkpoint
    from flrdf.engine.commands import eval_main

    state = read_checkpoint(tiny_run / "checkpoints" / "last.pt")
    assert state["config"]["model"]["box_refine"] == "auto" and state["extra"]["refine_decision"] is None
    assert eval_main(["--run", str(tiny_run), "--set", f"data.root={demo_root}", "--device", "cpu"]) == 0
    auto = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert auto["box"].startswith("box: the map's own box (model.box_refine=auto is unresolved")
    assert eval_main(["--run", str(tiny_run), "--set", f"data.root={demo_root}", "model.box_refine=none",
                      "--device", "cpu"]) == 0
    plain = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert auto["loc_acc"] == plain["loc_acc"] and auto["mean_iou"] == plain["mean_iou"]
    assert plain["box"] == "box: the map's own box (--set model.box_refine=none)"
    assert load_model(tiny_run).model.refines is False


def test_resolve_refine_script_records_the_decision_in_a_model_file(tiny_run, demo_root, tmp_path, capsys):
    """scripts/resolve_refine.py (how the bundled demo model got its decision): the figures are the evaluator's,
    the file's config gets the decision and the records, its tensors stay byte for byte."""
    import importlib.util

    from safetensors import safe_open

    from flrdf.engine.checkpoint import load_model
    from flrdf.engine.commands import export_main
    from flrdf.engine.evaluate import evaluate
    from flrdf.engine.loaders import eval_loader
    from flrdf.engine.step import precision_for

    model_file = tmp_path / "m.safetensors"
    assert export_main(["--checkpoint", str(tiny_run), "--model-out", str(model_file)]) == 0
    with safe_open(str(model_file), framework="pt") as f:
        before = {k: f.get_tensor(k) for k in f.keys()}
        stored = json.loads(f.metadata()["config"])
    script = importlib.util.spec_from_file_location("resolve_refine", ROOT / "scripts" / "resolve_refine.py")
    mod = importlib.util.module_from_spec(script)
    script.loader.exec_module(mod)
    capsys.readouterr()
    assert mod.main(["--model", str(model_file), "--root", str(demo_root), "--split", "test", "--write"]) == 0
    result = json.loads(capsys.readouterr().out)
    prec = precision_for(torch.device("cpu"), False, False)
    for value, key in (("grabcut", "loc_acc_refined"), ("none", "loc_acc_map")):
        loaded = load_model(model_file, "cpu", [f"data.root={demo_root}", f"model.box_refine={value}"])
        assert evaluate(loaded.model, eval_loader(loaded.config.data, "test", 8, 0), prec)["loc_acc"] == \
            pytest.approx(result[key], abs=1e-6)
    after = load_model(model_file)
    assert after.config.model.box_refine == result["decision"] == decide(result["loc_acc_refined"], result["loc_acc_map"])
    assert after.extra["refine_decision"]["n_box"] == 12 and after.extra["data_generator"]["seed"] == 0
    with safe_open(str(model_file), framework="pt") as f:
        assert all(torch.equal(f.get_tensor(k), v) and f.get_tensor(k).dtype == v.dtype for k, v in before.items())
        config = json.loads(f.metadata()["config"])
    stored["model"]["box_refine"] = result["decision"]
    assert config == stored   # every other key as it was (model.weights too, which load_model clears)
