"""Errors of the datasets layer.

Every problem the readers or the image loader find is reported as a
``DatasetError`` (a ``ValueError``) whose message names the file - and, for a
text annotation, the line - so a user can fix the download. Image decoding
problems are the narrower ``ImageLoadError``.
"""

from __future__ import annotations

import os


class DatasetError(ValueError):
    """A dataset root, annotation file or annotation line that cannot be used."""


class ImageLoadError(DatasetError):
    """An image that cannot be decoded: missing, corrupt, truncated or too large."""


def line_error(path: str | os.PathLike, lineno: int, problem: str, line: str | None = None) -> DatasetError:
    """``DatasetError`` for ``path:lineno: problem`` (with the offending text, shortened)."""
    message = f"{os.fspath(path)}:{lineno}: {problem}"
    if line is not None:
        text = line.strip()
        if len(text) > 120:
            text = text[:117] + "..."
        message += f" (line: {text!r})"
    return DatasetError(message)
