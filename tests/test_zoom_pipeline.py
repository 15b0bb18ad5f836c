"""The zoom source through the engine: loaders yield it, the training step and every
evaluation path hand it to the model, and a run trained with it evaluates consistently."""

from __future__ import annotations

import json

import pytest
import torch

from flrdf.cli import main as cli_main
from flrdf.config import load_config
from flrdf.data.synthetic import make_demo_data
from flrdf.engine.evaluate import evaluate
from flrdf.engine.loaders import build_loaders, eval_loader
from flrdf.engine.step import precision_for, train_step
from flrdf.model import FLRDF


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoomdemo")
    make_demo_data(out, num_classes=4, train_per_class=6, test_per_class=2, image_size=160, seed=0)
    return out


def cfg_for(root, source_size=128):
    return load_config("demo", [f"data.root={root}", "data.image_size=64", "data.resize=72", "data.num_workers=0",
                                f"data.source_size={source_size}", "model.weights=null", "model.jigsaw_n=2",
                                "runtime.device=cpu"])


class Recorder(torch.nn.Module):
    """Wraps a model and records the source each forward received."""

    def __init__(self, model):
        super().__init__()
        self.model, self.sources = model, []

    def forward(self, images, **kwargs):
        self.sources.append(kwargs.get("source"))
        return self.model(images, **kwargs)

    @property
    def cfg(self):
        return self.model.cfg


def test_loaders_yield_the_source_and_the_step_and_evaluation_use_it(demo_root, monkeypatch):
    cfg = cfg_for(demo_root)
    loaders = build_loaders(cfg.data, batch_size=4, seed=0)
    batch = next(iter(loaders.train))
    assert batch["image"].shape == (4, 3, 64, 64) and batch["source"].shape == (4, 3, 128, 128)
    test_batch = next(iter(loaders.test))
    assert test_batch["source"].shape[1:] == (3, 128, 128)
    assert "source" not in next(iter(eval_loader(cfg_for(demo_root, 0).data, "test", 4, workers=0)))

    torch.manual_seed(0)
    model = Recorder(FLRDF(cfg.model, 4))
    monkeypatch.setattr("flrdf.engine.evaluate.unwrap", lambda m: m.model if isinstance(m, Recorder) else m)
    prec = precision_for(torch.device("cpu"), amp=False, channels_last=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    terms = train_step(model.train(), batch["image"], batch["label"], opt, prec, source=batch["source"])
    assert torch.isfinite(terms["loss_total"]) and torch.equal(model.sources[-1], batch["source"])
    train_step(model, batch["image"], batch["label"], opt, prec, raw_only=True, source=batch["source"])
    assert model.sources[-1] is None  # the raw warm-up does not need it
    model.sources.clear()
    result = evaluate(model, loaders.test, prec)
    assert result["n"] == 8 and result["top1_object"] is not None
    assert model.sources and all(s is not None and s.shape[-1] == 128 for s in model.sources)


def test_train_eval_predict_with_a_source(demo_root, tmp_path, capsys):
    run = tmp_path / "run"
    sets = {"data.root": str(demo_root), "model.weights": "null", "model.layer4_stride": 2, "data.image_size": 64,
            "data.resize": 72, "data.source_size": 128, "data.num_workers": 0, "model.jigsaw_n": 2,
            "optim.batch_size": 8, "optim.epochs": 1, "optim.raw_warmup_epochs": 0, "optim.warmup_steps": 0,
            "runtime.device": "cpu", "runtime.deterministic": True, "runtime.eval_every": 0}
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    assert cli_main(["train", "--config", "demo", "--out", str(run), *args]) == 0
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished"
    capsys.readouterr()
    assert cli_main(["eval", "--run", str(run), "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["top1"] == pytest.approx(status["final"]["top1"])
    assert result["top1_object"] == pytest.approx(status["final"]["top1_object"])
    image = next((demo_root / "CUB_200_2011" / "images").rglob("*.jpg"))
    assert cli_main(["predict", "--checkpoint", str(run / "checkpoints" / "last.pt"), str(image),
                     "--device", "cpu"]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert len(line["top"]) == 4
