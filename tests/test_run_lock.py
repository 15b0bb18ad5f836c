"""One trainer per run directory (issue 22, finding 4): ``train.lock``, held by a real second process.

The holder is always another process (flock locks belong to open files, so a lock this
process held would prove nothing about two processes); every process a test starts is
killed in its own cleanup.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from conftest import ROOT, run_cli, tiny
from flrdf.config import dump_config, load_config
from flrdf.engine.rundir import LOCK_FILE, RunLocked, run_lock_holder
from waits import communicate, wait_s, wait_until

HOLD = """
import os, sys, time
from flrdf.engine.rundir import hold_run_lock
hold_run_lock(sys.argv[1])
if len(sys.argv) > 2:                      # a forked child, as a DataLoader worker is
    child = os.fork()
    if child == 0:
        time.sleep(600)
        os._exit(0)
    print(child, flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder():
    """start(run_dir, fork=False) -> a process that holds run_dir's lock (and, with fork, has a forked child)."""
    procs = []

    def start(run_dir, fork: bool = False) -> subprocess.Popen:
        argv = [sys.executable, "-c", HOLD, str(run_dir)] + (["fork"] if fork else [])
        proc = subprocess.Popen(argv, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        procs.append(proc)
        wait_until(lambda: run_lock_holder(run_dir) == proc.pid or proc.poll() is not None, 30,
                   "the holder process taking the lock", lambda: f"holder: {run_lock_holder(run_dir)}")
        assert proc.poll() is None, proc.stderr.read()
        return proc

    yield start
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: the holder and any child it forked
        except ProcessLookupError:
            pass
        proc.communicate()


def _run_dir(tmp_path, demo_root):
    """A run directory as a live run leaves it: config, status 'running', metrics so far."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    cfg = load_config("demo", [a for a in tiny(demo_root) if a != "--set"])
    (run / "config.yaml").write_text(dump_config(cfg))
    (run / "status.json").write_text('{"state": "running", "pid": 1}\n')
    (run / "metrics.jsonl").write_text('{"step": 1, "loss_total": 1.0}\n{"step": 2, "loss_total": 0.9}\n')
    return run, cfg


def _files(run):
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != LOCK_FILE}


def test_resume_and_a_fresh_train_refuse_while_another_process_trains(tmp_path, demo_root, holder):
    run, cfg = _run_dir(tmp_path, demo_root)
    before = _files(run)
    proc = holder(run)
    for args in (["train", "--out", str(run), "--resume"],
                 ["train", "--config", "demo", "--out", str(run), *tiny(demo_root)]):
        cli = run_cli(args)
        _, err = communicate(cli, 120, "python -m flrdf " + " ".join(args[:4]))
        assert cli.returncode != 0, err
        assert f"process {proc.pid}" in err and LOCK_FILE in err and "Traceback" not in err, err
        assert _files(run) == before  # nothing written: status, metrics and config of the live run intact

    # the trainer's own lock, past the command's check (another trainer took the run in between)
    from flrdf.engine.trainer import train

    with pytest.raises(RunLocked, match=f"process {proc.pid}") as info:
        train(cfg, run, resume=True)
    assert info.value.pid == proc.pid
    assert _files(run) == before
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(wait_s(10))
    assert run_lock_holder(run) is None  # the kernel dropped the lock with its holder


def test_a_forked_child_does_not_keep_the_run_locked(tmp_path, holder):
    run = tmp_path / "run"
    run.mkdir()
    proc = holder(run, fork=True)
    child = int(proc.stdout.readline())
    proc.kill()  # the trainer dies; its forked worker lives on a moment (as DataLoader workers do)
    proc.wait(wait_s(10))
    wait_until(lambda: run_lock_holder(run) is None, 10, "the lock released with its holder",
               lambda: f"holder {run_lock_holder(run)}, the child alive: {os.path.exists(f'/proc/{child}')}")
    assert os.path.exists(f"/proc/{child}")  # released while the child still ran



def test_a_planted_lock_symlink_is_refused_and_not_followed(tmp_path, demo_root, capsys):
    from flrdf.engine.commands import train_main

    run, target = tmp_path / "run", tmp_path / "elsewhere.txt"
    run.mkdir()
    target.write_text("not yours\n")
    (run / LOCK_FILE).symlink_to(target)
    assert train_main(["--config", "demo", "--out", str(run), *tiny(demo_root)]) == 1
    err = capsys.readouterr().err
    assert f"cannot use {run} as a run directory" in err and "Traceback" not in err, err
    assert target.read_text() == "not yours\n" and not (run / "status.json").exists()
