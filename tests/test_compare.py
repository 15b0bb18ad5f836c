"""flrdf.compare: config diff, seed-grouped variants, metrics and CSV on hand-made run directories."""

import csv
import json

import pytest
import yaml

from flrdf.compare import config_diff, diff_rows, group_variants, load_run, metrics_rows, variant_stats, write_csv


def make_run(base, name, seed, tau, top1, via_metrics=False):
    d = base / name
    d.mkdir()
    cfg = {"name": "demo", "model": {"tau": tau, "backbone": "resnet18"}, "runtime": {"seed": seed}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    final = {"top1": top1, "top1_raw": top1 - 0.1, "loc_acc": 0.5, "n": 10}
    if via_metrics:   # no final in status: the last test evaluation line is used
        lines = [{"step": 1, "loss_total": 2.0}, {"step": 2, "split": "test", "top1": 0.1},
                 {"step": 3, "split": "test", **final}]
        (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    else:
        (d / "status.json").write_text(json.dumps({"state": "finished", "final": final}))
    return load_run(d)


@pytest.fixture
def runs(tmp_path):
    return [make_run(tmp_path, "a0", 0, 0.3, 0.60), make_run(tmp_path, "a1", 1, 0.3, 0.70, via_metrics=True),
            make_run(tmp_path, "a2", 2, 0.3, 0.65), make_run(tmp_path, "b0", 0, 0.5, 0.40)]


def test_diff_lists_only_differing_keys(runs):
    assert config_diff(runs) == ["model.tau", "runtime.seed"]
    assert diff_rows(runs[:2]) == [["runtime.seed", 0, 1]]
    assert config_diff(runs[:1]) == []


def test_seed_only_differences_form_one_variant(runs):
    groups = group_variants(runs)
    assert {k: [r.name for r in v] for k, v in groups.items()} == {"model.tau=0.3": ["a0", "a1", "a2"],
                                                                   "model.tau=0.5": ["b0"]}
    stats = {s["variant"]: s for s in variant_stats(groups)}
    a = stats["model.tau=0.3"]["top1"]
    assert a["mean"] == pytest.approx(0.65) and a["spread"] == pytest.approx(0.10)
    assert a["values"] == pytest.approx([0.60, 0.70, 0.65]) and stats["model.tau=0.3"]["seeds"] == [0, 1, 2]
    assert stats["model.tau=0.5"]["top1"]["spread"] == 0.0
    assert stats["model.tau=0.3"]["top1_object"]["mean"] is None    # absent metric: no number invented


def test_metrics_rows_and_csv(runs, tmp_path):
    rows = metrics_rows(runs)
    assert [r["top1"] for r in rows] == [0.60, 0.70, 0.65, 0.40] and rows[1]["variant"] == "model.tau=0.3"
    path = write_csv(tmp_path / "cmp.csv", runs)
    with open(path) as f:
        table = list(csv.DictReader(f))
    assert [t["kind"] for t in table] == ["run"] * 4 + ["variant_mean", "variant_spread"] * 2
    assert "model.tau" in table[0] and "runtime.seed" in table[0]
    mean = next(t for t in table if t["kind"] == "variant_mean" and t["variant"] == "model.tau=0.3")
    assert float(mean["top1"]) == pytest.approx(0.65) and mean["n_runs"] == "3"


def test_not_a_run_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no config.yaml"):
        load_run(tmp_path)
