"""Issue 12, sections 4-5: the suppression gate's start value and reported distribution, the
raw + suppression ablation, and the loss weightings (fixed / normalized / scheduled, aux scale)."""

import math

import pytest
import torch

from flrdf.config import ConfigError, LossConfig, ModelConfig, load_config
from flrdf.losses import branch_weights, flrdf_loss
from flrdf.model import FLRDF, FLRDFOutput, scale_grad
from flrdf.suppression import GateTally, Suppression, SuppressionController, capture_gates, gate_stats


# ---------------------------------------------------------------- section 4: the gate
@pytest.mark.parametrize("init", [0.7, 0.9, 0.3])
def test_controller_starts_near_gate_init(init):
    torch.manual_seed(0)
    ctrl = SuppressionController(64, gate_init=init)
    assert torch.allclose(ctrl.fc.bias, torch.full((64,), math.log(init / (1 - init))))
    assert 0.005 < float(ctrl.fc.weight.detach().std()) < 0.015
    g = ctrl(torch.rand(4, 64, 7, 7))
    assert torch.all((g - init).abs() < 0.05) and abs(float(g.detach().mean()) - init) < 0.01


def test_default_gate_init_is_the_papers_0_7_and_is_validated():
    assert ModelConfig().gate_init == 0.7
    with pytest.raises(ConfigError, match="gate_init"):
        load_config(None, ["model.gate_init=1.0"])


def test_checkpoint_without_bias_loads_with_the_old_behaviour():
    torch.manual_seed(0)
    model = FLRDF(ModelConfig(backbone="resnet18", pretrained=False), 3).eval()
    state = model.state_dict()
    del state["suppression.controller.fc.bias"]          # a checkpoint from before the bias
    fresh = FLRDF(ModelConfig(backbone="resnet18", pretrained=False), 3).eval()
    fresh.load_state_dict(state)                          # strict: no missing-key error
    assert torch.equal(fresh.suppression.controller.fc.bias, torch.zeros(512))
    x = torch.rand(2, 512, 4, 4)
    old = torch.sigmoid(x.mean(dim=(2, 3)) @ state["suppression.controller.fc.weight"].T)
    assert torch.allclose(fresh.suppression.gate(x).flatten(1), old)


def test_the_bundled_demo_model_still_loads():
    from pathlib import Path

    from flrdf.engine.checkpoint import load_model

    path = Path(__file__).resolve().parents[1] / "assets" / "demo_model.safetensors"
    loaded = load_model(path)
    fc = loaded.model.suppression.controller.fc
    assert fc.bias is not None and fc.weight.shape == (512, 512)


def test_gate_stats_known_values():
    g = torch.arange(1, 11, dtype=torch.float32) / 10  # 0.1 .. 1.0
    s = gate_stats(g)
    assert s["mean"] == pytest.approx(0.55) and s["n"] == 10
    assert s["p50"] == pytest.approx(0.55) and s["p10"] == pytest.approx(0.19) and s["p90"] == pytest.approx(0.91)
    assert sum(s["hist"]) == pytest.approx(1.0) and len(s["hist"]) == len(s["hist_edges"]) - 1 == 20
    tally = GateTally()
    tally.add(torch.full((3, 100), 0.7))
    tally.add(0.2, n_channels=100, n_images=1)          # a fixed gate
    t = tally.summary()
    assert t["n"] == 400 and t["mean"] == pytest.approx(0.575)
    assert t["p10"] == pytest.approx(0.2, abs=0.001) and t["p50"] == pytest.approx(0.7, abs=0.001)
    assert GateTally().summary() is None


def test_capture_gates_records_each_mode_and_unhooks():
    x = torch.rand(2, 8, 3, 3)
    for mode, expect in (("learnable", (2, 8)), ("fixed", (0.4, 2, 8)), ("none", None)):
        holder = torch.nn.Module()
        holder.suppression = Suppression(8, mode, delta=0.4)
        with capture_gates(holder) as seen:
            holder.suppression(x)
        if expect is None:
            assert seen == []
        elif mode == "fixed":
            assert seen == [expect]
        else:
            assert seen[0].shape == expect and torch.allclose(seen[0], holder.suppression.gate(x).flatten(1))
        holder.suppression(x)
        assert len(seen) == (0 if expect is None else 1)  # hooks removed on exit


def test_inspect_and_eval_report_the_gate(tiny_loaded, examples_dir):
    import json

    from dashboard.inspect_view import gate_text
    from flrdf.inspect import inspect_image

    entry = json.loads((examples_dir / "examples.json").read_text())[0]
    r = inspect_image(tiny_loaded, examples_dir / entry["file"], cam_methods=[])
    assert r.gate is not None and r.gate["n"] == 512
    assert 0 <= r.gate["p10"] <= r.gate["p50"] <= r.gate["p90"] <= 1
    line = gate_text(r.gate)
    assert f"mean {r.gate['mean']:.2f}" in line and "`" in line
    assert gate_text(None) == ""


# ---------------------------------------------------------------- the raw + suppression ablation
def test_raw_branch_with_learnable_suppression_trains_and_evaluates(tmp_path):
    from flrdf.data.synthetic import make_demo_data
    from flrdf.engine.evaluate import evaluate
    from flrdf.engine.loaders import eval_loader
    from flrdf.engine.step import precision_for, train_step

    torch.manual_seed(0)
    model = FLRDF(ModelConfig(backbone="resnet18", pretrained=False, branches="raw", suppression="learnable",
                              jigsaw_n=2), 3)
    assert set(model.heads) == {"raw"} and model.suppression.controller is not None
    x, y = torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 0])
    model.eval()
    with torch.no_grad():
        out = model(x)
        feats, suppressed = model.raw_features(x)
    # the raw head reads X' (suppressed), which differs from X
    assert torch.allclose(out.logits_raw, model.heads["raw"](suppressed.mean(dim=(2, 3))), atol=1e-5)
    assert not torch.allclose(suppressed, feats)
    assert out.boxes is not None and out.boxes.shape == (4, 4) and out.loc_map.shape == (4, 2, 2)
    assert out.logits_object is None and out.logits_jigsaw is None
    # one training step: the controller learns, the loss is the raw loss alone
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.suppression.controller.fc.weight.detach().clone()
    terms = train_step(model, x, y, opt, precision_for(torch.device("cpu"), False, False))
    assert torch.isfinite(terms["loss_total"]) and float(terms["loss_total"]) == pytest.approx(float(terms["loss_raw"]))
    assert not torch.equal(model.suppression.controller.fc.weight, before)
    # evaluation on a split with boxes: localization and the gate are reported
    root = tmp_path / "d"
    make_demo_data(root, num_classes=3, train_per_class=1, test_per_class=2, image_size=72, seed=0)
    cfg = load_config("demo", [f"data.root={root}", "data.image_size=64", "data.resize=64", "data.num_workers=0",
                               "model.weights=null"])
    res = evaluate(model, eval_loader(cfg.data, "test", 3, 0), precision_for(torch.device("cpu"), False, False))
    assert res["n_box"] == 6 and res["loc_acc"] is not None and res["top1_object"] is None
    assert 0 < res["gate_p10"] <= res["gate_p50"] <= res["gate_p90"] < 1 and res["gate_mean"] is not None


# ---------------------------------------------------------------- section 5: loss weighting
def _out(raw, obj=None, jig=None):
    return FLRDFOutput(logits_raw=raw, logits=raw, loc_map=torch.zeros(1, 1, 1), plain_map=torch.zeros(1, 1, 1),
                       logits_object=obj, logits_jigsaw=jig)


# logits whose cross-entropy against class 0 is known: [0, 0] -> ln 2; [ln 3, 0] -> ln(4/3); [0, ln 3] -> ln 4
RAW, OBJ, JIG = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3), 0.0]]), torch.tensor([[0.0, math.log(3)]])
L_RAW, L_OBJ, L_JIG = math.log(2), math.log(4 / 3), math.log(4)
Y = torch.tensor([0])


def test_fixed_weighting_is_the_papers_sum():
    t = flrdf_loss(_out(RAW, OBJ, JIG), Y, LossConfig(alpha=1, beta=2, gamma=0.5))
    assert float(t["loss_total"]) == pytest.approx(L_RAW + 2 * L_OBJ + 0.5 * L_JIG, rel=1e-6)
    assert LossConfig().weighting == "fixed"


def test_normalized_weighting_divides_by_the_present_weights():
    cfg = LossConfig(alpha=1, beta=2, gamma=1, weighting="normalized")
    t = flrdf_loss(_out(RAW, OBJ, JIG), Y, cfg)
    assert float(t["loss_total"]) == pytest.approx((L_RAW + 2 * L_OBJ + L_JIG) / 4, rel=1e-6)
    # raw + object only: divided by alpha + beta
    t = flrdf_loss(_out(RAW, OBJ), Y, cfg)
    assert float(t["loss_total"]) == pytest.approx((L_RAW + 2 * L_OBJ) / 3, rel=1e-6)
    # raw alone (warm-up): exactly the raw loss
    assert float(flrdf_loss(_out(RAW), Y, cfg)["loss_total"]) == pytest.approx(L_RAW, rel=1e-6)


def test_scheduled_weighting_ramps_beta_and_gamma():
    cfg = LossConfig(alpha=1, beta=1, gamma=2, weighting="scheduled", ramp_epochs=4)
    for epoch, ramp in ((0.0, 0.0), (1.0, 0.25), (3.0, 0.75), (4.0, 1.0), (9.0, 1.0)):
        t = flrdf_loss(_out(RAW, OBJ, JIG), Y, cfg, epoch=epoch)
        assert float(t["loss_total"]) == pytest.approx(L_RAW + ramp * (L_OBJ + 2 * L_JIG), rel=1e-6)
    assert branch_weights(cfg, epoch=None) == (1, 1, 2)       # no epoch given: the ramp is done
    assert branch_weights(LossConfig(weighting="scheduled", ramp_epochs=0), epoch=0.0) == (1, 1, 1)
    with pytest.raises(ConfigError, match="weighting"):
        load_config(None, ["loss.weighting=equal"])


def test_aux_backbone_scale_scales_only_the_backbone_gradient():
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    y = scale_grad(x, 0.25)
    assert torch.equal(y, x)
    (y * torch.tensor([3.0, 5.0])).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([0.75, 1.25]))
    # in the model: the object/jigsaw losses' gradient on the backbone is scaled, their heads' is not
    grads = {}
    for k in (1.0, 0.5):
        torch.manual_seed(0)
        model = FLRDF(ModelConfig(backbone="resnet18", pretrained=False, jigsaw_n=2), 2).train()
        model.aux_backbone_scale = k
        torch.manual_seed(1)
        out = model(torch.randn(2, 3, 64, 64), perms=torch.stack([torch.arange(4)] * 2))
        flrdf_loss(out, torch.tensor([0, 1]), LossConfig(alpha=0.0)).get("loss_total").backward()
        grads[k] = (model.backbone.layer4[1].conv2.weight.grad.clone(), model.heads["object"].weight.grad.clone())
    assert torch.allclose(grads[0.5][0], 0.5 * grads[1.0][0], rtol=1e-3, atol=1e-7)
    assert torch.allclose(grads[0.5][1], grads[1.0][1], rtol=1e-4, atol=1e-7)
