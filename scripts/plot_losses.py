"""Fig. 5 analog: the three branch losses and the total loss of a run against step, as a PNG.

    python scripts/plot_losses.py runs/demo docs/results/loss_curves.png
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from flrdf.engine.rundir import read_metrics  # noqa: E402

KEYS = (("loss_raw", "L_raw"), ("loss_object", "L_obj"), ("loss_jigsaw", "L_jig"), ("loss_total", "L_total"))


def main(run_dir: str, out: str) -> int:
    lines = [m for m in read_metrics(run_dir) if "loss_total" in m]
    if not lines:
        print(f"{run_dir}: no training metrics", file=sys.stderr)
        return 2
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for key, label in KEYS:
        pts = [(m["step"], m[key]) for m in lines if isinstance(m.get(key), (int, float))]
        if pts:
            ax = axes[1] if key == "loss_total" else axes[0]
            ax.plot(*zip(*pts), label=label)
    for ax, title in zip(axes, ("branch losses", "total loss")):
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(f"{Path(run_dir).name}: {title}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:3]))
