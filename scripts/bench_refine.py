"""What GrabCut box refinement (model.box_refine=grabcut, flrdf/refine.py) costs and buys.

For a model file and a split with boxes (default: the bundled demo model on the demo set's
held-out validation split), one JSON object: the model's evaluation forward (ms per image,
boxes from the map), then for each working size (``model.refine_size``) and thread count the
refinement's own cost (ms per image, and as a ratio to the forward, both timed in the same run,
rounds alternating) and the loc_acc / mean IoU it gives, beside the map's own box.

    python scripts/bench_refine.py [--model assets/demo_model.safetensors] [--root data/demo]
        [--split val] [--sizes 112,160,224,336] [--threads 1,2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, also when loaded by file path
from benchlib import report_json  # noqa: E402

from flrdf.boxes import box_iou  # noqa: E402
from flrdf.engine.checkpoint import load_model  # noqa: E402
from flrdf.engine.loaders import eval_loader  # noqa: E402
from flrdf.refine import RefineSettings, refine_boxes  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="assets/demo_model.safetensors")
    p.add_argument("--root", default="data/demo")
    p.add_argument("--split", default="val")
    p.add_argument("--sizes", default="112,160,224,336")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out")
    args = p.parse_args(argv)

    loaded = load_model(args.model, "cpu")
    model, cfg = loaded.model.eval(), loaded.config
    cfg.data.root = args.root
    batches = list(eval_loader(cfg.data, args.split, 50, workers=0, seed=cfg.runtime.seed))
    n = sum(len(b["label"]) for b in batches)
    sizes = [int(s) for s in args.sizes.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    settings0 = RefineSettings.of(model.cfg)
    tau = model.cfg.tau

    with torch.no_grad(), model.without_refinement():
        outs = [model(b["image"], source=b["source"]) if "source" in b else model(b["image"]) for b in batches]
    gt = torch.cat([b["box"] for b in batches])
    map_iou = box_iou(torch.cat([o.boxes for o in outs]), gt)
    hw = tuple(batches[0]["image"].shape[-2:])
    grid = model.stage_grid(model.cfg.loc_layer, hw)  # the grid model.refine uses

    def forward_ms() -> float:
        t = time.perf_counter()
        with torch.no_grad(), model.without_refinement():
            for b in batches:
                model(b["image"], **({"source": b["source"]} if "source" in b else {}))
        return (time.perf_counter() - t) * 1000 / n

    def refine_ms(settings: RefineSettings) -> tuple[float, torch.Tensor]:
        t = time.perf_counter()
        boxes = [refine_boxes(b.get("source", b["image"]), o.loc_map, o.boxes, grid, tau, settings)
                 for b, o in zip(batches, outs)]
        return (time.perf_counter() - t) * 1000 / n, torch.cat(boxes)

    rows = []
    saved = torch.get_num_threads()
    try:
        for k in threads:
            torch.set_num_threads(k)
            for size in sizes:
                settings = RefineSettings(settings0.sure, settings0.margin, settings0.iters, size)
                fwd, ref = [], []
                for _ in range(args.rounds):           # alternate: the ratio is measured in one run
                    fwd.append(forward_ms())
                    ms, boxes = refine_ms(settings)
                    ref.append(ms)
                iou = box_iou(boxes, gt)
                rows.append({"threads": k, "refine_size": size, "forward_ms_per_image": round(min(fwd), 2),
                             "refine_ms_per_image": round(min(ref), 2),
                             "refine_over_forward": round(min(ref) / min(fwd), 2),
                             "loc_acc": round(float((iou >= 0.5).float().mean()), 4),
                             "mean_iou": round(float(iou.mean()), 4)})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        torch.set_num_threads(saved)
    result = {"model": args.model, "split": args.split, "n": n, "tau": tau,
              "settings": {"sure": settings0.sure, "margin": settings0.margin, "iters": settings0.iters},
              "map_box": {"loc_acc": round(float((map_iou >= 0.5).float().mean()), 4),
                          "mean_iou": round(float(map_iou.mean()), 4)},
              "rows": rows, "machine": {"cpu": platform.processor() or platform.machine(),
                                        "torch": torch.__version__, "python": platform.python_version()},
              "command": "python scripts/bench_refine.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    report_json(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
