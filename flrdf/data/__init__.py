"""Datasets layer: readers for CUB-200-2011, FGVC-Aircraft, Stanford Cars and image
folders behind one ``load_records``; image decoding (``load_image``); box-aware
transforms; the torch ``FGVCDataset``; and the synthetic fine-grained demo set
(``flrdf.data.synthetic``). ``python -m flrdf data-info`` lives in ``commands``.

Names are imported on first use (PEP 562), so reading records or writing the
demo set does not pay for importing torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DATASETS": "flrdf.data.readers",
    "dataset_splits": "flrdf.data.readers",
    "load_records": "flrdf.data.readers",
    "DatasetError": "flrdf.data.errors",
    "ImageLoadError": "flrdf.data.errors",
    "Record": "flrdf.data.records",
    "DatasetRecords": "flrdf.data.records",
    "load_image": "flrdf.data.images",
    "IMAGENET_MEAN": "flrdf.data.transforms",
    "IMAGENET_STD": "flrdf.data.transforms",
    "BoxTransform": "flrdf.data.transforms",
    "build_transform": "flrdf.data.transforms",
    "to_uint8": "flrdf.data.transforms",
    "FGVCDataset": "flrdf.data.dataset",
    "find_unreadable": "flrdf.data.dataset",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'flrdf.data' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
