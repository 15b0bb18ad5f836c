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
    tag = "exp-v2-" + exp.budget_tag(6, 96)
    _run(tmp_path, f"{tag}-ablation-raw", 0.70)
    _run(tmp_path, f"{tag}-ablation-raw-seed1", 0.60)
    _run(tmp_path, f"{tag}-ablation-full", 0.65)
    _run(tmp_path, f"{tag}-ablation-full-seed1", 0.62)
    _run(tmp_path, f"{tag}-ablation-full-seed2", 0.99)  # no baseline of seed 2: not paired
    _run(tmp_path, f"{tag}-ablation-full-seed3", 0.10, state="running")  # unfinished: ignored
    _run(tmp_path, f"{tag}-ablation-fullish", 0.0)  # another variant's prefix: ignored
    rows = exp._rows({"raw": f"{tag}-ablation-raw", "full": f"{tag}-ablation-full"}, f"{tag}-ablation-raw")
    full = rows["full"]
    assert full["runs"] == 3 and full["seeds"] == [0, 1, 2]
    assert full["top1"] == pytest.approx((0.65 + 0.62 + 0.99) / 3)
    assert full["top1_spread"] == pytest.approx(0.99 - 0.62)
    assert full["top1_vs_baseline_per_seed"] == pytest.approx([-0.05, 0.02])
    assert rows["raw"]["top1_vs_baseline_per_seed"] == pytest.approx([0.0, 0.0])
    only0 = exp._rows({"full": f"{tag}-ablation-full"}, None, seeds={0})["full"]
    assert only0["runs"] == 1 and only0["top1"] == pytest.approx(0.65)


def test_run_names_round_trip_through_the_summary_pattern(exp):
    for suite in exp.SUITES:
        for name in exp.suite_runs(suite, 8, 112, seeds=(0, 2)):
            m = exp.NAME.match(name)
            assert m and m[4] == suite and (int(m[2]), int(m[3])) == (8, 112), name
    v1 = exp.suite_runs("control", 8, 112)
    assert all("data.root=data/demo-v1" in o for o in v1.values())
    zoom = exp.suite_runs("zoom", 8, 112)
    assert all("data.source_size=0" in o for o in zoom.values())


def test_summary_covers_every_benchmark_and_budget_with_finished_runs(exp, tmp_path):
    for epochs, top1 in ((3, 0.5), (6, 0.7)):
        tag = "exp-v2-" + exp.budget_tag(epochs, 96)
        _run(tmp_path, f"{tag}-ablation-raw", top1)
        _run(tmp_path, f"{tag}-ablation-full", top1 - 0.1)
    tag6 = "exp-v2-" + exp.budget_tag(6, 96)
    _run(tmp_path, f"{tag6}-grid-n2", 0.66)
    _run(tmp_path, f"{tag6}-zoom-input", 0.55)
    _run(tmp_path, f"exp-v1-{exp.budget_tag(6, 96)}-control-raw", 0.8)
    _run(tmp_path, f"exp-v1-{exp.budget_tag(6, 96)}-control-full", 0.75)
    _run(tmp_path, f"exp-v2-{exp.budget_tag(9, 96)}-ablation-raw", 0.9, state="failed")  # nothing finished
    text = exp.summarise()
    assert "v2 ablation, 3 epochs at 96 px" in text and "v2 ablation, 6 epochs at 96 px" in text
    assert "9 epochs" not in text
    tables = json.loads((tmp_path / "results" / "experiments.json").read_text())["tables"]
    kinds = [(t["kind"], t["budget"]["bench"], t["budget"]["epochs"]) for t in tables]
    assert kinds == [("control", "v1", 6), ("ablation", "v2", 3), ("ablation", "v2", 6), ("zoom", "v2", 6),
                     ("grid", "v2", 6)]
    by = {(t["kind"], t["budget"]["epochs"]): t["rows"] for t in tables}
    assert by[("ablation", 6)]["full FLRDF"]["top1_vs_baseline"] == pytest.approx(-0.1)
    assert by[("control", 6)]["full FLRDF"]["top1_vs_baseline"] == pytest.approx(-0.05)
    assert by[("zoom", 6)]["full, crop from the network input"]["top1"] == pytest.approx(0.55)
    assert by[("zoom", 6)]["full, crop from the source (data.source_size)"]["top1"] == pytest.approx(0.6)
    assert by[("grid", 6)]["full, jigsaw n=2"]["top1"] == pytest.approx(0.66)
    assert (tmp_path / "results" / "ablation.png").stat().st_size > 0


def test_recipe_is_chosen_on_validation_never_on_test(exp, tmp_path):
    tests = {"paper": 0.9, "raw-warmup": 0.5, "normalized": 0.6, "scheduled": 0.7, "aux-scale": 0.4}
    vals = {"paper": 0.70, "raw-warmup": 0.80, "normalized": 0.80, "scheduled": 0.75, "aux-scale": 0.6}
    for v in exp.RECIPES:
        name = exp.run_name("v2", "recipe", v, 0, 8, 112)
        _run(tmp_path, name, tests[v])
        lines = [{"step": 1, "split": "val", "top1": 0.1}, {"step": 2, "loss_total": 1.0},
                 {"step": 3, "split": "val", "top1": vals[v]}, {"step": 3, "split": "test", "top1": tests[v]}]
        (tmp_path / "runs" / name / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    sel = exp.recipe_selection(8, 112)
    # the highest final-epoch validation top-1 wins; of the tied two, the one listed first
    assert sel["winner"] == "raw-warmup"
    assert sel["winner_overrides"] == exp.RECIPES["raw-warmup"][1]
    assert {r["variant"]: r["val_top1"] for r in sel["rows"]} == pytest.approx(vals)


def test_locmap_suite_pairs_the_layer2_map_with_the_pinned_paper_map(exp, tmp_path):
    runs = exp.suite_runs("locmap", 8, 112, seeds=(0, 1))
    assert sorted(runs) == sorted([
        "exp-v2-e8-112px-locmap-full-layer2", "exp-v2-e8-112px-locmap-raw+fl-layer2",
        "exp-v2-e8-112px-locmap-full-layer2-seed1", "exp-v2-e8-112px-locmap-raw+fl-layer2-seed1",
        "exp-v2-e8-112px-locmap-full-layer4"])

    def last(overrides, key):  # the value that wins: apply_overrides takes them in order
        return [o.split("=", 1)[1] for o in overrides if o.startswith(key + "=")][-1]

    for name, o in runs.items():
        assert last(o, "model.loc_layer") == ("layer4" if name.endswith("layer4") else "layer2")
        assert last(o, "model.tau") == ("0.3" if name.endswith("layer4") else "0.2")
        assert last(o, "model.loc_map") == "mean"  # the channel mean they ran with, not the demo's DDT
    # every other suite pins the paper's map, whatever the demo config's map is; all pin the data settings
    for suite in ("ablation", "zoom", "control", "grid", "recipe"):
        for o in exp.suite_runs(suite, 8, 112).values():
            assert last(o, "model.loc_layer") == "layer4" and last(o, "model.tau") == "0.3"
            assert last(o, "model.loc_map") == "mean"
            assert last(o, "data.source_size") == ("0" if suite == "zoom" else "224")
            assert last(o, "data.val_fraction") == ("0.2" if suite == "recipe" else "0")
    for suite in (*exp.SUITES,):
        for o in exp.suite_runs(suite, 8, 112).values():
            assert last(o, "model.box_refine") == "none"  # scored by the map's own box, as they ran
    for o in runs.values():
        assert last(o, "data.source_size") == "224" and last(o, "data.val_fraction") == "0"
    tag = "exp-v2-e8-112px"
    _run(tmp_path, f"{tag}-ablation-raw", 0.70)
    _run(tmp_path, f"{tag}-ablation-full", 0.80, loc=0.3)
    _run(tmp_path, f"{tag}-locmap-full-layer2", 0.85, loc=0.7)
    _run(tmp_path, f"{tag}-locmap-full-layer4", 0.79, loc=0.28)
    exp.summarise()
    tables = json.loads((tmp_path / "results" / "experiments.json").read_text())["tables"]
    rows = next(t["rows"] for t in tables if t["kind"] == "locmap")
    assert rows["full, layer2 map"]["top1_vs_baseline"] == pytest.approx(0.15)
    assert rows["full, layer2 map"]["loc_acc"] == pytest.approx(0.7)
    assert rows["full, layer4 map, this machine"]["top1"] == pytest.approx(0.79)
    assert rows["+ FL, layer2 map"]["runs"] == 0
