"""The torchvision ResNet paths compute what they computed before the timm backbones came (issue 24):
fixed-seed forwards against tests/data/resnet_fingerprint.json (scripts/resnet_fingerprint.py, run once
before the change)."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from resnet_fingerprint import CASES, fingerprint  # noqa: E402

STORED = json.loads((ROOT / "tests" / "data" / "resnet_fingerprint.json").read_text())


@pytest.mark.parametrize("case", sorted(CASES))
def test_resnet_forward_matches_stored_fingerprint(case):
    now, before = fingerprint(CASES[case]), STORED[case]
    assert now["params"].keys() == before["params"].keys()  # same parameter names: old checkpoints load
    for k, (shape, total) in before["params"].items():
        assert now["params"][k][0] == shape, k
        assert now["params"][k][1] == pytest.approx(total, rel=1e-6, abs=1e-6), k
    for phase in ("train", "eval"):
        for k, values in before[phase].items():
            assert now[phase][k] == pytest.approx(values, rel=1e-4, abs=1e-4), f"{phase}.{k}"
