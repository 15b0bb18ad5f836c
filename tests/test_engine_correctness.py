"""Issue 13: the engine paths that GPU and multi-GPU users take, checked on the CPU.

Collective placement (NCCL reduces CUDA tensors only), device selection before the
first collective, best-score and RNG bookkeeping across a resume, the refusal to
train a pretrained config from random init, EXIF orientation vs annotated boxes,
and the optional zero-decay group. The 2-process gloo run with a resume lives in
tests/test_engine.py; scripts/gpu_check.sh runs the same paths on a real GPU.
"""

from __future__ import annotations

import json
import urllib.error
from pathlib import Path

import pytest
import torch

from flrdf.cli import main as cli_main
from flrdf.config import Config, ModelConfig, OptimConfig, load_config
from flrdf.engine.checkpoint import read_checkpoint
from flrdf.engine.rundir import read_metrics
from flrdf.model import FLRDF

from conftest import tiny


# ---------------------------------------------------------------- 1. collectives on the model's device
class _Reduced(Exception):
    """Raised by the fake all_reduce once it has seen a tensor (a meta tensor holds no data to go on with)."""


def test_evaluation_reduces_on_the_models_device(monkeypatch):
    """NCCL cannot reduce CPU tensors: evaluate() must all-reduce on the model's device. The model sits on
    the 'meta' device (the only non-CPU device a CPU-only machine has); the fake all_reduce records the
    device of the first tensor it gets and stops there."""
    import flrdf.engine.evaluate as ev
    from flrdf.engine.step import precision_for

    seen: list[torch.device] = []

    def fake_all_reduce(tensor, *a, **k):
        seen.append(tensor.device)
        raise _Reduced

    monkeypatch.setattr(ev.dist, "is_available", lambda: True)
    monkeypatch.setattr(ev.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(ev.dist, "all_reduce", fake_all_reduce)
    model = FLRDF(ModelConfig(backbone="resnet18", pretrained=False), 3).to("meta")
    with pytest.raises(_Reduced):
        ev.evaluate(model, [], precision_for(torch.device("meta"), False, False))
    assert seen == [torch.device("meta")]


def test_evaluation_sums_every_figure_across_ranks(monkeypatch):
    """The single packed collective carries every sum and the gate histogram: a fake 2-rank all_reduce (each
    rank saw the same shard) doubles the counts and leaves every rate unchanged."""
    import flrdf.engine.evaluate as ev
    from flrdf.engine.step import precision_for

    from test_evaluate import FakeModel, _batches

    prec = precision_for(torch.device("cpu"), False, False)
    alone = ev.evaluate(FakeModel(), list(_batches()), prec, jigsaw=True)
    devices = []

    def doubled(tensor, *a, **k):
        devices.append(tensor.device)
        tensor.mul_(2)

    monkeypatch.setattr(ev.dist, "is_available", lambda: True)
    monkeypatch.setattr(ev.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(ev.dist, "all_reduce", doubled)
    two = ev.evaluate(FakeModel(), list(_batches()), prec, jigsaw=True)
    assert devices == [torch.device("cpu")]
    assert two["n"] == 2 * alone["n"] and two["n_box"] == 2 * alone["n_box"]
    assert {k: v for k, v in two.items() if k not in ("n", "n_box")} == \
        {k: v for k, v in alone.items() if k not in ("n", "n_box")}


# ---------------------------------------------------------------- 2. device before the first collective
@pytest.mark.parametrize("runtime_device, backend", [("auto", "nccl"), ("cpu", "gloo")])
def test_ddp_setup_selects_the_gpu_before_any_collective(monkeypatch, tmp_path, runtime_device, backend):
    """torchrun rank 1 of 2 on a (pretend) CUDA machine: cuda.set_device(1) must come before the process group
    and its barrier, or every rank touches GPU 0 under NCCL. A CPU run keeps gloo although a GPU exists."""
    import torch.distributed as dist

    import flrdf.engine.trainer as T

    events: list[tuple] = []
    state = {"init": False}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: events.append(("set_device", str(torch.device(d)))))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)

    def init(backend=None, *a, **k):
        state["init"] = True
        events.append(("init", backend))

    monkeypatch.setattr(dist, "init_process_group", init)
    monkeypatch.setattr(dist, "is_initialized", lambda: state["init"])
    monkeypatch.setattr(dist, "get_rank", lambda *a: 1)
    monkeypatch.setattr(dist, "get_backend", lambda *a: backend)
    monkeypatch.setattr(dist, "barrier", lambda *a, **k: events.append(("barrier",)))
    monkeypatch.setattr(dist, "get_world_size", lambda *a: 2)

    def gather(out, obj, *a, **k):  # the first collective: every rank learns rank 0's run-lock verdict
        events.append(("barrier",))
        out[:] = [None] * len(out)

    monkeypatch.setattr(dist, "all_gather_object", gather)
    monkeypatch.setattr(dist, "destroy_process_group", lambda *a: events.append(("destroy",)))

    def fake_train(cfg, run, resume, rank, world, *rest):
        events.append(("train", rank, world, *(str(r) for r in rest if isinstance(r, torch.device))))
        return {"state": "finished"}

    monkeypatch.setattr(T, "_train", fake_train)
    cfg = Config()
    cfg.runtime.device = runtime_device
    T.train(cfg, tmp_path / "run")
    names = [e[0] for e in events]
    assert ("init", backend) in events, events
    assert names.index("barrier") > names.index("init")
    if backend == "nccl":
        assert ("set_device", "cuda:1") in events, events
        assert names.index("set_device") < names.index("init") < names.index("barrier")
        assert events[names.index("train")][3:] == ("cuda:1",)
    else:
        assert "set_device" not in names


# ---------------------------------------------------------------- 4. best validation score survives a resume
def test_resume_keeps_the_best_validation_score(demo_root, tmp_path):
    run = tmp_path / "run"
    args = tiny(demo_root, **{"data.val_fraction": 0.25, "optim.epochs": 1})
    assert cli_main(["train", "--config", "demo", "--out", str(run), *args]) == 0
    val = [m for m in read_metrics(run) if m.get("split") == "val"]
    last = run / "checkpoints" / "last.pt"
    state = read_checkpoint(last)
    assert state["extra"]["best_val_top1"] == val[-1]["top1"]  # stored with the checkpoint
    assert read_checkpoint(run / "checkpoints" / "best.pt")["step"] == state["step"]
    # an earlier epoch scored a perfect 1.0: no later validation beats it, so best.pt must stay as it is
    state["extra"]["best_val_top1"] = 1.0
    torch.save(state, last)
    best_before = (run / "checkpoints" / "best.pt").read_bytes()
    assert cli_main(["train", "--out", str(run), "--resume", "--set", "optim.epochs=2"]) == 0
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["epoch"] == 2
    assert len([m for m in read_metrics(run) if m.get("split") == "val"]) == 2  # the resumed epoch validated
    assert status["best_val_top1"] == 1.0
    assert (run / "checkpoints" / "best.pt").read_bytes() == best_before


# ---------------------------------------------------------------- 5. no silent random init
def _no_download(monkeypatch, tmp_path):
    """An empty torchvision cache and a download that fails as it does without network."""
    import torchvision.models._api as api

    def refuse(url, *a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(api, "load_state_dict_from_url", refuse)


def test_pretrained_backbone_that_cannot_be_fetched_stops_with_the_remedies(monkeypatch, tmp_path):
    from flrdf.backbone import PretrainedUnavailable, ResNetBackbone

    _no_download(monkeypatch, tmp_path)
    with pytest.raises(PretrainedUnavailable) as err:
        ResNetBackbone("resnet18", pretrained=True)
    text = str(err.value)
    for needle in ("model.weights=", "TORCH_HOME", "model.pretrained=false", "resnet18", "URLError"):
        assert needle in text, (needle, text)
    ResNetBackbone("resnet18", pretrained=False)  # random init on purpose still builds


def test_training_a_pretrained_config_without_weights_fails_at_start(monkeypatch, tmp_path, demo_root):
    _no_download(monkeypatch, tmp_path)
    run = tmp_path / "run"
    code = cli_main(["train", "--config", "demo", "--out", str(run),
                     *tiny(demo_root, **{"model.pretrained": "true"})])
    assert code == 1
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "model.pretrained=false" in status["error"]
    assert "TORCH_HOME" in status["error"] and "model.weights=PATH" in status["error"]
    assert not any("loss_total" in m for m in read_metrics(run))  # failed before the first step


def test_train_form_warns_before_launch_when_imagenet_weights_are_missing(monkeypatch, tmp_path):
    from dashboard import train_form as form
    from dashboard.train_tab import preflight_notes
    from flrdf.backbone import cached_weights_path

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    res = form.resolve("cub", {"data.root": str(tmp_path)})
    notes = [n for n in preflight_notes(res) if "ImageNet" in n]
    assert len(notes) == 1
    assert "model.weights=" in notes[0] and "TORCH_HOME" in notes[0] and "model.pretrained=false" in notes[0]
    assert str(cached_weights_path("resnet50")) in notes[0]
    # the weights in the cache: nothing to warn about; random init asked for: nothing either
    cached = cached_weights_path("resnet50")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"stand-in")
    assert not [n for n in preflight_notes(form.resolve("cub", {"data.root": str(tmp_path)})) if "ImageNet" in n]
    cached.unlink()
    res = form.resolve("cub", {"data.root": str(tmp_path), "model.pretrained": False})
    assert not [n for n in preflight_notes(res) if "ImageNet" in n]


# ---------------------------------------------------------------- 6. EXIF orientation vs annotated boxes
def _cub_with_rotated_jpeg(root: Path) -> Path:
    """A one-image CUB layout whose JPEG is stored 120 x 80 with EXIF orientation 6 (viewers rotate it to
    80 x 120); the red object and its box are annotated in the stored pixels, as CUB's are."""
    from PIL import Image

    base = root / "CUB_200_2011"
    (base / "images" / "001.Red_thing").mkdir(parents=True)
    im = Image.new("RGB", (120, 80), (20, 60, 200))
    im.paste((230, 20, 20), (10, 20, 40, 60))          # x 10..40, y 20..60 in the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6
    path = base / "images" / "001.Red_thing" / "a.jpg"
    im.save(path, quality=95, exif=exif)
    (base / "images.txt").write_text("1 001.Red_thing/a.jpg\n")
    (base / "classes.txt").write_text("1 001.Red_thing\n")
    (base / "image_class_labels.txt").write_text("1 1\n")
    (base / "train_test_split.txt").write_text("1 0\n")
    (base / "bounding_boxes.txt").write_text("1 10.0 20.0 30.0 40.0\n")
    return path


def test_box_datasets_read_pixels_as_stored_so_the_box_lands_on_the_object(tmp_path):
    from flrdf.data import FGVCDataset, build_transform, load_image, load_records

    path = _cub_with_rotated_jpeg(tmp_path)
    data = load_records("cub", tmp_path, "test")
    sample = FGVCDataset(data, build_transform(False, 64, 64, mean=(0, 0, 0), std=(1, 1, 1)))[0]
    x1, y1, x2, y2 = (int(round(float(v))) for v in sample["box"])
    inside = sample["image"][:, y1 + 2:y2 - 2, x1 + 2:x2 - 2]
    assert inside.numel() > 0
    red, blue = inside[0].mean().item(), inside[2].mean().item()
    assert red > 0.7 and blue < 0.3, (red, blue, (x1, y1, x2, y2))
    # uploads (Inspect, predict) and the folder reader keep the EXIF rotation
    assert load_image(path).size == (80, 120)
    assert load_image(path, exif_transpose=False).size == (120, 80)


# ---------------------------------------------------------------- 8. zero weight decay on norms, biases, controller
def test_no_decay_option_moves_norms_biases_and_controller_to_a_zero_decay_group():
    from flrdf.engine.optim import build_optimizer, param_groups
    from flrdf.suppression import SuppressionController

    model = FLRDF(ModelConfig(backbone="resnet18", pretrained=False, suppress_layer3=True), 5)
    every = {id(p): n for n, p in model.named_parameters()}
    norms = {id(p) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    controller = {id(p) for m in model.modules() if isinstance(m, SuppressionController) for p in m.parameters()}
    biases = {id(p) for n, p in model.named_parameters() if n.endswith(".bias")}
    assert norms and controller and biases

    default = param_groups(model, OptimConfig())
    assert OptimConfig().no_decay_norm_bias is False  # the paper recipe: decay everywhere
    assert [g["weight_decay"] for g in default] == [OptimConfig().weight_decay] * 2
    assert sorted(id(p) for g in default for p in g["params"]) == sorted(every)

    cfg = OptimConfig(no_decay_norm_bias=True, weight_decay=1e-4)
    groups = param_groups(model, cfg)
    assert [g["name"] for g in groups] == ["backbone", "new", "backbone_no_decay", "new_no_decay"]
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(every) and len(ids) == len(set(ids))  # each parameter exactly once
    zero = {id(p) for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    assert zero == norms | controller | biases
    decayed = [every[i] for i in set(every) - zero]
    assert decayed and all(model.get_parameter(n).ndim > 1 for n in decayed)
    assert all(g["weight_decay"] == 1e-4 for g in groups if g["name"] in ("backbone", "new"))
    opt = build_optimizer(model, cfg)
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-4, 1e-4, 0.0, 0.0]
    assert [g["lr"] for g in opt.param_groups] == [cfg.lr_backbone, cfg.lr_new, cfg.lr_backbone, cfg.lr_new]


def test_training_with_no_decay_norm_bias_uses_the_zero_decay_groups(demo_root, tmp_path):
    from flrdf.engine.optim import no_decay_ids

    run = tmp_path / "run"
    assert cli_main(["train", "--config", "demo", "--out", str(run),
                     *tiny(demo_root, **{"optim.epochs": 1, "optim.no_decay_norm_bias": "true"})]) == 0
    saved = read_checkpoint(run / "checkpoints" / "last.pt")["optimizer"]["param_groups"]
    cfg = load_config("demo", tiny(demo_root)[1::2])
    model = FLRDF(cfg.model, 4)
    assert [g["weight_decay"] for g in saved] == [cfg.optim.weight_decay] * 2 + [0.0, 0.0]
    assert sum(len(g["params"]) for g in saved[2:]) == len(no_decay_ids(model))
