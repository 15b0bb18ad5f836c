"""End-to-end tests of the training engine on a tiny synthetic set (seconds each)."""

import json
import os
import signal
import sys

import pytest
import torch

from flrdf.cli import main as cli_main
from flrdf.config import ConfigError, load_config
from flrdf.engine.checkpoint import CheckpointError, load_model, read_checkpoint
from flrdf.engine.rundir import read_metrics

from conftest import ROOT, run_cli, tiny, tiny_run_args  # noqa: F401 - re-exported for older imports
from waits import communicate, file_tail, run_command, wait_until

STEPS_PER_EPOCH = 4  # 32 training images of demo_root, batch 8


def test_train_eval_predict_end_to_end(demo_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert cli_main(["train", "--config", "demo", "--out", str(run), *tiny(demo_root)]) == 0
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == 8
    metrics = read_metrics(run)
    steps = [m for m in metrics if "loss_total" in m]
    assert [m["step"] for m in steps] == list(range(1, 9))
    for key in ("step", "epoch", "loss_raw", "loss_object", "loss_jigsaw", "loss_total", "lr", "images_per_s"):
        assert key in steps[0]
    evals = [m for m in metrics if m.get("split") == "test"]
    assert len(evals) == 1 and evals[-1]["n"] == 12
    assert (run / "config.yaml").is_file() and (run / "log.txt").read_text()
    capsys.readouterr()

    assert cli_main(["eval", "--run", str(run), "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("top1", "top5", "top1_raw", "top1_object", "top1_jigsaw", "n", "loc_acc", "mean_iou"):
        assert key in result
    assert result["n"] == 12 and 0 <= result["loc_acc"] <= 1
    assert result["top1"] == pytest.approx(evals[-1]["top1"])
    assert result["top1_jigsaw"] is None  # the jigsaw pass only when asked
    assert cli_main(["eval", "--run", str(run), "--device", "cpu", "--jigsaw"]) == 0
    with_jigsaw = json.loads(capsys.readouterr().out)
    assert 0 <= with_jigsaw["top1_jigsaw"] <= 1 and with_jigsaw["top1"] == result["top1"]

    image = next((demo_root / "CUB_200_2011" / "images").rglob("*.jpg"))
    assert cli_main(["predict", "--checkpoint", str(run / "checkpoints" / "last.pt"), str(image),
                     "--topk", "3", "--device", "cpu"]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert len(line["top"]) == 3 and abs(sum(t["prob"] for t in line["top"])) <= 1.0 + 1e-6
    w, h = line["image_size"]
    x1, y1, x2, y2 = line["box"]
    assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h


def test_branch_losses_fall_on_fixed_batch(demo_root):
    from flrdf.data import FGVCDataset, build_transform
    from flrdf.engine.loaders import records_for
    from flrdf.engine.step import precision_for, train_step
    from flrdf.model import FLRDF

    torch.manual_seed(0)
    cfg = load_config("demo", tiny(demo_root)[1::2])
    ds = FGVCDataset(records_for(cfg.data, "train"), build_transform(False, 72, 64))
    batch = torch.utils.data.default_collate([ds[i] for i in range(0, 32, 4)])
    model = FLRDF(cfg.model, 4).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    prec = precision_for(torch.device("cpu"))
    history = []
    for _ in range(12):
        torch.manual_seed(1)
        history.append(train_step(model, batch["image"], batch["label"], opt, prec))
    for key in ("loss_raw", "loss_object", "loss_jigsaw", "loss_total"):
        first, last = history[0][key].item(), min(h[key].item() for h in history[-3:])
        assert last < first, (key, first, last)


def _weights(path):
    return read_checkpoint(path)["model"]


def _assert_same_weights(ref_run, run):
    a, b = _weights(ref_run / "checkpoints" / "last.pt"), _weights(run / "checkpoints" / "last.pt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _wait_until(pred, run, what: str, seconds: float = 120.0):
    """Until ``pred``; when the wait runs out, the run's status and log tail at that moment."""
    wait_until(pred, seconds, what, lambda: file_tail(run / "status.json") + "\n" + file_tail(run / "log.txt"), 0.05)


def test_sigkill_then_resume_matches_uninterrupted(demo_root, tiny_run, tmp_path):
    # tiny_run is the uninterrupted reference; every run is a subprocess with one thread: same float order
    run = tmp_path / "killed"
    proc = run_cli(["train", "--config", "demo", "--out", str(run), *tiny_run_args(demo_root)])
    try:
        _wait_until(lambda: (run / "checkpoints" / "last.pt").exists() or proc.poll() is not None, run, "last.pt")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert json.loads((run / "status.json").read_text())["state"] == "running"  # killed before finishing
    resumed = run_cli(["train", "--out", str(run), "--resume"])
    _, err = communicate(resumed, 600, "the resumed run")
    assert resumed.returncode == 0, err[-3000:]
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    _assert_same_weights(tiny_run, run)
    steps = [m["step"] for m in read_metrics(run) if "loss_total" in m]
    assert steps == list(range(1, 3 * STEPS_PER_EPOCH + 1))  # no gap, no duplicated step after the resume


def test_sigterm_mid_epoch_then_resume_matches_uninterrupted(demo_root, tiny_run, tmp_path):
    run = tmp_path / "run"
    proc = run_cli(["train", "--config", "demo", "--out", str(run), *tiny_run_args(demo_root)])
    try:
        _wait_until(lambda: read_metrics(run) or proc.poll() is not None, run, "the first metrics line")
    finally:
        proc.send_signal(signal.SIGTERM)
    _, err = communicate(proc, 120, "the stopped run")
    assert proc.returncode == 0, err[-3000:]
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "stopped", status
    assert (run / "checkpoints" / "last.pt").is_file()
    stopped_at = read_checkpoint(run / "checkpoints" / "last.pt")
    assert stopped_at["step"] % STEPS_PER_EPOCH != 0, f"stopped at an epoch boundary (step {stopped_at['step']})"
    assert stopped_at["extra"]["batch_in_epoch"] == stopped_at["step"] % STEPS_PER_EPOCH  # mid-epoch checkpoint
    resumed = run_cli(["train", "--out", str(run), "--resume"])
    _, err = communicate(resumed, 600, "the resumed run")
    assert resumed.returncode == 0, err[-3000:]
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == 3 * STEPS_PER_EPOCH
    # bit-identical to the run that was never stopped, as after an epoch-boundary kill
    _assert_same_weights(tiny_run, run)
    steps = [m["step"] for m in read_metrics(run) if "loss_total" in m]
    assert steps == list(range(1, 3 * STEPS_PER_EPOCH + 1))
    ref_losses = [m["loss_total"] for m in read_metrics(tiny_run) if "loss_total" in m]
    assert [m["loss_total"] for m in read_metrics(run) if "loss_total" in m] == ref_losses


def test_nan_loss_fails_with_message(demo_root, tmp_path):
    run = tmp_path / "run"
    code = cli_main(["train", "--config", "demo", "--out", str(run),
                     *tiny(demo_root, **{"optim.lr_backbone": 1e12, "optim.lr_new": 1e12, "optim.epochs": 3})])
    assert code == 1
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "NaN" in status["error"]


def test_broken_root_fails_with_message(tmp_path):
    run = tmp_path / "run"
    code = cli_main(["train", "--config", "demo", "--out", str(run), "--set", f"data.root={tmp_path / 'nope'}"])
    assert code == 1
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "nope" in status["error"]


def test_validation_split_gives_best_checkpoint(demo_root, tmp_path):
    run = tmp_path / "run"
    assert cli_main(["train", "--config", "demo", "--out", str(run),
                     *tiny(demo_root, **{"data.val_fraction": 0.25, "optim.epochs": 1})]) == 0
    assert (run / "checkpoints" / "best.pt").is_file()
    val_lines = [m for m in read_metrics(run) if m.get("split") == "val"]
    assert val_lines
    # `--split val` names exactly the images the trainer held out: same count, same score
    out = tmp_path / "val.json"
    assert cli_main(["eval", "--run", str(run), "--split", "val", "--out", str(out)]) == 0
    scored = json.loads(out.read_text())
    assert scored["split"] == "val" and scored["n"] == val_lines[-1]["n"]
    assert scored["top1"] == pytest.approx(val_lines[-1]["top1"])
    from flrdf.engine.loaders import build_loaders, records_for

    cfg = load_config("demo", [f"data.root={demo_root}", "data.val_fraction=0.25"])
    held_out = build_loaders(cfg.data, 4, cfg.runtime.seed, with_test=False).val.dataset.records
    val = records_for(cfg.data, "val", cfg.runtime.seed).records
    train = records_for(cfg.data, "train").records
    assert [r.path for r in val] == [r.path for r in held_out]
    assert 0 < len(val) < len(train) and {r.path for r in val} <= {r.path for r in train}


def test_val_split_without_a_carve_out_names_the_setting(demo_root, capsys):
    assert cli_main(["eval", "--checkpoint", str(ROOT / "assets" / "demo_model.safetensors"), "--split", "val",
                     "--set", f"data.root={demo_root}", "data.val_fraction=0"]) == 2
    err = capsys.readouterr().err
    assert "data.val_fraction" in err and "val" in err


def test_ddp_two_processes_gloo_agree(demo_root, tmp_path):
    run = tmp_path / "ddp"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "flrdf", "train", "--config", "demo", "--out", str(run),
           *tiny(demo_root, **{"optim.epochs": 1, "optim.batch_size": 4})]
    proc = run_command(cmd, 300, "the 2-process torchrun", cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["world_size"] == 2
    sums = status["rank_checksums"]  # parameters and the demo's DDT statistics (all-reduced at each update)
    assert len(sums) == 2 and sums[0] == sums[1]
    assert status["final"]["n"] == 12  # sharded evaluation covers the split exactly once

    # the checkpoint holds each rank's own RNG state, and a resume gives each rank its own back: the two ranks
    # then draw different jigsaw permutations (with one shared state they drew the same ones)
    saved = read_checkpoint(run / "checkpoints" / "last.pt")
    assert len(saved.get("rng_ranks") or []) == 2
    assert not torch.equal(saved["rng_ranks"][0]["torch"], saved["rng_ranks"][1]["torch"])
    resume = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29518",
              str(ROOT / "tests" / "ddp_probe.py"), "train", "--out", str(run), "--resume", "--set", "optim.epochs=2"]
    proc = run_command(resume, 300, "the 2-process torchrun resume", cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["epoch"] == 2
    assert status["rank_checksums"][0] == status["rank_checksums"][1]
    drawn = [json.loads((run / f"probe-rank{r}.json").read_text())["perms"] for r in (0, 1)]
    assert drawn[0] and drawn[1], "no jigsaw permutation drawn after the resume"
    assert drawn[0] != drawn[1], "both ranks drew the same permutations after the resume"


def test_bad_checkpoints_are_refused(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(CheckpointError, match="not an FLRDF checkpoint"):
        load_model(bad)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_model(tmp_path / "junk.pt")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    torch.save({"format": "flrdf-checkpoint", "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused|not a loadable"):
        load_model(tmp_path / "evil.pt")


def test_config_overrides_and_errors(tmp_path):
    cfg = load_config("cub", ["model.backbone=resnet18", "optim.epochs=3", "model.tau=0.6"])
    assert (cfg.model.backbone, cfg.optim.epochs, cfg.model.tau) == ("resnet18", 3, 0.6)
    assert load_config("cars-baseline").model.branches == "raw"
    assert load_config("aircraft").data.train_split == "trainval"
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config("cub", ["model.bakcbone=resnet18"])
    with pytest.raises(ConfigError, match="integer"):
        load_config("cub", ["optim.epochs=many"])
    with pytest.raises(ConfigError, match="does not tile"):
        load_config("cub", ["model.jigsaw_n=5"])
    p = tmp_path / "mine.yaml"
    p.write_text("base: demo\noptim: {epochs: 7}\n")
    assert load_config(str(p)).optim.epochs == 7
