"""``model.box_refine=auto``: GrabCut refinement kept only where it raises loc_acc on the validation split.

GrabCut snaps the map's box to the object's edges where the object stands out from its
surroundings (the flat-coloured synthetic birds: +16 points) and drifts into look-alike clutter
where it does not (small objects on busy backgrounds: -4 points). Which one a dataset is can only
be measured, and only on images that are not the test split. At the end of a run whose config says
``auto`` the trainer scores both boxes on the validation split (``data.val_fraction``) in one pass
(:func:`measure`), resolves ``auto`` to ``grabcut`` when the refined box's loc_acc is strictly
higher and to ``none`` otherwise (:func:`decide`), stores the resolved value in the checkpoint's
config and the decision with both figures in its ``extra`` and in status.json
(``refine_decision``); ``export`` carries it into the model file. ``eval`` and ``loc-eval`` say
which box they report and why (:func:`box_statement`). A model whose ``auto`` was never resolved
(no validation split) reports the map's box and says so. ``scripts/resolve_refine.py`` resolves an
existing model file the same way.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist

from flrdf.boxes import box_iou
from flrdf.engine.checkpoint import unwrap
from flrdf.engine.distributed import collective_device
from flrdf.refine import applied


@dataclass(frozen=True)
class RefineDecision:
    requested: str            # the config's model.box_refine (auto)
    decision: str             # grabcut | none
    split: str                # where both boxes were scored
    n_box: int
    tau: float
    loc_acc_refined: float    # IoU >= 0.5 rate of the GrabCut-refined box
    loc_acc_map: float        # ... of the map's own box
    mean_iou_refined: float
    mean_iou_map: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "RefineDecision | None":
        if not data:
            return None
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def decide(loc_acc_refined: float, loc_acc_map: float) -> str:
    """GrabCut only where it raises loc_acc; a tie keeps the map's box (no gain, a CPU pass per image saved)."""
    return "grabcut" if loc_acc_refined > loc_acc_map else "none"


@contextmanager
def refining(model):
    """Inside this block ``model`` (eval mode) reports GrabCut-refined boxes whatever its box_refine says."""
    cfg = unwrap(model).cfg
    saved, cfg.box_refine = cfg.box_refine, "grabcut"
    try:
        yield model
    finally:
        cfg.box_refine = saved


def tally(refined: torch.Tensor, map_boxes: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Sums (n_box, hits refined, hits map, IoU refined, IoU map) of one batch of boxes (B, 4) against ``gt``."""
    r, m = box_iou(refined.float(), gt.float()), box_iou(map_boxes.float(), gt.float())
    return torch.tensor([float(len(gt)), float((r >= 0.5).sum()), float((m >= 0.5).sum()), float(r.sum()),
                         float(m.sum())], dtype=torch.float64)


def figures(sums: torch.Tensor) -> dict:
    """:func:`tally`'s sums as loc_acc (IoU >= 0.5) and mean IoU of each box."""
    n, hr, hm, ir, im = sums.tolist()
    k = max(n, 1.0)
    return {"n_box": int(n), "loc_acc_refined": round(hr / k, 6), "loc_acc_map": round(hm / k, 6),
            "mean_iou_refined": round(ir / k, 6), "mean_iou_map": round(im / k, 6)}


@torch.no_grad()
def measure(model, loader, precision, tau: float | None = None) -> dict:
    """loc_acc and mean IoU of the refined box and of the map's own box over ``loader``, in one pass
    (the forward returns both); sums all-reduced across DDP ranks."""
    model.eval()
    sums = torch.zeros(5, dtype=torch.float64)
    with refining(model):
        for batch in loader:
            mask = batch["has_box"].bool()
            if not mask.any():
                continue
            source = {"source": precision.prepare(batch["source"])} if "source" in batch else {}
            with precision.autocast():
                out = model(precision.prepare(batch["image"]), tau=tau, **source)
            sums += tally(out.boxes.cpu()[mask], out.map_boxes.cpu()[mask], batch["box"][mask])
    if dist.is_available() and dist.is_initialized():
        packed = sums.to(collective_device(unwrap(model)))
        dist.all_reduce(packed)
        sums = packed.cpu()
    return figures(sums)


def resolve(model, loader, precision, split: str = "val") -> RefineDecision | None:
    """Measure both boxes on ``loader`` and set ``model.cfg.box_refine`` to the decision; None (and the
    model left as it is) when the split has no boxes."""
    cfg = unwrap(model).cfg
    requested = cfg.box_refine
    figures = measure(model, loader, precision)
    if not figures["n_box"]:
        return None
    decision = RefineDecision(requested, decide(figures["loc_acc_refined"], figures["loc_acc_map"]), split,
                              tau=float(cfg.tau), **figures)
    cfg.box_refine = decision.decision
    return decision


def loaded_statement(loaded, tau: float | None = None) -> str:
    """:func:`box_statement` of a :class:`flrdf.engine.checkpoint.LoadedModel` (its recorded decision, its overrides)."""
    return box_statement(loaded.model.cfg.box_refine, (loaded.extra or {}).get("refine_decision"),
                         "box_refine" in loaded.overridden, tau)


def box_statement(box_refine: str, decision: dict | RefineDecision | None = None, overridden: bool = False,
                  tau: float | None = None) -> str:
    """One line saying which box FLRDF's row reports and why (``eval``'s JSON ``box``, loc-eval's table).
    ``box_refine``: the model's value now; ``decision``: the recorded validation decision, if any;
    ``overridden``: box_refine was set on the command line; ``tau``: the tau scored now."""
    d = RefineDecision.from_dict(decision) if isinstance(decision, dict) else decision
    what = "GrabCut-refined" if applied(box_refine) == "grabcut" else "the map's own box"
    if overridden:
        return f"box: {what} (--set model.box_refine={box_refine})"
    if box_refine == "auto":
        return (f"box: {what} (model.box_refine=auto is unresolved: no validation measurement is recorded for "
                "this model, e.g. data.val_fraction was 0)")
    if d is None or d.decision != box_refine:
        return f"box: {what} (model.box_refine={box_refine} in the model's config; not decided on validation)"
    pct = lambda v: f"{100 * v:.1f}"
    if box_refine == "grabcut":
        why = f"{d.split} loc_acc {pct(d.loc_acc_refined)} vs {pct(d.loc_acc_map)} for the map's box"
    else:
        why = f"{d.split} loc_acc {pct(d.loc_acc_map)} vs {pct(d.loc_acc_refined)} GrabCut-refined"
    note = "" if tau is None or abs(tau - d.tau) < 1e-9 else f"; measured at tau {d.tau:g}, scored now at {tau:g}"
    return f"box: {what} ({why}, n = {d.n_box}; model.box_refine={d.requested}{note})"
