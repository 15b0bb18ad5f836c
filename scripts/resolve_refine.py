"""Resolve ``model.box_refine=auto`` for an existing model file on its validation split, as the trainer does
at the end of a run (flrdf/engine/refine_choice.py), and record the data's generator.

Both boxes - the map's own and the GrabCut-refined one - are scored on ``--split`` (default ``val``: the
part of the training split the model's config holds out, ``data.val_fraction``) at the model's tau; auto
becomes ``grabcut`` only if the refined box's loc_acc is higher. Prints one JSON object (the decision, both
figures, the time). With ``--write`` the model file gets the decision as its ``model.box_refine``, the
decision record (``refine_decision``) and the generator record of ``--root`` (``data_generator``: the
validation split is carved from that root's training split, so it is the model's training data); the weights
are written back byte for byte. The bundled demo model was resolved this way (docs/results/demo_refine_decision.json):

    python -m flrdf make-demo-data --version 2 --out data/demo --train-per-class 150 --test-per-class 40 --seed 0
    python scripts/resolve_refine.py --model assets/demo_model.safetensors --root data/demo --write
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchlib, also when loaded by file path
from benchlib import report_json  # noqa: E402

from flrdf.data.synthetic_overlap import generator_record  # noqa: E402
from flrdf.engine.checkpoint import load_model, update_model_file  # noqa: E402
from flrdf.engine.loaders import eval_loader  # noqa: E402
from flrdf.engine.refine_choice import resolve  # noqa: E402
from flrdf.engine.step import precision_for  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="assets/demo_model.safetensors", help="a model file (.safetensors)")
    p.add_argument("--root", default="data/demo", help="the dataset root the model was trained on")
    p.add_argument("--split", default="val")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--write", action="store_true", help="record the decision and the generator in the model file")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    if not args.model.endswith(".safetensors"):
        print("error: --model must be a .safetensors model file (a run resolves itself at the end of training)",
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    loaded = load_model(args.model, "cpu", [f"data.root={args.root}"])
    cfg = loaded.config
    was = cfg.model.box_refine
    cfg.model.box_refine = "auto"
    loader = eval_loader(cfg.data, args.split, args.batch_size, workers=0, seed=cfg.runtime.seed)
    decision = resolve(loaded.model, loader, precision_for(torch.device("cpu"), False, False), args.split)
    if decision is None:
        print(f"error: the {args.split} split of {args.root} has no boxes: nothing to decide on", file=sys.stderr)
        return 1
    generator = generator_record(args.root)
    result = {"model": args.model, "root": args.root, "split": args.split, "box_refine_before": was,
              **decision.to_dict(), "data_generator": generator, "elapsed_s": round(time.perf_counter() - t0, 1),
              "threads": torch.get_num_threads(),
              "command": "python scripts/resolve_refine.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    if args.write:
        update_model_file(Path(args.model), {"refine_decision": decision.to_dict(), "data_generator": generator},
                          {"box_refine": decision.decision})
    report_json(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
