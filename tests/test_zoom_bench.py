"""``python -m flrdf bench --source-size``: runs and reports the zoom source's cost against source
off (a smoke test: no timing is asserted), and refuses bad sizes."""

import json
import math

from flrdf.bench import main


def _measured(value) -> bool:
    """A figure the benchmark measured: a finite number (its size is for docs/PERFORMANCE.md, not a test)."""
    return isinstance(value, (int, float)) and math.isfinite(value)


def test_bench_source_size_reports_ratios_and_memory(capsys, tmp_path):
    out = tmp_path / "zoom.json"
    assert main(["--backbone", "resnet18", "--size", "32", "--batch", "2", "--iters", "1", "--rounds", "1",
                 "--classes", "5", "--device", "cpu", "--source-size", "64", "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert json.loads(out.read_text()) == result
    assert result["sources"] == ["off", "64"]
    for phase in ("train", "infer"):
        for key in ("source_off_images_per_s", "source_64_ratio", "source_64_step_memory_mb",
                    "source_off_peak_memory_mb", "source_64_step_memory_ratio"):
            assert _measured(result[f"{phase}_{key}"]), key
    assert result["source_64_batch_tensor_mb"] == round(2 * 3 * 64 * 64 * 4 / 2**20, 2)
    assert _measured(result["transform_source_64_ms_per_image"])
    assert "train_ratio" not in result  # the FLRDF-vs-baseline comparison is not run


def test_bench_source_size_refuses_bad_values(capsys):
    assert main(["--size", "64", "--source-size", "32"]) == 2
    assert "--source-size values must be >= --size (64)" in capsys.readouterr().err
    assert main(["--size", "64", "--source-size", "big"]) == 2
    assert "comma-separated integers" in capsys.readouterr().err
