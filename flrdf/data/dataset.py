"""The torch ``Dataset`` over ``DatasetRecords``: load, transform, and package one sample.

Samples are dicts that torch's default collate stacks: ``image`` (3xHxW),
``label`` (int), ``box`` (4 floats, NaN when the image has no box), ``has_box``
(bool), ``index`` (the record actually returned), and ``source`` (3xSxS, the same
view at ``S = transform.source_size`` px, for the object branch's zoom) when the
transform has a source size (``BoxTransform.views``). Every source of a dataset
has the same size, so torch's default collate stacks it like the image.

Corrupt images (``on_corrupt``):
- ``"error"`` (default): ``ImageLoadError`` naming the file is raised.
- ``"skip"``: the bad record is replaced by the next readable record (index+1,
  index+2, ... wrapping), so the replacement is deterministic; the bad path is
  appended to ``skipped`` once and a ``UserWarning`` naming it is issued. With
  ``num_workers > 0`` each worker holds its own copy of ``skipped`` (the main
  process's list stays empty) but the warnings still reach stderr; use
  ``find_unreadable`` to check a whole split up front.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import torch
from torch.utils.data import Dataset

from flrdf.data.errors import DatasetError, ImageLoadError
from flrdf.data.images import load_image
from flrdf.data.records import DatasetRecords

ON_CORRUPT = ("error", "skip")


class FGVCDataset(Dataset):
    def __init__(self, data: DatasetRecords, transform: Callable, on_corrupt: str = "error"):
        if on_corrupt not in ON_CORRUPT:
            raise ValueError(f"on_corrupt must be one of {', '.join(ON_CORRUPT)}, got {on_corrupt!r}")
        if not callable(transform):
            raise TypeError("transform must be callable: (pil_image, box_or_None) -> (tensor, box_tensor_or_None)")
        self.data = data
        self.records = data.records
        self.class_names = data.class_names
        self.transform = transform
        self.on_corrupt = on_corrupt
        self.skipped: list[str] = []
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.records)

    def _sample(self, index: int) -> dict:
        record = self.records[index]
        image = load_image(record.path, crop_bottom=self.data.crop_bottom,
                           exif_transpose=getattr(self.data, "exif_transpose", True))
        source = None
        if getattr(self.transform, "source_size", 0):
            tensor, box, source = self.transform.views(image, record.box)
        else:
            tensor, box = self.transform(image, record.box)
        if box is None:
            box_out, has_box = torch.full((4,), math.nan, dtype=torch.float32), False
        else:
            box_out, has_box = torch.as_tensor(box, dtype=torch.float32).reshape(4), True
        sample = {"image": tensor, "label": int(record.label), "box": box_out, "has_box": has_box, "index": index}
        if source is not None:
            sample["source"] = source
        return sample

    def _mark_bad(self, index: int, error: ImageLoadError) -> None:
        self._bad.add(index)
        path = self.records[index].path
        self.skipped.append(path)
        warnings.warn(f"skipping unreadable image: {error}", UserWarning, stacklevel=3)

    def __getitem__(self, index: int) -> dict:
        n = len(self.records)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} records")
        index %= n
        if self.on_corrupt == "error":
            return self._sample(index)
        for step in range(n):
            candidate = (index + step) % n
            if candidate in self._bad:
                continue
            try:
                return self._sample(candidate)
            except ImageLoadError as error:
                self._mark_bad(candidate, error)
        raise DatasetError(f"no readable image among the {n} records (first: {self.records[0].path})")


def find_unreadable(data: DatasetRecords) -> list[tuple[str, str]]:
    """``(path, reason)`` for every record whose image cannot be loaded (decodes each image)."""
    bad = []
    for record in data.records:
        try:
            load_image(record.path, crop_bottom=data.crop_bottom, exif_transpose=data.exif_transpose)
        except ImageLoadError as error:
            bad.append((record.path, str(error)))
    return bad
