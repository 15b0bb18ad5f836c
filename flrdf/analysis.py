"""Classification analysis maths: confusion matrices, per-class accuracy, confused pairs, branch agreement.

Pure numpy over per-image predictions (the rows of ``predictions.csv`` that
:mod:`flrdf.engine.analyze` writes). Conventions: a confusion matrix ``cm`` is
(K, K) integers with rows = true class and columns = predicted class, so
``cm.sum() == n`` and ``trace(cm) / n`` is top-1. A 200-class matrix is made
readable by :func:`class_order` (classes that are confused with each other end
up adjacent: average-linkage clustering of the symmetric confusion, leaves in
optimal order) and :func:`worst_block` (the window of consecutive classes in
that order holding the most off-diagonal errors), which the report zooms into.
"""

from __future__ import annotations

import numpy as np

BRANCHES = ("combined", "raw", "object", "jigsaw")


def confusion_matrix(labels, preds, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts, rows = true class, columns = predicted class."""
    y = np.asarray(labels, dtype=np.int64).ravel()
    p = np.asarray(preds, dtype=np.int64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and predictions differ in length: {y.size} vs {p.size}")
    if y.size and (min(y.min(), p.min()) < 0 or max(y.max(), p.max()) >= num_classes):
        raise ValueError(f"class ids must lie in [0, {num_classes})")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y, p), 1)
    return cm


def per_class_accuracy(cm: np.ndarray) -> np.ndarray:
    """Recall per true class (diag / row sum); NaN for a class with no images."""
    rows = cm.sum(axis=1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, np.diag(cm) / np.where(rows > 0, rows, 1), np.nan)


def top1(cm: np.ndarray) -> float | None:
    n = int(cm.sum())
    return float(np.trace(cm)) / n if n else None


def confused_pairs(cm: np.ndarray, k: int = 10) -> list[tuple[int, int, int]]:
    """The ``k`` largest off-diagonal cells as (true, predicted, count), count > 0; ties by (true, predicted)."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    t, p = np.nonzero(off)
    cells = sorted(zip(t.tolist(), p.tolist(), off[t, p].tolist()), key=lambda c: (-c[2], c[0], c[1]))
    return [(int(a), int(b), int(c)) for a, b, c in cells[:max(0, k)]]


def most_confused_with(cm: np.ndarray) -> list[int | None]:
    """Per true class, the class it is most often predicted as (None when it is never misclassified)."""
    off = cm.copy()
    np.fill_diagonal(off, 0)
    return [int(np.argmax(r)) if r.max() > 0 else None for r in off]


def class_order(cm: np.ndarray) -> np.ndarray:
    """A permutation of the classes that puts mutually confused classes next to each other.

    Similarity = symmetric off-diagonal confusion rate (``cm + cm.T`` over the two classes' images);
    average-linkage clustering on ``1 - similarity / max`` with optimal leaf ordering. No confusion at all:
    the identity order."""
    k = cm.shape[0]
    if k < 3:
        return np.arange(k)
    rows = np.maximum(cm.sum(axis=1), 1).astype(np.float64)
    sim = (cm + cm.T) / (rows[:, None] + rows[None, :])
    np.fill_diagonal(sim, 0)
    if sim.max() <= 0:
        return np.arange(k)
    from scipy.cluster.hierarchy import leaves_list, linkage, optimal_leaf_ordering
    from scipy.spatial.distance import squareform

    dist = 1.0 - sim / sim.max()
    np.fill_diagonal(dist, 0)
    condensed = squareform(dist, checks=False)
    z = optimal_leaf_ordering(linkage(condensed, method="average"), condensed)
    return leaves_list(z).astype(np.int64)


def worst_block(cm: np.ndarray, order: np.ndarray, size: int) -> tuple[int, int, int]:
    """(start, stop, errors): the window ``order[start:stop]`` of ``size`` consecutive classes with the most
    off-diagonal confusions among themselves (first such window on ties)."""
    k = cm.shape[0]
    size = max(1, min(int(size), k))
    m = cm[np.ix_(order, order)].astype(np.int64)
    np.fill_diagonal(m, 0)
    best = (0, size, -1)
    for s in range(0, k - size + 1):
        e = int(m[s:s + size, s:s + size].sum())
        if e > best[2]:
            best = (s, s + size, e)
    return best


def agreement(labels, pred_a, pred_b) -> dict[str, np.ndarray]:
    """Index arrays of the four outcomes of two branches: both right, only a right, only b right, both wrong."""
    y, a, b = (np.asarray(v).ravel() for v in (labels, pred_a, pred_b))
    ra, rb = a == y, b == y
    return {"both_right": np.nonzero(ra & rb)[0], "a_only": np.nonzero(ra & ~rb)[0],
            "b_only": np.nonzero(~ra & rb)[0], "both_wrong": np.nonzero(~ra & ~rb)[0]}


__all__ = ["BRANCHES", "confusion_matrix", "per_class_accuracy", "top1", "confused_pairs", "most_confused_with",
           "class_order", "worst_block", "agreement"]
