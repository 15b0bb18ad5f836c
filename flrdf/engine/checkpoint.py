"""Checkpoints: atomic writes, safe loads, and the one function that turns any
checkpoint-ish path into a ready model.

Two formats, both loadable without running code from the file:
- training checkpoint ``*.pt``: a plain dict of tensors and primitives, read with
  ``torch.load(weights_only=True)``: model, optimizer, scheduler, scaler,
  epoch/step, resolved config, class names, RNG states (``rng``: this process's;
  ``rng_ranks``: one per DDP rank, in rank order, when written by a DDP run);
- model file ``*.safetensors``: weights only (optionally fp16) with the config
  and class names as JSON in the safetensors metadata (the bundled demo model),
  and the records of :data:`CARRIED` (read back into ``extra``).
``load_model`` also accepts a run directory (its ``checkpoints/last.pt``).
"""

from __future__ import annotations

import copy
import json
import os
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flrdf.timm_backbone import is_timm

from flrdf.config import Config, ConfigError, apply_overrides, config_from_dict
from flrdf.engine.model_overrides import changed_keys, check_changes, load_weights
from flrdf.model import FLRDF

FORMAT = "flrdf-checkpoint"
VERSION = 1
# extra records a model file carries from its checkpoint: the box_refine=auto decision (engine.refine_choice)
# and the synthetic generator's record of the training data (data.synthetic_overlap)
CARRIED = ("refine_decision", "data_generator")


class CheckpointError(ValueError):
    """A file that is not a usable FLRDF checkpoint; the message says why."""


def atomic_write_bytes(path: Path, write) -> None:
    """Write via ``write(fileobj)`` to a temporary file beside ``path``, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide run files from other readers
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    state = {
        "python": list(py_state) + [py_gauss if py_gauss is not None else -1],
        "python_version": py_version,
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = list(state["python"])
    gauss = py.pop()
    random.setstate((state["python_version"], tuple(int(v) for v in py), None if gauss == -1 else gauss))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def unwrap(model: torch.nn.Module) -> FLRDF:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)      # DistributedDataParallel


def save_checkpoint(path: Path, model, cfg: Config, class_names: list[str], *, epoch: int, step: int,
                    optimizer=None, scheduler=None, scaler=None, extra: dict | None = None,
                    rng_ranks: list[dict] | None = None) -> None:
    state = {
        "format": FORMAT,
        "version": VERSION,
        "model": unwrap(model).state_dict(),
        "config": cfg.to_dict(),
        "class_names": list(class_names),
        "epoch": int(epoch),
        "step": int(step),
        "rng": rng_state(),
        "extra": extra or {},
    }
    if rng_ranks is not None:
        state["rng_ranks"] = list(rng_ranks)
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    atomic_write_bytes(Path(path), lambda f: torch.save(state, f))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a ``.pt`` checkpoint safely and check it is one of ours."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path} is not a loadable checkpoint (or contains code, refused): "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an FLRDF checkpoint (no '{FORMAT}' marker); "
                              "train one with 'python -m flrdf train' or pass a run directory")
    for key in ("model", "config", "class_names"):
        if key not in state:
            raise CheckpointError(f"{path} is missing '{key}'")
    return state


def save_model_file(path: Path, model, cfg: Config, class_names: list[str], half: bool = True,
                    metrics: dict | None = None, extra: dict | None = None) -> None:
    """Weights-only safetensors file with config and class names in its metadata; the :data:`CARRIED`
    records of ``extra`` (a checkpoint's) go with them."""
    from safetensors.torch import save

    tensors = {}
    for k, v in unwrap(model).state_dict().items():
        v = v.detach().cpu().contiguous()
        # fp16 for the weights; float64 buffers (DDT's running statistics) keep their precision
        tensors[k] = v.half() if half and v.dtype == torch.float32 else v
    meta = {"format": FORMAT, "config": json.dumps(cfg.to_dict()), "class_names": json.dumps(list(class_names)),
            "metrics": json.dumps(metrics or {})}
    meta.update({k: json.dumps(extra[k]) for k in CARRIED if (extra or {}).get(k)})
    data = save(tensors, metadata=meta)
    atomic_write_bytes(Path(path), lambda f: f.write(data))


def update_model_file(path: Path, extra: dict, model_keys: dict | None = None) -> None:
    """Rewrite a model file's :data:`CARRIED` records and the ``model.*`` values ``model_keys`` of its stored
    config (every other key as stored); its tensors are written back unchanged (same dtypes, same bytes)."""
    from safetensors import safe_open
    from safetensors.torch import save

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an FLRDF model file")
    config = json.loads(meta["config"])
    config["model"].update(model_keys or {})
    config_from_dict(config)  # still a valid config
    meta["config"] = json.dumps(config)
    meta.update({k: json.dumps(extra[k]) for k in CARRIED if extra.get(k)})
    data = save(tensors, metadata=meta)
    atomic_write_bytes(Path(path), lambda f: f.write(data))


def _read_model_file(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not an FLRDF model (no '{FORMAT}' metadata)")
    return {"model": {k: v.float() if v.dtype == torch.float16 else v for k, v in tensors.items()},
            "config": json.loads(meta["config"]), "class_names": json.loads(meta["class_names"]),
            "extra": {"metrics": json.loads(meta.get("metrics", "{}")),
                      **{k: json.loads(meta[k]) for k in CARRIED if k in meta}}, "epoch": None, "step": None}


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A file as is; a run directory -> its last checkpoint."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "checkpoints" / "last.pt", path / "last.pt"):
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"run directory {path} has no checkpoints/last.pt yet")
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


@dataclass
class LoadedModel:
    model: FLRDF
    config: Config
    class_names: list[str]
    path: Path
    epoch: int | None = None
    step: int | None = None
    extra: dict = field(default_factory=dict)
    overridden: list[str] = field(default_factory=list)  # model.* keys --set changed (the model was built with them)


def load_model(path: str | Path, device: str | torch.device = "cpu", overrides: list[str] | None = None) -> LoadedModel:
    """Build the model a checkpoint, model file or run directory describes, in eval mode.

    ``overrides`` (``--set key=value``) apply to the stored config before the model is built: a
    ``model.*`` key rebuilds the model with it, or is refused naming the key where the checkpoint's
    weights cannot serve it (flrdf.engine.model_overrides); ConfigError then."""
    path = resolve_checkpoint_path(path)
    state = _read_model_file(path) if path.suffix == ".safetensors" else read_checkpoint(path)
    try:
        cfg = config_from_dict(state["config"])
    except ConfigError as exc:
        raise CheckpointError(f"{path}: its stored config is invalid: {exc}") from None
    stored = copy.deepcopy(cfg.model)
    cfg = apply_overrides(cfg, overrides)
    changed = changed_keys(stored, cfg.model)
    check_changes(changed)
    cfg.model.pretrained = False  # the weights come from the checkpoint
    cfg.model.weights = None
    model = FLRDF(cfg.model, len(state["class_names"]), cfg.data.image_size)
    try:
        load_weights(model, state["model"], changed)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the model its config describes: {str(exc)[:500]}") from None
    model.to(device).eval()
    return LoadedModel(model, cfg, list(state["class_names"]), path, state.get("epoch"), state.get("step"),
                       state.get("extra") or {}, changed)


def backbone_state_dict(model) -> dict[str, torch.Tensor]:
    """The backbone's weights, loadable as ``model.weights``: under torchvision ResNet names, or for a timm
    backbone under the names of its timm feature wrapper."""
    rename = {"stem.0.": "conv1.", "stem.1.": "bn1."}
    if is_timm(unwrap(model).cfg.backbone):
        rename = {"net.": ""}
    out = {}
    for k, v in unwrap(model).backbone.state_dict().items():
        for old, new in rename.items():
            if k.startswith(old):
                k = new + k[len(old):]
        out[k] = v.detach().cpu().clone()
    return out
