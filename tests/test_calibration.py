"""Calibration maths (flrdf.calibration): ECE against hand-computed bins, zero for a calibrated set, and a
temperature fitted on validation logits only."""

from __future__ import annotations

import numpy as np
import pytest

from flrdf.calibration import calibration_report, confidences, ece, fit_temperature, nll, reliability


def test_ece_matches_a_hand_computed_example():
    # 15 bins of width 1/15: 0.95 -> bin 14, 0.55 -> bin 8 (0.533, 0.6], 0.25 -> bin 3 (0.2, 0.267]
    conf = [0.95, 0.95, 0.55, 0.55, 0.25]
    correct = [1, 0, 1, 1, 0]
    r = reliability(conf, correct, 15)
    assert [i for i, n in enumerate(r["count"]) if n] == [3, 8, 14]
    assert r["accuracy"][14] == 0.5 and r["confidence"][8] == pytest.approx(0.55)
    # 2/5 |0.5 - 0.95| + 2/5 |1 - 0.55| + 1/5 |0 - 0.25|
    assert ece(conf, correct, 15) == pytest.approx(0.18 + 0.18 + 0.05)
    assert ece([0.0, 1.0], [0, 1], 15) == 0.0          # the ends fall in the first and last bins


def test_ece_is_zero_for_a_perfectly_calibrated_set():
    conf = [0.7] * 10 + [0.2] * 5 + [1.0] * 3
    correct = [1] * 7 + [0] * 3 + [1] + [0] * 4 + [1] * 3
    assert ece(conf, correct) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(0)                      # correct ~ Bernoulli(confidence): ECE -> 0 as N grows
    c = rng.uniform(0, 1, 200_000)
    assert ece(c, rng.uniform(0, 1, c.size) < c) < 0.01
    assert ece(c, np.ones_like(c)) > 0.4                # always right at mean confidence 0.5: badly calibrated


def _overconfident(n, k, scale, seed):
    """Logits whose softmax at T = 1 / scale is calibrated (labels drawn from it), multiplied by ``scale``."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 1.5, (n, k))
    p = np.exp(base) / np.exp(base).sum(1, keepdims=True)
    labels = np.array([rng.choice(k, p=row) for row in p])
    return base * scale, labels


def test_temperature_is_fitted_on_validation_and_lowers_the_ece_of_an_overconfident_model():
    val_z, val_y = _overconfident(3000, 10, 3.0, 1)
    test_z, test_y = _overconfident(3000, 10, 3.0, 2)
    t = fit_temperature(val_z, val_y)
    assert t == pytest.approx(3.0, rel=0.1)
    assert nll(val_z, val_y, t) < nll(val_z, val_y, 1.0)
    rep = calibration_report({"combined": test_z}, test_y, {"combined": val_z}, val_y)
    b = rep["branches"]["combined"]
    assert rep["temperature_split"] == "val" and rep["n_val"] == 3000 and b["temperature"] == t
    assert b["ece_scaled"] < 0.5 * b["ece"]
    conf, ok = confidences(test_z, test_y)
    assert b["ece"] == pytest.approx(ece(conf, ok))


def test_temperature_never_reads_the_analysed_splits_labels():
    val_z, val_y = _overconfident(500, 5, 2.0, 3)
    test_z, test_y = _overconfident(500, 5, 2.0, 4)
    a = calibration_report({"raw": test_z}, test_y, {"raw": val_z}, val_y)
    shuffled = np.random.default_rng(0).permutation(test_y)
    b = calibration_report({"raw": test_z}, shuffled, {"raw": val_z}, val_y)
    assert a["branches"]["raw"]["temperature"] == b["branches"]["raw"]["temperature"]
    c = calibration_report({"raw": test_z}, test_y, {"raw": val_z}, np.random.default_rng(1).permutation(val_y))
    assert c["branches"]["raw"]["temperature"] != a["branches"]["raw"]["temperature"]   # the val labels do count
    none = calibration_report({"raw": test_z}, test_y, None, None, note="no validation split")
    assert none["temperature_split"] is None and none["branches"]["raw"]["temperature"] is None
    assert "ece_scaled" not in none["branches"]["raw"]
