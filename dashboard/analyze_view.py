"""The Analyze tab's feature-space and calibration views: module-level functions from an analysis folder
(``flrdf.engine.feature_report``'s files) to what the tab shows, tested without a browser.

* :func:`embedding_frame` - one branch's 2-D map as the table a ``gr.ScatterPlot`` draws (x, y, class,
  prediction, right/wrong, image name for the hover tooltip).
* :func:`points_table` - the images of the map (all, or those inside a brushed x-range of either plot:
  the native plot's ``select`` event gives that range), wrong ones first; a row click sends its image to
  Inspect (:func:`send_point`), as a click in the Data tab's gallery does.
* :func:`calibration_table` - ECE / NLL per branch at T = 1 and at the temperature fitted on validation.

Every file is read inside its own analysis folder (``dashboard.paths.within``); an image sent to Inspect
must lie under the dataset root the analysis ran on, and that root must be one the dashboard may read
(``ctx.roots.dataset_root``).
"""

from __future__ import annotations

from pathlib import Path

from dashboard.paths import PathError, within
from flrdf.engine.feature_report import read_embedding_csv

EMBED_BRANCHES = ("raw", "object")
POINT_HEADERS = ["index", "image", "class", "raw prediction", "object prediction", "raw", "object"]
CALIB_HEADERS = ["branch", "ECE % (T = 1)", "NLL (T = 1)", "T (fitted on val)", "ECE % (scaled)", "NLL (scaled)",
                 "accuracy %", "mean confidence %"]
MAX_POINTS = 500


def read_points(folder: Path, results: dict, branch: str) -> list[dict]:
    """The rows of ``embedding_<branch>.csv`` (empty when the analysis has none)."""
    b = ((results.get("embedding") or {}).get("branches") or {}).get(branch)
    path = within(folder, b.get("file")) if b else None
    if path is None or not path.is_file():
        return []
    return read_embedding_csv(path)


def embedding_frame(folder: Path, results: dict, branch: str):
    """x, y, class, prediction, outcome and image name of each point (a DataFrame; None without a map)."""
    import pandas as pd

    rows = read_points(folder, results, branch)
    if not rows:
        return None
    names = results.get("class_names") or []
    name = lambda i: names[i] if 0 <= i < len(names) else str(i)
    return pd.DataFrame({"x": [r["x"] for r in rows], "y": [r["y"] for r in rows],
                         "class": [r["class_name"] for r in rows], "prediction": [name(r["pred"]) for r in rows],
                         "outcome": ["right" if r["correct"] else "wrong" for r in rows],
                         "image": [Path(r["file"]).name for r in rows], "index": [r["index"] for r in rows]})


def embedding_caption(results: dict) -> str:
    emb = results.get("embedding")
    if not emb:
        return "No feature map in this analysis (it ran with `--embedding none`, or before the option existed)."
    parts = []
    for b, f in (emb.get("branches") or {}).items():
        sil = "n/a" if f.get("silhouette") is None else f"{f['silhouette']:.3f}"
        ncm = "n/a" if f.get("ncm_accuracy") is None else f"{100 * f['ncm_accuracy']:.1f} %"
        parts.append(f"**{b}**: silhouette {sil}, nearest-class-mean accuracy {ncm} ({f.get('dim')}-d features)")
    return (f"Pooled features mapped to 2-D by {emb.get('method')}; separation measured on the full features: "
            + "; ".join(parts) + ". Brush an x-range in a plot to list its images; click a row to open it in Inspect.")


def points_table(folder: Path, results: dict, x_range=None, branch: str = "raw") -> list[list]:
    """Rows for the point table (POINT_HEADERS): every image, or those whose ``branch`` x lies in ``x_range``;
    images some branch gets wrong first, at most MAX_POINTS."""
    maps = {b: {r["index"]: r for r in read_points(folder, results, b)} for b in EMBED_BRANCHES}
    base = maps.get(branch) or maps["raw"] or maps["object"]
    if not base:
        return []
    names = results.get("class_names") or []
    name = lambda i: "" if i is None else (names[i] if 0 <= i < len(names) else str(i))
    lo, hi = (min(x_range), max(x_range)) if x_range is not None and len(x_range) == 2 else (None, None)
    out = []
    for idx, r in base.items():
        if lo is not None and not lo <= r["x"] <= hi:
            continue
        raw, obj = maps["raw"].get(idx), maps["object"].get(idx)
        out.append([idx, Path(r["file"]).name, r["class_name"], name(raw["pred"]) if raw else "",
                    name(obj["pred"]) if obj else "", "" if raw is None else ("right" if raw["correct"] else "wrong"),
                    "" if obj is None else ("right" if obj["correct"] else "wrong")])
    out.sort(key=lambda row: (not ("wrong" in row[5:7]), row[0]))
    return out[:MAX_POINTS]


def point_file(roots, folder: Path, results: dict, index: int) -> tuple[Path, dict]:
    """The image file of the point with dataset ``index`` and its row; PathError when it is not in the analysis or
    not under the (readable) dataset root the analysis ran on."""
    rows = {r["index"]: r for b in EMBED_BRANCHES for r in read_points(folder, results, b)}
    row = rows.get(int(index))
    if row is None:
        raise PathError(f"image {index} is not in this analysis")
    root = roots.dataset_root(results.get("root"))
    src = Path(row["file"])
    src = (src if src.is_absolute() else root / src).resolve()
    if not src.is_relative_to(root) or not src.is_file():
        raise PathError(f"{src.name} is not a file under the analysis's dataset root")
    return src, row


def calibration_table(results: dict) -> list[list]:
    cal = (results.get("calibration") or {}).get("branches") or {}
    pct = lambda v: None if v is None else round(100 * v, 2)
    r4 = lambda v: None if v is None else round(v, 4)
    return [[b, pct(c.get("ece")), r4(c.get("nll")), None if c.get("temperature") is None else round(c["temperature"], 3),
             pct(c.get("ece_scaled")), r4(c.get("nll_scaled")), pct(c.get("accuracy")), pct(c.get("mean_confidence"))]
            for b, c in cal.items()]


def calibration_caption(results: dict) -> str:
    cal = results.get("calibration")
    if not cal:
        return "No calibration in this analysis (made before calibration.json existed)."
    text = (f"Expected calibration error over {cal['bins']} equal-width confidence bins. The combined prediction "
            "sums the raw and object logits, so its softmax is sharper than either branch's. ")
    if cal.get("temperature_split") == "val" and not cal.get("note"):
        text += f"Temperatures fitted on the validation split ({cal['n_val']} images), never on the analysed split."
    if cal.get("note"):
        text += f" Note: {cal['note']}."
    return text


__all__ = ["embedding_frame", "embedding_caption", "points_table", "point_file", "calibration_table",
           "calibration_caption", "POINT_HEADERS", "CALIB_HEADERS"]
