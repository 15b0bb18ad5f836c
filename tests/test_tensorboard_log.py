"""TensorBoard events of a run (runtime.tensorboard=true, python -m flrdf export-tensorboard) read back with
tensorboard's own event reader hold the values of metrics.jsonl."""

from __future__ import annotations

import math
import shutil

import pytest
from conftest import run_cli, tiny
from waits import communicate

from flrdf.engine.rundir import read_metrics
from flrdf.engine.tensorboard_log import export_main, scalars

pytest.importorskip("tensorboard")


def _events(run_dir) -> dict[str, list[tuple[int, float, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value, e.wall_time) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _expected(records) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list] = {}
    for r in records:
        for tag, v in scalars(r).items():
            out.setdefault(tag, []).append((r["step"], v, r["time"]))
    return out


def _same(events, expected):
    assert set(events) == set(expected)
    for tag, want in expected.items():
        got = events[tag]
        assert [s for s, _, _ in got] == [s for s, _, _ in want], tag
        for (_, a, wa), (_, b, wb) in zip(got, want):
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-6, abs=1e-7), tag  # float32
            assert wa == pytest.approx(wb, abs=1e-3), tag


def test_scalars_of_training_and_evaluation_lines():
    assert scalars({"step": 3, "epoch": 0.5, "loss_raw": 1.5, "loss_object": None, "loss_jigsaw": "nan",
                    "loss_total": 2.0, "lr": 0.1, "lr_backbone": 0.01, "images_per_s": 12.5, "time": 1.0}) == {
        "train/loss_raw": 1.5, "train/loss_jigsaw": pytest.approx(float("nan"), nan_ok=True), "train/loss_total": 2.0,
        "train/lr": 0.1, "train/lr_backbone": 0.01, "train/images_per_s": 12.5}
    ev = scalars({"step": 8, "epoch": 2, "split": "test", "top1": 0.5, "top1_jigsaw": None, "n": 12, "time": 2.0})
    assert ev == {"test/top1": 0.5}


def test_training_with_tensorboard_writes_the_metrics_lines_as_events(demo_root, tmp_path):
    run = tmp_path / "tb-run"
    proc = run_cli(["train", "--config", "demo", "--out", str(run),
                    *tiny(demo_root, **{"optim.epochs": 1, "runtime.tensorboard": "true"})])
    _, err = communicate(proc, 600, "a tiny training run with runtime.tensorboard=true")
    assert proc.returncode == 0, err[-3000:]
    records = read_metrics(run)
    assert any(r.get("split") == "test" for r in records) and any("loss_total" in r for r in records)
    events = _events(run)
    assert {"train/loss_total", "train/loss_raw", "train/loss_object", "train/loss_jigsaw", "train/lr",
            "train/images_per_s", "test/top1"} <= set(events)
    _same(events, _expected(records))


def test_export_tensorboard_of_a_run_made_without_it(tiny_run, tmp_path, capsys):
    run = tmp_path / "old-run"
    shutil.copytree(tiny_run, run, ignore=shutil.ignore_patterns("checkpoints", "eval", "analysis"))
    assert not list(run.glob("events.out.tfevents.*"))
    assert export_main([str(run)]) == 0
    _same(_events(run), _expected(read_metrics(run)))
    assert export_main([str(run)]) == 1                      # events there already: refused ...
    assert "--force" in capsys.readouterr().err
    assert export_main([str(run), "--force"]) == 0           # ... or replaced, not doubled
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
    _same(_events(run), _expected(read_metrics(run)))


def test_a_resumed_writer_purges_the_steps_the_resume_discards(tmp_path):
    """The trainer resumes from step S with purge_step S + 1 (metrics.jsonl keeps lines <= S): TensorBoard then
    shows the old run up to S and the resumed run after it, not both."""
    import time

    from flrdf.engine.tensorboard_log import TensorBoardLog

    first = TensorBoardLog(tmp_path)
    for step in range(1, 7):
        first.write({"step": step, "epoch": 0, "loss_raw": 1.0, "loss_total": float(step), "time": time.time()})
    first.close()
    time.sleep(1.1)   # a second writer names its file by the second: a new file, as after a restart
    resumed = TensorBoardLog(tmp_path, purge_step=4)        # resumed from a checkpoint at step 3
    for step in range(4, 8):
        resumed.write({"step": step, "epoch": 0, "loss_raw": 1.0, "loss_total": 100.0 + step, "time": time.time()})
    resumed.close()
    got = [(s, v) for s, v, _ in _events(tmp_path)["train/loss_total"]]
    assert got == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 104.0), (5, 105.0), (6, 106.0), (7, 107.0)]
