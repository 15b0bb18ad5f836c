"""FLRDF against its raw baseline on another backbone (issue 24): the synthetic set v2, the demo budget.

The same runs as scripts/run_experiments.py's ablation suite - the `demo` config as the experiments pin it
(the paper's map: suppressed layer4, tau 0.3; a 224 px zoom source; every training image; 8 epochs at
112 px), "full" and "raw only" for each seed - with ``model.backbone`` swapped, starting from the same
kind of stand-in pretraining as the ResNet-18 rows: the backbone first trained as a plain classifier on
object crops of the disjoint v2 set (seed 1000; config demo-pretrain, as scripts/make_demo_model.sh does
for ResNet-18) and exported with ``flrdf export --backbone-out``.

    python scripts/run_backbone_experiments.py --backbone timm:convnext_atto --seeds 0,1,2 --jobs 2 --threads 1

Writes docs/results/backbone_experiments.{json,md}: the backbone's rows beside the ResNet-18 rows of
docs/results/experiments.json (same budget; those ran on a GPU with the same code and configs).
Finished runs are not retrained.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_experiments import ABLATION, RESULTS, ROOT, _common, _rows, _table, budget_tag, run_one  # noqa: E402

VARIANTS = ("full", "raw")


def tag_of(backbone: str) -> str:
    return backbone.removeprefix("timm:").replace("/", "_")


def stand_in(backbone: str, threads: int, extra: list[str]) -> Path:
    """The backbone pretrained on crops of the disjoint set (data/pretrain-crops), exported for model.weights."""
    tag = tag_of(backbone)
    out = ROOT / "data" / f"demo-backbone-{tag}.pth"
    if out.is_file():
        return out
    crops = ROOT / "data" / "pretrain-crops"
    if not crops.is_dir():
        raise SystemExit("data/pretrain-crops is missing: run scripts/make_demo_model.sh --until backbone first "
                         "(it makes the disjoint pretraining set and its crops)")
    run = ROOT / "runs" / f"demo-pretrain-{tag}"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "flrdf", "train", "--config", "demo-pretrain", "--out", str(run),
           "--set", f"model.backbone={backbone}"] + [a for o in extra for a in ("--set", o)]
    status = run / "status.json"
    if not (status.is_file() and json.loads(status.read_text()).get("state") == "finished"):
        t0 = time.time()
        subprocess.run(cmd + (["--resume"] if status.is_file() else []), cwd=ROOT, env=env, check=True)
        print(f"stand-in pretraining of {backbone}: {time.time() - t0:.0f} s", flush=True)
    subprocess.run([sys.executable, "-m", "flrdf", "export", "--checkpoint", str(run), "--backbone-out", str(out)],
                   cwd=ROOT, env=env, check=True)
    return out


def run_names(backbone: str, epochs: int, size: int) -> dict[str, str]:
    """variant -> run-name base (seed 0 unsuffixed, then -seedK, as run_experiments names them)."""
    return {v: f"exp-v2-{budget_tag(epochs, size)}-backbone-{v}-{tag_of(backbone)}" for v in VARIANTS}


def summarise(backbone: str, epochs: int, size: int) -> str:
    names = run_names(backbone, epochs, size)
    rows = _rows({f"raw only ({backbone})": names["raw"], f"full FLRDF ({backbone})": names["full"]}, names["raw"])
    resnet = {}
    stored = RESULTS / "experiments.json"
    if stored.is_file():
        for t in json.loads(stored.read_text())["tables"]:
            if t["kind"] == "ablation" and t["budget"] == {"bench": "v2", "epochs": epochs, "image_size": size}:
                resnet = {f"{label} (resnet18)": r for label, r in t["rows"].items()
                          if label in (ABLATION["raw"][0], ABLATION["full"][0])}
    pretrain = ROOT / "runs" / f"demo-pretrain-{tag_of(backbone)}" / "status.json"
    record = {"backbone": backbone, "budget": {"bench": "v2", "epochs": epochs, "image_size": size}, "rows": rows,
              "resnet18_rows": resnet,
              "stand_in": json.loads(pretrain.read_text()).get("final") if pretrain.is_file() else None}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "backbone_experiments.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [f"### {backbone} against ResNet-18, v2, {epochs} epochs at {size} px", "",
             "Each backbone from its own stand-in pretraining (crops of the disjoint v2 set). 'vs raw': combined "
             "top-1 minus the same backbone's raw-only run of the same seed, mean [per seed]. The ResNet-18 rows are "
             "docs/results/experiments.json's (one NVIDIA H200); the other backbone's ran on the 2-core CPU.", ""]
    lines += _table({**resnet, **rows})
    text = "\n".join(lines) + "\n"
    (RESULTS / "backbone_experiments.md").write_text(text)
    return text


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="timm:convnext_atto")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--set", dest="extra", nargs="+", default=[], metavar="KEY=VALUE")
    p.add_argument("--summarise-only", action="store_true")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    if not args.summarise_only:
        weights = stand_in(args.backbone, threads, args.extra)
        names = run_names(args.backbone, args.epochs, args.image_size)
        runs = {}
        for seed in seeds:
            for v in VARIANTS:  # the longest first, so parallel workers finish together
                name = names[v] + (f"-seed{seed}" if seed else "")
                runs[name] = (_common("v2", args.epochs, args.image_size, seed) + ABLATION[v][1]
                              + [f"model.backbone={args.backbone}", f"model.weights={weights.relative_to(ROOT)}"]
                              + args.extra)
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda kv: run_one(kv[0], kv[1], threads), runs.items()))
    print(summarise(args.backbone, args.epochs, args.image_size))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
