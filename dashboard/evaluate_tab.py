"""The Evaluate tab: localization of FLRDF's boxes against CAM baselines (Table 3, extended).

Evaluate starts ``python -m flrdf loc-eval`` as a background job
(``dashboard.jobs``) writing a result folder (``flrdf.engine.loc_report``):
RUN_DIR/eval/<split>-<time>/ for a run, RUNS_DIR/eval/... for a model file.
A 1 s ``gr.Timer`` shows its progress bar and, once finished, the table, bar
chart, tau sweep and the worst-localized gallery - read from the folder, so
earlier results (listed under "saved results") are shown again without
recomputation, across restarts.

Public API endpoints: ``/evaluate_default`` (limit, 0 = all images: the default model on its test split, made first
when missing - ``dashboard.firstrun``); ``/evaluate`` (source, split, root, methods, tau, limit) ->
message and result folder; ``/eval_view`` (folder) -> progress, table, summary.
Sources, splits and result folders a client names go through ``ctx.roots``
(``dashboard.paths``): results are only written and read under the runs
directory, and files a ``results.json`` names are read only inside its folder.
"""

from __future__ import annotations

import html
from pathlib import Path

import gradio as gr

from dashboard import access, firstrun, jobs
from dashboard import runs as R
from dashboard.context import DashboardContext
from dashboard.paths import PathError, check_slug, download_copies, within
from flrdf.cams import DEFAULT_METHODS, METHODS
from flrdf.engine.checkpoint import CheckpointError
from flrdf.engine.loc_report import TABLE_COLUMNS, read_results

TICK_S = 1.0
COLUMNS = ("method", "loc. acc. %", "mean IoU %", "MaxBoxAcc %", "best tau", "largest-region MaxBoxAcc@.3/.5/.7 %",
           "MaxBoxAccV2 % (wsolevaluation)", "ROAD MoRF", "ROAD LeRF", "map x image conf. change")


def _error(message: str, title: str = "Evaluate") -> gr.Error:
    return gr.Error(message, title=title, duration=None, print_exception=False)


def progress_html(state: dict) -> str:
    s = state.get("state", "unknown")
    done, total = int(state.get("done") or 0), int(state.get("total") or 0)
    pct = 100.0 * done / total if total else (100.0 if s == "finished" else 0.0)
    colour = {"failed": "#c0392b", "finished": "#2e8b57"}.get(s, "#3b6fb6")
    err = f"<div style='color:#c0392b'>error: {html.escape(str(state.get('error')))}</div>" if state.get("error") else ""
    return (f"<div id='eval-progress-box'><div>state: <b>{html.escape(s)}</b> - {done}/{total} images "
            f"({pct:.0f} %)</div><div style='background:#ddd;height:12px;border-radius:6px;overflow:hidden'>"
            f"<div style='width:{pct:.1f}%;background:{colour};height:12px'></div></div>{err}</div>")


def table_rows(results: dict) -> list[list]:
    pct = lambda v: None if v is None else round(100 * v, 1)
    r4 = lambda v: None if v is None else round(v, 4)
    return [[r["label"], pct(r["loc_acc"]), pct(r["mean_iou"]), pct(r["max_box_acc"]), r["best_tau"],
             pct(r["max_box_acc_357"]), pct(r.get("max_box_acc_v2")), r4(r.get("road_morf")), r4(r.get("road_lerf")),
             r4(r.get("cam_mult_conf_change"))] for r in results["rows"]]


def summary_markdown(results: dict, folder: Path) -> str:
    c = results["classification"]
    pct = lambda v: "-" if v is None else f"{100 * v:.1f} %"
    return (f"**{results.get('source')}** on `{results.get('split')}` ({results.get('dataset')}): "
            f"{results['n_box']} images with boxes, tau = {results['tau']:.2f}, CAMs for the ground-truth class.\n\n"
            f"Classification top-1: combined **{pct(c['top1'])}**, raw {pct(c['top1_raw'])}, "
            f"object {pct(c['top1_object'])}, jigsaw {pct(c['top1_jigsaw'])}; top-5 {pct(c['top5'])}.\n\n"
            + (f"FLRDF's {results['box']}.\n\n" if results.get("box") else "")
            + "".join(f"**Warning**: {w}\n\n" for w in results.get("warnings") or [])
            + f"Saved in `{folder}` (results.json, table.csv, table.md, PNGs); {results.get('elapsed_s')} s.")


def _read_rgb(path: Path | None):
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR) if path is not None and Path(path).is_file() else None
    return None if img is None else img[..., ::-1].copy()


DOWNLOADS = ("results.json", "table.csv", "table.md", "per_image.csv", "loc_bar.png", "tau_sweep.png")


def _download_copies(folder: Path) -> list[str]:
    """The folder's result files, copied to this process's private temporary folder, which Gradio may serve."""
    return download_copies(folder, DOWNLOADS, "eval-downloads")


def _label(folder: Path, runs_dir: Path) -> str:
    try:
        rel = folder.relative_to(runs_dir)
    except ValueError:
        rel = folder
    return f"{rel} [{R.eval_state(folder).get('state')}]"


def folder_views(resolve, view, empty: tuple, error):
    """The two ways a tab shows a client-named result folder: ``view_api`` (the public endpoint: a refused
    name raises ``error(message)``) and ``view_quiet`` (page events: a refused name shows nothing)."""

    def view_api(folder):
        try:
            path = resolve(folder)
        except PathError as exc:
            raise error(str(exc)) from None
        return view(path) if path is not None else empty

    def view_quiet(folder):
        try:
            path = resolve(folder)
        except PathError:
            return empty
        return view(path) if path is not None else empty

    return view_api, view_quiet


def _default_name(ctx: DashboardContext) -> str:
    from dashboard.paths import DEMO_MODEL

    c = Path(ctx.checkpoint) if ctx.checkpoint else DEMO_MODEL
    return "the bundled demo model" if c.absolute() == DEMO_MODEL.absolute() else f"the default model ({c.name})"


def build_evaluate_tab(ctx: DashboardContext):
    runs_dir = Path(ctx.runs_dir)
    roots = ctx.roots

    def _folders():
        return [(_label(p, runs_dir), str(p)) for p in R.eval_dirs(runs_dir)]

    with gr.Row():
        with gr.Column(scale=2, min_width=360):
            gr.Markdown("### Localization evaluation\nFLRDF's boxes vs CAM baselines and a centre box, at the "
                        "model's tau and over a tau sweep (GT-known, IoU >= 0.5).")
            choices = ctx.checkpoint_choices()
            source = gr.Dropdown(choices, value=choices[0] if choices else None, allow_custom_value=True,
                                 label="checkpoint or run directory", elem_id="eval-source")
            with gr.Row():
                split = gr.Dropdown(["test", "train"], value="test", allow_custom_value=True, label="split",
                                    elem_id="eval-split")
                limit = gr.Number(0, precision=0, label="images (0 = all)", elem_id="eval-limit")
                tau = gr.Textbox("", label="tau (empty = model's)", elem_id="eval-tau")
            root = gr.Textbox(label="dataset root (empty = the one in the checkpoint's config)", elem_id="eval-root")
            methods = gr.CheckboxGroup([(m.label + (" (slow)" if m.slow else ""), k) for k, m in METHODS.items()],
                                       value=list(DEFAULT_METHODS), label="CAM baselines", elem_id="eval-methods")
            with gr.Row():
                run_btn = gr.Button("Evaluate", variant="primary", elem_id="eval-run")
                rescan = gr.Button("Rescan", size="sm")
            demo_btn = gr.Button(f"One click: evaluate {_default_name(ctx)} on its test split", elem_id="eval-demo")
            gr.Markdown("Creates the test split first when it is missing (the synthetic set the model was trained "
                        "on), then runs the evaluation above with the default CAM baselines.",
                        elem_id="eval-demo-help")
            message = gr.Markdown(elem_id="eval-message")
            saved = gr.Dropdown(_folders(), value=None, label="saved results (shown without recomputation)",
                                allow_custom_value=True, elem_id="eval-saved")
        with gr.Column(scale=3, min_width=520):
            progress = gr.HTML(elem_id="eval-progress")
            table = gr.Dataframe(headers=list(COLUMNS), interactive=False, label="localization (Table 3, extended)",
                                 elem_id="eval-table")
            summary = gr.Markdown(elem_id="eval-summary")
            with gr.Row():
                bar = gr.Image(label="loc. acc. and mean IoU at tau", interactive=False, elem_id="eval-bar")
                sweep = gr.Image(label="tau sweep", interactive=False, elem_id="eval-sweep")
            gallery = gr.Gallery(label="worst-localized (green: ground truth, red: FLRDF)", columns=6, height=360,
                                 elem_id="eval-gallery")
            files = gr.File(label="result files", file_count="multiple", interactive=False, elem_id="eval-files")
    shown = gr.State({})
    timer = gr.Timer(TICK_S)

    def evaluate(src, split_name, root_text, method_keys, tau_value, limit_value, request: gr.Request):
        access.require_editor(ctx, request)
        src = str(src or "").strip()
        if not src:
            raise _error("Pick a checkpoint or run directory.")
        try:
            file = roots.checkpoint(src)
            split_name = check_slug(str(split_name or "test").strip(), "split")
            overrides = [f"data.root={roots.dataset_root(root_text)}"] if str(root_text or "").strip() else []
        except PathError as exc:
            raise _error(str(exc)) from None
        return _start_eval(file, split_name, overrides, method_keys, tau_value, limit_value)

    def _start_eval(file: Path, split_name: str, overrides: list[str], method_keys, tau_value, limit_value):
        """Start loc-eval of a checked checkpoint file (its run directory when it is a run's last.pt)."""
        run = file.parent.parent if file.parent.name == "checkpoints" else None
        path = run if run is not None and file.name == "last.pt" and (run / "config.yaml").is_file() else file
        n = jobs.auto_threads(R.running_count(runs_dir))
        keys = list(method_keys or [])
        extra = []
        if str(tau_value if tau_value is not None else "").strip():
            try:
                t = float(tau_value)
            except ValueError:
                raise _error(f"tau must be a number in [0, 1], got {tau_value!r}.") from None
            if not 0 <= t <= 1:
                raise _error("tau must lie in [0, 1].")
            extra = [str(t)]
        try:
            out = roots.new_result_folder(path, split_name, "eval")  # created now, never shared with another job
        except OSError as exc:
            raise _error(f"Cannot create the result folder under runs/: {exc.strerror or type(exc).__name__}") from None
        try:
            pid = jobs.launch_loc_eval(str(path), out, split_name, overrides, keys, int(limit_value or 0) or None, n,
                                       tau=extra[0] if extra else None)
        except jobs.JobError as exc:
            raise _error(str(exc)) from None
        msg = f"Evaluating in the background (pid {pid}, {n} thread{'s' if n > 1 else ''}) -> `{out}`"
        return msg, str(out)

    empty = ("", None, "", None, None, [], [])

    def _folder(text) -> Path | None:
        """The result folder a client named, under the runs directory (PathError otherwise); None for empty."""
        return roots.eval_folder(text) if str(text or "").strip() else None

    # progress, table, summary, charts, gallery and files of a result folder under runs/
    view_api, view_quiet = folder_views(_folder, lambda path: view(path), empty, _error)

    def view(folder: Path):
        """Progress, table, summary, charts, gallery and files of a checked result folder."""
        if not folder.is_dir():
            return empty
        state = R.eval_state(folder)
        results = read_results(folder) if state.get("state") == "finished" else None
        if results is None:
            return progress_html(state), None, "", None, None, [], []
        # pictures as arrays and files as temporary copies: Gradio only serves paths under the working
        # directory or the temp folder, and the runs folder may be anywhere
        img = lambda name: _read_rgb(within(folder, name))
        worst = []
        for w in results.get("worst", []):
            png = within(folder, w.get("png")) if isinstance(w, dict) else None
            if png is not None and png.is_file() and png.suffix.lower() == ".png":
                worst.append((_read_rgb(png), f"IoU {float(w.get('iou', 0)):.2f} - {Path(str(w.get('file'))).name}"))
        out_files = _download_copies(folder)
        return (progress_html(state), table_rows(results), summary_markdown(results, folder), img("loc_bar.png"),
                img("tau_sweep.png"), worst, out_files)

    view_outputs = [progress, table, summary, bar, sweep, gallery, files]

    tick = R.folder_tick(_folders, _folder, view, len(view_outputs), empty, gr.skip,
                         lambda folders: gr.Dropdown(choices=folders), PathError)

    def evaluate_default(limit_value=0, request: gr.Request = None, progress=gr.Progress()):
        """The dashboard's default model (the bundled demo model) on its test split, made first when missing;
        ``limit_value``: the form's "images (0 = all)"."""
        access.require_editor(ctx, request)
        try:
            loaded = ctx.load()
            file = roots.checkpoint(str(loaded.path))
        except (CheckpointError, PathError) as exc:
            raise _error(f"The default model cannot be used: {exc}") from None
        d = loaded.config.data
        notes, overrides = [], []
        if d.dataset == "demo":
            version, why = firstrun.model_data_version(loaded.class_names, d.root)
            root = firstrun.demo_root_for(ctx.data_dir, version)
            progress(0, desc=f"preparing the test split (synthetic set v{version})")
            try:
                made = firstrun.ensure_demo_data(
                    root, version, progress=lambda n, t, what: progress((n, t), desc=what, unit="images"))
            except firstrun.FirstRunError as exc:
                raise _error(f"Cannot create the test split: {exc}") from None
            overrides = [f"data.root={root}"]
            notes.append(f"Test split: synthetic set v{version} ({why}) in `{root}`"
                         + (f", created now (`{firstrun.command_text(root, version)}`)." if made else "."))
        elif not d.root or not Path(d.root).is_dir():
            raise _error(f"The default model was trained on {d.dataset} at {d.root or '(no root)'}, which is not "
                         "here: enter its dataset root above and press Evaluate.")
        msg, out = _start_eval(file, "test", overrides, list(DEFAULT_METHODS), None, limit_value)
        return "\n\n".join([*notes, msg]), out

    started = gr.Textbox(visible=False)  # the result folder; plain text for API users
    run_btn.click(evaluate, [source, split, root, methods, tau, limit], [message, started],
                  api_name="evaluate", concurrency_limit=2).then(
        lambda f: (gr.Dropdown(choices=_folders(), value=f), {}), started, [saved, shown], api_visibility="private")
    demo_btn.click(evaluate_default, [limit], [message, started], api_name="evaluate_default", concurrency_limit=1).then(
        lambda f: (gr.Dropdown(choices=_folders(), value=f), {}), started, [saved, shown], api_visibility="private")
    saved.input(view_quiet, saved, view_outputs, api_visibility="private")
    timer.tick(tick, [saved, shown], [*view_outputs, saved, shown], api_visibility="private",
               show_progress="hidden", trigger_mode="always_last", concurrency_limit=4)
    rescan.click(lambda: (gr.Dropdown(choices=ctx.checkpoint_choices()), gr.Dropdown(choices=_folders())), None,
                 [source, saved], api_visibility="private")
    eval_view = gr.Button(visible=False)
    eval_view.click(view_api, saved, view_outputs, api_name="eval_view")
    return {"saved": saved, "table": table}


assert len(COLUMNS) == len(TABLE_COLUMNS) - 1
