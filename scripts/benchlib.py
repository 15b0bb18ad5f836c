"""What every benchmark script ends with: one JSON object printed, and the same written where asked."""

from __future__ import annotations

import json
from pathlib import Path


def report_json(report: dict, out: str | Path | None) -> None:
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
