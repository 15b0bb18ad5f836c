"""Throughput benchmark: FLRDF versus the plain baseline (same backbone, size, batch, device).

``python -m flrdf bench [--backbone resnet18 --size 224 --batch 16 ...]`` prints one
JSON object: training and inference images/s of both models and their ratios
(ideal: 1/3 for training - three backbone passes - and 1/2 for inference -
raw + object). Rounds alternate between the two models and the ratio is the
median of per-round ratios, which keeps it stable on a noisy machine.
With ``--pipeline`` it also times the full training step with data loading
from the synthetic set.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time

import torch

from flrdf.config import ModelConfig
from flrdf.engine.step import precision_for, resolve_device, train_step
from flrdf.model import FLRDF


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build_pair(backbone: str, num_classes: int, jigsaw_n: int, tau: float):
    flrdf = FLRDF(ModelConfig(backbone=backbone, pretrained=False, jigsaw_n=jigsaw_n, tau=tau), num_classes)
    baseline = FLRDF(ModelConfig(backbone=backbone, pretrained=False, branches="raw", suppression="none"), num_classes)
    return flrdf, baseline


def _timed(fn, iters: int, device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    _sync(device)
    return time.perf_counter() - t0


def bench_models(backbone="resnet18", size=224, batch=16, iters=3, rounds=3, warmup=1, device="auto",
                 amp=True, channels_last=True, num_classes=200, jigsaw_n=4, tau=0.5) -> dict:
    dev = resolve_device(device)
    prec = precision_for(dev, amp, channels_last)
    torch.manual_seed(0)
    models = dict(zip(("flrdf", "baseline"), build_pair(backbone, num_classes, jigsaw_n, tau)))
    images = torch.randn(batch, 3, size, size)
    labels = torch.randint(0, num_classes, (batch,))
    opts = {}
    for name, m in models.items():
        m.to(dev)
        if prec.channels_last:
            m.to(memory_format=torch.channels_last)
        opts[name] = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)

    def train_fn(name):
        m = models[name].train()
        raw_only = name == "baseline"
        return lambda: train_step(m, images, labels, opts[name], prec, raw_only=raw_only)

    def infer_fn(name):
        m = models[name].eval()
        x = prec.prepare(images)

        def run():
            with torch.inference_mode(), prec.autocast():
                if name == "baseline":
                    m(x, raw_only=True, with_boxes=False)
                else:
                    m(x)
        return run

    result: dict = {}
    for phase, make in (("train", train_fn), ("infer", infer_fn)):
        fns = {name: make(name) for name in models}
        for name in models:
            _timed(fns[name], warmup, dev)
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        secs = {name: [] for name in models}
        for _ in range(rounds):
            for name in models:
                secs[name].append(_timed(fns[name], iters, dev))
        for name in models:
            result[f"{phase}_{name}_images_per_s"] = round(batch * iters / statistics.median(secs[name]), 2)
        ratios = [b / f for f, b in zip(secs["flrdf"], secs["baseline"])]
        result[f"{phase}_ratio"] = round(statistics.median(ratios), 4)
        result[f"{phase}_ratio_spread"] = [round(min(ratios), 4), round(max(ratios), 4)]
    result["peak_memory_mb"] = round(_peak_memory_mb(dev), 1)
    result["localize_ms_per_batch"] = round(_localize_ms(models["flrdf"], prec, images), 3)
    return result


def _localize_ms(model, prec, images) -> float:
    """Time of the map -> box step alone (connected components included)."""
    model.eval()
    with torch.inference_mode(), prec.autocast():
        _, xs = model.raw_features(prec.prepare(images))
        hw = images.shape[-2:]
        model.localize(xs, hw)
        t = _timed(lambda: model.localize(xs, hw), 10, prec.device)
    return 1000 * t / 10


def bench_pipeline(backbone="resnet18", size=224, batch=16, steps=10, device="auto", amp=True,
                   channels_last=True, workers=-1, data_root=None) -> dict:
    """Images/s of the full training step, data loading included, on the synthetic set."""
    import tempfile
    from pathlib import Path

    from flrdf.data import FGVCDataset, build_transform, load_records
    from flrdf.data.synthetic import make_demo_data
    from flrdf.engine.step import default_workers

    dev = resolve_device(device)
    prec = precision_for(dev, amp, channels_last)
    tmp = None
    if data_root is None:
        tmp = tempfile.TemporaryDirectory()
        per_class = max(2, (batch * (steps + 2)) // 10 + 1)
        data_root = make_demo_data(Path(tmp.name), num_classes=10, train_per_class=per_class, test_per_class=1,
                                   image_size=max(64, size + size // 7))
    data = load_records("cub", data_root, "train")
    ds = FGVCDataset(data, build_transform(True, size + size // 7, size))
    workers = default_workers() if workers < 0 else workers
    out = {"pipeline_workers": workers}
    for name, (model, raw_only) in zip(("flrdf", "baseline"), zip(build_pair(backbone, len(data.class_names), 4, 0.5), (False, True))):
        model.to(dev).train()
        if prec.channels_last:
            model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        loader = torch.utils.data.DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
                                             pin_memory=dev.type == "cuda", persistent_workers=False)
        it = iter(loader)
        batch0 = next(it)
        train_step(model, batch0["image"], batch0["label"], opt, prec, raw_only=raw_only)  # warm-up
        _sync(dev)
        t0 = time.perf_counter()
        n = 0
        for b in it:
            train_step(model, b["image"], b["label"], opt, prec, raw_only=raw_only)
            n += b["image"].shape[0]
            if n >= batch * steps:
                break
        _sync(dev)
        out[f"pipeline_{name}_images_per_s"] = round(n / (time.perf_counter() - t0), 2)
    out["pipeline_ratio"] = round(out["pipeline_flrdf_images_per_s"] / out["pipeline_baseline_images_per_s"], 4)
    if tmp is not None:
        tmp.cleanup()
    return out


def environment(device: torch.device) -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
           "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
    else:
        env["device_name"] = platform.processor() or "cpu"
    return env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flrdf bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iters", type=int, default=3, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--classes", type=int, default=200)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-amp", dest="amp", action="store_false")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--pipeline", action="store_true", help="also time the full step with data loading")
    p.add_argument("--pipeline-steps", type=int, default=10)
    p.add_argument("--workers", type=int, default=-1)
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    try:
        dev = resolve_device(args.device)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = {"backbone": args.backbone, "size": args.size, "batch": args.batch, "device": str(dev),
              "precision": precision_for(dev, args.amp, args.channels_last).describe(), **environment(dev)}
    result.update(bench_models(args.backbone, args.size, args.batch, args.iters, args.rounds, args.warmup,
                               args.device, args.amp, args.channels_last, args.classes))
    result["ideal_train_ratio"] = round(1 / 3, 4)
    result["ideal_infer_ratio"] = 0.5
    if args.pipeline:
        result.update(bench_pipeline(args.backbone, args.size, args.batch, args.pipeline_steps, args.device,
                                     args.amp, args.channels_last, args.workers))
    text = json.dumps(result)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0
