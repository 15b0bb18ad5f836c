"""Background jobs of the dashboard: training runs and localization evaluations as child processes.

The UI never trains in its own process. A job is ``python -m flrdf ...`` started
from an argument list (never a shell string) in its own session
(``start_new_session``), so restarting or killing the dashboard does not kill it;
its stdout/stderr go to ``stdout.log``/``stderr.log`` in its folder, and
``job.json`` records the command, pid and thread count. Everything the UI shows
afterwards is read back from files (``dashboard.runs``), which is why a restart
loses nothing.

Threads: on a small shared machine several torch processes each using every
core oversubscribe it badly, so a child gets ``OMP_NUM_THREADS`` =
cpu_count // (running jobs + 1), at least 1, unless the user sets it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from flrdf.engine.rundir import now_iso, pid_alive, read_json, write_json

REPO_ROOT = Path(__file__).resolve().parent.parent
JOB_FILE = "job.json"
STDOUT, STDERR = "stdout.log", "stderr.log"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

_children: dict[int, subprocess.Popen] = {}   # started by this process; reaped by reap()
_lock = threading.Lock()


class JobError(RuntimeError):
    """A job that cannot be started or stopped; the message says why."""


def auto_threads(running_jobs: int, cpus: int | None = None) -> int:
    cpus = cpus or os.cpu_count() or 1
    return max(1, cpus // (max(0, running_jobs) + 1))


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def python_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "flrdf", *args]


def spawn(argv: list[str], folder: Path, threads: int, kind: str) -> subprocess.Popen:
    """Start ``argv`` in a new session with output to ``folder``; records ``folder/job.json``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / STDOUT, "ab") as out, open(folder / STDERR, "ab") as err:
        stamp = f"\n===== {now_iso()} {kind}: {' '.join(argv)}\n".encode()
        out.write(stamp)
        err.write(stamp)
        out.flush()
        err.flush()
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=os.getcwd(),
                                    env=child_env(threads), start_new_session=True, close_fds=True)
        except OSError as exc:
            raise JobError(f"could not start {argv[0]}: {exc}") from None
    with _lock:
        _children[proc.pid] = proc
    write_json(folder / JOB_FILE, {"kind": kind, "pid": proc.pid, "argv": argv, "threads": threads,
                                   "cwd": os.getcwd(), "launched": now_iso(), "launched_ts": time.time()})
    return proc


def reap() -> None:
    """Collect exited children (no zombies while the dashboard runs)."""
    with _lock:
        for pid, proc in list(_children.items()):
            if proc.poll() is not None:
                del _children[pid]


def _wait_exit(job: dict | None, timeout: float) -> bool:
    pid = (job or {}).get("pid")
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with _lock:
            proc = _children.get(pid)
        if proc is not None:
            proc.poll()
        if not pid_alive(pid):
            reap()
            return True
        time.sleep(0.1)
    return False


def read_job(folder: Path) -> dict | None:
    return read_json(Path(folder) / JOB_FILE)


def job_alive(folder: Path) -> bool:
    reap()
    job = read_job(folder)
    return bool(job) and pid_alive(job.get("pid")) and _is_flrdf(job.get("pid"))


def _is_flrdf(pid) -> bool:
    """Guard against a recycled pid: the process must be one of ours (``-m flrdf`` in its command line)."""
    try:
        cmd = Path(f"/proc/{int(pid)}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError, TypeError):
        return pid_alive(pid)  # no /proc (not Linux): trust the pid check
    return b"flrdf" in cmd


def signal_job(pid: int | None, sig: int = signal.SIGTERM) -> None:
    if not pid or not pid_alive(pid):
        raise JobError("the job's process is not running")
    if not _is_flrdf(pid):
        raise JobError(f"process {pid} is not an flrdf job (pid reused?); not signalled")
    try:
        os.kill(int(pid), sig)  # the main process only: it checkpoints and ends its data workers itself
    except ProcessLookupError:
        raise JobError("the job's process is not running") from None


# ---------------------------------------------------------------- training jobs
def train_argv(config: str, overrides: list[str], out: Path | None = None, resume: bool = False) -> list[str]:
    args = ["train"]
    if not resume:
        args += ["--config", config]
    for o in overrides:
        args += ["--set", o]
    if out is not None:
        args += ["--out", str(out)]
    if resume:
        args.append("--resume")
    return args


def new_run_dir(runs_dir: Path, name: str) -> Path:
    """A fresh run directory RUNS_DIR/<name>-<time>[-i], created now (two launches never share one)."""
    from flrdf.engine.commands import default_run_dir

    runs_dir = Path(runs_dir).absolute()
    runs_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        path = default_run_dir(str(runs_dir), name)
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise JobError(f"could not create a run directory under {runs_dir}")


def launch_train(config: str, overrides: list[str], runs_dir: Path, name: str, threads: int) -> tuple[Path, int]:
    out = new_run_dir(runs_dir, name)
    proc = spawn(python_argv(*train_argv(config, overrides, out)), out, threads, "train")
    return out, proc.pid


def resume_train(run_dir: Path, overrides: list[str], threads: int) -> int:
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise JobError(f"{run_dir} has no config.yaml: not a run directory")
    if not (run_dir / "checkpoints" / "last.pt").is_file():
        raise JobError(f"{run_dir} has no checkpoint to resume from (checkpoints/last.pt)")
    status = read_json(run_dir / "status.json") or {}
    if job_alive(run_dir):
        # a job that has written its final status may still be exiting: give it a moment
        if status.get("state") not in ("stopped", "failed", "finished") or not _wait_exit(read_job(run_dir), 20):
            raise JobError(f"{run_dir.name} is still running")
    if status.get("state") == "running" and pid_alive(status.get("pid")) and _is_flrdf(status.get("pid")):
        raise JobError(f"{run_dir.name} is still running")
    return spawn(python_argv(*train_argv("", overrides, run_dir, resume=True)), run_dir, threads, "resume").pid


def stop_run(run_dir: Path) -> int:
    """SIGTERM to the run's training process (it checkpoints and writes status 'stopped'); returns the pid."""
    run_dir = Path(run_dir)
    status = read_json(run_dir / "status.json") or {}
    job = read_job(run_dir) or {}
    pid = status.get("pid") if status.get("state") == "running" else None
    if not (pid and pid_alive(pid)):
        pid = job.get("pid")
    signal_job(pid)
    return int(pid)


# ---------------------------------------------------------------- evaluation jobs
def launch_loc_eval(source: str, out: Path, split: str, overrides: list[str], methods: list[str],
                    limit: int | None, threads: int, batch_size: int = 16, tau: str | None = None) -> int:
    args = ["loc-eval", "--run" if Path(source).is_dir() else "--checkpoint", str(source), "--split", split,
            "--methods", ",".join(methods), "--out", str(out), "--batch-size", str(batch_size)]
    for o in overrides:
        args += ["--set", o]
    if limit:
        args += ["--limit", str(int(limit))]
    if tau is not None:
        args += ["--tau", str(tau)]
    return spawn(python_argv(*args), out, threads, "loc-eval").pid
