"""The Train tab: launch training jobs, watch them live, compare runs.

Left: the job form (``dashboard.train_form``; defaults from a shipped config),
the resolved command line (and its torchrun form), Launch. Right: the runs list
(every run directory under the runs folder), the selected run's status, losses
(the paper's Fig. 5), lr, images/s, evaluation accuracy and log tail, with Stop
and Resume. Jobs are child processes (``dashboard.jobs``); the view is rebuilt
from run-directory files by a 1 s ``gr.Timer``, which only re-renders what
changed (file sizes and mtimes as signatures), so a new metrics line reaches
the page within about a second and idle ticks cost a few ``stat`` calls.

Where a job runs and when it starts is ``dashboard.scheduler``'s part: the form
lists the GPUs (``dashboard.gpus``) to pick from, a job whose GPUs are held (or,
on the CPU, past ``--max-jobs``) waits as ``queued`` and starts on a later timer
tick; Cancel takes it out of the queue.

Public API endpoints (gradio_client): ``/launch`` (the form), ``/launch_config``
(config name + overrides text), ``/stop``, ``/resume``, ``/cancel``, ``/run_status``. Every
run name, config name and folder a client sends goes through ``ctx.roots``
(``dashboard.paths``): runs are plain names under the runs directory, and
Stop/Resume act only on jobs that directory owns (``dashboard.jobs``).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import gradio as gr

from dashboard import access, curves, firstrun, jobs
from dashboard import gpus as G
from dashboard import runs as R
from dashboard import scheduler as S
from dashboard import train_form as form
from dashboard.context import DashboardContext
from dashboard.paths import PathError
from flrdf.backbone import pretrained_note
from flrdf.config import ConfigError, shipped_configs
from flrdf.engine.rundir import read_metrics

TICK_S = 1.0
GROUPS = {
    "Data": ("data.dataset", "data.root", "data.train_split", "data.test_split", "data.annotation_level",
             "data.val_fraction", "data.image_size", "data.resize"),
    "Model": ("model.backbone", "model.pretrained", "model.weights", "model.branches", "model.suppression",
              "model.delta", "model.tau", "model.jigsaw_n"),
    "Optimisation": ("optim.epochs", "optim.batch_size", "optim.lr_backbone", "optim.lr_new", "optim.max_steps",
                     "loss.alpha", "loss.beta", "loss.gamma"),
    "Runtime": ("runtime.device", "data.num_workers", "runtime.log_every", "runtime.eval_every"),
}
assert sorted(k for ks in GROUPS.values() for k in ks) == sorted(form.KEYS)


def _error(message: str, title: str = "Train") -> gr.Error:
    return gr.Error(message, title=title, duration=None, print_exception=False)


def _component(f: form.Field, value):
    elem_id = "train-" + f.key.replace(".", "-").replace("_", "-")
    if f.kind == "choice":
        return gr.Dropdown(list(f.choices), value=value, label=f.label, info=f.info or None,
                           allow_custom_value=True, elem_id=elem_id)
    if f.kind == "bool":
        return gr.Checkbox(value=bool(value), label=f.label, elem_id=elem_id)
    if f.kind in ("int", "number"):
        return gr.Number(value=value, label=f.label, info=f.info or None, precision=0 if f.kind == "int" else None,
                         elem_id=elem_id)
    return gr.Textbox(value=value, label=f.label, info=f.info or None, elem_id=elem_id)


def preflight_notes(res: form.Resolved) -> list[str]:
    """The form's warnings before launch: train_form's notes, and whether the ImageNet weights a config asks
    for are missing here (the job would stop at start; the message says how to provide them)."""
    notes = list(res.notes)
    m = res.cfg.model
    missing = pretrained_note(m.backbone, m.pretrained, m.weights)
    if missing:
        notes.append(missing)
    return notes


# ---------------------------------------------------------------- devices and the queue, as text
def launch_preview(res: form.Resolved, request: S.Request, gpus: list[G.GPU], threads: int | None = None,
                   out: str | None = None) -> str:
    """The command a Launch of ``request`` runs (``CUDA_VISIBLE_DEVICES`` as the scheduler sets it)."""
    ids = {g.index: g.visible_id for g in gpus}
    if isinstance(request.devices, tuple):
        visible, nproc = ",".join(ids.get(i, str(i)) for i in request.devices), len(request.devices)
    elif request.devices == "auto":
        visible, nproc = "<the first free GPU>", 1
    else:
        visible, nproc = ("" if gpus else None), request.nproc
    text = res.command(threads, nproc, visible)
    return text + (f" --out {out}" if out else "")


def placement_message(place: S.Placement, res: form.Resolved | None, gpus: list[G.GPU], what: str = "Launched") -> str:
    """Launch/Resume's answer: where and with what it started, or its place in the queue and what it waits for."""
    name = place.run.name
    if place.pid is None:
        where = place.request.text()
        return (f"Queued **{name}** on {where} (#{place.position} in the queue): it starts when "
                f"{' and '.join(place.waiting_for) or 'its devices'} {'is' if len(place.waiting_for) < 2 else 'are'} "
                "free. Cancel takes it out of the queue.")
    n = place.threads
    per = " per process" if place.nproc > 1 else ""
    msg = f"{what} **{name}** on {place.where()} (pid {place.pid}, {n} thread{'s' if n > 1 else ''}{per})."
    if res is not None:
        req = S.Request(tuple(place.devices) if isinstance(place.devices, list) else "cpu", place.nproc)
        msg += f"\n\n`{launch_preview(res, req, gpus, n, str(place.run))}`"
    return msg


def gpu_note(gpus: list[G.GPU], max_jobs: int) -> str:
    if not gpus:
        return (f"No GPU: jobs run on the CPU, {max_jobs} at a time (`--max-jobs`); the rest wait in the queue. "
                "CPU processes > 1: torchrun with gloo.")
    return (f"{len(gpus)} GPU{'s' if len(gpus) > 1 else ''}: pick one or several (several: torchrun, one process "
            "per GPU); none picked: the first free one. A job whose GPUs another job of this dashboard holds "
            f"waits in the queue. Device `cpu`: {max_jobs} CPU job{'s' if max_jobs > 1 else ''} at a time.")


def run_device(run_dir: Path, overrides: list[str]) -> str:
    """``runtime.device`` of a run resumed with ``overrides`` (its config.yaml, as ``train --resume`` reads it)."""
    import yaml

    from flrdf.config import apply_overrides, config_from_dict

    try:
        data = yaml.safe_load((Path(run_dir) / "config.yaml").read_text()) or {}
        return apply_overrides(config_from_dict(data), overrides).runtime.device
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{Path(run_dir).name}/config.yaml cannot be read: {type(exc).__name__}") from None


# ---------------------------------------------------------------- status text
def status_markdown(run_dir: Path | None) -> str:
    if run_dir is None:
        return "No run selected. Launch one on the left, or pick one from the runs list."
    if not run_dir.is_dir():
        return f"**{run_dir.name}**: no such run directory"
    st = R.run_state(run_dir)
    state = st.get("state", "unknown")
    metrics = read_metrics(run_dir)
    train = [m for m in metrics if "loss_total" in m]
    parts = [f"**{run_dir.name}** - state: **{state}**"]
    if st.get("pid") and state in R.ACTIVE:
        parts[0] += f" (pid {st['pid']})"
    devices = R.devices_text(run_dir, st)
    if devices:
        parts[0] += f" - {devices}"
    if state == "queued" and st.get("queue_position"):
        parts.append("#{} of {} in the queue: it starts when its devices are free; Cancel takes it out."
                     .format(*st["queue_position"]))
    if train:
        m = train[-1]
        total = st.get("total_steps")
        pct = f" ({100 * m['step'] / total:.0f} %)" if total else ""
        losses = ", ".join(f"{curves.LOSS_LABELS[k]} {m[k]:.3f}" for k in curves.LOSS_KEYS
                           if isinstance(m.get(k), (int, float)))
        speed = f" - {m['images_per_s']:.1f} img/s" if isinstance(m.get("images_per_s"), (int, float)) else ""
        parts.append(f"step {m['step']}{'/' + str(total) if total else ''}{pct} - epoch {m.get('epoch', 0):.2f} - "
                     f"{losses} - lr {m.get('lr', 0):.3g}{speed} - loss points: {len(train)}")
    elif state in R.ACTIVE:
        parts.append("waiting for the first metrics line (loading data and model) - loss points: 0")
    evals = [m for m in metrics if m.get("split")]
    if evals:
        e = evals[-1]
        acc = ", ".join(f"{k.replace('top1_', '')} {100 * e[k]:.1f} %" for k in ("top1_raw", "top1_object")
                        if isinstance(e.get(k), (int, float)))
        loc = f" - loc. acc. {100 * e['loc_acc']:.1f} %" if isinstance(e.get("loc_acc"), (int, float)) else ""
        parts.append(f"last eval ({e['split']}, epoch {e.get('epoch')}): top-1 {100 * e['top1']:.1f} % "
                     f"({acc}){loc}")
    if state == "finished" and isinstance((st.get("final") or {}).get("top1"), (int, float)):
        parts.append(f"final test top-1: **{100 * st['final']['top1']:.2f} %**")
    if state in ("failed", "unknown") and st.get("error"):
        parts.append(f"**error:** `{st['error']}`")
    if state in ("failed", "stopped") and (run_dir / "checkpoints" / "last.pt").is_file():
        parts.append("checkpoint: checkpoints/last.pt - Resume continues from it.")
    elif state == "stopped":
        parts.append("no checkpoint written yet")
    return "\n\n".join(parts)


def log_tail(run_dir: Path | None) -> str:
    if run_dir is None:
        return ""
    text = R.tail_text(run_dir / "log.txt")
    err = R.tail_text(run_dir / jobs.STDERR, 3000, 15)
    if err.strip() and (not text or R.run_state(run_dir).get("state") == "failed"):
        text = (text + "\n--- stderr ---\n" if text else "") + err
    return text


def rebase_data(values: dict, data_dir: Path) -> dict:
    """A config's ``data/...`` dataset root (the demo's) moved onto the dashboard's data folder, when the operator
    set one other than ./data (tests, a shared data folder); others unchanged. Weights files stay as the config
    names them (a missing default one is replaced by the bundled model's backbone, see ``form.resolve``)."""
    if Path(data_dir).absolute() == (Path.cwd() / "data").absolute():
        return values
    out = dict(values)
    for key in ("data.root",):
        text = str(out.get(key) or "")
        if text.startswith("data/"):
            out[key] = str(Path(data_dir) / text[len("data/"):])
    return out


def runs_table(runs_dir: Path) -> list[list]:
    rows = [R.summary(p) for p in R.list_runs(runs_dir)]
    return [[r[c] for c in R.RUN_COLUMNS] for r in rows]


# ---------------------------------------------------------------- the tab
def build_train_tab(ctx: DashboardContext):
    runs_dir = Path(ctx.runs_dir)
    roots = ctx.roots
    sched = ctx.scheduler or S.Scheduler(runs_dir)
    try:  # jobs that waited while the app was down start now (their GPUs may have freed meanwhile)
        sched.pump()
    except (jobs.JobError, OSError) as exc:
        print(f"warning: the job queue in {runs_dir} could not be processed: {exc}")
    machine_gpus = sched.gpus()
    start = form.DEFAULT_CONFIG if form.DEFAULT_CONFIG in shipped_configs() else shipped_configs()[0]
    values = rebase_data(form.defaults(start), ctx.data_dir)
    demo_backbone = firstrun.model_backbone_name(firstrun.DEMO_MODEL) if firstrun.DEMO_MODEL.is_file() else None
    fallback_file = firstrun.backbone_target(ctx.data_dir)

    def _fallback(backbone) -> str | None:
        """The bundled demo model's backbone, for a job whose default weights file is missing (same architecture)."""
        return str(fallback_file) if demo_backbone and str(backbone or "") == demo_backbone else None
    fields = {f.key: f for f in form.FIELDS}
    comps: dict[str, gr.components.Component] = {}
    try:
        first = form.resolve(start, values, fallback_weights=_fallback(values["model.backbone"]), creates_data=True)
        init = (launch_preview(first, S.parse_request("", 1, first.cfg.runtime.device, machine_gpus), machine_gpus),
                first.multinode(None, str(runs_dir / f"{first.cfg.name}-multinode")),
                "\n".join(f"- {n}" for n in preflight_notes(first)))
    except (ConfigError, ValueError) as exc:
        init = ("", "", f"**invalid:** {exc}")

    table = gr.Dataframe(headers=list(R.RUN_COLUMNS), value=runs_table(runs_dir), interactive=False,
                         label=f"runs in {runs_dir}", elem_id="train-runs", wrap=True, max_height=240)
    with gr.Row():
        with gr.Column(scale=2, min_width=400):
            gr.Markdown("### New training job")
            with gr.Row():
                config = gr.Dropdown(shipped_configs(), value=start, label="start from shipped config",
                                     elem_id="train-config", scale=2)
                name = gr.Textbox(label="run name (default: config name)", elem_id="train-name", scale=2)
                threads = gr.Number(0, precision=0, label="CPU threads (0 = auto)", elem_id="train-threads",
                                    scale=1)
            with gr.Row():  # where the job runs (dashboard.scheduler)
                held, _ = sched.running()
                gpu_pick = gr.CheckboxGroup([(G.label(g, held.get(g.index)), str(g.index)) for g in machine_gpus],
                                            value=[], label="GPUs", visible=bool(machine_gpus),
                                            elem_id="train-gpus", scale=3)
                procs = gr.Number(1, precision=0, label="CPU processes (> 1: torchrun, gloo)", minimum=1,
                                  elem_id="train-procs", scale=1)
            gr.Markdown(gpu_note(machine_gpus, sched.max_jobs), elem_id="train-gpu-note")
            with gr.Row():
                launch_btn = gr.Button("Launch", variant="primary", elem_id="train-launch", scale=2)
                data_btn = gr.Button("Create demo data at root", size="sm", scale=1, elem_id="train-make-data")
            launch_msg = gr.Markdown(elem_id="train-launch-msg")
            command = gr.Code(init[0], label="resolved command", language="shell", interactive=False,
                              wrap_lines=True, lines=2, max_lines=8, elem_id="train-command")
            notes = gr.Markdown(init[2], elem_id="train-notes")
            for title, keys in GROUPS.items():
                with gr.Accordion(title, open=title != "Model", elem_id=f"train-acc-{title.lower()}"):
                    for i in range(0, len(keys), 3):
                        with gr.Row():
                            for key in keys[i:i + 3]:
                                comps[key] = _component(fields[key], values[key])
            extra = gr.Textbox(label="extra overrides", placeholder="key=value key=value ...", lines=1,
                               elem_id="train-extra")
            torchrun = gr.Code(init[1], label="multi-node (torchrun; run it on each of $NNODES machines)",
                               language="shell", interactive=False, wrap_lines=True, lines=2, max_lines=8,
                               elem_id="train-multinode")
        with gr.Column(scale=3, min_width=520):
            with gr.Row():
                run = gr.Dropdown([], value=None, label="run", allow_custom_value=True, elem_id="train-run", scale=2)
                overlay = gr.Dropdown([], value=[], multiselect=True, label="overlay runs",
                                      allow_custom_value=True, elem_id="train-overlay", scale=3)
            with gr.Row():
                stop_btn = gr.Button("Stop", variant="stop", elem_id="train-stop", size="sm")
                resume_btn = gr.Button("Resume", elem_id="train-resume", size="sm")
                cancel_btn = gr.Button("Cancel", elem_id="train-cancel", size="sm")
                resume_extra = gr.Textbox(show_label=False, placeholder="overrides for resume, e.g. optim.epochs=20",
                                          elem_id="train-resume-extra", scale=3)
            status = gr.Markdown(elem_id="train-status")
            with gr.Row():
                smoothing = gr.Slider(0, 0.99, value=curves.DEFAULT_SMOOTHING, step=0.01, label="smoothing (EMA)",
                                      elem_id="train-smoothing")
                axis = gr.Radio(list(curves.X_AXES), value="step", label="x axis", elem_id="train-axis")
            loss_plot = gr.Plot(label="losses (paper Fig. 5)", format="png", elem_id="train-loss-plot")
            aux_plot = gr.Plot(label="lr, images/s, evaluation", format="png", elem_id="train-aux-plot")
            log_box = gr.Textbox(label="log tail", lines=10, max_lines=14, interactive=False, autoscroll=True,
                                 elem_id="train-log")
    sig = gr.State({})
    timer = gr.Timer(TICK_S)
    form_inputs = [config, *[comps[k] for k in form.KEYS], extra, name, threads, gpu_pick, procs]

    # ---- form -> command
    def _resolve(config_name, *vals):
        *field_vals, extra_text, _name, _threads, _gpus, _procs = vals
        field_values = dict(zip(form.KEYS, field_vals))
        return form.resolve(roots.config(config_name), field_values, extra_text,
                            fallback_weights=_fallback(field_values.get("model.backbone")), creates_data=True)

    def show_command(config_name, *vals):
        try:
            res = _resolve(config_name, *vals)
        except (ConfigError, ValueError) as exc:  # PathError is a ValueError
            return "", "", f"**invalid:** {exc}"
        *_, run_name, threads_value, gpus_value, procs_value = vals
        t = int(threads_value or 0) or None
        note = "\n".join(f"- {n}" for n in preflight_notes(res))
        gpus_now = sched.gpus()
        try:
            request = S.parse_request(gpus_value, procs_value, res.cfg.runtime.device, gpus_now)
        except jobs.JobError as exc:
            request, note = S.Request("cpu"), note + f"\n- **devices:** {exc}"
        per_node = len(request.devices) if isinstance(request.devices, tuple) else \
            (request.nproc if request.devices == "cpu" and request.nproc > 1 else None)
        out = runs_dir / f"{str(run_name or '').strip() or res.cfg.name}-multinode"
        return launch_preview(res, request, gpus_now, t), res.multinode(per_node, str(out)), note

    gr.on([c.change for c in form_inputs], show_command, form_inputs, [command, torchrun, notes],
          trigger_mode="always_last", show_progress="hidden", api_visibility="private")

    def fill(config_name):
        try:
            v = rebase_data(form.defaults(roots.config(config_name)), ctx.data_dir)
        except (ConfigError, ValueError) as exc:
            raise _error(str(exc)) from None
        return [v[k] for k in form.KEYS]

    config.input(fill, config, [comps[k] for k in form.KEYS], api_visibility="private")

    # ---- launch / stop / resume
    def _choices():
        return [p.name for p in R.list_runs(runs_dir)]

    def _prepare(res: form.Resolved, progress) -> list[str]:
        """Make what the job needs and a fresh clone lacks: the synthetic demo set (dataset demo, root missing,
        root under data/ or runs/) and the bundled model's backbone when the job names it. Lines for the message."""
        done = []
        cfg = res.cfg
        report = lambda n, total, what: progress((n, total), desc=what, unit="images")
        if cfg.data.dataset == "demo" and not Path(cfg.data.root).exists():
            try:
                folder = roots.data_root(cfg.data.root)
            except PathError:  # not a place the app writes to: launch as asked, the job names the missing root
                folder = None
        else:
            folder = None
        if folder is not None:
            try:
                firstrun.ensure_demo_data(folder, firstrun.DEFAULT_VERSION, progress=report)
            except firstrun.FirstRunError as exc:
                raise _error(f"Cannot create the demo data: {exc}") from None
            done.append(f"Created the synthetic demo set v{firstrun.DEFAULT_VERSION} in `{cfg.data.root}` "
                        f"(`{firstrun.command_text(cfg.data.root, firstrun.DEFAULT_VERSION)}`).")
        weights = cfg.model.weights
        if weights and Path(weights).absolute() == fallback_file.absolute():
            progress(None, desc="extracting the bundled demo model's backbone")
            try:
                firstrun.ensure_backbone(fallback_file)
            except (OSError, RuntimeError, ValueError) as exc:
                raise _error(f"Cannot extract the demo model's backbone: {exc}") from None
            done.append(f"Backbone: the bundled demo model's own (`{weights}`, from assets/demo_model.safetensors).")
        return done

    def _start(res: form.Resolved, run_name: str, threads_value, gpus_value=None, procs_value=1,
               progress=None) -> tuple:
        gpus_now = sched.gpus()
        try:
            name = roots.run_name(str(run_name or "").strip() or res.cfg.name)
            request = S.parse_request(gpus_value, procs_value, res.cfg.runtime.device, gpus_now)
        except (PathError, jobs.JobError) as exc:
            raise _error(str(exc)) from None
        prepared = _prepare(res, progress or (lambda *a, **k: None))
        try:  # threads 0: chosen when it starts, from the jobs running then
            place = sched.submit_train(res.config, res.overrides, name, max(0, int(threads_value or 0)), request,
                                       info={"config": res.cfg.name, "dataset": res.cfg.data.dataset})
        except (jobs.JobError, PathError) as exc:
            raise _error(str(exc)) from None
        return "\n\n".join([*prepared, placement_message(place, res, gpus_now)]), place.run.name

    def launch(request: gr.Request, config_name, *vals, progress=gr.Progress()):
        access.require_editor(ctx, request)
        try:
            res = _resolve(config_name, *vals)
        except (ConfigError, ValueError) as exc:
            raise _error(f"Invalid job settings: {exc}") from None
        return _start(res, *vals[-4:], progress=progress)

    # named parameters for API users (gradio_client): config, data_root, optim_epochs, ...; progress is Gradio's
    launch.__signature__ = inspect.Signature(
        [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request)]
        + [inspect.Parameter(p.replace(".", "_"), inspect.Parameter.POSITIONAL_OR_KEYWORD)
           for p in ["config", *form.KEYS, "extra", "name", "threads", "gpus", "processes"]]
        + [inspect.Parameter("progress", inspect.Parameter.KEYWORD_ONLY, default=gr.Progress())])
    launched = gr.Textbox(visible=False)  # the new run's name; plain text for API users

    def select(run_name):
        return gr.Dropdown(choices=_choices(), value=run_name) if run_name else gr.skip()

    launch_btn.click(launch, form_inputs, [launch_msg, launched], api_name="launch", concurrency_limit=1).then(
        select, launched, run, api_visibility="private")

    def launch_config(config_name: str, overrides: str, run_name: str = "", threads_value: float = 0,
                      gpus: str = "", processes: float = 1, request: gr.Request = None, progress=gr.Progress()):
        """Launch ``config_name`` with ``key=value`` overrides (text) - the CLI's form, for scripts. ``gpus``:
        "0,1", "cpu" or "" (the first free GPU; the CPU without one); ``processes``: CPU processes (torchrun)."""
        access.require_editor(ctx, request)
        try:
            res = form.resolve(roots.config(config_name), {}, overrides)
        except (ConfigError, ValueError) as exc:
            raise _error(f"Invalid job settings: {exc}") from None
        return _start(res, run_name, threads_value, gpus, processes, progress=progress)

    hidden = [gr.Textbox(visible=False), gr.Textbox(visible=False), gr.Textbox(visible=False),
              gr.Number(visible=False), gr.Textbox("", visible=False), gr.Number(1, visible=False)]
    launch_hidden = gr.Button(visible=False)
    launch_hidden.click(launch_config, hidden, [launch_msg, launched], api_name="launch_config",
                        concurrency_limit=1).then(select, launched, run, api_visibility="private")

    def _run_dir(name_value) -> Path | None:
        """The run a client named (PathError unless it is a plain name of a run under the runs directory)."""
        text = str(name_value or "").strip()
        return roots.run_dir(text) if text else None

    def _checked_run(name_value) -> Path:
        try:
            rd = _run_dir(name_value)
        except PathError as exc:
            raise _error(str(exc)) from None
        if rd is None:
            raise _error("Select a run first.")
        return rd

    def stop(run_name, request: gr.Request):
        access.require_editor(ctx, request)
        rd = _checked_run(run_name)
        try:
            pid = jobs.stop_run(rd)
        except jobs.JobError as exc:
            if S.queue_position(runs_dir, rd.name):
                exc = jobs.JobError("it is queued, not running: Cancel takes it out of the queue")
            raise _error(f"Cannot stop {rd.name}: {exc}") from None
        ranks = " (torchrun passes it to every rank)" if (jobs.read_job(rd) or {}).get("nproc", 1) > 1 else ""
        return f"Sent SIGTERM to pid {pid}{ranks}: **{rd.name}** writes a checkpoint and stops."

    def resume(run_name, overrides, threads_value, gpus_value=None, procs_value=1, request: gr.Request = None):
        """Resume on the GPUs picked in the form (or CPU processes > 1); with neither, where the run last ran."""
        access.require_editor(ctx, request)
        rd = _checked_run(run_name)
        gpus_now = sched.gpus()
        try:
            extra_list = form.parse_extra(overrides)
            device = run_device(rd, extra_list) if (rd / "config.yaml").is_file() else "auto"
            picked = bool(S.parse_devices(gpus_value) != "auto") or int(float(procs_value or 1)) != 1
            request = S.parse_request(gpus_value, procs_value, device, gpus_now) if picked else None
            place = sched.submit_resume(rd, extra_list, max(0, int(threads_value or 0)), request, device)
        except (jobs.JobError, ConfigError, ValueError) as exc:
            raise _error(f"Cannot resume {rd.name}: {exc}") from None
        return placement_message(place, None, gpus_now, "Resuming")

    def cancel(run_name, request: gr.Request):
        access.require_editor(ctx, request)
        rd = _checked_run(run_name)
        try:
            state = sched.cancel(rd.name)
        except jobs.JobError as exc:
            raise _error(f"Cannot cancel {rd.name}: {exc}") from None
        return f"Cancelled **{rd.name}**: out of the queue, now {state}."

    stop_btn.click(stop, run, launch_msg, api_name="stop", concurrency_limit=2)
    resume_btn.click(resume, [run, resume_extra, threads, gpu_pick, procs], launch_msg, api_name="resume",
                     concurrency_limit=1)
    cancel_btn.click(cancel, run, launch_msg, api_name="cancel", concurrency_limit=2)

    def make_data(dataset, root, request: gr.Request, progress=gr.Progress()):
        access.require_editor(ctx, request)
        if dataset not in ("demo", "cub") or not str(root or "").strip():
            raise _error("Set dataset 'demo' and a root folder first.")
        try:
            folder = roots.data_root(root)
            made = firstrun.ensure_demo_data(folder, firstrun.DEFAULT_VERSION,
                                             progress=lambda n, t, what: progress((n, t), desc=what, unit="images"))
        except (PathError, firstrun.FirstRunError) as exc:
            raise _error(str(exc)) from None
        return (f"Synthetic demo data (v{firstrun.DEFAULT_VERSION}) written to `{root}`." if made
                else f"`{root}` already holds the synthetic demo set v{firstrun.DEFAULT_VERSION}.")

    data_btn.click(make_data, [comps["data.dataset"], comps["data.root"]], launch_msg, api_visibility="private",
                   concurrency_limit=1)

    # ---- live view
    def _stat(p: Path) -> tuple:
        try:
            st = p.stat()
            return st.st_size, st.st_mtime_ns
        except OSError:
            return None

    def live(run_name, overlay_names, smooth, x_axis, state):
        jobs.reap()
        try:
            sched.pump()  # queued jobs whose devices freed start now
        except (jobs.JobError, OSError) as exc:
            print(f"warning: the job queue in {runs_dir} could not be processed: {exc}")
        state = dict(state or {})
        all_runs = R.list_runs(runs_dir)
        names = [p.name for p in all_runs]
        runs_sig = tuple((p.name, _stat(p / "status.json"), _stat(p / jobs.JOB_FILE), _stat(p / "metrics.jsonl"))
                         for p in all_runs) + (_stat(runs_dir / S.QUEUE_FILE),)
        out_table = out_run = out_overlay = out_gpus = gr.skip()
        runs_changed = runs_sig != state.get("runs")
        if runs_changed:
            state["runs"] = runs_sig
            out_table = runs_table(runs_dir)
        gpus_now = sched.gpus() if machine_gpus else []
        if gpus_now:  # names, memory in use (cached a few seconds) and the job on each
            if runs_changed or "held" not in state:  # jobs start and end with a change of their files
                state["held"] = sched.running()[0]
            labels = [[G.label(g, state["held"].get(g.index)), str(g.index)] for g in gpus_now]
            if labels != state.get("gpus"):
                state["gpus"] = labels
                out_gpus = gr.CheckboxGroup(choices=[tuple(x) for x in labels])
        if names != state.get("names"):
            state["names"] = names
            # only the choices change under a selection the page already has: a tick that was sent before a
            # Launch or a click must not put the old run back over the one just chosen
            if run_name and run_name in names:
                out_run = gr.Dropdown(choices=names)
            else:
                running = [p.name for p in all_runs if R.run_state(p).get("state") in R.ACTIVE]
                run_name = (running or names or [None])[0]
                out_run = gr.Dropdown(choices=names, value=run_name)
            kept = [o for o in (overlay_names or []) if o in names]
            out_overlay = gr.Dropdown(choices=names) if kept == list(overlay_names or []) else \
                gr.Dropdown(choices=names, value=kept)
        try:
            rd = _run_dir(run_name)
        except PathError:
            rd, run_name = None, None
        selected = [n for n in dict.fromkeys([run_name, *(overlay_names or [])]) if n and n in names]
        files = [runs_dir / n for n in selected]
        status_sig = (run_name, _stat(rd / "status.json") if rd else None, _stat(rd / jobs.JOB_FILE) if rd else None,
                      _stat(rd / "metrics.jsonl") if rd else None, _stat(rd / "log.txt") if rd else None,
                      R.run_state(rd).get("state") if rd else None)
        out_status = out_log = gr.skip()
        if status_sig != state.get("status"):
            state["status"] = status_sig
            out_status, out_log = status_markdown(rd), log_tail(rd)
        plot_sig = (tuple((n, _stat(f / "metrics.jsonl")) for n, f in zip(selected, files)), smooth, x_axis)
        out_loss = out_aux = gr.skip()
        if plot_sig != state.get("plots"):
            state["plots"] = plot_sig
            data = {n: read_metrics(f) for n, f in zip(selected, files)}
            out_loss = curves.loss_figure(data, smooth or 0.0, x_axis or "step")
            out_aux = curves.aux_figure(data, smooth or 0.0, x_axis or "step")
        return out_table, out_run, out_overlay, out_status, out_log, out_loss, out_aux, out_gpus, state

    live_outputs = [table, run, overlay, status, log_box, loss_plot, aux_plot, gpu_pick, sig]
    live_inputs = [run, overlay, smoothing, axis, sig]
    timer.tick(live, live_inputs, live_outputs, api_visibility="private", concurrency_limit=4,
               show_progress="hidden", trigger_mode="always_last")
    gr.on([run.change, overlay.change, smoothing.release, axis.change], live, live_inputs, live_outputs,
          api_visibility="private", show_progress="hidden", trigger_mode="always_last")

    def run_status(run_name):
        """Status text, runs table and log tail of a run (for scripts and tests)."""
        text = str(run_name or "").strip()
        try:
            rd = roots.run_dir(text, must_exist=False) if text else None
        except PathError as exc:
            raise _error(str(exc)) from None
        return status_markdown(rd), runs_table(runs_dir), log_tail(rd)

    refresh = gr.Button(visible=False)
    refresh.click(run_status, run, [status, table, log_box], api_name="run_status")
    return {"run": run, "status": status, "timer": timer}
