"""What a fresh clone lacks before the default Train and Evaluate paths work, made on demand.

The demo config trains on the synthetic set in ``data/demo`` and starts from the
stand-in backbone ``data/demo-backbone.pth``; neither is in the repository
(``scripts/make_demo_model.sh`` builds both in about three minutes). So that one click
works, the dashboard makes them when missing:

- **demo data**: ``python -m flrdf make-demo-data`` with the demo recipe's
  arguments (``RECIPE``), as a child process whose tqdm progress is parsed and
  reported; written to a hidden sibling folder and renamed into place when
  complete, so a half-written set is never taken for a finished one.
- **a backbone**: the bundled demo model's own backbone, extracted from
  ``assets/demo_model.safetensors`` (``flrdf export --backbone-out`` does the
  same) when its architecture is the one the job asks for; re-extracted when the
  model file changes.
- **which data a model file implies**: its class names are compared with the
  names each synthetic generator version gives for that many classes (the
  generators are asked, nothing is hard-coded); else the marker file
  (``flrdf_synthetic.json``) under the model's own data root; else version 2.

No Gradio: the tabs pass a progress callback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from dashboard import jobs
from dashboard.paths import DEMO_MODEL

# scripts/make_demo_model.sh: make-demo-data --version 2 --out data/demo --train-per-class 150 --test-per-class 40
RECIPE = {"classes": 10, "train_per_class": 150, "test_per_class": 40, "seed": 0}
DEFAULT_VERSION = 2
BACKBONE_FILE = "demo-model-backbone.pth"     # extracted from the bundled model, next to data/demo
MARKER = "flrdf_synthetic.json"
_PROGRESS = re.compile(rb"(\d+)/(\d+)")
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()

Progress = Callable[[int, int, str], None]


class FirstRunError(RuntimeError):
    """Something the first-run preparation could not do; the message says what and how to fix it."""


def _lock(path: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(str(path), threading.Lock())


# ---------------------------------------------------------------- the synthetic set on disk
def marker(root: str | Path) -> dict | None:
    """The generator's marker of a synthetic set at ``root`` (or ``root/CUB_200_2011``); None if absent."""
    root = Path(root)
    for cand in (root / "CUB_200_2011" / MARKER, root / MARKER):
        try:
            return json.loads(cand.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
    return None


def matches(root: str | Path, version: int, recipe: dict = RECIPE) -> bool:
    """``root`` holds the synthetic set of ``version`` written with ``recipe``'s counts and seed."""
    m = marker(root)
    return bool(m) and m.get("version") == version and all(m.get(k) == v for k, v in recipe.items())


def make_data_argv(out: Path, version: int, recipe: dict = RECIPE) -> list[str]:
    return jobs.python_argv("make-demo-data", "--version", str(version), "--out", str(out),
                            "--classes", str(recipe["classes"]), "--train-per-class", str(recipe["train_per_class"]),
                            "--test-per-class", str(recipe["test_per_class"]), "--seed", str(recipe["seed"]))


def command_text(out: str | Path, version: int, recipe: dict = RECIPE) -> str:
    return " ".join(["python", *make_data_argv(Path(out), version, recipe)[1:]])


def ensure_demo_data(out: str | Path, version: int = DEFAULT_VERSION, recipe: dict = RECIPE,
                     progress: Progress | None = None, timeout_s: float = 1800) -> bool:
    """Write the synthetic set at ``out`` unless it is there already; True when it was written now.

    A folder at ``out`` that is not that set (another version, other counts, anything else) is left alone
    and refused with a message. Runs ``make-demo-data`` as a child process and reports its progress."""
    out = Path(out).absolute()
    with _lock(out):
        if matches(out, version, recipe):
            return False
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            m = marker(out)
            what = (f"synthetic set v{m.get('version')} with other counts" if m else "not the synthetic demo set")
            raise FirstRunError(f"{out.name} exists but is {what}; delete it or set another dataset root")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.parent / f".{out.name}.partial-{os.getpid()}-{threading.get_ident()}"
        shutil.rmtree(tmp, ignore_errors=True)
        total = recipe["classes"] * (recipe["train_per_class"] + recipe["test_per_class"])
        if progress:
            progress(0, total, f"creating the synthetic demo set v{version}")
        proc = subprocess.Popen(make_data_argv(tmp, version, recipe), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=jobs.child_env(1),
                                start_new_session=True)
        tail = b""
        end = time.monotonic() + timeout_s
        try:
            while True:
                chunk = proc.stderr.read1(4096) if hasattr(proc.stderr, "read1") else proc.stderr.read(4096)
                if not chunk:
                    break
                tail = (tail + chunk)[-4000:]
                found = _PROGRESS.findall(chunk)
                if found and progress:
                    done, tot = (int(v) for v in found[-1])
                    progress(done, tot or total, f"creating the synthetic demo set v{version}")
                if time.monotonic() > end:
                    proc.kill()
                    break
            rc = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if rc != 0:
            shutil.rmtree(tmp, ignore_errors=True)
            last = [ln for ln in tail.decode("utf-8", "replace").replace("\r", "\n").splitlines() if ln.strip()]
            raise FirstRunError("make-demo-data failed: " + (last[-1][-300:] if last else f"exit status {rc}"))
        if out.is_dir():
            out.rmdir()  # an empty folder the user made
        tmp.rename(out)
        return True


# ---------------------------------------------------------------- which data a model implies
def _generator_names(version: int, n: int) -> list[str] | None:
    try:
        if version == 1:
            from flrdf.data.synthetic import class_specs

            return [s.name for s in class_specs(n)]
        from flrdf.data.synthetic_v2 import class_specs_v2

        return [s.name for s in class_specs_v2(n)]
    except ValueError:  # more classes than that version has
        return None


def model_data_version(class_names: list[str], data_root: str | None = None) -> tuple[int, str]:
    """(version, why) of the synthetic set a model was trained on: by its class names, else by the marker under
    its configured data root, else ``DEFAULT_VERSION``."""
    n = len(class_names)
    norm = lambda names: [str(x).replace("_", " ").strip().lower() for x in names]  # the cub reader's spaces
    for version in (2, 1):
        if norm(_generator_names(version, n) or []) == norm(class_names):
            return version, f"its {n} class names are those of synthetic set v{version}"
    m = marker(data_root) if data_root else None
    if m and m.get("version") in (1, 2):
        return int(m["version"]), f"the marker file under its data root says v{m['version']}"
    return DEFAULT_VERSION, f"not recognised; assuming v{DEFAULT_VERSION}"


def demo_root_for(data_dir: Path, version: int, recipe: dict = RECIPE) -> Path:
    """Where the synthetic set of ``version`` lives (or will be written): ``data/demo`` when it holds that set or
    does not exist yet and ``version`` is the demo config's; else ``data/demo-v<version>``."""
    main, other = Path(data_dir) / "demo", Path(data_dir) / f"demo-v{version}"
    if matches(main, version, recipe):
        return main
    if matches(other, version, recipe):
        return other
    if not main.exists() and version == DEFAULT_VERSION:
        return main
    return other


# ---------------------------------------------------------------- the bundled model's backbone
def model_backbone_name(model_file: str | Path = DEMO_MODEL) -> str | None:
    """The backbone architecture a model file's config names (its metadata only), or None if unreadable."""
    try:
        from safetensors import safe_open

        with safe_open(str(model_file), "pt") as f:
            meta = f.metadata() or {}
        return json.loads(meta.get("config", "{}")).get("model", {}).get("backbone")
    except Exception:  # noqa: BLE001 - any unreadable file simply offers no backbone
        return None


def backbone_target(data_dir: Path) -> Path:
    return Path(data_dir) / BACKBONE_FILE


def ensure_backbone(target: str | Path, model_file: str | Path = DEMO_MODEL) -> bool:
    """Extract the model file's backbone (torchvision names, fp32) to ``target`` unless it is there and newer
    than the model file; True when written now."""
    import torch

    from flrdf.engine.checkpoint import backbone_state_dict, load_model

    target, model_file = Path(target), Path(model_file)
    with _lock(target):
        if target.is_file() and target.stat().st_mtime_ns >= model_file.stat().st_mtime_ns:
            return False
        loaded = load_model(model_file, "cpu")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.partial-{os.getpid()}")
        torch.save(backbone_state_dict(loaded.model), tmp)
        tmp.replace(target)
        return True
