"""timm backbones (``model.backbone=timm:NAME``): any timm model with feature stages, as FLRDF's backbone.

The model is built with ``features_only=True`` (timm's feature wrappers; plain ViTs come out of its
feature getter with the class token dropped and the patch tokens reshaped to their grid, Swin's
channels-last stages are permuted to NCHW here). The stages FLRDF names after the ResNet's are the
backbone's last three feature stages: "layer4" the last, "layer3" the second to last, "layer2" the third
to last, each with its real stride (``feature_info.reduction()``). The interface is
:class:`flrdf.backbone.ResNetBackbone`'s: ``forward(x, after_layer3, taps)``, ``stride``,
``stage_stride``, ``stage_channels``, ``out_channels``, ``init``, plus ``cam_target`` /
``cam_reshape`` for grad-cam.

What a backbone cannot do is refused with a :class:`BackboneRefused` naming it, at config load
(:func:`check_timm_config`, built on the meta device: no weights, no memory) and again at build:
an unknown name, a model without feature stages (or fewer than three), ``layer4_stride=1`` on a model
without ``output_stride`` (a ViT has one stride), ``frozen_stages`` where the stages are not a module
sequence, ``suppress_layer3`` where the stage's output is tokens, and input sizes that do not tile
the patch grid or a Swin window.

Weights: ``pretrained=True`` is timm's own download (the Hugging Face hub and its cache);
``weights=PATH`` takes either this wrapper's export (``flrdf export --backbone-out``) or a timm
checkpoint of the whole model (.safetensors / .pth / .bin; timm's loader filters and adapts it). A
model whose pretrained normalisation is not ImageNet's (e.g. ViT augreg's 0.5/0.5) gets its input
re-normalised inside the backbone, so the data pipeline stays the same for every backbone.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from flrdf.frozen import FrozenStages

log = logging.getLogger(__name__)

PREFIX = "timm:"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STAGES = ("layer2", "layer3", "layer4")  # the last three feature stages, in order
# A few families the Train form offers; any other timm name works through its free-text field.
SUGGESTED = ("timm:convnext_atto", "timm:convnext_tiny", "timm:efficientnet_b0", "timm:resnet50",
             "timm:swin_tiny_patch4_window7_224", "timm:vit_small_patch16_224")


class BackboneRefused(ValueError):
    """A timm backbone cannot be built, or cannot do what the config asks of it."""


def is_timm(name: str) -> bool:
    return isinstance(name, str) and name.startswith(PREFIX)


def timm_name(name: str) -> str:
    return name[len(PREFIX):] if is_timm(name) else name


def _timm():
    try:
        import timm
    except ImportError:  # pragma: no cover - timm is in requirements.txt
        raise BackboneRefused("timm backbones need the timm package: pip install timm") from None
    return timm


def _create(name: str, *, pretrained: bool = False, file: str | None = None, output_stride: int | None = None,
            image_size: int | None = None) -> nn.Module:
    """timm.create_model(features_only=True) with the keywords the model takes; refusals name the backbone."""
    timm = _timm()
    if not timm.is_model(name):
        close = sorted(timm.list_models(f"*{name.split('_')[0]}*"))[:8] if name else []
        raise BackboneRefused(f"unknown timm model {name!r} (model.backbone=timm:{name})"
                              + (f"; similar names: {', '.join(close)}" if close else "")
                              + "; `python -c \"import timm; print(timm.list_models())\"` lists them")
    kw: dict = {"features_only": True, "pretrained": pretrained}
    if file:
        kw["pretrained_cfg_overlay"] = {"file": str(file)}
    if output_stride:
        kw["output_stride"] = output_stride
    if image_size:
        kw["img_size"] = image_size
    while True:
        try:
            return timm.create_model(name, **kw)
        except TypeError as exc:
            msg = str(exc)
            if "img_size" in msg and "img_size" in kw:
                kw.pop("img_size")  # a CNN: any input size
                continue
            if "output_stride" in msg:
                raise BackboneRefused(
                    f"timm:{name} cannot keep its last stage at the previous one's resolution (model.layer4_stride=1 "
                    f"needs timm's output_stride, which {name} does not take); use model.layer4_stride=2") from None
            raise
        except Exception as exc:
            if pretrained:  # a download or weights-file failure: the caller names it
                raise
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            raise BackboneRefused(f"timm:{name} has no feature stages FLRDF can use (timm cannot build it with "
                                  f"features_only=True: {type(exc).__name__}: {first}); choose a model with feature "
                                  "stages, e.g. timm:convnext_tiny") from None


def _level_module(net: nn.Module, name: str) -> nn.Module:
    """The module whose output is the feature stage timm calls ``name`` (its names are flattened in some wrappers)."""
    for candidate in (name, name.replace(".", "_"), "model." + name):
        try:
            return net.get_submodule(candidate)
        except AttributeError:
            continue
    raise BackboneRefused(f"cannot find the module {name!r} of a feature stage in {type(net).__name__}")


def _is_getter(net: nn.Module) -> bool:
    return type(net).__name__ == "FeatureGetterNet"


def _channels_last_stages(net: nn.Module) -> bool:
    fmt = getattr(net, "output_fmt", None)
    return fmt is not None and str(getattr(fmt, "value", fmt)).upper() == "NHWC" and not _is_getter(net)


def _windows(net: nn.Module, level_name: str) -> int | None:
    """The attention window of a windowed stage (Swin), in cells; None for other stages."""
    for m in _level_module(net, level_name).modules():
        w = getattr(m, "window_size", None)
        if w is not None:
            return int(w[0] if isinstance(w, (tuple, list)) else w)
    return None


def _patch_based(net: nn.Module) -> bool:
    return any(name.endswith("patch_embed") for name, _ in net.named_modules())


def _check_structure(name: str, net: nn.Module, image_size: int | None, frozen_stages: int,
                     suppress_layer3: bool) -> None:
    info = net.feature_info
    reductions, names = info.reduction(), info.module_name()
    if len(reductions) < 3:
        raise BackboneRefused(f"timm:{name} has {len(reductions)} feature stage(s); FLRDF needs three "
                              "(layer2, layer3, layer4 are its last three)")
    if image_size and _patch_based(net):
        last = reductions[-1]
        if image_size % last:
            lo, hi = image_size // last * last, (image_size // last + 1) * last
            raise BackboneRefused(f"data.image_size={image_size} does not tile timm:{name}'s grid: it must be a multiple "
                                  f"of {last} (its last stage's stride), e.g. {lo or hi} or {hi}")
        for red, level in zip(reductions, names):
            window = _windows(net, level)
            grid = image_size // red
            if window and grid > window and grid % window:
                raise BackboneRefused(
                    f"data.image_size={image_size} does not tile timm:{name}'s attention windows: its stage {level!r} has a "
                    f"{grid}x{grid} grid and {window}x{window} windows; take an image size whose grids are multiples of "
                    f"{window} at every stage (e.g. {window * reductions[-1]} or {2 * window * reductions[-1]})")
    if suppress_layer3 and _is_getter(net):
        raise BackboneRefused(f"model.suppress_layer3 cannot apply to timm:{name}: its second-to-last stage's output is "
                              "a token sequence inside the transformer, not a feature map; set model.suppress_layer3=false")
    if frozen_stages:
        if type(net).__name__ not in ("FeatureListNet", "FeatureDictNet"):
            raise BackboneRefused(f"model.frozen_stages={frozen_stages} is not supported for timm:{name} (its stages are "
                                  f"not a module sequence in timm's {type(net).__name__}); use model.frozen_stages=0")
        if 2 ** (frozen_stages + 1) not in reductions:
            raise BackboneRefused(f"model.frozen_stages={frozen_stages} needs a stage of stride {2 ** (frozen_stages + 1)} "
                                  f"in timm:{name} (its strides: {reductions})")


@functools.lru_cache(maxsize=64)
def check_timm_config(backbone: str, image_size: int, layer4_stride: int, frozen_stages: int,
                      suppress_layer3: bool) -> None:
    """Raise :class:`BackboneRefused` when ``timm:NAME`` cannot run this config (built on the meta device)."""
    name = timm_name(backbone)
    with torch.device("meta"):
        net = _create(name, output_stride=16 if layer4_stride == 1 else None, image_size=image_size)
    _check_structure(name, net, image_size, frozen_stages, suppress_layer3)


def pretrained_note(backbone: str) -> str | None:
    """A message when timm's pretrained weights of ``backbone`` are not in the local Hugging Face cache."""
    name = timm_name(backbone)
    try:
        from huggingface_hub import try_to_load_from_cache
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(name)
    except Exception:
        return None
    if cfg is None or not cfg.hf_hub_id:
        return None
    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        found = try_to_load_from_cache(cfg.hf_hub_id, filename)
        if isinstance(found, str):
            return None
    return (f"model.pretrained=true but timm's weights of {name} ({cfg.hf_hub_id}) are not in the Hugging Face cache: "
            "the job downloads them at start and stops with an error if it cannot. " + how_to_provide(backbone))


def how_to_provide(backbone: str) -> str:
    name = timm_name(backbone)
    try:
        from timm.models import get_pretrained_cfg

        hub = get_pretrained_cfg(name).hf_hub_id or name
    except Exception:
        hub = name
    return (f"Provide them: where there is network, `huggingface-cli download {hub}` fills the Hugging Face cache "
            f"(HF_HOME; copy it here), or download its model.safetensors and pass model.weights=PATH "
            f"(e.g. --set model.weights=/data/{name}.safetensors). "
            "Or train from random init on purpose with model.pretrained=false.")


class _TimmLoadReport(logging.Handler):
    """The keys timm's pretrained loader reports missing (it logs them instead of failing for feature models)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.missing: list[str] = []
        self._logger = logging.getLogger("timm.models._builder")

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith("Missing keys ("):
            self.missing += [k.strip() for k in text[len("Missing keys ("):text.index(")")].split(",") if k.strip()]

    def __enter__(self):
        self._level = self._logger.level
        self._logger.setLevel(logging.INFO)
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc):
        self._logger.removeHandler(self)
        self._logger.setLevel(self._level)
        return False


def _from_file(build: Callable[..., nn.Module], tname: str, weights: str) -> nn.Module:
    """The feature model with ``weights``: this wrapper's own export (``flrdf export --backbone-out``), or a timm
    checkpoint of the whole model, which timm's loader adapts (the head dropped, embeddings resampled)."""
    from flrdf.backbone import load_state_dict_file

    refused = f"weights file {weights} does not match {PREFIX}{tname}"
    net = build()
    state = load_state_dict_file(weights)
    if set(state) == set(net.state_dict()):
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise ValueError(f"{refused}: {str(exc)[:300]}") from None
        return net
    with _TimmLoadReport() as report:
        try:
            net = build(pretrained=True, file=str(Path(weights)))
        except Exception as exc:
            raise ValueError(f"{refused}: {str(exc).splitlines()[0][:300]}") from None
    from timm.models import get_pretrained_cfg

    heads = getattr(get_pretrained_cfg(tname), "classifier", None) or ("head", "fc", "classifier")
    heads = tuple(h + "." for h in ((heads,) if isinstance(heads, str) else heads))
    missing = [k for k in report.missing if not k.startswith(heads)]  # the head: not used
    if missing:  # timm loads features non-strictly: a file of another model would pass
        raise ValueError(f"{refused}: it lacks {len(missing)} of the model's tensors ({', '.join(missing[:5])}, ...)")
    return net


class TimmBackbone(FrozenStages, nn.Module):
    """A timm model's feature stages; ``forward`` returns the last stage's map (B, C, H/s, W/s)."""

    def __init__(self, name: str, pretrained: bool = False, weights: str | None = None, layer4_stride: int = 2,
                 frozen_stages: int = 0, image_size: int | None = None, suppress_layer3: bool = False):
        super().__init__()
        from flrdf.backbone import PretrainedUnavailable

        if layer4_stride not in (1, 2):
            raise ValueError(f"layer4_stride must be 1 or 2, got {layer4_stride}")
        self.name = PREFIX + timm_name(name)
        tname = timm_name(name)
        output_stride = 16 if layer4_stride == 1 else None
        build = functools.partial(_create, tname, output_stride=output_stride, image_size=image_size)
        if weights:
            net = _from_file(build, tname, weights)
            self.init = f"file:{weights}"
        elif pretrained:
            try:
                net = build(pretrained=True)
            except BackboneRefused:
                raise
            except Exception as exc:  # offline, no cache: stop, never fall back to random init silently
                reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
                raise PretrainedUnavailable(
                    f"model.pretrained=true but timm's weights of {tname} could not be fetched "
                    f"({type(exc).__name__}: {reason}). " + how_to_provide(name)) from None
            self.init = f"timm:{net.pretrained_cfg.get('hf_hub_id') or tname}"
        else:
            log.info("backbone %s starts from random init (no pretrained weights asked for)", self.name)
            net = build()
            self.init = "random"
        _check_structure(tname, net, image_size, frozen_stages, suppress_layer3)
        self.net = net
        info = net.feature_info
        self._strides = dict(zip(STAGES, info.reduction()[-3:]))
        self._channels = dict(zip(STAGES, info.channels()[-3:]))
        self.out_channels = self._channels["layer4"]
        self.stride = self._strides["layer4"]
        self.image_size = image_size
        self._nhwc = _channels_last_stages(net)
        self._getter = _is_getter(net)
        names = info.module_name()
        self._level_names = names
        self._output_stride = output_stride
        self._hw_cache: dict = {}
        self._twin: dict = {}  # the meta-device twin of feature_hw (a dict: not a registered submodule)
        first_conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
        self._patchify = bool(first_conv is not None and tuple(first_conv.kernel_size) == tuple(first_conv.stride)
                              and tuple(first_conv.padding) == (0, 0) and first_conv.stride[0] > 1)
        self._after: Callable | None = None
        self._kept: dict[str, torch.Tensor] = {}
        if not self._getter:
            _level_module(net, names[-2]).register_forward_hook(self._layer3_hook)
        # The input re-normalised from ImageNet's statistics to the model's own, where they differ.
        mean = tuple(net.pretrained_cfg.get("mean", IMAGENET_MEAN))[:3]
        std = tuple(net.pretrained_cfg.get("std", IMAGENET_STD))[:3]
        self._renorm = mean != IMAGENET_MEAN or std != IMAGENET_STD
        scale = torch.tensor(IMAGENET_STD) / torch.tensor(std)
        shift = (torch.tensor(IMAGENET_MEAN) - torch.tensor(mean)) / torch.tensor(std)
        self.register_buffer("_in_scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_in_shift", shift.view(1, 3, 1, 1), persistent=False)
        self.freeze([])
        if frozen_stages:
            until = names[info.reduction().index(2 ** (frozen_stages + 1))]
            until = until.replace(".", "_") if until.replace(".", "_") in dict(net.named_children()) else until
            children = []
            for child_name, child in net.named_children():
                children.append(child)
                if child_name == until:
                    break
            self.freeze(children)

    def stage_stride(self, stage: str) -> int:
        """Input pixels per cell of ``stage``'s output (layer2/3/4: the last three feature stages)."""
        return int(self._strides[stage])

    def stage_channels(self, stage: str) -> int:
        return int(self._channels[stage])

    def feature_hw(self, image_hw: tuple[int, int], stage: str = "layer4") -> tuple[int, int]:
        """Cells of ``stage``'s map for an ``image_hw`` input, as the network computes them (its own padding and
        rounding), read from a weightless twin on the meta device: no computation, no memory."""
        key = (int(image_hw[0]), int(image_hw[1]))
        if key not in self._hw_cache:
            twin = self._twin.get("net")
            if twin is None:
                with torch.device("meta"):
                    twin = self._twin["net"] = _create(timm_name(self.name), output_stride=self._output_stride,
                                                       image_size=self.image_size)
            with torch.no_grad():
                feats = twin(torch.empty(1, 3, *key, device="meta"))
            self._hw_cache[key] = {st: tuple(int(v) for v in (f.shape[1:3] if self._nhwc else f.shape[2:4]))
                                   for st, f in zip(STAGES, feats[-3:])}
        return self._hw_cache[key][stage]

    def cell_centre(self, stage: str = "layer4") -> float:
        """c in centre(cell j) = j*s + c (input pixels, pixel x spanning [x, x+1)). A patch embedding (its first
        convolution's kernel equals its stride, no padding: ViT, Swin, ConvNeXt) puts cell j on the middle of its
        patch, j*s + s/2; a stem of padded strided convolutions centres output i on input 2i, as a ResNet's:
        j*s + 0.5 (flrdf.boxes.rf_centre)."""
        from flrdf.boxes import rf_centre

        s = self.stage_stride(stage)
        return s / 2 if self._patchify else rf_centre(s)

    @property
    def cam_target(self) -> nn.Module:
        """The module whose output is the last feature stage (grad-cam's target layer)."""
        return _level_module(self.net, self._level_names[-1])

    @property
    def cam_reshape(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """grad-cam's ``reshape_transform`` for the target's output (None: it is already (B, C, h, w))."""
        return self._cam_reshape if (self._getter or self._nhwc) else None

    def _cam_reshape(self, output: torch.Tensor) -> torch.Tensor:
        if self._getter and output.dim() == 3:  # ViT tokens: drop the class/register tokens, reshape the patches
            model = self.net.model
            prefix = int(getattr(model, "num_prefix_tokens", 1))
            grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
            tokens = output[:, prefix:]
            h, w = grid if grid is not None else (int(tokens.shape[1] ** 0.5),) * 2
            return tokens.reshape(tokens.shape[0], h, w, -1).permute(0, 3, 1, 2)
        if self._nhwc and output.dim() == 4:
            return output.permute(0, 3, 1, 2)
        return output

    def _nchw(self, t: torch.Tensor) -> torch.Tensor:
        return t.permute(0, 3, 1, 2) if self._nhwc else t

    def _layer3_hook(self, _module, _inputs, output):
        after = self._after
        if after is None:
            return None
        before = self._nchw(output)
        self._kept["layer3"] = before
        suppressed = after(before)
        return suppressed.permute(0, 2, 3, 1) if self._nhwc else suppressed

    def forward(self, x: torch.Tensor, after_layer3: Callable[[torch.Tensor], torch.Tensor] | None = None,
                taps: tuple[str, ...] | None = None):
        """The last stage's output; with ``taps``, (it, {stage: output}) for the stages named (layer2;
        layer3 before ``after_layer3``; layer3_after: after it)."""
        if after_layer3 is not None and self._getter:
            raise BackboneRefused(f"{self.name}: no suppression after layer3 (its stages are transformer tokens)")
        if self._renorm:
            x = x * self._in_scale.to(x.dtype) + self._in_shift.to(x.dtype)
        self._after, self._kept = after_layer3, {}
        try:
            feats = self.net(x)
        finally:
            self._after = None
        kept_before = self._kept.pop("layer3", None)
        a2, a3, out = (self._nchw(f) for f in feats[-3:])
        if taps is None:
            return out
        kept = {"layer2": a2, "layer3": a3 if kept_before is None else kept_before, "layer3_after": a3}
        return out, {k: kept[k] for k in taps}
