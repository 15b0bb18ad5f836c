"""The experiment summariser (scripts/run_experiments.py): seeds are found from run names,
paired with the baseline run of the same seed, and unfinished runs are left out."""

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "run_experiments.py"


@pytest.fixture()
def exp(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("run_experiments", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "ROOT", tmp_path)
    monkeypatch.setattr(mod, "RESULTS", tmp_path / "results")
    return mod


def _run(root: Path, name: str, top1: float, state: str = "finished", loc: float = 0.5) -> None:
    d = root / "runs" / name
    d.mkdir(parents=True)
    final = {"top1": top1, "top1_raw": top1, "loc_acc": loc, "mean_iou": 0.4} if state == "finished" else None
    (d / "status.json").write_text(json.dumps({"state": state, "final": final}))


def test_seeds_pair_with_the_baseline_of_the_same_seed(exp, tmp_path):
    tag = exp.budget_tag(6, 96)
    _run(tmp_path, f"exp-{tag}-ablation-raw", 0.70)
    _run(tmp_path, f"exp-{tag}-ablation-raw-seed1", 0.60)
    _run(tmp_path, f"exp-{tag}-ablation-full", 0.65)
    _run(tmp_path, f"exp-{tag}-ablation-full-seed1", 0.62)
    _run(tmp_path, f"exp-{tag}-ablation-full-seed2", 0.99)  # no baseline of seed 2: not paired
    _run(tmp_path, f"exp-{tag}-ablation-full-seed3", 0.10, state="running")  # unfinished: ignored
    _run(tmp_path, f"exp-{tag}-ablation-fullish", 0.0)  # another variant's prefix: ignored
    rows = exp._rows({"raw": f"exp-{tag}-ablation-raw", "full": f"exp-{tag}-ablation-full"}, f"exp-{tag}-ablation-raw")
    full = rows["full"]
    assert full["runs"] == 3 and full["seeds"] == [0, 1, 2]
    assert full["top1"] == pytest.approx((0.65 + 0.62 + 0.99) / 3)
    assert full["top1_spread"] == pytest.approx(0.99 - 0.62)
    assert full["top1_vs_baseline_per_seed"] == pytest.approx([-0.05, 0.02])
    assert rows["raw"]["top1_vs_baseline_per_seed"] == pytest.approx([0.0, 0.0])
    only0 = exp._rows({"full": f"exp-{tag}-ablation-full"}, None, seeds={0})["full"]
    assert only0["runs"] == 1 and only0["top1"] == pytest.approx(0.65)


def test_summary_covers_every_budget_with_finished_runs(exp, tmp_path):
    for epochs, top1 in ((3, 0.5), (6, 0.7)):
        tag = exp.budget_tag(epochs, 96)
        _run(tmp_path, f"exp-{tag}-ablation-raw", top1)
        _run(tmp_path, f"exp-{tag}-ablation-full", top1 - 0.1)
    _run(tmp_path, f"exp-{exp.budget_tag(6, 96)}-grid-n2", 0.66)
    _run(tmp_path, f"exp-{exp.budget_tag(9, 96)}-ablation-raw", 0.9, state="failed")  # nothing finished
    text = exp.summarise()
    assert "### 3 epochs at 96 px" in text and "### 6 epochs at 96 px" in text and "9 epochs" not in text
    ablation = json.loads((tmp_path / "results" / "ablation.json").read_text())["budgets"]
    assert [b["budget"]["epochs"] for b in ablation] == [3, 6]
    assert ablation[1]["rows"]["full FLRDF"]["top1_vs_baseline"] == pytest.approx(-0.1)
    grid = json.loads((tmp_path / "results" / "jigsaw_grid.json").read_text())["budgets"]
    assert [b["budget"]["epochs"] for b in grid] == [6]  # the 3-epoch budget has no grid runs
    assert grid[0]["rows"]["full, jigsaw n=2"]["top1"] == pytest.approx(0.66)
    assert (tmp_path / "results" / "ablation.png").stat().st_size > 0
