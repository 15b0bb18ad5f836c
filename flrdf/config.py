"""Typed configuration: dataclasses, YAML files and ``--set key=value`` overrides.

``load_config("cub")`` reads ``flrdf/configs/cub.yaml``; any other argument is a
path. A config file may name a ``base:`` config it extends. Overrides use dotted
keys (``model.backbone=resnet18``, ``optim.epochs=2``) and YAML value syntax.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class ModelConfig:
    """The network: backbone, the three branches, the suppression gate, the FL map and its box."""

    backbone: str = "resnet50"       # resnet18 | resnet34 | resnet50 | resnet101 (torchvision) | timm:NAME (any timm
                                     # model with feature stages; layer2/3/4 = its last three stages; docs/BACKBONES.md)
    pretrained: bool = True          # ImageNet weights when reachable: torchvision's, or timm's (Hugging Face hub)
    weights: str | None = None       # local state dict instead: torchvision format, or a timm checkpoint
    branches: str = "full"           # raw | raw+fl | raw+rdf | full  (paper Table 2)
    suppression: str = "learnable"   # learnable | fixed | none
    delta: float = 0.7               # gate of the fixed variant
    gate_init: float = 0.7           # learnable gate's starting value (controller bias = logit(gate_init))
    suppress_layer3: bool = False    # also suppress after layer3
    layer4_stride: int = 2           # 1: layer4 without downsampling (finer map, WSOL practice)
    tau: float = 0.5                 # map threshold for the foreground box
    map_upsample: int = 4            # map upsampling before thresholding
    loc_layer: str = "layer4"        # the FL map: channel mean of layer4 after suppression (the paper) |
                                     # layer3 | layer2 (stride 8: finer, traces whole objects; docs/METHOD.md "Which map")
    loc_map: str = "mean"            # how that stage becomes a map: mean (channel mean, the paper) | ddt (the descriptors'
                                     # first principal component, running statistics: flrdf/ddt.py)
    ddt_momentum: float = 0.05       # EMA momentum of the DDT statistics (per training batch)
    frozen_stages: int = 0           # backbone stages kept at their starting weights, BN statistics included:
                                     # 0 none | 1 stem + layer1 | 2 + layer2 | 3 + layer3 (mmdetection's frozen_stages)
    box_refine: str = "none"         # none | grabcut | auto: in evaluation and inference the map's box is snapped to the
                                     # object's edges by GrabCut seeded with the map (flrdf/refine.py); auto: only if
                                     # that raises loc_acc on the validation split (decided at the end of training,
                                     # flrdf/engine/refine_choice.py; unresolved, the map's box)
    refine_sure: float = 0.6         # grabcut: map >= this fraction of its peak, inside the box, is sure foreground
    refine_margin: float = 1.0       # grabcut: the working area is the map's box grown by this fraction per side
    refine_iters: int = 5            # grabcut: iterations
    refine_size: int = 224           # grabcut: runs on the view resampled to at most this many px per side
    jigsaw_n: int = 4                # n x n patch grid
    combine: str = "raw+object"      # test-time prediction: '+'-joined branch names


@dataclass
class DataConfig:
    """The dataset, its splits and the image sizes the network sees."""

    dataset: str = "cub"             # cub | aircraft | cars | folder | demo
    root: str = ""                   # the dataset's folder (a download, or data/demo for the synthetic set)
    train_split: str = "train"       # split read for training (aircraft: trainval | train | val)
    test_split: str = "test"         # split the training run evaluates on
    resize: int = 512                # images resized to this square first (aspect not kept, as FGVC code does)
    image_size: int = 448            # then cropped to this square: the network input (random crop + flip in training)
    annotation_level: str = "variant"  # aircraft only: variant | family | manufacturer (the classes)
    crop_banner: bool = True           # aircraft only: crop the 20-px copyright banner off the bottom
    val_fraction: float = 0.0          # carved from the training split; the only basis for a 'best' checkpoint
    on_corrupt: str = "error"          # an unreadable image: error (stop, naming it) | skip (the next readable one instead, warned)
    num_workers: int = -1              # -1: sized to the machine
    source_size: int | None = 0        # zoom source: the same view at this many px for the object crop (0/null: off)


@dataclass
class OptimConfig:
    """SGD, its learning rates and schedule."""

    epochs: int = 100                # training epochs (the schedule's length)
    batch_size: int = 16             # images per step (per process under torchrun)
    lr_backbone: float = 0.001       # learning rate of the pretrained backbone
    lr_new: float = 0.01             # learning rate of the new layers (classifier heads, suppression controller)
    momentum: float = 0.9            # SGD momentum
    weight_decay: float = 5e-4       # SGD weight decay (on every parameter unless no_decay_norm_bias)
    schedule: str = "cosine"         # cosine | constant
    warmup_steps: int = 0            # linear lr warm-up
    raw_warmup_epochs: int = 0       # train the raw branch alone first (MMAL-Net practice)
    max_steps: int = 0               # stop after this many steps in total (0: no limit) - for smoke runs
    grad_clip: float = 0.0           # clip the gradient's global norm to this (0: no clipping)
    no_decay_norm_bias: bool = False  # true: no weight decay on norm layers, biases, the suppression controller


@dataclass
class LossConfig:
    """alpha*L_raw + beta*L_obj + gamma*L_jig and how the branches pull on the shared backbone."""

    alpha: float = 1.0               # weight of the raw branch's loss
    beta: float = 1.0                # weight of the object branch's loss
    gamma: float = 1.0               # weight of the jigsaw (RDF) branch's loss
    label_smoothing: float = 0.0     # cross-entropy label smoothing of every branch (0: none)
    weighting: str = "fixed"         # fixed | normalized (divided by their sum) | scheduled (beta, gamma ramp up)
    ramp_epochs: float = 0.0         # scheduled: epochs (after the raw warm-up) for beta, gamma to reach their values
    aux_backbone_scale: float = 1.0  # scales the object/jigsaw losses' gradient on the shared backbone


@dataclass
class RuntimeConfig:
    """Device, precision, seeds and how often the trainer logs, evaluates and checkpoints."""

    device: str = "auto"             # auto | cpu | cuda | cuda:N
    amp: bool = True                 # on CUDA: bf16 where supported, else fp16 with a scaler
    amp_dtype: str = "auto"          # auto (as above, CUDA only) | bf16 | fp16: that autocast dtype on any
                                     # device, fp16 with a scaler (V100/T4 precision on any GPU, or CPU)
    channels_last: bool = True       # channels_last memory format (applied on CUDA)
    compile: bool = False            # wrap the training model in torch.compile
    seed: int = 0                    # seeds torch/numpy/random (+ rank) and the validation split carved by data.val_fraction
    deterministic: bool = False      # torch.use_deterministic_algorithms (warn only): bit-exact resumes on CPU
    log_every: int = 10              # steps between metrics lines
    eval_every: int = 1              # epochs between test evaluations (0: only at the end)
    checkpoint_every: int = 1        # epochs
    eval_jigsaw: bool = False        # evaluations in training also score the jigsaw branch (about +50 % time)
    tensorboard: bool = False        # also write each metrics line as TensorBoard events into the run directory
                                     # (flrdf/engine/tensorboard_log.py; older runs: python -m flrdf export-tensorboard)


@dataclass
class Config:
    name: str = "custom"             # the config's name (recorded in the run directory)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ConfigError(ValueError):
    pass


def _coerce(value: Any, hint: Any, key: str) -> Any:
    text = str(hint)
    if value is None:
        if "None" in text:
            return None
        raise ConfigError(f"{key}: null is not allowed")
    text = text.replace(" | None", "")  # optional scalars coerce like their type
    if hint is bool or text == "bool":
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if hint is int or text == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(value)
    if hint is float or text == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if isinstance(value, (dict, list)):
        raise ConfigError(f"{key}: expected a scalar, got {value!r}")
    return str(value)


def _apply(obj: Any, values: dict[str, Any], prefix: str = "") -> None:
    hints = get_type_hints(type(obj))
    names = {f.name for f in fields(obj)}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key {dotted!r}; known: {sorted(names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{dotted}: expected a mapping")
            _apply(current, value, dotted + ".")
        else:
            setattr(obj, key, _coerce(value, hints[key], dotted))


def resolve_config_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        return p
    candidate = CONFIG_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        raise ConfigError(f"no shipped config named {str(name_or_path)!r}; shipped: {shipped_configs()}")
    return candidate


def shipped_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path.resolve() in seen:
        raise ConfigError(f"config base cycle at {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = resolve_config_path(base) if not Path(str(base)).is_absolute() else Path(base)
    merged = _read_yaml(base_path, seen + (path.resolve(),))
    return _deep_merge(merged, data)


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (e.g. optim.epochs=2)")
    key, raw = text.split("=", 1)
    if not all(part.strip().isidentifier() for part in key.split(".")):
        raise ConfigError(f"override {text!r}: the key must be dotted names, e.g. optim.epochs=2")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def override_arg(text: str) -> str:
    """argparse ``type=`` for ``--set``: one ``key=value`` token, refused with a message otherwise."""
    import argparse

    try:
        parse_override(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def apply_overrides(cfg: Config, overrides: list[str] | None) -> Config:
    for text in overrides or []:
        keys, value = parse_override(text)
        nested: Any = value
        for k in reversed(keys):
            nested = {k: nested}
        _apply(cfg, nested)
    validate(cfg)
    return cfg


def config_from_dict(data: dict[str, Any]) -> Config:
    cfg = Config()
    _apply(cfg, data)
    validate(cfg)
    return cfg


def load_config(name_or_path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    data = _read_yaml(resolve_config_path(name_or_path)) if name_or_path else {}
    cfg = config_from_dict(data)
    return apply_overrides(cfg, overrides)


def validate(cfg: Config) -> None:
    m, d, o = cfg.model, cfg.data, cfg.optim
    validate_backbone(m, d)
    if m.branches not in ("raw", "raw+fl", "raw+rdf", "full"):
        raise ConfigError(f"model.branches must be raw | raw+fl | raw+rdf | full, got {m.branches!r}")
    if m.suppression not in ("learnable", "fixed", "none"):
        raise ConfigError(f"model.suppression must be learnable | fixed | none, got {m.suppression!r}")
    if m.loc_layer not in ("layer4", "layer3", "layer2"):
        raise ConfigError(f"model.loc_layer must be layer4 | layer3 | layer2, got {m.loc_layer!r}")
    if m.frozen_stages not in (0, 1, 2, 3):
        raise ConfigError(f"model.frozen_stages must be 0 | 1 | 2 | 3, got {m.frozen_stages!r}")
    if m.loc_map not in ("mean", "ddt"):
        raise ConfigError(f"model.loc_map must be mean | ddt, got {m.loc_map!r}")
    if m.box_refine not in ("none", "grabcut", "auto"):
        raise ConfigError(f"model.box_refine must be none | grabcut | auto, got {m.box_refine!r}")
    if not 0.0 <= m.refine_sure <= 1.0:
        raise ConfigError(f"model.refine_sure must lie in [0, 1] (a fraction of the map's peak), got {m.refine_sure!r}")
    if m.refine_margin < 0:
        raise ConfigError(f"model.refine_margin must be >= 0, got {m.refine_margin!r}")
    if m.refine_iters < 1:
        raise ConfigError(f"model.refine_iters must be >= 1, got {m.refine_iters!r}")
    if m.refine_size < 16:
        raise ConfigError(f"model.refine_size must be >= 16 px, got {m.refine_size!r}")
    if not 0.0 < m.ddt_momentum <= 1.0:
        raise ConfigError(f"model.ddt_momentum must lie in (0, 1], got {m.ddt_momentum}")
    if m.layer4_stride not in (1, 2):
        raise ConfigError(f"model.layer4_stride must be 1 or 2, got {m.layer4_stride}")
    if not 0.0 <= m.tau <= 1.0:
        raise ConfigError(f"model.tau must lie in [0, 1], got {m.tau}")
    if not 0.0 <= m.delta <= 1.0:
        raise ConfigError(f"model.delta must lie in [0, 1], got {m.delta}")
    if not 0.0 < m.gate_init < 1.0:
        raise ConfigError(f"model.gate_init must lie strictly between 0 and 1, got {m.gate_init}")
    for part in m.combine.split("+"):
        if part not in ("raw", "object", "jigsaw"):
            raise ConfigError(f"model.combine parts must be raw/object/jigsaw, got {m.combine!r}")
    if d.image_size < 32 or d.resize < d.image_size:
        raise ConfigError(f"data.resize ({d.resize}) must be >= data.image_size ({d.image_size}) >= 32")
    if m.branches in ("raw+rdf", "full") and d.image_size % m.jigsaw_n:
        raise ConfigError(f"model.jigsaw_n={m.jigsaw_n} does not tile data.image_size={d.image_size}")
    if d.source_size and (d.source_size < 0 or d.source_size < d.image_size):
        raise ConfigError(f"data.source_size must be 0/null (off) or >= data.image_size ({d.image_size}), "
                          f"got {d.source_size}")
    if not 0.0 <= d.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must lie in [0, 1), got {d.val_fraction}")
    if d.on_corrupt not in ("error", "skip"):
        raise ConfigError(f"data.on_corrupt must be error | skip, got {d.on_corrupt!r}")
    lo = cfg.loss
    if lo.weighting not in ("fixed", "normalized", "scheduled"):
        raise ConfigError(f"loss.weighting must be fixed | normalized | scheduled, got {lo.weighting!r}")
    if lo.ramp_epochs < 0 or lo.aux_backbone_scale < 0:
        raise ConfigError("loss.ramp_epochs and loss.aux_backbone_scale must be >= 0")
    if min(lo.alpha, lo.beta, lo.gamma) < 0:
        raise ConfigError(f"loss weights must be >= 0, got alpha={lo.alpha}, beta={lo.beta}, gamma={lo.gamma}")
    if o.epochs < 1 or o.batch_size < 1:
        raise ConfigError("optim.epochs and optim.batch_size must be >= 1")
    if o.schedule not in ("cosine", "constant"):
        raise ConfigError(f"optim.schedule must be cosine | constant, got {o.schedule!r}")
    if cfg.runtime.amp_dtype not in ("auto", "bf16", "fp16"):
        raise ConfigError(f"runtime.amp_dtype must be auto | bf16 | fp16, got {cfg.runtime.amp_dtype!r}")


def validate_backbone(m: ModelConfig, d: DataConfig) -> None:
    """The backbone's name, and for ``timm:NAME`` what the model can take (input size, options), checked on the
    meta device before anything is built or downloaded."""
    from flrdf.backbone import BACKBONES
    from flrdf.timm_backbone import BackboneRefused, check_timm_config, is_timm

    if is_timm(m.backbone):
        if m.backbone == "timm:":
            raise ConfigError("model.backbone=timm: needs a model name, e.g. timm:convnext_tiny")
        try:
            check_timm_config(m.backbone, int(d.image_size), int(m.layer4_stride), int(m.frozen_stages),
                              bool(m.suppress_layer3 and m.suppression != "none"))
        except BackboneRefused as exc:
            raise ConfigError(str(exc)) from None
    elif m.backbone not in BACKBONES:
        raise ConfigError(f"model.backbone must be one of {sorted(BACKBONES)} or timm:NAME (any timm model with "
                          f"feature stages, e.g. timm:convnext_tiny), got {m.backbone!r}")


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
