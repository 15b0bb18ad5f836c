"""What the Train and Evaluate tabs know about runs and evaluations: read from files only.

A run is any directory directly under the runs directory holding ``status.json``,
``job.json`` or ``config.yaml`` - launched from this dashboard, from the CLI, or
copied from another machine. Its displayed state combines the engine's
``effective_status`` (a 'running' job whose process died is failed) with
``job.json`` (a job just launched or resumed is 'starting' until the trainer
writes its status), the scheduler's queue (a 'queued' run shows its place;
``dashboard.scheduler``) and the host (a run copied from elsewhere cannot be checked).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

from dashboard.jobs import JOB_FILE, STDERR, job_alive, proc_ppid, read_job
from dashboard.scheduler import queue_position
from flrdf.engine.rundir import effective_status, pid_alive, read_json

HOST = socket.gethostname()
ACTIVE = ("running", "starting")


def tail_text(path: Path, max_bytes: int = 6000, max_lines: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    lines = data.decode("utf-8", "replace").splitlines()
    if size > max_bytes and lines:
        lines = lines[1:]  # the first line is probably cut
    return "\n".join(lines[-max_lines:])


def _stderr_error(folder: Path) -> str:
    """The last meaningful stderr lines of a job that died before writing its status."""
    lines = [ln for ln in tail_text(Path(folder) / STDERR, 4000, 30).splitlines()
             if ln.strip() and not ln.startswith("=====")]
    errs = [ln for ln in lines if ln.startswith("error:") or "Error" in ln]
    return (errs[-1] if errs else (lines[-1] if lines else "the process ended without a status")).strip()


def run_state(run_dir: Path) -> dict:
    """status.json as the UI should show it: state in running|starting|queued|finished|failed|stopped|cancelled|
    unknown; a queued run carries ``queue_position`` (place, length)."""
    run_dir = Path(run_dir)
    raw = read_json(run_dir / "status.json")
    job = read_job(run_dir)
    alive = job_alive(run_dir) if job else False
    if raw is None:
        if job is None:
            return {"state": "unknown"}
        if alive:
            return {"state": "starting", "pid": job.get("pid")}
        return {"state": "failed", "error": _stderr_error(run_dir), "pid": job.get("pid")}
    if raw.get("state") == "running" and raw.get("host") and raw.get("host") != HOST:
        return dict(raw, state="unknown", error=f"status says running on host {raw['host']}; "
                                                "it cannot be checked from this machine")
    status = effective_status(run_dir)
    # the job's own trainer wrote the status: the job's process, or under torchrun one of its ranks (rank 0)
    written_by_job = job and (raw.get("pid") == job.get("pid") or
                              ((job.get("nproc") or 1) > 1 and proc_ppid(raw.get("pid")) == job.get("pid")))
    if alive and not written_by_job:
        return dict(status, state="starting", pid=job.get("pid"), error=None)  # resumed, trainer not up yet
    if raw.get("state") == "queued":
        place = queue_position(run_dir.parent, run_dir.name)
        if place is None:  # the queue lost it (edited by hand, a crash between two writes)
            return dict(raw, state="unknown", error="status says queued but the run is not in the runs folder's "
                                                    "queue (.queue.json): launch it again")
        return dict(raw, queue_position=place)
    if status.get("state") == "failed" and job and not pid_alive(status.get("pid")) and raw.get("state") == "running":
        err = _stderr_error(run_dir)
        if err and "without a status" not in err:
            status = dict(status, error=f"{status.get('error')} - last stderr: {err}")
    return status


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and any((path / f).is_file() for f in ("status.json", JOB_FILE, "config.yaml"))


def list_runs(runs_dir: Path) -> list[Path]:
    """Run directories under ``runs_dir``, newest first."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    runs = [p for p in runs_dir.iterdir() if is_run_dir(p)]
    return sorted(runs, key=lambda p: _mtime(p), reverse=True)


def _mtime(p: Path) -> float:
    for name in ("status.json", JOB_FILE, "config.yaml"):
        try:
            return (p / name).stat().st_mtime
        except OSError:
            continue
    return 0.0


def last_metrics_line(run_dir: Path, key: str = "loss_total") -> dict | None:
    """The newest complete metrics line carrying ``key`` (reads only the file's tail)."""
    text = tail_text(Path(run_dir) / "metrics.jsonl", 8000, 200)
    for line in reversed(text.splitlines()):  # a half-written last line fails to parse and is skipped
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if key in rec:
            return rec
    return None


def summary(run_dir: Path) -> dict:
    """One row of the runs list."""
    st = run_state(run_dir)
    final = st.get("final") or {}
    last = last_metrics_line(run_dir) or {}
    last_eval = last_metrics_line(run_dir, "top1") or {}
    top1 = final.get("top1", last_eval.get("top1") if last_eval.get("split") == "test" else None)
    step, total = st.get("step"), st.get("total_steps")
    state = st.get("state", "unknown")
    if state == "queued" and st.get("queue_position"):
        state = "queued #{} of {}".format(*st["queue_position"])
    return {
        "run": run_dir.name, "state": state, "config": st.get("config") or "",
        "dataset": st.get("dataset") or "", "devices": devices_text(run_dir, st),
        "step": f"{step}/{total}" if step is not None and total else ("" if step is None else str(step)),
        "loss": round(last["loss_total"], 4) if isinstance(last.get("loss_total"), (int, float)) else None,
        "top1": round(100 * top1, 2) if isinstance(top1, (int, float)) else None,
        "best val": round(100 * st["best_val_top1"], 2) if isinstance(st.get("best_val_top1"), (int, float)) else None,
        "loc acc": round(100 * final["loc_acc"], 1) if isinstance(final.get("loc_acc"), (int, float)) else None,
        "updated": (st.get("updated") or "")[:19].replace("T", " "),
        "error": (st.get("error") or "")[:120] if st.get("state") in ("failed", "unknown") else "",
    }


RUN_COLUMNS = ("run", "state", "config", "dataset", "devices", "step", "loss", "top1", "best val", "loc acc",
               "updated", "error")


def devices_text(run_dir: Path, state: dict | None = None) -> str:
    """Where a dashboard job runs or ran ("GPU 0,1 x2", "CPU", "CPU x2"), or, queued, where it waits to run;
    empty for a run started elsewhere."""
    st = state if state is not None else run_state(run_dir)
    job = read_job(run_dir) or {}
    devices = st.get("devices") if st.get("state") == "queued" else job.get("devices")
    nproc = job.get("nproc", 1) if st.get("state") != "queued" else 1
    if isinstance(devices, list):
        return "GPU " + ",".join(map(str, devices)) + (f" x{nproc}" if nproc > 1 else "")
    if devices == "cpu":
        return "CPU" + (f" x{nproc}" if isinstance(nproc, int) and nproc > 1 else "")
    return "any GPU" if devices == "auto" else ""


def running_count(runs_dir: Path) -> int:
    return sum(1 for p in list_runs(runs_dir) if run_state(p).get("state") in ACTIVE)


# ---------------------------------------------------------------- evaluation folders
def eval_dirs(runs_dir: Path, kind: str = "eval") -> list[Path]:
    """Result folders: RUN/<kind>/* for every run, and RUNS_DIR/<kind>/*; newest first. ``kind``: "eval"
    (loc-eval) or "analysis" (analyze)."""
    runs_dir = Path(runs_dir)
    found = []
    parents = [runs_dir / kind] + [r / kind for r in list_runs(runs_dir)]
    for parent in parents:
        if parent.is_dir():
            found += [p for p in parent.iterdir() if (p / "progress.json").is_file() or (p / JOB_FILE).is_file()]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def eval_state(folder: Path) -> dict:
    """progress.json with a dead 'running' job reported failed."""
    folder = Path(folder)
    prog = read_json(folder / "progress.json")
    job = read_job(folder)
    alive = job_alive(folder) if job else False
    if prog is None:
        if alive:
            return {"state": "starting", "done": 0, "total": 0}
        return {"state": "failed", "error": _stderr_error(folder) if job else "no progress.json", "done": 0,
                "total": 0}
    if prog.get("state") == "running" and not pid_alive(prog.get("pid")):
        prog = dict(prog, state="failed", error=prog.get("error") or _stderr_error(folder))
    return prog


def folder_tick(list_folders, resolve, view, n_outputs: int, empty: tuple, skip, dropdown,
                refused: type[Exception] = ValueError):
    """A timer callback for a tab that shows one result folder of a background job: ``(folder, last) ->
    (*view outputs, folder list, last)``, re-rendering only what changed - the folder list, and the shown
    folder's view when its progress moved (a finished folder renders once). ``resolve`` maps the client's
    folder name to a path (``None``, or raising ``refused``, for none); ``skip``/``dropdown`` are the UI's
    "no change" value and folder-list constructor (Gradio's, passed in so this module stays UI-free)."""

    def tick(folder, last):
        last = dict(last or {})
        folders = list_folders()
        out_saved = skip()
        if folders != last.get("folders"):
            last["folders"] = folders
            out_saved = dropdown(folders)
        try:
            path = resolve(folder)
        except refused:
            path = None
        key = None
        if path is not None:
            st = eval_state(path)
            key = f"{path}|{st.get('state')}|{st.get('done')}|{st.get('updated')}"
        if key == last.get("key"):
            return (*[skip()] * n_outputs, out_saved, last)
        last["key"] = key
        return (*(view(path) if path is not None else empty), out_saved, last)

    return tick
