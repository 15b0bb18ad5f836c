"""Issue 11: a hostile client of the dashboard, through real requests (gradio_client, httpx) on 127.0.0.1.

One app over its own runs directory. Each hole the issue lists has a test: a
negative pid planted through an upload, a foreign process with ``flrdf`` in its
argv, run names that leave runs/, file reads outside runs/, a config name that
points at a text file, a FIFO as checkpoint, and zombies after Stop. Every
process a test starts is killed in its own cleanup; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from conftest import _free_port
from waits import wait_s
from dashboard import jobs, train_form
from flrdf.config import ConfigError
from flrdf.engine.rundir import write_json

SECRET = "SECRET-7f3a9c"   # planted in files outside runs/; must never come back in a response
TINY = {"data.image_size": 64, "data.resize": 72, "data.num_workers": 0, "optim.batch_size": 8,
        "runtime.log_every": 1, "runtime.device": "cpu", "runtime.eval_every": 0, "model.weights": "null"}


def _wait(pred, timeout: float, every: float = 0.2) -> bool:
    """Polls ``pred`` for ``timeout`` s on an idle machine (scaled: tests/waits.py); callers say what was seen."""
    end = time.monotonic() + wait_s(timeout)
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(every)
    return False


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_model_file, examples_dir):
    """(url, client, base): the dashboard over base/runs; base/outside is a folder a client must not reach."""
    from dashboard.app import build_app, launch
    from dashboard.context import DashboardContext
    from flrdf.data.synthetic import make_demo_data

    base = tmp_path_factory.mktemp("sec")
    (base / "runs").mkdir()
    make_demo_data(base / "demo", num_classes=4, train_per_class=8, test_per_class=3, image_size=80, seed=0)
    ctx = DashboardContext.create(tiny_model_file, base / "runs", "cpu", examples_dir)
    blocks = build_app(ctx=ctx)
    _, url, _ = launch(blocks, host="127.0.0.1", port=_free_port(), prevent_thread_lock=True, quiet=True)
    yield url, Client(url, verbose=False), base
    blocks.close()
    for run in (base / "runs").iterdir():
        try:
            jobs.stop_run(run)
        except jobs.JobError:
            pass


@pytest.fixture
def outside(app):
    """base/outside-<n>: a run-looking folder outside runs/ with secrets in its log, stderr and a picture."""
    import numpy as np
    from PIL import Image

    base = app[2]
    folder = base / f"outside-{time.monotonic_ns()}"
    folder.mkdir()
    (folder / "log.txt").write_text(f"{SECRET} log line\n")
    (folder / jobs.STDERR).write_text(f"error: {SECRET} stderr line\n")
    write_json(folder / "status.json", {"state": "failed", "error": SECRET})
    (folder / "config.yaml").write_text(f"name: {SECRET}\n")
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(folder / "secret.png")
    return folder


@pytest.fixture
def sleeper():
    """A process in its own session (setsid): pgid == pid. Killed at the end whatever happens."""
    procs = []

    def start(argv=("sleep", "600"), **kw):
        proc = subprocess.Popen(list(argv), start_new_session=True, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(wait_s(10))


def _alive(proc: subprocess.Popen) -> bool:
    return proc.poll() is None


def _upload(url: str, name: str, data: bytes) -> Path:
    """POST a file to Gradio's upload route; returns where it landed on the server."""
    r = httpx.post(url.rstrip("/") + "/gradio_api/upload", files={"files": (name, data)}, timeout=wait_s(30))
    r.raise_for_status()
    return Path(r.json()[0])


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _no_leak(message: str, *also: str) -> None:
    assert SECRET not in message
    for text in also:
        assert text not in message, text


# ---------------------------------------------------------------- 1. negative pid through an upload
def test_negative_pid_planted_through_an_upload_is_never_signalled(app, sleeper):
    url, client, base = app
    victim = sleeper()
    assert os.getpgid(victim.pid) == victim.pid
    for i, pid in enumerate((-victim.pid, -1)):
        status = json.dumps({"state": "running", "pid": pid}).encode()
        job = json.dumps({"kind": "train", "pid": pid, "start_time": jobs.proc_start_time(victim.pid)}).encode()
        uploaded = _upload(url, "status.json", status).parent
        _upload(url, jobs.JOB_FILE, job)
        names = [str(uploaded), uploaded.name, f"../../{uploaded.parent.name}/{uploaded.name}",
                 os.path.relpath(uploaded, base / "runs")]
        for name in names:
            with pytest.raises(AppError) as info:
                client.predict(name, api_name="/stop")
            _no_leak(str(info.value), str(victim.pid), str(uploaded))
        # the same files planted inside runs/ (as a local user could): refused all the same
        run = base / "runs" / f"planted-{i}"
        run.mkdir()
        (run / "status.json").write_bytes(status)
        (run / jobs.JOB_FILE).write_bytes(job)
        with pytest.raises(AppError, match="not running") as info:
            client.predict(run.name, api_name="/stop")
        _no_leak(str(info.value), str(victim.pid), str(base))
    time.sleep(0.5)
    assert _alive(victim), "the planted negative pid was signalled"


# ---------------------------------------------------------------- 2. a foreign flrdf process
def test_a_foreign_process_with_flrdf_in_argv_is_not_stoppable(app, sleeper, tmp_path):
    _, client, base = app
    run = base / "runs" / "foreign"
    run.mkdir()
    # 'flrdf', 'train' and even '--out <this run>' in its argv, but it is not 'python -m flrdf train'
    code = "import time; time.sleep(600)"
    impostor = sleeper([sys.executable, "-c", code, "-m", "flrdf", "train", "--out", str(run)])
    # a genuine 'python -m flrdf train' - of another run directory (another user's job, say)
    fake = tmp_path / "cwd" / "flrdf"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "__main__.py").write_text("import time\ntime.sleep(600)\n")
    other = sleeper([sys.executable, "-m", "flrdf", "train", "--config", "demo", "--out", str(tmp_path / "theirs")],
                    cwd=fake.parent)
    assert _wait(lambda: all(jobs.proc_start_time(p.pid) for p in (impostor, other)), 10), \
        [(p.pid, p.poll(), jobs.proc_state(p.pid)) for p in (impostor, other)]
    for proc in (impostor, other):
        write_json(run / jobs.JOB_FILE, {"kind": "train", "pid": proc.pid, "argv": [],
                                         "start_time": jobs.proc_start_time(proc.pid)})
        write_json(run / "status.json", {"state": "running", "pid": proc.pid, "host": socket.gethostname()})
        with pytest.raises(AppError, match="not running") as info:
            client.predict("foreign", api_name="/stop")
        _no_leak(str(info.value), str(proc.pid))
        with pytest.raises(AppError):
            client.predict("foreign", "", 1, api_name="/resume")  # no checkpoint: refused, nothing started
    time.sleep(0.5)
    assert _alive(impostor) and _alive(other)


# ---------------------------------------------------------------- 3. run names that leave runs/
@pytest.mark.parametrize("name", ["../x", "../../review/escape", "a/b", "..", "eval", "/tmp/flrdf-abs-run",
                                  "{base}/abs-run", "runs/../x"])
def test_run_names_outside_runs_are_refused_and_nothing_is_created(app, name):
    _, client, base = app
    name = name.format(base=base)
    before = _tree(base)
    overrides = f"data.root={base / 'demo'} optim.epochs=1"
    with pytest.raises(AppError, match="plain name") as info:
        client.predict("demo", overrides, name, 1, api_name="/launch_config")
    _no_leak(str(info.value))
    for api in ("/stop", "/run_status"):
        with pytest.raises(AppError, match="plain name"):
            client.predict(name, api_name=api)
    with pytest.raises(AppError, match="plain name"):
        client.predict(name, "", 1, api_name="/resume")
    assert _tree(base) == before
    assert not Path("/tmp/flrdf-abs-run").exists() and not (base / "abs-run").exists()


def test_evaluate_split_and_source_cannot_leave_runs(app, outside, tiny_model_file):
    _, client, base = app
    before = _tree(base)
    with pytest.raises(AppError, match="split must be a plain name"):
        client.predict(str(tiny_model_file), "../../../../x", "", ["gradcam"], None, 1, api_name="/evaluate")
    for source in (str(outside), str(outside / "checkpoints" / "last.pt"), "/etc/passwd", "../outside"):
        with pytest.raises(AppError, match="checkpoint must be") as info:
            client.predict(source, "test", "", ["gradcam"], None, 1, api_name="/evaluate")
        _no_leak(str(info.value), str(outside))
    assert _tree(base) == before


# ---------------------------------------------------------------- 4. file reads outside runs/
def test_run_status_outside_runs_returns_no_contents(app, outside):
    _, client, base = app
    link = base / "runs" / "link-out"
    link.symlink_to(outside, target_is_directory=True)  # a symlink that leaves the runs directory
    for name in (str(outside), f"../{outside.name}", "link-out"):
        with pytest.raises(AppError, match="plain name") as info:
            client.predict(name, api_name="/run_status")
        _no_leak(str(info.value), str(outside))
    status, _table, log = client.predict("no-such-run", api_name="/run_status")
    assert "no such run" in status and not log


def test_eval_view_outside_runs_returns_no_contents(app, outside):
    from flrdf.engine.loc_report import FORMAT

    _, client, base = app
    results = {"format": FORMAT, "rows": [], "n_box": 1, "tau": 0.5, "source": "x", "split": "test",
               "classification": {k: None for k in ("top1", "top1_raw", "top1_object", "top1_jigsaw", "top5")},
               "worst": [{"png": str(outside / "secret.png"), "iou": 0.1, "file": "a.jpg"},
                         {"png": "../../../" + outside.name + "/secret.png", "iou": 0.2, "file": "b.jpg"}]}
    write_json(outside / "results.json", results)
    write_json(outside / "progress.json", {"state": "finished", "done": 1, "total": 1})
    for folder in (str(outside), f"../{outside.name}", f"x/eval/../../../{outside.name}"):
        with pytest.raises(AppError, match="result folder must be") as info:
            client.predict(folder, api_name="/eval_view")
        _no_leak(str(info.value), str(outside))
    # a result folder inside runs/ whose results.json names pictures outside it: they are not read
    inside = base / "runs" / "eval" / "planted"
    inside.mkdir(parents=True)
    write_json(inside / "results.json", results)
    write_json(inside / "progress.json", {"state": "finished", "done": 1, "total": 1})
    progress, _table, _summary, _bar, _sweep, gallery, files = client.predict(str(inside), api_name="/eval_view")
    assert "finished" in progress and not gallery


# ---------------------------------------------------------------- config name pointing at a text file
def test_config_name_pointing_at_a_text_file_echoes_none_of_it(app, outside):
    _, client, base = app
    text = outside / "notes.txt"
    text.write_text(f"{SECRET}: first line\n  bad: [indent\n")
    yaml_out = outside / "cfg.yaml"
    yaml_out.write_text(f"{SECRET}: [unclosed\n")
    inside = base / "runs" / "broken.yaml"
    inside.write_text(f"model:\n  {SECRET}: [unclosed\n")
    before = _tree(base / "runs")
    for name, message in ((str(text), "config must be"), (str(yaml_out), "config must be"),
                          (f"../{outside.name}/cfg.yaml", "config must be"), (str(inside), "not valid YAML"),
                          ("broken.yaml", "not valid YAML"), ("/nonexistent/x.yaml", "config must be")):
        with pytest.raises(AppError, match=message) as info:
            client.predict(name, "", "", 1, api_name="/launch_config")
        _no_leak(str(info.value), str(outside))
    # a config under runs/ whose base: points outside is refused too
    (base / "runs" / "based.yaml").write_text(f"base: {yaml_out}\n")
    with pytest.raises(AppError, match="config must be") as info:
        client.predict("based.yaml", "", "", 1, api_name="/launch_config")
    _no_leak(str(info.value))
    assert _tree(base / "runs") - before == {"based.yaml"}  # nothing launched


# ---------------------------------------------------------------- 5. FIFO checkpoint
@pytest.fixture
def served(tmp_path, tiny_model_file):
    """``python app.py`` in its own process on a loopback port: a server that blocks cannot block this test
    (a native open() may hold the GIL). Returns (url, runs_dir); the server is killed at the end."""
    runs = tmp_path / "runs"
    runs.mkdir()
    port = _free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "app.py", "--checkpoint", str(tiny_model_file), "--runs-dir", str(runs),
                             "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--threads", "1"],
                            cwd=Path(__file__).resolve().parent.parent, env=env, start_new_session=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/"

    def up() -> bool:
        try:
            return httpx.get(url + "gradio_api/info", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        assert _wait(lambda: up() or proc.poll() is not None, 180, 0.5) and proc.poll() is None, \
            (proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "app.py did not answer (still running)")
        yield url, runs
    finally:
        proc.terminate()
        try:
            proc.wait(wait_s(20))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(wait_s(10))


def test_fifo_checkpoint_is_refused_and_the_server_keeps_answering(served, examples_dir):
    from gradio_client import handle_file

    url, runs = served
    fifo = runs / "x.safetensors"
    os.mkfifo(fifo)
    result: dict = {}

    def call():
        try:
            Client(url, verbose=False).predict(
                image=handle_file(str(examples_dir / "example_0.jpg")), checkpoint=str(fifo), tau=0.5, n=4,
                target="predicted", cam_methods=["gradcam"], seed=0, api_name="/inspect")
            result["ok"] = True
        except Exception as exc:  # noqa: BLE001 - checked below
            result["error"] = exc

    t = threading.Thread(target=call, daemon=True)
    t.start()
    try:
        t.join(wait_s(90))
        assert not t.is_alive(), "the FIFO checkpoint request is still hanging"
        info = httpx.get(url + "gradio_api/info", timeout=wait_s(30))
        assert info.status_code == 200 and "/inspect" in info.json()["named_endpoints"]
        assert isinstance(result.get("error"), AppError) and "not a regular file" in str(result["error"])
        _no_leak(str(result["error"]), str(runs))
    finally:
        if t.is_alive():  # unblock a regressed open() in the server so it can be stopped
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass


# ---------------------------------------------------------------- issue 22: the dataset root of /evaluate and /analyze
def test_evaluate_and_analyze_read_datasets_only_under_the_allowed_roots(app, outside, tiny_model_file):
    """A folder in dataset layout outside data/, runs/ and --allow-dir is refused as the Data tab refuses it, before
    any job starts; one under runs/ is accepted."""
    import shutil

    _, client, base = app
    model = base / "runs" / "root-check.safetensors"
    shutil.copy(tiny_model_file, model)
    (outside / "images.txt").write_text(f"1 {SECRET}/a.jpg\n")  # looks like a dataset, holds a secret
    before = _tree(base / "runs")
    for root in (str(outside), "/etc", f"{base}/runs/../{outside.name}", "../" * 12 + "etc"):
        for api, args in (("/evaluate", (str(model), "test", root, ["gradcam"], None, 1)),
                          ("/analyze", (str(model), "test", root, ["gradcam"], 1, 0))):
            with pytest.raises(AppError, match="dataset root must be a folder under data/, runs/") as info:
                client.predict(*args, api_name=api)
            _no_leak(str(info.value), str(outside), str(base))
    assert _tree(base / "runs") == before  # refused before a result folder or a job exists
    inside = base / "runs" / "data-copy"
    shutil.copytree(base / "demo", inside)
    msg, folder = client.predict(str(model), "test", str(inside), ["gradcam"], None, 1, api_name="/evaluate")
    assert "background" in msg and Path(folder).parent == base / "runs" / "eval"
    job = json.loads((Path(folder) / jobs.JOB_FILE).read_text())
    assert f"data.root={inside}" in job["argv"]
    try:
        jobs.signal_job(Path(folder), signal.SIGTERM, jobs.JOB_COMMANDS)
    except jobs.JobError:
        pass  # already finished


# ---------------------------------------------------------------- 6. zombies after Stop
def test_a_stopped_job_is_reaped(app):
    _, client, base = app
    overrides = " ".join(f"{k}={v}" for k, v in {**TINY, "data.root": base / "demo", "optim.epochs": 200}.items())
    _, run = client.predict("demo", overrides, "reap", 1, api_name="/launch_config")
    run_dir = base / "runs" / run
    pid = json.loads((run_dir / jobs.JOB_FILE).read_text())["pid"]
    try:
        shown = lambda: client.predict(run, api_name="/run_status")[0]  # noqa: E731
        assert _wait(lambda: "state: **running**" in shown(), 120, 0.5), shown()
        assert "SIGTERM" in client.predict(run, api_name="/stop")
        assert _wait(lambda: "state: **stopped**" in shown(), 60, 0.5), shown()
        # gone from /proc: exited and collected - not a zombie ('Z') waiting for the app to wait() on it
        assert _wait(lambda: jobs.proc_state(pid) is None, 30), f"state {jobs.proc_state(pid)!r} after Stop"
    finally:
        if jobs.proc_state(pid) not in (None, "Z"):
            os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------- minor: --set and error texts
def test_set_parsing_in_the_form_and_the_cli(app, capsys):
    _, client, base = app
    assert train_form.parse_extra("--set optim.epochs=2 runtime.seed=3") == ["optim.epochs=2", "runtime.seed=3"]
    assert train_form.parse_extra("--set=a.b=1 --set c.d=2 e.f=3") == ["a.b=1", "c.d=2", "e.f=3"]
    for bad, message in (("--set", "must be followed"), ("optim.epochs=2 --set", "must be followed"),
                         ("--set --set a.b=1", "must be followed"), ("optim.epochs", "key=value"),
                         ("--set epochs", "key=value"), ("=3", "dotted names")):
        with pytest.raises(ConfigError, match=message):
            train_form.parse_extra(bad)
    before = _tree(base / "runs")
    with pytest.raises(AppError, match="--set"):
        client.predict("demo", f"data.root={base / 'demo'} --set", "setcheck", 1, api_name="/launch_config")
    assert _tree(base / "runs") == before  # refused, not launched with the defaults

    from flrdf.engine.commands import train_main

    for argv, message in ((["--set"], "expected at least one argument"), (["--set", "epochs"], "key=value")):
        with pytest.raises(SystemExit):
            train_main(["--config", "demo", *argv])
        assert message in capsys.readouterr().err
    # several pairs after one --set reach the config (it then stops at the empty data.root, before training)
    assert train_main(["--config", "demo", "--set", "optim.epochs=3", "data.root=", "--set", "runtime.seed=4"]) == 2
    assert "data.root is empty" in capsys.readouterr().err


def test_error_texts_do_not_reveal_pids_home_or_existence(app, outside):
    _, client, _ = app
    messages = []
    for path in (outside / "secret.png", outside / "missing.pt"):  # one exists, one does not
        with pytest.raises(AppError) as info:
            client.predict(str(path), "test", "", ["gradcam"], None, 1, api_name="/evaluate")
        messages.append(str(info.value))
    assert messages[0] == messages[1]  # the same refusal whether or not the path exists
    for m in messages:
        _no_leak(m, str(outside), str(Path.home()) + "/", str(os.getpid()))
