"""dashboard.scheduler / gpus: GPUs picked and held, the queue in the runs directory, torchrun launches.

The queue tests run on an injected GPU inventory (no GPU needed). Their jobs are real processes with a
job's command line - ``python -m flrdf train ... --out RUN`` in a working directory whose ``flrdf`` only
sleeps - so "held" and "free" are the scheduler's own reading of live processes; the injected starter
records each ``Launch`` (the exact command and environment) and starts that stand-in without the torchrun
launcher. The last test is the real thing: a 2-process CPU (gloo) torchrun job launched through the Train
tab's API, stopped (no rank, zombie or orphan left) and resumed to the end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import sys
from pathlib import Path

import pytest

from dashboard import gpus as G
from dashboard import jobs, runs
from dashboard import scheduler as S
from flrdf.engine.rundir import write_json
from waits import file_tail, wait_until

TWO_GPUS = [G.GPU(0, "Test GPU A", 81920, 1024, "0"), G.GPU(1, "Test GPU B", 81920, 512, "1")]


class Recorder:
    """The scheduler's process starter for these tests: records every Launch, then starts the same job without
    the torchrun launcher (the stand-in flrdf of the working directory sleeps), so the job is a live process."""

    def __init__(self):
        self.launches: list[jobs.Launch] = []

    def __call__(self, launch: jobs.Launch) -> int:
        self.launches.append(launch)
        return jobs.start(dataclasses.replace(launch, nproc=1))

    def runs(self) -> list[str]:
        return [launch.folder.name for launch in self.launches]


@pytest.fixture
def sleeper_cwd(fake_flrdf_cwd):
    """conftest's sleeping ``flrdf`` package; the jobs still alive are killed afterwards."""
    tmp_path = fake_flrdf_cwd
    yield tmp_path
    for run in (tmp_path / "runs").glob("*"):
        pid = jobs.owned_pid(run)
        if pid:
            os.kill(pid, signal.SIGKILL)


def _sched(runs_dir, inventory=TWO_GPUS, max_jobs=1, recorder=None):
    return S.Scheduler(runs_dir, G.fixed(inventory), max_jobs, recorder or Recorder())


def _submit(sched, name, devices, nproc=1, config_device="auto"):
    request = S.parse_request(devices, nproc, config_device, sched.gpus())
    return sched.submit_train("demo", ["optim.epochs=1"], name, 1, request, info={"config": "demo"})


def _end(run: Path) -> None:
    """The job of ``run`` ends (SIGTERM to the stand-in) and is gone."""
    pid = jobs.stop_run(run)
    wait_until(lambda: jobs.proc_state(pid) is None, 10, f"the job of {run.name} gone",
               lambda: f"state {jobs.proc_state(pid)!r}")


def test_placement_queueing_and_start_order(sleeper_cwd):
    runs_dir = sleeper_cwd / "runs"
    rec = Recorder()
    sched = _sched(runs_dir, max_jobs=1, recorder=rec)
    a = _submit(sched, "a", ["0"])
    assert a.pid and a.devices == [0] and rec.launches[-1].env["CUDA_VISIBLE_DEVICES"] == "0"
    assert jobs.read_job(a.run)["devices"] == [0]
    b = _submit(sched, "b", ["0", "1"])       # GPU 0 is a's
    assert b.pid is None and b.position == 1 and b.waiting_for == [f"GPU 0 (held by {a.run.name})"]
    c = _submit(sched, "c", ["1"])            # GPU 1 is free, but b is first in line for it
    assert c.pid is None and c.position == 2
    d = _submit(sched, "d", "cpu")            # the CPU is another resource: starts at once
    assert d.pid and d.devices == "cpu" and rec.launches[-1].env == {"CUDA_VISIBLE_DEVICES": ""}
    e = _submit(sched, "e", "cpu")            # --max-jobs 1
    assert e.pid is None and e.position == 3
    f = _submit(sched, "f", [])               # any one GPU: none is free for it
    assert f.pid is None and f.position == 4
    assert rec.runs() == [a.run.name, d.run.name]

    # queued runs exist, with their place shown in the runs list
    for place, run in enumerate([b.run, c.run, e.run, f.run], 1):
        st = runs.run_state(run)
        assert st["state"] == "queued" and st["queue_position"] == (place, 4)
        assert runs.summary(run)["state"] == f"queued #{place} of 4"
    assert runs.summary(b.run)["devices"] == "GPU 0,1" and runs.summary(a.run)["devices"] == "GPU 0"
    assert sched.running() == ({0: a.run.name}, [d.run.name])
    assert sched.pump() == {}                 # nothing freed: nothing starts

    _end(a.run)
    started = sched.pump()
    assert list(started) == [b.run.name] and started[b.run.name].devices == [0, 1]
    assert rec.launches[-1].nproc == 2 and rec.launches[-1].env["CUDA_VISIBLE_DEVICES"] == "0,1"
    _end(d.run)
    assert list(sched.pump()) == [e.run.name]
    _end(b.run)
    started = sched.pump()
    assert list(started) == [c.run.name, f.run.name]   # queue order; f takes the GPU c left free
    assert started[c.run.name].devices == [1] and started[f.run.name].devices == [0]
    assert rec.runs() == [a.run.name, d.run.name, b.run.name, e.run.name, c.run.name, f.run.name]
    assert sched.queue() == [] and runs.run_state(f.run)["state"] == "starting"


def test_the_queue_survives_a_restart(sleeper_cwd):
    runs_dir = sleeper_cwd / "runs"
    first = _sched(runs_dir)
    a = _submit(first, "a", ["1"])
    b = _submit(first, "b", ["1"])
    c = _submit(first, "c", ["1"])
    assert (b.position, c.position) == (1, 2)
    # the app restarts: a new scheduler over the same runs folder, nothing kept in memory
    rec = Recorder()
    again = _sched(runs_dir, recorder=rec)
    assert [e["run"] for e in again.queue()] == [b.run.name, c.run.name]
    assert again.running() == ({1: a.run.name}, [])
    assert again.pump() == {} and runs.run_state(c.run)["queue_position"] == (2, 2)
    _end(a.run)
    assert list(again.pump()) == [b.run.name] and rec.runs() == [b.run.name]
    assert runs.run_state(c.run)["queue_position"] == (1, 1)


def test_cancel_a_queued_job_and_a_queued_resume(sleeper_cwd):
    runs_dir = sleeper_cwd / "runs"
    rec = Recorder()
    sched = _sched(runs_dir, recorder=rec)
    a = _submit(sched, "a", ["0"])
    b = _submit(sched, "b", ["0"])
    # a stopped run with a checkpoint, resumed on GPU 0: queued too; its status says so until it starts
    old = runs_dir / "old"
    (old / "checkpoints").mkdir(parents=True)
    (old / "config.yaml").write_text("name: demo\n")
    (old / "checkpoints" / "last.pt").write_bytes(b"x")
    write_json(old / "status.json", {"state": "stopped", "step": 7, "config": "demo"})
    r = sched.submit_resume(old, ["optim.epochs=3"], 1, S.parse_request(["0"], 1, "auto", TWO_GPUS))
    assert r.pid is None and r.position == 2 and runs.run_state(old)["state"] == "queued"
    with pytest.raises(jobs.JobError, match="already queued"):
        sched.submit_resume(old, [], 1, S.parse_request(["1"], 1, "auto", TWO_GPUS))

    assert sched.cancel(b.run.name) == "cancelled"
    assert runs.run_state(b.run)["state"] == "cancelled" and runs.summary(b.run)["state"] == "cancelled"
    assert runs.run_state(old)["queue_position"] == (1, 1)
    assert sched.cancel(old.name) == "stopped"                 # the resume's run: back to what it was
    st = json.loads((old / "status.json").read_text())
    assert st["state"] == "stopped" and st["step"] == 7
    with pytest.raises(jobs.JobError, match="not queued"):
        sched.cancel(b.run.name)
    _end(a.run)
    assert sched.pump() == {} and rec.runs() == [a.run.name]   # nothing left to start


def test_two_gpu_launch_command_and_environment(sleeper_cwd):
    """The exact command and environment of a 2-GPU job (the dashboard itself under CUDA_VISIBLE_DEVICES=2,3,
    so the form's GPUs 0 and 1 are the machine's 2 and 3) and of a 1-GPU job."""
    runs_dir = sleeper_cwd / "runs"
    inventory = [G.GPU(0, "Test GPU", 81920, 0, "2"), G.GPU(1, "Test GPU", 81920, 0, "3")]
    rec = Recorder()
    sched = _sched(runs_dir, inventory, recorder=rec)
    two = _submit(sched, "two", "0,1")
    one = _submit(sched, "one", "")           # the first free GPU: none free, waits
    assert two.pid and one.pid is None
    launch = rec.launches[0]
    assert launch.argv() == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "flrdf", "train", "--config", "demo", "--set", "optim.epochs=1",
                             "--out", str(two.run)]
    assert launch.env == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "2,3"}
    env = jobs.child_env(launch.threads, launch.env)
    assert env["CUDA_VISIBLE_DEVICES"] == "2,3" and env["OMP_NUM_THREADS"] == "1"
    # what Stop's identity check accepts: the torchrun command line of this run, not of another folder
    assert jobs.is_job_cmdline(launch.argv(), two.run) and not jobs.is_job_cmdline(launch.argv(), one.run)
    _end(two.run)
    assert list(sched.pump()) == [one.run.name]
    assert rec.launches[1].argv() == [sys.executable, "-m", "flrdf", "train", "--config", "demo",
                                       "--set", "optim.epochs=1", "--out", str(one.run)]
    assert rec.launches[1].env == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "2"}


@pytest.mark.parametrize("devices, nproc, device, gpus, expect", [
    ("", 1, "auto", TWO_GPUS, S.Request("auto", 1)),
    ("", 2, "auto", [], S.Request("cpu", 2)),                 # no GPU: the CPU, 2 processes
    (["1", "0"], 1, "cuda", TWO_GPUS, S.Request((0, 1), 2)),
    ("cpu", 3, "auto", TWO_GPUS, S.Request("cpu", 3)),
    ("", 1, "cpu", TWO_GPUS, S.Request("cpu", 1)),
    ("7", 1, "auto", TWO_GPUS, "GPU 7 is not on this machine"),
    ("0", 1, "cpu", TWO_GPUS, "runtime.device is cpu but GPUs were picked"),
    ("0", 1, "cuda:1", TWO_GPUS, "a job sees only the GPUs picked"),
    ("0", 2, "auto", TWO_GPUS, "processes > 1 is for CPU jobs"),
    ("", 1, "cuda", [], "no GPU on this machine"),
    ("0,0", 1, "auto", TWO_GPUS, "named twice"),
    ("zero", 1, "auto", TWO_GPUS, "not a GPU index"),
    ("", 2.5, "auto", [], "whole number"),
    ("", 0, "auto", [], "whole number"),
])
def test_device_requests(devices, nproc, device, gpus, expect):
    if isinstance(expect, str):
        with pytest.raises(jobs.JobError, match=re.escape(expect)):
            S.parse_request(devices, nproc, device, gpus)
    else:
        assert S.parse_request(devices, nproc, device, gpus) == expect


def test_nvidia_smi_rows_and_the_dashboards_own_visible_devices():
    text = ("0, GPU-aaa, NVIDIA H100 80GB HBM3, 81559, 1\n1, GPU-bbb, NVIDIA H100 80GB HBM3, 81559, 40960\n"
            "2, GPU-ccc, NVIDIA H100 80GB HBM3, 81559, [N/A]\n")
    all_three = G.parse_nvidia_smi(text)
    assert [(g.index, g.visible_id, g.used_mb) for g in all_three] == [(0, "0", 1), (1, "1", 40960), (2, "2", None)]
    assert G.label(all_three[1], "run-x") == "GPU 1 · NVIDIA H100 80GB HBM3 · 40.0/79.6 GiB used · job: run-x"
    # the dashboard started with CUDA_VISIBLE_DEVICES=2,GPU-bbb: its GPU 0 is the machine's 2, its 1 is GPU-bbb
    seen = G.parse_nvidia_smi(text, G.parse_visible("2,GPU-bbb"))
    assert [(g.index, g.visible_id, g.used_mb) for g in seen] == [(0, "2", None), (1, "GPU-bbb", 40960)]
    assert G.parse_nvidia_smi(text, G.parse_visible("")) == []


def test_cpu_torchrun_job_from_the_form_stop_ends_every_rank_and_resume_finishes(studio):
    """A 2-process CPU run (torchrun, gloo) launched through the Train tab's /launch: loss points appear; Stop
    ends both ranks and the launcher - no process of the run is left (no zombie, no orphan in /proc); Resume
    (on the processes the run last had) continues to the end."""
    import shlex

    from gradio_client import Client

    from conftest import tiny
    from test_train_ui import tiny_form, wait_for

    url, runs_dir, root = studio
    client = Client(url, verbose=False)
    form = dict(tiny_form(root), name="ddp2", gpus=[], processes=2,
                extra=shlex.join(tiny(root, **{"optim.epochs": 200, "optim.batch_size": 4})))
    msg, run = client.predict(**form, api_name="/launch")
    assert "Launched" in msg and "torchrun with gloo, 2 processes" in msg, msg
    assert "torchrun --standalone --nproc_per_node 2 -m flrdf train" in msg
    run_dir = runs_dir / run
    job = json.loads((run_dir / jobs.JOB_FILE).read_text())
    assert job["argv"][1:7] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]
    agent = job["pid"]
    text = wait_for(client, run, r"loss points: [1-9]", 300)
    assert "state: **running**" in text and "CPU x2" in text, text
    ranks = wait_until(lambda: _children(agent) if len(_children(agent)) == 2 else None, 60,
                       "the launcher's two ranks", lambda: f"children: {_children(agent)}")
    assert all(" -m flrdf train " in " ".join(jobs.proc_cmdline(p) or []) for p in ranks)  # python -u -m flrdf
    assert json.loads((run_dir / "status.json").read_text())["pid"] in ranks  # rank 0 writes the run

    assert "SIGTERM" in client.predict(run, api_name="/stop")
    wait_for(client, run, r"state: \*\*stopped\*\*", 120)
    everyone = {agent, *ranks}
    wait_until(lambda: all(jobs.proc_state(p) is None for p in everyone), 60,
               "the launcher and both ranks gone (exited and reaped)",
               lambda: ", ".join(f"{p}: {jobs.proc_state(p)}" for p in everyone))
    left = _family(everyone)
    assert not left, f"processes of the stopped run remain: {left}"
    status = json.loads((run_dir / "status.json").read_text())
    assert status["world_size"] == 2 and (run_dir / "checkpoints" / "last.pt").is_file()
    stopped_at = status["step"]

    msg = client.predict(run, f"optim.max_steps={stopped_at + 2}", 1, api_name="/resume")
    assert "Resuming" in msg and "2 processes" in msg, msg
    text = wait_for(client, run, r"state: \*\*finished\*\*", 300)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["step"] == stopped_at + 2 and status["world_size"] == 2
    assert status["rank_checksums"][0] == status["rank_checksums"][1]
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if "loss_total" in line]
    assert steps == list(range(1, stopped_at + 3)) and "final test top-1" in text  # no gap, no duplicate
    wait_until(lambda: jobs.owned_pid(run_dir) is None, 60, "the resumed launcher gone",
               lambda: file_tail(run_dir / jobs.STDERR))


def _children(pid: int) -> list[int]:
    return sorted(int(d) for d in os.listdir("/proc") if d.isdigit() and jobs.proc_ppid(int(d)) == pid)


def _family(pids: set[int]) -> list[tuple[int, str]]:
    """Every live process whose parent or session is one of ``pids`` (torchrun's ranks run in own sessions)."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            sid = os.getsid(int(d))
        except OSError:
            continue
        if jobs.proc_ppid(int(d)) in pids or sid in pids:
            found.append((int(d), " ".join(jobs.proc_cmdline(int(d)) or [])))
    return found



def test_the_form_lists_the_gpus_with_their_jobs_and_shows_the_commands(sleeper_cwd, tiny_model_file,
                                                                         examples_dir):
    """The Train form of an app over an injected inventory: each GPU with its name, memory in use and the job on
    it; on a machine without GPUs, the note instead. The commands shown for a 2-GPU pick: what Launch runs and
    the multi-node form."""
    from dashboard.app import build_app
    from dashboard.context import DashboardContext
    from dashboard.train_form import resolve
    from dashboard.train_tab import launch_preview

    runs_dir = sleeper_cwd / "runs"
    busy = _submit(_sched(runs_dir), "busy", ["1"])

    def props(app, elem_id):
        return next(c["props"] for c in app.config["components"] if c.get("props", {}).get("elem_id") == elem_id)

    ctx = DashboardContext.create(tiny_model_file, runs_dir, "cpu", examples_dir, gpus=G.fixed(TWO_GPUS))
    app = build_app(ctx=ctx)
    gpus = props(app, "train-gpus")
    assert gpus["visible"] and [c[1] for c in gpus["choices"]] == ["0", "1"]
    assert gpus["choices"][0][0] == "GPU 0 · Test GPU A · 1.0/80.0 GiB used · free"
    assert gpus["choices"][1][0] == f"GPU 1 · Test GPU B · 0.5/80.0 GiB used · job: {busy.run.name}"
    assert "2 GPUs" in props(app, "train-gpu-note")["value"]
    cpu_app = build_app(ctx=DashboardContext.create(tiny_model_file, runs_dir, "cpu", examples_dir, max_jobs=3,
                                                    gpus=G.fixed([])))
    assert not props(cpu_app, "train-gpus")["visible"]
    assert "No GPU: jobs run on the CPU, 3 at a time" in props(cpu_app, "train-gpu-note")["value"]

    res = resolve("demo", {}, "data.root=/data/demo optim.epochs=3")
    inventory = [G.GPU(0, "Test GPU", 81920, 0, "2"), G.GPU(1, "Test GPU", 81920, 0, "3")]
    shown = launch_preview(res, S.parse_request(["0", "1"], 1, "auto", inventory), inventory, 4)
    assert shown.startswith("CUDA_VISIBLE_DEVICES=2,3 OMP_NUM_THREADS=4 torchrun --standalone --nproc_per_node 2 "
                            "-m flrdf train --config demo")
    assert res.multinode(2, "/shared/runs/x").startswith(
        "torchrun --nnodes $NNODES --rdzv-backend c10d --rdzv-endpoint $HOST:$PORT --rdzv-id x --nproc_per_node 2 "
        "-m flrdf train --config demo")
    assert res.multinode(2, "/shared/runs/x").endswith("--out /shared/runs/x")
