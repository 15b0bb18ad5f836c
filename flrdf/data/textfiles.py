"""Small helpers the readers share to open annotation files with good errors.

``require_file``/``require_dir`` name the missing path; ``read_lines`` yields
``(line number, text)`` so each reader can report ``file:line`` on a bad line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from flrdf.data.errors import DatasetError, line_error


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"{what}: file not found: {path}")
    return path


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DatasetError(f"{what}: folder not found: {path}")
    return path


def read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Non-blank lines of a UTF-8 text file as ``(1-based line number, line without EOL)``."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    for lineno, chunk in enumerate(raw.split(b"\n"), start=1):
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise line_error(path, lineno, f"not UTF-8 text ({exc.reason})") from exc
        text = text.rstrip("\r")
        if text.strip():
            yield lineno, text


def parse_int(path: Path, lineno: int, text: str, what: str, line: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise line_error(path, lineno, f"{what} is not an integer: {text!r}", line) from None


def parse_float(path: Path, lineno: int, text: str, what: str, line: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise line_error(path, lineno, f"{what} is not a number: {text!r}", line) from None
    if value != value or value in (float("inf"), float("-inf")):
        raise line_error(path, lineno, f"{what} is not finite: {text!r}", line)
    return value


def as_path(root: str | os.PathLike) -> Path:
    return Path(os.fspath(root)).expanduser().absolute()
