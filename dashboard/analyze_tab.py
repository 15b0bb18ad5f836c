"""The Analyze tab: classification analysis of a model (confusions, per-class accuracy, confused pairs,
branch agreement, MaxBoxAccV2 and faithfulness) and the comparison of runs.

Analyze starts ``python -m flrdf analyze`` as a background job (``dashboard.jobs``)
writing a result folder (``flrdf.engine.analyze``): RUN_DIR/analysis/<split>-<time>
for a run, RUNS_DIR/analysis/... for a model file. A 1 s ``gr.Timer`` shows its
progress and, once finished, everything the folder holds - read back from files,
so saved analyses are shown again without recomputation, across restarts.

Compare reads the chosen run directories (``flrdf.compare``): the config keys that
differ, the final metrics, variants (runs differing only in ``runtime.seed``) as
mean and spread with each seed as a dot, the overlaid loss curves
(``dashboard.curves.loss_figure``) and a CSV export.

Public API endpoints: ``/analyze`` (source, split, root, methods, limit,
faithfulness_limit, wsol_step) -> message, result folder; ``/analysis_view`` (folder) ->
progress, summary, per-class table, charts, galleries, MaxBoxAccV2 table, files;
``/compare_runs`` (runs) -> diff table, metrics table, variant table, loss figure,
variant figure, CSV file. Every client-named source, split, folder and run goes
through ``ctx.roots`` (``dashboard.paths``); files a ``results.json`` names are read
only inside its own folder.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import gradio as gr

from dashboard import access, jobs
from dashboard import runs as R
from dashboard.analyze_view import (CALIB_HEADERS, POINT_HEADERS, calibration_caption, calibration_table,
                                    embedding_caption, embedding_frame, point_file, points_table)
from dashboard.browse_tab import send_file
from dashboard.context import DashboardContext
from dashboard.curves import loss_figure
from dashboard.evaluate_tab import _read_rgb, folder_views, progress_html
from dashboard.paths import PathError, check_slug, download_copies, private_dir, within
from flrdf.cams import DEFAULT_METHODS, METHODS
from flrdf.engine.analyze import default_out, read_results, wsol_label
from flrdf.engine.wsol_eval import protocol_text

TICK_S = 1.0
KIND = "analysis"
DOWNLOADS = ("results.json", "predictions.csv", "per_class.csv", "confusion_combined.csv", "wsol.csv", "wsol.md",
             "confusion.png", "confusion_zoom.png", "per_class.png", "embedding_raw.csv", "embedding_object.csv",
             "embedding.png", "calibration.json", "reliability.png")
EMBEDDINGS = ("umap", "tsne", "none")
WSOL_HEADERS = ["map", "MaxBoxAccV2 %", "@IoU .3 %", "@IoU .5 %", "@IoU .7 %", "largest contour only %",
                "ROAD MoRF (lower better)", "ROAD LeRF (higher better)", "map x image conf. change"]


def _error(message: str, title: str = "Analyze") -> gr.Error:
    return gr.Error(message, title=title, duration=None, print_exception=False)


def _pct(v):
    return None if v is None else round(100 * v, 1)


def per_class_rows(results: dict) -> tuple[list[str], list[list]]:
    branches = results["branches"]
    headers = ["class", "name", "images", *[f"{b} %" for b in branches], "most confused with"]
    rows = [[c["class"], c["name"], c["n"], *[_pct(c.get(f"acc_{b}")) for b in branches], c.get("confused_with") or ""]
            for c in results["per_class"]]
    return headers, rows


def wsol_rows(results: dict) -> list[list]:
    w = results.get("wsol") or {}
    r4 = lambda v: None if v is None else round(v, 4)
    return [[wsol_label(r["method"], w), _pct(r.get("max_box_acc_v2")), _pct(r.get("max_box_acc_iou30")),
             _pct(r.get("max_box_acc_iou50")), _pct(r.get("max_box_acc_iou70")), _pct(r.get("max_box_acc_v2_largest")),
             r4(r.get("road_morf")), r4(r.get("road_lerf")), r4(r.get("cam_mult_conf_change"))]
            for r in w.get("rows", [])]


def summary_markdown(results: dict, folder: Path) -> str:
    t = results["top1"]
    ag = (results.get("agreement") or {}).get("counts")
    blk = results["block"]
    names = results["class_names"]
    text = (f"**{results.get('source')}** on `{results.get('split')}` ({results.get('dataset')}): {results['n']} images, "
            f"{len(names)} classes.\n\nTop-1 from the confusion matrices: "
            + ", ".join(f"{b} **{_pct(v)} %**" for b, v in t.items() if v is not None) + ".\n\n")
    if ag:
        text += (f"Branch agreement: both right {ag['both_right']}, raw wrong / object right (rescued) "
                 f"**{ag['object_only']}**, raw right / object wrong (broken) **{ag['raw_only']}**, both wrong "
                 f"{ag['both_wrong']}.\n\n")
    text += (f"Worst block ({len(blk['classes'])} classes, {blk['errors']} confusions among them): "
             + ", ".join(names[c] for c in blk["classes"][:12]) + ("..." if len(blk["classes"]) > 12 else "") + ".\n\n")
    w = results.get("wsol")
    if w:
        text += (f"MaxBoxAccV2: wsolevaluation's protocol ({protocol_text(w)}; {w['n_box']} images); faithfulness on "
                 f"{w['faith_n']} images (pytorch_grad_cam.metrics). Anchors on CUB with ResNet-50: vanilla CAM about "
                 "63, centre box 59.7.\n\n")
    return text + f"Saved in `{folder}`; {results.get('elapsed_s')} s."


def _frame(rows: list[list], headers: list[str]):
    """A table with its own headers (API clients get ``{"headers", "data"}``)."""
    import pandas as pd

    return pd.DataFrame(rows, columns=headers)


def _copies(folder: Path, names, tag_extra: str = "") -> list[str]:
    """The folder's files, copied to this process's private temporary folder, which Gradio may serve."""
    return download_copies(folder, names, "analysis-downloads", tag_extra)


def _gallery(folder: Path, items, caption) -> list:
    out = []
    for item in items or []:
        png = within(folder, item.get("png")) if isinstance(item, dict) else None
        if png is not None and png.is_file() and png.suffix.lower() == ".png":
            out.append((_read_rgb(png), caption(item)))
    return out


def pair_choices(results: dict) -> list[tuple[str, int]]:
    return [(f"{p['true_name']} -> {p['pred_name']} ({p['count']})", i) for i, p in enumerate(results["pairs"])]


# gr.update, not gr.Dropdown(...): a component built here would be placed on the page (a stray "Dropdown")
EMPTY = ("", "", None, None, None, None, gr.update(choices=[], value=None), [], [], [], None, [],
         "", None, None, None, "", None, None)


def pair_images(folder: Path, results: dict, i) -> list:
    pairs = results.get("pairs") or []
    if i is None or not 0 <= int(i) < len(pairs):
        return []
    return _gallery(folder, pairs[int(i)]["images"],
                    lambda it: f"{Path(str(it.get('file'))).name}" +
                               ("" if it.get("iou") is None else f" - IoU {float(it['iou']):.2f}"))


def view(folder: Path) -> tuple:
    """Everything a finished analysis folder holds, for the tab's outputs (its progress while running)."""
    if not folder.is_dir():
        return EMPTY
    state = R.eval_state(folder)
    results = read_results(folder) if state.get("state") == "finished" else None
    if results is None:
        return (progress_html(state), *EMPTY[1:])
    headers, rows = per_class_rows(results)
    img = lambda name: _read_rgb(within(folder, name))
    cap = lambda it: Path(str(it.get("file"))).name
    ag = results.get("agreement") or {}
    choices = pair_choices(results)
    first = choices[0][1] if choices else None
    rel = within(folder, "reliability.png") if results.get("calibration") else None
    return (progress_html(state), summary_markdown(results, folder), _frame(rows, headers),
            img("confusion.png"), img("confusion_zoom.png"), img("per_class.png"),
            gr.Dropdown(choices=choices, value=first), pair_images(folder, results, first),
            _gallery(folder, ag.get("rescued"), cap), _gallery(folder, ag.get("broken"), cap), wsol_rows(results),
            _copies(folder, DOWNLOADS), embedding_caption(results), embedding_frame(folder, results, "raw"),
            embedding_frame(folder, results, "object"), _frame(points_table(folder, results), POINT_HEADERS),
            calibration_caption(results), _read_rgb(rel) if rel is not None and rel.is_file() else None,
            _frame(calibration_table(results), CALIB_HEADERS))


def brushed_points(folder: Path, results: dict, branch: str, x_range):
    """The point table narrowed to the images whose ``branch`` x lies in a plot's brushed range."""
    rng = x_range if isinstance(x_range, (list, tuple)) and len(x_range) == 2 else None
    try:
        rng = None if rng is None else [float(v) for v in rng]
    except (TypeError, ValueError):
        rng = None
    return _frame(points_table(folder, results, rng, branch), POINT_HEADERS)


def send_point(ctx: DashboardContext, folder: Path, results: dict, table, index) -> tuple[str, str]:
    """The image of the clicked point-table row (``index`` = (row, column)), copied for Inspect; and a message."""
    import pandas as pd

    row = index[0] if isinstance(index, (list, tuple)) else index
    data = table.values.tolist() if isinstance(table, pd.DataFrame) else (table or {}).get("data", table) or []
    if not isinstance(row, int) or not 0 <= row < len(data):
        raise PathError("pick a row of the point table")
    src, point = point_file(ctx.roots, folder, results, int(data[row][0]))
    dest = send_file(ctx, src, point["label"], point["class_name"])
    return dest, f"Sent **{src.name}** ({point['class_name']}) to Inspect."


def build_analyze_tab(ctx: DashboardContext):
    runs_dir = Path(ctx.runs_dir)
    roots = ctx.roots

    def _folders():
        return [(f"{_rel(p)} [{R.eval_state(p).get('state')}]", str(p)) for p in R.eval_dirs(runs_dir, KIND)]

    def _rel(p: Path):
        try:
            return p.relative_to(runs_dir)
        except ValueError:
            return p

    def _run_names():
        return [p.name for p in R.list_runs(runs_dir) if (p / "config.yaml").is_file()]

    gr.Markdown("### Classification analysis\nWhich classes are confused with which, on which images; where the "
                "object branch rescues or breaks the raw branch; MaxBoxAccV2 as wsolevaluation scores it and "
                "grad-cam's faithfulness metrics for FLRDF's map and each CAM.")
    with gr.Row():
        with gr.Column(scale=2, min_width=360):
            choices = ctx.checkpoint_choices()
            source = gr.Dropdown(choices, value=choices[0] if choices else None, allow_custom_value=True,
                                 label="checkpoint or run directory", elem_id="an-source")
            with gr.Row():
                split = gr.Dropdown(["test", "train"], value="test", allow_custom_value=True, label="split",
                                    elem_id="an-split")
                limit = gr.Number(0, precision=0, label="images (0 = all)", elem_id="an-limit")
                faith = gr.Number(64, precision=0, label="faithfulness images", elem_id="an-faith")
            root = gr.Textbox(label="dataset root (empty = the one in the checkpoint's config)", elem_id="an-root")
            methods = gr.CheckboxGroup([(m.label + (" (slow)" if m.slow else ""), k) for k, m in METHODS.items()],
                                       value=list(DEFAULT_METHODS), label="CAMs for MaxBoxAccV2 / faithfulness",
                                       elem_id="an-methods")
            wsol_step = gr.Radio([("reference: step 0.001, 1,000 thresholds (wsolevaluation's)", "reference"),
                                  ("fast: step 0.01, 100 thresholds", "fast")], value="reference",
                                 label="MaxBoxAccV2 thresholds", elem_id="an-wsol-step")
            embedding = gr.Radio([("UMAP", "umap"), ("t-SNE", "tsne"), ("none", "none")], value="umap",
                                  label="feature map (2-D embedding of the pooled features)", elem_id="an-embedding")
            with gr.Row():
                run_btn = gr.Button("Analyze", variant="primary", elem_id="an-run")
                rescan = gr.Button("Rescan", size="sm")
            message = gr.Markdown(elem_id="an-message")
            saved = gr.Dropdown(_folders(), value=None, label="saved analyses (shown without recomputation)",
                                allow_custom_value=True, elem_id="an-saved")
        with gr.Column(scale=3, min_width=520):
            progress = gr.HTML(elem_id="an-progress")
            summary = gr.Markdown(elem_id="an-summary")
            per_class = gr.Dataframe(interactive=False, label="per-class accuracy (click a header to sort)",
                                     elem_id="an-per-class")
    with gr.Row():
        confusion = gr.Image(label="confusion matrix (ordered; worst block outlined)", interactive=False,
                             elem_id="an-confusion")
        zoom = gr.Image(label="worst block, zoomed", interactive=False, elem_id="an-zoom")
    per_class_img = gr.Image(label="per-class accuracy per branch", interactive=False, elem_id="an-per-class-img")
    pair = gr.Dropdown([], value=None, label="confused pair (true -> predicted, count)", elem_id="an-pair")
    pair_gallery = gr.Gallery(label="misclassified images of the pair (red: FLRDF box, green: ground truth)",
                              columns=6, height=300, elem_id="an-pair-gallery")
    with gr.Row():
        rescued = gr.Gallery(label="raw wrong, object right (rescued)", columns=4, height=300, elem_id="an-rescued")
        broken = gr.Gallery(label="raw right, object wrong (broken)", columns=4, height=300, elem_id="an-broken")
    gr.Markdown("#### Feature space: does zooming separate the classes?")
    emb_caption = gr.Markdown(elem_id="an-emb-caption")
    with gr.Row():
        emb_raw = gr.ScatterPlot(x="x", y="y", color="class", tooltip=["image", "prediction", "outcome"], height=380,
                                 label="raw branch: pooled X' features", elem_id="an-emb-raw")
        emb_object = gr.ScatterPlot(x="x", y="y", color="class", tooltip=["image", "prediction", "outcome"],
                                    height=380, label="object branch: pooled features of the crop",
                                    elem_id="an-emb-object")
    points = gr.Dataframe(headers=POINT_HEADERS, interactive=False, elem_id="an-points",
                          label="images of the map, wrong first (brush an x-range in a plot to narrow; click a row to "
                                "open the image in Inspect)")
    sent = gr.Markdown(elem_id="an-sent")
    gr.Markdown("#### Calibration: are the branches' probabilities trustworthy?")
    calib_caption = gr.Markdown(elem_id="an-calib-caption")
    # the diagram on its own row: beside a table, Gradio 6 collapsed the image to no height
    reliability = gr.Image(label="reliability diagrams (bars: T = 1; dots: fitted temperature)", interactive=False,
                           height=380, elem_id="an-reliability")
    calib = gr.Dataframe(headers=CALIB_HEADERS, interactive=False, label="calibration per branch", elem_id="an-calib")
    wsol = gr.Dataframe(headers=WSOL_HEADERS, interactive=False,
                        label="MaxBoxAccV2 (wsolevaluation, full-image frame) and faithfulness", elem_id="an-wsol")
    files = gr.File(label="result files", file_count="multiple", interactive=False, elem_id="an-files")

    gr.Markdown("### Compare runs\nRuns that differ only in `runtime.seed` form one variant: mean and spread, "
                "each seed a dot.")
    with gr.Row():
        picked = gr.Dropdown(_run_names(), value=[], multiselect=True, allow_custom_value=True,
                             label="runs (two or more; Rescan lists new ones)",
                             elem_id="cmp-runs")
        cmp_btn = gr.Button("Compare", variant="primary", elem_id="cmp-run")
    cmp_diff = gr.Dataframe(interactive=False, label="config keys that differ", elem_id="cmp-diff")
    cmp_metrics = gr.Dataframe(interactive=False, label="final metrics (%)", elem_id="cmp-metrics")
    cmp_variants = gr.Dataframe(interactive=False, label="variants: mean +- spread (max - min) over seeds (%)",
                                elem_id="cmp-variants")
    with gr.Row():
        cmp_loss = gr.Plot(label="loss curves, overlaid", elem_id="cmp-loss")
        cmp_var = gr.Plot(label="variants: mean, min-max, seeds", elem_id="cmp-variant-plot")
    cmp_csv = gr.File(label="comparison as CSV", interactive=False, elem_id="cmp-csv")

    shown = gr.State({})
    timer = gr.Timer(TICK_S)

    def analyze(source, split, root, methods, limit, faithfulness_limit, wsol_step="reference", embedding="umap",
                request: gr.Request = None):
        """Start ``python -m flrdf analyze`` in the background; returns a message and the result folder.
        ``wsol_step``: MaxBoxAccV2's threshold step, ``reference`` (0.001) or ``fast`` (0.01); ``embedding``:
        the feature map, ``umap``, ``tsne`` or ``none``."""
        access.require_editor(ctx, request)
        src, split_name, root_text, method_keys = str(source or "").strip(), split, root, methods
        limit_value, faith_value = limit, faithfulness_limit
        if not src:
            raise _error("Pick a checkpoint or run directory.")
        try:
            file = roots.checkpoint(src)
            split_name = check_slug(str(split_name or "test").strip(), "split")
            keys = [str(k) for k in (method_keys or [])]
            for k in keys:
                if k not in METHODS:
                    raise PathError(f"unknown CAM method {k!r}; choose from {', '.join(METHODS)}")
            overrides = [f"data.root={roots.dataset_root(root_text)}"] if str(root_text or "").strip() else []
        except PathError as exc:
            raise _error(str(exc)) from None
        try:
            n_limit = int(limit_value or 0)
            n_faith = int(64 if faith_value is None else faith_value)
        except (TypeError, ValueError):
            raise _error("images and faithfulness images must be whole numbers.") from None
        if n_limit < 0 or n_faith < 0:
            raise _error("images and faithfulness images must be 0 or more.")
        step = str(wsol_step or "reference")
        if step not in ("reference", "fast"):
            raise _error(f"MaxBoxAccV2 thresholds must be 'reference' or 'fast', got {step!r}.")
        emb = str(embedding or "umap")
        if emb not in EMBEDDINGS:
            raise _error(f"the feature map must be one of {', '.join(EMBEDDINGS)}, got {emb!r}.")
        run = file.parent.parent if file.parent.name == "checkpoints" else None
        path = run if run is not None and file.name == "last.pt" and (run / "config.yaml").is_file() else file
        try:
            out = roots.new_result_folder(path, split_name, KIND)  # created now, never shared with another job
        except OSError as exc:
            raise _error(f"Cannot create the result folder under runs/: {exc.strerror or type(exc).__name__}") from None
        n = jobs.auto_threads(R.running_count(runs_dir))
        try:
            pid = jobs.launch_analyze(str(path), out, split_name, overrides, keys, n_limit or None, n, n_faith,
                                      wsol_step=step, embedding=emb)
        except jobs.JobError as exc:
            raise _error(str(exc)) from None
        return f"Analyzing in the background (pid {pid}, {n} thread{'s' if n > 1 else ''}) -> `{out}`", str(out)

    view_outputs = [progress, summary, per_class, confusion, zoom, per_class_img, pair, pair_gallery, rescued, broken,
                    wsol, files, emb_caption, emb_raw, emb_object, points, calib_caption, reliability, calib]

    def _folder(text) -> Path | None:
        return roots.analysis_folder(text) if str(text or "").strip() else None

    # everything a finished analysis folder under runs/ holds (its progress while running)
    view_api, view_quiet = folder_views(_folder, view, EMPTY, _error)

    def _finished(folder) -> tuple[Path | None, dict | None]:
        try:
            path = _folder(folder)
        except PathError:
            return None, None
        return path, (read_results(path) if path is not None else None)

    def on_pair(folder, i):
        path, results = _finished(folder)
        return pair_images(path, results, i) if results else []

    def on_brush(branch: str):
        def brushed(folder, evt: gr.SelectData):
            path, results = _finished(folder)
            return brushed_points(path, results, branch, evt.index) if results else []
        return brushed

    tick = R.folder_tick(_folders, _folder, view, len(view_outputs), EMPTY, gr.skip,
                         lambda folders: gr.Dropdown(choices=folders), PathError)

    def compare(runs):
        """Config diff, final metrics, variants, loss curves, variant figure and a CSV of the named runs."""
        names = runs
        from flrdf.compare import (METRIC_KEYS, diff_rows, group_variants, load_run, metrics_rows, variant_figure,
                                   variant_stats, write_csv)

        names = [str(n) for n in (names or [])]
        if len(names) < 2:
            raise _error("Pick two or more runs to compare.", "Compare")
        try:
            dirs = [roots.run_dir(n) for n in dict.fromkeys(names)]
            infos = [load_run(d) for d in dirs]
        except (PathError, ValueError) as exc:
            raise _error(str(exc), "Compare") from None
        diff = diff_rows(infos)
        diff_table = _frame([[str(v) for v in r] for r in diff] or [["(no differing keys)"] + [""] * len(infos)],
                            ["key", *[i.name for i in infos]])
        mrows = metrics_rows(infos)
        metrics_table = _frame([[r["run"], r["variant"], r["seed"], *[_pct(r[k]) for k in METRIC_KEYS]] for r in mrows],
                               ["run", "variant", "seed", *METRIC_KEYS])
        stats = variant_stats(group_variants(infos))
        fmt = lambda s: "" if s["mean"] is None else (f"{100 * s['mean']:.1f}" if len(s["values"]) < 2 else
                                                      f"{100 * s['mean']:.1f} +- {100 * s['spread'] / 2:.1f}")
        var_table = _frame([[s["variant"], len(s["runs"]), " ".join(map(str, s["seeds"])),
                             *[fmt(s[k]) for k in METRIC_KEYS]] for s in stats], ["variant", "runs", "seeds", *METRIC_KEYS])
        loss = loss_figure({i.name: i.records for i in infos})
        tag = hashlib.sha1("|".join(str(d.resolve()) for d in dirs).encode()).hexdigest()[:12]
        dest = private_dir("compare") / tag
        dest.mkdir(mode=0o700, exist_ok=True)
        csv_file = write_csv(dest / "comparison.csv", infos)
        return diff_table, metrics_table, var_table, loss, variant_figure(stats), str(csv_file)

    started = gr.Textbox(visible=False)
    run_btn.click(analyze, [source, split, root, methods, limit, faith, wsol_step, embedding], [message, started],
                  api_name="analyze",
                  concurrency_limit=2).then(
        lambda f: (gr.Dropdown(choices=_folders(), value=f), {}), started, [saved, shown], api_visibility="private")
    saved.input(view_quiet, saved, view_outputs, api_visibility="private")
    pair.input(on_pair, [saved, pair], pair_gallery, api_visibility="private")
    emb_raw.select(on_brush("raw"), saved, points, api_visibility="private")
    emb_object.select(on_brush("object"), saved, points, api_visibility="private")
    timer.tick(tick, [saved, shown], [*view_outputs, saved, shown], api_visibility="private", show_progress="hidden",
               trigger_mode="always_last", concurrency_limit=4)
    rescan.click(lambda: (gr.Dropdown(choices=ctx.checkpoint_choices()), gr.Dropdown(choices=_folders()),
                          gr.Dropdown(choices=_run_names())), None, [source, saved, picked], api_visibility="private")
    view_btn = gr.Button(visible=False)
    view_btn.click(view_api, saved, view_outputs, api_name="analysis_view")
    cmp_btn.click(compare, picked, [cmp_diff, cmp_metrics, cmp_variants, cmp_loss, cmp_var, cmp_csv],
                  api_name="compare_runs", concurrency_limit=2)
    def send(folder, table, evt: gr.SelectData):
        """The clicked row's image, copied for the Inspect tab's image input (as the Data tab sends one)."""
        path, results = _finished(folder)
        if results is None:
            raise _error("Pick a finished analysis first.")
        try:
            return send_point(ctx, path, results, table, evt.index)
        except PathError as exc:
            raise _error(str(exc)) from None

    def link(built: dict, tabs) -> None:
        """Wire a click in the point table to the Inspect tab (called once every tab exists)."""
        inspect = built.get("Inspect") or {}
        image = inspect.get("image")
        if image is None:
            return
        opened = points.select(send, [saved, points], [image, sent], api_visibility="private").then(
            lambda: gr.Tabs(selected="inspect"), None, tabs, api_visibility="private")
        if callable(inspect.get("inspect_after")):
            inspect["inspect_after"](opened)

    return {"saved": saved, "picked": picked, "points": points, "link": link}
