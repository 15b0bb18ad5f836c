"""Measure the synthetic v2 set and draw its figures for docs/SYNTHETIC.md.

Generates the demo-sized set (10 classes x (150 train + 40 test), seed 0) and the disjoint
pretraining set (10 x (150 + 20), seed 1000) with ``make_demo_data_v2`` on one core, timing it;
then measures over the written trees the object's box fraction, image sizes and JPEG bytes, and
over a subset re-rendered in memory the mask fraction and the detail unit (source pixels and
pixels at the 112-px input). Writes docs/results/synthetic_v2_stats.json, the contact sheet
docs/results/synthetic_v2_samples.png and the close-up docs/results/synthetic_v2_details.png.

    OMP_NUM_THREADS=1 python scripts/synthetic_v2_report.py [--out docs/results] [--work /tmp/v2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from flrdf.data import load_records  # noqa: E402
from flrdf.data.synthetic_v2 import class_specs_v2, make_demo_data_v2, render_sample_v2  # noqa: E402

RESIZE, CROP = 128, 112  # the CPU recipe's data.resize and data.image_size


def quantiles(values) -> dict:
    v = np.asarray(values, float)
    qs = {"min": v.min(), "p5": np.percentile(v, 5), "p25": np.percentile(v, 25), "median": np.median(v),
          "p75": np.percentile(v, 75), "p95": np.percentile(v, 95), "max": v.max(), "mean": v.mean()}
    return {k: round(float(x), 4) for k, x in qs.items()}


def histogram(values, edges) -> dict:
    counts, _ = np.histogram(values, bins=edges)
    return {f"{a:.2f}-{b:.2f}": int(c) for a, b, c in zip(edges[:-1], edges[1:], counts)}


def generate(work: Path, train: int, test_demo: int, test_pre: int) -> dict:
    timings = {}
    for name, seed, test in (("demo", 0, test_demo), ("pretrain", 1000, test_pre)):
        start, cpu = time.perf_counter(), time.process_time()
        make_demo_data_v2(work / name, 10, train, test, seed=seed)
        timings[name] = time.perf_counter() - start
        timings[name + "_cpu"] = time.process_time() - cpu
    return timings


def tree_stats(root: Path) -> dict:
    fracs, sides, aspects, nbytes = [], [], [], 0
    for split in ("train", "test"):
        for r in load_records("cub", root, split).records:
            with Image.open(r.path) as im:
                w, h = im.size
            x1, y1, x2, y2 = r.box
            fracs.append((x2 - x1) * (y2 - y1) / (w * h))
            sides += [w, h]
            aspects.append(w / h)
            nbytes += os.path.getsize(r.path)
    return {"images": len(fracs), "box_fraction": fracs, "sides": sides, "aspects": aspects, "jpeg_bytes": nbytes}


def letterbox(img: np.ndarray, cell: int) -> np.ndarray:
    h, w = img.shape[:2]
    s = cell / max(h, w)
    small = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    out = np.full((cell, cell, 3), 235, np.uint8)
    y, x = (cell - small.shape[0]) // 2, (cell - small.shape[1]) // 2
    out[y:y + small.shape[0], x:x + small.shape[1]] = small
    return out


def label(text: str, width: int, height: int = 18) -> np.ndarray:
    strip = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(strip, text, (4, height - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return strip


def save_png(rgb: np.ndarray, path: Path, colours: int = 256) -> None:
    Image.fromarray(rgb).quantize(colours, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def contact_sheet(path: Path, classes: int = 5, per_class: int = 4, cell: int = 150) -> None:
    specs = class_specs_v2(10)
    rows = []
    for c in range(classes):
        cells = []
        for k in range(per_class):
            s = render_sample_v2(specs[c], (0, c * 190 + 150 + k))  # test images of the demo set
            img = s.image.copy()
            x1, y1, x2, y2 = s.box
            cv2.rectangle(img, (x1, y1), (x2 - 1, y2 - 1), (255, 40, 40), 2)
            cells.append(letterbox(img, cell))
            cells.append(np.full((cell, 3, 3), 255, np.uint8))
        row = np.concatenate(cells, 1)
        rows += [label(specs[c].name.replace("_", " "), row.shape[1]), row]
    save_png(np.concatenate(rows, 0), path)


def input_view(img: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The image as the CPU recipe's test transform sees it: squashed to 128x128, centre 112 crop."""
    h, w = img.shape[:2]
    small = np.asarray(Image.fromarray(img).resize((RESIZE, RESIZE), Image.BILINEAR))
    off = round((RESIZE - CROP) / 2)
    return small[off:off + CROP, off:off + CROP], RESIZE / w, RESIZE / h


def closeup(path: Path, panel: int = 180) -> None:
    """Per class: the object at source resolution | the same region at the 112-px input (both nearest-upsampled)."""
    specs = class_specs_v2(10)
    tiles = []
    for c, spec in enumerate(specs):
        # the first demo test image of the class whose object is mid-sized (the typical case)
        for k in range(40):
            s = render_sample_v2(spec, (0, c * 190 + 150 + k))
            h, w = s.image.shape[:2]
            x1, y1, x2, y2 = s.box
            if 0.09 <= (x2 - x1) * (y2 - y1) / (w * h) <= 0.16:
                break
        pad = 4
        x1, y1, x2, y2 = max(0, x1 - pad), max(0, y1 - pad), min(w, x2 + pad), min(h, y2 + pad)
        src = s.image[y1:y2, x1:x2]
        view, sx, sy = input_view(s.image)
        off = round((RESIZE - CROP) / 2)
        vx1, vy1 = max(0, math.floor(x1 * sx) - off), max(0, math.floor(y1 * sy) - off)
        vx2, vy2 = min(CROP, math.ceil(x2 * sx) - off), min(CROP, math.ceil(y2 * sy) - off)
        low = view[vy1:vy2, vx1:vx2]
        scale = panel / max(src.shape[:2])
        size = (round(src.shape[1] * scale), round(src.shape[0] * scale))
        a = cv2.resize(src, size, interpolation=cv2.INTER_NEAREST if scale >= 1 else cv2.INTER_AREA)
        b = cv2.resize(low, size, interpolation=cv2.INTER_NEAREST)
        pair = np.full((a.shape[0], 2 * panel + 6, 3), 255, np.uint8)
        pair[:a.shape[0], :a.shape[1]] = a
        pair[:b.shape[0], panel + 6:panel + 6 + b.shape[1]] = b
        text = f"{spec.name.replace('_', ' ')}: {x2 - x1} px at source | {vx2 - vx1} px at 112"
        tiles.append(np.concatenate([label(text, pair.shape[1]), pair, np.full((6, pair.shape[1], 3), 255, np.uint8)]))
    cols = [np.concatenate(tiles[i::2], 0) for i in range(2)]
    height = max(c.shape[0] for c in cols)
    cols = [np.concatenate([c, np.full((height - c.shape[0], c.shape[1], 3), 255, np.uint8)]) for c in cols]
    sep = np.full((height, 10, 3), 255, np.uint8)
    save_png(np.concatenate([cols[0], sep, cols[1]], 1), path)


def detail_stats(n: int) -> dict:
    specs = class_specs_v2(10)
    mask_frac, unit_src, unit_in, box_frac = [], [], [], []
    for i in range(n):
        s = render_sample_v2(specs[i % 10], (0, i))
        h, w = s.image.shape[:2]
        mask_frac.append(float((s.mask >= 0.5).mean()))
        x1, y1, x2, y2 = s.box
        box_frac.append((x2 - x1) * (y2 - y1) / (w * h))
        unit_src.append(s.detail_px)
        unit_in.append(s.detail_px * RESIZE / math.sqrt(w * h))
    return {"images": n, "mask_fraction": quantiles(mask_frac), "box_fraction": quantiles(box_frac),
            "detail_unit_source_px": quantiles(unit_src), "detail_unit_input_px": quantiles(unit_in),
            "note": "detail unit: bars and stripes are 0.6-1.0 unit wide, the eye ring 0.55, spots 0.9-1.1 across; "
                    "input px = at the 128-px resize the 112-px crop is cut from (geometric mean of both axes)"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="docs/results")
    p.add_argument("--work", help="where the sets are generated (default: a temporary folder, removed)")
    p.add_argument("--quick", action="store_true", help="small sets (a smoke run; numbers not for the docs)")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="synthetic_v2_"))
    train, test_demo, test_pre = (3, 1, 1) if args.quick else (150, 40, 20)
    try:
        timings = generate(work, train, test_demo, test_pre)
        trees = {name: tree_stats(work / name / "CUB_200_2011") for name in ("demo", "pretrain")}
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    fracs = trees["demo"]["box_fraction"] + trees["pretrain"]["box_fraction"]
    images = sum(t["images"] for t in trees.values())
    stats = {
        "command": "OMP_NUM_THREADS=1 python scripts/synthetic_v2_report.py" + (" --quick" if args.quick else ""),
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "sets": {"demo": {"classes": 10, "train_per_class": train, "test_per_class": test_demo, "seed": 0},
                 "pretrain": {"classes": 10, "train_per_class": train, "test_per_class": test_pre, "seed": 1000}},
        "generation_seconds": {k: round(v, 1) for k, v in timings.items()}
        | {"total": round(timings["demo"] + timings["pretrain"], 1),
           "total_cpu": round(timings["demo_cpu"] + timings["pretrain_cpu"], 1)},
        "images": images,
        "ms_per_image": round(1000 * (timings["demo"] + timings["pretrain"]) / images, 2),
        "cpu_ms_per_image": round(1000 * (timings["demo_cpu"] + timings["pretrain_cpu"]) / images, 2),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpu_cores": os.cpu_count(),
        "jpeg_megabytes": round(sum(t["jpeg_bytes"] for t in trees.values()) / 1e6, 1),
        "box_fraction": quantiles(fracs),
        "box_fraction_histogram": histogram(fracs, np.array([0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 1.0])),
        "image_side_px": quantiles(trees["demo"]["sides"] + trees["pretrain"]["sides"]),
        "aspect_w_over_h": quantiles(trees["demo"]["aspects"] + trees["pretrain"]["aspects"]),
        "rendered_subset": detail_stats(60 if args.quick else 500),
    }
    (out / "synthetic_v2_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    contact_sheet(out / "synthetic_v2_samples.png")
    closeup(out / "synthetic_v2_details.png")
    print(json.dumps({k: stats[k] for k in ("generation_seconds", "ms_per_image", "cpu_ms_per_image", "jpeg_megabytes",
                                          "box_fraction")},
                     indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
