"""The result folder of a localization evaluation, and the ``loc-eval`` command.

    OUT/progress.json     state running|finished|failed, done/total images, error (polled by the dashboard)
    OUT/results.json      everything: settings, table rows with tau sweeps, classification, worst images
    OUT/table.csv         one row per box source (the citable table)
    OUT/table.md          the same as Markdown, with classification and settings
    OUT/per_image.csv     IoU of every source for every image with a box
    OUT/loc_bar.png       loc_acc and mean IoU at the model's tau, per source
    OUT/tau_sweep.png     loc_acc (IoU >= 0.5) against tau, per source
    OUT/worst/NN.png      the worst-localized images: ground truth green, FLRDF red

Written by ``python -m flrdf loc-eval``; read back by the dashboard's Evaluate
tab without recomputation (``read_results``).

Frames (``--frame``, recorded as ``frame`` in results.json): ``full`` (default,
wsolevaluation's protocol) resizes the whole image to ``data.image_size`` square
with no crop, so every ground-truth box is scored where the annotator drew it;
``crop`` is the training recipe's test view (resize to ``data.resize``, centre
crop), which cuts off and clips boxes near the border - kept for comparison.
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from flrdf.cams import DEFAULT_METHODS, METHODS
from flrdf.engine.localization import CENTRE_KEY, FLRDF_KEY, WORST_K, LocResult, WorstImage
from flrdf.engine.rundir import create_unique_dir, now_iso, read_result_file, result_folder, write_json

FORMAT = "flrdf-loc-eval"
PROGRESS = "progress.json"
RESULTS = "results.json"
GT_COLOUR, PRED_COLOUR = (40, 200, 40), (230, 40, 40)   # RGB
GALLERY_SIDE = 256
FRAMES = {"full": "full image (resized, no crop)", "crop": "centre crop (the test transform)"}


# ---------------------------------------------------------------- progress
class Progress:
    """progress.json, rewritten atomically at most every ``every_s`` seconds (and on every state change)."""

    def __init__(self, out: Path, total: int, every_s: float = 0.5, **info):
        self.path, self.total, self.every_s = Path(out) / PROGRESS, total, every_s
        self.done, self._last = 0, 0.0
        self.data = {"state": "running", "pid": os.getpid(), "done": 0, "total": total,
                     "started": now_iso(), "error": None, **info}
        self._write()

    def _write(self) -> None:
        self.data.update(done=self.done, updated=now_iso())
        write_json(self.path, self.data)
        self._last = time.monotonic()

    def __call__(self, n: int) -> None:
        self.done += int(n)
        if time.monotonic() - self._last >= self.every_s or self.done >= self.total:
            self._write()

    def phase(self, name: str, **info) -> None:
        """Name the stage the job is in now (and update any other fields), written at once."""
        self.data.update(phase=name, **info)
        self._write()

    def finish(self, state: str, error: str | None = None, **info) -> None:
        self.data.update(state=state, error=error, **info)
        self._write()


# ---------------------------------------------------------------- pictures
def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110)
    return fig, fig.subplots()


def bar_chart(summary: dict, path: Path) -> None:
    rows = summary["rows"]
    labels = [r["label"] for r in rows]
    acc = [r["loc_acc"] or 0.0 for r in rows]
    miou = [r["mean_iou"] or 0.0 for r in rows]
    fig, ax = _figure(max(6.0, 0.9 * len(rows) + 2), 3.8)
    x = np.arange(len(rows))
    b1 = ax.bar(x - 0.2, acc, 0.4, label="loc. acc. (IoU >= 0.5)", color="#3b6fb6")
    b2 = ax.bar(x + 0.2, miou, 0.4, label="mean IoU", color="#f0a030")
    for bars in (b1, b2):
        for bar in bars:
            ax.annotate(f"{bar.get_height():.2f}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                        ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x, labels, rotation=25, ha="right", fontsize=8)
    ax.set_ylim(0, 1.08)
    ax.set_title(f"localization at tau = {summary['tau']:.2f} ({summary['split']}, {summary['n_box']} images, "
                 "GT-known)", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def sweep_chart(summary: dict, path: Path) -> None:
    fig, ax = _figure(7.0, 4.0)
    taus = summary["taus"]
    for r in summary["rows"]:
        if not r["sweep"]:
            continue
        style = {"linestyle": "--", "color": "grey"} if r["method"] == CENTRE_KEY else {}
        width = 2.4 if r["method"] == FLRDF_KEY else 1.3
        ax.plot(taus, r["sweep"]["iou50"], label=f"{r['label']} (max {r['max_box_acc']:.2f})", linewidth=width,
                **style)
    ax.axvline(summary["tau"], color="black", linewidth=0.8, alpha=0.5)
    ax.set_xlabel("tau (threshold on the min-max normalised map)", fontsize=8)
    ax.set_ylabel("loc. acc. (IoU >= 0.5)", fontsize=8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("tau sweep (vertical line: the model's tau)", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


def draw_worst(item: WorstImage, class_names: list[str], side: int = GALLERY_SIDE) -> np.ndarray:
    """The image enlarged to ``side``, both boxes drawn, a caption strip below (RGB uint8)."""
    h, w = item.image.shape[:2]
    scale = side / max(h, w)
    img = cv2.resize(item.image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR).copy()
    for box, colour in ((item.gt_box, GT_COLOUR), (item.box, PRED_COLOUR)):
        x1, y1, x2, y2 = (int(round(v * scale)) for v in box)
        cv2.rectangle(img, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), colour, 2)
    name = lambda i: class_names[i] if 0 <= i < len(class_names) else str(i)
    lines = [f"IoU {item.iou:.2f}  #{item.index}  {Path(item.path).name}"[:48],
             f"true {name(item.label)}"[:48], f"pred {name(item.pred)}"[:48]]
    strip = np.full((16 * len(lines) + 6, img.shape[1], 3), 255, np.uint8)
    for i, text in enumerate(lines):
        cv2.putText(strip, text, (4, 15 + 16 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (20, 20, 20), 1, cv2.LINE_AA)
    return np.concatenate([img, strip], axis=0)


# ---------------------------------------------------------------- files
TABLE_COLUMNS = ("method", "label", "loc_acc", "mean_iou", "max_box_acc", "best_tau", "max_box_acc_357",
                 "max_box_acc_v2", "road_morf", "road_lerf", "cam_mult_conf_change")


def _fmt(v) -> str:
    return "" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))


def write_report(result: LocResult, out: Path, info: dict, class_names: list[str]) -> dict:
    """Write every file of the folder; returns the results.json content."""
    out = Path(out)
    (out / "worst").mkdir(parents=True, exist_ok=True)
    summary = {"format": FORMAT, "version": 1, "created": now_iso(), **info, **result.summary}
    worst = []
    for i, item in enumerate(result.worst):
        name = f"worst/{i:02d}.png"
        cv2.imwrite(str(out / name), draw_worst(item, class_names)[..., ::-1])
        worst.append({"png": name, "iou": round(item.iou, 4), "index": item.index, "file": item.path,
                      "label": item.label, "pred": item.pred, "gt_box": [round(v, 2) for v in item.gt_box],
                      "box": [round(v, 2) for v in item.box]})
    summary["worst"] = worst
    with open(out / "table.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(TABLE_COLUMNS)
        for r in summary["rows"]:
            w.writerow([_fmt(r.get(c)) for c in TABLE_COLUMNS])
    if result.per_image:
        with open(out / "per_image.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(result.per_image[0]))
            w.writeheader()
            w.writerows(result.per_image)
    (out / "table.md").write_text(markdown_table(summary))
    if summary["n_box"]:
        bar_chart(summary, out / "loc_bar.png")
        sweep_chart(summary, out / "tau_sweep.png")
    write_json(out / RESULTS, summary)
    return summary


def markdown_table(summary: dict) -> str:
    frame = summary.get("frame")
    lines = [f"# Localization: {summary.get('source', '')}", "",
             f"split `{summary.get('split')}` of `{summary.get('dataset')}` - {summary['n_box']} images with boxes "
             f"of {summary['n']}; frame: {FRAMES.get(frame, 'not recorded (centre crop)')}; "
             f"tau = {summary['tau']:.2f}; CAM target: {summary['cam_target']}; "
             f"sweep of {len(summary['taus'])} tau values.", "",
             *([f"FLRDF's {summary['box']}", ""] if summary.get("box") else []),
             *[f"**Warning**: {w}" for w in summary.get("warnings") or []], *([""] if summary.get("warnings") else []),
             "| method | loc. acc. (IoU>=0.5) | mean IoU | MaxBoxAcc | best tau | largest-region MaxBoxAcc@{.3,.5,.7} "
             "| MaxBoxAccV2 (wsolevaluation) | ROAD MoRF | ROAD LeRF | map x image conf. change |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    pct = lambda v: "" if v is None else f"{100 * v:.1f}"
    num = lambda v: "" if v is None else f"{v:+.4f}"
    for r in summary["rows"]:
        lines.append(f"| {r['label']} | {pct(r['loc_acc'])} | {pct(r['mean_iou'])} | {pct(r['max_box_acc'])} | "
                     f"{'' if r['best_tau'] is None else r['best_tau']} | {pct(r['max_box_acc_357'])} | "
                     f"{pct(r.get('max_box_acc_v2'))} | {num(r.get('road_morf'))} | {num(r.get('road_lerf'))} | "
                     f"{num(r.get('cam_mult_conf_change'))} |")
    if summary.get("wsol"):
        w = summary["wsol"]
        from flrdf.engine.wsol_eval import protocol_text

        lines += ["", f"MaxBoxAccV2: wsolevaluation's protocol ({protocol_text(w)}; docs/WSOL.md); the "
                      "largest-region column is this tool's own box rule. Faithfulness: pytorch_grad_cam.metrics on "
                      f"{w['faith_n']} images ({w['faith_target']})."]
    c = summary["classification"]
    lines += ["", "Classification top-1 (%): " + ", ".join(
        f"{k.replace('top1_', '').replace('top1', 'combined')} {pct(c[k])}"
        for k in ("top1", "top1_raw", "top1_object", "top1_jigsaw") if c.get(k) is not None)
        + f"; top-5 {pct(c['top5'])}; n = {c['n']}.", ""]
    g = summary.get("gate")
    if g:
        lines += [f"Suppression gate over the split (all channels of all images): mean {g['mean']:.3f}, "
                  f"10th / 50th / 90th percentile {g['p10']:.3f} / {g['p50']:.3f} / {g['p90']:.3f}.", ""]
    return "\n".join(lines)


def read_results(folder: str | Path) -> dict | None:
    """results.json of a finished evaluation folder, or None."""
    return read_result_file(Path(folder) / RESULTS, FORMAT)


# ---------------------------------------------------------------- the command
def default_out(source: Path, split: str, runs_dir: str) -> Path:
    return result_folder(source, split, runs_dir, "eval")


def _even_subset(n: int, limit: int | None) -> list[int]:
    if not limit or limit >= n:
        return list(range(n))
    return sorted({int(round(i * (n - 1) / max(1, limit - 1))) for i in range(limit)})


def main(argv: list[str] | None = None) -> int:
    from flrdf.engine.commands import add_source_args
    from flrdf.engine.wsol_eval import STEP_HELP

    p = argparse.ArgumentParser(prog="python -m flrdf loc-eval",
                                description="Localization of FLRDF's boxes vs CAM baselines and a centre box "
                                            "(the paper's Table 3, extended); writes a result folder.")
    add_source_args(p, "dataset split with boxes")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated CAM methods ('' for none); known: {','.join(METHODS)}")
    p.add_argument("--tau", type=float, help="threshold (default: the model's tau)")
    p.add_argument("--frame", choices=tuple(FRAMES), default="full",
                   help="full: the whole image resized to image_size, no crop (wsolevaluation's frame; default); "
                        "crop: the centre-crop test view")
    p.add_argument("--limit", type=int, help="evaluate N images spread evenly over the split")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--worst", type=int, default=WORST_K, help="worst-localized images to draw")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--out", help="result folder (default: RUN_DIR/eval/<split>-<time>)")
    p.add_argument("--runs-dir", default="runs", help="where results of a checkpoint outside a run go")
    p.add_argument("--refine-all", action="store_true",
                   help="also GrabCut-refine the plain map's and every CAM's boxes, each seeded by its own map (needs a "
                        "model with model.box_refine=grabcut, or --set it): tells refinement's gain from the map's")
    p.add_argument("--no-wsol", action="store_true", help="skip MaxBoxAccV2 and faithfulness (flrdf.engine.wsol_eval)")
    p.add_argument("--wsol-step", choices=("reference", "fast"), default="reference", help=STEP_HELP)
    p.add_argument("--faithfulness-limit", type=int, default=64, help="images scored for faithfulness (0: none)")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    args.command = "python -m flrdf loc-eval " + shlex.join(argv)
    source = Path(args.run or args.checkpoint)
    split = args.split or "test"
    # the default folder is created now, atomically: two runs of the command never share it
    out = Path(args.out) if args.out else create_unique_dir(default_out(source, split, args.runs_dir))
    out.mkdir(parents=True, exist_ok=True)
    progress = Progress(out, 0, phase="loading", source=str(source), split=split)
    try:
        summary = _run(args, source, out, progress)
    except Exception as exc:  # every failure ends in progress.json, readable by the dashboard
        message = f"{type(exc).__name__}: {exc}"
        progress.finish("failed", message)
        print(f"error: {message}", file=sys.stderr)
        return 1
    progress.finish("finished", phase="done")
    print(markdown_table(summary))
    print(f"results: {out}")
    return 0


def frame_transform(data_cfg, frame: str):
    """The test transform of a frame: ``full`` = resize the whole image to image_size (a crop of the whole
    resized image is no crop), ``crop`` = resize to data.resize and centre-crop image_size."""
    from flrdf.data import build_transform

    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {', '.join(FRAMES)}, got {frame!r}")
    resize = data_cfg.image_size if frame == "full" else data_cfg.resize
    return build_transform(False, resize, data_cfg.image_size, source_size=data_cfg.source_size or 0)


def _run(args, source: Path, out: Path, progress: Progress) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from flrdf.data import DatasetRecords, FGVCDataset
    from flrdf.data.synthetic_overlap import overlap_warning
    from flrdf.engine.checkpoint import load_model
    from flrdf.engine.loaders import records_for
    from flrdf.engine.localization import evaluate_localization
    from flrdf.engine.refine_choice import loaded_statement
    from flrdf.engine.step import precision_for, resolve_device

    if args.tau is not None and not 0 <= args.tau <= 1:
        raise ValueError("--tau must lie in [0, 1]")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    device = resolve_device(args.device)
    loaded = load_model(source, device, args.overrides)  # model.* overrides rebuild the model (or stop, naming the key)
    cfg = loaded.config
    split = args.split or cfg.data.test_split
    data = records_for(cfg.data, split, cfg.runtime.seed)
    if not data.records:
        raise ValueError(f"the {split!r} split of {cfg.data.dataset} at {cfg.data.root} has no images")
    if len(data.class_names) != len(loaded.class_names):
        raise ValueError(f"the {split} split has {len(data.class_names)} classes, the checkpoint "
                         f"{len(loaded.class_names)}")
    warning = overlap_warning(loaded.extra.get("data_generator"), cfg.data.root, split)
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    keep = _even_subset(len(data.records), args.limit)
    subset = DatasetRecords([data.records[i] for i in keep], data.class_names, data.crop_bottom, data.meta,
                            exif_transpose=data.exif_transpose)
    if not any(r.box is not None for r in subset.records):
        raise ValueError(f"the {split!r} split of {cfg.data.dataset} at {cfg.data.root} has no ground-truth boxes")
    ds = FGVCDataset(subset, frame_transform(cfg.data, args.frame), cfg.data.on_corrupt)
    loader = DataLoader(ds, batch_size=max(1, args.batch_size), shuffle=False, num_workers=max(0, args.workers))
    progress.total = len(ds)
    progress.phase("evaluating", total=len(ds))
    prec = precision_for(device, cfg.runtime.amp, False)
    t0 = time.perf_counter()
    with torch.inference_mode(False):
        result = evaluate_localization(loaded.model, loader, methods=methods, tau=args.tau, worst_k=args.worst,
                                       records=subset.records, precision=prec, progress=progress,
                                       seed=cfg.runtime.seed, refine_all=getattr(args, "refine_all", False))
    if not getattr(args, "no_wsol", False):  # MaxBoxAccV2 + faithfulness beside the largest-region figures
        from flrdf.engine.wsol_eval import add_to_summary, evaluate_wsol, wsol_loader

        boxed = DatasetRecords([r for r in subset.records if r.box is not None], data.class_names, data.crop_bottom)
        with torch.inference_mode(False):
            add_to_summary(result.summary, evaluate_wsol(loaded.model, wsol_loader(boxed, cfg.data.image_size,
                                                                                   args.batch_size, args.workers),
                                                         methods=methods, step=getattr(args, "wsol_step", "reference"),
                                                         faith_limit=max(0, args.faithfulness_limit)))
    info = {"source": str(source), "checkpoint": str(loaded.path), "config": cfg.name, "dataset": cfg.data.dataset,
            "root": cfg.data.root, "split": split, "limit": args.limit, "image_size": cfg.data.image_size,
            "frame": args.frame, "resize": cfg.data.image_size if args.frame == "full" else cfg.data.resize,
            "device": str(device), "checkpoint_step": loaded.step, "checkpoint_epoch": loaded.epoch,
            "command": args.command,
            "box": loaded_statement(loaded, loaded.model.cfg.tau if args.tau is None else args.tau),
            "warnings": [warning] if warning else [],
            "notes": "GT-known localization; boxes: min-max normalised map >= tau, largest 8-connected region. "
                     "max_box_acc: best loc_acc (IoU>=0.5) over the tau sweep; max_box_acc_357: mean of the bests "
                     "at IoU 0.3/0.5/0.7 (largest region only, so not wsolevaluation's MaxBoxAccV2); max_box_acc_v2: "
                     "wsolevaluation's MaxBoxAccV2 in the full-image frame (every contour; docs/WSOL.md)."}
    summary = write_report(result, out, info, loaded.class_names)
    progress.data["elapsed_s"] = round(time.perf_counter() - t0, 2)
    return summary


__all__ = ["main", "read_results", "write_report", "markdown_table", "default_out", "frame_transform", "FRAMES"]
