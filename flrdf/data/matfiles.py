"""Reading MATLAB annotation files (Stanford Cars) with errors that name file and record.

``scipy.io.loadmat(path, squeeze_me=True)``; a struct array comes back as a
numpy record array whose fields hold ints / strings / 0-d arrays.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from flrdf.data.errors import DatasetError


def load_mat(path: Path) -> dict[str, Any]:
    import scipy.io  # imported here: only the cars reader needs scipy

    try:
        return scipy.io.loadmat(str(path), squeeze_me=True)
    except Exception as exc:  # scipy raises several types for a bad file
        raise DatasetError(f"cannot read MATLAB file {path}: {exc}") from exc


def variable(path: Path, contents: dict[str, Any], key: str) -> Any:
    if key not in contents:
        found = ", ".join(k for k in contents if not k.startswith("__")) or "nothing"
        raise DatasetError(f"{path}: no variable {key!r} (found: {found})")
    return contents[key]


def struct_records(path: Path, contents: dict[str, Any], key: str, fields: tuple[str, ...]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(1-based record number, {field: value})`` for each element of struct array ``key``."""
    array = np.atleast_1d(variable(path, contents, key))
    names = array.dtype.names
    if names is None:
        raise DatasetError(f"{path}: variable {key!r} is not a struct array")
    missing = [f for f in fields if f not in names]
    if missing:
        raise DatasetError(f"{path}: variable {key!r} lacks field(s) {', '.join(missing)} (has: {', '.join(names)})")
    for number, element in enumerate(array.ravel(), start=1):
        yield number, {f: element[f] for f in fields}


def record_error(path: Path, number: int, problem: str) -> DatasetError:
    return DatasetError(f"{path}: record {number}: {problem}")


def as_number(path: Path, number: int, field: str, value: Any) -> float:
    try:
        arr = np.asarray(value)
        if arr.size != 1:
            raise ValueError
        out = float(arr.reshape(()).item())
    except (TypeError, ValueError):
        raise record_error(path, number, f"field {field!r} is not a number: {value!r}") from None
    if not np.isfinite(out):
        raise record_error(path, number, f"field {field!r} is not finite: {value!r}")
    return out


def as_int(path: Path, number: int, field: str, value: Any) -> int:
    out = as_number(path, number, field, value)
    if out != int(out):
        raise record_error(path, number, f"field {field!r} is not an integer: {value!r}")
    return int(out)


def as_text(path: Path, number: int, field: str, value: Any) -> str:
    arr = np.asarray(value)
    if arr.dtype.kind in ("U", "S", "O") and arr.size == 1:
        text = arr.reshape(()).item()
        text = text.decode() if isinstance(text, bytes) else str(text)
        if text.strip():
            return text.strip()
    raise record_error(path, number, f"field {field!r} is not a non-empty string: {value!r}")


def string_list(path: Path, contents: dict[str, Any], key: str) -> list[str]:
    values = np.atleast_1d(variable(path, contents, key)).ravel()
    return [as_text(path, i, key, v) for i, v in enumerate(values, start=1)]
