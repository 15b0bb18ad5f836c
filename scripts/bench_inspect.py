"""Server-side cost of one Inspect request (flrdf.inspect.inspect_image), as JSON.

Measures the demo model (assets/demo_model.safetensors, or a random-init model of
the demo config when the file is absent - same cost) with one CAM method, the five
default gradient/Eigen CAMs (one shared pass), and no CAM; then ResNet-50 at 448 px.
Runs are interleaved so a busy machine slows every variant alike; reports median
and min per variant and the 5-vs-1 ratio, for each CPU thread count asked for
(dashboard.app.set_compute_threads; the app's default is half the cores).

    python scripts/bench_inspect.py [--repeats 7] [--threads 1,2] [--device cpu] [--skip-resnet50]
                                    [--out docs/results/bench_inspect_cpu.json] [--note TEXT]

Prints one JSON object and writes it to ``--out`` (``--out ''``: print only). No test asserts
these figures (tests/test_inspect.py checks that every stage is reported, not how long it took);
docs/PERFORMANCE.md reports them.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from dashboard.app import set_compute_threads  # noqa: E402
from flrdf.cams import DEFAULT_METHODS  # noqa: E402
from flrdf.config import load_config  # noqa: E402
from flrdf.data.synthetic import class_specs, render_sample  # noqa: E402
from flrdf.engine.checkpoint import LoadedModel, load_model  # noqa: E402
from flrdf.engine.step import resolve_device  # noqa: E402
from flrdf.inspect import inspect_image  # noqa: E402
from flrdf.model import FLRDF  # noqa: E402

from benchlib import report_json  # noqa: E402

DEMO = ROOT / "assets" / "demo_model.safetensors"
VARIANTS = {"no CAM": [], "1 CAM (gradcam)": ["gradcam"], "5 CAMs (default)": list(DEFAULT_METHODS)}


def random_model(backbone: str, size: int, resize: int, device, classes: int = 10) -> LoadedModel:
    cfg = load_config("demo")
    cfg.model.backbone, cfg.model.pretrained, cfg.model.weights = backbone, False, None
    cfg.data.image_size, cfg.data.resize = size, resize
    torch.manual_seed(0)
    model = FLRDF(cfg.model, classes, cfg.data.image_size).to(device).eval()
    return LoadedModel(model, cfg, [f"class {i}" for i in range(classes)], Path(f"<random {backbone}>"))


def bench(loaded: LoadedModel, image: Path, repeats: int, warmup: int = 2) -> dict:
    times = {k: [] for k in VARIANTS}
    stages = {k: [] for k in VARIANTS}
    for i in range(warmup + repeats):
        for name, methods in VARIANTS.items():
            r = inspect_image(loaded, image, cam_methods=methods, gt_box=[10, 10, 200, 200])
            if i >= warmup:
                times[name].append(r.timings_ms["total"])
                stages[name].append(r.timings_ms)
    out = {}
    for name in VARIANTS:
        keys = stages[name][0].keys()
        out[name] = {"median_ms": round(statistics.median(times[name]), 1), "min_ms": round(min(times[name]), 1),
                     "stages_median_ms": {k: round(statistics.median(s[k] for s in stages[name]), 1) for k in keys}}
    one, five = out["1 CAM (gradcam)"], out["5 CAMs (default)"]
    out["ratio_5_vs_1"] = {"median": round(five["median_ms"] / one["median_ms"], 3),
                           "min": round(five["min_ms"] / one["min_ms"], 3)}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-resnet50", action="store_true")
    p.add_argument("--threads", default="0", help="comma-separated thread counts (0: the app's default)")
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "bench_inspect_cpu.json"),
                   help="also write the JSON here ('' to print only)")
    p.add_argument("--note", default="", help="what else ran on the machine (recorded in the JSON)")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    thread_counts = [int(t) for t in args.threads.split(",")]

    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "bench.jpg"
        from PIL import Image

        Image.fromarray(render_sample(class_specs(10)[3], (99, 0), 256).image).save(image, quality=90)
        report = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                              "torch_threads": torch.get_num_threads(), "device": str(device),
                              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                              "load_avg_before": [round(v, 2) for v in os.getloadavg()], "note": args.note},
                  "results": []}
        if DEMO.is_file():
            demo = load_model(DEMO, device)
            label = str(DEMO.relative_to(ROOT))
        else:
            cfg = load_config("demo")
            demo = random_model("resnet18", cfg.data.image_size, cfg.data.resize, device)
            label = "random-init resnet18, demo config (assets/demo_model.safetensors absent)"
        r50 = None if args.skip_resnet50 else random_model("resnet50", 448, 512, device)
        for t in thread_counts:
            threads = set_compute_threads(t)
            report["results"].append({"model": label, "backbone": demo.config.model.backbone, "threads": threads,
                                      "input_px": demo.config.data.image_size, **bench(demo, image, args.repeats)})
            if r50 is not None:
                report["results"].append({"model": "random-init resnet50", "backbone": "resnet50", "threads": threads,
                                          "input_px": 448, **bench(r50, image, max(3, args.repeats // 2), warmup=1)})
        report["machine"]["load_avg_after"] = [round(v, 2) for v in os.getloadavg()]
    report_json(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
