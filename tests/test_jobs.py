"""dashboard.jobs / runs / train_form: child processes, run states read from files, the job form."""

import json
import os
import signal
import subprocess
import sys

import pytest

from dashboard import jobs, runs, train_form
from flrdf.config import ConfigError
from flrdf.engine.rundir import write_json
from waits import file_tail, wait_s, wait_until


def test_auto_threads():
    assert jobs.auto_threads(0, 2) == 2 and jobs.auto_threads(1, 2) == 1 and jobs.auto_threads(5, 2) == 1
    assert jobs.auto_threads(1, 16) == 8


def test_spawn_new_session_env_and_output_files(tmp_path):
    code = "import os, sys, time; print(os.environ['OMP_NUM_THREADS'], flush=True); time.sleep(600)"
    proc = jobs.spawn([sys.executable, "-c", code, "flrdf"], tmp_path, 3, "test")
    try:
        assert os.getsid(proc.pid) == proc.pid  # own session: survives the dashboard
        job = json.loads((tmp_path / jobs.JOB_FILE).read_text())
        assert job["pid"] == proc.pid and job["threads"] == 3 and job["argv"][-1] == "flrdf"
        assert job["start_time"] == jobs.proc_start_time(proc.pid) > 0
        wait_until(lambda: "3\n" in (tmp_path / jobs.STDOUT).read_text(), 60, "the child's first line",
                   lambda: file_tail(tmp_path / jobs.STDOUT) + file_tail(tmp_path / jobs.STDERR))
        # 'flrdf' in argv is not enough: the command line is not 'python -m flrdf train ... --out <folder>'
        assert jobs.owned_pid(tmp_path) is None and runs.run_state(tmp_path)["state"] != "starting"
        with pytest.raises(jobs.JobError, match="not running"):
            jobs.signal_job(tmp_path)
        assert proc.poll() is None  # not signalled
    finally:
        proc.kill()
    wait_until(lambda: proc.pid not in jobs._children, 10, "the child reaped by its waiter thread",
               lambda: f"state {jobs.proc_state(proc.pid)!r}")
    assert jobs.proc_state(proc.pid) is None  # no zombie left


def test_job_identity_pid_start_time_and_out(fake_flrdf_cwd):
    run = fake_flrdf_cwd / "runs" / "r1"
    other = fake_flrdf_cwd / "runs" / "r2"
    proc = jobs.spawn(jobs.python_argv("train", "--config", "demo", "--out", str(run)), run, 1, "train")
    try:
        wait_until(lambda: jobs.owned_pid(run) == proc.pid, 10, "the job owned by its folder",
                   lambda: f"state {jobs.proc_state(proc.pid)!r}, argv {jobs.proc_cmdline(proc.pid)}")
        assert jobs.job_alive(run)
        # the same process seen from another folder's job.json: its --out is not that folder
        other.mkdir()
        write_json(other / jobs.JOB_FILE, dict(json.loads((run / jobs.JOB_FILE).read_text())))
        assert jobs.owned_pid(other) is None
        with pytest.raises(jobs.JobError, match="not running"):
            jobs.stop_run(other)
        # a recorded start time that differs (the pid was reused by another process): refused
        job = json.loads((run / jobs.JOB_FILE).read_text())
        write_json(run / jobs.JOB_FILE, dict(job, start_time=job["start_time"] - 1))
        assert jobs.owned_pid(run) is None
        for bad in (-proc.pid, -1, 0, str(proc.pid), True, 2**40):
            write_json(run / jobs.JOB_FILE, dict(job, pid=bad))
            assert jobs.owned_pid(run) is None, bad
        write_json(run / jobs.JOB_FILE, job)
        assert proc.poll() is None  # nothing above signalled it
        assert jobs.stop_run(run) == proc.pid
        assert proc.wait(wait_s(10)) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    wait_until(lambda: jobs.proc_state(proc.pid) is None, 10, "the stopped job reaped (no zombie)",
               lambda: f"state {jobs.proc_state(proc.pid)!r}")
    with pytest.raises(jobs.JobError, match="not running"):
        jobs.stop_run(run)


def _trainer(argv_head: list[str], cwd, out_args: list[str], demo_root) -> subprocess.Popen:
    """A real training process of the tiny demo config (200 epochs: it runs until killed)."""
    from conftest import ROOT, tiny

    cwd.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    argv = [*argv_head, "train", "--config", "demo", *out_args, *tiny(demo_root, **{"optim.epochs": 200})]
    return subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)


def test_resume_refuses_a_live_run_however_it_was_started(tmp_path, demo_root):
    """The runs Resume's old command-line guard missed (finding 4): started as ``python -u -m flrdf train``
    (what torchrun's workers run), without --out (the default runs/<name>-<time>), with a relative --out."""
    py = sys.executable
    started = {
        "python -u": (_trainer([py, "-u", "-m", "flrdf"], tmp_path / "a", ["--out", str(tmp_path / "a" / "run")],
                               demo_root), lambda: tmp_path / "a" / "run"),
        "no --out": (_trainer([py, "-m", "flrdf"], tmp_path / "b", [], demo_root),
                     lambda: next(iter(sorted((tmp_path / "b" / "runs").glob("demo-*"))), tmp_path / "b" / "none")),
        "relative --out": (_trainer([py, "-m", "flrdf"], tmp_path / "c", ["--out", "rel/run"], demo_root),
                           lambda: tmp_path / "c" / "rel" / "run"),
    }
    spawned = []
    try:
        for how, (proc, where) in started.items():
            # live, holding its lock, and resumable by every other test: config and a checkpoint written
            wait_until(lambda: (where() / "checkpoints" / "last.pt").is_file() or proc.poll() is not None, 300,
                       f"the first checkpoint of the run started with {how}",
                       lambda: file_tail(where() / "log.txt") + "\n" + file_tail(where() / "status.json"))
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            run = where()
            assert json.loads((run / "status.json").read_text())["state"] == "running"
            try:
                pid = jobs.resume_train(run, [], 1)
            except jobs.JobError as exc:
                assert "still running" in str(exc) and str(proc.pid) not in str(exc), (how, str(exc))
            else:
                spawned.append(pid)
                pytest.fail(f"Resume started a second trainer of the live run started with {how}")
            assert not (run / jobs.JOB_FILE).exists()  # nothing was launched
            assert proc.poll() is None
    finally:
        for proc, _ in started.values():
            if proc.poll() is None:
                proc.kill()
            proc.communicate()
        for pid in spawned:
            if jobs.proc_state(pid) not in (None, "Z"):
                os.kill(pid, signal.SIGKILL)
    # once the trainer is gone, Resume starts one (whose own lock then guards the run)
    run = started["relative --out"][1]()
    pid = jobs.resume_train(run, ["optim.epochs=1"], 1)
    try:
        wait_until(lambda: jobs.proc_state(pid) is None, 300, "the resumed job to finish",
                   lambda: file_tail(run / jobs.STDERR) + "\n" + file_tail(run / "status.json"))
        assert json.loads((run / "status.json").read_text())["state"] == "finished", file_tail(run / jobs.STDERR)
    finally:
        if jobs.proc_state(pid) not in (None, "Z"):
            os.kill(pid, signal.SIGKILL)


# Stop's identity rule for jobs this dashboard started (``owned_pid``); Resume's guard is the lock (above)
@pytest.mark.parametrize("argv, ok", [
    (["/usr/bin/python3", "-m", "flrdf", "train", "--out", "{run}"], True),
    (["python", "-m", "flrdf", "loc-eval", "--run", "x", "--out={run}"], True),
    (["python", "-m", "flrdf", "train", "--out", "{run}/../r1"], True),
    (["python", "-m", "flrdf", "train", "--out", "{run}2"], False),
    (["python", "-m", "flrdf", "train"], False),
    (["python", "-m", "flrdf", "train", "--out", "{run}", "--out", "/elsewhere"], False),
    (["python", "-m", "flrdf", "predict", "--out", "{run}"], False),
    (["python", "-c", "flrdf", "train", "--out", "{run}"], False),
    (["sleep", "-m", "flrdf", "train", "--out", "{run}"], False),
    (["python", "flrdf", "-m", "train", "--out", "{run}"], False),
    # the torchrun form the scheduler launches (dashboard.scheduler): the launcher's own options, then -m flrdf
    (["python3", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "flrdf", "train",
      "--out", "{run}"], True),
    (["python3", "-m", "torch.distributed.run", "--nnodes=1", "--rdzv-endpoint", "h:1", "-m", "flrdf", "train",
      "--out", "{run}"], True),
    (["python3", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "flrdf", "train",
      "--out", "{run}2"], False),
    (["python3", "-m", "torch.distributed.run", "--standalone", "other.py", "-m", "flrdf", "train",
      "--out", "{run}"], False),
    (["python3", "-m", "torch.distributed.run", "--no-python", "-m", "flrdf", "train", "--out", "{run}"], False),
])
def test_job_cmdline_rule(tmp_path, argv, ok):
    run = tmp_path / "r1"
    run.mkdir()
    assert jobs.is_job_cmdline([a.replace("{run}", str(run)) for a in argv], run) is ok


def test_run_states_from_files(tmp_path):
    # died before writing a status: failed, with the CLI's error line from stderr
    dead = tmp_path / "dead"
    dead.mkdir()
    write_json(dead / jobs.JOB_FILE, {"pid": 999_999_9, "argv": []})
    (dead / jobs.STDERR).write_text("===== x\nusage: ...\nerror: data.root is empty: pass --set data.root=...\n")
    st = runs.run_state(dead)
    assert st["state"] == "failed" and st["error"].startswith("error: data.root is empty")
    # status 'running' but the process is gone: failed (killed)
    killed = tmp_path / "killed"
    killed.mkdir()
    write_json(killed / "status.json", {"state": "running", "pid": 999_999_9, "host": runs.HOST})
    assert runs.run_state(killed)["state"] == "failed"
    # copied from another machine: cannot be checked
    other = tmp_path / "other"
    other.mkdir()
    write_json(other / "status.json", {"state": "running", "pid": 1, "host": "gpu-node-7"})
    st = runs.run_state(other)
    assert st["state"] == "unknown" and "gpu-node-7" in st["error"]
    # finished run with metrics: the summary row
    done = tmp_path / "done"
    done.mkdir()
    write_json(done / "status.json", {"state": "finished", "config": "demo", "dataset": "demo", "step": 8,
                                      "total_steps": 8, "final": {"top1": 0.25, "loc_acc": 0.5}})
    (done / "metrics.jsonl").write_text(json.dumps({"step": 8, "loss_total": 1.23456}) + "\n"
                                        + json.dumps({"step": 8, "split": "test", "top1": 0.25}) + "\n")
    (tmp_path / "not-a-run").mkdir()
    listed = {p.name for p in runs.list_runs(tmp_path)}
    assert listed == {"dead", "killed", "other", "done"}
    row = runs.summary(done)
    assert row["state"] == "finished" and row["step"] == "8/8" and row["loss"] == 1.2346
    assert row["top1"] == 25.0 and row["loc acc"] == 50.0


def test_form_resolves_to_minimal_overrides():
    values = train_form.defaults("demo")
    values.update({"optim.epochs": 3, "data.root": "/data/demo set"})
    res = train_form.resolve("demo", values, "runtime.seed=5")
    assert "optim.epochs=3" in res.overrides and "runtime.seed=5" in res.overrides
    assert "data.root=/data/demo set" in res.overrides
    assert len([o for o in res.overrides if o.startswith("optim.")]) == 1  # unchanged fields are not repeated
    # the demo's stand-in backbone is absent on a fresh clone: weights=null, shown in the command
    from pathlib import Path

    if not Path("data/demo-backbone.pth").exists():
        assert "model.weights=null" in res.overrides and any("not found" in n for n in res.notes)
    assert res.cfg.optim.epochs == 3 and res.cfg.runtime.seed == 5
    cmd = res.command(1)
    assert cmd.startswith("OMP_NUM_THREADS=1 python -m flrdf train --config demo") and "'data.root=/data/demo set'" in cmd
    assert res.torchrun().startswith("torchrun --standalone --nproc_per_node $NGPUS -m flrdf train")
    values["model.jigsaw_n"] = 5  # does not tile 112 px
    with pytest.raises(ConfigError, match="jigsaw_n"):
        train_form.resolve("demo", values)


@pytest.mark.parametrize("value", ["data/x", "", "null", "true", "1e-3", "a b", None, 3, 0.5, False])
def test_yaml_scalar_round_trips(value):
    import yaml

    text = train_form.yaml_scalar(value)
    assert (yaml.safe_load(text) if text.strip() else "") == value
