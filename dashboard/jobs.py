"""Background jobs of the dashboard: training runs and localization evaluations as child processes.

The UI never trains in its own process. A job is ``python -m flrdf ...`` started
from an argument list (never a shell string) in its own session
(``start_new_session``), so restarting or killing the dashboard does not kill it;
its stdout/stderr go to ``stdout.log``/``stderr.log`` in its folder, and
``job.json`` records the command, pid, the process's start time and thread
count. Everything the UI shows afterwards is read back from files
(``dashboard.runs``), which is why a restart loses nothing.

Stop acts only on jobs this runs directory owns (``owned_pid``): the
pid job.json records, if it is positive, alive, still started at the recorded
time (/proc/<pid>/stat field 22) and running ``python -m flrdf <command> ...
--out <that folder>``. The signal goes to that process alone (through a pidfd),
never to a process group. Every child is reaped by a waiter thread, so a stopped
job leaves no zombie. Resume refuses while any process holds the run's
``train.lock`` (``flrdf.engine.rundir.run_lock_holder``): the trainer's own lock,
whoever started it and however (``python -u``, torchrun, no or a relative ``--out``).

Threads: on a small shared machine several torch processes each using every
core oversubscribe it badly, so a child gets ``OMP_NUM_THREADS`` =
cpu_count // (running jobs + 1), at least 1, unless the user sets it.

Multi-process training (``Launch`` with ``nproc > 1``) is torchrun, started as
``python -m torch.distributed.run --standalone --nproc_per_node K -m flrdf train
...`` (torchrun's own entry point, run by the dashboard's interpreter). job.json
then records the torchrun agent, which Stop signals: the agent sends SIGTERM to
every rank (each checkpoints with the others and ends; rank 0 writes 'stopped')
and SIGKILLs a rank still alive 30 s later, then exits. Which GPUs a job gets
(``CUDA_VISIBLE_DEVICES``) and when it starts is ``dashboard.scheduler``'s part.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from flrdf.engine.rundir import now_iso, read_json, run_lock_holder, write_json

REPO_ROOT = Path(__file__).resolve().parent.parent
JOB_FILE = "job.json"
STDOUT, STDERR = "stdout.log", "stderr.log"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

_children: dict[int, subprocess.Popen] = {}   # started by this process; reaped by their waiter threads
_lock = threading.Lock()
_resume_lock = threading.Lock()
TRAIN_KINDS = ("train",)
JOB_COMMANDS = ("train", "loc-eval", "analyze")           # the flrdf sub-commands the dashboard starts
TORCHRUN_MODULE = "torch.distributed.run"                  # what the torchrun command runs
TORCHRUN_FLAGS = ("--standalone",)                          # launcher options a job's command line may carry
TORCHRUN_OPTIONS = ("--nproc-per-node", "--nnodes", "--node-rank", "--rdzv-backend", "--rdzv-endpoint", "--rdzv-id",
                    "--master-port", "--master-addr")       # ... with a value


class JobError(RuntimeError):
    """A job that cannot be started or stopped; the message says why (never a pid or a home path)."""


def auto_threads(running_jobs: int, cpus: int | None = None) -> int:
    cpus = cpus or os.cpu_count() or 1
    return max(1, cpus // (max(0, running_jobs) + 1))


def child_env(threads: int, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The dashboard's environment with the thread count, the repository on PYTHONPATH and ``extra`` (the
    scheduler's CUDA_VISIBLE_DEVICES) set."""
    env = dict(os.environ)
    for var in THREAD_VARS:
        env[var] = str(threads)
    env.update(extra or {})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def python_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "flrdf", *args]


def torchrun_argv(nproc: int, *args: str) -> list[str]:
    """``torchrun --standalone --nproc_per_node NPROC -m flrdf ARGS``, run by this interpreter (``-m
    torch.distributed.run`` is the torchrun command's own module; no reliance on PATH or on a shell)."""
    if not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1:
        raise JobError(f"the number of processes must be a whole number >= 1, got {nproc!r}")
    return [sys.executable, "-m", TORCHRUN_MODULE, "--standalone", "--nproc_per_node", str(nproc),
            "-m", "flrdf", *args]


# ---------------------------------------------------------------- process identity (Linux /proc)
def _proc_stat_fields(pid) -> list[bytes] | None:
    """/proc/<pid>/stat from field 3 on (after "pid (comm) ", which may hold spaces); None for no such process."""
    if not _positive(pid):
        return None
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(b")") + 2:].split()


def proc_start_time(pid) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks since boot); None for no such process."""
    fields = _proc_stat_fields(pid)
    try:
        return int(fields[22 - 3]) if fields is not None else None
    except (IndexError, ValueError):
        return None


def proc_state(pid) -> str | None:
    """Field 3 of /proc/<pid>/stat (R, S, Z ...); None for no such process."""
    fields = _proc_stat_fields(pid)
    return fields[0].decode() if fields else None


def proc_ppid(pid) -> int | None:
    """Field 4 of /proc/<pid>/stat (the parent's pid); None for no such process."""
    fields = _proc_stat_fields(pid)
    try:
        return int(fields[1]) if fields is not None else None
    except (IndexError, ValueError):
        return None


def proc_cmdline(pid) -> list[str] | None:
    if not _positive(pid):
        return None
    try:
        raw = Path(f"/proc/{int(pid)}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode("utf-8", "surrogateescape") for a in raw.split(b"\0")[:-1]] if raw else None


def _positive(pid) -> bool:
    return isinstance(pid, int) and not isinstance(pid, bool) and pid > 0


def flrdf_args(argv: list[str] | None) -> list[str] | None:
    """The arguments after ``-m flrdf`` of ``python -m flrdf ...`` or of the torchrun form the dashboard launches
    (``python -m torch.distributed.run [launcher options] -m flrdf ...``); None for any other command line."""
    if not argv or len(argv) < 4 or not Path(argv[0]).name.startswith("python"):
        return None
    if argv[1:3] == ["-m", "flrdf"]:
        return argv[3:]
    if argv[1:3] == ["-m", TORCHRUN_MODULE]:
        i = 3
        while i < len(argv) - 1:
            if argv[i:i + 2] == ["-m", "flrdf"]:
                return argv[i + 2:]
            name = argv[i].split("=", 1)[0].replace("_", "-")
            if name in TORCHRUN_FLAGS or (name in TORCHRUN_OPTIONS and "=" in argv[i]):
                i += 1
            elif name in TORCHRUN_OPTIONS:
                i += 2
            else:
                return None  # anything else (a script, an unknown option): not a job this dashboard launched
    return None


def is_job_cmdline(argv: list[str] | None, folder: Path, commands: tuple[str, ...] = JOB_COMMANDS) -> bool:
    """``argv`` is ``python -m flrdf <command> ... --out <folder>`` (directly or under the torchrun launcher, see
    ``flrdf_args``) with ``folder`` (resolved) as its only --out."""
    rest = flrdf_args(argv)
    if not rest or rest[0] not in commands:
        return False
    outs = [rest[i + 1] for i, a in enumerate(rest[:-1]) if a == "--out"]
    outs += [a.split("=", 1)[1] for a in rest if a.startswith("--out=")]
    if len(outs) != 1:
        return False
    try:
        return Path(outs[0]).resolve() == Path(folder).resolve()
    except (OSError, ValueError):
        return False


def owned_pid(folder: Path, commands: tuple[str, ...] = JOB_COMMANDS) -> int | None:
    """The pid of the live job this folder's job.json records, or None. Every condition must hold: a positive int,
    /proc/<pid> exists and is not a zombie, its command line is ``python -m flrdf <command> ... --out <folder>``,
    and its start time equals the one recorded at launch (so a reused pid is never taken for the job)."""
    job = read_job(folder) or {}
    pid, started = job.get("pid"), job.get("start_time")
    if not _positive(pid) or not isinstance(started, int) or isinstance(started, bool):
        return None
    if not os.path.isdir(f"/proc/{pid}") or proc_state(pid) in (None, "Z", "X"):
        return None
    if proc_start_time(pid) != started or not is_job_cmdline(proc_cmdline(pid), folder, commands):
        return None
    return pid


def _send(pid: int, folder: Path, commands: tuple[str, ...], sig: int) -> None:
    """Signal exactly the process ``owned_pid`` vouches for: through a pidfd (the check and the signal then name
    the same process even if the pid is reused in between), the process only - never a group."""
    job = read_job(folder) or {}
    opener = getattr(os, "pidfd_open", None)
    sender = getattr(signal, "pidfd_send_signal", None)
    if opener is None or sender is None:
        os.kill(pid, sig)
        return
    try:
        fd = opener(pid)
    except ProcessLookupError:
        raise JobError("the job's process is not running") from None
    try:
        if proc_start_time(pid) != job.get("start_time") or owned_pid(folder, commands) != pid:
            raise JobError("the job's process is not running")
        sender(fd, sig)
    except ProcessLookupError:
        raise JobError("the job's process is not running") from None
    finally:
        os.close(fd)


def _waiter(proc: subprocess.Popen) -> None:
    proc.wait()  # reaps the child the moment it exits: no zombies
    with _lock:
        _children.pop(proc.pid, None)


def spawn(argv: list[str], folder: Path, threads: int, kind: str, env: dict[str, str] | None = None,
          record: dict | None = None) -> subprocess.Popen:
    """Start ``argv`` in a new session with output to ``folder``; records ``folder/job.json`` (pid and the
    process's start time, the identity Stop checks later; ``record``'s fields besides) and reaps the child when
    it exits. ``env``: variables set in the child's environment on top of ``child_env``."""
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
                                    env=child_env(threads, env), start_new_session=True, close_fds=True)
        except OSError as exc:
            raise JobError(f"could not start {Path(argv[0]).name}: {exc.strerror or type(exc).__name__}") from None
    with _lock:
        _children[proc.pid] = proc
    started = proc_start_time(proc.pid)  # the child cannot be reaped yet: only our waiter thread reaps it
    write_json(folder / JOB_FILE, {**(record or {}), "kind": kind, "pid": proc.pid, "start_time": started,
                                   "argv": argv, "env": dict(env or {}), "threads": threads, "cwd": os.getcwd(),
                                   "launched": now_iso(), "launched_ts": time.time()})
    threading.Thread(target=_waiter, args=(proc,), name=f"reap-{proc.pid}", daemon=True).start()
    return proc


def reap() -> None:
    """Collect exited children now (their waiter threads do it too; this is for callers that want it at once)."""
    with _lock:
        procs = list(_children.values())
    for proc in procs:
        if proc.poll() is not None:
            with _lock:
                _children.pop(proc.pid, None)


def _wait_exit(folder: Path, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if owned_pid(folder) is None:
            return True
        time.sleep(0.1)
    return False


def _wait_unlocked(run_dir: Path, timeout: float) -> bool:
    """True once no process holds the run's train.lock (checked at least once)."""
    end = time.monotonic() + timeout
    while run_lock_holder(run_dir) is not None:
        if time.monotonic() >= end:
            return False
        time.sleep(0.1)
    return True


def read_job(folder: Path) -> dict | None:
    return read_json(Path(folder) / JOB_FILE)


def job_alive(folder: Path) -> bool:
    """This folder's recorded job is running (see ``owned_pid``)."""
    return owned_pid(folder) is not None


def signal_job(folder: Path, sig: int = signal.SIGTERM, commands: tuple[str, ...] = TRAIN_KINDS) -> int:
    """Send ``sig`` to the job this folder owns; returns its pid. JobError when there is none."""
    folder = Path(folder)
    job = read_job(folder)
    if not job:
        raise JobError("it has no job record (job.json): only jobs started from this dashboard can be stopped here")
    pid = owned_pid(folder, commands)
    if pid is None:
        raise JobError("its job is not running")
    _send(pid, folder, commands, sig)
    return pid


@dataclass
class Launch:
    """One job start: ``python -m flrdf ARGS`` (``nproc`` > 1: under torchrun) writing ``folder``, with ``env``
    set in its environment and ``record`` kept in its job.json (the scheduler's devices)."""
    args: list[str]
    folder: Path
    threads: int
    kind: str
    nproc: int = 1
    env: dict[str, str] = field(default_factory=dict)
    record: dict = field(default_factory=dict)

    def argv(self) -> list[str]:
        return torchrun_argv(self.nproc, *self.args) if self.nproc > 1 else python_argv(*self.args)


def start(launch: Launch) -> int:
    """Start ``launch`` (``spawn``); returns the pid job.json records."""
    return spawn(launch.argv(), launch.folder, launch.threads, launch.kind, launch.env,
                 dict(launch.record, nproc=launch.nproc)).pid


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

    from dashboard.paths import RUN_RULE, PathError, check_slug

    try:
        name = check_slug(name, rule=RUN_RULE)
    except PathError as exc:
        raise JobError(str(exc)) from None
    runs_dir = Path(runs_dir).absolute()
    runs_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        path = default_run_dir(str(runs_dir), name)
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise JobError("could not create a fresh run directory under runs/")


def check_resumable(run_dir: Path) -> None:
    """JobError unless ``run_dir`` is a run with a checkpoint to resume from."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise JobError(f"{run_dir.name} has no config.yaml: not a run directory")
    if not (run_dir / "checkpoints" / "last.pt").is_file():
        raise JobError(f"{run_dir.name} has no checkpoint to resume from (checkpoints/last.pt)")


def resume_train(run_dir: Path, overrides: list[str], threads: int, nproc: int = 1, env: dict | None = None,
                 record: dict | None = None, starter=None, patience_s: float = 20) -> int:
    """Start ``train --resume`` on ``run_dir`` (``nproc`` > 1: under torchrun) once its trainer is gone; returns
    the pid. ``starter``: what starts the ``Launch`` (default ``start``). ``patience_s``: how long a trainer that
    has written its final status may take to exit before Resume refuses (0: refuse at once)."""
    run_dir = Path(run_dir)
    check_resumable(run_dir)
    launch = Launch(train_argv("", overrides, run_dir, resume=True), run_dir, threads, "resume", nproc,
                    dict(env or {}), dict(record or {}))
    with _resume_lock:  # two Resume requests at once: the second sees the first's job
        check_not_running(run_dir, patience_s)
        return (starter or start)(launch)


def check_not_running(run_dir: Path, patience_s: float = 20) -> None:
    """JobError while the run's trainer lives (this dashboard's job, or any process holding train.lock)."""
    run_dir = Path(run_dir)
    status = read_json(run_dir / "status.json") or {}
    # the run's trainer - started here, by hand, by torchrun, with any argv - holds train.lock while it lives;
    # one that has written its final status releases it a moment later: give it that moment
    final = status.get("state") in ("stopped", "failed", "finished")
    if job_alive(run_dir) and (not final or not _wait_exit(run_dir, patience_s)):
        # this dashboard's own job, also before it has taken the lock (still importing torch, say)
        raise JobError(f"{run_dir.name} is still running")
    if not _wait_unlocked(run_dir, patience_s if final else 0):
        raise JobError(f"{run_dir.name} is still running: its training process holds the run's lock (train.lock)")


def stop_run(run_dir: Path) -> int:
    """SIGTERM to the run's training process (it checkpoints and writes status 'stopped'); returns the pid.
    Only the process job.json records, verified by ``owned_pid``; status.json's pid is never signalled."""
    return signal_job(Path(run_dir), signal.SIGTERM, TRAIN_KINDS)


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


def launch_analyze(source: str, out: Path, split: str, overrides: list[str], methods: list[str],
                   limit: int | None, threads: int, faithfulness_limit: int | None = None,
                   batch_size: int = 16, wsol_step: str = "reference", embedding: str = "umap") -> int:
    """``python -m flrdf analyze`` as a background job writing ``out`` (progress.json polled by the Analyze tab)."""
    args = ["analyze", "--run" if Path(source).is_dir() else "--checkpoint", str(source), "--split", split,
            "--methods", ",".join(methods), "--out", str(out), "--batch-size", str(batch_size)]
    for o in overrides:
        args += ["--set", o]
    if limit:
        args += ["--limit", str(int(limit))]
    if faithfulness_limit is not None:
        args += ["--faithfulness-limit", str(int(faithfulness_limit))]
    if wsol_step not in ("reference", "fast"):
        raise JobError(f"MaxBoxAccV2 step must be 'reference' or 'fast', got {wsol_step!r}")
    args += ["--wsol-step", wsol_step]
    if embedding not in ("umap", "tsne", "none"):
        raise JobError(f"the feature map must be umap, tsne or none, got {embedding!r}")
    args += ["--embedding", embedding]
    return spawn(python_argv(*args), out, threads, "analyze").pid
