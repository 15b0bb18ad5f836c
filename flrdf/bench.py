"""Throughput benchmark: FLRDF versus the plain baseline (same backbone, size, batch, device).

``python -m flrdf bench [--backbone resnet18 --size 224 --batch 16 ...]`` prints one
JSON object: training and inference images/s of both models and their ratios
(ideal: 1/3 for training - three backbone passes - and 1/2 for inference -
raw + object). Rounds alternate between the two models and the ratio is the
median of per-round ratios, which keeps it stable on a noisy machine.
With ``--pipeline`` it also times the full training step with data loading
from the synthetic set.

``--source-size 224,336`` measures instead what the zoom source costs
(``data.source_size``): the same FLRDF model trained and run with its object crop
cut from the input (source off) and from each source size, rounds alternating;
images/s as ratios to source off, the peak memory of one step of each variant
(CPU: the highest RSS while the step runs, sampled every 0.5 ms, minus the RSS
before it, each variant in a fresh process so one peak cannot hide another;
CUDA: peak allocated), and the transform's cost of
rendering the source for one image.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
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


def build_pair(backbone: str, num_classes: int, jigsaw_n: int, tau: float, layer4_stride: int = 2,
               image_size: int | None = None):
    """FLRDF and its raw baseline on one backbone (``image_size``: the input a timm transformer is built for)."""
    flrdf = FLRDF(ModelConfig(backbone=backbone, pretrained=False, jigsaw_n=jigsaw_n, tau=tau,
                              layer4_stride=layer4_stride), num_classes, image_size)
    baseline = FLRDF(ModelConfig(backbone=backbone, pretrained=False, branches="raw", suppression="none"), num_classes,
                     image_size)
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
    models = dict(zip(("flrdf", "baseline"), build_pair(backbone, num_classes, jigsaw_n, tau, image_size=size)))
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


def _refused(backbones: list[str], size: int) -> str | None:
    """Why a backbone cannot run at ``size`` (an unknown name, a size its patch grid does not tile), or None."""
    from flrdf.config import ConfigError, DataConfig, validate_backbone

    for name in backbones:
        try:
            validate_backbone(ModelConfig(backbone=name, pretrained=False), DataConfig(image_size=size, resize=size))
        except ConfigError as exc:
            return str(exc)
    return None


def _localize_ms(model, prec, images) -> float:
    """Time of the map -> box step alone (connected components included)."""
    model.eval()
    with torch.inference_mode(), prec.autocast():
        loc = model.features(prec.prepare(images)).loc
        hw = images.shape[-2:]
        model.localize(loc, hw)
        t = _timed(lambda: model.localize(loc, hw), 10, prec.device)
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


# ---------------------------------------------------------------- the zoom source's cost
def _variant_inputs(batch: int, size: int, source: int, seed: int = 0, pin: bool = False):
    """Random input and source batches; pinned for CUDA, as the training loader pins them."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, size, size, generator=g)
    src = torch.randn(batch, 3, source, source, generator=g) if source else None
    if pin:
        images, src = images.pin_memory(), None if src is None else src.pin_memory()
    return images, src


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _memory_child(spec_json: str) -> None:
    """Child process of ``source_memory``: one step of one variant, prints its memory as JSON."""
    spec = json.loads(spec_json)
    torch.set_num_threads(int(spec["threads"]))
    dev = resolve_device(spec["device"])
    prec = precision_for(dev, spec["amp"], spec["channels_last"])
    torch.manual_seed(0)
    model, _ = build_pair(spec["backbone"], spec["classes"], 4, 0.5, spec["layer4_stride"], spec["size"])
    model.to(dev)
    if prec.channels_last:
        model.to(memory_format=torch.channels_last)
    images, src = _variant_inputs(spec["batch"], spec["size"], spec["source"], pin=dev.type == "cuda")
    labels = torch.randint(0, spec["classes"], (spec["batch"],))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    import threading

    peak_rss, stop = [_rss_mb()], threading.Event()

    def poll():  # ru_maxrss cannot be used: importing torch already peaks higher than one step
        while not stop.is_set():
            peak_rss[0] = max(peak_rss[0], _rss_mb())
            time.sleep(0.0005)

    before = peak_rss[0]
    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    if spec["phase"] == "train":
        train_step(model.train(), images, labels, opt, prec, source=src)
    else:
        model.eval()
        with torch.inference_mode(), prec.autocast():
            model(prec.prepare(images), **({} if src is None else {"source": prec.prepare(src)}))
    _sync(dev)
    stop.set()
    watcher.join()
    peak_rss[0] = max(peak_rss[0], _rss_mb())
    if dev.type == "cuda":
        out = {"peak_mb": round(_peak_memory_mb(dev), 1), "step_mb": round(_peak_memory_mb(dev), 1)}
    else:
        out = {"peak_mb": round(peak_rss[0], 1), "step_mb": round(peak_rss[0] - before, 1)}
    print(json.dumps(out))


def source_memory(backbone, size, batch, source, phase, device, amp, channels_last, classes, layer4_stride) -> dict:
    spec = {"backbone": backbone, "size": size, "batch": batch, "source": source, "phase": phase, "device": device,
            "amp": amp, "channels_last": channels_last, "classes": classes, "layer4_stride": layer4_stride,
            "threads": torch.get_num_threads()}
    code = "import sys; from flrdf.bench import _memory_child; _memory_child(sys.argv[1])"
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe for source {source} ({phase}) failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def transform_ms(size: int, source: int, image_px: int = 320, repeats: int = 20) -> float:
    """Milliseconds per image of the training transform (input view, plus the source when given)."""
    import numpy as np
    from PIL import Image

    from flrdf.data import build_transform

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (image_px, image_px, 3), dtype=np.uint8))
    transform = build_transform(True, size + size // 7, size, source_size=source)
    transform.views(image)
    t0 = time.perf_counter()
    for _ in range(repeats):
        transform.views(image)
    return 1000 * (time.perf_counter() - t0) / repeats


def _crop_ms(model, prec, data, name, dev, repeats: int = 20) -> dict:
    """Milliseconds per batch of the object crop alone: from the input (off) or from each source."""
    from flrdf.boxes import crop_resize
    from flrdf.zoom import crop_from_source

    out = {}
    images0 = prec.prepare(data[0][0])
    hw = tuple(images0.shape[-2:])
    with torch.inference_mode():
        model.eval()
        boxes = model.localize(model.features(images0).loc, hw)[1]
        for s, (images, src) in data.items():
            if src is None:
                x = prec.prepare(images)
                fn = lambda: crop_resize(x, boxes)  # noqa: E731
            else:
                so = prec.prepare(src)
                fn = lambda: crop_from_source(so, boxes, hw)  # noqa: E731
            fn()
            out[f"crop_source_{name[s]}_ms_per_batch"] = round(1000 * _timed(fn, repeats, dev) / repeats, 3)
    return out


def bench_source(backbone="resnet18", size=112, batch=16, sources=(224, 336), iters=2, rounds=3, warmup=1,
                 device="auto", amp=True, channels_last=True, num_classes=200, layer4_stride=2,
                 memory=True, image_px=320) -> dict:
    """The zoom source's cost: one FLRDF model, variants = source off and each size, rounds alternating."""
    for s in sources:
        if s < size:
            raise ValueError(f"--source-size {s} is smaller than the input size {size}")
    dev = resolve_device(device)
    prec = precision_for(dev, amp, channels_last)
    torch.manual_seed(0)
    model, _ = build_pair(backbone, num_classes, 4, 0.5, layer4_stride, size)
    model.to(dev)
    if prec.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    labels = torch.randint(0, num_classes, (batch,))
    variants = [0, *sources]
    data = {s: _variant_inputs(batch, size, s, pin=dev.type == "cuda") for s in variants}
    name = {s: "off" if s == 0 else str(s) for s in variants}

    def train_fn(s):
        images, src = data[s]
        return lambda: train_step(model.train(), images, labels, opt, prec, source=src)

    def infer_fn(s):
        images, src = data[s]
        x = prec.prepare(images)
        kw = {} if src is None else {"source": prec.prepare(src)}

        def run():
            model.eval()
            with torch.inference_mode(), prec.autocast():
                model(x, **kw)
        return run

    result: dict = {"sources": [name[s] for s in variants], "layer4_stride": layer4_stride}
    for phase, make in (("train", train_fn), ("infer", infer_fn)):
        fns = {s: make(s) for s in variants}
        for s in variants:
            _timed(fns[s], warmup, dev)
        secs = {s: [] for s in variants}
        for _ in range(rounds):
            for s in variants:
                secs[s].append(_timed(fns[s], iters, dev))
        for s in variants:
            result[f"{phase}_source_{name[s]}_images_per_s"] = round(batch * iters / statistics.median(secs[s]), 2)
            if s:
                ratios = [off / t for off, t in zip(secs[0], secs[s])]
                result[f"{phase}_source_{name[s]}_ratio"] = round(statistics.median(ratios), 4)
                result[f"{phase}_source_{name[s]}_ratio_spread"] = [round(min(ratios), 4), round(max(ratios), 4)]
    result.update(_crop_ms(model, prec, data, name, dev))
    for s in variants:
        result[f"source_{name[s]}_batch_tensor_mb"] = round(batch * 3 * s * s * 4 / 2**20, 2)
        result[f"transform_source_{name[s]}_ms_per_image"] = round(transform_ms(size, s, image_px), 3)
    result["transform_image_px"] = image_px
    if memory:
        for phase in ("train", "infer"):
            mem = {s: source_memory(backbone, size, batch, s, phase, device, amp, channels_last, num_classes,
                                    layer4_stride) for s in variants}
            for s in variants:
                result[f"{phase}_source_{name[s]}_step_memory_mb"] = mem[s]["step_mb"]
                result[f"{phase}_source_{name[s]}_peak_memory_mb"] = mem[s]["peak_mb"]
                if s:
                    result[f"{phase}_source_{name[s]}_step_memory_ratio"] = round(
                        mem[s]["step_mb"] / max(mem[0]["step_mb"], 1e-9), 4)
    return result


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
    p.add_argument("--backbone", default="resnet18",
                   help="resnet18..resnet101 or timm:NAME; comma-separated: each in turn, one JSON object per backbone "
                        "under 'backbones' (e.g. timm:convnext_atto,timm:vit_small_patch16_224)")
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
    p.add_argument("--layer4-stride", type=int, choices=(1, 2), default=2,
                   help="1: layer4 without downsampling, as the demo model")
    p.add_argument("--source-size", help="comma-separated zoom source sizes (e.g. 224,336): measure the source's "
                                         "cost against source off instead of FLRDF against the baseline")
    p.add_argument("--no-memory", dest="memory", action="store_false",
                   help="with --source-size: skip the per-variant memory probes (fresh processes)")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    sources = []
    if args.source_size:
        try:
            sources = [int(v) for v in args.source_size.split(",") if v.strip()]
        except ValueError:
            print(f"error: --source-size must be comma-separated integers, got {args.source_size!r}", file=sys.stderr)
            return 2
        bad = [v for v in sources if v < args.size]
        if not sources or bad:
            print(f"error: --source-size values must be >= --size ({args.size}), got {args.source_size!r}",
                  file=sys.stderr)
            return 2
    try:
        dev = resolve_device(args.device)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    backbones = [b.strip() for b in args.backbone.split(",") if b.strip()]
    refused = _refused(backbones, args.size)
    if refused:
        print(f"error: {refused}", file=sys.stderr)
        return 2
    result = {"backbone": args.backbone, "size": args.size, "batch": args.batch, "device": str(dev),
              "precision": precision_for(dev, args.amp, args.channels_last).describe(), **environment(dev)}
    if len(backbones) > 1:
        if sources or args.pipeline:
            print("error: --source-size and --pipeline take one backbone", file=sys.stderr)
            return 2
        result["backbones"] = {}
        for name in backbones:
            result["backbones"][name] = bench_models(name, args.size, args.batch, args.iters, args.rounds, args.warmup,
                                                     args.device, args.amp, args.channels_last, args.classes)
            print(f"{name}: train ratio {result['backbones'][name]['train_ratio']}, "
                  f"infer ratio {result['backbones'][name]['infer_ratio']}", file=sys.stderr, flush=True)
        result["ideal_train_ratio"] = round(1 / 3, 4)
        result["ideal_infer_ratio"] = 0.5
    elif sources:
        result.update(bench_source(args.backbone, args.size, args.batch, sources, args.iters, args.rounds,
                                   args.warmup, args.device, args.amp, args.channels_last, args.classes,
                                   args.layer4_stride, args.memory))
    else:
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
