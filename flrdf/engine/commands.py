"""``python -m flrdf train | eval | predict`` - argument parsing and JSON output around the engine."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from flrdf.config import ConfigError, apply_overrides, config_from_dict, load_config, override_arg, shipped_configs


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one readable line, exit 2
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def default_run_dir(runs_dir: str, name: str) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(runs_dir) / f"{name}-{stamp}"
    i = 1
    while path.exists():
        i += 1
        path = Path(runs_dir) / f"{name}-{stamp}-{i}"
    return path


def add_set_arg(p: argparse.ArgumentParser, help_: str) -> None:
    """``--set KEY=VALUE [KEY=VALUE ...]``, repeatable (mmcv's --cfg-options style); a bare --set or a token
    without '=' is an error with a message."""
    p.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   type=override_arg, help=help_ + " (several pairs after one --set; repeatable)")


def train_main(argv: list[str]) -> int:
    p = _Parser(prog="python -m flrdf train", description="Train FLRDF; writes a run directory.")
    p.add_argument("--config", help=f"shipped config name ({', '.join(shipped_configs())}) or a YAML path")
    add_set_arg(p, "override a config value, e.g. --set optim.epochs=2 runtime.seed=1")
    p.add_argument("--out", help="run directory (default: RUNS_DIR/<config>-<time>)")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    args = p.parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    try:
        if args.resume:
            if not args.out:
                return _fail("--resume needs --out RUN_DIR (the run to continue)")
            saved = Path(args.out) / "config.yaml"
            if not saved.is_file():
                return _fail(f"--resume: {saved} not found; is {args.out} a run directory?")
            import yaml

            cfg = apply_overrides(config_from_dict(yaml.safe_load(saved.read_text())), args.overrides)
        else:
            if not args.config:
                return _fail("--config is required (e.g. --config demo)")
            cfg = load_config(args.config, args.overrides)
            if cfg.name == "custom":
                cfg.name = Path(args.config).stem
    except ConfigError as exc:
        return _fail(str(exc))
    from flrdf.engine.rundir import RunLocked, create_unique_dir, run_lock_holder

    if args.out:
        out = Path(args.out)
        holder = run_lock_holder(out)
        if holder is not None:  # checked first: a live run's message names its process, whatever else holds
            return _fail(str(RunLocked(out, holder)), 1)
        if not args.resume and (out / "status.json").exists():
            return _fail(f"{out} already holds a run; use --resume to continue it or choose another --out")
    elif world > 1:
        return _fail("under torchrun pass --out RUN_DIR so every rank writes to the same run")
    if not cfg.data.root:
        return _fail(f"data.root is empty: pass --set data.root=/path/to/{cfg.data.dataset}")
    if not args.out:  # created now (atomically): two runs started in the same second get two folders
        out = create_unique_dir(default_run_dir(args.runs_dir, cfg.name))

    from flrdf.engine.trainer import train

    print(f"run directory: {out}", flush=True)
    try:
        status = train(cfg, out, resume=args.resume)
    except RunLocked as exc:  # another trainer took the run between the check above and train()
        return _fail(str(exc), 1)
    except OSError as exc:  # the run directory or its train.lock cannot be made or locked
        return _fail(f"cannot use {out} as a run directory: {exc}", 1)
    state = status.get("state")
    if state == "failed":
        print(f"error: training failed: {status.get('error')}", file=sys.stderr)
        return 1
    return 0


def _load(args):
    from flrdf.engine.checkpoint import load_model
    from flrdf.engine.step import resolve_device

    device = resolve_device(args.device)
    return load_model(args.run or args.checkpoint, device, getattr(args, "overrides", None)), device


def add_source_args(p: argparse.ArgumentParser, split_help: str = "dataset split") -> None:
    """--run | --checkpoint, --split and --set: how the evaluating commands name a model and its data."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run directory (uses checkpoints/last.pt)")
    src.add_argument("--checkpoint", help="checkpoint .pt or model .safetensors")
    p.add_argument("--split", help=f"{split_help} (default: the config's test split; 'val': the part of the "
                                   "training split the run held out, data.val_fraction)")
    add_set_arg(p, "override the stored config, e.g. --set data.root=/data/CUB_200_2011")


def eval_main(argv: list[str]) -> int:
    p = _Parser(prog="python -m flrdf eval", description="Evaluate a run or checkpoint; prints one JSON object.")
    add_source_args(p)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--tau", type=float)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int)
    p.add_argument("--out", help="also write the JSON to this file")
    p.add_argument("--jigsaw", action="store_true",
                   help="also score the jigsaw branch (top1_jigsaw; one more backbone pass per image, about +50 %% "
                        "time); without it top1_jigsaw is null")
    args = p.parse_args(argv)

    from flrdf.data import DatasetError
    from flrdf.data.synthetic_overlap import overlap_warning
    from flrdf.engine.checkpoint import CheckpointError
    from flrdf.engine.evaluate import evaluate
    from flrdf.engine.loaders import eval_loader
    from flrdf.engine.refine_choice import loaded_statement
    from flrdf.engine.step import precision_for

    try:
        loaded, device = _load(args)  # --set applies before the model is built (model.* keys rebuild it)
        cfg = loaded.config
        if args.tau is not None and not 0 <= args.tau <= 1:
            return _fail("--tau must lie in [0, 1]")
        split = args.split or cfg.data.test_split
        loader = eval_loader(cfg.data, split, args.batch_size or cfg.optim.batch_size, args.workers,
                             seed=cfg.runtime.seed)
        if len(loader.dataset.class_names) != len(loaded.class_names):
            return _fail(f"the {split} split has {len(loader.dataset.class_names)} classes, "
                         f"the checkpoint {len(loaded.class_names)}")
        loaded.model.cfg.tau = args.tau if args.tau is not None else loaded.model.cfg.tau
        warning = overlap_warning(loaded.extra.get("data_generator"), cfg.data.root, split)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        prec = precision_for(device, cfg.runtime.amp, cfg.runtime.channels_last, cfg.runtime.amp_dtype)
        if prec.channels_last:
            loaded.model.to(memory_format=torch.channels_last)
        from tqdm import tqdm

        with tqdm(total=len(loader.dataset), desc=f"eval {split}", disable=not sys.stderr.isatty()) as bar:
            result = evaluate(loaded.model, loader, prec, progress=bar.update, jigsaw=args.jigsaw)
    except (CheckpointError, ConfigError, DatasetError, FileNotFoundError, RuntimeError) as exc:
        return _fail(str(exc))
    result = {"split": split, "tau": loaded.model.cfg.tau, "checkpoint": str(loaded.path), **result,
              "box": loaded_statement(loaded, loaded.model.cfg.tau), "warnings": [warning] if warning else []}
    text = json.dumps(result)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def predict_main(argv: list[str]) -> int:
    p = _Parser(prog="python -m flrdf predict",
                description="Top-k classes and the foreground box of each image; one JSON line per image.")
    p.add_argument("--checkpoint", required=True, help="checkpoint .pt, model .safetensors or run directory")
    p.add_argument("images", nargs="+")
    p.add_argument("--topk", type=int, default=5)
    p.add_argument("--tau", type=float)
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    args.run = None

    from flrdf.boxes import box_to_image
    from flrdf.data import DatasetError, build_transform, load_image
    from flrdf.engine.checkpoint import CheckpointError

    try:
        loaded, device = _load(args)
    except (CheckpointError, RuntimeError) as exc:
        return _fail(str(exc))
    d = loaded.config.data
    transform = build_transform(False, d.resize, d.image_size, source_size=d.source_size or 0)
    failures = 0
    for path in args.images:
        try:
            image = load_image(path)
        except (DatasetError, OSError) as exc:
            print(json.dumps({"image": path, "error": str(exc)}))
            failures += 1
            continue
        x, _, source = transform.views(image, None)
        zoom = {} if source is None else {"source": source[None].to(device)}
        with torch.no_grad():
            out = loaded.model(x[None].to(device), tau=args.tau, **zoom)
        probs = out.logits.float().softmax(1)[0]
        k = max(1, min(args.topk, probs.numel()))
        top = probs.topk(k)
        box = box_to_image(out.boxes[0].cpu(), image.size, d.resize, d.image_size)
        print(json.dumps({
            "image": path,
            "top": [{"label": int(i), "class_name": loaded.class_names[int(i)], "prob": round(float(v), 6)}
                    for v, i in zip(top.values, top.indices)],
            "box": [round(float(v), 2) for v in box],
            "image_size": list(image.size),
        }))
    return 1 if failures else 0


def export_main(argv: list[str]) -> int:
    p = _Parser(prog="python -m flrdf export",
                description="Export a checkpoint or run: a weights-only model file (.safetensors, config and class "
                            "names inside) and/or the backbone as a state dict for model.weights (torchvision names for a ResNet, timm feature-wrapper names for timm:NAME).")
    p.add_argument("--checkpoint", required=True, help="checkpoint .pt, model .safetensors or run directory")
    p.add_argument("--model-out", help="write a .safetensors model file here")
    p.add_argument("--fp32", action="store_true", help="keep fp32 weights in the model file (default fp16)")
    p.add_argument("--backbone-out", help="write the backbone state dict (.pth or .safetensors) here")
    args = p.parse_args(argv)
    if not (args.model_out or args.backbone_out):
        return _fail("nothing to do: pass --model-out and/or --backbone-out")

    from flrdf.engine.checkpoint import CheckpointError, backbone_state_dict, load_model, save_model_file

    try:
        loaded = load_model(args.checkpoint)
    except CheckpointError as exc:
        return _fail(str(exc))
    if args.model_out:
        final = (loaded.extra or {}).get("metrics") or {}
        status = Path(loaded.path).parent.parent / "status.json"
        if not final and status.is_file():
            final = (json.loads(status.read_text()).get("final") or {})
        save_model_file(Path(args.model_out), loaded.model, loaded.config, loaded.class_names,
                        half=not args.fp32, metrics=final, extra=loaded.extra)
        print(f"model file: {args.model_out} ({Path(args.model_out).stat().st_size / 2**20:.1f} MiB)")
    if args.backbone_out:
        state = backbone_state_dict(loaded.model)
        if args.backbone_out.endswith(".safetensors"):
            from safetensors.torch import save_file

            save_file(state, args.backbone_out)
        else:
            torch.save(state, args.backbone_out)
        print(f"backbone weights: {args.backbone_out}")
    return 0
