"""Calibration maths: expected calibration error, reliability bins and temperature scaling.

Pure numpy / scipy over logits (or top-1 confidences) and labels; :mod:`flrdf.engine.analyze`
applies it to each branch (raw, object, combined) and writes ``calibration.json``.

* :func:`reliability` - ``bins`` equal-width confidence bins on [0, 1] (Guo et al. 2017; a
  confidence of exactly 0 falls in the first bin, 1 in the last): count, mean confidence and
  accuracy per bin.
* :func:`ece` - sum over bins of (bin count / N) * |accuracy - mean confidence|; 15 bins.
* :func:`fit_temperature` - the scalar T > 0 minimising the negative log-likelihood of
  ``softmax(logits / T)`` (bounded search on log T). It is given the validation split's logits
  and labels only; the caller applies the fitted T to the analysed split's logits. The combined
  prediction sums the raw and object logits, so its softmax is sharper than either branch's:
  its fitted T shows how much.
"""

from __future__ import annotations

import numpy as np

BINS = 15
T_RANGE = (0.05, 20.0)


def softmax(logits, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def confidences(logits, labels, temperature: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(top-1 probability, top-1 correct) per row of ``logits``."""
    p = softmax(logits, temperature)
    return p.max(axis=1), p.argmax(axis=1) == np.asarray(labels).ravel()


def reliability(conf, correct, bins: int = BINS) -> dict:
    """Per bin: edges (bins + 1), count, mean confidence and accuracy (None for an empty bin)."""
    c = np.asarray(conf, dtype=np.float64).ravel()
    ok = np.asarray(correct, dtype=np.float64).ravel()
    if c.shape != ok.shape:
        raise ValueError(f"confidences and correctness differ in length: {c.size} vs {ok.size}")
    if c.size and (c.min() < 0 or c.max() > 1):
        raise ValueError("confidences must lie in [0, 1]")
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.ceil(c * bins).astype(np.int64) - 1, 0, bins - 1)   # (lo, hi] bins; 0 in the first
    count = np.bincount(idx, minlength=bins)
    conf_sum = np.bincount(idx, weights=c, minlength=bins)
    acc_sum = np.bincount(idx, weights=ok, minlength=bins)
    mean = lambda s: [None if n == 0 else float(v / n) for v, n in zip(s, count)]
    return {"edges": edges.tolist(), "count": count.tolist(), "confidence": mean(conf_sum), "accuracy": mean(acc_sum)}


def ece(conf, correct, bins: int = BINS) -> float | None:
    """Expected calibration error in [0, 1]; None for no images."""
    r = reliability(conf, correct, bins)
    n = sum(r["count"])
    if n == 0:
        return None
    return float(sum(k / n * abs(a - c) for k, a, c in zip(r["count"], r["accuracy"], r["confidence"]) if k))


def nll(logits, labels, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true class under softmax(logits / T)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    y = np.asarray(labels, dtype=np.int64).ravel()
    m = z.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True))).ravel()
    return float(np.mean(lse - z[np.arange(len(y)), y]))


def fit_temperature(val_logits, val_labels) -> float:
    """T minimising the NLL on the given (validation) logits and labels, searched on log T in T_RANGE."""
    from scipy.optimize import minimize_scalar

    z = np.asarray(val_logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[0] == 0:
        raise ValueError("fit_temperature needs (N, K) logits with N >= 1")
    lo, hi = np.log(T_RANGE[0]), np.log(T_RANGE[1])
    res = minimize_scalar(lambda t: nll(z, val_labels, np.exp(t)), bounds=(lo, hi), method="bounded",
                          options={"xatol": 1e-4})
    return float(np.exp(res.x))


def branch_calibration(logits, labels, temperature: float | None = None, bins: int = BINS) -> dict:
    """ECE, NLL and reliability bins of one branch at T = 1, and at ``temperature`` when given."""
    conf, ok = confidences(logits, labels)
    out = {"ece": ece(conf, ok, bins), "nll": nll(logits, labels), "accuracy": float(ok.mean()) if ok.size else None,
           "mean_confidence": float(conf.mean()) if conf.size else None, "reliability": reliability(conf, ok, bins),
           "temperature": temperature}
    if temperature is not None:
        conf_t, ok_t = confidences(logits, labels, temperature)
        out.update(ece_scaled=ece(conf_t, ok_t, bins), nll_scaled=nll(logits, labels, temperature),
                   mean_confidence_scaled=float(conf_t.mean()) if conf_t.size else None,
                   reliability_scaled=reliability(conf_t, ok_t, bins))
    return out


def calibration_report(logits: dict, labels, val_logits: dict | None = None, val_labels=None,
                       bins: int = BINS, note: str | None = None) -> dict:
    """Per branch (the keys of ``logits``): :func:`branch_calibration` on the analysed split, with T fitted on
    ``val_logits[branch]`` / ``val_labels`` when given (the analysed split's labels never enter the fit)."""
    have_val = val_logits is not None and val_labels is not None and len(np.asarray(val_labels)) > 0
    branches = {}
    for b, z in logits.items():
        t = fit_temperature(val_logits[b], val_labels) if have_val and b in val_logits else None
        branches[b] = branch_calibration(z, labels, t, bins)
    return {"bins": bins, "n": int(len(np.asarray(labels))),
            "temperature_split": "val" if have_val else None,
            "n_val": int(len(np.asarray(val_labels))) if have_val else 0, "note": note, "branches": branches}


__all__ = ["BINS", "softmax", "confidences", "reliability", "ece", "nll", "fit_temperature", "branch_calibration",
           "calibration_report"]
