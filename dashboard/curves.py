"""Training curves for the Train tab: series extraction, smoothing, downsampling, figures.

Pure functions over the metrics records of ``flrdf.engine.rundir.read_metrics``;
no Gradio here. Conventions (CONVENTIONS.md, "Live training curves"): x-axis =
step (epoch or relative time as options); runs overlaid, one colour per run;
TensorBoard's debiased EMA with the raw curve drawn faded behind it; lines
down-sampled to about ``MAX_POINTS`` points, keeping each bucket's extremes so
spikes stay visible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib
from matplotlib.figure import Figure  # no pyplot: figures are plain objects, nothing global to close

LOSS_KEYS = ("loss_raw", "loss_object", "loss_jigsaw", "loss_total")
LOSS_LABELS = {"loss_raw": "L_raw", "loss_object": "L_obj", "loss_jigsaw": "L_jig", "loss_total": "L_total"}
X_AXES = ("step", "epoch", "time")
MAX_POINTS = 1500
DEFAULT_SMOOTHING = 0.6  # TensorBoard's default
EVAL_KEYS = ("top1", "top1_raw", "top1_object", "loc_acc")
RAW_ALPHA = 0.25


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def ema(values: Sequence[float], weight: float) -> list[float]:
    """TensorBoard's debiased exponential moving average; non-finite values pass through unsmoothed."""
    w = min(max(float(weight), 0.0), 0.999)
    if w == 0:
        return [float(v) for v in values]
    out, last, n = [], 0.0, 0
    for v in values:
        if not _finite(v):
            out.append(float(v))
            continue
        last = last * w + (1 - w) * v
        n += 1
        out.append(last / (1 - w ** n))
    return out


def downsample(xs: Sequence[float], ys: Sequence[float], max_points: int = MAX_POINTS) -> tuple[list, list]:
    """At most ``max_points`` points: per bucket the first, min and max points, in x order.

    Short series come back unchanged; the first and last points are always kept.
    """
    n = len(xs)
    if n <= max_points or max_points < 4:
        return list(xs), list(ys)
    buckets = max(1, (max_points - 2) // 3)
    keep = {0, n - 1}
    size = (n - 2) / buckets
    for b in range(buckets):
        lo, hi = 1 + int(b * size), 1 + int((b + 1) * size)
        idx = range(lo, max(hi, lo + 1))
        vals = [(ys[i] if _finite(ys[i]) else 0.0, i) for i in idx if i < n - 1]
        if not vals:
            continue
        keep.update((idx[0], min(vals)[1], max(vals)[1]))
    order = sorted(keep)
    return [xs[i] for i in order], [ys[i] for i in order]


def x_values(records: list[dict], axis: str) -> list[float]:
    """The x coordinate of each record: step, (fractional) epoch, or minutes since the run's first record."""
    if axis == "epoch":
        return [float(r.get("epoch") or 0.0) for r in records]
    if axis == "time":
        t0 = next((r["time"] for r in records if _finite(r.get("time"))), 0.0)
        return [((r.get("time") or t0) - t0) / 60.0 for r in records]
    return [float(r.get("step") or 0) for r in records]


X_LABELS = {"step": "step", "epoch": "epoch", "time": "minutes since start"}


def series(records: list[dict], key: str, axis: str = "step") -> tuple[list[float], list[float]]:
    """(x, y) of training lines (no ``split``) that carry a finite ``key``."""
    rows = [r for r in records if "split" not in r and _finite(r.get(key))]
    return x_values(rows, axis), [float(r[key]) for r in rows]


def eval_series(records: list[dict], key: str, split: str, axis: str = "step") -> tuple[list[float], list[float]]:
    rows = [r for r in records if r.get("split") == split and _finite(r.get(key))]
    return x_values(rows, axis), [float(r[key]) for r in rows]


def _plot_line(ax, xs, ys, color, label, smoothing: float, max_points: int) -> None:
    if not xs:
        return
    smooth = ema(ys, smoothing)
    if smoothing > 0 and len(xs) > 1:
        rx, ry = downsample(xs, ys, max_points)
        ax.plot(rx, ry, color=color, alpha=RAW_ALPHA, linewidth=1)
    sx, sy = downsample(xs, smooth, max_points)
    ax.plot(sx, sy, color=color, linewidth=1.6, label=label, marker="o" if len(sx) == 1 else None, markersize=3)


def _palette(n: int) -> list:
    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _finish(fig: Figure, axes, axis: str) -> Figure:
    for ax in axes:
        ax.grid(True, alpha=0.3)
        ax.set_xlabel(X_LABELS.get(axis, axis), fontsize=8)
        ax.tick_params(labelsize=8)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
        if not ax.lines:
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes, color="grey")
    fig.tight_layout()
    return fig


def loss_figure(runs: dict[str, list[dict]], smoothing: float = DEFAULT_SMOOTHING, axis: str = "step",
                max_points: int = MAX_POINTS) -> Figure:
    """The paper's Fig. 5. One run: the three branch losses and the total in one axes.
    Several runs: one panel per loss, one colour per run."""
    if len(runs) <= 1:
        fig = Figure(figsize=(8, 3.6))
        ax = fig.subplots()
        name, records = next(iter(runs.items()), ("", []))
        for key, color in zip(LOSS_KEYS, _palette(len(LOSS_KEYS))):
            xs, ys = series(records, key, axis)
            _plot_line(ax, xs, ys, color, LOSS_LABELS[key], smoothing, max_points)
        ax.set_title(f"training losses - {name}" if name else "training losses", fontsize=9)
        return _finish(fig, [ax], axis)
    fig = Figure(figsize=(9, 5.4))
    axes = fig.subplots(2, 2, sharex=True)
    colors = _palette(len(runs))
    for ax, key in zip(axes.flat, LOSS_KEYS):
        for (name, records), color in zip(runs.items(), colors):
            xs, ys = series(records, key, axis)
            _plot_line(ax, xs, ys, color, name, smoothing, max_points)
        ax.set_title(LOSS_LABELS[key], fontsize=9)
    return _finish(fig, list(axes.flat), axis)


def aux_figure(runs: dict[str, list[dict]], smoothing: float = DEFAULT_SMOOTHING, axis: str = "step",
               max_points: int = MAX_POINTS) -> Figure:
    """Learning rate, images/s and evaluation accuracy (test solid, val dashed), one colour per run."""
    fig = Figure(figsize=(11, 3.4))
    axes = fig.subplots(1, 3)
    colors = _palette(max(1, len(runs)))
    for (name, records), color in zip(runs.items(), colors):
        xs, ys = series(records, "lr", axis)
        if xs:  # lr is a schedule: never smoothed
            axes[0].plot(*downsample(xs, ys, max_points), color=color, linewidth=1.4, label=name)
        xs, ys = series(records, "images_per_s", axis)
        _plot_line(axes[1], xs, ys, color, name, smoothing, max_points)
        for split, style in (("test", "-"), ("val", "--")):
            for key, marker in (("top1", "o"), ("loc_acc", "s")):
                xs, ys = eval_series(records, key, split, axis)
                if xs:
                    label = f"{name} {split} {key}" if len(runs) > 1 else f"{split} {key}"
                    axes[2].plot(xs, ys, linestyle=style, marker=marker, markersize=4, color=color, label=label,
                                 alpha=1.0 if key == "top1" else 0.6)
    axes[0].set_title("learning rate (new layers)", fontsize=9)
    axes[1].set_title("images / s", fontsize=9)
    axes[2].set_title("evaluation (top-1, loc. acc.)", fontsize=9)
    axes[2].set_ylim(-0.02, 1.02)
    if len(runs) <= 1:
        for ax in axes[:2]:
            for line in ax.lines:
                line.set_label("_")  # one run: its name is in the title of the loss plot
    return _finish(fig, list(axes), axis)
