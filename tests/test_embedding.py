"""Feature-space maths (flrdf.embedding): the separation figures order constructed cases, the 2-D map has one
row per image and is reproducible."""

from __future__ import annotations

import os

import numpy as np
import pytest

from flrdf.embedding import ncm_accuracy, project, separation, silhouette


def _clusters(n_per, classes, dim, spread, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (classes, dim))
    y = np.repeat(np.arange(classes), n_per)
    return centres[y] + spread * rng.normal(0, 1, (len(y), dim)), y


def test_well_separated_clusters_score_above_mixed_ones():
    tight, y = _clusters(20, 5, 32, 0.1)
    loose, _ = _clusters(20, 5, 32, 1.0)
    mixed = np.random.default_rng(1).normal(0, 1, tight.shape)
    s_tight, s_loose, s_mixed = (separation(x, y) for x in (tight, loose, mixed))
    assert s_tight["silhouette"] > s_loose["silhouette"] > s_mixed["silhouette"]
    assert s_tight["ncm_accuracy"] == 1.0 and s_mixed["ncm_accuracy"] < 0.5
    assert s_tight["ncm_accuracy"] >= s_loose["ncm_accuracy"] > s_mixed["ncm_accuracy"]


def test_ncm_accuracy_leaves_the_image_out_of_its_own_class_mean():
    # two classes, one point each plus a far point of class 0: with its own point in the mean, class 1's
    # single image would match itself; left out, it has no mean and counts as wrong
    x = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    assert ncm_accuracy(x, [0, 0, 1]) == pytest.approx(2 / 3)
    assert silhouette(x, [0, 0, 0]) is None and ncm_accuracy(x, [0, 0, 0]) is None


def test_projection_has_one_row_per_image_and_is_reproducible():
    x, y = _clusters(10, 4, 64, 0.3)
    a = project(x, "tsne", seed=0)
    assert a.shape == (40, 2) and np.isfinite(a).all()
    assert np.array_equal(a, project(x, "tsne", seed=0))
    for n in (1, 2, 3):                                  # too few for t-SNE / UMAP: principal components
        assert project(x[:n], "tsne").shape == (n, 2)
    assert project(np.zeros((0, 8)), "umap").shape == (0, 2)
    with pytest.raises(ValueError, match="embedding method"):
        project(x, "pca")


@pytest.mark.skipif(os.environ.get("FLRDF_SKIP_UMAP") == "1", reason="FLRDF_SKIP_UMAP=1")
def test_umap_projection_separates_clusters():
    """The one UMAP test: its first call compiles numba kernels (about 10 s on the 2-core machine)."""
    x, y = _clusters(15, 4, 64, 0.2)
    xy = project(x, "umap", seed=0)
    assert xy.shape == (60, 2) and np.isfinite(xy).all()
    assert silhouette(xy, y) > 0.5          # the 2-D map keeps the clusters apart
