"""The run directory: the only contract between a training job and its readers.

    RUN_DIR/config.yaml       resolved configuration
    RUN_DIR/metrics.jsonl     one JSON object per logged step / evaluation
    RUN_DIR/status.json       state (running|finished|failed|stopped), pid, times, error
    RUN_DIR/log.txt           human-readable log
    RUN_DIR/checkpoints/      last.pt (every epoch and on stop), best.pt (validation only)
    RUN_DIR/train.lock        flock'ed by the one training process of the run (its pid written in it)

Readers polling while the job runs never see torn data: JSON files are replaced
atomically (write + rename) and each metrics line is appended with one write()
call; ``read_metrics`` ignores a final line that has no newline yet.

One trainer per run: the training process holds an exclusive ``fcntl.flock`` on
``train.lock`` for its lifetime (``hold_run_lock``); a second trainer - a resume, a
fresh run into the same folder - is refused while it is held, and readers ask
``run_lock_holder``. The kernel drops the lock when the process dies, however it dies.

Result folders (eval, analysis) are created by ``create_unique_dir``: ``mkdir``
without ``exist_ok`` is atomic, so concurrent jobs never share one.
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import stat
import time
from pathlib import Path
from typing import Any

from flrdf.engine.checkpoint import atomic_write_bytes

STATES = ("running", "finished", "failed", "stopped")
LOCK_FILE = "train.lock"


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
        self.mirrors: list = []   # objects with write(record) / close(): each metrics line also goes to them
                                  # (flrdf.engine.tensorboard_log, runtime.tensorboard=true)

    config = property(lambda self: self.path / "config.yaml")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    status_file = property(lambda self: self.path / "status.json")
    log = property(lambda self: self.path / "log.txt")
    checkpoints = property(lambda self: self.path / "checkpoints")
    last = property(lambda self: self.path / "checkpoints" / "last.pt")
    best = property(lambda self: self.path / "checkpoints" / "best.pt")
    lock = property(lambda self: self.path / LOCK_FILE)

    def create(self) -> None:
        self.checkpoints.mkdir(parents=True, exist_ok=True)

    def append_metrics(self, record: dict) -> None:
        line = (json.dumps(_clean(record)) + "\n").encode()
        fd = os.open(self.metrics, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        for mirror in self.mirrors:
            mirror.write(record)

    def close_mirrors(self) -> None:
        for mirror in self.mirrors:
            mirror.close()
        self.mirrors.clear()

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


def create_unique_dir(path: str | Path, attempts: int = 1000) -> Path:
    """Create ``path`` now - or ``path-2``, ``path-3``, ... the first free name - and return it. ``mkdir`` without
    ``exist_ok`` either creates the folder or fails: two callers racing for one name never both get it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for i in range(1, attempts + 1):
        cand = path if i == 1 else path.with_name(f"{path.name}-{i}")
        try:
            cand.mkdir()
            return cand
        except FileExistsError:
            continue
    raise FileExistsError(f"no free folder name {path.name}[-N] (N < {attempts + 1}) in {path.parent}")


# ---------------------------------------------------------------- one trainer per run directory
class RunLocked(RuntimeError):
    """Another process holds the run directory's training lock."""

    def __init__(self, run_dir: Path, pid: int):
        self.run_dir, self.pid = Path(run_dir), pid
        who = f"process {pid}" if pid > 0 else "another process (its pid is not written yet)"
        super().__init__(f"{run_dir} is being trained by {who}, which holds {LOCK_FILE}; "
                         "wait for it to end (or stop it) before resuming or training into this folder")


_held_locks: set[int] = set()   # descriptors of run locks this process holds


def _drop_locks_in_child() -> None:
    """A forked child (a DataLoader worker, say) shares the parent's lock: close its copies, so the lock ends
    with the trainer itself and not with the last of its workers."""
    for fd in _held_locks:
        try:
            os.close(fd)
        except OSError:
            pass
    _held_locks.clear()


os.register_at_fork(after_in_child=_drop_locks_in_child)


def _lock_pid(fd: int) -> int:
    """The pid written in an open lock file; 0 when there is none (yet)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0


def hold_run_lock(run_dir: str | Path) -> int:
    """Take ``RUN_DIR/train.lock`` (exclusive, non-blocking) and write this process's pid in it; returns the open
    descriptor, which holds the lock until ``release_run_lock`` or the end of the process. ``RunLocked`` (naming
    the holder's pid) when another process holds it. Neither an exec'ed program (close-on-exec) nor a forked child
    (closed after the fork) keeps the run locked."""
    path = Path(run_dir) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{path} is not a regular file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLocked(Path(run_dir), _holder_pid(fd)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    _held_locks.add(fd)
    return fd


def release_run_lock(fd: int) -> None:
    """Give back a lock ``hold_run_lock`` took (the file stays: removing it would race with the next holder)."""
    _held_locks.discard(fd)
    os.close(fd)


def _holder_pid(fd: int, patience_s: float = 1.0) -> int:
    """The holder writes its pid right after taking the lock: wait that long for it."""
    end = time.monotonic() + patience_s
    pid = _lock_pid(fd)
    while not pid and time.monotonic() < end:
        time.sleep(0.02)
        pid = _lock_pid(fd)
    return pid


def run_lock_holder(run_dir: str | Path) -> int | None:
    """None when no process holds ``RUN_DIR/train.lock``; else the holder's pid as written in the file (0 if it
    could not be read). Probes with a non-blocking flock that it releases at once; creates nothing."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None  # no lock file (or a symlink, refused): nobody trains here under this guard
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder_pid(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


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
