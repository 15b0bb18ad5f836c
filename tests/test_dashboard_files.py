"""What the dashboard writes for a client (issue 22, findings 5 and 7): result folders of concurrent jobs never
shared, download copies never redirected by a symlink planted at a predictable temporary path."""

from __future__ import annotations

import os
import stat
import tempfile
import threading
from pathlib import Path

import pytest

from dashboard import paths
from dashboard.paths import Roots


def _concurrently(n: int, fn) -> list:
    """``fn()`` in ``n`` threads released together; their results (an exception fails the test)."""
    start, results, errors = threading.Barrier(n), [None] * n, []

    def work(i):
        start.wait()
        try:
            results[i] = fn()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return results


@pytest.mark.parametrize("kind", ["eval", "analysis"])
def test_concurrent_jobs_get_distinct_result_folders(tmp_path, kind):
    runs = tmp_path / "runs"
    run = runs / "r1"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("name: demo\n")
    model = tmp_path / "models" / "m.safetensors"  # a model file outside runs/: results under runs/<kind>
    model.parent.mkdir()
    model.write_bytes(b"x")
    roots = Roots(runs, [model.parent])
    for source, parent in ((run, run / kind), (model, runs / kind)):
        folders = _concurrently(24, lambda: roots.new_result_folder(source, "test", kind))
        assert len(set(folders)) == 24  # 24 jobs started in the same second: 24 folders
        for f in folders:
            assert f.is_dir() and f.parent == parent and not any(f.iterdir())
        assert all(f.name.startswith("test-" if source == run else "m-test-") for f in folders)


def _result_folder(tmp_path) -> Path:
    folder = tmp_path / "runs" / "eval" / "m-test-1"
    folder.mkdir(parents=True)
    for name in ("results.json", "table.csv", "predictions.csv"):
        (folder / name).write_text(f"{name} of this evaluation\n")
    return folder


def test_download_copies_are_private_and_ignore_planted_symlinks(tmp_path, monkeypatch):
    from dashboard.analyze_tab import _copies
    from dashboard.evaluate_tab import _download_copies

    shared_tmp, victim = tmp_path / "tmp", tmp_path / "victim"
    shared_tmp.mkdir()
    victim.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(shared_tmp))  # the system's temp folder, as another user sees it
    monkeypatch.setattr(paths, "_private", None)                # this process has not made its folder yet
    # another local user plants the old predictable folders, pointing where the app's user can write
    for name in ("flrdf-eval-downloads", "flrdf-analysis-downloads", "flrdf-compare", "flrdf-browse"):
        (shared_tmp / name).symlink_to(victim, target_is_directory=True)
    folder = _result_folder(tmp_path)
    copies = [Path(p) for p in _download_copies(folder) + _copies(folder, ("results.json", "predictions.csv"))]
    assert sorted(p.name for p in copies) == ["predictions.csv", "results.json", "results.json", "table.csv"]
    assert list(victim.iterdir()) == []  # nothing went through a planted link
    for p in copies:
        assert p.read_text() == f"{p.name} of this evaluation\n" and not p.is_symlink()
        top = p.parents[2]  # <mkdtemp folder>/<kind>/<hash of the result folder>/<file>
        assert top.parent == shared_tmp and top.name.startswith("flrdf-dashboard-")
        st = os.lstat(top)
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700 and st.st_uid == os.getuid()
    # a temp cleaner removed the folder: the next copy makes a new private one instead of trusting the name
    first = copies[0].parents[2]
    for p in sorted(first.rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    first.rmdir()
    again = Path(_download_copies(folder)[0])
    assert again.parents[2] != first and stat.S_IMODE(os.lstat(again.parents[2]).st_mode) == 0o700


def test_private_dir_refuses_a_kind_that_leaves_it():
    with pytest.raises(paths.PathError):
        paths.private_dir("../x")


@pytest.mark.parametrize("command", ["loc-eval", "analyze"])
def test_the_commands_default_result_folders_are_not_shared(tmp_path, command):
    """Three runs of the command within a second (here: each failing at once on a missing model) write three
    folders; before, the third shared the first's."""
    from flrdf.cli import main

    source = tmp_path / "missing.safetensors"
    for _ in range(3):
        assert main([command, "--checkpoint", str(source), "--runs-dir", str(tmp_path / "runs"), "--no-wsol"]) == 1
    kind = "eval" if command == "loc-eval" else "analysis"
    folders = sorted((tmp_path / "runs" / kind).iterdir())
    assert len(folders) == 3 and all((f / "progress.json").is_file() for f in folders), folders
