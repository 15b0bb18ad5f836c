"""``--set model.*`` on eval / loc-eval / analyze: the model is rebuilt with the overrides, or the command
stops naming the key (flrdf.engine.model_overrides, flrdf.engine.checkpoint.load_model)."""

import csv
import json

import pytest
import torch

from flrdf.boxes import box_iou
from flrdf.config import ConfigError

AS_BUILT = ["model.loc_map=mean", "model.suppression=none"]


@pytest.fixture(scope="module")
def ddt_model(tmp_path_factory):
    """A tiny demo-config model (layer2 DDT map, learnable suppression) saved as a model file, its weights,
    and a synthetic split with boxes."""
    from flrdf.config import load_config
    from flrdf.data.synthetic import make_demo_data
    from flrdf.engine.checkpoint import save_model_file
    from flrdf.model import FLRDF

    base = tmp_path_factory.mktemp("overrides")
    root = base / "data"
    make_demo_data(root, num_classes=4, train_per_class=2, test_per_class=3, image_size=80, seed=2)
    cfg = load_config("demo", ["model.weights=null", f"data.root={root}", "data.image_size=64", "data.resize=72",
                               "data.num_workers=0", "model.box_refine=none", "model.layer4_stride=2"])
    torch.manual_seed(0)
    model = FLRDF(cfg.model, 4)
    with torch.no_grad():  # DDT statistics from one training batch
        model.train()(torch.randn(4, 3, 64, 64))
    with torch.no_grad():  # a gate far from constant, so dropping it changes the features
        model.suppression.controller.fc.weight.normal_(0, 0.5)
    path = base / "tiny.safetensors"
    save_model_file(path, model.eval(), cfg, [f"c{i}" for i in range(4)], half=False)
    return path, root, cfg, {k: v.clone() for k, v in model.state_dict().items()}


def reference(cfg, state):
    """The model built with loc_map=mean and no suppression from the start, on the same weights
    (the DDT statistics and the controller are not part of it)."""
    from flrdf.config import config_from_dict
    from flrdf.model import FLRDF

    c = config_from_dict(cfg.to_dict())
    c.model.loc_map, c.model.suppression = "mean", "none"
    model = FLRDF(c.model, 4)
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith(("ddt.", "suppression."))})
    return model.eval()


def test_load_model_rebuilds_with_architectural_overrides(ddt_model):
    from flrdf.engine.checkpoint import load_model

    path, _, cfg, state = ddt_model
    loaded = load_model(path, "cpu", AS_BUILT)
    assert loaded.model.ddt is None and loaded.model.suppression.controller is None
    assert loaded.config.model.loc_map == "mean" and loaded.config.model.suppression == "none"
    x = torch.rand(3, 3, 64, 64)
    ref = reference(cfg, state)
    with torch.no_grad():
        got, want = loaded.model(x), ref(x)
    assert torch.equal(got.loc_map, want.loc_map) and torch.equal(got.boxes, want.boxes)
    assert torch.equal(got.logits, want.logits)
    # and differs from the model as stored (the override is not a no-op on this model)
    with torch.no_grad():
        stored = load_model(path, "cpu").model(x)
    assert not torch.allclose(stored.loc_map, want.loc_map)


def _dataset_boxes(cfg, root, frame_full: bool):
    from flrdf.config import config_from_dict
    from flrdf.data import FGVCDataset
    from flrdf.engine.loaders import records_for
    from flrdf.engine.loc_report import frame_transform

    c = config_from_dict(cfg.to_dict())
    c.data.root = str(root)
    data = records_for(c.data, "test", 0)
    return FGVCDataset(data, frame_transform(c.data, "full" if frame_full else "crop"))


def test_loc_eval_scores_the_overridden_model(ddt_model, tmp_path, capsys):
    from flrdf.engine.loc_report import main as loc_eval_main

    path, root, cfg, state = ddt_model
    out = tmp_path / "le"
    assert loc_eval_main(["--checkpoint", str(path), "--set", f"data.root={root}", *AS_BUILT, "--methods", "",
                          "--no-wsol", "--worst", "0", "--device", "cpu", "--out", str(out)]) == 0
    capsys.readouterr()
    with open(out / "per_image.csv") as f:
        got = [float(r["iou_flrdf"]) for r in csv.DictReader(f)]
    ds = _dataset_boxes(cfg, root, frame_full=True)
    items = [ds[i] for i in range(len(ds))]
    with torch.no_grad():
        boxes = reference(cfg, state)(torch.stack([it["image"] for it in items])).boxes
    want = box_iou(boxes, torch.stack([it["box"] for it in items])).tolist()
    assert got == pytest.approx(want, abs=1e-4)
    results = json.loads((out / "results.json").read_text())
    assert results["rows"][0]["label"].startswith("FLRDF (layer2, no suppression; beyond the paper)")
    assert "DDT" not in results["rows"][0]["label"]


def test_eval_scores_the_overridden_model(ddt_model, capsys):
    from flrdf.engine.commands import eval_main
    from flrdf.engine.evaluate import evaluate
    from flrdf.engine.loaders import eval_loader
    from flrdf.engine.step import precision_for

    path, root, cfg, state = ddt_model
    assert eval_main(["--checkpoint", str(path), "--set", f"data.root={root}", *AS_BUILT, "--device", "cpu",
                      "--workers", "0"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ref = evaluate(reference(cfg, state), eval_loader(cfg.data, "test", 16, 0),
                   precision_for(torch.device("cpu"), False, False))
    for key in ("top1", "top1_raw", "loc_acc", "mean_iou"):
        assert got[key] == pytest.approx(ref[key], abs=1e-6), key
    assert got["gate_mean"] is None  # no suppression: no gate


@pytest.mark.parametrize("override, named", [
    ("model.gate_init=0.5", "model.gate_init"),        # training only: would change nothing
    ("model.weights=/tmp/x.pth", "model.weights"),
    ("model.backbone=resnet34", "model.backbone"),    # weights of another shape
    ("model.loc_layer=layer3", "model.loc_layer"),    # the DDT statistics are layer2's (128 channels, not 256)
])
def test_overrides_that_cannot_apply_stop_naming_the_key(ddt_model, override, named):
    from flrdf.engine.checkpoint import load_model

    path, _, _, _ = ddt_model
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_model(path, "cpu", [override])


def test_dropping_a_head_leaves_its_weights_unused(ddt_model):
    from flrdf.engine.checkpoint import load_model

    path, _, _, _ = ddt_model
    loaded = load_model(path, "cpu", ["model.branches=raw+rdf"])
    assert loaded.model.branches == ("raw", "jigsaw") and "object" not in loaded.model.heads


def test_a_module_the_checkpoint_lacks_stops_naming_the_key(ddt_model, tmp_path, capsys):
    """A model trained with the channel mean and no suppression has no DDT statistics and no controller."""
    from flrdf.engine.checkpoint import load_model, save_model_file
    from flrdf.engine.commands import eval_main

    path, root, cfg, state = ddt_model
    plain = tmp_path / "plain.safetensors"
    loaded = load_model(path, "cpu", AS_BUILT)
    save_model_file(plain, loaded.model, loaded.config, [f"c{i}" for i in range(4)], half=False)
    with pytest.raises(ConfigError, match=r"model\.loc_map.*ddt\.mean"):
        load_model(plain, "cpu", ["model.loc_map=ddt"])
    assert eval_main(["--checkpoint", str(plain), "--set", f"data.root={root}", "model.suppression=learnable",
                      "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "model.suppression" in err and "suppression.controller" in err
