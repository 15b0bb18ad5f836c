"""Datasets and loaders for a configuration: records, validation carve-out, transforms,
samplers (seeded per epoch, resumable mid-epoch, sharded across DDP ranks).

With ``data.source_size > 0`` every batch also carries ``source`` (B, 3, S, S): the
same augmented views at S px for the object branch's zoom (``flrdf.data.transforms``);
its fixed size lets the default collate stack it."""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Sampler

from flrdf.config import DataConfig
from flrdf.data import DatasetError, DatasetRecords, FGVCDataset, build_transform, load_records
from flrdf.engine.step import default_workers


VAL_SPLIT = "val"  # the validation part carved from the training split (data.val_fraction, runtime.seed)


def records_for(cfg: DataConfig, split: str, seed: int = 0) -> DatasetRecords:
    """The records of a dataset split; ``val`` is the part of the training split that
    ``data.val_fraction`` carves off with ``seed`` (the run's runtime.seed): exactly the images
    the trainer held out, so thresholds and recipes can be chosen on them and never on test."""
    options = {}
    if cfg.dataset == "aircraft":
        options = {"annotation_level": cfg.annotation_level, "crop_banner": cfg.crop_banner}
    if split == VAL_SPLIT:
        if cfg.val_fraction <= 0:
            raise DatasetError("split 'val' is the validation part carved from the training split, but this "
                             "config has data.val_fraction = 0 (train with --set data.val_fraction=0.1)")
        return carve_validation(load_records(cfg.dataset, cfg.root, cfg.train_split, **options),
                                cfg.val_fraction, seed)[1]
    return load_records(cfg.dataset, cfg.root, split, **options)


def transform_for(cfg: DataConfig, train: bool):
    """The training or test transform of a data config, with its zoom source when configured."""
    return build_transform(train, cfg.resize, cfg.image_size, source_size=getattr(cfg, "source_size", 0) or 0)


def carve_validation(data: DatasetRecords, fraction: float, seed: int) -> tuple[DatasetRecords, DatasetRecords | None]:
    """Split ``fraction`` of each class off the training records (deterministic for a seed)."""
    if fraction <= 0:
        return data, None
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for i, r in enumerate(data.records):
        by_class.setdefault(r.label, []).append(i)
    val_idx = set()
    for idx in by_class.values():
        rng.shuffle(idx)
        k = min(len(idx) - 1, max(1, round(fraction * len(idx)))) if len(idx) > 1 else 0
        val_idx.update(idx[:k])
    train = [r for i, r in enumerate(data.records) if i not in val_idx]
    val = [r for i, r in enumerate(data.records) if i in val_idx]
    return (DatasetRecords(train, data.class_names, data.crop_bottom, exif_transpose=data.exif_transpose),
            DatasetRecords(val, data.class_names, data.crop_bottom, exif_transpose=data.exif_transpose))


class EpochSampler(Sampler[int]):
    """Shuffled order that depends only on (seed, epoch); sharded across ranks by striding
    (every rank gets the same number of samples); can start part-way into an epoch."""

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1, shuffle: bool = True):
        self.n, self.seed, self.rank, self.world, self.shuffle = n, seed, rank, world, shuffle
        self.epoch = 0
        self.start = 0  # samples of this rank to skip (resume mid-epoch)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        per_rank = len(order) // self.world if self.shuffle else -(-len(order) // self.world)
        mine = order[self.rank::self.world][:per_rank]
        return mine

    def __iter__(self):
        return iter(self._indices()[self.start:])

    def __len__(self) -> int:
        return max(0, len(self._indices()) - self.start)


@dataclass
class Loaders:
    train: DataLoader
    val: DataLoader | None
    test: DataLoader | None
    class_names: list[str]
    train_sampler: EpochSampler


def _loader(data: DatasetRecords, cfg: DataConfig, train: bool, batch: int, sampler, workers: int, pin: bool,
            drop_last: bool) -> DataLoader:
    ds = FGVCDataset(data, transform_for(cfg, train), on_corrupt=cfg.on_corrupt)
    # Training workers are not persistent: re-created each epoch, they draw their seeds from the
    # main RNG at that epoch, so a run resumed from an epoch checkpoint augments exactly as before.
    return DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers, pin_memory=pin,
                      drop_last=drop_last, persistent_workers=workers > 0 and not train)


def build_loaders(cfg: DataConfig, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                  pin_memory: bool = False, with_test: bool = True) -> Loaders:
    train_all = records_for(cfg, cfg.train_split)
    if not train_all.records:
        raise ValueError(f"the {cfg.dataset} split {cfg.train_split!r} at {cfg.root} has no images")
    train, val = carve_validation(train_all, cfg.val_fraction, seed)
    test = records_for(cfg, cfg.test_split) if with_test and cfg.test_split else None
    workers = default_workers() if cfg.num_workers < 0 else cfg.num_workers
    sampler = EpochSampler(len(train.records), seed, rank, world, shuffle=True)
    drop_last = len(train.records) // world >= batch_size
    train_loader = _loader(train, cfg, True, batch_size, sampler, workers, pin_memory, drop_last)
    def sharded_eval(d: DatasetRecords) -> DataLoader:
        return _loader(d, cfg, False, batch_size, EpochSampler(len(d.records), seed, rank, world, False),
                       workers, pin_memory, False)

    return Loaders(train_loader, sharded_eval(val) if val else None,
                   sharded_eval(test) if test and test.records else None, train_all.class_names, sampler)


def eval_loader(cfg: DataConfig, split: str, batch_size: int, workers: int | None = None,
                seed: int = 0) -> DataLoader:
    data = records_for(cfg, split, seed)
    workers = (default_workers() if cfg.num_workers < 0 else cfg.num_workers) if workers is None else workers
    return _loader(data, cfg, False, batch_size, None, workers, False, False)
