"""tests/waits.py: one variable scales every hang-stopping wait, and a wait that runs out says what it saw."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from waits import SCALE_VAR, WAIT_SCALE, wait_s, wait_until

HERE = Path(__file__).resolve().parent


def _scaled(value: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != SCALE_VAR}
    if value is not None:
        env[SCALE_VAR] = value
    return subprocess.run([sys.executable, "-c", "import waits; print(waits.wait_s(2), waits.wait_ms(2))"],
                          cwd=HERE, env=env, capture_output=True, text=True, timeout=wait_s(60))


def test_one_variable_scales_every_wait():
    assert _scaled(None).stdout.split() == ["6.0", "6000"]  # default: a machine three times oversubscribed
    assert _scaled("10").stdout.split() == ["20.0", "20000"]
    for bad in ("0", "-1", "fast"):
        done = _scaled(bad)
        assert done.returncode != 0 and f"{SCALE_VAR} must be a positive number" in done.stderr, done.stderr


def test_a_wait_that_runs_out_reports_what_was_shown():
    seen = []
    with pytest.raises(AssertionError) as info:
        wait_until(lambda: seen.append(1), 0.2 / WAIT_SCALE, "the job to finish",
                   lambda: f"state: running, step {len(seen)}", every=0.01)
    text = str(info.value)
    assert text.startswith("the job to finish: not reached within 0 s") and SCALE_VAR in text
    assert f"state: running, step {len(seen)}" in text and len(seen) > 1  # polled, and shown as it was at the end
    assert wait_until(lambda: "done", 1, "x") == "done"
