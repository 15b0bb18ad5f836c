"""Time the Analyze embedding (issue 25): 2-D projection + separation figures of CUB-test-sized feature sets.

What is measured: ``flrdf.embedding.project`` (L2 normalisation, PCA to 50 dims, UMAP or t-SNE) and
``flrdf.embedding.separation`` (silhouette, leave-one-out nearest-class-mean accuracy) on precomputed
pooled features - N images (default 5,794 + 206 = 6,000, CUB-200's test split rounded up) of the
backbone's width (512 for resnet18, 2,048 for resnet50), 200 classes. The features come from a
clustered generator shaped like post-ReLU GAP vectors (non-negative, class centres plus per-image
noise), not from a model forward: extracting them is the model's evaluation pass, which ``analyze``
runs anyway; the projection is the extra cost the embedding adds.

UMAP compiles its numba kernels at the first call in a process (above 4,096 points also its
approximate neighbour search, NN-descent); ``umap_compile_s`` is that one-time cost, measured as a
UMAP of 4,500 warm-up points (which compiles both paths) minus a second, compiled run of the same,
and reported apart from the timed projections; ``first_call_total_s`` adds it back.

    OMP_NUM_THREADS=1 python scripts/bench_embedding.py --out docs/results/bench_embedding_cpu.json
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import report_json  # noqa: E402


def features(n: int, dim: int, classes: int, seed: int = 0, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative clustered features (N, dim) and labels: each class a sparse centre, images around it."""
    rng = np.random.default_rng(seed)
    centres = np.maximum(rng.normal(0, 1, (classes, dim)), 0).astype(np.float32)
    labels = np.arange(n) % classes
    x = centres[labels] + spread * rng.normal(0, 1, (n, dim)).astype(np.float32)
    return np.maximum(x, 0), labels


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=6000)
    p.add_argument("--classes", type=int, default=200)
    p.add_argument("--dims", default="512,2048")
    p.add_argument("--methods", default="umap,tsne")
    p.add_argument("--out")
    args = p.parse_args(argv)

    from flrdf.embedding import project, separation

    report = {"what": "flrdf.embedding.project (normalise, PCA 50, UMAP/t-SNE) and separation on precomputed "
                      "pooled features; feature extraction (the model forward) not included",
              "machine": f"{platform.machine()}, {os.cpu_count()} cores ({cpu_name()}), no GPU",
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "n": args.n, "classes": args.classes,
              "runs": []}
    methods = [m for m in args.methods.split(",") if m]
    if "umap" in methods:
        warm, _ = features(4500, 64, 20, seed=1)
        t0 = time.perf_counter()
        project(warm, "umap")
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        project(warm, "umap")
        second = time.perf_counter() - t0
        report["umap_compile_s"] = round(first - second, 2)
        print(f"umap warm-up 4,500 points: first {first:.1f} s, compiled {second:.1f} s", file=sys.stderr)
    for dim in [int(d) for d in args.dims.split(",")]:
        x, y = features(args.n, dim, args.classes)
        t0 = time.perf_counter()
        sep = separation(x, y)
        sep_s = time.perf_counter() - t0
        for method in methods:
            t0 = time.perf_counter()
            xy = project(x, method, log=lambda m: print(m, file=sys.stderr))
            proj_s = time.perf_counter() - t0
            assert xy.shape == (args.n, 2) and np.isfinite(xy).all()
            row = {"dim": dim, "method": method, "project_s": round(proj_s, 2), "separation_s": round(sep_s, 2),
                   "total_s": round(proj_s + sep_s, 2), "silhouette": sep["silhouette"],
                   "ncm_accuracy": sep["ncm_accuracy"]}
            if method == "umap":
                row["first_call_total_s"] = round(proj_s + sep_s + report["umap_compile_s"], 2)
            report["runs"].append(row)
            print(row, file=sys.stderr)
    report_json(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
