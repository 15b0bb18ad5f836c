"""The paper's experiments on the synthetic benchmark (issue 7), on a CPU.

Runs, at one fixed budget and seed, from the demo's stand-in pretrained backbone
(data/demo-backbone.pth, built by scripts/make_demo_model.sh):
  Table 2 analog  model.branches = raw | raw+fl | raw+rdf | full
  Table 4 analog  model.jigsaw_n = 1 | 2 | 4 | 8   (full model; n = 4 is the Table 2 'full' run)
then writes docs/results/: ablation.json, jigsaw_grid.json (+ PNG bar charts) and
a markdown summary. Table 3 (localization) comes from `python -m flrdf loc-eval`
on the demo model; Fig. 5 from scripts/plot_losses.py.

    python scripts/run_experiments.py [--jobs 2] [--epochs 2] [--image-size 96]

Finished runs are not retrained (delete runs/exp-* to redo).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"

ABLATION = {"raw": "raw only (ResNet baseline)", "raw+fl": "+ FL (object branch)",
            "raw+rdf": "+ RDF (jigsaw of the image)", "full": "full FLRDF"}
GRIDS = (1, 2, 4, 8)


def experiments(epochs: int, size: int) -> dict[str, list[str]]:
    common = [f"optim.epochs={epochs}", f"data.image_size={size}", f"data.resize={round(size * 8 / 7)}",
              "runtime.eval_every=0", "runtime.seed=0"]
    runs = {}
    for branches in ABLATION:
        extra = ["model.suppression=none"] if branches == "raw" else []
        runs[f"exp-ablation-{branches}"] = common + [f"model.branches={branches}"] + extra
    for n in GRIDS:
        if n != 4:
            runs[f"exp-grid-n{n}"] = common + ["model.branches=full", f"model.jigsaw_n={n}"]
    return runs


def run_one(name: str, overrides: list[str], threads: int) -> dict:
    out = ROOT / "runs" / name
    status = out / "status.json"
    if status.exists() and json.loads(status.read_text()).get("state") == "finished":
        return json.loads(status.read_text())
    cmd = [sys.executable, "-m", "flrdf", "train", "--config", "demo", "--out", str(out)]
    if status.exists():
        cmd.append("--resume")
    for o in overrides:
        cmd += ["--set", o]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t0 = time.time()
    subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    result = json.loads(status.read_text())
    result["wall_s"] = round(time.time() - t0, 1)
    print(f"{name}: {result.get('state')} top1={((result.get('final') or {}).get('top1'))} in {result['wall_s']} s",
          flush=True)
    return result


def summarise(statuses: dict[str, dict], epochs: int, size: int) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(parents=True, exist_ok=True)
    keys = ("top1", "top1_raw", "top1_object", "top1_jigsaw", "loc_acc", "mean_iou")
    budget = {"epochs": epochs, "image_size": size, "seed": 0, "runs_per_variant": 1,
              "backbone": "resnet18 from the demo stand-in weights", "dataset": "synthetic demo set, 10 classes, "
              "1,500 train / 400 test images"}

    def rows(names):
        return {label: {k: (statuses[n].get("final") or {}).get(k) for k in keys} | {"state": statuses[n].get("state")}
                for label, n in names.items()}

    ablation = rows({ABLATION[b]: f"exp-ablation-{b}" for b in ABLATION})
    grid = rows({f"n={n}": ("exp-ablation-full" if n == 4 else f"exp-grid-n{n}") for n in GRIDS})
    (RESULTS / "ablation.json").write_text(json.dumps({"budget": budget, "rows": ablation}, indent=1) + "\n")
    (RESULTS / "jigsaw_grid.json").write_text(json.dumps({"budget": budget, "rows": grid}, indent=1) + "\n")

    for fname, title, table in (("ablation.png", "Ablation (Table 2 analog): combined top-1", ablation),
                                ("jigsaw_grid.png", "Jigsaw grid n (Table 4 analog): combined top-1", grid)):
        fig, ax = plt.subplots(figsize=(7, 3.2))
        labels = list(table)
        values = [100 * (table[k]["top1"] or 0) for k in labels]
        ax.bar(range(len(labels)), values, color="#4c72b0")
        for i, v in enumerate(values):
            ax.text(i, v + 0.5, f"{v:.1f}", ha="center", fontsize=9)
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_ylabel("top-1 (%)")
        ax.set_ylim(0, 105)
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        fig.savefig(RESULTS / fname, dpi=110)
        plt.close(fig)

    def fmt(v):
        return "-" if v is None else f"{100 * v:.1f}"

    lines = [f"Budget: {epochs} epochs at {size} px, seed 0, one run per variant (no spread measured).", "",
             "| variant | top-1 combined | raw | object | jigsaw | loc_acc | mean IoU |", "|---|---|---|---|---|---|---|"]
    for label, r in list(ablation.items()) + [(k, v) for k, v in grid.items() if k != "n=4"]:
        lines.append(f"| {label} | {fmt(r['top1'])} | {fmt(r['top1_raw'])} | {fmt(r['top1_object'])} | "
                     f"{fmt(r['top1_jigsaw'])} | {fmt(r['loc_acc'])} | {fmt(r['mean_iou'])} |")
    text = "\n".join(lines) + "\n"
    (RESULTS / "experiments.md").write_text(text)
    return text


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=1, help="runs at once (each gets cores/jobs threads)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--only", help="comma-separated run names")
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (default: cores / jobs)")
    args = p.parse_args()
    runs = experiments(args.epochs, args.image_size)
    if args.only:
        runs = {k: v for k, v in runs.items() if k in args.only.split(",")}
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    with ThreadPoolExecutor(args.jobs) as pool:
        statuses = dict(zip(runs, pool.map(lambda kv: run_one(kv[0], kv[1], threads), runs.items())))
    if not args.only:
        print(summarise(statuses, args.epochs, args.image_size))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
