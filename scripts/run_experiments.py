"""The paper's experiments on the synthetic benchmarks (issues 7 and 12).

Every run is the `demo` config (ResNet-18 from the demo's stand-in pretrained backbone,
data/demo-backbone.pth, built by scripts/make_demo_model.sh) at one budget (epochs, size), on one
benchmark: `v2` (data/demo, classes = local part appearance under free pose, FGVC-shaped) or `v1`
(data/demo-v1, classes = where a mark sits, the positional control). Suites:

  recipe    v2, full model, first seed, trained on 80 % of the training split: the branch-weighting
            remedies (paper weights, raw warm-up, normalised, scheduled, a halved backbone gradient
            from the object and jigsaw branches). The winner is chosen on the
            carved validation split (never on test) and, with --use-recipe-winner, added to every
            later run of the same invocation.
  ablation  v2, Table 2 analog for each of --seeds: raw (no suppression), raw + suppression,
            + FL, + RDF, full
  zoom      v2, first seed: full model with the object crop cut from the network input
            (data.source_size=0), against the ablation's full run that cuts it from the source
  control   v1, first seed: raw and full
  grid      v2, first seed: jigsaw n = 1, 2, 8 (n = 4 is the ablation's full run)
  locmap    v2, each of --seeds: + FL and full with the FL map taken from layer2 (stride 8,
            model.loc_layer=layer2, tau 0.2) instead of suppressed layer4 (the paper's map, which
            every other suite pins: loc_layer=layer4, tau 0.3); plus, for the first seed, the
            layer4 full run again on this machine, so the pair shares a device

then writes docs/results/: experiments.json, experiments.md, ablation.png (and recipe_selection.json
when the recipe suite ran).

    python scripts/run_experiments.py --jobs 2 --threads 1 --suites recipe,ablation,zoom,control \
        --seeds 0,1,2 --use-recipe-winner

Runs are named runs/exp-<bench>-e<epochs>-<size>px-<suite>-<variant>[-seedK]; finished runs are not
retrained (delete them to redo), interrupted ones resume. The summary covers every benchmark, budget
and seed found under runs/: means, spreads and per-seed differences to the raw-only baseline.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"

BENCHES = {"v2": "data/demo", "v1": "data/demo-v1"}
ABLATION = {  # variant -> (label, overrides)
    "raw": ("raw only (ResNet baseline)", ["model.branches=raw", "model.suppression=none"]),
    "raw+supp": ("raw + suppression", ["model.branches=raw", "model.suppression=learnable"]),
    "raw+fl": ("+ FL (object branch)", ["model.branches=raw+fl"]),
    "raw+rdf": ("+ RDF (jigsaw of the image)", ["model.branches=raw+rdf"]),
    "full": ("full FLRDF", ["model.branches=full"]),
}
RECIPES = {  # variant -> (label, overrides); the first is the paper's recipe and wins ties
    "paper": ("paper weights (alpha = beta = gamma = 1)", []),
    "raw-warmup": ("raw branch alone for 2 epochs", ["optim.raw_warmup_epochs=2"]),
    "normalized": ("weights normalised to sum 1", ["loss.weighting=normalized"]),
    "scheduled": ("beta, gamma ramped over 3 epochs", ["loss.weighting=scheduled", "loss.ramp_epochs=3"]),
    "aux-scale": ("object/jigsaw backbone gradient x 0.5", ["loss.aux_backbone_scale=0.5"]),
}
GRIDS = (1, 2, 4, 8)
SUITES = ("recipe", "ablation", "zoom", "control", "grid", "locmap")
# The FL map of every suite but locmap: the paper's (suppressed layer4), with the threshold calibrated
# for it - pinned, so these runs mean the same whatever the demo config's map is.
PAPER_MAP = ["model.loc_layer=layer4", "model.loc_map=mean", "model.tau=0.3"]  # the channel mean, as the demo had it then
# The data settings every experiment ran with, pinned against later changes of the demo config (whose
# recipe now holds 10 % out and zooms from 336 px): all training images, a 224 px zoom source.
EXPERIMENT_DATA = ["data.val_fraction=0", "data.source_size=224",
                   "model.box_refine=none"]  # and the map's own box, as they were scored (the demo's now refines)
# locmap: layer2's map; tau 0.2 chosen on the disjoint pretraining set's test split (docs/results/locmap_choice/)
LAYER2_MAP = ["model.loc_layer=layer2", "model.tau=0.2"]
NAME = re.compile(r"^exp-(v\d+)-e(\d+)-(\d+)px-([a-z]+)-(.+?)(?:-seed(\d+))?$")


def budget_tag(epochs: int, size: int) -> str:
    return f"e{epochs}-{size}px"


def run_name(bench: str, suite: str, variant: str, seed: int, epochs: int, size: int) -> str:
    return f"exp-{bench}-{budget_tag(epochs, size)}-{suite}-{variant}" + (f"-seed{seed}" if seed else "")


def _common(bench: str, epochs: int, size: int, seed: int) -> list[str]:
    return [f"data.root={BENCHES[bench]}", f"optim.epochs={epochs}", f"data.image_size={size}",
            f"data.resize={round(size * 8 / 7)}", "runtime.eval_every=0", f"runtime.seed={seed}", *PAPER_MAP,
            *EXPERIMENT_DATA]


def suite_runs(suite: str, epochs: int, size: int, seeds=(0,)) -> dict[str, list[str]]:
    """Run name -> overrides of one suite (longest variants first, so parallel workers finish together)."""
    first = seeds[0]
    runs: dict[str, list[str]] = {}
    if suite == "recipe":
        for v, (_, extra) in RECIPES.items():
            runs[run_name("v2", "recipe", v, first, epochs, size)] = (
                _common("v2", epochs, size, first) + ["model.branches=full", "data.val_fraction=0.2"] + extra)
    elif suite == "ablation":
        for seed in seeds:
            for v in ("full", "raw+fl", "raw+rdf", "raw+supp", "raw"):
                runs[run_name("v2", "ablation", v, seed, epochs, size)] = _common("v2", epochs, size, seed) + ABLATION[v][1]
    elif suite == "zoom":
        runs[run_name("v2", "zoom", "input", first, epochs, size)] = (
            _common("v2", epochs, size, first) + ["model.branches=full", "data.source_size=0"])
    elif suite == "control":
        for v in ("full", "raw"):
            runs[run_name("v1", "control", v, first, epochs, size)] = _common("v1", epochs, size, first) + ABLATION[v][1]
    elif suite == "grid":
        for n in GRIDS:
            if n != 4:
                runs[run_name("v2", "grid", f"n{n}", first, epochs, size)] = (
                    _common("v2", epochs, size, first) + ["model.branches=full", f"model.jigsaw_n={n}"])
    elif suite == "locmap":
        for seed in seeds:
            for v in ("full", "raw+fl"):
                runs[run_name("v2", "locmap", f"{v}-layer2", seed, epochs, size)] = (
                    _common("v2", epochs, size, seed) + ABLATION[v][1] + LAYER2_MAP)
        runs[run_name("v2", "locmap", "full-layer4", first, epochs, size)] = (
            _common("v2", epochs, size, first) + ABLATION["full"][1])
    else:
        raise ValueError(f"unknown suite {suite!r}; known: {', '.join(SUITES)}")
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
    result = json.loads(status.read_text()) if status.exists() else {"state": "failed"}
    result["wall_s"] = round(time.time() - t0, 1)
    final = result.get("final") or {}
    print(f"{name}: {result.get('state')} top1={final.get('top1')} loc_acc={final.get('loc_acc')} "
          f"in {result['wall_s']} s", flush=True)
    return result


KEYS = ("top1", "top1_raw", "top1_object", "top1_jigsaw", "loc_acc", "mean_iou", "gate_mean")


def _finished(d: Path) -> dict | None:
    st = json.loads((d / "status.json").read_text()) if (d / "status.json").is_file() else {}
    return st if st.get("state") == "finished" else None


def _finals(base: str) -> dict[int, dict]:
    """seed -> final test metrics of every finished run of one variant (``base`` plus ``base-seedK``)."""
    found = {}
    for d in sorted((ROOT / "runs").glob(f"{base}*")):
        if d.name == base:
            seed = 0
        elif d.name.startswith(f"{base}-seed") and d.name[len(base) + 5:].isdigit():
            seed = int(d.name[len(base) + 5:])
        else:
            continue
        st = _finished(d)
        if st and st.get("final"):
            found[seed] = st["final"]
    return found


def _rows(names: dict[str, str], baseline: str | None, seeds: set[int] | None = None) -> dict[str, dict]:
    """Mean, per-seed values and max-min spread of each metric, and the per-seed difference in
    combined top-1 to ``baseline`` (paired by runtime.seed)."""
    base_runs = _finals(baseline) if baseline else {}
    out = {}
    for label, base in names.items():
        runs = {k: v for k, v in _finals(base).items() if seeds is None or k in seeds}
        row = {"runs": len(runs), "seeds": sorted(runs)}
        for k in KEYS:
            vals = [runs[s][k] for s in sorted(runs) if runs[s].get(k) is not None]
            row[k] = sum(vals) / len(vals) if vals else None
            row[f"{k}_per_seed"] = vals
            row[f"{k}_spread"] = (max(vals) - min(vals)) if len(vals) > 1 else None
        paired = [runs[s]["top1"] - base_runs[s]["top1"] for s in sorted(runs) if s in base_runs]
        row["top1_vs_baseline_per_seed"] = paired
        row["top1_vs_baseline"] = sum(paired) / len(paired) if paired else None
        out[label] = row
    return out


def _last_val_top1(run_dir: Path) -> float | None:
    """Top-1 of the last validation evaluation in a run's metrics.jsonl (the final epoch's)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    vals = [json.loads(line) for line in path.read_text().splitlines() if line.strip().startswith("{")]
    vals = [m for m in vals if m.get("split") == "val" and m.get("top1") is not None]
    return vals[-1]["top1"] if vals else None


def recipe_selection(epochs: int, size: int, seed: int = 0) -> dict | None:
    """The branch-weighting remedies ranked by final-epoch validation top-1; the paper's recipe wins ties."""
    rows = []
    for v, (label, extra) in RECIPES.items():
        d = ROOT / "runs" / run_name("v2", "recipe", v, seed, epochs, size)
        st = _finished(d) if d.is_dir() else None
        if not st:
            continue
        rows.append({"variant": v, "label": label, "overrides": extra, "val_top1": _last_val_top1(d),
                     "test": {k: (st.get("final") or {}).get(k) for k in KEYS}})
    scored = [r for r in rows if r["val_top1"] is not None]
    if not scored:
        return None
    winner = max(scored, key=lambda r: (r["val_top1"], -list(RECIPES).index(r["variant"])))
    return {"budget": {"epochs": epochs, "image_size": size, "seed": seed}, "rows": rows,
            "winner": winner["variant"], "winner_overrides": winner["overrides"],
            "rule": "highest top-1 on the validation split carved from training (data.val_fraction=0.2) "
                    "at the final epoch; ties go to the paper's recipe; test top-1 is shown, never used"}


def _inventory() -> dict[tuple[str, int, int], set[str]]:
    """(bench, epochs, size) -> suites with at least one run under runs/."""
    found: dict[tuple[str, int, int], set[str]] = {}
    for d in (ROOT / "runs").glob("exp-v*"):
        m = NAME.match(d.name)
        if m:
            found.setdefault((m[1], int(m[2]), int(m[3])), set()).add(m[4])
    return found


def _bar_chart(plt, tables: list[dict], path: Path) -> None:
    """Combined top-1 and loc_acc per variant, one panel pair per table: mean, seed range, seeds as dots."""
    fig, axes = plt.subplots(len(tables), 2, figsize=(13, 3.8 * len(tables)), squeeze=False)
    for row_axes, t in zip(axes, tables):
        labels = [k for k, r in t["rows"].items() if r["runs"]]
        for ax, key, name in zip(row_axes, ("top1", "loc_acc"), ("combined top-1", "loc_acc (IoU >= 0.5)")):
            seeds = [[100 * v for v in t["rows"][k][f"{key}_per_seed"]] for k in labels]
            means = [sum(v) / len(v) if v else 0 for v in seeds]
            lo = [m - min(v) if v else 0 for m, v in zip(means, seeds)]
            hi = [max(v) - m if v else 0 for m, v in zip(means, seeds)]
            ax.bar(range(len(labels)), means, 0.7, yerr=[lo, hi], capsize=3, color="#4c72b0")
            for x, v, m in zip(range(len(labels)), seeds, means):
                ax.plot([x] * len(v), v, "k.", ms=3)
                if v:
                    ax.text(x, max(v) + 1, f"{m:.1f}", ha="center", fontsize=7)
            ax.set_xticks(range(len(labels)), [lb.replace(" (", "\n(") for lb in labels], fontsize=8)
            ax.set_ylabel(f"{name} (%)")
            ax.set_ylim(0, 105)
            ax.set_title(f"{t['title']}: {name}", fontsize=10)
    fig.suptitle("bar: mean over seeds, whiskers: range, dots: single seeds", fontsize=8, y=0.005, va="bottom")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(v):
    return "-" if v is None else f"{100 * v:.1f}"


def _table(rows: dict[str, dict]) -> list[str]:
    def top1(r):
        spread = f" (spread {100 * r['top1_spread']:.1f})" if r.get("top1_spread") is not None else ""
        return _fmt(r["top1"]) + spread

    def delta(r):
        d = r.get("top1_vs_baseline_per_seed") or []
        if not d or all(abs(x) < 1e-12 for x in d):
            return "-"
        return f"{100 * r['top1_vs_baseline']:+.1f} [{', '.join(f'{100 * x:+.1f}' for x in d)}]"

    lines = ["| variant | runs | top-1 combined | vs raw | raw | object | jigsaw | loc_acc | mean IoU | gate mean |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for label, r in rows.items():
        if r["runs"]:
            gate = "-" if r.get("gate_mean") is None else f"{r['gate_mean']:.2f}"
            lines.append(f"| {label} | {r['runs']} | {top1(r)} | {delta(r)} | {_fmt(r['top1_raw'])} | "
                         f"{_fmt(r['top1_object'])} | {_fmt(r['top1_jigsaw'])} | {_fmt(r['loc_acc'])} | "
                         f"{_fmt(r['mean_iou'])} | {gate} |")
    return lines


def summarise() -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS.mkdir(parents=True, exist_ok=True)
    tables, recipes = [], []
    for (bench, epochs, size), suites in sorted(_inventory().items()):
        tag = f"exp-{bench}-{budget_tag(epochs, size)}"
        base = f"{tag}-{'control' if bench == 'v1' else 'ablation'}-raw"
        budget = {"bench": bench, "epochs": epochs, "image_size": size}
        if "ablation" in suites:
            rows = _rows({ABLATION[v][0]: f"{tag}-ablation-{v}" for v in ABLATION}, base)
            tables.append({"kind": "ablation", "budget": budget, "rows": rows,
                           "title": f"{bench} ablation, {epochs} epochs at {size} px"})
        if "zoom" in suites:
            seeds = set(_finals(f"{tag}-zoom-input"))
            rows = _rows({"full, crop from the source (data.source_size)": f"{tag}-ablation-full",
                          "full, crop from the network input": f"{tag}-zoom-input"}, base, seeds)
            tables.append({"kind": "zoom", "budget": budget, "rows": rows,
                           "title": f"{bench} zoom source, {epochs} epochs at {size} px"})
        if "control" in suites:
            rows = _rows({ABLATION[v][0]: f"{tag}-control-{v}" for v in ("raw", "full")}, base)
            tables.append({"kind": "control", "budget": budget, "rows": rows,
                           "title": f"{bench} control, {epochs} epochs at {size} px"})
        if "grid" in suites:
            seeds = {s for n in GRIDS if n != 4 for s in _finals(f"{tag}-grid-n{n}")}
            rows = _rows({f"full, jigsaw n={n}": (f"{tag}-ablation-full" if n == 4 else f"{tag}-grid-n{n}")
                          for n in GRIDS}, base, seeds)
            tables.append({"kind": "grid", "budget": budget, "rows": rows,
                           "title": f"{bench} jigsaw grid, {epochs} epochs at {size} px"})
        if "locmap" in suites:
            rows = _rows({"+ FL, layer4 map (the paper's)": f"{tag}-ablation-raw+fl",
                          "+ FL, layer2 map": f"{tag}-locmap-raw+fl-layer2",
                          "full, layer4 map (the paper's)": f"{tag}-ablation-full",
                          "full, layer4 map, this machine": f"{tag}-locmap-full-layer4",
                          "full, layer2 map": f"{tag}-locmap-full-layer2"}, base)
            tables.append({"kind": "locmap", "budget": budget, "rows": rows,
                           "title": f"{bench} FL map layer, {epochs} epochs at {size} px"})
        if "recipe" in suites:
            sel = recipe_selection(epochs, size)
            if sel:
                recipes.append(sel)
    tables = [t for t in tables if any(r["runs"] for r in t["rows"].values())]
    (RESULTS / "experiments.json").write_text(json.dumps({"tables": tables, "recipes": recipes}, indent=1) + "\n")
    if recipes:
        (RESULTS / "recipe_selection.json").write_text(json.dumps(recipes, indent=1) + "\n")
    charted = [t for t in tables if t["kind"] in ("ablation", "control")]
    if charted:
        _bar_chart(plt, charted, RESULTS / "ablation.png")

    lines = ["Values are means over the seeds run (runs column), with the max-min spread of combined top-1 "
             "where there is more than one; 'vs raw' is the combined top-1 minus the raw-only run (no "
             "suppression) of the same seed, mean [per seed]. 400 test images: one image is 0.25 points, "
             "the binomial standard error of a single accuracy near 80 % is about 2 points. 'gate mean' is "
             "the suppression controller's mean gate over the test images.", ""]
    for sel in recipes:
        b = sel["budget"]
        lines += [f"### Recipe selection (v2, {b['epochs']} epochs at {b['image_size']} px, seed {b['seed']})", "",
                  f"Rule: {sel['rule']}. Winner: **{sel['winner']}**.", "",
                  "| recipe | overrides | val top-1 | test top-1 (not used) | test loc_acc |", "|---|---|---|---|---|"]
        for r in sel["rows"]:
            lines.append(f"| {r['label']} | {' '.join(r['overrides']) or '-'} | {_fmt(r['val_top1'])} | "
                         f"{_fmt(r['test']['top1'])} | {_fmt(r['test']['loc_acc'])} |")
        lines.append("")
    for t in tables:
        lines += [f"### {t['title']}", ""] + _table(t["rows"]) + [""]
    text = "\n".join(lines)
    (RESULTS / "experiments.md").write_text(text)
    return text


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=1, help="runs at once (each gets cores/jobs threads)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--image-size", type=int, default=112)
    p.add_argument("--suites", default="ablation", help=f"comma-separated, run in order: {', '.join(SUITES)}")
    p.add_argument("--only", help="comma-separated run names")
    p.add_argument("--threads", type=int, default=0, help="torch threads per run (default: cores / jobs)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds of the ablation (other suites use the first)")
    p.add_argument("--set", dest="extra", nargs="+", default=[], metavar="KEY=VALUE",
                   help="overrides added to every run (e.g. runtime.device=cuda data.num_workers=3)")
    p.add_argument("--use-recipe-winner", action="store_true",
                   help="add the validation-chosen recipe's overrides to the runs after the recipe suite")
    p.add_argument("--summarise-only", action="store_true")
    args = p.parse_args()
    seeds = tuple(int(x) for x in args.seeds.split(","))
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    recipe: list[str] = []
    suites = args.suites.split(",")

    def run_all(runs: dict[str, list[str]], extra: list[str]) -> None:
        if args.only:
            runs = {k: v for k, v in runs.items() if k in args.only.split(",")}
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda kv: run_one(kv[0], kv[1] + extra, threads), runs.items()))

    if not args.summarise_only:
        if "recipe" in suites:  # first: its winner may apply to everything after it
            run_all(suite_runs("recipe", args.epochs, args.image_size, seeds), args.extra)
            if args.use_recipe_winner:
                sel = recipe_selection(args.epochs, args.image_size, seeds[0])
                recipe = sel["winner_overrides"] if sel else []
                print(f"recipe chosen on validation: {sel and sel['winner']} {recipe}", flush=True)
        rest: dict[str, list[str]] = {}
        for suite in suites:
            if suite != "recipe":
                rest.update(suite_runs(suite, args.epochs, args.image_size, seeds))
        run_all(rest, args.extra + recipe)  # one pool, so no suite waits for another's stragglers
    print(summarise())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
