"""timm backbones (issue 24): every listed family at a tiny size and random init trains, boxes on its real grid,
crops from the reported box, answers Inspect and loc-eval, and round-trips through a checkpoint; what a backbone
cannot do is refused with a message naming it."""

import pytest
import torch

from flrdf.boxes import boxes_from_maps, crop_resize
from flrdf.config import ConfigError, load_config
from flrdf.model import FLRDF

# family -> (backbone, input size, where a cell of the last stage is centred: s/2 for a patch embedding, 0.5 for
# a stem of padded strided convolutions)
FAMILIES = {
    "convnext": ("timm:convnext_atto", 64, "patch"),
    "efficientnet": ("timm:efficientnet_b0", 64, "conv"),
    "swin": ("timm:swinv2_tiny_window8_256", 64, "patch"),
    "vit": ("timm:vit_tiny_patch16_224", 64, "patch"),
}
K = 4


def config(backbone: str, size: int, *extra: str):
    return load_config("demo", ["model.weights=null", f"model.backbone={backbone}", "model.layer4_stride=2",
                                f"data.image_size={size}", f"data.resize={size + 8}", "data.source_size=0",
                                "model.box_refine=none", "model.jigsaw_n=2", *extra])


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory):
    """One family's random-init model, saved as a model file and loaded back."""
    from flrdf.engine.checkpoint import load_model, save_model_file

    backbone, size, kind = FAMILIES[request.param]
    cfg = config(backbone, size)
    torch.manual_seed(0)
    model = FLRDF(cfg.model, K, size)
    with torch.no_grad():  # the demo's DDT map learns its statistics from training batches: give it one
        model.train()(torch.randn(2, 3, size, size))
    path = tmp_path_factory.mktemp(request.param) / "model.safetensors"
    save_model_file(path, model.eval(), cfg, [f"c{i}" for i in range(K)], half=False)
    return {"name": request.param, "backbone": backbone, "size": size, "kind": kind, "cfg": cfg, "model": model,
            "path": path, "loaded": load_model(path, "cpu")}


def test_a_training_step_runs_and_moves_the_backbone(family):
    from flrdf.config import LossConfig
    from flrdf.losses import flrdf_loss

    torch.manual_seed(1)
    model = FLRDF(family["cfg"].model, K, family["size"]).train()
    before = {k: v.clone() for k, v in model.backbone.state_dict().items() if v.is_floating_point()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(2, 3, family["size"], family["size"]), torch.tensor([0, 3])
    out = model(x)
    assert out.logits_object is not None and out.logits_jigsaw is not None
    losses = flrdf_loss(out, y, LossConfig())
    total = losses["loss_total"]
    assert torch.isfinite(total)
    total.backward()
    opt.step()
    moved = [k for k, v in model.backbone.state_dict().items() if k in before and not torch.equal(v, before[k])]
    assert moved, "no backbone weight changed"


def test_maps_are_on_the_backbones_real_grid(family):
    model, size = family["model"].eval(), family["size"]
    b = model.backbone
    with torch.no_grad():
        out = model(torch.randn(1, 3, size, size))
        last = b(torch.randn(1, 3, size, size))
    # the grid the boxes use has the cells the network computes, at its real stride
    assert tuple(last.shape[-2:]) == b.feature_hw((size, size), "layer4")
    assert tuple(out.loc_map.shape[-2:]) == b.feature_hw((size, size), model.cfg.loc_layer)
    assert b.stride * last.shape[-1] == size  # 64 px tiles each of these backbones' grids
    s, c = b.stage_stride("layer4"), b.cell_centre("layer4")
    assert c == (s / 2 if family["kind"] == "patch" else 0.5)
    # a single cell lit: the box is that cell, one stride wide, centred on j*s + c
    h, w = b.feature_hw((size, size))
    grid = model.paper_grid((size, size))
    for i, j in {(0, 0), (h - 1, w - 1), (h // 2, w - 1)}:
        m = torch.zeros(1, h, w)
        m[0, i, j] = 1.0
        box = model.paper_boxes(m, (size, size), tau=0.5)[0]
        cx = float(box[0] + box[2]) / 2
        lo, hi = max(0.0, j * s + c - s / 2), min(float(size), j * s + c + s / 2)
        assert cx == pytest.approx((lo + hi) / 2, abs=s / (2 * model.cfg.map_upsample) + 1e-4)
        assert grid.shape == (h * model.cfg.map_upsample, w * model.cfg.map_upsample)


@pytest.mark.parametrize("backbone,size,expected", [
    ("timm:convnext_atto", 96, 48.0),      # a 3x3 map on 96 px: the middle cell's patch is [32, 64)
    ("timm:efficientnet_b0", 65, 32.5),    # a 3x3 map on 65 px: padded stride-2 convolutions centre it on pixel 32
])
def test_the_cell_centre_rule_is_where_a_cell_looks(backbone, size, expected):
    """The gradient of the middle cell's channel mean w.r.t. a symmetric input is centred where the grid puts it."""
    from flrdf.timm_backbone import TimmBackbone

    torch.manual_seed(0)
    b = TimmBackbone(backbone).eval()
    h, w = b.feature_hw((size, size))
    assert (h, w) == (3, 3)
    total = torch.zeros(size, size)
    for draw in range(2):
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(draw), requires_grad=True)
        b(x)[0, :, 1, 1].mean().backward()
        total += x.grad.abs().sum(dim=(0, 1))
    xs = torch.arange(size, dtype=torch.float64) + 0.5
    centre = float((total.sum(0).double() * xs).sum() / total.sum())
    assert centre == pytest.approx(expected, abs=2.0)
    assert 1 * b.stride + b.cell_centre() == pytest.approx(expected)


def test_the_object_crop_is_cut_from_the_reported_map_box(family):
    torch.manual_seed(2)
    model = FLRDF(family["cfg"].model, K, family["size"]).train()
    x = torch.randn(2, 3, family["size"], family["size"])
    out = model(x)
    assert torch.allclose(out.object_images, crop_resize(x, out.map_boxes), atol=1e-6)
    model.eval()
    with torch.no_grad():
        ev = model(x)
    assert torch.equal(ev.boxes, ev.map_boxes)  # no refinement: the reported box is the map's
    grid = model.box_grid(x.shape[-2:])
    assert torch.equal(ev.map_boxes, boxes_from_maps(ev.loc_map, model.cfg.tau, tuple(x.shape[-2:]),
                                                     upsample=model.cfg.map_upsample, normalize=False, grid=grid))


def test_a_checkpoint_round_trips_bit_exactly(family):
    model, loaded = family["model"].eval(), family["loaded"].model
    assert loaded.backbone.name == family["backbone"]
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    x = torch.randn(2, 3, family["size"], family["size"])
    with torch.no_grad():
        assert torch.equal(model(x).logits, loaded(x).logits)


def test_inspect_loc_eval_and_analyze_answer(family, tmp_path, examples_dir):
    import json

    from flrdf.data.synthetic import make_demo_data
    from flrdf.engine.loc_report import main as loc_eval_main, read_results
    from flrdf.inspect import inspect_image

    entry = json.loads((examples_dir / "examples.json").read_text())[0]
    r = inspect_image(family["loaded"], examples_dir / entry["file"], cam_methods=("gradcam", "eigencam"),
                      gt_box=entry["box"])
    s = family["size"]
    assert r.loc_overlay.shape == (s, s, 3) and [c.method for c in r.cams] == ["gradcam", "eigencam"]
    for c in r.cams:
        assert c.map.shape == (s, s) and 0 <= c.box[0] < c.box[2] <= s
    root = tmp_path / "data"
    make_demo_data(root, num_classes=K, train_per_class=1, test_per_class=1, image_size=80, seed=1)
    out = tmp_path / "loc"
    assert loc_eval_main(["--checkpoint", str(family["path"]), "--set", f"data.root={root}", "--methods", "gradcam",
                          "--limit", "3", "--worst", "0", "--no-wsol", "--device", "cpu", "--out", str(out)]) == 0
    rows = {row["method"]: row for row in read_results(out)["rows"]}
    assert "gradcam" in rows and read_results(out)["n"] == 3
    from flrdf.engine.analyze import main as analyze_main

    analysis = tmp_path / "analysis"
    assert analyze_main(["--checkpoint", str(family["path"]), "--set", f"data.root={root}", "--device", "cpu",
                         "--methods", "gradcam", "--faithfulness-limit", "2", "--embedding", "tsne",
                         "--out", str(analysis)]) == 0
    assert (analysis / "embedding_raw.csv").read_text().count("\n") == 1 + K  # header + one row per test image


# ---------------------------------------------------------------- refusals
@pytest.mark.parametrize("sets,match", [
    (["model.backbone=timm:not_a_model"], r"unknown timm model 'not_a_model'"),
    (["model.backbone=timm:crossvit_tiny_240"], r"timm:crossvit_tiny_240 has 2 feature stage"),
    (["model.backbone=timm:swin_tiny_patch4_window7_224", "data.image_size=256", "data.resize=288"],
     r"data.image_size=256 does not tile timm:swin_tiny_patch4_window7_224's attention windows"),
    (["model.backbone=timm:vit_tiny_patch16_224", "data.image_size=100", "data.resize=112"],
     r"data.image_size=100 does not tile timm:vit_tiny_patch16_224's grid: it must be a multiple of 16"),
    (["model.backbone=timm:vit_tiny_patch16_224", "model.layer4_stride=1"], r"timm:vit_tiny_patch16_224 cannot keep"),
    (["model.backbone=timm:vit_tiny_patch16_224", "model.suppress_layer3=true"],
     r"suppress_layer3 cannot apply to timm:vit_tiny_patch16_224"),
    (["model.backbone=timm:efficientnet_b0", "model.frozen_stages=1"], r"frozen_stages=1 is not supported for timm:eff"),
    (["model.backbone=resnet19"], r"model.backbone must be one of"),
])
def test_what_a_backbone_cannot_do_is_refused_at_config_load(sets, match):
    with pytest.raises(ConfigError, match=match):
        load_config("demo", ["model.layer4_stride=2", "data.source_size=0", *sets])


def test_a_size_the_backbone_can_take_is_accepted():
    load_config("demo", ["model.backbone=timm:swin_tiny_patch4_window7_224", "model.layer4_stride=2",
                         "data.image_size=224", "data.resize=256", "data.source_size=0"])


def test_frozen_stages_keep_their_weights(tmp_path):
    torch.manual_seed(0)
    model = FLRDF(config("timm:convnext_atto", 64, "model.frozen_stages=2").model, K, 64).train()
    frozen = [n for n, p in model.backbone.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(("net.stem", "net.stages_0", "net.stages_1")) for n in frozen)
    assert any(n.startswith("net.stages_1") for n in frozen)
    assert all(p.requires_grad for n, p in model.backbone.named_parameters() if n.startswith("net.stages_2"))


def test_pretrained_offline_is_refused_with_the_remedies(monkeypatch):
    from flrdf.backbone import PretrainedUnavailable
    from flrdf.timm_backbone import TimmBackbone

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")
    with pytest.raises(PretrainedUnavailable, match=r"timm's weights of convnext_atto could not be fetched.*"
                                                    r"model\.weights=PATH.*model\.pretrained=false"):
        TimmBackbone("timm:convnext_atto", pretrained=True)


def test_weights_from_a_timm_checkpoint_and_from_an_export(tmp_path):
    import timm
    from safetensors.torch import save_file

    from flrdf.engine.checkpoint import backbone_state_dict
    from flrdf.timm_backbone import TimmBackbone

    torch.manual_seed(3)
    full = timm.create_model("convnext_atto", num_classes=1000)  # a timm checkpoint of the whole model, head included
    save_file(full.state_dict(), str(tmp_path / "convnext_atto.safetensors"))
    b = TimmBackbone("timm:convnext_atto", weights=str(tmp_path / "convnext_atto.safetensors"))
    assert b.init.startswith("file:")
    assert torch.equal(b.net.stem_0.weight, full.stem[0].weight)
    assert torch.equal(b.net.stages_3.blocks[0].conv_dw.weight, full.stages[3].blocks[0].conv_dw.weight)
    # this project's export (flrdf export --backbone-out) loads back as model.weights
    model = FLRDF(config("timm:convnext_atto", 64, f"model.weights={tmp_path / 'convnext_atto.safetensors'}").model,
                  K, 64)
    torch.save(backbone_state_dict(model), tmp_path / "export.pth")
    again = TimmBackbone("timm:convnext_atto", weights=str(tmp_path / "export.pth"))
    for k, v in model.backbone.net.state_dict().items():
        assert torch.equal(v, again.net.state_dict()[k]), k
    torch.save({"something": torch.zeros(3)}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match=r"wrong.pth does not match timm:convnext_atto"):
        TimmBackbone("timm:convnext_atto", weights=str(tmp_path / "wrong.pth"))


def test_a_non_imagenet_normalisation_is_applied_inside_the_backbone():
    """ViT augreg weights expect mean = std = 0.5: the backbone maps the ImageNet-normalised input to that."""
    from flrdf.timm_backbone import TimmBackbone

    b = TimmBackbone("timm:vit_tiny_patch16_224", image_size=64)
    assert b._renorm
    pixel = torch.rand(1, 3, 1, 1)
    imagenet = (pixel - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(imagenet * b._in_scale + b._in_shift, (pixel - 0.5) / 0.5, atol=1e-6)
    assert not TimmBackbone("timm:convnext_atto")._renorm


def test_bench_takes_a_list_of_timm_backbones(capsys):
    import json

    from flrdf.bench import main as bench_main

    assert bench_main(["--backbone", "timm:convnext_atto,timm:vit_tiny_patch16_224", "--size", "64", "--batch", "2",
                       "--iters", "1", "--rounds", "1", "--warmup", "0", "--classes", "4", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result["backbones"]) == {"timm:convnext_atto", "timm:vit_tiny_patch16_224"}
    for r in result["backbones"].values():
        assert r["train_ratio"] > 0 and r["infer_ratio"] > 0
    assert bench_main(["--backbone", "timm:vit_tiny_patch16_224", "--size", "100", "--device", "cpu"]) == 2
    assert "multiple of 16" in capsys.readouterr().err



def test_the_train_form_offers_timm_backbones_and_any_typed_name(tmp_path):
    from dashboard import train_form as form

    choices = dict((f.key, f) for f in form.FIELDS)["model.backbone"].choices
    assert "resnet50" in choices and any(c.startswith("timm:convnext") for c in choices)
    assert any(c.startswith("timm:vit") for c in choices) and any(c.startswith("timm:swin") for c in choices)
    values = form.defaults("demo") | {"data.root": str(tmp_path), "model.backbone": "timm:regnety_002",
                                      "model.pretrained": False}
    res = form.resolve("demo", values)
    assert "model.backbone=timm:regnety_002" in res.overrides and "model.weights=null" in res.overrides
    assert any("holds the weights of resnet18, not timm:regnety_002" in n for n in res.notes)
    with pytest.raises(ConfigError, match="unknown timm model 'no_such_net'"):
        form.resolve("demo", values | {"model.backbone": "timm:no_such_net"})


def test_suppression_after_layer3_on_a_channels_last_swin_stage():
    """Swin's stages are NHWC inside timm: the layer3 suppression sees (and returns) NCHW, and layer4 is fed by it."""
    torch.manual_seed(0)
    cfg = config("timm:swinv2_tiny_window8_256", 64, "model.suppress_layer3=true", "model.suppression=fixed",
                 "model.delta=0.3", "model.loc_layer=layer3")
    model = FLRDF(cfg.model, K, 64).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        f = model.features(x)
        plain = model.backbone(x)  # no suppression after layer3
    assert f.loc.shape == f.plain.shape == (1, model.backbone.stage_channels("layer3"), 4, 4)
    assert not torch.equal(f.loc, f.plain)  # X' of layer3 is the suppressed one
    assert torch.all(f.loc <= f.plain.amax(dim=(2, 3), keepdim=True) * 0.3 + 1e-5)
    assert not torch.allclose(f.x, plain)  # layer4 is computed from the suppressed layer3


def test_layer4_stride_1_gives_a_timm_cnn_output_stride_16():
    torch.manual_seed(0)
    fine = FLRDF(config("timm:convnext_atto", 64, "model.layer4_stride=1", "model.loc_map=mean").model, K, 64).eval()
    with torch.no_grad():
        out = fine(torch.randn(1, 3, 64, 64))
    assert fine.backbone.stride == 16 and fine.backbone.feature_hw((64, 64)) == (4, 4)
    assert out.paper_map.shape == (1, 4, 4)


def test_the_inspect_page_names_what_layer4_is_on_a_timm_backbone(family):
    from dashboard.inspect_tab import model_summary

    text = model_summary(family["loaded"])
    s = family["loaded"].model.backbone.stage_stride("layer4")
    assert f"{family['backbone']} (layer4 = its last feature stage, stride {s}" in text


def test_the_train_form_warns_when_timm_weights_are_not_in_the_cache(tmp_path):
    from huggingface_hub import try_to_load_from_cache

    from dashboard import train_form as form
    from dashboard.train_tab import preflight_notes

    cached = isinstance(try_to_load_from_cache("timm/convnext_tiny.in12k_ft_in1k", "model.safetensors"), str)
    res = form.resolve("cub-convnext", form.defaults("cub-convnext") | {"data.root": str(tmp_path)})
    notes = [n for n in preflight_notes(res) if "Hugging Face cache" in n]
    if cached:  # a developer's machine that has them: nothing to warn about
        assert not notes
    else:
        assert len(notes) == 1 and "timm's weights of convnext_tiny" in notes[0]
        assert "model.weights=PATH" in notes[0] and "model.pretrained=false" in notes[0]
