"""flrdf.engine.localization + loc_report: Table 3 extended (FLRDF vs plain map vs CAMs vs centre box)."""

import csv
import json

import numpy as np
import pytest
import torch

from flrdf.boxes import box_iou
from flrdf.cams import box_grid, cam_boxes, compute_cams
from flrdf.engine.evaluate import evaluate
from flrdf.engine.loaders import eval_loader, records_for
from flrdf.engine.localization import (CENTRE_KEY, FLRDF_KEY, FLRDF_MAP_KEY, PAPER_KEY, PAPER_X_KEY, PLAIN_KEY, TAUS,
                                       evaluate_localization)
from flrdf.engine.loc_report import main as loc_eval_main, read_results
from flrdf.engine.step import precision_for

METHODS = ("gradcam", "eigencam")


@pytest.fixture(scope="module")
def loc_setup(tmp_path_factory):
    """A random-init tiny model (ResNet-18, 64 px) saved as a model file, and a synthetic split with boxes."""
    from flrdf.config import load_config
    from flrdf.data.synthetic import make_demo_data
    from flrdf.engine.checkpoint import load_model, save_model_file
    from flrdf.model import FLRDF

    base = tmp_path_factory.mktemp("loc")
    root = base / "data"
    make_demo_data(root, num_classes=4, train_per_class=2, test_per_class=3, image_size=80, seed=1)
    cfg = load_config("demo", ["model.weights=null", f"data.root={root}", "data.image_size=64", "data.resize=72",
                               "data.num_workers=0", "model.refine_size=64",  # GrabCut at the input's size
                               "model.box_refine=grabcut"])  # the demo's auto, resolved to GrabCut
    torch.manual_seed(0)
    model = FLRDF(cfg.model, 4)
    with torch.no_grad():  # the demo's DDT map learns its statistics from training batches: give it one
        model.train()(torch.randn(4, 3, 64, 64))
    save_model_file(base / "tiny.safetensors", model.eval(), cfg, [f"c{i}" for i in range(4)], half=False)
    loaded = load_model(base / "tiny.safetensors", "cpu")
    return base, root, loaded


def test_rows_agree_with_the_engine_and_the_cam_module(loc_setup):
    _, _, loaded = loc_setup
    model, cfg = loaded.model, loaded.config
    loader = eval_loader(cfg.data, "test", 5, 0)
    res = evaluate_localization(model, loader, methods=METHODS, records=loader.dataset.records, worst_k=4)
    s = res.summary
    # the demo config refines its boxes (GrabCut): the map's own box gets a row of its own
    assert s["methods"] == [FLRDF_KEY, FLRDF_MAP_KEY, PLAIN_KEY, PAPER_KEY, PAPER_X_KEY, *METHODS, CENTRE_KEY] and s["n"] == s["n_box"] == 12
    assert s["box_refine"] == "grabcut"
    rows = {r["method"]: r for r in s["rows"]}
    # FLRDF's row at the model's tau is exactly the engine's own localization accuracy and mean IoU
    ref = evaluate(model, eval_loader(cfg.data, "test", 5, 0), precision_for(torch.device("cpu"), False, False))
    assert rows[FLRDF_KEY]["loc_acc"] == pytest.approx(ref["loc_acc"], abs=1e-6)
    assert rows[FLRDF_KEY]["mean_iou"] == pytest.approx(ref["mean_iou"], abs=1e-5)
    assert s["classification"]["top1_raw"] == pytest.approx(ref["top1_raw"])
    # CAM boxes at tau are flrdf.cams.cam_boxes' boxes (one batch recomputed here)
    batch = next(iter(eval_loader(cfg.data, "test", 5, 0)))
    maps = compute_cams(model, batch["image"], batch["label"], METHODS)
    boxes = cam_boxes(maps, cfg.model.tau, box_grid(model, batch["image"].shape[-2:]))
    per_image = res.per_image[:5]
    for key in METHODS:
        iou = box_iou(boxes[key], batch["box"])
        assert [r[f"iou_{key}"] for r in per_image] == pytest.approx(iou.tolist(), abs=1e-4)
    # sweep: 21 taus; MaxBoxAcc is its best; tau = 0 keeps the whole image for FLRDF's own rule
    for r in s["rows"]:
        assert len(r["sweep"]["iou50"]) == len(TAUS) == 21
        assert r["max_box_acc"] == pytest.approx(max(r["sweep"]["iou50"]))
        assert 0 <= r["loc_acc"] <= 1 and 0 <= r["mean_iou"] <= 1
        assert all(0 <= v <= 1 for sweep in r["sweep"].values() for v in sweep)  # each image counted once per tau
    whole = torch.tensor([[0.0, 0.0, 64.0, 64.0]]).repeat(12, 1)
    gt = torch.stack([loader.dataset[i]["box"] for i in range(12)])
    for key in (FLRDF_KEY, FLRDF_MAP_KEY):   # the sweep at the model's tau is the row's own loc_acc: counted once
        assert rows[key]["sweep"]["iou50"][TAUS.index(cfg.model.tau)] == pytest.approx(rows[key]["loc_acc"], abs=1e-6)
    assert rows[FLRDF_MAP_KEY]["sweep"]["iou50"][0] == pytest.approx(float((box_iou(whole, gt) >= 0.5).float().mean()), abs=1e-5)
    # (that the refined row refines the map row's boxes, tau by tau: test_refinement_by_construction)
    assert len(set(rows[CENTRE_KEY]["sweep"]["iou50"])) == 1 and rows[CENTRE_KEY]["best_tau"] is None
    # worst images: lowest FLRDF IoU first
    ious = sorted(r["iou_flrdf"] for r in res.per_image)
    assert [round(w.iou, 4) for w in res.worst] == pytest.approx(ious[:4], abs=1e-4)
    assert res.worst[0].image.dtype == np.uint8 and res.worst[0].image.shape == (64, 64, 3)


def test_cli_writes_a_citable_folder(loc_setup, capsys):
    base, root, _ = loc_setup
    out = base / "out"
    rc = loc_eval_main(["--checkpoint", str(base / "tiny.safetensors"), "--set", f"data.root={root}",
                        "--methods", "gradcam", "--limit", "7", "--batch-size", "4", "--worst", "3",
                        "--device", "cpu", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    # the demo config's box source, named beyond the paper, beside the paper's own map
    assert "| FLRDF (layer2, no suppression, DDT; beyond the paper) + GrabCut |" in printed and "centre box" in printed
    assert "| FLRDF (layer2, no suppression, DDT; beyond the paper), map box unrefined |" in printed
    assert "| paper's map X' (layer4 channel mean, after suppression) |" in printed
    for name in ("results.json", "table.csv", "table.md", "per_image.csv", "loc_bar.png", "tau_sweep.png",
                 "worst/00.png", "worst/02.png"):
        assert (out / name).is_file(), name
    results = read_results(out)
    assert results["n"] == 7 and results["split"] == "test" and results["source"].endswith("tiny.safetensors")
    assert [r["method"] for r in results["rows"]] == [FLRDF_KEY, FLRDF_MAP_KEY, PLAIN_KEY, PAPER_KEY, PAPER_X_KEY, "gradcam",
                                                      CENTRE_KEY]
    assert len(results["worst"]) == 3 and results["command"].startswith("python -m flrdf loc-eval")
    with open(out / "table.csv") as f:
        table = list(csv.DictReader(f))
    assert table[0]["method"] == "flrdf" and float(table[0]["loc_acc"]) == pytest.approx(results["rows"][0]["loc_acc"], abs=1e-4)
    progress = json.loads((out / "progress.json").read_text())
    assert progress["state"] == "finished" and progress["done"] == progress["total"] == 7


def test_cli_failure_is_recorded_in_progress(loc_setup, tmp_path, capsys):
    base, _, _ = loc_setup
    out = tmp_path / "bad"
    rc = loc_eval_main(["--checkpoint", str(base / "tiny.safetensors"), "--set", f"data.root={tmp_path}/nowhere",
                        "--device", "cpu", "--out", str(out)])
    assert rc == 1
    progress = json.loads((out / "progress.json").read_text())
    assert progress["state"] == "failed" and "nowhere" in progress["error"]
    assert read_results(out) is None
    capsys.readouterr()


def test_default_out_is_inside_the_run(tmp_path):
    from flrdf.engine.loc_report import default_out

    run = tmp_path / "r1"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("name: x\n")
    assert default_out(run, "test", "runs").parent == run / "eval"
    assert default_out(run / "checkpoints" / "last.pt", "val", "runs").name.startswith("val-")
    assert default_out(tmp_path / "m.safetensors", "test", str(tmp_path / "runs")).parent == tmp_path / "runs" / "eval"


def test_loc_eval_cam_rows_equal_what_inspect_shows(loc_setup):
    """The same image, tau, method and target class (GT-known: the label) give loc-eval's per-image IoUs
    and Inspect's, for the CAMs and for FLRDF's own box. The model has a stride-1 layer4, so its box grid
    (input / 16 x map_upsample) is not the stride-32 one."""
    from flrdf.inspect import inspect_image

    base, root, loaded = loc_setup
    cfg = loaded.config
    assert cfg.model.layer4_stride == 1 and loaded.model.cfg.map_upsample > 1
    out = base / "vs-inspect"
    assert loc_eval_main(["--checkpoint", str(base / "tiny.safetensors"), "--set", f"data.root={root}",
                          "--methods", ",".join(METHODS), "--limit", "4", "--batch-size", "2", "--worst", "0",
                          "--frame", "crop", "--device", "cpu", "--out", str(out)]) == 0  # Inspect's view
    with open(out / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    boxes = {r.path: r.box for r in records_for(cfg.data, "test").records}
    for row in rows:
        shown = inspect_image(loaded, row["file"], tau=cfg.model.tau, target=int(row["label"]),
                              cam_methods=METHODS, gt_box=boxes[row["file"]])
        assert int(row["pred"]) == shown.predicted
        assert float(row["iou_flrdf"]) == pytest.approx(shown.iou, abs=1e-4), row["file"]
        for cam in shown.cams:
            assert float(row[f"iou_{cam.method}"]) == pytest.approx(cam.iou, abs=1e-4), (row["file"], cam.method)


def test_frame_full_scores_the_whole_image_and_crop_the_centre_crop(loc_setup, capsys):
    """--frame full (the default, wsolevaluation's frame) resizes the whole image with no crop, so a
    ground-truth box is only scaled; --frame crop is the centre-crop test view (scaled, shifted, clipped).
    results.json and table.md say which frame was used."""

    base, root, loaded = loc_setup
    d = loaded.config.data
    assert d.root == str(root)
    boxes = {r.path: r.box for r in records_for(d, "test").records}
    seen = {}
    for frame in ("default", "full", "crop"):
        out = base / f"frame-{frame}"
        args = ["--checkpoint", str(base / "tiny.safetensors"), "--set", f"data.root={root}", "--methods", "",
                "--limit", "5", "--batch-size", "5", "--worst", "5", "--device", "cpu", "--out", str(out)]
        assert loc_eval_main(args + ([] if frame == "default" else ["--frame", frame])) == 0
        capsys.readouterr()
        seen[frame] = read_results(out)
        assert seen[frame]["frame"] == ("full" if frame == "default" else frame)
        assert ("full image" if frame != "crop" else "centre crop") in (out / "table.md").read_text()
    from PIL import Image

    for frame in ("full", "crop"):
        assert len(seen[frame]["worst"]) == 5
        for item in seen[frame]["worst"]:
            w, h = Image.open(item["file"]).size
            x1, y1, x2, y2 = boxes[item["file"]]
            if frame == "full":
                s = d.image_size
                want = [x1 * s / w, y1 * s / h, x2 * s / w, y2 * s / h]
            else:
                off = round((d.resize - d.image_size) / 2)
                want = [min(max(v, 0.0), d.image_size) for v in
                        (x1 * d.resize / w - off, y1 * d.resize / h - off, x2 * d.resize / w - off,
                         y2 * d.resize / h - off)]
            assert item["gt_box"] == pytest.approx(want, abs=0.02), (frame, item["file"])
    assert seen["default"]["rows"] == seen["full"]["rows"]


@pytest.fixture(scope="module")
def same_map(loc_setup):
    """A refining model whose FL map IS the plain map (layer4, no suppression, channel mean, no upsampling):
    whatever loc-eval does to one it must do to the other, through its own code path for each."""
    from flrdf.config import load_config
    from flrdf.model import FLRDF

    _, root, _ = loc_setup
    cfg = load_config("demo", ["model.weights=null", f"data.root={root}", "data.image_size=64", "data.resize=72",
                               "data.num_workers=0", "model.refine_size=64", "model.loc_layer=layer4",
                               "model.suppression=none", "model.loc_map=mean", "model.map_upsample=1",
                               "model.box_refine=grabcut"])
    torch.manual_seed(0)
    model = FLRDF(cfg.model, 4).eval()
    batch = next(iter(eval_loader(cfg.data, "test", 12, 0)))
    with torch.no_grad():
        out = model(batch["image"])
    assert torch.equal(out.loc_map, out.plain_map)          # the construction holds
    run = lambda **kw: evaluate_localization(model, eval_loader(cfg.data, "test", 5, 0), worst_k=0, **kw)
    return model, cfg, run(methods=("gradcam",)), run(methods=("gradcam",), refine_all=True)


def _ious(res, key):
    return [r[f"iou_{key}"] for r in res.per_image]


def _row(res, key):
    return next(r for r in res.summary["rows"] if r["method"] == key)


def test_refinement_by_construction(same_map):
    """The FL map equals the plain map, so: the map row's boxes are the plain row's (unrefined), tau by tau;
    the FLRDF row (the model's own refinement, model.refine) equals the plain row refined by --refine-all
    (loc-eval's refine_boxes on the plain map), tau by tau; a non-refining copy's FLRDF row is the map row;
    and refinement does move boxes."""
    model, cfg, plain_run, refined_run = same_map
    assert _ious(plain_run, FLRDF_MAP_KEY) == _ious(plain_run, PLAIN_KEY)
    assert _row(plain_run, FLRDF_MAP_KEY)["sweep"] == _row(plain_run, PLAIN_KEY)["sweep"]
    assert _ious(refined_run, FLRDF_KEY) == _ious(refined_run, PLAIN_KEY)
    assert _row(refined_run, FLRDF_KEY)["sweep"] == _row(refined_run, PLAIN_KEY)["sweep"]
    assert _ious(plain_run, FLRDF_KEY) != _ious(plain_run, FLRDF_MAP_KEY)     # GrabCut changed some boxes
    assert _row(plain_run, FLRDF_KEY)["sweep"] != _row(plain_run, FLRDF_MAP_KEY)["sweep"]
    cfg.model.box_refine = "none"
    try:
        unrefined = evaluate_localization(model, eval_loader(cfg.data, "test", 5, 0), methods=(), worst_k=0)
    finally:
        cfg.model.box_refine = "grabcut"
    assert _ious(unrefined, FLRDF_KEY) == _ious(plain_run, FLRDF_MAP_KEY)
    assert _row(unrefined, FLRDF_KEY)["sweep"] == _row(plain_run, FLRDF_MAP_KEY)["sweep"]


def test_refine_all_refines_every_map_by_its_own_seeds(same_map):
    """--refine-all: the plain map's and each CAM's boxes are GrabCut-refined, each seeded by its own map (the
    plain row lands exactly on the model's own refinement of the identical FL map); the FLRDF, map and centre
    rows are untouched; a model that does not refine refuses it."""
    model, cfg, plain_run, refined_run = same_map
    labels = {r["method"]: r["label"] for r in refined_run.summary["rows"]}
    assert refined_run.summary["refine_all"] is True and plain_run.summary["refine_all"] is False
    assert labels[PLAIN_KEY].endswith("+ GrabCut") and labels["gradcam"].endswith("+ GrabCut")
    assert not labels[FLRDF_MAP_KEY].endswith("+ GrabCut") and labels[FLRDF_KEY].endswith("+ GrabCut")
    for key in (FLRDF_KEY, FLRDF_MAP_KEY, CENTRE_KEY):
        assert _ious(refined_run, key) == _ious(plain_run, key), key
    assert _ious(refined_run, PLAIN_KEY) == _ious(refined_run, FLRDF_KEY) != _ious(plain_run, PLAIN_KEY)
    assert _row(refined_run, "gradcam")["sweep"] != _row(plain_run, "gradcam")["sweep"]  # the CAM's boxes moved
    cfg.model.box_refine = "none"
    try:
        with pytest.raises(ValueError, match="needs a refining model"):
            evaluate_localization(model, eval_loader(cfg.data, "test", 5, 0), methods=(), refine_all=True)
    finally:
        cfg.model.box_refine = "grabcut"