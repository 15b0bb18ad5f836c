"""Shared fixtures.

Dashboard (tests/test_inspect.py, test_app.py, test_browser.py): a tiny random-init
FLRDF model file (ResNet-18, 64 px), a few synthetic example images with boxes,
bad-input files, and one in-process dashboard server per session.

Training (tests/test_engine.py, test_browser_train.py): one tiny synthetic dataset
(``demo_root``), the ``tiny()`` overrides that shrink the demo config to seconds, and
ONE uninterrupted 3-epoch CLI run of it (``tiny_run``) that every test needing a
trained run or a reference run shares, instead of each training its own.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

TINY_CLASSES = 4
ROOT = Path(__file__).resolve().parents[1]
TINY_RUN_EPOCHS = 3  # 4 steps per epoch (32 training images, batch 8): 12 steps
STUDIO_MAX_JOBS = 4  # the studio's --max-jobs: its tests run jobs side by side


# ---------------------------------------------------------------- training fixtures
def tiny(root, **extra) -> list[str]:
    """``--set`` arguments that shrink the demo config to a run of seconds on ``root`` (see ``demo_root``)."""
    sets = {"data.root": str(root), "model.weights": "null", "model.layer4_stride": 2, "data.image_size": 64,
            "data.resize": 72, "data.num_workers": 0, "optim.batch_size": 8, "optim.epochs": 2,
            "optim.raw_warmup_epochs": 0, "optim.warmup_steps": 0, "optim.lr_backbone": 0.02, "optim.lr_new": 0.02,
            "runtime.log_every": 1, "runtime.device": "cpu", "runtime.deterministic": True, "runtime.eval_every": 0,
            "data.val_fraction": 0,
            "model.refine_size": 64}  # the demo's GrabCut refinement at the tiny input's size, not at 224 px
    sets.update(extra)
    args = []
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    return args


def run_cli(args) -> subprocess.Popen:
    """``python -m flrdf ARGS`` as a child process with one compute thread (same float order in every run)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "flrdf", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """The tiny synthetic dataset: 4 classes, 8 train / 3 test images each, 80 px, CUB layout. Read-only."""
    from flrdf.data.synthetic import make_demo_data

    out = tmp_path_factory.mktemp("demo")
    make_demo_data(out, num_classes=4, train_per_class=8, test_per_class=3, image_size=80, seed=0)
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, demo_root) -> Path:
    """One finished, uninterrupted CLI run: ``tiny(demo_root, optim.epochs=3)``. Read-only: copy it to change it."""
    run = tmp_path_factory.mktemp("tiny_run") / "run"
    from waits import communicate

    proc = run_cli(["train", "--config", "demo", "--out", str(run), *tiny_run_args(demo_root)])
    _, err = communicate(proc, 600, "the shared tiny_run training")
    assert proc.returncode == 0, err[-3000:]
    return run


def tiny_run_args(root) -> list[str]:
    """The arguments ``tiny_run`` was trained with (a resumed run must use the same to match it)."""
    return tiny(root, **{"optim.epochs": TINY_RUN_EPOCHS})


def pytest_configure(config):
    # Gradio 6's queue monitoring calls pandas options that pandas 3 deprecates; not ours to fix.
    config.addinivalue_line("filterwarnings", "ignore::pandas.errors.Pandas4Warning:gradio.queueing")


@pytest.fixture
def fake_flrdf_cwd(tmp_path, monkeypatch):
    """A working directory whose ``flrdf`` package only sleeps (120 s): ``python -m flrdf train --out X`` started
    there is a real process with a job's command line, without training anything."""
    pkg = tmp_path / "cwd" / "flrdf"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text("import time\ntime.sleep(120)\n")
    monkeypatch.chdir(pkg.parent)
    return tmp_path


# ---------------------------------------------------------------- dashboard fixtures
@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory) -> Path:
    """A random-init FLRDF model file: ResNet-18, 64 px input (resize 72), n = 4, 4 classes."""
    import torch

    from flrdf.config import Config
    from flrdf.data.synthetic import class_specs
    from flrdf.engine.checkpoint import save_model_file
    from flrdf.model import FLRDF

    torch.manual_seed(0)
    cfg = Config()
    cfg.model.backbone, cfg.model.pretrained, cfg.model.jigsaw_n = "resnet18", False, 4
    cfg.data.image_size, cfg.data.resize = 64, 72
    names = [s.name for s in class_specs(TINY_CLASSES)]
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_model_file(path, FLRDF(cfg.model, TINY_CLASSES), cfg, names)
    return path


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model_file):
    from flrdf.engine.checkpoint import load_model

    return load_model(tiny_model_file, "cpu")


@pytest.fixture(scope="session")
def examples_dir(tmp_path_factory) -> Path:
    """Three synthetic images and examples.json in the layout of assets/examples/."""
    import cv2

    from flrdf.data.synthetic import class_specs, render_sample

    out = tmp_path_factory.mktemp("examples")
    entries = []
    for i, spec in enumerate(class_specs(TINY_CLASSES)[:3]):
        sample = render_sample(spec, (123, i), 96)
        cv2.imwrite(str(out / f"example_{i}.jpg"), sample.image[..., ::-1])
        entries.append({"file": f"example_{i}.jpg", "label": i, "class_name": spec.name, "box": list(sample.box)})
    (out / "examples.json").write_text(json.dumps(entries))
    return out


def _png_with_size(path: Path, width: int, height: int) -> None:
    """A valid 1x1 PNG whose header then claims ``width`` x ``height`` (a decompression-bomb header)."""
    from PIL import Image

    Image.new("RGB", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = 8 + 8  # signature, then length + b"IHDR"
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12:ihdr + 13]))
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))


@pytest.fixture(scope="session")
def bad_inputs(tmp_path_factory, examples_dir) -> dict[str, Path]:
    """Files that must be refused with a readable message."""
    out = tmp_path_factory.mktemp("bad")
    files = {}
    files["not_image"] = out / "notes.png"
    files["not_image"].write_text("this is not an image\n")
    files["truncated"] = out / "truncated.jpg"
    data = (examples_dir / "example_0.jpg").read_bytes()
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["huge"] = out / "huge.png"
    _png_with_size(files["huge"], 12000, 8000)  # 96 Mpx: over the 89.5 Mpx limit
    return files


@pytest.fixture(scope="session")
def odd_images(tmp_path_factory) -> dict[str, Path]:
    """Unusual but valid images that must be inspected: 1x1, RGBA, 16-bit, CMYK."""
    import numpy as np
    from PIL import Image

    out = tmp_path_factory.mktemp("odd")
    files = {"one_pixel": out / "one.png", "rgba": out / "rgba.png", "16bit": out / "16bit.png",
             "cmyk": out / "cmyk.jpg"}
    Image.new("RGB", (1, 1), (200, 30, 30)).save(files["one_pixel"])
    rgba = np.zeros((80, 60, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 255, np.linspace(0, 255, 60, dtype=np.uint8)[None, :]
    Image.fromarray(rgba, "RGBA").save(files["rgba"])
    Image.fromarray(np.linspace(0, 65535, 70 * 50).reshape(70, 50).astype(np.uint16)).save(files["16bit"])
    Image.new("CMYK", (64, 48), (10, 200, 30, 0)).save(files["cmyk"])
    return files


@pytest.fixture(scope="session")
def wrong_checkpoint(tmp_path_factory) -> Path:
    """A .pt file that torch can read but that is not an FLRDF checkpoint."""
    import torch

    path = tmp_path_factory.mktemp("wrong") / "random.pt"
    torch.save({"weights": torch.randn(3, 3), "note": "not flrdf"}, path)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def dashboard_url(tiny_model_file, examples_dir, wrong_checkpoint, tmp_path_factory):
    """The dashboard served in-process on 127.0.0.1 (tiny model, synthetic examples); clients may also name
    checkpoints in wrong_checkpoint's folder (``--allow-dir``)."""
    from dashboard.app import build_app, launch
    from dashboard.context import DashboardContext

    ctx = DashboardContext.create(tiny_model_file, tmp_path_factory.mktemp("runs"), "cpu", examples_dir,
                                  allow_dirs=[wrong_checkpoint.parent])
    app = build_app(ctx=ctx)
    _, url, _ = launch(app, host="127.0.0.1", port=_free_port(), prevent_thread_lock=True, quiet=True)
    yield url
    app.close()


# ---------------------------------------------------------------- Train / Evaluate tab fixtures
@pytest.fixture(scope="session")
def studio(tmp_path_factory, tiny_model_file, examples_dir, demo_root):
    """(url, runs_dir, demo_root): the dashboard over its own empty runs folder, and the tiny synthetic
    dataset (``demo_root``, readable as a dataset root as the operator's ``--allow-dir`` makes it). Jobs still
    running at the end are stopped."""
    from dashboard.app import build_app, launch
    from dashboard.context import DashboardContext

    base = tmp_path_factory.mktemp("studio")
    root = demo_root
    runs_dir = base / "runs"
    ctx = DashboardContext.create(tiny_model_file, runs_dir, "cpu", examples_dir, allow_dirs=[root],
                                  max_jobs=STUDIO_MAX_JOBS)
    app = build_app(ctx=ctx)
    _, url, _ = launch(app, host="127.0.0.1", port=_free_port(), prevent_thread_lock=True, quiet=True)
    yield url, runs_dir, root
    app.close()
    from dashboard import jobs, runs

    for run in runs.list_runs(runs_dir):
        try:
            jobs.stop_run(run)
        except jobs.JobError:
            pass


@pytest.fixture(scope="module")
def real_batch(examples_dir):
    """Two synthetic example images (with their birds) through the 64 px test transform."""
    import torch
    from PIL import Image

    from flrdf.data import build_transform

    entries = json.loads((examples_dir / "examples.json").read_text())[:2]
    t = build_transform(False, 72, 64)
    return torch.stack([t(Image.open(examples_dir / e["file"]).convert("RGB"))[0] for e in entries])
