"""Where and when the dashboard's training jobs run: GPUs chosen, held, and queued.

A job names its devices (``Request``): GPU indices of the inventory
(``dashboard.gpus``), ``cpu``, or ``auto`` (one free GPU; the CPU on a machine
without). It starts at once when every GPU it names is free of this dashboard's
running jobs - for a CPU job, when fewer than ``max_jobs`` CPU jobs run - and
otherwise waits in the queue, its run directory already made with status.json
``state: queued``. Started: one GPU is the plain ``python -m flrdf train ...``
with ``CUDA_VISIBLE_DEVICES`` set; k GPUs (or k CPU processes, gloo) is torchrun
(``dashboard.jobs.Launch``). A CPU job on a GPU machine gets ``CUDA_VISIBLE_DEVICES=""``: it
cannot take a GPU that another job was given.

Everything lives in the runs directory, so an app restart (a new ``Scheduler``
on the same folder) loses nothing: the queue is ``RUNS_DIR/.queue.json``, replaced
atomically and changed only under an ``flock`` on ``RUNS_DIR/.queue.lock``; which
GPUs are held is read from the running jobs' job.json (``devices``). ``pump``
starts what can start, in queue order: a waiting job keeps its GPUs from later
jobs (no overtaking on a GPU), jobs on other GPUs go ahead. The Train tab calls it
at app start and on every timer tick. Entries and job records carry the host name:
dashboards on several machines may share one runs folder, each starting only the
jobs queued on its own machine, on its own GPUs. A queued job can be cancelled: a fresh run
then reads ``cancelled``; a queued Resume gets back the status it had.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from dashboard import jobs
from dashboard.gpus import CHILD_ENV, GPU, GpuInventory
from flrdf.engine.rundir import now_iso, read_json, run_lock_holder, write_json

HOST = socket.gethostname()
QUEUE_FILE = ".queue.json"
QUEUE_LOCK = ".queue.lock"
MAX_PROCESSES = 64
TRAIN_JOB_KINDS = ("train", "resume")


@dataclass(frozen=True)
class Request:
    """Where a job may run: ``devices`` is a tuple of GPU indices, "cpu" or "auto"; ``nproc`` the number of CPU
    processes of a CPU job (torchrun with gloo when > 1; a GPU job runs one process per GPU)."""
    devices: tuple[int, ...] | str = "auto"
    nproc: int = 1

    def as_json(self):
        return list(self.devices) if isinstance(self.devices, tuple) else self.devices

    def text(self) -> str:
        if isinstance(self.devices, tuple):
            return ("GPU " if len(self.devices) == 1 else "GPUs ") + ",".join(map(str, self.devices))
        if self.devices == "cpu":
            return "CPU" + (f" x {self.nproc} processes" if self.nproc > 1 else "")
        return "any free GPU"


def parse_devices(value) -> tuple[int, ...] | str:
    """What a client sends - the form's GPU picks (["0", "2"]), API text ("0,2", "cpu", ""), ints - as a device
    request. Empty is "auto". JobError naming the bad entry otherwise."""
    if value is None:
        return "auto"
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    items = [str(v).strip() for v in items if str(v).strip()]
    if not items or items == ["auto"]:
        return "auto"
    if [v.lower() for v in items] == ["cpu"]:
        return "cpu"
    out = []
    for v in items:
        text = v[4:].strip() if v.lower().startswith("gpu ") else v
        if not text.isdigit():
            raise jobs.JobError(f"devices: {v!r} is not a GPU index; give GPU numbers (e.g. 0,1), 'cpu' or nothing")
        if int(text) in out:
            raise jobs.JobError(f"devices: GPU {int(text)} is named twice")
        out.append(int(text))
    return tuple(sorted(out))


def parse_request(devices, nproc=1, config_device: str = "auto", gpus: list[GPU] | None = None) -> Request:
    """A checked ``Request`` from the client's devices and process count, the job's ``runtime.device`` and the
    machine's GPUs. Refused (JobError, with the reason): an unknown GPU, GPUs for a job whose config says cpu (or
    a cuda:N, which the job could not see), processes > 1 for a GPU job, a cuda job on the CPU."""
    dev = parse_devices(devices)
    try:
        f = float(1 if nproc is None or nproc == "" else nproc)
    except (TypeError, ValueError):
        f = 0.5
    if f != int(f) or not 1 <= f <= MAX_PROCESSES:
        raise jobs.JobError(f"processes must be a whole number from 1 to {MAX_PROCESSES}, got {nproc!r}")
    n = int(f)
    gpus = list(gpus or [])
    config_device = str(config_device or "auto").strip().lower()
    if dev == "auto" and (not gpus or config_device == "cpu"):
        dev = "cpu"
    if isinstance(dev, tuple):
        known = {g.index for g in gpus}
        missing = [i for i in dev if i not in known]
        if missing:
            have = ", ".join(str(g.index) for g in gpus) or "none"
            raise jobs.JobError(f"GPU {missing[0]} is not on this machine (GPUs: {have})")
    if dev != "cpu":
        if config_device == "cpu":
            raise jobs.JobError("runtime.device is cpu but GPUs were picked: set the device to auto (or cuda), "
                                "or pick no GPU")
        if config_device.startswith("cuda:"):
            raise jobs.JobError(f"runtime.device is {config_device}: a job sees only the GPUs picked for it, as "
                                "cuda:0, cuda:1, ...; set the device to auto (or cuda) and pick the GPU instead")
        if n > 1:
            raise jobs.JobError("processes > 1 is for CPU jobs; a GPU job runs one process per GPU picked "
                                "(pick several GPUs for torchrun)")
    elif config_device.startswith("cuda"):
        raise jobs.JobError(f"runtime.device is {config_device} but the job is placed on the CPU "
                            + ("(no GPU on this machine)" if not gpus else "(pick a GPU, or set the device to auto)"))
    return Request(dev, n if dev == "cpu" else (len(dev) if isinstance(dev, tuple) else 1))


@dataclass
class Placement:
    """What became of a submitted job: started (``pid``) or waiting (``position`` in the queue, 1 = next)."""
    run: Path
    request: Request
    pid: int | None = None
    position: int | None = None
    devices: list[int] | str | None = None   # where it runs, once started
    nproc: int = 1
    threads: int = 0
    waiting_for: list[str] = field(default_factory=list)   # why it waits: "GPU 1 (run-x)", "a CPU slot"

    def where(self) -> str:
        if isinstance(self.devices, list):
            gpus = ("GPU " if len(self.devices) == 1 else "GPUs ") + ",".join(map(str, self.devices))
            return gpus + (f" (torchrun, {self.nproc} processes)" if self.nproc > 1 else "")
        return "CPU" + (f" (torchrun with gloo, {self.nproc} processes)" if self.nproc > 1 else "")


def read_queue(runs_dir: Path) -> list[dict]:
    """The queue's entries in order (lock-free: the file is replaced atomically); [] when there is none."""
    data = read_json(Path(runs_dir) / QUEUE_FILE) or {}
    entries = data.get("entries") if isinstance(data, dict) else None
    return [e for e in entries or [] if isinstance(e, dict) and isinstance(e.get("run"), str)
            and isinstance(e.get("args"), list) and all(isinstance(a, str) for a in e["args"])]


def queue_position(runs_dir: Path, run_name: str) -> tuple[int, int] | None:
    """(place, queue length) of ``run_name`` in the queue, place 1 = next; None when it is not queued."""
    names = [e["run"] for e in read_queue(runs_dir)]
    return (names.index(run_name) + 1, len(names)) if run_name in names else None


class Scheduler:
    """The queue of one runs directory. ``gpus``: the inventory (a callable returning ``GPU``s; default the
    machine's, ``GpuInventory``); ``max_jobs``: CPU jobs running at once; ``starter``: what starts a
    ``jobs.Launch`` and returns its pid (default ``jobs.start``; tests record the command instead)."""

    def __init__(self, runs_dir: str | Path, gpus: Callable[[], list[GPU]] | None = None, max_jobs: int = 1,
                 starter: Callable[[jobs.Launch], int] | None = None):
        if not isinstance(max_jobs, int) or isinstance(max_jobs, bool) or max_jobs < 1:
            raise ValueError(f"--max-jobs must be a whole number >= 1, got {max_jobs!r}")
        self.runs_dir = Path(runs_dir).absolute()
        self.gpus = gpus or GpuInventory()
        self.max_jobs = max_jobs
        self.starter = starter or jobs.start

    # ------------------------------------------------------------ state read from the runs directory
    @contextmanager
    def _locked(self):
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.runs_dir / QUEUE_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write_queue(self, entries: list[dict]) -> None:
        write_json(self.runs_dir / QUEUE_FILE, {"format": "flrdf-queue", "entries": entries})

    def queue(self) -> list[dict]:
        return read_queue(self.runs_dir)

    def running(self) -> tuple[dict[int, str], list[str]]:
        """({GPU index: run name}, [CPU job run names]) of this runs directory's live training jobs."""
        gpus, cpu = {}, []
        if not self.runs_dir.is_dir():
            return gpus, cpu
        for run in sorted(self.runs_dir.iterdir()):
            job = jobs.read_job(run) if run.is_dir() else None
            if not job or job.get("kind") not in TRAIN_JOB_KINDS or job.get("host", HOST) != HOST \
                    or not jobs.job_alive(run):
                continue
            devices = job.get("devices")
            if isinstance(devices, list):
                for i in devices:
                    gpus[i] = run.name
            else:  # "cpu", or a job launched before jobs recorded their devices
                cpu.append(run.name)
        return gpus, cpu

    # ------------------------------------------------------------ submitting, cancelling
    def submit_train(self, config: str, overrides: list[str], name: str, threads: int, request: Request,
                     info: dict | None = None) -> Placement:
        """A fresh run directory for ``train --config CONFIG --set ...``, started now or queued. ``info``: fields
        shown in the runs list while it waits (config, dataset)."""
        with self._locked():
            out = jobs.new_run_dir(self.runs_dir, name)
            entry = {"run": out.name, "kind": "train", "args": jobs.train_argv(config, overrides, out),
                     "devices": request.as_json(), "nproc": request.nproc, "threads": int(threads or 0),
                     "queued": now_iso(), "host": HOST, "info": dict(info or {})}
            return self._submit(entry, request, lambda: write_json(
                out / "status.json", {**entry["info"], "state": "queued", "devices": entry["devices"],
                                      "queued": entry["queued"], "updated": now_iso()}))

    def submit_resume(self, run_dir: Path, overrides: list[str], threads: int, request: Request | None = None,
                      config_device: str | None = None) -> Placement:
        """Resume ``run_dir``, now or queued. ``request`` None: where the run last ran (its job.json), else auto.
        Refused (JobError) while the run is queued or its trainer lives."""
        run_dir = Path(run_dir)
        jobs.check_resumable(run_dir)
        if request is None:
            request = self.recorded_request(run_dir, config_device)
        if any(e["run"] == run_dir.name for e in self.queue()):
            raise jobs.JobError(f"{run_dir.name} is already queued")
        jobs.check_not_running(run_dir)  # a trainer that has just written 'stopped' gets its moment to exit
        with self._locked():
            if any(e["run"] == run_dir.name for e in self.queue()):
                raise jobs.JobError(f"{run_dir.name} is already queued")
            jobs.check_not_running(run_dir, patience_s=0)
            previous = read_json(run_dir / "status.json") or {}
            entry = {"run": run_dir.name, "kind": "resume", "overrides": list(overrides),
                     "args": jobs.train_argv("", overrides, run_dir, resume=True), "devices": request.as_json(),
                     "nproc": request.nproc, "threads": int(threads or 0), "queued": now_iso(),
                     "host": HOST, "previous": previous}
            return self._submit(entry, request, lambda: write_json(
                run_dir / "status.json", {**previous, "state": "queued", "queued_from": previous.get("state"),
                                          "devices": entry["devices"], "queued": entry["queued"],
                                          "updated": now_iso()}))

    def recorded_request(self, run_dir: Path, config_device: str | None = None) -> Request:
        """Where the run last ran from this dashboard (job.json), checked against today's GPUs; else auto."""
        job = jobs.read_job(run_dir) or {}
        devices, nproc = job.get("devices"), job.get("nproc", 1)
        if isinstance(devices, list) or devices == "cpu":
            return parse_request(devices if devices == "cpu" else [str(d) for d in devices],
                                 nproc if devices == "cpu" else 1, config_device or "auto", self.gpus())
        return parse_request("auto", 1, config_device or "auto", self.gpus())

    def _submit(self, entry: dict, request: Request, mark_queued: Callable[[], None]) -> Placement:
        queue = self.queue()
        queue.append(entry)
        started = self._pump_locked(queue, changed=True)
        run = self.runs_dir / entry["run"]
        if entry["run"] in started:
            return started[entry["run"]]
        failed = entry.get("failed")
        if failed:
            raise jobs.JobError(failed)
        mark_queued()
        names = [e["run"] for e in self.queue()]
        place = Placement(run, request, position=names.index(entry["run"]) + 1 if entry["run"] in names else None)
        place.waiting_for = self.waiting_for(entry)
        return place

    def cancel(self, run_name: str) -> str:
        """Take a queued job out of the queue; returns the state its run directory now shows."""
        with self._locked():
            queue = self.queue()
            entry = next((e for e in queue if e["run"] == run_name), None)
            if entry is None:
                raise jobs.JobError(f"{run_name} is not queued")
            run = self.runs_dir / run_name
            if entry.get("kind") == "resume":
                state = (entry.get("previous") or {}).get("state") or "stopped"
                write_json(run / "status.json", dict(entry.get("previous") or {}, state=state))
            else:
                state = "cancelled"
                write_json(run / "status.json", {**(entry.get("info") or {}), "state": state,
                                                 "cancelled": now_iso(), "updated": now_iso()})
            self._write_queue([e for e in queue if e is not entry])
            return state

    # ------------------------------------------------------------ starting
    def pump(self) -> dict[str, Placement]:
        """Start every queued job whose devices are free, in queue order; returns {run name: Placement}."""
        if not self.queue():  # the common case, every timer tick: no lock, one small read
            return {}
        with self._locked():
            return self._pump_locked(self.queue())

    def waiting_for(self, entry: dict) -> list[str]:
        """What a queued entry waits for, in words."""
        held, cpu = self.running()
        devices = entry.get("devices")
        if isinstance(devices, list):
            busy = [f"GPU {i} (held by {held[i]})" for i in devices if i in held]
            return busy or [f"GPU {','.join(map(str, devices))} (an earlier job in the queue goes first)"]
        if devices == "cpu" or not self.gpus():
            return [f"a CPU slot ({len(cpu)} of {self.max_jobs} running)"]
        return ["a free GPU"]

    def _pump_locked(self, queue: list[dict], changed: bool = False) -> dict[str, Placement]:
        """``pump`` with the lock held, over ``queue`` (``changed``: differs from the file, which is rewritten)."""
        held, cpu = self.running()
        inventory = {g.index: g for g in self.gpus()}
        blocked: set[int] = set()   # GPUs an earlier waiting job is first in line for
        keep, started = [], {}
        for entry in queue:
            run = self.runs_dir / entry["run"]
            if entry.get("host", HOST) != HOST:  # queued by a dashboard on another machine: its GPUs, its start
                keep.append(entry)
                continue
            try:
                devices = self._placeable(entry, run, inventory, held, blocked, len(cpu))
            except jobs.JobError as exc:  # this entry can never start: out of the queue, with the reason
                self._failed(entry, run, str(exc))
                continue
            if devices is None:
                keep.append(entry)
                continue
            try:
                place = self._start(entry, run, devices, inventory, len(set(held.values())) + len(cpu))
            except jobs.JobError as exc:
                self._failed(entry, run, str(exc))
                continue
            started[entry["run"]] = place
            if isinstance(devices, list):
                held.update({i: entry["run"] for i in devices})
            else:
                cpu.append(entry["run"])
        if changed or keep != queue:
            self._write_queue(keep)
        return started

    def _placeable(self, entry: dict, run: Path, inventory: dict[int, GPU], held: dict[int, str],
                   blocked: set[int], cpu_running: int) -> list[int] | str | None:
        """The devices ``entry`` starts on now, or None while it must wait; JobError when it never can."""
        if not jobs.is_job_cmdline(jobs.python_argv(*entry["args"]), run, ("train",)):
            raise jobs.JobError("its queue entry is not a training command for its own run directory")
        if not run.is_dir():
            raise jobs.JobError(f"{run.name}: its run directory is gone")
        if jobs.job_alive(run) or run_lock_holder(run) is not None:
            if entry.get("kind") != "resume":
                raise jobs.JobError(f"{run.name} is already running")
            return None  # a Resume queued behind its own run's end
        devices = entry.get("devices")
        if devices == "cpu":
            return "cpu" if cpu_running < self.max_jobs else None
        if devices == "auto":
            free = [i for i in sorted(inventory) if i not in held and i not in blocked]
            if not inventory:
                return "cpu" if cpu_running < self.max_jobs else None
            return [free[0]] if free else None
        if not isinstance(devices, list) or not devices or not all(isinstance(i, int) for i in devices):
            raise jobs.JobError(f"its queue entry names no devices: {devices!r}")
        gone = [i for i in devices if i not in inventory]
        if gone:
            raise jobs.JobError(f"GPU {gone[0]} is no longer on this machine")
        if any(i in held or i in blocked for i in devices):
            blocked.update(devices)
            return None
        return list(devices)

    def _start(self, entry: dict, run: Path, devices: list[int] | str, inventory: dict[int, GPU],
               running: int) -> Placement:
        if isinstance(devices, list):
            nproc = len(devices)
            env = {**CHILD_ENV, "CUDA_VISIBLE_DEVICES": ",".join(inventory[i].visible_id for i in devices)}
        else:
            nproc = max(1, int(entry.get("nproc") or 1))
            env = {"CUDA_VISIBLE_DEVICES": ""} if inventory else {}  # on a GPU machine: no GPU for a CPU job
        threads = int(entry.get("threads") or 0) or jobs.auto_threads(running)
        per_process = max(1, threads // nproc) if nproc > 1 else threads
        record = {"devices": devices, "request": entry.get("devices"), "queued": entry.get("queued"), "host": HOST}
        request = Request(tuple(devices) if isinstance(devices, list) else "cpu", nproc)
        if entry.get("kind") == "resume":
            if entry.get("previous") is not None:  # what it was, until the trainer writes
                write_json(run / "status.json", entry["previous"])
            pid = jobs.resume_train(run, list(entry.get("overrides") or []), per_process, nproc, env, record,
                                    starter=self.starter, patience_s=0)
        else:
            (run / "status.json").unlink(missing_ok=True)  # 'queued' goes: the trainer refuses a folder with one
            pid = self.starter(jobs.Launch(list(entry["args"]), run, per_process, "train", nproc, env, record))
        return Placement(run, request, pid=pid, devices=devices, nproc=nproc, threads=per_process)

    def _failed(self, entry: dict, run: Path, message: str) -> None:
        """An entry that cannot start leaves the queue; its run says why (a fresh run 'failed'; a Resume gets its
        previous status back with the message, unless another trainer owns the run now)."""
        entry["failed"] = message
        if not run.is_dir():
            return
        if entry.get("kind") == "resume":
            if run_lock_holder(run) is None and not jobs.job_alive(run):
                write_json(run / "status.json", dict(entry.get("previous") or {}, error=f"Resume not started: "
                                                                                       f"{message}"))
        elif not jobs.job_alive(run):
            write_json(run / "status.json", {**(entry.get("info") or {}), "state": "failed",
                                             "error": f"not started: {message}", "updated": now_iso()})
