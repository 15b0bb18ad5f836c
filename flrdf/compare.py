"""Run comparison: config diff, final metrics, seed-grouped variants, CSV export.

Reads run directories only (``config.yaml``, ``status.json``, ``metrics.jsonl``;
the run-directory contract, docs/TRAINING.md). Runs whose resolved configs differ only in
``runtime.seed`` form one *variant*, summarised as the mean and the spread
(max - min) of each final metric, the single seeds kept as dots
(:func:`variant_figure`). Final metrics are ``status.json``'s ``final`` (the
last test evaluation), else the last ``split: test`` line of ``metrics.jsonl``.
No Gradio here; the dashboard's Analyze tab draws these and overlays the loss
curves with ``dashboard.curves.loss_figure``.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from flrdf.engine.rundir import read_json, read_metrics

SEED_KEY = "runtime.seed"
METRIC_KEYS = ("top1", "top5", "top1_raw", "top1_object", "top1_jigsaw", "loc_acc", "mean_iou")


@dataclass
class RunInfo:
    name: str
    path: Path
    config: dict                         # flattened: {"model.tau": 0.3, ...}
    final: dict                          # final metrics (may be empty)
    records: list[dict] = field(default_factory=list)

    @property
    def seed(self):
        return self.config.get(SEED_KEY)


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def load_run(path: Path, with_records: bool = True) -> RunInfo:
    """A run directory's config, final metrics and (optionally) metrics records; ValueError without a config."""
    import yaml

    path = Path(path)
    cfg_file = path / "config.yaml"
    if not cfg_file.is_file():
        raise ValueError(f"{path.name} has no config.yaml: not a run directory")
    try:
        config = yaml.safe_load(cfg_file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        raise ValueError(f"{path.name}/config.yaml is not valid YAML") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path.name}/config.yaml is not a mapping")
    records = read_metrics(path) if with_records else []
    final = dict((read_json(path / "status.json") or {}).get("final") or {})
    if not final:
        recs = records if with_records else read_metrics(path)
        tests = [r for r in recs if r.get("split") == "test"]
        final = dict(tests[-1]) if tests else {}
    return RunInfo(path.name, path, flatten(config), final, records)


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def config_diff(runs: list[RunInfo]) -> list[str]:
    """The config keys whose values are not the same in every run (a key missing somewhere counts as differing)."""
    keys = sorted(set().union(*(r.config for r in runs))) if runs else []
    missing = object()
    return [k for k in keys if any(not _same(r.config.get(k, missing), runs[0].config.get(k, missing))
                                   for r in runs[1:])]


def variant_of(run: RunInfo, diff: list[str]) -> str:
    """A variant label: the differing keys other than the seed, ``key=value`` joined; '(same config)' if none."""
    parts = [f"{k}={run.config.get(k)}" for k in diff if k != SEED_KEY]
    return ", ".join(parts) if parts else "(same config)"


def group_variants(runs: list[RunInfo]) -> dict[str, list[RunInfo]]:
    """Runs grouped by everything but ``runtime.seed`` (insertion order of the first run of each group)."""
    diff = config_diff(runs)
    groups: dict[str, list[RunInfo]] = {}
    for r in runs:
        groups.setdefault(variant_of(r, diff), []).append(r)
    return groups


def _num(v):
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def variant_stats(groups: dict[str, list[RunInfo]], keys=METRIC_KEYS) -> list[dict]:
    """Per variant and metric: mean, spread (max - min), the per-seed values; fractions as stored."""
    out = []
    for name, members in groups.items():
        row = {"variant": name, "runs": [m.name for m in members], "seeds": [m.seed for m in members]}
        for k in keys:
            vals = [v for v in (_num(m.final.get(k)) for m in members) if v is not None]
            row[k] = {"mean": float(np.mean(vals)) if vals else None,
                      "spread": float(max(vals) - min(vals)) if vals else None, "values": vals}
        out.append(row)
    return out


def metrics_rows(runs: list[RunInfo], keys=METRIC_KEYS) -> list[dict]:
    diff = config_diff(runs)
    return [{"run": r.name, "variant": variant_of(r, diff), "seed": r.seed,
             **{k: _num(r.final.get(k)) for k in keys}} for r in runs]


def diff_rows(runs: list[RunInfo]) -> list[list]:
    """[key, value in run 1, value in run 2, ...] for each differing key."""
    return [[k, *[r.config.get(k, "(missing)") for r in runs]] for k in config_diff(runs)]


def write_csv(path: Path, runs: list[RunInfo], keys=METRIC_KEYS) -> Path:
    """One row per run (kind=run: its differing config values and final metrics) then one per variant
    (kind=variant_mean and variant_spread)."""
    diff = config_diff(runs)
    stats = variant_stats(group_variants(runs), keys)
    cols = ["kind", "run", "variant", "n_runs", *diff, *keys]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in runs:
            w.writerow({"kind": "run", "run": r.name, "variant": variant_of(r, diff), "n_runs": 1,
                        **{k: r.config.get(k, "") for k in diff}, **{k: _num(r.final.get(k)) for k in keys}})
        for s in stats:
            for what in ("mean", "spread"):
                w.writerow({"kind": f"variant_{what}", "run": " ".join(s["runs"]), "variant": s["variant"],
                            "n_runs": len(s["runs"]), **{k: s[k][what] for k in keys}})
    return Path(path)


def variant_figure(stats: list[dict], keys=("top1", "top1_raw", "top1_object", "loc_acc")):
    """One panel per metric: per variant the mean (bar) with its min-max range, every seed as a dot."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(min(14, 2.2 + 3.2 * len(keys)), 3.8), dpi=110)
    axes = np.atleast_1d(fig.subplots(1, len(keys)))
    x = np.arange(len(stats))
    for ax, key in zip(axes, keys):
        for i, s in enumerate(stats):
            vals = s[key]["values"]
            if not vals:
                continue
            ax.bar(i, s[key]["mean"], 0.6, color="#3b6fb6", alpha=0.35)
            ax.vlines(i, min(vals), max(vals), color="#3b6fb6", linewidth=2)
            jitter = np.linspace(-0.12, 0.12, len(vals)) if len(vals) > 1 else [0.0]
            ax.plot(i + np.asarray(jitter), vals, "o", color="black", markersize=4)
        ax.set_xticks(x, [f"{s['variant'][:28]}\n({len(s['runs'])} run{'s' if len(s['runs']) > 1 else ''})"
                          for s in stats], fontsize=6, rotation=20, ha="right")
        ax.set_title(key, fontsize=9)
        ax.set_ylim(0, 1.02)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle("final metrics per variant: mean (bar), min-max (line), each seed (dot)", fontsize=9)
    fig.tight_layout()
    return fig


__all__ = ["RunInfo", "load_run", "flatten", "config_diff", "group_variants", "variant_stats", "metrics_rows",
           "diff_rows", "write_csv", "variant_figure", "SEED_KEY", "METRIC_KEYS"]
