"""The run directory: the only contract between a training job and its readers.

    RUN_DIR/config.yaml       resolved configuration
    RUN_DIR/metrics.jsonl     one JSON object per logged step / evaluation
    RUN_DIR/status.json       state (running|finished|failed|stopped), pid, times, error
    RUN_DIR/log.txt           human-readable log
    RUN_DIR/checkpoints/      last.pt (every epoch and on stop), best.pt (validation only)

Readers polling while the job runs never see torn data: JSON files are replaced
atomically (write + rename) and each metrics line is appended with one write()
call; ``read_metrics`` ignores a final line that has no newline yet.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from flrdf.engine.checkpoint import atomic_write_bytes

STATES = ("running", "finished", "failed", "stopped")


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _clean(obj: Any) -> Any:
    """JSON-safe: NaN/inf become strings (a NaN loss is still reported, as 'nan')."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_json(path: Path, data: dict) -> None:
    text = json.dumps(_clean(data), indent=2) + "\n"
    atomic_write_bytes(Path(path), lambda f: f.write(text.encode()))


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    config = property(lambda self: self.path / "config.yaml")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    status_file = property(lambda self: self.path / "status.json")
    log = property(lambda self: self.path / "log.txt")
    checkpoints = property(lambda self: self.path / "checkpoints")
    last = property(lambda self: self.path / "checkpoints" / "last.pt")
    best = property(lambda self: self.path / "checkpoints" / "best.pt")

    def create(self) -> None:
        self.checkpoints.mkdir(parents=True, exist_ok=True)

    def append_metrics(self, record: dict) -> None:
        line = (json.dumps(_clean(record)) + "\n").encode()
        fd = os.open(self.metrics, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def truncate_metrics_after(self, step: int) -> None:
        """On resume: drop lines logged after the checkpoint being resumed from."""
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= step]
        text = "".join(json.dumps(r) + "\n" for r in kept)
        atomic_write_bytes(self.metrics, lambda f: f.write(text.encode()))

    def status(self) -> dict | None:
        return read_json(self.status_file)

    def update_status(self, **fields) -> dict:
        status = self.status() or {}
        status.update(fields)
        status["updated"] = now_iso()
        write_json(self.status_file, status)
        return status


def read_result_file(path: Path, fmt: str) -> dict | None:
    """A result folder's JSON (written by loc-eval, analyze, ...) when it carries ``"format": fmt``; else None."""
    data = read_json(Path(path))
    return data if data and data.get("format") == fmt else None


def result_folder(source: Path, split: str, runs_dir: str, kind: str) -> Path:
    """Where a job of ``kind`` (eval, analysis) on ``source`` writes by default: RUN_DIR/<kind>/<split>-<time>
    for a run (or a checkpoint inside one); else RUNS_DIR/<kind>/<name>-<split>-<time>."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    source = Path(source)
    run = source if source.is_dir() else (source.parent.parent if source.parent.name == "checkpoints" else None)
    if run is not None and (run / "config.yaml").is_file():
        return run / kind / f"{split}-{stamp}"
    return Path(runs_dir) / kind / f"{source.stem}-{split}-{stamp}"


def read_metrics(run_dir: str | Path) -> list[dict]:
    """All complete metrics lines of a run (a half-written last line is skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    try:
        data = path.read_bytes()
    except OSError:
        return []
    out = []
    for raw in data.split(b"\n")[:-1]:  # the part after the last newline is incomplete
        if raw.strip():
            try:
                out.append(json.loads(raw))
            except ValueError:
                continue
    return out


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited child not yet reaped) counts as dead
    try:
        with open(f"/proc/{int(pid)}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def effective_status(run_dir: str | Path) -> dict:
    """status.json, with a 'running' job whose process is gone reported as failed (killed)."""
    status = read_json(Path(run_dir) / "status.json") or {"state": "unknown"}
    if status.get("state") == "running" and not pid_alive(status.get("pid")):
        status = dict(status, state="failed", error=status.get("error") or
                      "the training process ended without updating its status (killed?); use Resume to continue")
    return status
