"""The FLRDF network: three branches sharing one backbone (FLRDF.md).

raw branch      image -> backbone -> suppression (DRS) -> GAP -> head_raw
FL module       localization map = channel mean of the suppressed features
                (model.loc_layer: or of layer3 / layer2, finer grids; model.loc_map=ddt:
                the descriptors' first principal component instead, flrdf.ddt),
                box = largest region of map >= tau, crop + resize (no gradient);
                with a ``source`` (the same view at a higher resolution, data.source_size)
                the crop is cut from the source instead (flrdf.zoom); in evaluation
                the reported box may be GrabCut-refined (model.box_refine, flrdf.refine),
                the crop still comes from the map's box
object branch   crop -> backbone -> GAP -> head_object
RDF branch      crop (or the image, for the raw+rdf ablation) shuffled in an
                n x n grid -> backbone -> GAP -> head_jigsaw

Training and evaluation return the same :class:`FLRDFOutput`, read by the loss,
the evaluator and the dashboard alike. No layer size depends on the input size.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from flrdf.backbone import build_backbone
from flrdf.boxes import BoxGrid, box_grid, boxes_from_maps, crop_resize, normalize_maps
from flrdf.config import ModelConfig
from flrdf.ddt import DescriptorPCA
from flrdf.jigsaw import check_grid, shuffle_patches
from flrdf.refine import RefineSettings, applied, refine_boxes
from flrdf.suppression import Suppression
from flrdf.zoom import check_source, crop_from_source

def scale_grad(x: torch.Tensor, k: float) -> torch.Tensor:
    """Identity in value; the gradient through it is multiplied by ``k``."""
    return x * k + (x * (1.0 - k)).detach()


PAPER_MAP_SOURCE = "layer4, after suppression"  # FLRDF.map_source of the paper's FL map


BRANCHES = {
    "raw": ("raw",),
    "raw+fl": ("raw", "object"),
    "raw+rdf": ("raw", "jigsaw"),
    "full": ("raw", "object", "jigsaw"),
}


class Features(NamedTuple):
    x: torch.Tensor       # layer4, before suppression
    xs: torch.Tensor      # layer4, after suppression (the raw branch pools it)
    loc: torch.Tensor     # the stage the FL map is the channel mean of (model.loc_layer)
    plain: torch.Tensor   # that stage before suppression


@dataclass
class FLRDFOutput:
    logits_raw: torch.Tensor                      # (B, K)
    logits: torch.Tensor                          # (B, K) combined prediction
    loc_map: torch.Tensor                         # (B, h, w) the FL map (model.loc_layer), normalised to [0, 1]
    plain_map: torch.Tensor                       # (B, h, w) same before suppression (same grid)
    paper_map: torch.Tensor | None = None         # (B, h4, w4) the paper's map: channel mean of X' (layer4, after
                                                  # suppression), whatever the model's loc_layer / loc_map;
                                                  # evaluation only (None in training: the loss never reads it)
    paper_plain_map: torch.Tensor | None = None   # (B, h4, w4) channel mean of X (layer4, before suppression)
    boxes: torch.Tensor | None = None             # (B, 4) x1 y1 x2 y2 in input pixels: FLRDF's foreground box
                                                  # (GrabCut-refined in evaluation when model.box_refine=grabcut)
    map_boxes: torch.Tensor | None = None         # (B, 4) the map's own box, which the object crop is cut from
    logits_object: torch.Tensor | None = None
    logits_jigsaw: torch.Tensor | None = None
    object_images: torch.Tensor | None = None     # (B, 3, H, W) the enlarged foreground
    jigsaw_images: torch.Tensor | None = None     # (B, 3, H, W) its shuffled patches
    pooled_raw: torch.Tensor | None = None        # (B, C) GAP of X', the raw head's input (analysis: feature maps)
    pooled_object: torch.Tensor | None = None     # (B, C) GAP of the object crop's layer4, the object head's input

    def branch_logits(self) -> dict[str, torch.Tensor]:
        out = {"raw": self.logits_raw, "object": self.logits_object, "jigsaw": self.logits_jigsaw}
        return {k: v for k, v in out.items() if v is not None}


class FLRDF(nn.Module):
    def __init__(self, cfg: ModelConfig, num_classes: int, image_size: int | None = None):
        """``image_size``: the network's input size (data.image_size); timm transformers build their patch grid
        for it (CNNs take any size)."""
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if cfg.branches not in BRANCHES:
            raise ValueError(f"branches must be one of {sorted(BRANCHES)}, got {cfg.branches!r}")
        self.cfg = cfg
        self.num_classes = num_classes
        self.branches = BRANCHES[cfg.branches]
        self.backbone = build_backbone(cfg, image_size)
        c = self.backbone.out_channels
        self.suppression = Suppression(c, cfg.suppression, cfg.delta, cfg.gate_init)
        self.suppression3 = (
            Suppression(self.backbone.stage_channels("layer3"), cfg.suppression, cfg.delta, cfg.gate_init)
            if cfg.suppress_layer3 and cfg.suppression != "none" else None
        )
        self.heads = nn.ModuleDict({name: nn.Linear(c, num_classes) for name in self.branches})
        # model.loc_map=ddt: running descriptor statistics of the loc stage (buffers: saved with the weights)
        self.ddt = (DescriptorPCA(self.backbone.stage_channels(cfg.loc_layer), cfg.ddt_momentum)
                    if cfg.loc_map == "ddt" else None)
        self.aux_backbone_scale = 1.0  # loss.aux_backbone_scale, set by the trainer (training only)
        self._refine_off = False       # without_refinement(): the trainer's per-epoch evaluations

    # ---- parameter groups: pretrained backbone vs new layers (different learning rates); frozen stages in neither
    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        ids = {id(p) for p in self.backbone.parameters()}
        return backbone, [p for p in self.parameters() if id(p) not in ids]

    # ---- the pieces, usable alone (the dashboard and the CAM baselines call them)
    def raw_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(X, X') - layer4 features before and after suppression."""
        f = self.features(images)
        return f.x, f.xs

    def features(self, images: torch.Tensor) -> Features:
        """layer4 before/after suppression, and the features the FL map is the channel mean of
        (``loc``; ``plain``: the same stage before suppression)."""
        layer = self.cfg.loc_layer
        taps = {"layer4": (), "layer3": ("layer3", "layer3_after"), "layer2": ("layer2",)}[layer]
        x, kept = self.backbone(images, after_layer3=self.suppression3, taps=taps)
        xs = self.suppression(x)
        if layer == "layer4":
            return Features(x, xs, xs, x)
        if layer == "layer3":
            return Features(x, xs, kept["layer3_after"], kept["layer3"])
        return Features(x, xs, kept["layer2"], kept["layer2"])

    def maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(FL map, plain map) at their grid's resolution, each (B, h, w) in [0, 1]."""
        f = self.features(images)
        return self.fl_map(f.loc), self.channel_map(f.plain)

    @property
    def map_source(self) -> str:
        """What the FL map is, in words (the dashboard's captions)."""
        layer = self.cfg.loc_layer
        if layer == "layer4":
            source = PAPER_MAP_SOURCE
        else:
            source = f"{layer}, {'after' if layer == 'layer3' and self.suppression3 is not None else 'no'} suppression"
        return source if self.ddt is None else f"{source}, DDT"

    @property
    def box_source(self) -> str:
        """The map the boxes come from, named for people: the paper's, or what the project adds beyond it."""
        if self.uses_paper_map:
            return "the paper's map X' (layer4, after suppression)"
        layer = self.cfg.loc_layer
        kind = "DDT map" if self.ddt is not None else "channel-mean map"
        after = " of X'" if layer == "layer4" else (" after layer3 suppression" if layer == "layer3" and
                                                    self.suppression3 is not None else "")
        return f"{layer} {kind}{after} (beyond the paper)"

    @property
    def loc_stride(self) -> int:
        """Input pixels per cell of the FL map (the stride of ``model.loc_layer``)."""
        return self.backbone.stage_stride(self.cfg.loc_layer)

    @staticmethod
    def pool(x: torch.Tensor) -> torch.Tensor:
        return x.float().mean(dim=(2, 3))

    @staticmethod
    def channel_map(features: torch.Tensor) -> torch.Tensor:
        """Channel mean of a feature map, min-max normalised per image: (B, h, w) in [0, 1]."""
        return normalize_maps(features.detach().float().mean(dim=1))

    def fl_map(self, loc_features: torch.Tensor) -> torch.Tensor:
        """The FL map (B, h, w) in [0, 1] of the features of ``model.loc_layer``: their channel mean
        (``model.loc_map=mean``) or their DDT projection (``ddt``)."""
        return self.channel_map(loc_features) if self.ddt is None else self.ddt(loc_features)

    @property
    def uses_paper_map(self) -> bool:
        """Whether the FL map (the box source) is the paper's: the channel mean of layer4's X'."""
        return self.cfg.loc_layer == "layer4" and self.ddt is None

    def paper_grid(self, image_hw: tuple[int, int]) -> BoxGrid:
        """The grid the paper's layer4 maps (X', X) are boxed on: layer4 cells x ``map_upsample``."""
        return self.stage_grid("layer4", image_hw, self.cfg.map_upsample)

    def paper_boxes(self, maps: torch.Tensor, image_hw: tuple[int, int], tau: float | None = None) -> torch.Tensor:
        """Boxes (B, 4) of layer4 maps in [0, 1] by the paper's rule: tau, largest region, cell centres."""
        tau = self.cfg.tau if tau is None else tau
        return boxes_from_maps(maps, tau, image_hw, upsample=self.cfg.map_upsample, normalize=False,
                               grid=self.paper_grid(image_hw))

    def stage_grid(self, stage: str, image_hw: tuple[int, int], upsample: int = 1) -> BoxGrid:
        """The cells of ``stage``'s map on an ``image_hw`` input, mapped to pixels by the backbone's geometry
        (its real stride, its map size, where its cells are centred), upsampled by ``upsample``."""
        hw = (int(image_hw[0]), int(image_hw[1]))
        b = self.backbone
        return box_grid(b.stage_stride(stage), hw, upsample, b.feature_hw(hw, stage), b.cell_centre(stage))

    def box_grid(self, image_hw: tuple[int, int]) -> BoxGrid:
        """The grid every map of this model is thresholded on (its own and the CAMs'):
        cells of ``model.loc_layer`` (layer4: the backbone's stride) x ``map_upsample``,
        mapped to pixels by their receptive-field centres."""
        return self.stage_grid(self.cfg.loc_layer, image_hw, self.cfg.map_upsample)

    def localize(self, loc_features: torch.Tensor, image_hw: tuple[int, int], tau: float | None = None):
        """Localization map (B, h, w) in [0, 1] and boxes (B, 4) in input pixels, from the features
        of ``model.loc_layer`` (:meth:`features`' ``loc``)."""
        loc_map = self.fl_map(loc_features)
        tau = self.cfg.tau if tau is None else tau
        boxes = boxes_from_maps(loc_map, tau, image_hw, upsample=self.cfg.map_upsample, normalize=False,
                                grid=self.box_grid(image_hw))
        return loc_map, boxes

    @property
    def refines(self) -> bool:
        """Whether this model's boxes are GrabCut-refined now (``model.box_refine``; evaluation only; an
        unresolved ``auto`` does not refine)."""
        return applied(self.cfg.box_refine) == "grabcut" and not self.training and not self._refine_off

    @contextmanager
    def without_refinement(self):
        """Report the map's own boxes inside this block: the trainer's per-epoch evaluations stay cheap
        and comparable from epoch to epoch (``eval``, ``loc-eval`` and Inspect refine)."""
        saved, self._refine_off = self._refine_off, True
        try:
            yield self
        finally:
            self._refine_off = saved

    @torch.compiler.disable  # OpenCV, per image: not traceable
    def refine(self, view: torch.Tensor, loc_map: torch.Tensor, boxes: torch.Tensor, image_hw: tuple[int, int],
               tau: float | None = None) -> torch.Tensor:
        """The map's boxes (input pixels) snapped to the object's edges on ``view`` (the input or its
        source) by GrabCut seeded with ``loc_map`` at ``tau`` (flrdf.refine)."""
        tau = self.cfg.tau if tau is None else tau
        grid = self.stage_grid(self.cfg.loc_layer, image_hw)
        return refine_boxes(view, loc_map, boxes, grid, tau, RefineSettings.of(self.cfg))

    def _aux(self, features: torch.Tensor) -> torch.Tensor:
        """Object/jigsaw features: identity forward; backward scales their gradient on the shared
        backbone by ``aux_backbone_scale`` (their heads still get the full gradient)."""
        k = float(self.aux_backbone_scale)
        return features if k == 1.0 or not features.requires_grad else scale_grad(features, k)

    def combine(self, logits: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [logits[p] for p in self.cfg.combine.split("+") if p in logits]
        if not parts:
            return logits["raw"]
        return torch.stack(parts).sum(dim=0)

    def forward(
        self,
        images: torch.Tensor,
        *,
        tau: float | None = None,
        jigsaw_n: int | None = None,
        with_jigsaw: bool | None = None,
        raw_only: bool = False,
        with_boxes: bool | None = None,
        perms: torch.Tensor | None = None,
        source: torch.Tensor | None = None,
    ) -> FLRDFOutput:
        """Training: every configured branch. Evaluation: raw + object (+ jigsaw when
        ``with_jigsaw``). ``raw_only`` runs the raw branch alone (warm-up, baseline);
        boxes are computed when the object branch needs them or, by default, in evaluation.
        ``source``: the same view at a higher resolution (B, 3, S, S); the object crop (and so
        the jigsaw input) is cut from it; without it, from ``images``."""
        h, w = images.shape[-2:]
        if source is not None:
            check_source(images, source)
        f = self.features(images)
        if self.ddt is not None and self.training:
            self.ddt.update(f.loc)
        xs = f.xs
        pooled = {"raw": self.pool(xs)}
        logits = {"raw": self.heads["raw"](pooled["raw"])}
        plain_map = self.channel_map(f.plain)
        active = ("raw",) if raw_only else self.branches
        use_object = "object" in active
        use_jigsaw = "jigsaw" in active and (self.training if with_jigsaw is None else with_jigsaw)
        need_boxes = use_object or (not self.training if with_boxes is None else with_boxes)

        boxes = object_images = jigsaw_images = None
        if need_boxes:
            loc_map, boxes = self.localize(f.loc, (h, w), tau)
        else:
            loc_map = self.fl_map(f.loc)

        # Separate passes (not one concatenated batch): on CPU a doubled batch costs more than twice the time.
        if use_object:
            if source is None:
                object_images = crop_resize(images.detach(), boxes)
            else:
                object_images = crop_from_source(source.detach(), boxes, (h, w))
            pooled["object"] = self.pool(self._aux(self.backbone(object_images)))
            logits["object"] = self.heads["object"](pooled["object"])
        if use_jigsaw:
            n = self.cfg.jigsaw_n if jigsaw_n is None else jigsaw_n
            check_grid((h, w), n)
            whole = object_images if object_images is not None else images.detach()
            jigsaw_images = shuffle_patches(whole, n, perms=perms)
            logits["jigsaw"] = self.heads["jigsaw"](self.pool(self._aux(self.backbone(jigsaw_images))))

        # The reported box may be refined; the object branch keeps cropping the map's box it was trained on.
        reported = boxes
        if boxes is not None and self.refines:
            reported = self.refine(images if source is None else source, loc_map, boxes, (h, w), tau)
        return FLRDFOutput(
            logits_raw=logits["raw"],
            logits=self.combine(logits),
            loc_map=loc_map,
            plain_map=plain_map,
            paper_map=None if self.training else self.channel_map(xs),   # evaluation's tables only
            paper_plain_map=None if self.training else self.channel_map(f.x),
            boxes=reported,
            map_boxes=boxes,
            logits_object=logits.get("object"),
            logits_jigsaw=logits.get("jigsaw"),
            object_images=object_images,
            jigsaw_images=jigsaw_images,
            pooled_raw=pooled["raw"],
            pooled_object=pooled.get("object"),
        )


def build_model(cfg: ModelConfig, num_classes: int, image_size: int | None = None) -> FLRDF:
    return FLRDF(cfg, num_classes, image_size)
