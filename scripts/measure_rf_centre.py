"""Measure where a ResNet feature cell "looks": the effective receptive-field centre.

For a backbone (layer1..4 of a torchvision ResNet) at output stride s, the map
FLRDF thresholds is the channel mean of the layer4 features. For one map cell
(i, j) we take the gradient of that cell's value with respect to the input
image (random normal inputs, several draws) and its centre of mass of |grad|
in continuous pixel coordinates (pixel column x spans [x, x+1), so its centre
is x + 0.5). The offset c is that centre minus j*s (and i*s for rows):

    centre(cell j) = j*s + c

A ResNet's receptive field covers hundreds of pixels, so no cell of a
224-px input is free of the border, and the border pulls each cell's centre of
mass towards the image centre. The backbone's own offset is therefore measured
on a symmetric input: N = 2*m*s + 1 pixels (odd sizes keep every stride-2 layer
symmetric) and cell (m, m), whose theoretical centre m*s + 0.5 is the image
centre, so the border pulls equally on every side and only the network's own
asymmetry moves the centre. Every cell of the demo's 112-px input is reported
too ("all"), to show how much the border bends the centres at that size.

Prints a JSON object and writes docs/results/rf_centre.json.
Usage: python scripts/measure_rf_centre.py [--draws 4] [--out docs/results/rf_centre.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flrdf.backbone import ResNetBackbone  # noqa: E402
from flrdf.boxes import feature_size  # noqa: E402

DEMO = ROOT / "assets" / "demo_model.safetensors"


def cell_centre(net: torch.nn.Module, size: int, cell: tuple[int, int], draws: int, seed: int) -> tuple[float, float]:
    """Centre of mass (x, y) of |d map[i, j] / d input|, averaged over ``draws`` random inputs."""
    gen = torch.Generator().manual_seed(seed)
    acc = torch.zeros(size, size)
    for _ in range(draws):
        x = torch.randn(1, 3, size, size, generator=gen).requires_grad_(True)
        fmap = net(x).mean(dim=1)[0]
        fmap[cell].backward()
        acc += x.grad[0].abs().sum(dim=0)
    w = acc / acc.sum()
    coords = torch.arange(size, dtype=torch.float64) + 0.5
    cx = float((w.sum(dim=0).double() * coords).sum())
    cy = float((w.sum(dim=1).double() * coords).sum())
    return cx, cy


class Layer2(torch.nn.Module):
    """The backbone up to layer2 (output stride 8: the map of model.loc_layer=layer2)."""

    def __init__(self, net: ResNetBackbone):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x, taps=("layer2",))[1]["layer2"]


def build(name: str, stride: int, weights: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = ResNetBackbone(name, pretrained=False, layer4_stride=2 if stride == 32 else 1)
    if weights == "demo":
        from flrdf.engine.checkpoint import load_model

        net.load_state_dict(load_model(DEMO).model.backbone.state_dict())
    return (Layer2(net) if stride == 8 else net).eval()


def measure(name: str, stride: int, weights: str, size: int, cells: str, draws: int, seed: int = 0) -> dict:
    net = build(name, stride, weights, seed)
    h = feature_size(size, stride)
    if cells == "centre":   # symmetric input: size = 2*m*stride + 1, cell (m, m) on the image centre
        m = (size - 1) // (2 * stride)
        if size != 2 * m * stride + 1:
            raise ValueError(f"a symmetric input for stride {stride} has 2*m*{stride}+1 pixels, not {size}")
        picks = [(m, m)]
    else:
        picks = [(i, j) for i in range(h) for j in range(h)]
    rows = []
    for k, (i, j) in enumerate(picks):
        cx, cy = cell_centre(net, size, (i, j), draws, seed * 1000 + k)
        rows.append({"cell": [i, j], "dx": round(cx - j * stride, 3), "dy": round(cy - i * stride, 3)})
    mean = lambda key: round(sum(r[key] for r in rows) / len(rows), 3)  # noqa: E731
    out = {"backbone": name, "stride": stride, "weights": weights, "seed": seed, "input": size, "map": [h, h],
           "cells": cells, "c_x": mean("dx"), "c_y": mean("dy")}
    if cells == "all":
        # per column / row: how the border bends the centre (x depends on j only, up to noise)
        out["c_x_by_column"] = [round(sum(r["dx"] for r in rows if r["cell"][1] == j) / h, 3) for j in range(h)]
        out["c_y_by_row"] = [round(sum(r["dy"] for r in rows if r["cell"][0] == i) / h, 3) for i in range(h)]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--draws", type=int, default=4, help="random inputs per cell")
    p.add_argument("--strides", default="32,16,8",
                   help="output strides to measure: 32/16 the layer4 map (layer4_stride 2/1), 8 the layer2 map")
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "rf_centre.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    strides = [int(s) for s in args.strides.split(",") if s.strip()]
    runs = []
    # 513 px: cell 8 (stride 32) / 16 (stride 16) in the middle; 257 px: cell 16 of stride 8
    sym = {32: 2 * 8 * 32 + 1, 16: 2 * 16 * 16 + 1, 8: 2 * 16 * 8 + 1}
    for name in ("resnet18", "resnet50"):
        for stride in strides:
            for seed in (0, 1):
                runs.append(measure(name, stride, "random", sym[stride], "centre", args.draws, seed))
    for stride in strides:  # the demo model's trained resnet18
        runs.append(measure("resnet18", stride, "demo", sym[stride], "centre", args.draws))
    for stride in (s for s in strides if s in (16, 8)):  # the demo's input: the border bends the centres
        runs.append(measure("resnet18", stride, "random", 112, "all", args.draws))
        runs.append(measure("resnet18", stride, "demo", 112, "all", args.draws))
    result = {
        "what": "effective receptive-field centre of a map cell (channel mean of layer4, or of layer2 at "
                "stride 8): centre(j) = j*s + c, "
                "continuous pixel coordinates (pixel x spans [x, x+1)); centre of mass of |d cell / d input|",
        "draws": args.draws,
        "theory": "every ResNet down-sampling layer (7x7/2 pad 3, 3x3/2 pad 1 max-pool and conv, 1x1/2) "
                  "centres output i on input 2i, so cell j sits on pixel j*s, whose centre is j*s + 0.5",
        "runs": runs,
    }
    text = json.dumps(result, indent=1)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
