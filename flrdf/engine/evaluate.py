"""Evaluation: top-1/top-5 of the combined prediction and of each branch, and
localization accuracy of the predicted boxes (IoU >= 0.5, the paper's Table 3)
and mean IoU where the split has boxes, and the suppression gate's distribution over
the split (``gate_mean``, ``gate_p10``, ``gate_p50``, ``gate_p90``; None without
suppression). Sums are all-reduced across DDP ranks in one collective on the model's
device (NCCL reduces CUDA tensors only).

``top1_jigsaw`` (the jigsaw branch fed a shuffled object crop) costs one more backbone
pass per image, about half again the evaluation's time, so it is computed only when
asked (``jigsaw=True``: ``eval --jigsaw``, ``runtime.eval_jigsaw`` in training);
otherwise the key is present with the value None."""

from __future__ import annotations

import torch
import torch.distributed as dist

from flrdf.boxes import box_iou
from flrdf.engine.checkpoint import unwrap
from flrdf.engine.distributed import collective_device
from flrdf.engine.step import Precision
from flrdf.jigsaw import random_permutations
from flrdf.suppression import GateTally, capture_gates, tally_gates

EVAL_KEYS = ("top1", "top5", "top1_raw", "top1_object", "top1_jigsaw", "n", "loc_acc", "mean_iou")
GATE_KEYS = ("gate_mean", "gate_p10", "gate_p50", "gate_p90")


@torch.no_grad()
def evaluate(model, loader, precision: Precision, tau: float | None = None, progress=None,
             jigsaw: bool = False) -> dict:
    """Metrics of ``model`` over ``loader`` (see the module docstring); ``jigsaw``: also ``top1_jigsaw``."""
    model.eval()
    keys = ("top1", "top5", "top1_raw", "top1_object", "top1_jigsaw", "n", "n_box", "loc_hits", "iou_sum")
    sums = torch.zeros(len(keys), dtype=torch.float64)
    has = {"object": False, "jigsaw": False}
    n = unwrap(model).cfg.jigsaw_n
    gen = torch.Generator().manual_seed(0)  # the same shuffles every evaluation: reproducible top1_jigsaw
    gates = GateTally()
    with capture_gates(unwrap(model)) as seen:
        _run(model, loader, precision, tau, progress, n, gen, keys, sums, has, gates, seen, jigsaw)
    if dist.is_available() and dist.is_initialized():
        # one collective, on the model's device: the sums, the gate histogram and the gate total
        packed = torch.cat([sums, gates.counts.double(), torch.tensor([gates.total], dtype=torch.float64)])
        packed = packed.to(collective_device(unwrap(model)))
        dist.all_reduce(packed)
        packed = packed.cpu()
        sums = packed[:len(keys)]
        gates.counts, gates.total = packed[len(keys):-1].clone(), float(packed[-1])
    s = dict(zip(keys, sums.tolist()))
    n = max(s["n"], 1)
    result = {"top1": s["top1"] / n, "top5": s["top5"] / n, "top1_raw": s["top1_raw"] / n,
              "top1_object": s["top1_object"] / n if has["object"] else None,
              "top1_jigsaw": s["top1_jigsaw"] / n if has["jigsaw"] else None, "n": int(s["n"])}
    if s["n_box"] > 0:
        result.update(loc_acc=s["loc_hits"] / s["n_box"], mean_iou=s["iou_sum"] / s["n_box"], n_box=int(s["n_box"]))
    else:
        result.update(loc_acc=None, mean_iou=None, n_box=0)
    g = gates.summary()
    result.update({f"gate_{k}": (g[k] if g else None) for k in ("mean", "p10", "p50", "p90")})
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in result.items()}


def _run(model, loader, precision, tau, progress, n, gen, keys, sums, has, gates, seen, jigsaw) -> None:
    for batch in loader:
        images = precision.prepare(batch["image"])
        labels = batch["label"].to(precision.device)
        perms = random_permutations(images.shape[0], n * n, device=images.device, generator=gen) if jigsaw else None
        source = {"source": precision.prepare(batch["source"])} if "source" in batch else {}
        with precision.autocast():
            out = model(images, tau=tau, with_jigsaw=jigsaw, perms=perms, **source)
        k = min(5, out.logits.shape[1])
        top = out.logits.float().topk(k, dim=1).indices
        row = {
            "top1": (top[:, 0] == labels).sum(),
            "top5": (top == labels[:, None]).any(dim=1).sum(),
            "top1_raw": (out.logits_raw.argmax(1) == labels).sum(),
            "n": labels.numel(),
        }
        for name, logits in (("object", out.logits_object), ("jigsaw", out.logits_jigsaw)):
            if logits is not None:
                has[name] = True
                row[f"top1_{name}"] = (logits.argmax(1) == labels).sum()
        mask = batch["has_box"].to(precision.device)
        if mask.any() and out.boxes is not None:
            iou = box_iou(out.boxes[mask], batch["box"].to(precision.device)[mask])
            row.update(n_box=mask.sum(), loc_hits=(iou >= 0.5).sum(), iou_sum=iou.sum())
        sums += torch.tensor([float(row.get(key, 0)) for key in keys], dtype=torch.float64)
        tally_gates(gates, seen)
        if progress is not None:
            progress(labels.numel())
