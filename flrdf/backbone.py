"""Backbone registry: torchvision ResNets as feature extractors (no pooling, no fc), and any timm model
with feature stages through ``timm:NAME`` (:mod:`flrdf.timm_backbone`); :func:`build_backbone` picks.

Weights: ``pretrained=True`` asks torchvision's weights API for the ImageNet-1k
weights (downloaded to the torch hub cache when reachable); ``weights=PATH``
loads a local torchvision-format state dict (.pth / .pt / .safetensors). A config
that asks for ImageNet weights and cannot get them fails at once with
``PretrainedUnavailable`` (a paper config silently trained from random init wastes
a GPU-day and reaches about 30 %); random init is an explicit choice,
``model.pretrained=false``. ``pretrained_note`` says before a launch whether the
weights are already in the local torchvision cache.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlparse
from typing import Callable

import torch
from torch import nn
from torchvision import models

from flrdf.boxes import feature_size, rf_centre
from flrdf.frozen import FrozenStages
from flrdf.timm_backbone import SUGGESTED as TIMM_SUGGESTED, TimmBackbone, is_timm
from flrdf.timm_backbone import pretrained_note as timm_pretrained_note

log = logging.getLogger(__name__)

BACKBONES: dict[str, tuple[Callable[..., models.ResNet], object, int]] = {
    "resnet18": (models.resnet18, models.ResNet18_Weights.IMAGENET1K_V1, 512),
    "resnet34": (models.resnet34, models.ResNet34_Weights.IMAGENET1K_V1, 512),
    "resnet50": (models.resnet50, models.ResNet50_Weights.IMAGENET1K_V2, 2048),
    "resnet101": (models.resnet101, models.ResNet101_Weights.IMAGENET1K_V2, 2048),
}


class PretrainedUnavailable(RuntimeError):
    """ImageNet weights were asked for (``model.pretrained=true``) and could not be fetched."""


def imagenet_weights(name: str):
    """The torchvision weights enum entry a backbone name uses with ``pretrained=True``."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name][1]


def cached_weights_path(name: str) -> Path:
    """Where torchvision keeps (or would download) a backbone's ImageNet weights: $TORCH_HOME/hub/checkpoints."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(imagenet_weights(name).url).path)


def how_to_provide(name: str) -> str:
    """The remedies, named the way a config or the shell spells them."""
    path = cached_weights_path(name)
    return (f"Provide them: download {imagenet_weights(name).url} where there is network and pass "
            f"model.weights=PATH (e.g. --set model.weights=/data/{path.name}), or place the file at {path} "
            f"(the torchvision cache; set TORCH_HOME to use another cache directory). "
            f"Or train from random init on purpose with model.pretrained=false.")


def known_backbone(name: str) -> bool:
    """A torchvision ResNet of the registry, or a ``timm:NAME`` (whose name timm checks at config load)."""
    return name in BACKBONES or is_timm(name)


def build_backbone(cfg, image_size: int | None = None) -> nn.Module:
    """The backbone ``cfg`` (a ModelConfig) names: a torchvision ResNet, or a timm model (``timm:NAME``,
    built for ``image_size`` where its patch grid depends on it)."""
    if is_timm(cfg.backbone):
        return TimmBackbone(cfg.backbone, pretrained=cfg.pretrained, weights=cfg.weights,
                            layer4_stride=cfg.layer4_stride, frozen_stages=cfg.frozen_stages, image_size=image_size,
                            suppress_layer3=cfg.suppress_layer3 and cfg.suppression != "none")
    return ResNetBackbone(cfg.backbone, pretrained=cfg.pretrained, weights=cfg.weights,
                          layer4_stride=cfg.layer4_stride, frozen_stages=cfg.frozen_stages)


def backbone_choices() -> list[str]:
    """The names the Train form offers: the torchvision ResNets, then a few timm families (any other
    timm name can be typed)."""
    return sorted(BACKBONES) + list(TIMM_SUGGESTED)


def pretrained_note(name: str, pretrained: bool, weights: str | None) -> str | None:
    """Before a launch: a message when ImageNet weights are asked for but not in the local cache (the job will
    then try to download them and stop at start if it cannot); None when nothing is missing."""
    if weights or not pretrained:
        return None
    if is_timm(name):
        return timm_pretrained_note(name)
    if name not in BACKBONES:
        return None
    path = cached_weights_path(name)
    if path.is_file():
        return None
    return (f"model.pretrained=true but the ImageNet weights of {name} are not in the torchvision cache "
            f"({path}): the job downloads them at start and stops with an error if it cannot. "
            + how_to_provide(name))


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict safely (safetensors, or torch.load with weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a state dict (got {type(obj).__name__})")
    return {k.removeprefix("module."): v for k, v in obj.items()}


class ResNetBackbone(FrozenStages, nn.Module):
    """ResNet stem + layer1..4; ``forward`` returns the layer4 map (B, C, H/32, W/32).

    ``after_layer3`` (optional callable) is applied between layer3 and layer4 -
    the hook for suppression after layer3.
    """

    def __init__(self, name: str = "resnet50", pretrained: bool = False, weights: str | None = None,
                 layer4_stride: int = 2, frozen_stages: int = 0):
        super().__init__()
        if frozen_stages not in (0, 1, 2, 3):
            raise ValueError(f"frozen_stages must be 0, 1, 2 or 3, got {frozen_stages}")
        if layer4_stride not in (1, 2):
            raise ValueError(f"layer4_stride must be 1 or 2, got {layer4_stride}")
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
        builder, imagenet, self.out_channels = BACKBONES[name]
        self.name = name
        net, self.init = self._build(builder, imagenet, pretrained, weights)
        if layer4_stride == 1:
            # The WSOL habit (wsolevaluation's ResNet-50): layer4 keeps layer3's resolution, so the
            # localization map is twice as fine (output stride 16). Weights stay compatible.
            for module in net.layer4[0].modules():
                if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
                    module.stride = (1, 1)
        self.stride = 16 if layer4_stride == 1 else 32  # input pixels per layer4 cell
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        # frozen_stages n > 0: stem and layer1..n keep their starting weights and BN statistics
        self.freeze([self.stem, self.layer1, self.layer2, self.layer3][:frozen_stages + 1] if frozen_stages else [])

    @staticmethod
    def _build(builder, imagenet, pretrained: bool, weights: str | None):
        if weights:
            net = builder(weights=None)
            state = load_state_dict_file(weights)
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            try:
                missing, unexpected = net.load_state_dict(state, strict=False)
            except RuntimeError as exc:  # shape mismatches
                raise ValueError(f"weights file {weights} does not match {builder.__name__}: {exc}") from None
            missing = [k for k in missing if not k.startswith("fc.")]
            if missing or unexpected:
                raise ValueError(
                    f"weights file {weights} does not match {builder.__name__}: "
                    f"missing {missing[:5]}, unexpected {unexpected[:5]}"
                )
            return net, f"file:{weights}"
        if pretrained:
            try:
                return builder(weights=imagenet), f"torchvision:{imagenet}"
            except Exception as exc:  # no network, no cache: stop, never fall back to random init silently
                reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
                name = builder.__name__
                raise PretrainedUnavailable(
                    f"model.pretrained=true but the ImageNet weights of {name} ({imagenet}) could not be "
                    f"fetched ({type(exc).__name__}: {reason}). " + how_to_provide(name)) from None
        log.info("backbone %s starts from random init (no pretrained weights asked for)", builder.__name__)
        return builder(weights=None), "random"

    STAGE_STRIDES = {"layer2": 8, "layer3": 16}  # input pixels per cell of the earlier stages' outputs

    def stage_stride(self, stage: str) -> int:
        """Input pixels per cell of ``stage``'s output: layer2 8, layer3 16, layer4 ``self.stride``."""
        return self.stride if stage == "layer4" else self.STAGE_STRIDES[stage]

    def stage_channels(self, stage: str) -> int:
        """Channels of ``stage``'s output (each ResNet stage doubles them): layer2 C/4, layer3 C/2, layer4 C."""
        return self.out_channels // {"layer2": 4, "layer3": 2, "layer4": 1}[stage]

    def feature_hw(self, image_hw: tuple[int, int], stage: str = "layer4") -> tuple[int, int]:
        """Cells of ``stage``'s map for an ``image_hw`` input: each stride-2 layer gives ceil(n / 2)."""
        s = self.stage_stride(stage)
        return feature_size(int(image_hw[0]), s), feature_size(int(image_hw[1]), s)

    def cell_centre(self, stage: str = "layer4") -> float:
        """c in centre(cell j) = j*s + c: every ResNet downsampling layer centres output i on input 2i
        (docs/GEOMETRY.md, measured in docs/results/rf_centre.json)."""
        return rf_centre(self.stage_stride(stage))

    @property
    def cam_target(self) -> nn.Module:
        """The module whose output is layer4 (grad-cam's target layer)."""
        return self.layer4

    cam_reshape = None  # layer4's output is already (B, C, h, w)

    def forward(self, x: torch.Tensor, after_layer3: Callable[[torch.Tensor], torch.Tensor] | None = None,
                taps: tuple[str, ...] | None = None):
        """layer4's output; with ``taps``, (layer4's output, {stage: output}) for the stages named
        (layer2; layer3 before ``after_layer3``; layer3_after: after it)."""
        a2 = self.layer2(self.layer1(self.stem(x)))
        a3 = self.layer3(a2)
        kept = {"layer2": a2, "layer3": a3}
        if after_layer3 is not None:
            a3 = after_layer3(a3)
        kept["layer3_after"] = a3
        out = self.layer4(a3)
        return out if taps is None else (out, {k: kept[k] for k in taps})
