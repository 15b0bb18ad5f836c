"""The engine's GPU-only paths, checked on a real GPU in a few minutes; one JSON of results.

    python scripts/gpu_check.py [--out docs/results/gpu_check.json] [--work DIR] [--skip NAME ...]

Checks (each records ok / error text / seconds and its figures; a failing check never stops the others):
  env               device name, torch / CUDA / NCCL versions, bf16 support
  amp_bf16          training steps + a full evaluation under bf16 autocast (no scaler)
  amp_fp16          the same under fp16 autocast with a GradScaler (forced; the path of GPUs without bf16)
  channels_last     bf16 + channels_last model and inputs: steps, evaluation, layer4 output really channels_last
  compile           ``runtime.compile=true`` through the CLI: two short epochs, each ending in a full
                    validation and test evaluation of the compiled model
  torchrun_nccl     ``torchrun --nproc_per_node 1`` (a process group, NCCL, DDP wrapper): stops mid-epoch after
                    a full test evaluation (every evaluation collective runs on NCCL)
  torchrun_resume   ``--resume`` of that run under torchrun: finishes two epochs (validation, best.pt,
                    per-rank RNG state in the checkpoint)
  ddp_two_ranks     ``torchrun --nproc_per_node 2`` (NCCL on 2 GPUs; with one GPU, gloo on the CPU, said so):
                    both ranks end with the same parameters and DDT statistics (all-reduced at each update)
  throughput        FLRDF vs the raw baseline, training and inference images/s on ResNet-50 / 448 px /
                    bf16 / channels_last (``flrdf.bench``): their ratios, ideal 1/3 and 1/2
  paper_ddt_fp16    two epochs of the paper config (``cub``: ResNet-50, 448 px, batch 16, random init) on a
                    synthetic set of 512 px images, ``model.loc_map=ddt`` at layer2 under fp16 autocast with a
                    scaler (``runtime.amp_dtype=fp16``): every loss, the DDT statistics, the maps and the
                    evaluations finite
Data: a tiny synthetic CUB-layout set (4 classes, 128 px) made in the work folder; model: the demo
config (ResNet-18, 112 px, zoom source 336) from random init.

``--tiny`` (implied by ``--device cpu``): the same checks shrunk to run on a CPU in a few minutes (32 px demo
runs, ResNet-18 at 64 px for the throughput, ResNet-18 at 32 px for the paper run) - a test of this
script, not a GPU result: it is written to ``<--work>/gpu_check_cpu.json``, never to
docs/results/gpu_check.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHECKS = ("env", "amp_bf16", "amp_fp16", "channels_last", "compile", "torchrun_nccl", "torchrun_resume",
          "ddp_two_ranks", "throughput", "paper_ddt_fp16")
TIMEOUT_S = {"compile": 300, "torchrun_nccl": 180, "torchrun_resume": 180, "ddp_two_ranks": 240,
             "paper_ddt_fp16": 420}
DEFAULT_OUT = ROOT / "docs" / "results" / "gpu_check.json"
# --tiny: the demo runs at 32 px without the zoom source (fp16 autocast is slow on a CPU)
TINY_DEMO = {"data.image_size": 32, "data.resize": 40, "data.source_size": 0, "model.layer4_stride": 2,
             "model.refine_size": 32}
_tiny = False


def tiny_sets(root: Path, device: str = "cuda", **extra) -> list[str]:
    sets = {"data.root": str(root), "model.weights": "null", "model.pretrained": "false", "data.num_workers": 2,
            "optim.batch_size": 16, "optim.epochs": 1, "runtime.log_every": 1, "runtime.device": device,
            "runtime.eval_every": 1, "data.val_fraction": 0.25}
    if _tiny:
        sets.update(TINY_DEMO, **{"data.num_workers": 0})
    sets.update(extra)
    out = []
    for k, v in sets.items():
        out += ["--set", f"{k}={v}"]
    return out


def _cli(args: list[str], timeout: int, torchrun: bool = False, port: int = 29561,
         nproc: int = 1) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    head = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(port),
            "-m", "flrdf"] if torchrun else [sys.executable, "-m", "flrdf"]
    return subprocess.run(head + args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def _status(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())


def _evals(run: Path) -> list[dict]:
    from flrdf.engine.rundir import read_metrics

    return [m for m in read_metrics(run) if m.get("split")]


def _expect(cond: bool, message: str) -> None:
    if not cond:
        raise AssertionError(message)


# ---------------------------------------------------------------- checks
def check_env(ctx) -> dict:
    import torch
    import torch.distributed as dist

    if ctx["device"] == "cpu":  # a smoke test of this script without a GPU
        return {"device": "cpu (smoke test, not a GPU check)", "torch": torch.__version__}
    _expect(torch.cuda.is_available(), "CUDA is not available")
    props = torch.cuda.get_device_properties(0)
    return {"device": torch.cuda.get_device_name(0), "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}", "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "bf16_supported": torch.cuda.is_bf16_supported(),
            "nccl_available": dist.is_nccl_available(),
            "nccl": ".".join(map(str, torch.cuda.nccl.version())) if dist.is_nccl_available() else None}


def _precision_run(ctx, dtype_name: str | None, channels_last: bool) -> dict:
    """A few real training steps and a full evaluation of the test split under one precision setting."""
    import torch

    from flrdf.config import load_config
    from flrdf.engine.evaluate import evaluate
    from flrdf.engine.loaders import build_loaders
    from flrdf.engine.optim import build_optimizer
    from flrdf.engine.step import Precision, train_step
    from flrdf.model import FLRDF

    cfg = load_config("demo", [s for s in tiny_sets(ctx["data"], ctx["device"])[1::2]])
    device = torch.device(ctx["device"])
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, None: None}[dtype_name]
    scaler = torch.amp.GradScaler(device.type) if dtype is torch.float16 else None
    prec = Precision(device, dtype, scaler, channels_last)
    torch.manual_seed(0)
    loaders = build_loaders(cfg.data, cfg.optim.batch_size, 0, pin_memory=device.type == "cuda")
    model = FLRDF(cfg.model, len(loaders.class_names), cfg.data.image_size).to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = build_optimizer(model, cfg.optim)
    losses = []
    for i, batch in enumerate(loaders.train):
        model.train()
        terms = train_step(model, batch["image"], batch["label"], opt, prec, cfg.loss, source=batch.get("source"))
        losses.append(float(terms["loss_total"]))
        if i == 3:
            break
    _expect(all(map(lambda v: v == v and abs(v) != float("inf"), losses)), f"non-finite loss: {losses}")
    result = evaluate(model, loaders.test, prec, jigsaw=True)
    _expect(result["n"] == len(loaders.test.dataset), f"evaluated {result['n']} of {len(loaders.test.dataset)}")
    out = {"losses": [round(v, 4) for v in losses], "eval": result, "precision": prec.describe()}
    if scaler is not None:
        out["grad_scale"] = float(scaler.get_scale())
    if channels_last:
        x = prec.prepare(next(iter(loaders.test))["image"])
        with torch.no_grad(), prec.autocast():
            feat = model.backbone(x)
        out["layer4_channels_last"] = bool(feat.is_contiguous(memory_format=torch.channels_last))
        _expect(out["layer4_channels_last"], "layer4 output is not channels_last")
    return out


def check_amp_bf16(ctx) -> dict:
    import torch

    _expect(ctx["device"] == "cpu" or torch.cuda.is_bf16_supported(), "bf16 not supported on this GPU")
    return _precision_run(ctx, "bf16", False)


def check_amp_fp16(ctx) -> dict:
    return _precision_run(ctx, "fp16", False)


def check_channels_last(ctx) -> dict:
    import torch

    bf16 = ctx["device"] == "cpu" or torch.cuda.is_bf16_supported()
    return _precision_run(ctx, "bf16" if bf16 else "fp16", True)


def check_compile(ctx) -> dict:
    run = ctx["work"] / "compile-run"
    proc = _cli(["train", "--config", "demo", "--out", str(run),
                 *tiny_sets(ctx["data"], ctx["device"], **{"runtime.compile": "true", "optim.epochs": 2})], TIMEOUT_S["compile"])
    _expect(proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-1500:]}")
    st = _status(run)
    _expect(st["state"] == "finished" and st["step"] == 6, f"status {st}")
    _expect(st.get("final") and st["final"]["n"] > 0, "no final test evaluation")
    return {"step": st["step"], "final": st["final"]}


def check_torchrun_nccl(ctx) -> dict:
    run = ctx["work"] / "torchrun-run"
    ctx["torchrun_run"] = run
    proc = _cli(["train", "--config", "demo", "--out", str(run), *tiny_sets(ctx["data"], ctx["device"], **{"optim.max_steps": 2})],
                TIMEOUT_S["torchrun_nccl"], torchrun=True, port=29562)
    _expect(proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-1500:]}")
    st = _status(run)
    _expect(st["state"] == "finished" and st.get("backend") == ctx["backend"], f"status {st}")
    evals = _evals(run)
    _expect(any(e["split"] == "test" for e in evals), "no test evaluation")
    _expect(len(st.get("rank_checksums") or []) == 1, "no rank checksum (no process group?)")
    return {"backend": st["backend"], "world_size": st["world_size"], "step": st["step"], "final": st["final"]}


def check_torchrun_resume(ctx) -> dict:
    from flrdf.engine.checkpoint import read_checkpoint
    from flrdf.engine.rundir import read_metrics

    run = ctx.get("torchrun_run")
    _expect(run is not None and (run / "checkpoints" / "last.pt").is_file(), "torchrun_nccl left no checkpoint")
    before = read_checkpoint(run / "checkpoints" / "last.pt")
    _expect(before["extra"].get("batch_in_epoch", 0) > 0, "the first run did not stop mid-epoch")
    proc = _cli(["train", "--out", str(run), "--resume", "--set", "optim.max_steps=0", "--set", "optim.epochs=2"],
                TIMEOUT_S["torchrun_resume"], torchrun=True, port=29563)
    _expect(proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-1500:]}")
    st = _status(run)
    _expect(st["state"] == "finished" and st["epoch"] == 2 and st.get("backend") == ctx["backend"],
            f"status {st}")
    after = read_checkpoint(run / "checkpoints" / "last.pt")
    vals = [e for e in _evals(run) if e["split"] == "val"]
    _expect(len(vals) == 2, f"{len(vals)} validations, expected 2")
    _expect(after["extra"].get("best_val_top1") == max(v["top1"] for v in vals), "best_val_top1 is not the best")
    _expect(len(after.get("rng_ranks") or []) == 1, "no per-rank RNG state in the checkpoint")
    steps = [m["step"] for m in read_metrics(run) if "loss_total" in m]
    _expect(steps == list(range(1, steps[-1] + 1)), "metrics steps have a gap or a duplicate after the resume")
    return {"resumed_at_step": before["step"], "final_step": st["step"], "best_val_top1": st.get("best_val_top1"),
            "final": st["final"]}


def check_ddp_two_ranks(ctx) -> dict:
    import torch

    two_gpus = ctx["device"] == "cuda" and torch.cuda.device_count() >= 2
    device = "cuda" if two_gpus else "cpu"
    run = ctx["work"] / "ddp2-run"
    proc = _cli(["train", "--config", "demo", "--out", str(run), *tiny_sets(ctx["data"], device, **{"optim.batch_size": 8})],
                TIMEOUT_S["ddp_two_ranks"], torchrun=True, port=29564, nproc=2)
    _expect(proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-1500:]}")
    st = _status(run)
    sums = st.get("rank_checksums") or []
    _expect(st["state"] == "finished" and st["world_size"] == 2, f"status {st}")
    _expect(len(sums) == 2 and sums[0] == sums[1], f"ranks differ (parameters + DDT statistics): {sums}")
    _expect(st.get("final") and st["final"]["n"] > 0, "no final test evaluation")
    return {"backend": st.get("backend"), "devices": "2 GPUs" if two_gpus else "CPU (fewer than 2 GPUs here)",
            "rank_checksums": sums, "final": st["final"]}


def check_throughput(ctx) -> dict:
    import torch

    from flrdf.bench import bench_models
    from flrdf.engine.step import precision_for

    if ctx["tiny"]:
        spec = {"backbone": "resnet18", "size": 64, "batch": 2, "iters": 1, "rounds": 1, "num_classes": 10}
    else:
        spec = {"backbone": "resnet50", "size": 448, "batch": 16, "iters": 10, "rounds": 3, "num_classes": 200}
    device = torch.device(ctx["device"])
    prec = precision_for(device, True, True)
    _expect(ctx["device"] == "cpu" or prec.dtype is torch.bfloat16, f"not bf16 here: {prec.describe()}")
    result = bench_models(device=ctx["device"], amp=True, channels_last=True, warmup=1, **spec)
    return {**spec, "precision": prec.describe(), "ideal_train_ratio": round(1 / 3, 4), "ideal_infer_ratio": 0.5,
            **result}


def check_paper_ddt_fp16(ctx) -> dict:
    """The paper config for two epochs under fp16 autocast with the DDT map: nothing may turn NaN."""
    import math

    import torch

    from flrdf.engine.checkpoint import load_model
    from flrdf.engine.loaders import eval_loader
    from flrdf.engine.rundir import read_metrics
    from flrdf.engine.step import precision_for

    root = ctx["work"] / ("paper-data-tiny" if ctx["tiny"] else "paper-data")
    if not (root / "CUB_200_2011" / "images.txt").is_file():
        from flrdf.data.synthetic import make_demo_data

        if ctx["tiny"]:
            make_demo_data(root, num_classes=3, train_per_class=4, test_per_class=2, image_size=64, seed=1)
        else:
            make_demo_data(root, num_classes=8, train_per_class=16, test_per_class=4, image_size=512, seed=1)
    size = ({"model.backbone": "resnet18", "data.image_size": 32, "data.resize": 40, "optim.batch_size": 4,
             "data.num_workers": 0} if ctx["tiny"] else {"optim.batch_size": 16, "data.num_workers": 8})
    sets = {"data.root": str(root), "model.pretrained": "false", "model.loc_map": "ddt", "model.loc_layer": "layer2",
            "runtime.amp_dtype": "fp16", "optim.epochs": 2, "runtime.device": ctx["device"], "runtime.log_every": 1,
            "runtime.eval_every": 1, **size}
    run = ctx["work"] / "paper-ddt-fp16-run"
    args = ["train", "--config", "cub", "--out", str(run)]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    proc = _cli(args, TIMEOUT_S["paper_ddt_fp16"])
    _expect(proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-1500:]}")
    st = _status(run)
    _expect(st["state"] == "finished" and st["epoch"] == 2, f"status {st}")
    finite = lambda v: isinstance(v, (int, float)) and math.isfinite(v)  # noqa: E731
    losses = [m["loss_total"] for m in read_metrics(run) if "loss_total" in m]
    _expect(losses and all(map(finite, losses)), f"non-finite loss: {losses}")
    evals = _evals(run)
    _expect(evals and all(finite(e.get("mean_iou")) and finite(e.get("top1")) for e in evals),
            f"non-finite evaluation: {evals}")
    loaded = load_model(run / "checkpoints" / "last.pt", ctx["device"])
    ddt = loaded.model.ddt
    _expect(all(bool(torch.isfinite(b).all()) for b in ddt.buffers()), "non-finite DDT statistics")
    prec = precision_for(torch.device(ctx["device"]), True, False, "fp16")
    batch = next(iter(eval_loader(loaded.config.data, loaded.config.data.test_split, 8, 0)))
    with torch.no_grad(), prec.autocast():
        out = loaded.model(prec.prepare(batch["image"]))
    _expect(bool(torch.isfinite(out.loc_map).all()), "NaN in the maps under fp16 autocast")
    h, w = batch["image"].shape[-2:]
    whole = [b == [0.0, 0.0, float(w), float(h)] for b in out.boxes.float().cpu().tolist()]
    return {"steps": st["step"], "ddt_updates": int(ddt.batches), "loss_first_last": [losses[0], losses[-1]],
            "final": st["final"], "map_peak_min": float(out.loc_map.flatten(1).amax(1).min()),
            "whole_image_boxes": f"{sum(whole)} of {len(whole)}", "precision": prec.describe(),
            "sizes": {k: v for k, v in sets.items() if k.startswith(("model.", "data.image", "optim.batch"))}}


# ---------------------------------------------------------------- driver
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--work", default=os.environ.get("OUT", "gpu-results") + "/gpu_check")
    p.add_argument("--skip", nargs="*", default=[], choices=CHECKS)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                   help="cpu: a smoke test of this script on a machine without a GPU (gloo, CPU autocast; implies --tiny)")
    p.add_argument("--tiny", action="store_true", default=os.environ.get("GPU_CHECK_TINY") == "1",
                   help="shrink every check to CPU minutes (also GPU_CHECK_TINY=1): a test of this script")
    args = p.parse_args(argv)
    global _tiny
    _tiny = args.tiny or args.device == "cpu"
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    ctx = {"work": work, "data": work / "synthetic", "device": args.device, "tiny": _tiny,
           "backend": "nccl" if args.device == "cuda" else "gloo"}
    if (_tiny or args.device != "cuda") and Path(args.out).resolve() == DEFAULT_OUT.resolve():
        args.out = str(work / "gpu_check_cpu.json" if args.device == "cpu" else work / "gpu_check_tiny.json")
        print(f"a {'CPU' if args.device == 'cpu' else 'tiny'} run is no GPU result: writing {args.out}, "
              f"not {DEFAULT_OUT.relative_to(ROOT)}", flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    report = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "commit": commit.stdout.strip() or None,
              "tiny": _tiny, "checks": {}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write():
        report["all_ok"] = all(c.get("ok") for c in report["checks"].values() if not c.get("skipped"))
        out.write_text(json.dumps(report, indent=1) + "\n")

    t0 = time.perf_counter()
    try:
        if not (ctx["data"] / "CUB_200_2011" / "images.txt").is_file():
            from flrdf.data.synthetic import make_demo_data

            make_demo_data(ctx["data"], num_classes=4, train_per_class=16, test_per_class=4, image_size=128, seed=0)
        report["data"] = {"ok": True, "seconds": round(time.perf_counter() - t0, 1)}
    except Exception as exc:
        report["data"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    for name in CHECKS:
        if name in args.skip:
            report["checks"][name] = {"ok": None, "skipped": True}
            continue
        t = time.perf_counter()
        try:
            details = globals()[f"check_{name}"](ctx)
            entry = {"ok": True, "error": None, **details}
        except subprocess.TimeoutExpired as exc:
            entry = {"ok": False, "error": f"timed out after {exc.timeout} s"}
        except Exception as exc:
            entry = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000],
                     "where": traceback.format_exc(limit=3)[-1500:]}
        entry["seconds"] = round(time.perf_counter() - t, 1)
        report["checks"][name] = entry
        if name == "env" and entry["ok"]:
            report["device"] = entry["device"]
        print(f"{name}: {'ok' if entry['ok'] else 'FAILED - ' + entry['error'][:300]} ({entry['seconds']} s)",
              flush=True)
        write()
    report["seconds"] = round(time.perf_counter() - t0, 1)
    write()
    print(f"wrote {out}: all_ok={report['all_ok']}")
    return 0 if report["all_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
