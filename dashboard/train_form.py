"""The Train tab's job form as data: fields, defaults from a shipped config, and the resolved command.

A form is a shipped config name plus a value per field in ``FIELDS``; the job
runs ``python -m flrdf train --config NAME --set key=value ...`` with one
``--set`` for every field that differs from that config, plus free-form extra
overrides. ``resolve`` validates the result through ``flrdf.config`` exactly as
the CLI will, so an invalid form is refused before anything starts. No Gradio.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from flrdf.backbone import backbone_choices
from flrdf.config import Config, ConfigError, load_config


@dataclass(frozen=True)
class Field:
    key: str                      # dotted config key
    label: str
    kind: str = "text"            # text | number | int | bool | choice
    choices: tuple = ()
    info: str = ""


FIELDS: tuple[Field, ...] = (
    Field("data.dataset", "dataset", "choice", ("demo", "cub", "cars", "aircraft", "folder"),
          "demo = the synthetic set (python -m flrdf make-demo-data)"),
    Field("data.root", "dataset root"),
    Field("data.train_split", "train split"),
    Field("data.test_split", "test split"),
    Field("data.annotation_level", "annotation level (aircraft)", "choice", ("variant", "family", "manufacturer")),
    Field("data.val_fraction", "validation fraction", "number", info="carved from train; the only basis for best.pt"),
    Field("model.backbone", "backbone", "choice", tuple(backbone_choices()),
          "torchvision ResNets, or timm:NAME - type any timm model with feature stages (e.g. timm:convnext_small)"),
    Field("model.pretrained", "ImageNet-pretrained (torchvision / timm)", "bool"),
    Field("model.weights", "weights file",
          info="local state dict (torchvision format, or a timm checkpoint for timm:NAME); empty = none"),
    Field("model.branches", "branches", "choice", ("full", "raw+fl", "raw+rdf", "raw")),
    Field("model.suppression", "suppression", "choice", ("learnable", "fixed", "none")),
    Field("model.delta", "delta (fixed gate)", "number"),
    Field("model.tau", "tau (box threshold)", "number"),
    Field("model.jigsaw_n", "jigsaw n", "int"),
    Field("data.image_size", "image size", "int"),
    Field("data.resize", "resize before crop", "int"),
    Field("optim.epochs", "epochs", "int"),
    Field("optim.batch_size", "batch size", "int"),
    Field("optim.lr_backbone", "lr backbone", "number"),
    Field("optim.lr_new", "lr new layers", "number"),
    Field("optim.max_steps", "max steps (0 = no limit)", "int"),
    Field("loss.alpha", "alpha (L_raw)", "number"),
    Field("loss.beta", "beta (L_obj)", "number"),
    Field("loss.gamma", "gamma (L_jig)", "number"),
    Field("runtime.device", "device", "choice", ("auto", "cpu", "cuda")),
    Field("data.num_workers", "data workers (-1 = auto)", "int"),
    Field("runtime.log_every", "log every (steps)", "int"),
    Field("runtime.eval_every", "eval every (epochs, 0 = end only)", "int"),
)
KEYS = tuple(f.key for f in FIELDS)
DEFAULT_CONFIG = "demo"


def get_key(cfg: Config, key: str):
    obj = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def defaults(config_name: str) -> dict:
    """The form's values for a shipped config (``None`` weights show as empty)."""
    cfg = load_config(config_name)
    values = {k: get_key(cfg, k) for k in KEYS}
    values["model.weights"] = values["model.weights"] or ""
    return values


def yaml_scalar(value) -> str:
    """``value`` written so that ``--set key=<text>`` parses back to it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    try:
        same = yaml.safe_load(text) == text
    except yaml.YAMLError:
        same = False
    return text if same and text.strip() == text and text else json.dumps(text)


def _coerce(value, base, key: str):
    if isinstance(base, bool):
        return bool(value)
    if isinstance(base, int) and not isinstance(base, bool):
        if value is None or value == "":
            raise ConfigError(f"{key}: a whole number is required")
        if float(value) != int(float(value)):
            raise ConfigError(f"{key}: expected a whole number, got {value}")
        return int(float(value))
    if isinstance(base, float):
        if value is None or value == "":
            raise ConfigError(f"{key}: a number is required")
        return float(value)
    text = "" if value is None else str(value).strip()
    return None if key == "model.weights" and not text else text


def parse_extra(text: str) -> list[str]:
    """Free-form overrides: ``key=value`` separated by newlines or spaces (shell quoting allowed).

    Written the CLI's way too: ``--set a=1 b=2`` (several pairs after one ``--set``), ``--set=a=1``.
    A bare ``--set`` with no pair after it, or a token without ``=``, is refused with a message."""
    from flrdf.config import parse_override

    try:
        tokens = shlex.split(text or "", comments=True)
    except ValueError as exc:
        raise ConfigError(f"extra overrides: {exc} (check the quotes)") from None
    out: list[str] = []
    pending_set = False
    for part in tokens:
        if part == "--set":
            if pending_set:
                raise ConfigError("extra overrides: '--set' must be followed by key=value")
            pending_set = True
            continue
        if part.startswith("--set="):
            part = part[len("--set="):]
        elif part.startswith("-") and "=" not in part:
            raise ConfigError(f"extra overrides: unknown option {part!r}; write key=value pairs (or --set key=value)")
        if "=" not in part:
            raise ConfigError(f"extra override {part!r} must look like key=value (e.g. optim.epochs=2)")
        parse_override(part)  # checks the key's form
        out.append(part)
        pending_set = False
    if pending_set:
        raise ConfigError("extra overrides: '--set' must be followed by key=value")
    return out


@dataclass
class Resolved:
    config: str
    overrides: list[str]
    cfg: Config
    notes: list[str] = field(default_factory=list)

    def argv(self, out: str | None = None) -> list[str]:
        args = ["python", "-m", "flrdf", "train", "--config", self.config]
        for o in self.overrides:
            args += ["--set", o]
        if out:
            args += ["--out", out]
        return args

    def command(self, threads: int | None = None, nproc: int = 1, visible: str | None = None) -> str:
        """The command Launch runs, as text: ``python -m flrdf train ...``, or for ``nproc`` > 1 processes
        ``torchrun --standalone --nproc_per_node N -m flrdf train ...``; ``visible``: its CUDA_VISIBLE_DEVICES
        (a placeholder in <...> is shown as is)."""
        env = ""
        if visible is not None:
            env += f"CUDA_VISIBLE_DEVICES={visible if visible.startswith('<') else shlex.quote(visible)} "
        if threads:
            env += f"OMP_NUM_THREADS={threads} "
        argv = self.argv()
        if nproc > 1:
            argv = ["torchrun", "--standalone", "--nproc_per_node", str(nproc), *argv[1:]]
        return env + shlex.join(argv)

    def _dist_sets(self) -> list[str]:
        args = []
        for o in self.overrides:
            if not o.startswith("runtime.device="):
                args += ["--set", o]
        return args

    def torchrun(self) -> str:
        args = ["torchrun", "--standalone", "--nproc_per_node", "NGPUS", "-m", "flrdf", "train", "--config",
                self.config, *self._dist_sets(), "--out", f"runs/{self.cfg.name}-multi"]
        return shlex.join(args).replace("NGPUS", "$NGPUS")

    def multinode(self, nproc: int | None = None, out: str | None = None) -> str:
        """The same job on several machines: run this on each (``$NNODES`` machines; ``$HOST:$PORT`` a free port
        on the first); ``nproc`` processes per machine (default ``$NGPUS``); ``out`` a folder every machine sees."""
        out = out or f"runs/{self.cfg.name}-multinode"
        args = ["torchrun", "--nnodes", "$NNODES", "--rdzv-backend", "c10d", "--rdzv-endpoint", "$HOST:$PORT",
                "--rdzv-id", Path(out).name, "--nproc_per_node", str(nproc) if nproc else "$NGPUS",
                "-m", "flrdf", "train", "--config", self.config, *self._dist_sets(), "--out", out]
        return " ".join(a if a.startswith("$") else shlex.quote(a) for a in args)


def resolve(config_name: str, values: dict, extra: str = "", fallback_weights: str | None = None,
            creates_data: bool = False) -> Resolved:
    """Form -> overrides against ``config_name``, validated. Raises ConfigError with a readable message.

    A shipped config's default weights file that does not exist here (the demo's
    ``data/demo-backbone.pth`` on a fresh clone) becomes ``fallback_weights`` when
    given (the dashboard passes the bundled demo model's backbone, extracted at
    Launch), else ``model.weights=null`` (random initialisation); a note says which.
    ``creates_data``: a missing demo dataset root is created at Launch (noted as such).
    """
    base = load_config(config_name)
    overrides, notes = [], []
    for key in KEYS:
        if key not in values:
            continue
        old = get_key(base, key)
        new = _coerce(values[key], old if old is not None else "", key)
        if key == "model.weights":
            chosen = str(values.get("model.backbone") or base.model.backbone).strip()
            if new is not None and new == old and chosen != base.model.backbone:
                notes.append(f"{new} holds the weights of {base.model.backbone}, not {chosen}: model.weights=null "
                             f"(the backbone starts from {'ImageNet weights' if values.get('model.pretrained') else 'random init'})")
                new = None
            elif new is not None and new == old and not Path(new).exists():
                if fallback_weights:
                    notes.append(f"{new} not found here: the backbone starts from the bundled demo model's own "
                                 f"backbone ({fallback_weights}, extracted from assets/demo_model.safetensors at "
                                 "Launch) - a quick start; that backbone has already learnt this synthetic task")
                    new = str(fallback_weights)
                else:
                    notes.append(f"{new} not found here: model.weights=null (the backbone starts from "
                                 f"{'ImageNet weights' if values.get('model.pretrained') else 'random init'})")
                    new = None
            elif new is not None and not Path(new).exists():
                notes.append(f"weights file {new} does not exist here: the job will fail unless it exists "
                             "where it runs")
        if new != old:
            overrides.append(f"{key}={yaml_scalar(new)}")
    overrides += parse_extra(extra)
    cfg = load_config(config_name, overrides)  # validates; ConfigError carries the message
    if not cfg.data.root:
        raise ConfigError(f"dataset root is empty: give the folder of the {cfg.data.dataset} dataset")
    if not Path(cfg.data.root).exists():
        if creates_data and cfg.data.dataset == "demo":
            notes.append(f"dataset root {cfg.data.root} does not exist yet: Launch first creates the synthetic "
                         "demo set there (version 2, 1,900 images, about a minute)")
        else:
            notes.append(f"dataset root {cfg.data.root} does not exist here: the job will fail")
    return Resolved(config_name, overrides, cfg, notes)
