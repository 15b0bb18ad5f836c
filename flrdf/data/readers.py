"""One entry point over all readers: ``load_records(name, root, split, **options)``.

Maps a dataset name to its reader module, checks the options it accepts and
that the root exists, and lists each dataset's splits (for ``data-info``).
"""

from __future__ import annotations

import os

from flrdf.data import aircraft, cars, cub, folder
from flrdf.data.errors import DatasetError
from flrdf.data.records import DatasetRecords
from flrdf.data.textfiles import as_path

DATASETS: tuple[str, ...] = ("cub", "aircraft", "cars", "folder")
ALIASES = {"demo": "cub"}
_READERS = {"cub": cub, "aircraft": aircraft, "cars": cars, "folder": folder}
_OPTIONS = {"aircraft": ("annotation_level", "crop_banner")}


def canonical_name(name: str) -> str:
    key = ALIASES.get(name, name)
    if key not in _READERS:
        raise DatasetError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS + tuple(ALIASES))}")
    return key


def dataset_splits(name: str, root: str | os.PathLike) -> list[str]:
    """The splits of a dataset (for ``folder``: the split folders present under ``root``)."""
    key = canonical_name(name)
    if key == "folder":
        return folder.splits(root)
    return list(_READERS[key].SPLITS)


def load_records(name: str, root: str | os.PathLike, split: str, **options) -> DatasetRecords:
    """Records and class names of one split.

    Options (aircraft only): ``annotation_level`` = variant | family | manufacturer,
    ``crop_banner`` = True. Raises ``DatasetError`` naming the file (and line) on any problem.
    """
    key = canonical_name(name)
    allowed = _OPTIONS.get(key, ())
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise DatasetError(
            f"{name}: unknown option(s) {', '.join(unknown)}; accepted: {', '.join(allowed) or 'none'}"
        )
    base = as_path(root)
    if not base.is_dir():
        raise DatasetError(f"{name}: dataset root not found: {base}")
    return _READERS[key].load(base, split, **options)
