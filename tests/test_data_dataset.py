"""``FGVCDataset``: samples collate with torch's default collate; corrupt images either
raise an error naming the file or are replaced deterministically and counted."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from flrdf.data import DatasetError, DatasetRecords, FGVCDataset, ImageLoadError, Record, build_transform
from flrdf.data.dataset import find_unreadable


@pytest.fixture()
def records(tmp_path) -> DatasetRecords:
    for i in range(4):
        Image.new("RGB", (30, 20), (i * 60, 0, 0)).save(tmp_path / f"{i}.jpg")
    (tmp_path / "2.jpg").write_bytes((tmp_path / "2.jpg").read_bytes()[:100])  # truncated
    return DatasetRecords(
        [
            Record(str(tmp_path / "0.jpg"), 0, "a", (0.0, 0.0, 15.0, 10.0)),
            Record(str(tmp_path / "1.jpg"), 1, "b", None),
            Record(str(tmp_path / "2.jpg"), 0, "a", (1.0, 1.0, 2.0, 2.0)),
            Record(str(tmp_path / "3.jpg"), 1, "b", (3.0, 2.0, 30.0, 20.0)),
        ],
        ["a", "b"],
    )


TRANSFORM = build_transform(False, 16, 16, mean=(0, 0, 0), std=(1, 1, 1))


def test_sample_fields(records):
    ds = FGVCDataset(records, TRANSFORM)
    assert len(ds) == 4
    s = ds[0]
    assert set(s) == {"image", "label", "box", "has_box", "index"}
    assert s["image"].shape == (3, 16, 16) and s["label"] == 0 and s["index"] == 0 and s["has_box"] is True
    assert s["box"].tolist() == [0.0, 0.0, 8.0, 8.0]
    s = ds[1]
    assert s["has_box"] is False and all(math.isnan(v) for v in s["box"].tolist())
    assert ds[-1]["index"] == 3
    with pytest.raises(IndexError):
        ds[4]


def test_corrupt_image_error_names_file(records, tmp_path):
    ds = FGVCDataset(records, TRANSFORM)
    with pytest.raises(ImageLoadError, match=f"{tmp_path / '2.jpg'}: cannot decode image"):
        ds[2]
    loader = DataLoader(ds, batch_size=4)
    with pytest.raises(ImageLoadError, match="2.jpg"):
        next(iter(loader))


def test_corrupt_image_skip_is_deterministic_and_counted(records, tmp_path):
    ds = FGVCDataset(records, TRANSFORM, on_corrupt="skip")
    with pytest.warns(UserWarning, match=f"skipping unreadable image: {tmp_path / '2.jpg'}"):
        s = ds[2]
    assert s["index"] == 3 and s["label"] == 1  # replaced by the next good record
    assert ds.skipped == [str(tmp_path / "2.jpg")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # known bad: no second warning, no second count
        assert ds[2]["index"] == 3
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["index"].tolist() == [0, 1, 3, 3]
    assert batch["label"].tolist() == [0, 1, 1, 1]
    assert batch["has_box"].tolist() == [True, False, True, True]
    assert ds.skipped == [str(tmp_path / "2.jpg")]
    [(path, reason)] = find_unreadable(records)
    assert path == str(tmp_path / "2.jpg") and reason.startswith(f"{path}: cannot decode image")


def test_skip_wraps_around_and_gives_up(records, tmp_path):
    last_bad = DatasetRecords(records.records[:3], records.class_names)
    ds = FGVCDataset(last_bad, TRANSFORM, on_corrupt="skip")
    with pytest.warns(UserWarning):
        assert ds[2]["index"] == 0  # wraps to the start
    (tmp_path / "bad.jpg").write_bytes(b"junk")
    all_bad = DatasetRecords([Record(str(tmp_path / "bad.jpg"), 0, "a", None)], ["a"])
    with pytest.warns(UserWarning), pytest.raises(DatasetError, match="no readable image among the 1 records"):
        FGVCDataset(all_bad, TRANSFORM, on_corrupt="skip")[0]


def test_arguments(records):
    with pytest.raises(ValueError, match="on_corrupt must be one of error, skip"):
        FGVCDataset(records, TRANSFORM, on_corrupt="ignore")
    with pytest.raises(TypeError, match="transform must be callable"):
        FGVCDataset(records, None)


def test_crop_bottom_applied(tmp_path):
    Image.new("RGB", (40, 60), (0, 0, 0)).save(tmp_path / "x.png")
    data = DatasetRecords([Record(str(tmp_path / "x.png"), 0, "a", (0.0, 0.0, 40.0, 40.0))], ["a"], crop_bottom=20)
    seen = []
    FGVCDataset(data, lambda im, box: (seen.append(im.size) or torch.zeros(3, 2, 2), box))[0]
    assert seen == [(40, 40)]
