"""``python -m flrdf data-info``: check that a dataset root is read the way the user expects.

Prints a JSON summary (classes, images and boxes per split, images missing on
disk) or, with ``--records``, one JSON line per image. Any problem: one line on
stderr naming it, exit status 2, no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from flrdf.data.errors import DatasetError
from flrdf.data.readers import ALIASES, DATASETS, canonical_name, dataset_splits, load_records

PROG = "python -m flrdf data-info"
SAMPLE = 5


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of argparse's usage block
        raise _UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="Summarise a dataset root as JSON.")
    p.add_argument("--dataset", required=True, choices=DATASETS + tuple(ALIASES), help="dataset name")
    p.add_argument("--root", required=True, help="dataset root folder")
    p.add_argument("--split", help="one split (default: every split of the dataset)")
    p.add_argument("--records", action="store_true", help="print one JSON line per image instead of the summary")
    p.add_argument("--annotation-level", choices=("variant", "family", "manufacturer"), help="aircraft only (default variant)")
    p.add_argument("--no-crop-banner", action="store_true", help="aircraft only: keep the 20-pixel banner")
    return p


def _options(args) -> dict:
    options = {}
    if args.annotation_level is not None or args.no_crop_banner:
        if canonical_name(args.dataset) != "aircraft":
            raise _UsageError("--annotation-level and --no-crop-banner apply to --dataset aircraft only")
        if args.annotation_level is not None:
            options["annotation_level"] = args.annotation_level
        if args.no_crop_banner:
            options["crop_banner"] = False
    return options


def split_summary(data) -> dict:
    """One split's counts as ``data-info`` prints them (also the dashboard's dataset browser)."""
    missing = [r.path for r in data.records if not os.path.isfile(r.path)]
    return {
        "images": len(data.records),
        "with_box": data.num_with_box(),
        "classes_present": len({r.label for r in data.records}),
        "missing_images": len(missing),
        "missing_examples": missing[:3],
    }


def _summary(args, splits: list[str], loaded: dict) -> dict:
    first = loaded[splits[0]]
    names = first.class_names
    out = {
        "dataset": args.dataset,
        "root": os.path.abspath(args.root),
        "resolved_root": first.meta.get("root"),
        "layout": first.meta.get("layout"),
        "num_classes": len(names),
        "class_names_sample": names[:SAMPLE] + (["..."] + names[-1:] if len(names) > SAMPLE + 1 else names[SAMPLE:]),
        "crop_bottom": first.crop_bottom,
        "splits": {s: split_summary(loaded[s]) for s in splits},
    }
    if "annotation_level" in first.meta:
        out["annotation_level"] = first.meta["annotation_level"]
    return out


def _record_line(record, split: str | None) -> str:
    item = {"path": record.path, "label": record.label, "class_name": record.class_name,
            "box": list(record.box) if record.box is not None else None}
    if split is not None:
        item["split"] = split
    return json.dumps(item, ensure_ascii=False)


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    options = _options(args)
    splits = [args.split] if args.split else dataset_splits(args.dataset, args.root)
    if not splits:
        raise DatasetError(f"{args.dataset}: no splits found under {os.path.abspath(args.root)}")
    loaded = {s: load_records(args.dataset, args.root, s, **options) for s in splits}
    if args.records:
        tag_split = args.split is None
        for s in splits:
            for record in loaded[s].records:
                print(_record_line(record, s if tag_split else None))
    else:
        print(json.dumps(_summary(args, splits, loaded), indent=2, ensure_ascii=False))
    sys.stdout.flush()
    return 0


def data_info_main(argv: list[str] | None = None) -> int:
    """Entry point of ``data-info``: 0 on success, 2 on any dataset or usage problem."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _run(argv)
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    except (_UsageError, DatasetError) as exc:
        message = " ".join(str(exc).split("\n"))
        print(f"data-info: error: {message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head & co.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
