"""The benchmark script runs and reports what it promises (a smoke test: no timing is asserted)."""

import json
import math

from flrdf.bench import main


def test_bench_prints_ratios(capsys):
    assert main(["--backbone", "resnet18", "--size", "64", "--batch", "2", "--iters", "1", "--rounds", "1",
                 "--warmup", "1", "--classes", "5", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("train_flrdf_images_per_s", "train_baseline_images_per_s", "train_ratio", "infer_flrdf_images_per_s",
                "infer_baseline_images_per_s", "infer_ratio", "peak_memory_mb", "localize_ms_per_batch", "device_name"):
        assert key in result
    # the figures are measurements (docs/PERFORMANCE.md reports them); here only that they are numbers
    for key in ("train_flrdf_images_per_s", "train_baseline_images_per_s", "train_ratio", "infer_ratio"):
        assert isinstance(result[key], (int, float)) and math.isfinite(result[key]), key
    assert result["ideal_train_ratio"] == round(1 / 3, 4) and result["ideal_infer_ratio"] == 0.5
