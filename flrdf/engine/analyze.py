"""``python -m flrdf analyze``: classification analysis (+ MaxBoxAccV2 and faithfulness) -> a result folder.

    OUT/progress.json          state running|finished|failed, done/total, phase (polled by the dashboard)
    OUT/predictions.csv        per image: true class, each branch's top-5 with probabilities, FLRDF's box, IoU
    OUT/per_class.csv          per class: images, accuracy per branch, the class it is most confused with
    OUT/confusion_<b>.csv      the confusion matrix of branch b (rows true, columns predicted)
    OUT/confusion.png          the combined prediction's matrix, classes ordered so confusions sit together,
                               the worst block outlined; OUT/confusion_zoom.png: that block, with counts
    OUT/per_class.png          per-class accuracy per branch, classes sorted by combined accuracy
    OUT/pairs/PP_II.png        the top confused (true -> predicted) pairs: their misclassified images
    OUT/agreement/*.png        raw wrong / object right ("rescued") and raw right / object wrong ("broken")
    OUT/wsol.csv, wsol.md      MaxBoxAccV2 (every contour) and the largest-contour figure, full-image
                               frame, + grad-cam faithfulness, per map source (flrdf.engine.wsol_eval)
    OUT/embedding_<b>.csv      2-D map of branch b's pooled features (raw, object), one row per image;
    OUT/embedding.png          --embedding umap|tsne|none (flrdf.engine.feature_report, flrdf.embedding)
    OUT/calibration.json       ECE (15 bins) and reliability per branch, at T = 1 and at the temperature fitted
    OUT/reliability.png        on the validation split (flrdf.calibration)
    OUT/results.json           everything above as one object (format "flrdf-analyze")

Everything but the embedding and calibration is computed from ``predictions.csv`` after
the pass (``analyze_predictions``), so those parts can be rebuilt from it; the embedding and
calibration read the same pass's pooled features and logits. Galleries draw FLRDF's box in red and the
ground truth in green on the image as the network saw it.
"""

from __future__ import annotations

import argparse
import csv
import shlex
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from flrdf.analysis import (agreement, class_order, confused_pairs, confusion_matrix, most_confused_with,
                            per_class_accuracy, top1, worst_block)
from flrdf.engine.rundir import create_unique_dir, now_iso, read_result_file, result_folder, write_json

FORMAT = "flrdf-analyze"
RESULTS = "results.json"
GT_COLOUR, PRED_COLOUR = (40, 200, 40), (230, 40, 40)   # RGB
THUMB = 192
PAIRS, PER_PAIR, AGREE_K, BLOCK = 10, 6, 12, 20


# ---------------------------------------------------------------- maths over predictions.csv
def branch_preds(rows: list[dict], branch: str) -> np.ndarray:
    return np.array([r[f"{branch}_pred1"] for r in rows], dtype=np.int64)


def analyze_predictions(rows: list[dict], branches: list[str], class_names: list[str], pairs: int = PAIRS,
                        block: int = BLOCK) -> dict:
    """Confusions, per-class accuracy, confused pairs and branch agreement (no pictures)."""
    k = len(class_names)
    labels = np.array([r["label"] for r in rows], dtype=np.int64)
    cms = {b: confusion_matrix(labels, branch_preds(rows, b), k) for b in branches}
    acc = {b: per_class_accuracy(cm) for b, cm in cms.items()}
    main = "combined" if "combined" in cms else branches[0]
    order = class_order(cms[main])
    start, stop, errors = worst_block(cms[main], order, block)
    confused = most_confused_with(cms[main])
    counts = cms[main].sum(axis=1)
    per_class = []
    for c in range(k):
        row = {"class": c, "name": class_names[c], "n": int(counts[c])}
        for b in branches:
            row[f"acc_{b}"] = None if np.isnan(acc[b][c]) else round(float(acc[b][c]), 6)
        row["confused_with"] = None if confused[c] is None else class_names[confused[c]]
        per_class.append(row)
    pair_list = [{"true": t, "pred": p, "count": n, "true_name": class_names[t], "pred_name": class_names[p],
                  "rows": [i for i, r in enumerate(rows) if r["label"] == t and r[f"{main}_pred1"] == p]}
                 for t, p, n in confused_pairs(cms[main], pairs)]
    agree = None
    if "raw" in cms and "object" in cms:
        a = agreement(labels, branch_preds(rows, "raw"), branch_preds(rows, "object"))
        agree = {"both_right": a["both_right"].tolist(), "raw_only": a["a_only"].tolist(),
                 "object_only": a["b_only"].tolist(), "both_wrong": a["both_wrong"].tolist()}
    return {"n": len(rows), "branches": branches, "main": main, "confusion": cms,
            "top1": {b: top1(cm) for b, cm in cms.items()}, "per_class": per_class,
            "order": order.tolist(), "block": {"start": start, "stop": stop, "errors": errors,
                                               "classes": order[start:stop].tolist()},
            "pairs": pair_list, "agreement": agree}


# ---------------------------------------------------------------- pictures
def _figure(w: float, h: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=110)
    return fig, fig.subplots()


def confusion_chart(cm: np.ndarray, order, block: dict, class_names: list[str], path: Path, title: str) -> None:
    """The row-normalised matrix in ``order``; the worst block outlined; names shown up to 40 classes."""
    from matplotlib.patches import Rectangle

    k = cm.shape[0]
    m = cm[np.ix_(order, order)].astype(np.float64)
    rate = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    side = min(11.0, max(5.0, 0.05 * k + 4))
    fig, ax = _figure(side + 1.2, side)
    im = ax.imshow(np.sqrt(rate), cmap="magma_r", vmin=0, vmax=1, interpolation="nearest")
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.array([0, 0.05, 0.2, 0.5, 1.0])
    cbar.set_ticks(np.sqrt(ticks), labels=[f"{t:g}" for t in ticks])
    cbar.set_label("share of the true class's images (sqrt scale)", fontsize=8)
    if k <= 40:
        names = [class_names[i][:18] for i in order]
        ax.set_xticks(range(k), names, rotation=90, fontsize=6)
        ax.set_yticks(range(k), names, fontsize=6)
    ax.set_xlabel("predicted class (ordered: confused classes together)", fontsize=8)
    ax.set_ylabel("true class", fontsize=8)
    s, e = block["start"], block["stop"]
    if block["errors"] > 0 and e - s < k:
        ax.add_patch(Rectangle((s - 0.5, s - 0.5), e - s, e - s, fill=False, edgecolor="#1f77b4", linewidth=1.6))
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def zoom_chart(cm: np.ndarray, classes, class_names: list[str], path: Path, title: str) -> None:
    """The block's counts, every cell written; names on both axes."""
    m = cm[np.ix_(classes, classes)]
    k = len(classes)
    fig, ax = _figure(max(5.0, 0.42 * k + 2.5), max(4.5, 0.42 * k + 2))
    ax.imshow(np.sqrt(m / max(m.max(), 1)), cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    for i in range(k):
        for j in range(k):
            if m[i, j]:
                ax.text(j, i, str(int(m[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] > 0.5 * m.max() else "black",
                        fontweight="bold" if i != j else "normal")
    names = [class_names[c][:22] for c in classes]
    ax.set_xticks(range(k), names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(k), names, fontsize=7)
    ax.set_xlabel("predicted", fontsize=8)
    ax.set_ylabel("true", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def per_class_chart(per_class: list[dict], branches: list[str], path: Path) -> None:
    main = "combined" if "combined" in branches else branches[0]
    rows = sorted(per_class, key=lambda r: (r[f"acc_{main}"] if r[f"acc_{main}"] is not None else -1, r["class"]))
    k = len(rows)
    fig, ax = _figure(min(16.0, max(6.0, 0.12 * k + 3)), 3.8)
    x = np.arange(k)
    val = lambda r, b: np.nan if r[f"acc_{b}"] is None else r[f"acc_{b}"]
    ax.bar(x, [val(r, main) for r in rows], 0.8, color="#3b6fb6", label=main)
    markers = {"raw": ("o", "#f0a030"), "object": ("s", "#2e8b57"), "jigsaw": ("^", "#999999")}
    for b in branches:
        if b != main:
            mk, col = markers.get(b, ("x", "black"))
            ax.plot(x, [val(r, b) for r in rows], linestyle="none", marker=mk, markersize=3 if k > 40 else 5,
                    color=col, label=b)
    if k <= 40:
        ax.set_xticks(x, [r["name"][:16] for r in rows], rotation=60, ha="right", fontsize=7)
    else:
        ax.set_xlabel("classes, sorted by combined accuracy", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy", fontsize=8)
    ax.legend(fontsize=7, ncol=len(branches))
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_title("per-class accuracy per branch", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)


def draw_thumb(image: np.ndarray, row: dict, class_names: list[str], lines: list[str], side: int = THUMB) -> np.ndarray:
    """The image enlarged to ``side`` with FLRDF's box (red) and the ground truth (green), caption below; RGB."""
    h, w = image.shape[:2]
    scale = side / max(h, w)
    img = cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_LINEAR).copy()
    boxes = []
    if row.get("gt_x1") is not None:
        boxes.append(([row["gt_x1"], row["gt_y1"], row["gt_x2"], row["gt_y2"]], GT_COLOUR))
    if row.get("box_x1") is not None and not np.isnan(row["box_x1"]):
        boxes.append(([row["box_x1"], row["box_y1"], row["box_x2"], row["box_y2"]], PRED_COLOUR))
    for box, colour in boxes:
        x1, y1, x2, y2 = (int(round(v * scale)) for v in box)
        cv2.rectangle(img, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), colour, 2)
    strip = np.full((15 * len(lines) + 5, img.shape[1], 3), 255, np.uint8)
    for i, text in enumerate(lines):
        cv2.putText(strip, text[:40], (3, 13 + 15 * i), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (20, 20, 20), 1, cv2.LINE_AA)
    return np.concatenate([img, strip], axis=0)


# ---------------------------------------------------------------- files
def _name(class_names, i) -> str:
    return class_names[i] if 0 <= i < len(class_names) else str(i)


def write_report(out: Path, rows: list[dict], branches: list[str], class_names: list[str], dataset, info: dict,
                 wsol: dict | None, pairs: int = PAIRS, per_pair: int = PER_PAIR, agree_k: int = AGREE_K,
                 block: int = BLOCK) -> dict:
    """Every file of the folder from the predictions (``dataset[index]['image']`` gives the gallery pictures)."""
    from flrdf.data import to_uint8

    out = Path(out)
    a = analyze_predictions(rows, branches, class_names, pairs, block)
    main = a["main"]
    for b, cm in a["confusion"].items():
        np.savetxt(out / f"confusion_{b}.csv", cm, fmt="%d", delimiter=",")
    with open(out / "per_class.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(a["per_class"][0]))
        w.writeheader()
        w.writerows(a["per_class"])
    confusion_chart(a["confusion"][main], a["order"], a["block"], class_names, out / "confusion.png",
                    f"confusion of the {main} prediction ({a['n']} images, {len(class_names)} classes)")
    blk = a["block"]["classes"]
    zoom_chart(a["confusion"][main], blk, class_names, out / "confusion_zoom.png",
               f"worst block: {len(blk)} classes, {a['block']['errors']} confusions among them")
    per_class_chart(a["per_class"], branches, out / "per_class.png")

    def picture(i_row: int, lines: list[str], rel: str) -> dict:
        row = rows[i_row]
        image = to_uint8(dataset[row["index"]]["image"][None])[0]
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out / rel), draw_thumb(image, row, class_names, lines)[..., ::-1])
        return {"png": rel, "index": row["index"], "file": row["file"], "iou": row.get("iou")}

    def caption(row) -> list[str]:
        iou = "" if row.get("iou") is None else f"  IoU {row['iou']:.2f}"
        return [f"#{row['index']} {Path(row['file']).name}"[:40] + iou]

    pair_out = []
    for p_i, p in enumerate(a["pairs"]):
        pics = [picture(r, caption(rows[r]) + [f"p({_name(class_names, p['pred'])}) "
                                                f"{rows[r][f'{main}_prob1']:.2f}"], f"pairs/{p_i:02d}_{j:02d}.png")
                for j, r in enumerate(p["rows"][:per_pair])]
        pair_out.append({k: v for k, v in p.items() if k != "rows"} | {"images": pics})
    agree_out = None
    if a["agreement"] is not None:
        ag = a["agreement"]
        agree_out = {"counts": {k: len(v) for k, v in ag.items()}, "rescued": [], "broken": []}
        for kind, key in (("rescued", "object_only"), ("broken", "raw_only")):
            for j, r in enumerate(ag[key][:agree_k]):
                row = rows[r]
                lines = caption(row) + [f"true {_name(class_names, row['label'])}"[:40],
                                        f"raw {_name(class_names, row['raw_pred1'])}"[:40],
                                        f"object {_name(class_names, row['object_pred1'])}"[:40]]
                agree_out[kind].append(picture(r, lines, f"agreement/{kind}_{j:02d}.png"))
    if wsol is not None:
        write_wsol_tables(out, wsol)
    summary = {"format": FORMAT, "version": 1, "created": now_iso(), **info, "n": a["n"], "branches": branches,
               "main": main, "top1": a["top1"], "class_names": list(class_names), "per_class": a["per_class"],
               "order": a["order"], "block": a["block"], "pairs": pair_out, "agreement": agree_out, "wsol": wsol}
    write_json(out / RESULTS, summary)
    return summary


WSOL_COLUMNS = ("method", "max_box_acc_v2", "max_box_acc_iou30", "max_box_acc_iou50", "max_box_acc_iou70",
                "max_box_acc_v2_largest", "road_morf", "road_lerf", "cam_mult_conf_change")


def wsol_label(key: str, wsol: dict | None = None) -> str:
    """The table name of a map in ``wsol`` (evaluate_wsol's result, which records the model's map_source)."""
    from flrdf.engine.localization import method_label

    return method_label(key, (wsol or {}).get("map_source"))


def write_wsol_tables(out: Path, wsol: dict) -> None:
    with open(out / "wsol.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(WSOL_COLUMNS)
        for r in wsol["rows"]:
            w.writerow(["" if r.get(c) is None else r.get(c) for c in WSOL_COLUMNS])
    (out / "wsol.md").write_text(wsol_markdown(wsol))


def wsol_markdown(wsol: dict) -> str:
    pct = lambda v: "" if v is None else f"{100 * v:.1f}"
    num = lambda v: "" if v is None else f"{v:+.4f}"
    from flrdf.engine.wsol_eval import protocol_text

    lines = [f"MaxBoxAccV2 (wsolevaluation protocol: {protocol_text(wsol)}; {wsol['n_box']} images) "
             f"and faithfulness (pytorch_grad_cam.metrics, first {wsol['faith_n']} images, change in the "
             f"{wsol['faith_target']}).", "",
             "| map | MaxBoxAccV2 | @IoU .3 | @IoU .5 | @IoU .7 | largest contour only (V2 mean) | ROAD MoRF (lower better) "
             "| ROAD LeRF (higher better) | map x image conf. change |", "|---|---|---|---|---|---|---|---|---|"]
    for r in wsol["rows"]:
        lines.append(f"| {wsol_label(r['method'], wsol)} | {pct(r['max_box_acc_v2'])} | {pct(r.get('max_box_acc_iou30'))} | "
                     f"{pct(r.get('max_box_acc_iou50'))} | {pct(r.get('max_box_acc_iou70'))} | "
                     f"{pct(r.get('max_box_acc_v2_largest'))} | {num(r.get('road_morf'))} | {num(r.get('road_lerf'))} | "
                     f"{num(r.get('cam_mult_conf_change'))} |")
    lines += ["", "Anchors (CUB-200-2011, ResNet-50, wsolevaluation): vanilla CAM about 63, a centre box 59.7.", ""]
    return "\n".join(lines)


def read_results(folder: str | Path) -> dict | None:
    return read_result_file(Path(folder) / RESULTS, FORMAT)


# ---------------------------------------------------------------- the command
def default_out(source: Path, split: str, runs_dir: str) -> Path:
    return result_folder(source, split, runs_dir, "analysis")


def main(argv: list[str] | None = None) -> int:
    from flrdf.cams import DEFAULT_METHODS, METHODS
    from flrdf.engine.commands import add_source_args
    from flrdf.engine.loc_report import Progress
    from flrdf.engine.wsol_eval import FAITH_LIMIT, STEP_HELP

    p = argparse.ArgumentParser(prog="python -m flrdf analyze",
                                description="Classification analysis (confusions, per-class accuracy, confused "
                                            "pairs, branch agreement) with MaxBoxAccV2 and faithfulness; writes a "
                                            "result folder.")
    add_source_args(p)
    p.add_argument("--limit", type=int, help="analyse N images spread evenly over the split")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"CAMs scored by MaxBoxAccV2 ('' for none); known: {','.join(METHODS)}")
    p.add_argument("--no-wsol", action="store_true", help="skip MaxBoxAccV2 and faithfulness")
    p.add_argument("--wsol-step", choices=("reference", "fast"), default="reference", help=STEP_HELP)
    p.add_argument("--faithfulness-limit", type=int, default=FAITH_LIMIT,
                   help="images scored by the grad-cam faithfulness metrics (0: none)")
    p.add_argument("--pairs", type=int, default=PAIRS, help="top confused pairs to show")
    p.add_argument("--block", type=int, default=BLOCK, help="classes in the zoomed confusion block")
    p.add_argument("--embedding", choices=("umap", "tsne", "none"), default="umap",
                   help="2-D map of the raw and object branches' pooled features (umap: umap-learn, t-SNE when it "
                        "is missing; none: skip)")
    p.add_argument("--out", help="result folder (default: RUN_DIR/analysis/<split>-<time>)")
    p.add_argument("--runs-dir", default="runs")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    args.command = "python -m flrdf analyze " + shlex.join(argv)
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
    t = summary["top1"]
    print("top-1: " + ", ".join(f"{b} {100 * v:.1f} %" for b, v in t.items() if v is not None)
          + f" (n = {summary['n']})")
    if summary.get("wsol"):
        print(wsol_markdown(summary["wsol"]))
    print(f"results: {out}")
    return 0


def _run(args, source: Path, out: Path, progress) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from flrdf.data import DatasetRecords, FGVCDataset
    from flrdf.data.synthetic_overlap import overlap_warning
    from flrdf.engine.checkpoint import load_model
    from flrdf.engine.loaders import records_for, transform_for
    from flrdf.engine.loc_report import _even_subset
    from flrdf.engine.predictions import predict_split, write_predictions
    from flrdf.engine.step import precision_for, resolve_device
    from flrdf.engine.wsol_eval import evaluate_wsol, wsol_loader

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
    subset = DatasetRecords([data.records[i] for i in keep], data.class_names, data.crop_bottom, data.meta)
    ds = FGVCDataset(subset, transform_for(cfg.data, False), cfg.data.on_corrupt)
    loader = DataLoader(ds, batch_size=max(1, args.batch_size), shuffle=False, num_workers=max(0, args.workers))
    has_box = any(r.box is not None for r in subset.records)
    do_wsol = has_box and not args.no_wsol
    n_box = sum(r.box is not None for r in subset.records)
    val_ds = _validation_set(cfg, split)  # the temperature of the calibration is fitted on these images only
    progress.total = len(ds) + (n_box if do_wsol else 0) + (len(val_ds) if val_ds is not None else 0)
    progress.phase("predicting", total=progress.total)
    prec = precision_for(device, cfg.runtime.amp, False)
    t0 = time.perf_counter()
    extras: dict = {}
    rows, branches = predict_split(loaded.model, loader, prec, subset.records, loaded.class_names, progress,
                                   extras=extras)
    write_predictions(out / "predictions.csv", rows, branches)
    val, note = None, None
    if val_ds is not None:
        progress.phase("validation logits (temperature)")
        val_extras: dict = {}
        val_rows, _ = predict_split(loaded.model, DataLoader(val_ds, batch_size=max(1, args.batch_size), shuffle=False,
                                                             num_workers=max(0, args.workers)),
                                    prec, val_ds.data.records, loaded.class_names, progress, extras=val_extras)
        val = {"logits": val_extras["logits"], "labels": np.array([r["label"] for r in val_rows], dtype=np.int64)}
    elif split == "val":
        val = {"logits": extras["logits"], "labels": np.array([r["label"] for r in rows], dtype=np.int64)}
        note = "the analysed split is the validation split: the temperature is fitted on the same images"
    else:
        note = "no validation split (data.val_fraction = 0): no temperature fitted"
    progress.phase("calibration")
    from flrdf.engine.feature_report import calibration_summary, write_calibration, write_embeddings

    calibration = calibration_summary(write_calibration(out, rows, extras["logits"], val, note))
    embedding = None
    if args.embedding != "none":
        embedding = write_embeddings(out, rows, extras["features"], args.embedding, seed=cfg.runtime.seed,
                                     log=progress.phase)
    wsol = None
    if do_wsol:
        progress.phase("MaxBoxAccV2 and faithfulness")
        boxed = DatasetRecords([r for r in subset.records if r.box is not None], data.class_names, data.crop_bottom)
        with torch.inference_mode(False):
            wsol = evaluate_wsol(loaded.model, wsol_loader(boxed, cfg.data.image_size, args.batch_size, args.workers),
                                 methods=methods, step=args.wsol_step, faith_limit=max(0, args.faithfulness_limit),
                                 progress=progress)
    progress.phase("writing")
    info = {"source": str(source), "checkpoint": str(loaded.path), "config": cfg.name, "dataset": cfg.data.dataset,
            "root": cfg.data.root, "split": split, "limit": args.limit, "image_size": cfg.data.image_size,
            "device": str(device), "checkpoint_step": loaded.step, "checkpoint_epoch": loaded.epoch,
            "command": args.command, "elapsed_s": round(time.perf_counter() - t0, 2),
            "warnings": [warning] if warning else [], "calibration": calibration, "embedding": embedding}
    return write_report(out, rows, branches, loaded.class_names, ds, info, wsol, pairs=args.pairs, block=args.block)


def _validation_set(cfg, split: str):
    """The validation split's dataset (test transform) for the temperature fit; None when the config holds
    no validation split (data.val_fraction = 0) or the analysed split is that split."""
    from flrdf.data import FGVCDataset
    from flrdf.engine.loaders import VAL_SPLIT, records_for, transform_for

    if split == VAL_SPLIT or cfg.data.val_fraction <= 0:
        return None
    data = records_for(cfg.data, VAL_SPLIT, cfg.runtime.seed)
    return FGVCDataset(data, transform_for(cfg.data, False), cfg.data.on_corrupt) if data.records else None


__all__ = ["main", "analyze_predictions", "write_report", "read_results", "default_out", "wsol_markdown"]
