"""Feature-space maths: a 2-D map of pooled branch features and how well they separate the classes.

Pure numpy / scikit-learn / umap-learn over an (N, C) array of pooled features (one row
per image; :mod:`flrdf.engine.analyze` collects the raw branch's GAP of X' and the object
branch's GAP of the crop's backbone output from its one forward pass). Two figures:

* :func:`project` - the 2-D coordinates the Analyze tab draws: the features are
  L2-normalised, reduced to at most ``PCA_DIMS`` principal components (the usual step
  before UMAP / t-SNE: it removes noise dimensions and makes the neighbour search cheap),
  then mapped by UMAP (``umap-learn``; cosine-like neighbourhoods, ``n_neighbors`` 15) or
  t-SNE (scikit-learn, Barnes-Hut; perplexity 30). Fewer than 4 points: the two first
  principal components. Seeded: the same features give the same map.
* :func:`separation` - figures computed on the full-dimensional (normalised) features,
  not on the 2-D picture, so "the object branch's features separate classes better" is a
  number: the silhouette score (cosine distance; -1..1, higher = tighter, better-separated
  classes) and the nearest-class-mean accuracy (leave-one-out: each image is scored against
  class means computed without it).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

METHODS = ("umap", "tsne")
PCA_DIMS = 50


def normalize(features) -> np.ndarray:
    """Rows L2-normalised (float32); an all-zero row stays zero."""
    x = np.asarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, C), got shape {x.shape}")
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def pca(x: np.ndarray, dims: int) -> np.ndarray:
    """The first ``dims`` principal-component scores of ``x`` (centred; SVD)."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    dims = max(1, min(dims, x.shape[0], x.shape[1]))
    if x.shape[0] > 2000 and x.shape[1] > dims:
        from sklearn.decomposition import PCA

        return PCA(dims, svd_solver="randomized", random_state=0).fit_transform(x).astype(np.float32)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    return (u[:, :dims] * s[:dims]).astype(np.float32)


def available_method(method: str) -> str:
    """``method`` if it can run here; ``umap`` without umap-learn falls back to ``tsne``."""
    if method not in METHODS:
        raise ValueError(f"embedding method must be one of {METHODS} (or none), got {method!r}")
    if method == "umap":
        try:
            import umap  # noqa: F401
        except ImportError:
            return "tsne"
    return method


def project(features, method: str = "umap", seed: int = 0, log: Callable[[str], None] | None = None) -> np.ndarray:
    """(N, 2) float32 coordinates of the rows of ``features`` (see the module docstring)."""
    x = normalize(features)
    n = x.shape[0]
    if n == 0:
        return np.zeros((0, 2), np.float32)
    if n < 4:
        out = pca(x, 2)
        return np.pad(out, ((0, 0), (0, 2 - out.shape[1]))).astype(np.float32)
    method = available_method(method)
    t0 = time.perf_counter()
    z = pca(x, PCA_DIMS)
    if log:
        log(f"PCA to {z.shape[1]} dims: {time.perf_counter() - t0:.1f} s; {method} on {n} points")
    if method == "umap":
        import umap

        reducer = umap.UMAP(n_components=2, n_neighbors=max(2, min(15, n - 1)), min_dist=0.1,
                            random_state=seed, n_jobs=1, init="spectral" if n > 16 else "random")
        out = reducer.fit_transform(z)
    else:
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))
        out = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                   method="barnes_hut" if n > 8 else "exact", learning_rate="auto").fit_transform(z)
    if log:
        log(f"{method}: {time.perf_counter() - t0:.1f} s in all")
    return np.asarray(out, dtype=np.float32)


def silhouette(features, labels) -> float | None:
    """Mean silhouette (cosine distance on normalised features), -1..1; None with fewer than 2 classes
    or no class holding 2 images."""
    y = np.asarray(labels).ravel()
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2 or len(classes) >= len(y) or counts.max() < 2:
        return None
    from sklearn.metrics import silhouette_score

    return float(silhouette_score(normalize(features), y, metric="cosine"))


def ncm_accuracy(features, labels) -> float | None:
    """Leave-one-out nearest-class-mean accuracy (cosine similarity to each class's mean of normalised
    features, the image itself left out of its own class's mean); None with fewer than 2 classes. An image
    alone in its class has no mean to match and counts as wrong."""
    x = normalize(features).astype(np.float64)
    y = np.asarray(labels).ravel()
    classes, inv, counts = np.unique(y, return_inverse=True, return_counts=True)
    if len(classes) < 2:
        return None
    sums = np.zeros((len(classes), x.shape[1]))
    np.add.at(sums, inv, x)
    scores = np.empty((x.shape[0], len(classes)))
    for c in range(len(classes)):           # per class: cosine similarity to its mean (own row left out)
        own = inv == c
        mean = sums[c] / max(counts[c], 1)
        scores[:, c] = x @ mean / max(np.linalg.norm(mean), 1e-12)
        if own.any():
            loo = (sums[c][None, :] - x[own]) / np.maximum(counts[c] - 1, 1)
            norm = np.linalg.norm(loo, axis=1)
            sims = np.einsum("ij,ij->i", x[own], loo) / np.maximum(norm, 1e-12)
            scores[own, c] = np.where(counts[c] > 1, sims, -np.inf)
    return float(np.mean(scores.argmax(axis=1) == inv))


def separation(features, labels) -> dict:
    """{"silhouette", "ncm_accuracy"} of the features (see the module docstring)."""
    return {"silhouette": silhouette(features, labels), "ncm_accuracy": ncm_accuracy(features, labels)}


__all__ = ["METHODS", "PCA_DIMS", "normalize", "pca", "available_method", "project", "silhouette",
           "ncm_accuracy", "separation"]
