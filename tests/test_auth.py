"""Issue 23, items 1-2: logins and viewers.

Pure parts directly (hashes, the auth file, roles, when a login is required); ``python -m flrdf
hash-password`` and ``python app.py`` as processes; and one ``python app.py`` with ``--auth`` (an
editor) and ``--auth-file`` (a viewer) on a loopback port, driven through gradio_client and, once,
through Gradio's login page in headless Chromium. No test binds anything but 127.0.0.1: the
non-loopback refusal is checked on app.py's exit before it binds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import gradio as gr
import httpx
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError, AuthenticationError

from conftest import _free_port
from dashboard import access, jobs
from dashboard.context import DashboardContext
from flrdf.auth import (EDITOR, PBKDF2_ITERATIONS, VIEWER, AuthError, Login, Logins, hash_password, is_loopback,
                        parse_auth_line, parse_cli_login, read_auth_file, serving_check, verify_password)
from waits import communicate, run_command, see, see_function, wait_until

ROOT = Path(__file__).resolve().parents[1]
EDITOR_PW, VIEWER_PW = "alice-pw-4f1e", "bob-pw-9c2d"
FEW = 1000   # PBKDF2 iterations for test lines: the cost is recorded per line, so logins stay quick here


# ---------------------------------------------------------------- hashes and the auth file
@pytest.mark.parametrize("scheme", ["pbkdf2_sha256", "scrypt"])
def test_a_hash_verifies_its_password_only(scheme):
    encoded = hash_password("correct horse", scheme, iterations=FEW)
    assert encoded.startswith(scheme + "$")
    assert verify_password("correct horse", encoded)
    assert not verify_password("correct horse ", encoded) and not verify_password("", encoded)
    assert hash_password("correct horse", scheme, iterations=FEW) != encoded   # a fresh salt each time


def test_auth_file_lines_roles_and_comments(tmp_path):
    f = tmp_path / "users"
    f.write_text(f"# lab logins\n\nalice:{hash_password('a', iterations=FEW)}\n"
                 f"bob:{hash_password('b', iterations=FEW)}:viewer\ncarol:{hash_password('c', 'scrypt')}:editor\n")
    logins = read_auth_file(f)
    assert [(x.user, x.role) for x in logins] == [("alice", EDITOR), ("bob", VIEWER), ("carol", EDITOR)]
    table = Logins(logins)
    assert table.check("bob", "b") and not table.check("bob", "a") and not table.check("nobody", "b")
    assert table.check("carol", "c")


@pytest.mark.parametrize("line, message", [
    ("alice", "expected user:hash"),
    ("alice:pbkdf2_sha256$1000$00ff$zz", "salt must be"),
    ("alice:pbkdf2_sha256$1000$" + "ab" * 16 + "$zz", "hash must be hexadecimal"),
    ("alice:pbkdf2_sha256$many$" + "ab" * 16 + "$" + "cd" * 32, "iterations must be"),
    ("alice:md5$abc", "the hash must start with pbkdf2_sha256\\$ or scrypt\\$"),
    ("alice:scrypt$1000$8$1$" + "ab" * 16 + "$" + "cd" * 32, "N must be a power of 2"),
    ("alice:{good}:admin", "role must be editor or viewer"),
    ("al ice:{good}", "a user name is"),
    ("alice:{good}:viewer:x", "expected user:hash"),
])
def test_a_malformed_auth_file_line_is_named_by_its_number(tmp_path, line, message):
    good = hash_password("pw", iterations=FEW)
    f = tmp_path / "users"
    f.write_text(f"# comment\nzed:{good}\n{line.format(good=good)}\n")
    with pytest.raises(AuthError, match=re.escape(f"auth file {f}, line 3: ") + message):
        read_auth_file(f)


def test_auth_file_duplicates_empty_and_missing(tmp_path):
    good = hash_password("pw", iterations=FEW)
    f = tmp_path / "users"
    f.write_text(f"alice:{good}\nbob:{good}\nalice:{good}:viewer\n")
    with pytest.raises(AuthError, match="line 3: user 'alice' is already on line 1"):
        read_auth_file(f)
    f.write_text("# nobody yet\n")
    with pytest.raises(AuthError, match="no user:hash lines"):
        read_auth_file(f)
    with pytest.raises(AuthError, match="cannot read it"):
        read_auth_file(tmp_path / "absent")


def test_command_line_logins_never_echo_the_password():
    for text in ("alice", "alice:", ":pw-7c1", "bad user:pw-7c1"):
        with pytest.raises(AuthError) as info:
            parse_cli_login(text)
        assert "pw-7c1" not in str(info.value)
    login = parse_cli_login("alice:pa:ss")   # everything after the first ':' is the password
    assert login.user == "alice" and login.role == EDITOR and verify_password("pa:ss", login.encoded)


def test_hash_password_command_round_trips_with_the_verifier():
    cmd = [sys.executable, "-m", "flrdf", "hash-password", "--user", "carol", "--role", "viewer"]
    done = run_command(cmd, 60, "hash-password", input="s3cret pass\n", cwd=ROOT)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert len(done.stdout.strip().splitlines()) == 1 and "s3cret" not in line
    login = parse_auth_line(line)
    assert (login.user, login.role) == ("carol", VIEWER) and f"${PBKDF2_ITERATIONS}$" in login.encoded
    assert verify_password("s3cret pass", login.encoded) and not verify_password("s3cret", login.encoded)
    done = run_command([*cmd[:-2], "--scheme", "scrypt"], 60, "hash-password scrypt", input="x\n", cwd=ROOT)
    assert done.returncode == 0 and verify_password("x", parse_auth_line(done.stdout.strip()).encoded)
    done = run_command(cmd, 60, "hash-password with an empty password", input="\n", cwd=ROOT)
    assert done.returncode == 2 and "the password is empty" in done.stderr and not done.stdout
    done = run_command(cmd[:4], 60, "hash-password without --user", input="pw\n", cwd=ROOT)
    assert done.returncode == 2 and "give --user NAME" in done.stderr and not done.stdout
    assert "hash-password" in run_command([sys.executable, "-m", "flrdf"], 60, "usage", cwd=ROOT).stdout


# ---------------------------------------------------------------- roles
def test_roles_of_logins_read_only_and_no_login():
    bob = Login("bob", hash_password("b", iterations=FEW), VIEWER)
    alice = Login("alice", hash_password("a", iterations=FEW))
    table = Logins([alice, bob])
    assert [table.role(u) for u in ("alice", "bob", "mallory", None)] == [EDITOR, VIEWER, VIEWER, VIEWER]
    assert Logins([alice, bob], read_only=True).role("alice") == VIEWER
    assert Logins().role(None) == EDITOR and Logins(read_only=True).role(None) == VIEWER
    with pytest.raises(AuthError, match="given twice"):
        Logins([alice, Login("alice", bob.encoded)])


def test_require_editor_refuses_viewers_and_read_only(tmp_path):
    ctx = DashboardContext(runs_dir=tmp_path)
    access.require_editor(ctx, None)                    # no login: the local operator
    access.require_editor(ctx, gr.Request(username=None))
    ctx.logins = Logins([Login("alice", hash_password("a", iterations=FEW)),
                         Login("bob", hash_password("b", iterations=FEW), VIEWER)])
    access.require_editor(ctx, gr.Request(username="alice"))
    for user in ("bob", "mallory", None):
        with pytest.raises(gr.Error, match="Read-only"):
            access.require_editor(ctx, gr.Request(username=user))
    ctx.logins = Logins(read_only=True)
    with pytest.raises(gr.Error, match="--read-only"):
        access.require_editor(ctx, None)


def test_page_updates_disable_the_editor_buttons_for_viewers_only(tmp_path):
    ctx = DashboardContext(runs_dir=tmp_path, logins=Logins([Login("bob", hash_password("b", iterations=FEW), VIEWER),
                                                              Login("alice", hash_password("a", iterations=FEW))]))
    n = len(access.EDITOR_CONTROLS)
    note, *buttons = access.page_updates(ctx, gr.Request(username="bob"), n)
    assert note["visible"] is True and "you are a viewer" in note["value"]
    assert len(buttons) == n and all(b["interactive"] is False for b in buttons)
    assert access.page_updates(ctx, gr.Request(username="alice"), n) == [gr.skip()] * (n + 1)


# ---------------------------------------------------------------- when a login is required
@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.4.5.6", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("LOCALHOST", True), ("0.0.0.0", False), ("::", False), ("192.168.1.20", False), ("10.0.0.1", False),
    ("gpu-server.lab", False), ("", False), ("128.0.0.1", False),
])
def test_loopback_hosts(host, loopback):
    assert is_loopback(host) is loopback


def test_serving_beyond_loopback_needs_a_login_or_no_auth():
    error, warning = serving_check("0.0.0.0", False, login_required=False, no_auth=False)
    assert "--auth-file" in error and "--no-auth" in error and "--host 0.0.0.0" in error and warning is None
    error, _ = serving_check("127.0.0.1", True, login_required=False, no_auth=False)
    assert "--share" in error and "--auth-file" in error
    assert serving_check("0.0.0.0", True, login_required=True, no_auth=False) == (None, None)
    assert serving_check("127.0.0.1", False, login_required=False, no_auth=False) == (None, None)
    error, warning = serving_check("0.0.0.0", False, login_required=False, no_auth=True)
    assert error is None and warning.startswith("WARNING: serving on --host 0.0.0.0 without a login (--no-auth)")
    error, warning = serving_check("127.0.0.1", True, login_required=False, no_auth=True)
    assert error is None and "--share" in warning
    error, _ = serving_check("0.0.0.0", False, login_required=True, no_auth=True)
    assert "--no-auth contradicts" in error


@pytest.mark.parametrize("args, message", [
    (["--host", "0.0.0.0"], "refusing to serve on --host 0.0.0.0 without a login"),
    (["--share"], "refusing to serve on --share"),
    (["--host", "0.0.0.0", "--auth", "alice:pw", "--no-auth"], "--no-auth contradicts"),
    (["--auth", "alice"], "--auth takes USER:PASSWORD"),
    (["--auth-file", "{bad}"], "line 2: role must be editor or viewer"),
])
def test_app_refuses_to_start_before_binding(tmp_path, args, message):
    bad = tmp_path / "users"
    bad.write_text(f"alice:{hash_password('a', iterations=FEW)}\nbob:{hash_password('b', iterations=FEW)}:root\n")
    port = _free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False")
    done = run_command([sys.executable, "app.py", "--port", str(port), *[a.format(bad=bad) for a in args]], 60,
                       "app.py with a refused setting", cwd=ROOT, env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 2, done.stderr[-2000:]
    assert message in done.stderr and "Running on" not in done.stdout + done.stderr
    if "refusing" in message:
        assert "--auth-file" in done.stderr and "--no-auth" in done.stderr


# ---------------------------------------------------------------- served: python app.py --auth --auth-file
@pytest.fixture(scope="module")
def locked(tmp_path_factory, tiny_model_file):
    """``python app.py`` on a loopback port with an editor (``--auth alice:...``) and a viewer (bob, in
    ``--auth-file``); yields (url, runs_dir). Killed at the end."""
    base = tmp_path_factory.mktemp("auth")
    runs = base / "runs"
    runs.mkdir()
    users = base / "users"
    users.write_text(f"# viewers\nbob:{hash_password(VIEWER_PW, iterations=FEW)}:viewer\n")
    port = _free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "app.py", "--checkpoint", str(tiny_model_file), "--runs-dir", str(runs),
                             "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--threads", "1",
                             "--auth", f"alice:{EDITOR_PW}", "--auth-file", str(users)],
                            cwd=ROOT, env=env, start_new_session=True, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/"

    def up() -> bool:
        try:
            return httpx.get(url + "gradio_api/info", timeout=5).status_code in (200, 401)
        except httpx.HTTPError:
            return False

    try:
        wait_until(lambda: up() or proc.poll() is not None, 180, "app.py answering",
                   lambda: "app.py is still starting" if proc.poll() is None else "")
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        yield url, runs
    finally:
        proc.terminate()
        try:
            communicate(proc, 20, "app.py")
        except AssertionError:
            pass
        for run in runs.iterdir():   # only when a check regressed: a job a viewer started is stopped
            try:
                jobs.stop_run(run)
            except jobs.JobError:
                pass


def test_without_credentials_nothing_is_served(locked):
    url, runs = locked
    with pytest.raises(AuthenticationError):
        Client(url, verbose=False)
    for who in (("alice", VIEWER_PW), ("bob", EDITOR_PW), ("mallory", VIEWER_PW)):
        with pytest.raises(ValueError, match="Could not login"):
            Client(url, auth=who, verbose=False)
    # the HTTP API itself, not only the page's config, is closed without a login
    r = httpx.post(url + "gradio_api/call/stop", json={"data": ["x"]}, timeout=30)
    assert r.status_code == 401
    assert httpx.get(url + "gradio_api/info", timeout=30).status_code == 401
    assert not any(runs.iterdir())


def test_a_viewer_is_served_inspect_and_run_status(locked, examples_dir):
    url, _ = locked
    client = Client(url, auth=("bob", VIEWER_PW), verbose=False)
    out = client.predict(image=handle_file(str(examples_dir / "example_0.jpg")), tau=0.5, n=4, target="predicted",
                         cam_methods=["gradcam"], seed=0, api_name="/inspect")
    assert out[0].startswith("**Prediction:**")
    status, _table, _log = client.predict("", api_name="/run_status")
    assert status.startswith("No run selected")


def test_a_viewer_cannot_start_stop_resume_or_evaluate(locked, tiny_model_file):
    url, runs = locked
    client = Client(url, auth=("bob", VIEWER_PW), verbose=False)
    model = str(tiny_model_file)
    calls = {
        "/launch_config": ("demo", "optim.epochs=1 data.root=/nonexistent-flrdf", "viewer-run", 1),
        "/stop": ("some-run",),
        "/cancel": ("some-run",),
        "/resume": ("some-run", "", 1),
        "/evaluate": (model, "test", "", ["gradcam"], None, 1),
        "/evaluate_default": (1,),
        "/analyze": (model, "test", "", ["gradcam"], 1, 0, "fast"),
    }
    for api, args in calls.items():
        with pytest.raises(AppError, match="Read-only: 'bob' is a viewer") as info:
            client.predict(*args, api_name=api)
        assert "editor login" in str(info.value), api
    with pytest.raises(AppError, match="Read-only: 'bob' is a viewer"):
        client.predict(config="demo", data_root="/nonexistent-flrdf", extra="", name="viewer-form-run", threads=1,
                       api_name="/launch")
    assert not any(runs.iterdir())   # nothing launched, no result folder made


def test_an_editor_passes_the_check(locked):
    url, runs = locked
    client = Client(url, auth=("alice", EDITOR_PW), verbose=False)
    with pytest.raises(AppError, match="plain name"):       # the run-name check, past the role check
        client.predict("../x", api_name="/stop")
    with pytest.raises(AppError, match="Invalid job settings|config must be"):
        client.predict("no-such-config", "", "", 1, api_name="/launch_config")
    assert not any(runs.iterdir())


def test_the_page_locks_the_editor_buttons_on_load(locked):
    """The served page's config: every editor button exists, and one load event updates exactly those."""
    url, _ = locked
    client = Client(url, auth=("bob", VIEWER_PW), verbose=False)
    config = client.config
    ids = {c["props"].get("elem_id"): c["id"] for c in config["components"] if c.get("props", {}).get("elem_id")}
    assert set(access.EDITOR_CONTROLS) <= set(ids), set(access.EDITOR_CONTROLS) - set(ids)
    loads = [d for d in config["dependencies"] if any(t[1] == "load" for t in d["targets"])]
    wanted = [ids["viewer-note"], *[ids[i] for i in access.EDITOR_CONTROLS]]
    assert any(d["outputs"] == wanted for d in loads), [d["outputs"] for d in loads]


def test_a_viewer_sees_the_buttons_disabled_in_the_browser(locked):
    """Through Gradio's login page in headless Chromium: a viewer sees the note and a disabled Launch;
    an editor sees neither."""
    from test_browser import CHROMIUM, open_page

    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium")
    url, _ = locked
    for user, password, locked_out in (("bob", VIEWER_PW, True), ("alice", EDITOR_PW, False)):
        for page in open_page(url, 1400, 1000):
            page.get_by_label("username").fill(user)
            page.get_by_label("password").fill(password)
            page.get_by_role("button", name="Login").click()
            see(page.locator("#inspect-run"))   # logged in, the page is up
            tabs = {"Train": ("train-launch", "train-make-data", "train-stop", "train-resume", "train-cancel"),
                    "Evaluate": ("eval-run", "eval-demo"), "Analyze": ("an-run",)}
            assert sorted(e for ids in tabs.values() for e in ids) == sorted(access.EDITOR_CONTROLS)
            if locked_out:
                see(page.locator("#viewer-note", has_text="you are a viewer"))
            for tab, ids in tabs.items():
                page.get_by_role("tab", name=tab).click()
                for elem in ids:
                    button = see(page.locator(f"#{elem}"), show="#viewer-note")
                    if locked_out:
                        see_function(page, "id => document.getElementById(id).disabled === true", elem, 30,
                                     f"#{elem} disabled for a viewer", show="#viewer-note")
                    else:
                        assert not button.is_disabled(), elem
            if not locked_out:
                assert page.locator("#viewer-note", has_text="you are a viewer").count() == 0
