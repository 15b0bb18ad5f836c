"""The records every reader returns: one ``Record`` per image plus the class list.

This is the boundary between the dataset readers (cub, aircraft, cars, folder)
and everything that consumes data (torch dataset, engine, dashboard, CLI).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Record:
    """One image.

    path: absolute image path.
    label: 0-based class index into ``DatasetRecords.class_names``.
    class_name: display name of the class.
    box: ground-truth box ``(x1, y1, x2, y2)`` in pixels of the image as the
        model sees it (after ``crop_bottom``), or ``None`` when there is none.
    """

    path: str
    label: int
    class_name: str
    box: Box | None


@dataclass
class DatasetRecords:
    """The records of one split and the class list (index = label).

    crop_bottom: pixels ``load_image`` must cut from the bottom of every image
        (FGVC-Aircraft's copyright banner: 20; otherwise 0).
    meta: free-form facts about where the records came from (resolved root,
        detected layout, annotation level, ...); informational only.
    exif_transpose: whether ``load_image`` applies EXIF orientation. False for
        readers whose boxes are annotated in the stored pixel orientation (CUB,
        Cars, Aircraft); True for the folder reader (no boxes).
    """

    records: list[Record]
    class_names: list[str]
    crop_bottom: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    exif_transpose: bool = True

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def num_with_box(self) -> int:
        return sum(1 for r in self.records if r.box is not None)
