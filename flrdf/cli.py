"""Command-line dispatcher: ``python -m flrdf COMMAND ...``.

Each command lives in the module that owns its job and parses its own
arguments; this file only maps names to ``module:function`` (imported lazily,
so ``data-info`` does not pay for importing the training engine).
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("flrdf.engine.commands:train_main", "train a model; writes a run directory"),
    "eval": ("flrdf.engine.commands:eval_main", "evaluate a run or checkpoint; prints JSON"),
    "loc-eval": ("flrdf.engine.loc_report:main", "localization vs CAM baselines and a tau sweep; writes a result folder"),
    "analyze": ("flrdf.engine.analyze:main", "confusions, per-class accuracy, branch agreement, MaxBoxAccV2, "
                                             "faithfulness; writes a result folder"),
    "predict": ("flrdf.engine.commands:predict_main", "top-k classes and box for images"),
    "export": ("flrdf.engine.commands:export_main", "model file (.safetensors) or backbone weights from a checkpoint"),
    "export-tensorboard": ("flrdf.engine.tensorboard_log:export_main",
                           "TensorBoard event files of a run's metrics.jsonl, written into the run directory"),
    "bench": ("flrdf.bench:main", "training/inference throughput of FLRDF vs the plain baseline"),
    "data-info": ("flrdf.data.commands:data_info_main", "summarise a dataset root as JSON"),
    "make-demo-data": ("flrdf.data.synthetic:main", "write the synthetic fine-grained set"),
    "config": ("flrdf.config_docs:config_main", "show a resolved configuration with each key's meaning; list the "
                                               "shipped configs"),
    "hash-password": ("flrdf.auth:hash_password_main", "one user:hash:role line for the dashboard's --auth-file"),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: python -m flrdf COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'python -m flrdf COMMAND --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, func_name = COMMANDS[name][0].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)
