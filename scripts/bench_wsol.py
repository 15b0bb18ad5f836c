"""What MaxBoxAccV2's scoring costs per image, at wsolevaluation's threshold step (0.001) and the fast one (0.01).

For a model file and a split with boxes (default: the bundled demo model on the demo set's test
split), each image's maps are computed once (FLRDF's, the plain map, the default CAMs, each at
its own grid: flrdf.engine.wsol_eval.grid_maps); then, rounds alternating, the scoring alone is
timed per image (all maps: bicubic to the 224 frame, min-max, boxes of every contour and of the
largest at every threshold, IoU): flrdf.wsol_metrics as shipped (each distinct binarisation traced
once) and the plain per-threshold loop (one cv2.threshold + findContours per threshold, as
wsolevaluation runs it), at both steps. The two must give the same MaxBoxAccV2 (checked).

    python scripts/bench_wsol.py [--model assets/demo_model.safetensors] [--root data/demo]
        [--split test] [--limit 24] [--rounds 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchlib import report_json  # noqa: E402
from flrdf.cams import DEFAULT_METHODS  # noqa: E402
from flrdf.data import DatasetRecords  # noqa: E402
from flrdf.engine.checkpoint import load_model  # noqa: E402
from flrdf.engine.loaders import records_for  # noqa: E402
from flrdf.engine.wsol_eval import grid_maps, wsol_loader  # noqa: E402
from flrdf.wsol_metrics import BoxAccumulator, best_ious, cam_thresholds, multiple_iou, scoremap_to_frame  # noqa: E402


def per_threshold(frame: np.ndarray, gt, thresholds) -> tuple[np.ndarray, np.ndarray]:
    """The same best IoUs (every contour, largest contour) traced threshold by threshold."""
    u8 = np.expand_dims((frame * 255).astype(np.uint8), 2)
    every, largest = [], []
    for t in thresholds:
        _, binary = cv2.threshold(u8, int(t * np.max(u8)), 255, cv2.THRESH_BINARY)
        contours = cv2.findContours(binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
        if not contours:
            boxes = big = np.zeros((1, 4))
        else:
            rects = [cv2.boundingRect(c) for c in contours]
            boxes = np.array([[x, y, min(x + w, 223), min(y + h, 223)] for x, y, w, h in rects])
            big = boxes[[int(np.argmax([cv2.contourArea(c) for c in contours]))]]
        every.append(multiple_iou(boxes, gt).max())
        largest.append(multiple_iou(big, gt).max())
    return np.array(every), np.array(largest)


def score(maps: list[dict], gts: list, thresholds, fn) -> tuple[float, float, list[float]]:
    """CPU seconds and wall seconds for all images' maps, and MaxBoxAccV2 (every contour, largest) per
    map source. CPU time: the machine may be shared; everything here runs on one thread."""
    keys = list(maps[0])
    acc = {k: (BoxAccumulator(thresholds), BoxAccumulator(thresholds, multi_contour=False)) for k in keys}
    c0, t0 = time.process_time(), time.perf_counter()
    for m, gt in zip(maps, gts):
        for k in keys:
            e, big = fn(scoremap_to_frame(m[k]), [gt], thresholds)
            acc[k][0].add_best(e)
            acc[k][1].add_best(big)
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return cpu, wall, [a.summary()["max_box_acc_v2"] for pair in acc.values() for a in pair]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="assets/demo_model.safetensors")
    p.add_argument("--root", default="data/demo")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=24)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out")
    args = p.parse_args(argv)

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    loaded = load_model(args.model, "cpu")
    model, cfg = loaded.model.eval(), loaded.config
    cfg.data.root = args.root
    data = records_for(cfg.data, args.split)
    boxed = [r for r in data.records if r.box is not None][: args.limit]
    if not boxed:
        raise SystemExit(f"no images with boxes in the {args.split!r} split of {args.root}")
    subset = DatasetRecords(boxed, data.class_names, data.crop_bottom)
    maps, gts = [], []
    t0 = time.perf_counter()
    for batch in wsol_loader(subset, cfg.data.image_size, 8):
        with torch.inference_mode(False):
            g = grid_maps(model, batch["image"], batch["label"], DEFAULT_METHODS)
        maps += [{k: v[j] for k, v in g.items()} for j in range(len(batch["label"]))]
        gts += [tuple(int(v) for v in b) for b in batch["gt"]]
    maps_ms = (time.perf_counter() - t0) * 1000 / len(maps)    # wall: the forward and the CAM pass
    variants = {f"{name}_{impl}": (cam_thresholds(name), fn) for name in ("reference", "fast")
                for impl, fn in (("shipped", best_ious), ("per_threshold", per_threshold))}
    times = {k: [] for k in variants}
    walls = {k: [] for k in variants}
    results = {}
    for _ in range(args.rounds):
        for key, (th, fn) in variants.items():
            cpu, wall, res = score(maps, gts, th, fn)
            times[key].append(cpu * 1000 / len(maps))
            walls[key].append(wall * 1000 / len(maps))
            results[key] = res
    for name in ("reference", "fast"):
        if results[f"{name}_shipped"] != results[f"{name}_per_threshold"]:
            raise SystemExit(f"{name}: the shipped scoring and the per-threshold loop disagree")
    ms = {k: round(statistics.median(v), 1) for k, v in times.items()}
    report = {
        "what": "MaxBoxAccV2 scoring per image (all map sources; maps computed beforehand), CPU ms on one thread, "
                "median of rounds",
        "model": args.model, "root": args.root, "split": args.split, "images": len(maps), "map_sources": list(maps[0]),
        "input_size": cfg.data.image_size, "grid": list(next(iter(maps[0].values())).shape),
        "maps_wall_ms_per_image": round(maps_ms, 1),
        "scoring_ms_per_image": ms,
        "scoring_ms_per_map": {k: round(v / len(maps[0]), 2) for k, v in ms.items()},
        "scoring_wall_ms_per_image": {k: round(statistics.median(v), 1) for k, v in walls.items()},
        "speedup_vs_per_threshold": {n: round(ms[f"{n}_per_threshold"] / ms[f"{n}_shipped"], 2)
                                     for n in ("reference", "fast")},
        "reference_over_fast": round(ms["reference_shipped"] / ms["fast_shipped"], 2),
        "same_results": True,
        "torch_threads": 1, "cpu": platform.processor() or platform.machine(), "rounds": args.rounds,
    }
    report_json(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
