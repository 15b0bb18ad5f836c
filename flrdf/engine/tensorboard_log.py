"""TensorBoard event files of a run's metrics lines, so ``tensorboard --logdir runs`` shows FLRDF runs.

The run directory's ``metrics.jsonl`` stays the record the dashboard reads; this module only
mirrors its lines as scalars in ``RUN_DIR/events.out.tfevents.*`` (written by
``torch.utils.tensorboard.SummaryWriter``, which needs the ``tensorboard`` package):

    training lines     train/loss_raw, train/loss_object, train/loss_jigsaw, train/loss_total,
                       train/lr, train/lr_backbone, train/images_per_s
    evaluation lines   <split>/<key> for every number of the line (val/top1, test/top1_object,
                       test/loc_acc, ...)

at global step = the line's ``step`` and wall time = its ``time``; a value that is None is
left out (a branch not trained yet), NaN is written as NaN. Fed from the trainer where it
appends a metrics line (``runtime.tensorboard=true``); a resumed run starts its writer with
``purge_step`` = the step it resumes from, so TensorBoard drops the events the resume discards
from ``metrics.jsonl``. ``python -m flrdf export-tensorboard RUN_DIR`` writes the events of a run
made before (or without) the option.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

TRAIN_KEYS = ("loss_raw", "loss_object", "loss_jigsaw", "loss_total", "lr", "lr_backbone", "images_per_s")
SKIP_KEYS = ("step", "epoch", "split", "time", "n")
EVENTS_GLOB = "events.out.tfevents.*"


def scalars(record: dict) -> dict[str, float]:
    """The (tag, value) pairs of one metrics line (see the module docstring)."""
    split = record.get("split")
    if split is None:
        keys, prefix = [k for k in TRAIN_KEYS if k in record], "train"
    else:
        keys, prefix = [k for k in record if k not in SKIP_KEYS], str(split)
    out = {}
    for k in keys:
        v = record[k]
        if isinstance(v, str) and v in ("nan", "inf", "-inf"):  # rundir._clean wrote a non-finite float as text
            v = float(v)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        out[f"{prefix}/{k}"] = float(v)
    return out


class TensorBoardLog:
    """One SummaryWriter on a run directory; ``write(record)`` per metrics line."""

    def __init__(self, run_dir: str | Path, purge_step: int | None = None):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:  # torch's writer needs the tensorboard package
            raise RuntimeError("runtime.tensorboard=true needs the tensorboard package "
                               "(pip install 'tensorboard>=2.14,<3')") from exc
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step or None)

    def write(self, record: dict) -> None:
        step = int(record.get("step", 0))
        wall = record.get("time")
        for tag, value in scalars(record).items():
            self.writer.add_scalar(tag, value, global_step=step, walltime=wall if isinstance(wall, (int, float))
                                   and math.isfinite(wall) else None)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def export_run(run_dir: str | Path, force: bool = False) -> tuple[int, list[Path]]:
    """Write the event files of ``RUN_DIR/metrics.jsonl``; (lines written, event files). Existing event files
    in the run directory are refused (FileExistsError), or replaced with ``force``."""
    from flrdf.engine.rundir import read_metrics

    run = Path(run_dir)
    if not (run / "metrics.jsonl").is_file():
        raise FileNotFoundError(f"{run / 'metrics.jsonl'} not found; is {run} a run directory?")
    old = sorted(run.glob(EVENTS_GLOB))
    if old and not force:
        raise FileExistsError(f"{run} already holds TensorBoard events ({old[0].name}); pass --force to replace them")
    for p in old:
        if p.is_file() and not p.is_symlink():
            p.unlink()
    records = read_metrics(run)
    log = TensorBoardLog(run)
    for r in records:
        log.write(r)
    log.close()
    return len(records), sorted(run.glob(EVENTS_GLOB))


def export_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flrdf export-tensorboard",
                                description="Write TensorBoard event files of a run's metrics.jsonl into the run "
                                            "directory (then: tensorboard --logdir runs).")
    p.add_argument("run_dir", nargs="+", help="run directories")
    p.add_argument("--force", action="store_true", help="replace event files the run directory already holds")
    args = p.parse_args(argv)
    code = 0
    for d in args.run_dir:
        try:
            n, files = export_run(d, args.force)
        except (FileNotFoundError, FileExistsError, RuntimeError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            code = 1
            continue
        print(f"{d}: {n} metrics lines -> {', '.join(f.name for f in files)}")
    return code


__all__ = ["TensorBoardLog", "scalars", "export_run", "export_main", "TRAIN_KEYS"]
