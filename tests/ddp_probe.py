"""``python -m torch.distributed.run ... tests/ddp_probe.py train ARGS``: the real ``python -m flrdf`` CLI,
with a recorder on the jigsaw permutations each rank draws. Writes ``<--out>/probe-rank<RANK>.json``:
the first permutations this process drew (after a resume: the first after it). Used by tests/test_engine.py."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import flrdf.jigsaw as jigsaw
from flrdf.cli import main

drawn: list = []
_draw = jigsaw.random_permutations


def recording(*args, **kwargs):
    perms = _draw(*args, **kwargs)
    if len(drawn) < 2:
        drawn.append(perms.tolist())
    return perms


jigsaw.random_permutations = recording

if __name__ == "__main__":
    argv = sys.argv[1:]
    code = main(argv)
    out = Path(argv[argv.index("--out") + 1])
    (out / f"probe-rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps({"perms": drawn}))
    sys.exit(code)
