"""State shared by the dashboard's tabs: where models and runs are, which device,
and a thread-safe LRU cache of loaded models.

A model is cached under (resolved checkpoint file, mtime, size), so a run whose
``last.pt`` is rewritten by training is reloaded on the next request, and
loading happens once even when requests arrive together.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dashboard.gpus import GPU
from dashboard.paths import PathError, Roots
from dashboard.scheduler import Scheduler
from flrdf.auth import Logins
from flrdf.engine.checkpoint import CheckpointError, LoadedModel, load_model, resolve_checkpoint_path
from flrdf.engine.step import resolve_device

REPO_ROOT = Path(__file__).resolve().parent.parent
ASSETS_DIR = REPO_ROOT / "assets"
DEMO_MODEL = ASSETS_DIR / "demo_model.safetensors"
EXAMPLES_DIR = ASSETS_DIR / "examples"


class ModelCache:
    """LRU of ``LoadedModel`` keyed by checkpoint file + mtime + size; thread-safe."""

    def __init__(self, device: torch.device, max_models: int = 3):
        self.device = device
        self.max_models = max(1, int(max_models))
        self._models: OrderedDict[tuple, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(path: str | Path) -> tuple:
        """(file, mtime, size), from os.stat - outside the lock, and refusing anything but a regular file, so a
        FIFO or a device named as a checkpoint never blocks ``open()`` while the lock is held."""
        file = resolve_checkpoint_path(Path(path).expanduser()).resolve()
        try:
            st = os.stat(file)
        except OSError:
            raise CheckpointError(f"checkpoint {file.name} not found") from None
        if not stat.S_ISREG(st.st_mode):
            raise CheckpointError(f"checkpoint {file.name} is not a regular file")
        return str(file), st.st_mtime_ns, st.st_size

    def get(self, path: str | Path) -> LoadedModel:
        key = self.key(path)
        with self._lock:  # one loader at a time: a second request for the same model waits and hits
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            for old in [k for k in self._models if k[0] == key[0]]:  # a rewritten file: drop the stale copy
                del self._models[old]
            loaded = load_model(key[0], self.device)
            self._models[key] = loaded
            while len(self._models) > self.max_models:
                self._models.popitem(last=False)
            return loaded

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)


@dataclass
class Example:
    file: Path
    label: int | None
    class_name: str | None
    box: list[float] | None   # x1 y1 x2 y2 in the image's own pixels
    sha1: str


def file_sha1(path: str | Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_examples(folder: Path) -> list[Example]:
    """``folder/examples.json`` entries ({file, label, class_name, box}); else every image file, no labels."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    index = folder / "examples.json"
    entries = []
    if index.is_file():
        try:
            entries = json.loads(index.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ValueError(f"{index}: unreadable examples index: {exc}") from None
    else:
        entries = [{"file": p.name} for p in sorted(folder.iterdir())
                   if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp", ".bmp")]
    out = []
    for e in entries:
        path = folder / str(e["file"])
        if path.is_file():
            out.append(Example(path, e.get("label"), e.get("class_name"), e.get("box"), file_sha1(path)))
    return out


@dataclass
class DashboardContext:
    """What every tab may read: checkpoint default, runs folder, device, model cache, examples."""

    checkpoint: Path | None = None
    runs_dir: Path = Path("runs")
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    examples_dir: Path = EXAMPLES_DIR
    models: ModelCache = None  # type: ignore[assignment]
    examples: list[Example] = field(default_factory=list)
    allow_dirs: list[Path] = field(default_factory=list)   # --allow-dir: where else checkpoints may be
    roots: Roots = None  # type: ignore[assignment]       # what clients may name (dashboard.paths)
    data_dir: Path = None  # type: ignore[assignment]    # demo data and the demo backbone (default ./data)
    browsed: dict = field(default_factory=dict)            # sha1 -> Example: images the dataset browser sent
    scheduler: Scheduler = None  # type: ignore[assignment]  # GPUs and the queue of training jobs (--max-jobs)
    logins: Logins = field(default_factory=Logins)         # who may log in, and as editor or viewer (access.py)

    @classmethod
    def create(cls, checkpoint: str | Path | None = None, runs_dir: str | Path = "runs", device: str = "auto",
               examples_dir: str | Path = EXAMPLES_DIR, max_models: int = 3,
               allow_dirs: list[str | Path] | None = None, data_dir: str | Path | None = None,
               max_jobs: int = 1, gpus: Callable[[], list[GPU]] | None = None) -> "DashboardContext":
        """``max_jobs``: CPU training jobs at once (``--max-jobs``); ``gpus``: the GPU inventory (default: the
        machine's, ``dashboard.gpus.GpuInventory``)."""
        dev = resolve_device(device)
        ctx = cls(Path(checkpoint).expanduser() if checkpoint else DEMO_MODEL, Path(runs_dir).expanduser().absolute(),
                  dev, Path(examples_dir), ModelCache(dev, max_models))
        for d in allow_dirs or []:
            if not Path(d).expanduser().is_dir():
                raise ValueError(f"--allow-dir {d}: not a directory")
        ctx.allow_dirs = [Path(d).expanduser().resolve() for d in allow_dirs or []]
        ctx.data_dir = Path(data_dir or "data").expanduser().absolute()
        ctx.roots = Roots(ctx.runs_dir, ctx.allow_dirs, ctx.checkpoint, ctx.data_dir)
        ctx.examples = read_examples(ctx.examples_dir)
        ctx.scheduler = Scheduler(ctx.runs_dir, gpus, max_jobs)
        return ctx

    def load(self, path: str | Path | None = None) -> LoadedModel:
        """The model at ``path`` (default checkpoint when empty); ``CheckpointError`` says what is wrong.

        A client's path goes through ``Roots.checkpoint`` first (allowed roots, regular file, size), so
        nothing outside them is opened and the message does not say whether such a path exists."""
        text = str(path).strip() if path is not None else ""
        if not text:
            if self.checkpoint is None:
                raise CheckpointError("no checkpoint given")
            text = str(self.checkpoint)
        roots = self.roots or Roots(self.runs_dir, self.allow_dirs, self.checkpoint)
        try:
            file = roots.checkpoint(text)
        except PathError as exc:
            raise CheckpointError(str(exc)) from None
        try:
            return self.models.get(file)
        except CheckpointError as exc:  # name the file, not its full server path
            raise CheckpointError(str(exc).replace(str(file), file.name)) from None

    def checkpoint_choices(self) -> list[str]:
        """Default checkpoint, bundled demo model, then run directories under runs_dir that have a checkpoint."""
        out: list[str] = []
        for p in (self.checkpoint, DEMO_MODEL):
            if p is not None and Path(p).exists() and str(p) not in out:
                out.append(str(p))
        if self.runs_dir.is_dir():
            for run in sorted(self.runs_dir.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True):
                if run.is_dir():
                    try:
                        resolve_checkpoint_path(run)
                    except CheckpointError:
                        continue  # no checkpoint yet
                elif run.suffix not in (".pt", ".safetensors"):
                    continue
                out.append(str(run))
        return out

    def example_for(self, path: str | Path) -> Example | None:
        """The bundled example with the same bytes as ``path`` (uploads get new names; content does not change)."""
        if not self.examples and not self.browsed:
            return None
        try:
            digest = file_sha1(path)
        except OSError:
            return None
        return next((e for e in self.examples if e.sha1 == digest), None) or self.browsed.get(digest)
