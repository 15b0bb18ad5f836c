"""The paper's experiments on the synthetic benchmark (issue 7), on a CPU.

Runs, at one fixed budget and seed, from the demo's stand-in pretrained backbone
(data/demo-backbone.pth, built by scripts/make_demo_model.sh):
  Table 2 analog  model.branches = raw | raw+fl | raw+rdf | full
  Table 4 analog  model.jigsaw_n = 1 | 2 | 4 | 8   (full model; n = 4 is the Table 2 'full' run)
then writes docs/results/: ablation.json, jigsaw_grid.json (+ PNG bar charts) and
a markdown summary. Table 3 (localization) comes from `python -m flrdf loc-eval`
on the demo model; Fig. 5 from scripts/plot_losses.py.

    python scripts/run_experiments.py [--jobs 2] [--epochs 2] [--image-size 96]

Finished runs are not retrained (delete runs/exp-* to redo). ``--seed K --ablation-only``
adds another seed of the ablation; the summary averages every seed found and gives the spread.
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


def run_name(kind: str, variant: str, seed: int) -> str:
    return f"exp-{kind}-{variant}" + (f"-seed{seed}" if seed else "")


def experiments(epochs: int, size: int, seed: int = 0, grid: bool = True) -> dict[str, list[str]]:
    common = [f"optim.epochs={epochs}", f"data.image_size={size}", f"data.resize={round(size * 8 / 7)}",
              "runtime.eval_every=0", f"runtime.seed={seed}"]
    runs = {}
    for branches in ABLATION:
        extra = ["model.suppression=none"] if branches == "raw" else []
        runs[run_name("ablation", branches, seed)] = common + [f"model.branches={branches}"] + extra
    for n in GRIDS if grid else ():
        if n != 4:
            runs[run_name("grid", f"n{n}", seed)] = common + ["model.branches=full", f"model.jigsaw_n={n}"]
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


def summarise(epochs: int, size: int) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(parents=True, exist_ok=True)
    keys = ("top1", "top1_raw", "top1_object", "top1_jigsaw", "loc_acc", "mean_iou")
    budget = {"epochs": epochs, "image_size": size,
              "backbone": "resnet18 from the demo stand-in weights", "dataset": "synthetic demo set, 10 classes, "
              "1,500 train / 400 test images"}

    def finals(base: str) -> list[dict]:
        """Final test metrics of every finished seed of one variant (seed 0 plus any -seedK runs)."""
        found = []
        for d in sorted((ROOT / "runs").glob(f"{base}*")):
            if d.name != base and not d.name.startswith(f"{base}-seed"):
                continue
            st = json.loads((d / "status.json").read_text()) if (d / "status.json").is_file() else {}
            if st.get("state") == "finished" and st.get("final"):
                found.append(st["final"])
        return found

    def rows(names):
        out = {}
        for label, base in names.items():
            runs = finals(base)
            row = {"runs": len(runs)}
            for k in keys:
                vals = [r[k] for r in runs if r.get(k) is not None]
                row[k] = sum(vals) / len(vals) if vals else None
                row[f"{k}_per_seed"] = vals
                row[f"{k}_spread"] = (max(vals) - min(vals)) if len(vals) > 1 else None
            out[label] = row
        return out

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

    def top1(r):
        spread = f" (spread {100 * r['top1_spread']:.1f})" if r.get("top1_spread") is not None else ""
        return fmt(r["top1"]) + spread

    lines = [f"Budget: {epochs} epochs at {size} px per run; values are means over the seeds run "
             "(runs column), with the max-min spread of combined top-1 where there is more than one.", "",
             "| variant | runs | top-1 combined | raw | object | jigsaw | loc_acc | mean IoU |",
             "|---|---|---|---|---|---|---|---|"]
    for label, r in list(ablation.items()) + [(k, v) for k, v in grid.items() if k != "n=4"]:
        lines.append(f"| {label} | {r['runs']} | {top1(r)} | {fmt(r['top1_raw'])} | {fmt(r['top1_object'])} | "
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
    p.add_argument("--seed", type=int, default=0, help="seed of this batch of runs (runs of other seeds are kept)")
    p.add_argument("--ablation-only", action="store_true", help="skip the jigsaw-grid runs")
    p.add_argument("--summarise-only", action="store_true")
    args = p.parse_args()
    runs = experiments(args.epochs, args.image_size, args.seed, grid=not args.ablation_only)
    if args.only:
        runs = {k: v for k, v in runs.items() if k in args.only.split(",")}
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    if not args.summarise_only:
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda kv: run_one(kv[0], kv[1], threads), runs.items()))
    if not args.only:
        print(summarise(args.epochs, args.image_size))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
