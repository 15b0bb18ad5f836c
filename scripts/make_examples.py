"""Copy a dozen test images of the synthetic set into assets/examples/ with their
ground-truth boxes (assets/examples/examples.json), for the dashboard's examples.
Either synthetic version: the images are copied as written (v2: JPEGs of 256-384 px
sides), the boxes are in each image's own pixels.

    python scripts/make_examples.py --root data/demo --out assets/examples --count 12
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flrdf.data import load_records  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default="data/demo")
    p.add_argument("--out", default="assets/examples")
    p.add_argument("--count", type=int, default=12)
    args = p.parse_args()
    data = load_records("cub", args.root, "test")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    picked = []
    # round-robin over classes so the examples cover as many classes as possible
    by_class: dict[int, list] = {}
    for r in data.records:
        by_class.setdefault(r.label, []).append(r)
    i = 0
    while len(picked) < args.count and any(by_class.values()):
        for label in sorted(by_class):
            if by_class[label] and len(picked) < args.count:
                picked.append(by_class[label].pop(0))
        i += 1
    entries = []
    for r in picked:
        name = Path(r.path).name
        shutil.copyfile(r.path, out / name)
        entries.append({"file": name, "label": r.label, "class_name": r.class_name, "box": [float(v) for v in r.box]})
    (out / "examples.json").write_text(json.dumps(entries, indent=1) + "\n")
    print(f"wrote {len(entries)} examples to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
