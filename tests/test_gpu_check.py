"""scripts/gpu_check.py without a GPU: a CPU (``--tiny``) run is a test of the script, and its JSON never
lands where a GPU result belongs (docs/results/gpu_check.json)."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_cpu_run_writes_its_json_beside_its_work_not_in_docs(tmp_path, capsys):
    gpu_check = _script()
    target = ROOT / "docs" / "results" / "gpu_check.json"
    before = target.read_bytes() if target.exists() else None
    skip = [c for c in gpu_check.CHECKS if c != "env"]
    assert gpu_check.main(["--device", "cpu", "--work", str(tmp_path), "--out", str(target), "--skip", *skip]) == 0
    assert (target.read_bytes() if target.exists() else None) == before
    report = json.loads((tmp_path / "gpu_check_cpu.json").read_text())
    assert report["tiny"] is True and report["checks"]["env"]["ok"]
    assert report["checks"]["env"]["device"].startswith("cpu (smoke test")
    assert "not docs/results/gpu_check.json" in capsys.readouterr().out
    sets = gpu_check.tiny_sets(tmp_path, "cpu")
    assert sets[sets.index("data.image_size=32") - 1] == "--set"  # --tiny shrinks the demo runs
