"""Writes tests/data/resnet_fingerprint.json: fixed-seed forwards of the torchvision ResNet paths.

Made once before the timm backbones came (issue 24); tests/test_resnet_fingerprint.py compares today's
outputs with it, so a change to the backbone registry cannot alter what a ResNet model computes.

    PYTHONPATH=. python scripts/resnet_fingerprint.py [--out tests/data/resnet_fingerprint.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from flrdf.config import ModelConfig
from flrdf.model import FLRDF

CASES = {  # name -> ModelConfig keywords
    "r18-default": {},
    "r18-stride1-layer2-ddt": {"layer4_stride": 1, "loc_layer": "layer2", "loc_map": "ddt", "tau": 0.2},
    "r18-layer3-suppressed": {"layer4_stride": 1, "loc_layer": "layer3", "suppress_layer3": True},
    "r34-frozen2": {"backbone": "resnet34", "frozen_stages": 2},
}


def fingerprint(case: dict) -> dict:
    torch.manual_seed(0)
    kw = dict(backbone="resnet18", pretrained=False, jigsaw_n=2, box_refine="none") | case
    model = FLRDF(ModelConfig(**kw), 5)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 64, 64, generator=g)
    perms = torch.stack([torch.randperm(4, generator=g) for _ in range(2)])
    state = model.state_dict()
    model.train()
    tr = model(x, perms=perms)
    model.eval()
    with torch.no_grad():
        ev = model(x)
    r = lambda t: [round(float(v), 6) for v in t.detach().flatten()]  # noqa: E731
    return {
        "params": {k: [list(v.shape), round(float(v.double().sum()), 6)] for k, v in state.items()},
        "train": {"logits_raw": r(tr.logits_raw), "logits_object": r(tr.logits_object),
                  "logits_jigsaw": r(tr.logits_jigsaw), "boxes": r(tr.boxes), "loc_map": r(tr.loc_map)},
        "eval": {"logits": r(ev.logits), "boxes": r(ev.boxes), "loc_map": r(ev.loc_map),
                 "paper_map": r(ev.paper_map)},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="tests/data/resnet_fingerprint.json")
    args = p.parse_args()
    Path(args.out).write_text(json.dumps({k: fingerprint(v) for k, v in CASES.items()}) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
