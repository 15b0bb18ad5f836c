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
Data: a tiny synthetic CUB-layout set (4 classes, 128 px) made in the work folder; model: the demo
config (ResNet-18, 112 px, zoom source 224) from random init.
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

CHECKS = ("env", "amp_bf16", "amp_fp16", "channels_last", "compile", "torchrun_nccl", "torchrun_resume")
TIMEOUT_S = {"compile": 300, "torchrun_nccl": 180, "torchrun_resume": 180}


def tiny_sets(root: Path, device: str = "cuda", **extra) -> list[str]:
    sets = {"data.root": str(root), "model.weights": "null", "model.pretrained": "false", "data.num_workers": 2,
            "optim.batch_size": 16, "optim.epochs": 1, "runtime.log_every": 1, "runtime.device": device,
            "runtime.eval_every": 1, "data.val_fraction": 0.25}
    sets.update(extra)
    out = []
    for k, v in sets.items():
        out += ["--set", f"{k}={v}"]
    return out


def _cli(args: list[str], timeout: int, torchrun: bool = False, port: int = 29561) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    head = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", str(port),
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
    model = FLRDF(cfg.model, len(loaders.class_names)).to(device)
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


# ---------------------------------------------------------------- driver
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "gpu_check.json"))
    p.add_argument("--work", default=os.environ.get("OUT", "gpu-results") + "/gpu_check")
    p.add_argument("--skip", nargs="*", default=[], choices=CHECKS)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"),
                   help="cpu: a smoke test of this script on a machine without a GPU (gloo, CPU autocast)")
    args = p.parse_args(argv)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    ctx = {"work": work, "data": work / "synthetic", "device": args.device,
           "backend": "nccl" if args.device == "cuda" else "gloo"}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    report = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "commit": commit.stdout.strip() or None,
              "checks": {}}
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
