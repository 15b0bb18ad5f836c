"""Which image of a synthetic set is which, and whether a model trained on one set is scored on its own
training images in another.

``make-demo-data`` writes its parameters to ``CUB_200_2011/flrdf_synthetic.json`` (the generator's
record). The trainer stores that record with the model (``data_generator`` in the checkpoint's
``extra``; ``export`` carries it into the model file), and ``eval`` / ``loc-eval`` compare it with
the record of the set they are asked to score: an image is identified by everything that decides
its pixels - the generator, its version, the seed, the image size, the class's definition and the
random-stream key. Versions 1 and 2 key image n (images.txt order) by ``(seed, n)``, so two sets
made with other per-class counts share images across splits (``make-demo-data --version 2`` with its
default counts holds 30 of the demo model's training images among its 300 test images); version 3
keys by ``(seed, split, class, k)``, so a test image never depends on the other splits' counts.
"""

from __future__ import annotations

import json
from pathlib import Path

from flrdf.data.synthetic import MARKER_FILE

SPLITS = ("train", "test")


def generator_record(root: str | Path | None) -> dict | None:
    """The generator's record of a dataset root (the root itself or its ``CUB_200_2011/``), or None."""
    if not root:
        return None
    for folder in (Path(root), Path(root) / "CUB_200_2011"):
        path = folder / MARKER_FILE
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None
            return data if isinstance(data, dict) and "generator" in data else None
    return None


def _size(record: dict):
    return record["image_size"] if "image_size" in record else tuple(record["image_sides"])


def image_ids(record: dict, split: str) -> set[tuple]:
    """The identities of the images of ``split`` (train | test) of the set a record describes."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    version = int(record.get("version", 1))
    train, test = int(record["train_per_class"]), int(record["test_per_class"])
    specs = [tuple(sorted(s.items())) for s in record["class_specs"]]
    common = (record["generator"], int(record["seed"]), _size(record))
    ids = set()
    for c, spec in enumerate(specs):
        ks = range(train) if split == "train" else range(train, train + test)
        for k in ks:
            if version >= 3:  # (seed, split, class, k within the split)
                key = (split, c, k if split == "train" else k - train)
            else:             # (seed, n): n counts every image of every class before it
                key = (c * (train + test) + k,)
            ids.add((version, *common, spec, *key))
    return ids


def training_overlap(model_record: dict | None, data_record: dict | None, split: str) -> tuple[int, int] | None:
    """(images of ``split`` of the scored set that are training images of the model, images in the split),
    or None when either set has no generator record or the split is not one the generator writes."""
    if not model_record or not data_record or split not in SPLITS:
        return None
    try:
        scored = image_ids(data_record, split)
        return len(scored & image_ids(model_record, "train")), len(scored)
    except (KeyError, TypeError, ValueError):  # a record this version cannot read
        return None


def overlap_warning(model_record: dict | None, root: str | Path | None, split: str) -> str | None:
    """A warning to print when the ``split`` of the synthetic set at ``root`` holds the model's training images."""
    data_record = generator_record(root)
    found = training_overlap(model_record, data_record, split)
    if not found or not found[0]:
        return None
    shared, total = found
    m, d = model_record, data_record
    why = (" (versions 1-2 number images across splits, so other per-class counts move training images into "
           "the test split)" if int(d.get("version", 1)) < 3 and split == "test" else "")
    return (f"{shared} of the {total} {split} images of {root} are training images of this model: that set was made "
            f"by the same generator and seed (version {d.get('version', 1)}, seed {d['seed']}, "
            f"{d['train_per_class']}/{d['test_per_class']} per class) as the model's training data "
            f"(version {m.get('version', 1)}, {m['train_per_class']}/{m['test_per_class']} per class){why}; "
            "scores on it overstate the model. Score the set the model was made with, or one with another seed "
            "(make-demo-data --version 3 keeps test images apart whatever the counts).")
