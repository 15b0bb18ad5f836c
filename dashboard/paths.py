"""The one place that decides what a dashboard client may name on the server.

Every run name, evaluation folder, split, config name, checkpoint path and data
folder that arrives from a client (the page or an API call) is resolved here,
against the roots the operator configured (``Roots``):

- a **run** is a direct child of the runs directory named by a plain slug;
  absolute paths, ``..``, separators and symlinks leaving the runs directory are
  refused;
- an **evaluation folder** is ``<runs>/<run>/eval/<slug>`` or ``<runs>/eval/<slug>``, an **analysis
  folder** the same with ``analysis`` for ``eval``;
- a **config** is a shipped name, or a ``.yaml`` file under the runs directory or
  the project's configs (its ``base:`` chain obeys the same rule);
- a **checkpoint** is the demo model, the operator's ``--checkpoint``, a file or
  run under the runs directory, or a file under a directory the operator allowed
  (``python app.py --allow-dir DIR``); it must be a regular file (not a FIFO, a
  device or a directory) of at most ``MAX_CHECKPOINT_BYTES`` - checked with
  ``os.stat`` before anything opens it;
- a **dataset root** the browser reads is a folder under the data folder
  (./data), the runs directory or an ``--allow-dir`` directory;
- Gradio's upload folder is never any of these.

What the dashboard writes for a client goes where no one else can reach: a new evaluation or
analysis job's result folder is created atomically and uniquely (``Roots.new_result_folder``),
and files handed to Gradio (download copies, pictures sent between tabs) are copied into a
folder this process made with ``tempfile.mkdtemp`` (mode 0700, ``private_dir``) - never a
predictable shared path where a planted symlink could redirect the copy.

Refusals raise ``PathError`` whose message says what a valid name looks like; it
never echoes file contents, home paths, pids, or whether a refused path exists.
No Gradio import: the tabs turn ``PathError`` into ``gr.Error``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_MODEL = REPO_ROOT / "assets" / "demo_model.safetensors"
SHIPPED_CONFIG_DIR = REPO_ROOT / "flrdf" / "configs"
PROJECT_CONFIG_DIR = REPO_ROOT / "configs"
MAX_CHECKPOINT_BYTES = 4 << 30      # 4 GiB: a ResNet-101 checkpoint with optimizer state is ~0.5 GiB
MAX_CONFIG_BYTES = 1 << 20
SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
RESERVED_RUN_NAMES = ("eval", "analysis")  # RUNS_DIR/eval, RUNS_DIR/analysis: results of model files, not runs

RUN_RULE = "run name must be a plain name under runs/ (letters, digits, '.', '_', '-', '+'; no '/' or '..')"
CHECKPOINT_RULE = ("checkpoint must be the demo model, a run or a file under runs/, or a file under a directory "
                   "allowed with --allow-dir")
CONFIG_RULE = "config must be a shipped config name or a .yaml file under runs/ or the project's configs"
DATASET_RULE = ("dataset root must be a folder under data/, runs/ or a directory allowed with --allow-dir "
                "(start the app with --allow-dir /path/to/datasets to browse a download elsewhere)")
EVAL_RULE = "result folder must be <run>/eval/<name> or eval/<name> under runs/"
ANALYSIS_RULE = "analysis folder must be <run>/analysis/<name> or analysis/<name> under runs/"


class PathError(ValueError):
    """A client-supplied name the dashboard refuses; the message says what a valid one looks like."""


def upload_folder() -> Path:
    """Gradio's upload folder (``GRADIO_TEMP_DIR`` or ``<tmp>/gradio``), resolved."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


def check_slug(text, what: str = "name", rule: str | None = None) -> str:
    """A plain name: no separators, no '..', no leading dot or dash, at most 128 characters."""
    name = "" if text is None else str(text).strip()
    if not SLUG.fullmatch(name) or name in (".", "..") or ".." in name:
        raise PathError(rule or f"{what} must be a plain name (letters, digits, '.', '_', '-', '+'; "
                                "no '/' or '..')")
    return name


@dataclass
class Roots:
    """Where client-named files may live: the runs directory and the operator's extra directories."""

    runs_dir: Path
    allow_dirs: list[Path] = field(default_factory=list)
    default_checkpoint: Path | None = None   # the operator's --checkpoint (trusted: named at start-up)
    data_dir: Path | None = None             # where demo data is created and datasets may be read (default ./data)

    def __post_init__(self):
        if self.data_dir is not None:
            self.data_dir = Path(self.data_dir).expanduser().absolute()
        self.runs_dir = Path(self.runs_dir).expanduser().absolute()
        self.allow_dirs = [Path(d).expanduser().resolve() for d in self.allow_dirs]
        if self.default_checkpoint is not None:
            self.default_checkpoint = Path(self.default_checkpoint).expanduser().absolute()

    @property
    def runs_root(self) -> Path:
        return self.runs_dir.resolve()

    def _not_upload(self, path: Path, rule: str) -> Path:
        if _inside(path, upload_folder()):
            raise PathError(rule)
        return path

    # ---------------------------------------------------------------- runs
    def run_dir(self, name, must_exist: bool = True) -> Path:
        """RUNS_DIR/<name> for a plain run name; its resolved form must be a direct child of the runs directory."""
        name = check_slug(name, rule=RUN_RULE)
        if name in RESERVED_RUN_NAMES:
            raise PathError(f"{RUN_RULE}; '{name}' is reserved")
        root = self.runs_root
        path = self.runs_dir / name
        real = path.resolve()
        if real.parent != root or real.name != name:  # a symlink leaving (or renaming inside) the runs dir
            raise PathError(RUN_RULE)
        self._not_upload(real, RUN_RULE)
        if must_exist and not real.is_dir():
            raise PathError(f"no run named {name!r} under runs/")
        return path

    def run_name(self, text) -> str:
        """A new run's name as the client typed it (the launch appends a time stamp)."""
        name = check_slug(text, rule=RUN_RULE)
        if name in RESERVED_RUN_NAMES:
            raise PathError(f"{RUN_RULE}; '{name}' is reserved")
        return name

    # ---------------------------------------------------------------- evaluation folders
    def eval_folder(self, text, must_exist: bool = True) -> Path:
        """<runs>/<run>/eval/<name> or <runs>/eval/<name>, given absolute or relative to the runs directory."""
        return self._result_folder(text, "eval", EVAL_RULE, must_exist)

    def analysis_folder(self, text, must_exist: bool = True) -> Path:
        """<runs>/<run>/analysis/<name> or <runs>/analysis/<name> (``python -m flrdf analyze`` results)."""
        return self._result_folder(text, "analysis", ANALYSIS_RULE, must_exist)

    def _result_folder(self, text, kind: str, rule: str, must_exist: bool) -> Path:
        raw = "" if text is None else str(text).strip()
        if not raw or "\0" in raw:
            raise PathError(rule)
        p = Path(raw)
        root = self.runs_root
        real = (p if p.is_absolute() else self.runs_dir / p).resolve()
        if not real.is_relative_to(root):
            real = p.absolute().resolve()  # relative to the working directory (runs/x/eval/y)
            if not real.is_relative_to(root):
                raise PathError(rule)
        parts = real.relative_to(root).parts
        ok = (len(parts) == 2 and parts[0] == kind) or (len(parts) == 3 and parts[1] == kind
                                                        and parts[0] not in RESERVED_RUN_NAMES)
        if not ok or any(x.startswith(".") for x in parts):
            raise PathError(rule)
        self._not_upload(real, rule)
        if must_exist and not real.is_dir():
            raise PathError("no such result folder under runs/")
        return real

    def new_result_folder(self, source: Path, split: str, kind: str) -> Path:
        """Create now the result folder of a new ``kind`` (eval, analysis) job on ``source``: RUN_DIR/<kind>/<split>-
        <time> for a run under runs/, else RUNS_DIR/<kind>/<name>-<split>-<time>; with -2, -3 ... when taken. Atomic
        (``rundir.create_unique_dir``): concurrent jobs never share a folder."""
        from flrdf.engine.rundir import create_unique_dir, result_folder

        out = result_folder(Path(source), split, str(self.runs_dir), kind)
        if not self.inside_runs(out):  # a run or model file outside runs/ writes its results under runs/<kind>
            out = self.runs_dir / kind / f"{Path(source).stem}-{out.name}"
        return create_unique_dir(out)

    def inside_runs(self, path: Path) -> bool:
        try:
            return Path(path).resolve().is_relative_to(self.runs_root)
        except (OSError, ValueError):
            return False

    # ---------------------------------------------------------------- configs
    def config(self, text) -> str:
        """A shipped config name as is, or the resolved path of an allowed .yaml file (checked, base chain too)."""
        from flrdf.config import shipped_configs

        name = "" if text is None else str(text).strip()
        if name in shipped_configs():
            return name
        return str(self._config_file(name, ()))

    def _config_file(self, name: str, seen: tuple) -> Path:
        import yaml

        from flrdf.config import shipped_configs

        if not name or "\0" in name:
            raise PathError(CONFIG_RULE)
        if name in shipped_configs():
            return SHIPPED_CONFIG_DIR / f"{name}.yaml"
        p = Path(name)
        if p.suffix not in (".yaml", ".yml"):
            raise PathError(CONFIG_RULE)
        cands = [p] if p.is_absolute() else [self.runs_dir / p, p.absolute(), REPO_ROOT / p]
        roots = [self.runs_root, SHIPPED_CONFIG_DIR.resolve(), PROJECT_CONFIG_DIR.resolve()]
        real = None
        for cand in cands:
            r = cand.resolve()
            if any(r.is_relative_to(root) for root in roots) and not _inside(r, upload_folder()):
                real = r
                break
        if real is None:
            raise PathError(CONFIG_RULE)
        label = real.name
        try:
            st = os.stat(real)
        except OSError:
            raise PathError(f"config {label} not found") from None
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_CONFIG_BYTES:
            raise PathError(f"config {label} is not a regular file of at most {MAX_CONFIG_BYTES >> 10} KiB")
        if real in seen:
            raise PathError(f"config {label}: its base: chain has a cycle")
        try:
            data = yaml.safe_load(real.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:  # position only: the parser's excerpt would echo the file
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            raise PathError(f"config {label} is not valid YAML{where}") from None
        except (OSError, UnicodeDecodeError):
            raise PathError(f"config {label} is not a readable UTF-8 text file") from None
        if not isinstance(data, dict):
            raise PathError(f"config {label} must be a YAML mapping (model:, data:, optim: ...)")
        base = data.get("base")
        if base is not None:
            self._config_file(str(base), seen + (real,))
        return real

    # ---------------------------------------------------------------- checkpoints
    def checkpoint(self, text) -> Path:
        """The checkpoint FILE a client named (a run directory -> its checkpoints/last.pt), checked with os.stat:
        a regular file of at most MAX_CHECKPOINT_BYTES under an allowed root. Nothing is opened here."""
        raw = "" if text is None else str(text).strip()
        if not raw or "\0" in raw:
            raise PathError(CHECKPOINT_RULE)
        p = Path(raw)
        cands = [p] if p.is_absolute() else [p.absolute(), self.runs_dir / p]
        for cand in cands:
            real = cand.resolve()
            if self._checkpoint_allowed(real) and (real.exists() or cand is cands[-1]):
                return self._checkpoint_file(real)
        raise PathError(CHECKPOINT_RULE)

    def _checkpoint_allowed(self, real: Path) -> bool:
        if _inside(real, upload_folder()):
            return False
        fixed = [DEMO_MODEL.resolve()]
        if self.default_checkpoint is not None:
            fixed.append(self.default_checkpoint.resolve())
        if real in fixed or any(real.is_relative_to(f) for f in fixed if f.is_dir()):
            return True
        return any(real.is_relative_to(root) for root in [self.runs_root, *self.allow_dirs])

    def _checkpoint_file(self, real: Path) -> Path:
        label = real.name
        try:
            st = os.stat(real)
        except OSError:
            raise PathError(f"checkpoint {label} not found") from None
        if stat.S_ISDIR(st.st_mode):
            for cand in (real / "checkpoints" / "last.pt", real / "last.pt"):
                if os.path.lexists(cand):
                    inner = cand.resolve()
                    if not self._checkpoint_allowed(inner):
                        raise PathError(CHECKPOINT_RULE)
                    return self._checkpoint_file(inner)
            raise PathError(f"run {label} has no checkpoints/last.pt yet")
        if not stat.S_ISREG(st.st_mode):
            raise PathError(f"checkpoint {label} is not a regular file")
        if st.st_size > MAX_CHECKPOINT_BYTES:
            raise PathError(f"checkpoint {label} is larger than {MAX_CHECKPOINT_BYTES >> 30} GiB")
        if real.suffix not in (".pt", ".pth", ".safetensors"):
            raise PathError(f"checkpoint {label} must be a .pt or .safetensors file")
        return real

    # ---------------------------------------------------------------- data folders the dashboard may write
    def data_root(self, text) -> Path:
        """A folder the 'create demo data' button may write: under ./data, the runs directory or an allowed dir."""
        raw = "" if text is None else str(text).strip()
        if not raw or "\0" in raw:
            raise PathError("demo data root must be a folder under data/, runs/ or an --allow-dir directory")
        real = Path(raw).absolute().resolve()
        roots = [self.data_home().resolve(), self.runs_root, *self.allow_dirs]
        if _inside(real, upload_folder()) or not any(real.is_relative_to(r) and real != r for r in roots):
            raise PathError("demo data root must be a folder under data/, runs/ or an --allow-dir directory")
        return real

    def data_home(self) -> Path:
        """The data folder: ``data_dir`` when the operator set one, else ./data."""
        return self.data_dir if self.data_dir is not None else Path.cwd() / "data"

    def dataset_root(self, text) -> Path:
        """A dataset folder a client may READ (the dataset browser): an existing directory under the data folder,
        the runs directory or an --allow-dir directory (the root itself allowed), never the upload folder."""
        raw = "" if text is None else str(text).strip()
        if not raw or "\0" in raw:
            raise PathError(DATASET_RULE)
        p = Path(raw).expanduser()
        cands = [p] if p.is_absolute() else [p.absolute(), self.data_home().parent / p]
        roots = [self.data_home().resolve(), self.runs_root, *self.allow_dirs]
        for cand in cands:
            real = cand.resolve()
            if _inside(real, upload_folder()) or not any(_inside(real, r) for r in roots):
                continue
            if not real.is_dir():
                raise PathError(f"dataset root {real.name or raw} is not a folder")
            return real
        raise PathError(DATASET_RULE)


def within(folder: Path, name) -> Path | None:
    """``folder/name`` if ``name`` is a relative path that stays inside ``folder`` (after symlinks); else None."""
    text = "" if name is None else str(name)
    if not text or "\0" in text or Path(text).is_absolute():
        return None
    base = Path(folder).resolve()
    real = (base / text).resolve()
    return real if real.is_relative_to(base) and real != base else None


# ---------------------------------------------------------------- files handed to Gradio
_private: Path | None = None
_private_lock = threading.Lock()


def _is_private(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def private_dir(kind: str) -> Path:
    """``<a folder made by tempfile.mkdtemp once per process>/<kind>``: mode 0700, an unpredictable name, so nobody
    else can create or plant anything in it. Made again if it disappeared (a temp cleaner). It lies in the system's
    temp folder, which Gradio serves files from."""
    global _private
    kind = check_slug(kind, "kind")
    with _private_lock:
        if _private is None or not _is_private(_private):
            _private = Path(tempfile.mkdtemp(prefix="flrdf-dashboard-"))
        sub = _private / kind
        sub.mkdir(mode=0o700, exist_ok=True)
    return sub


def copy_private(src: Path, dest: Path) -> Path:
    """Copy ``src`` to ``dest`` (in a ``private_dir``) through a fresh temporary file renamed over it: a reader never
    sees half a file, and the write never goes through an existing name."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as inp:
            shutil.copyfileobj(inp, out)
        shutil.copystat(src, tmp)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


def download_copies(folder: Path, names, kind: str, tag_extra: str = "") -> list[str]:
    """The files ``names`` of a result folder (each only inside it, ``within``), copied for download into
    ``private_dir(kind)/<hash of the folder>``; returns their paths."""
    tag = hashlib.sha1((str(Path(folder).resolve()) + tag_extra).encode()).hexdigest()[:12]
    dest = private_dir(kind) / tag
    dest.mkdir(mode=0o700, exist_ok=True)
    out = []
    for name in names:
        src = within(folder, name)  # a symlink out of the folder is not followed
        if src is not None and src.is_file():
            out.append(str(copy_private(src, dest / Path(name).name)))
    return out
