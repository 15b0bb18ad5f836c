"""flrdf.engine.evaluate.evaluate on a fake model whose logits and boxes are known in advance:
the accuracies and the localization figures must come out exactly as counted by hand."""

from __future__ import annotations

import torch
from torch import nn

from flrdf.config import ModelConfig
from flrdf.engine.evaluate import evaluate
from flrdf.engine.step import precision_for
from flrdf.model import FLRDFOutput

K = 7
LABELS = [0, 1, 2, 3, 4, 5]
COMBINED_RANK = [1, 1, 3, 5, 6, 7]         # rank of the true class: top-1 hits 0, 1; top-5 hits 0..3
RAW_HIT = [True, False, True, False, True, False]
OBJECT_HIT = [False, True, False, False, False, False]
JIGSAW_HIT = [True, True, True, True, True, False]
GT = [0.0, 0.0, 10.0, 10.0]
PRED_BOXES = [[0, 0, 10, 10],      # IoU 1
              [0, 0, 10, 5],       # IoU 0.5: counts (IoU >= 0.5)
              [0, 0, 10, 4],       # IoU 0.4
              [5, 5, 15, 15],      # IoU 25 / 175
              [20, 20, 30, 30],    # IoU 0
              [0, 0, 10, 10]]      # no ground-truth box: must not count
HAS_BOX = [True, True, True, True, True, False]


def _ranked(label: int, rank: int) -> torch.Tensor:
    """Logits over K classes with ``label`` at position ``rank`` (1 = highest)."""
    others = [c for c in range(K) if c != label]
    order = others[:rank - 1] + [label] + others[rank - 1:]
    logits = torch.zeros(K)
    for j, c in enumerate(order):
        logits[c] = float(K - j)
    return logits


def _argmax_at(label: int, hit: bool) -> torch.Tensor:
    return _ranked(label if hit else (label + 1) % K, 1)


class FakeModel(nn.Module):
    """Looks the outputs up by the sample id stored in pixel (0, 0, 0) of each image."""

    def __init__(self, branches: bool = True):
        super().__init__()
        self.cfg = ModelConfig(jigsaw_n=2)
        self.branches = branches
        self.taus: list = []
        self.jigsaw_calls: list = []   # with_jigsaw of every call
        self.combined = torch.stack([_ranked(y, r) for y, r in zip(LABELS, COMBINED_RANK)])
        self.raw = torch.stack([_argmax_at(y, h) for y, h in zip(LABELS, RAW_HIT)])
        self.object = torch.stack([_argmax_at(y, h) for y, h in zip(LABELS, OBJECT_HIT)])
        self.jigsaw = torch.stack([_argmax_at(y, h) for y, h in zip(LABELS, JIGSAW_HIT)])
        self.boxes = torch.tensor(PRED_BOXES, dtype=torch.float32)

    def forward(self, images, *, tau=None, with_jigsaw=None, perms=None, **_):
        assert not self.training  # evaluate() puts the model in eval mode
        self.taus.append(tau)
        self.jigsaw_calls.append(with_jigsaw)
        ids = images[:, 0, 0, 0].long()
        b = len(ids)
        maps = torch.zeros(b, 2, 2)
        if not self.branches:
            return FLRDFOutput(logits_raw=self.raw[ids], logits=self.raw[ids], loc_map=maps, plain_map=maps)
        if with_jigsaw:
            assert perms is not None and perms.shape == (b, 4)
        return FLRDFOutput(logits_raw=self.raw[ids], logits=self.combined[ids], loc_map=maps, plain_map=maps,
                           boxes=self.boxes[ids], logits_object=self.object[ids],
                           logits_jigsaw=self.jigsaw[ids] if with_jigsaw else None)


def _batches(split=((0, 1, 2, 3), (4, 5))):
    for ids in split:
        images = torch.zeros(len(ids), 3, 4, 4)
        images[:, 0, 0, 0] = torch.tensor(ids, dtype=torch.float32)
        yield {"image": images, "label": torch.tensor([LABELS[i] for i in ids]),
               "has_box": torch.tensor([HAS_BOX[i] for i in ids]), "box": torch.tensor([GT] * len(ids))}


def test_fake_model_logits_give_exact_accuracies_and_localization():
    model = FakeModel()
    result = evaluate(model, list(_batches()), precision_for(torch.device("cpu"), False, False), tau=0.25,
                      jigsaw=True)
    mean_iou = (1 + 0.5 + 0.4 + 25 / 175 + 0) / 5
    expected = {"top1": round(2 / 6, 6), "top5": round(4 / 6, 6), "top1_raw": 0.5, "top1_object": round(1 / 6, 6),
                "top1_jigsaw": round(5 / 6, 6), "n": 6, "loc_acc": 0.4, "mean_iou": round(mean_iou, 6), "n_box": 5}
    assert {k: result[k] for k in expected} == expected
    assert model.taus == [0.25, 0.25]  # the threshold asked for reaches the model


def test_batching_does_not_change_the_figures():
    prec = precision_for(torch.device("cpu"), False, False)
    one = evaluate(FakeModel(), list(_batches(((0, 1, 2, 3, 4, 5),))), prec, jigsaw=True)
    many = evaluate(FakeModel(), list(_batches(((5,), (0, 2), (1, 3, 4)))), prec, jigsaw=True)
    assert one == many
    assert one["top1"] == round(2 / 6, 6) and one["loc_acc"] == 0.4


def test_branches_and_boxes_absent_are_reported_as_none():
    result = evaluate(FakeModel(branches=False), list(_batches()), precision_for(torch.device("cpu"), False, False))
    assert result["top1"] == result["top1_raw"] == 0.5  # combined = raw here
    assert result["top1_object"] is None and result["top1_jigsaw"] is None
    assert result["loc_acc"] is None and result["mean_iou"] is None and result["n_box"] == 0
    # a raw miss ranks (label + 1) first, then the rest in class order: label 5 lands 7th, the others in the top 5
    assert result["top5"] == round(5 / 6, 6)


def test_jigsaw_pass_runs_only_when_asked():
    """The jigsaw branch costs a third backbone pass: by default evaluate() never asks the model for it and
    reports top1_jigsaw as None; jigsaw=True scores it, leaving every other figure as it was."""
    prec = precision_for(torch.device("cpu"), False, False)
    model = FakeModel()
    plain = evaluate(model, list(_batches()), prec)
    assert model.jigsaw_calls and not any(model.jigsaw_calls)
    assert "top1_jigsaw" in plain and plain["top1_jigsaw"] is None
    asked = FakeModel()
    full = evaluate(asked, list(_batches()), prec, jigsaw=True)
    assert all(asked.jigsaw_calls) and full["top1_jigsaw"] == round(5 / 6, 6)
    assert {k: v for k, v in full.items() if k != "top1_jigsaw"} == {k: v for k, v in plain.items()
                                                                   if k != "top1_jigsaw"}
