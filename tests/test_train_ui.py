"""Train and Evaluate tabs end to end through gradio_client, against the app served in-process.

A real ``python -m flrdf train`` child process runs the demo config shrunk to
64 px; the test launches it, sees loss points appear, stops it (status stopped,
checkpoint present), resumes it, lets it finish; a job with a broken dataset
root ends failed with its message shown; the Evaluate tab computes its table on
the finished run's checkpoint.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from waits import wait_until

TINY = {"data.image_size": 64, "data.resize": 72, "data.num_workers": 0, "optim.batch_size": 8,
        "runtime.log_every": 1, "runtime.device": "cpu", "runtime.eval_every": 0}


@pytest.fixture(scope="module")
def client(studio):
    from gradio_client import Client

    return Client(studio[0], verbose=False)


def tiny_form(root, **extra) -> dict:
    """Keyword arguments of /launch: the form's fields named by config key (dots -> underscores)."""
    values = {"config": "demo", "data_root": str(root), "model_weights": "", "threads": 1, "name": "e2e",
              "extra": "optim.warmup_steps=0 runtime.seed=1"}
    for k, v in {**TINY, **extra}.items():
        values[k.replace(".", "_")] = v
    return values


def status_of(client, run: str) -> str:
    return client.predict(run, api_name="/run_status")[0]


def wait_for(client, run: str, pattern: str, timeout: float = 120) -> str:
    """Poll the status endpoint until ``pattern`` shows; the wait (scaled, tests/waits.py) only keeps a broken job
    from hanging, and reports the status last shown."""
    shown = [""]

    def seen():
        shown[0] = status_of(client, run)
        return re.search(pattern, shown[0])

    wait_until(seen, timeout, f"{pattern!r} in the status of {run}", lambda: shown[0], 0.3)
    return shown[0]


def loss_points(text: str) -> int:
    m = re.search(r"loss points: (\d+)", text)
    return int(m.group(1)) if m else 0


def test_launch_watch_stop_resume_finish(client, studio):
    _, runs_dir, root = studio
    msg, run = client.predict(**tiny_form(root, **{"optim.epochs": 200}), api_name="/launch")
    assert "Launched" in msg and "model.weights=null" in msg and run
    run_dir = runs_dir / run
    text = wait_for(client, run, r"loss points: [1-9]", 180)
    assert "state: **running**" in text
    n0 = loss_points(text)
    text = wait_for(client, run, rf"loss points: (?!{n0}\b)\d+")  # more points keep coming
    # stop: checkpoint + status 'stopped'
    assert "SIGTERM" in client.predict(run, api_name="/stop")
    text = wait_for(client, run, r"state: \*\*stopped\*\*")
    assert (run_dir / "checkpoints" / "last.pt").is_file() and "Resume continues" in text
    stopped_at = json.loads((run_dir / "status.json").read_text())["step"]
    # resume (shortened so it finishes now) and let it finish
    assert "Resuming" in client.predict(run, f"optim.max_steps={stopped_at + 3}", 1, api_name="/resume")
    text = wait_for(client, run, r"state: \*\*finished\*\*", 300)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == stopped_at + 3
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if "loss_total" in line]
    assert steps == list(range(1, stopped_at + 4))  # no gap, no duplicate across the resume
    assert "final test top-1" in text
    _, table, log_tail = client.predict(run, api_name="/run_status")
    row = next(r for r in table["data"] if r[0] == run)
    assert row[1] == "finished" and row[3] == "demo"
    assert "resumed from" in log_tail


def test_broken_dataset_root_fails_with_message(client, studio):
    _, _, root = studio
    msg, run = client.predict(**tiny_form(root.parent / "no-such-dataset", **{"optim.epochs": 1}),
                              api_name="/launch")
    assert "does not exist" not in msg  # the launch itself works; the job fails
    text = wait_for(client, run, r"state: \*\*failed\*\*")
    assert "error:" in text and "no-such-dataset" in text


def test_evaluate_tab_produces_the_table(client, studio, request):
    _, runs_dir, _ = studio
    runs_dir.mkdir(parents=True, exist_ok=True)
    finished = [p for p in sorted(runs_dir.iterdir()) if (p / "checkpoints" / "last.pt").is_file()
                and json.loads((p / "status.json").read_text())["state"] == "finished"]
    if not finished:  # test_launch_watch_stop_resume_finish did not run (or failed): the session's tiny run
        finished = [shutil.copytree(request.getfixturevalue("tiny_run"), runs_dir / "cli-tiny-ui")]
    msg, folder = client.predict(str(finished[0]), "test", "", ["gradcam", "eigencam"], None, 6,
                                    api_name="/evaluate")
    assert "background" in msg and Path(folder).parent == finished[0] / "eval"
    view = [None]

    def has_table():
        view[0] = client.predict(folder, api_name="/eval_view")
        assert "failed" not in view[0][0], view[0][0]
        return view[0][1] and view[0][1].get("data")

    wait_until(has_table, 300, "the evaluation table", lambda: f"progress: {view[0] and view[0][0]}", 0.5)
    progress, table, summary, *_ = view[0]
    methods = [r[0] for r in table["data"]]
    assert methods[0].startswith("FLRDF") and "Grad-CAM" in methods and methods[-1].startswith("centre")
    assert "Classification top-1" in summary and (Path(folder) / "results.json").is_file()
    # shown again from the saved folder, without recomputation
    mtime = (Path(folder) / "results.json").stat().st_mtime_ns
    again = client.predict(folder, api_name="/eval_view")
    assert again[1]["data"] == table["data"] and (Path(folder) / "results.json").stat().st_mtime_ns == mtime


def test_two_jobs_at_once_survive_an_app_restart(client, studio, tiny_model_file, examples_dir):
    """Two jobs run side by side (own process, own directory); a second app instance over the same runs
    folder - a restarted dashboard - lists them as running and can stop them."""
    from gradio_client import Client

    from conftest import STUDIO_MAX_JOBS, _free_port
    from dashboard.app import build_app, launch
    from dashboard.context import DashboardContext

    _, runs_dir, root = studio
    overrides = " ".join(f"{k}={v}" for k, v in {**TINY, "data.root": root, "model.weights": "null",
                                                 "optim.epochs": 200}.items())
    names = [client.predict("demo", overrides, f"pair{i}", 1, api_name="/launch_config")[1] for i in range(2)]
    assert len(set(names)) == 2
    app = build_app(ctx=DashboardContext.create(tiny_model_file, runs_dir, "cpu", examples_dir,
                                                max_jobs=STUDIO_MAX_JOBS))
    _, url, _ = launch(app, host="127.0.0.1", port=_free_port(), prevent_thread_lock=True, quiet=True)
    try:
        other = Client(url, verbose=False)
        for name in names:
            wait_for(other, name, r"state: \*\*running\*\*.*\n\n.*loss points: [1-9]", 180)
        pids = {json.loads((runs_dir / n / "status.json").read_text())["pid"] for n in names}
        assert len(pids) == 2
        for name in names:
            other.predict(name, api_name="/stop")
        for name in names:
            wait_for(other, name, r"state: \*\*stopped\*\*")
    finally:
        app.close()
