"""The Inspect tab: one image through FLRDF, stage by stage, beside the classic CAM baselines.

The page follows the method: the prediction and its box; the paper's FL module (layer4's
channel mean before suppression X, after it X' - the paper's localization map - and what
suppression removed, the controller's gate G per channel and the channels it cut most);
the box source (the paper's X', or a map the project adds, labelled "beyond the paper"),
the crop and its shuffled patches; a what-if on the controller (G scaled, a constant
delta, suppression off: the model rerun once, no retraining); each branch's top-5; the
CAM baselines with their boxes and IoU.

``build_inspect_tab(ctx)`` only lays out and wires. The handlers are module-level
functions from inputs to outputs (:func:`inspect_request`, :func:`checkpoint_request`),
tested without a browser; ``dashboard.inspect_view`` decides what each output shows.
Clicking an example inspects it. The Inspect button's event is the public API endpoint
``/inspect`` (gradio_client), with the page's inputs, what-if included. Its inputs are
not preprocessed by Gradio (``preprocess=False``): the handler reads the uploaded file
itself with ``flrdf.data.load_image``, so a non-image, truncated, huge or exotic file
gets the data layer's readable message. A request without an image gets one message
in the status block and leaves the other outputs alone; other failures are raised as
``gr.Error``; the server keeps serving.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections import OrderedDict
from pathlib import Path

import gradio as gr

from dashboard import inspect_view as view
from dashboard.context import DashboardContext, file_sha1
from flrdf.cams import DEFAULT_METHODS, METHODS
from flrdf.engine.checkpoint import CheckpointError, LoadedModel
from flrdf.inspect import inspect_image, valid_grids
from flrdf.suppression import WhatIf
from flrdf.timm_backbone import is_timm

log = logging.getLogger(__name__)
PREDICTED = "predicted"
CONCURRENCY = 2  # inference itself is serialised per model (flrdf.cams.model_lock)
CACHED_RESULTS = 16  # recent requests whose outputs are kept (a repeated click is not recomputed)
NO_IMAGE = "**No image yet:** upload an image or click an example - clicking an example inspects it."
WHATIF_CHOICES = [("the model's own gate", "model"), ("scale G", "scale"), ("constant delta", "constant"),
                  ("suppression off", "off")]
OUTPUTS = ("status", "boxes", "label", "supp_note", "before", "after", "removed", "gate_plot", "channels", "loc",
           "crop", "jigsaw", "whatif_note", "whatif_map", "whatif_table", "top5", "gallery", "cam_table", "timing")


def _digest(path: str) -> str:
    try:
        return file_sha1(path)
    except OSError:
        return path  # unreadable: inspect_image reports it


def _error(message: str, title: str) -> gr.Error:
    """A user-facing error: stays on the page until closed; no server traceback (it is not a bug)."""
    return gr.Error(message, title=title, duration=None, print_exception=False)


# ---------------------------------------------------------------- input parsing (raw payloads)
def _image_path(payload) -> str | None:
    """The uploaded file's path; None when no image was sent."""
    if payload is None or payload == "":
        return None
    if isinstance(payload, dict):
        path = payload.get("path")
    else:
        path = getattr(payload, "path", payload)
    if not path:
        raise _error("The upload did not reach the server; please try again.", title="No image")
    return str(path)


def _target(value, names: list[str]) -> int | None:
    if value is None or str(value).strip().lower() in ("", PREDICTED):
        return None
    text = str(value).strip()
    if text in names:
        return names.index(text)
    head = text.split(":", 1)[0].strip()
    if head.lstrip("-").isdigit():
        return int(head)
    raise _error(f"Unknown target class {value!r}: use 'predicted', a class index or a class name.",
                 title="Bad setting")


def _number(value, name: str, kind=float):
    if value is None or value == "":
        return None
    try:
        return kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError):
        raise _error(f"{name} must be a number, got {value!r}", title="Bad setting") from None


def _methods(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    return [str(v).strip() for v in value]


def parse_whatif(mode, scale, delta) -> WhatIf | None:
    """The what-if controls -> a WhatIf (None: the model's own gate)."""
    mode = str(mode or "model").strip().lower()
    if mode == "model":
        return None
    try:
        return WhatIf(mode, float(1.0 if scale in (None, "") else scale), float(0.7 if delta in (None, "") else delta))
    except (TypeError, ValueError) as exc:
        raise _error(f"Bad what-if setting: {exc}", title="Bad setting") from None


# ---------------------------------------------------------------- choices that depend on the model
def target_choices(loaded: LoadedModel | None) -> list[tuple[str, str]]:
    names = loaded.class_names if loaded else []
    return [("predicted (combined)", PREDICTED)] + [(f"{i}: {n}", str(i)) for i, n in enumerate(names)]


def grid_choices(loaded: LoadedModel | None) -> list[int]:
    return valid_grids(loaded.config.data.image_size) if loaded else [1, 2, 4]


def model_summary(loaded: LoadedModel) -> str:
    cfg = loaded.config
    backbone = cfg.model.backbone
    if is_timm(backbone):  # the stage names are the ResNet's: say what they are on this backbone
        b = loaded.model.backbone
        backbone += (f" (layer4 = its last feature stage, stride {b.stage_stride('layer4')}; layer3, layer2 = the two "
                     "before it)")
    bits = [f"`{loaded.path}`", backbone, f"{cfg.data.image_size} px input",
            f"{len(loaded.class_names)} classes", f"branches {cfg.model.branches}",
            f"suppression {cfg.model.suppression}", f"box source: {loaded.model.box_source}"]
    if loaded.epoch is not None:
        bits.append(f"epoch {loaded.epoch}, step {loaded.step}")
    metrics = (loaded.extra or {}).get("metrics") or {}
    if metrics:
        bits.append(", ".join(f"{k} {v:.3g}" if isinstance(v, (int, float)) else f"{k} {v}"
                              for k, v in list(metrics.items())[:4]))
    return "**Model:** " + " · ".join(bits)


# ---------------------------------------------------------------- handlers: inputs -> outputs
class RecentOutputs:
    """The outputs of the last ``size`` requests, by their inputs: a repeated click is not recomputed."""

    def __init__(self, size: int = CACHED_RESULTS):
        self.size, self._items, self._lock = size, OrderedDict(), threading.Lock()

    def get(self, key):
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def put(self, key, value) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)


def result_outputs(result, model_name: str) -> tuple:
    """An InspectResult as the values of ``OUTPUTS``, in order."""
    before, after, removed = view.suppression_images(result)
    return (
        view.status_text(result, model_name),
        view.annotated_preview(result),
        view.combined_label(result),
        view.suppression_note(result),
        before, after, removed,
        gr.LinePlot(value=view.gate_plot(result), label=view.gate_label(result)),
        view.channel_gallery(result),
        gr.Image(value=view.source_image(result), label=view.source_label(result)),
        view.enlarge(result.object_image),
        view.enlarge(result.jigsaw_image),
        view.whatif_note(result),
        view.whatif_image(result),
        view.whatif_table(result),
        view.top5_table(result),
        view.cam_gallery(result),
        view.cam_table(result),
        view.timing_table(result),
    )


def inspect_request(ctx: DashboardContext, recent: RecentOutputs, image, checkpoint, tau, n, target, cam_methods,
                    seed, whatif="model", whatif_scale=1.0, whatif_delta=0.7) -> tuple:
    """/inspect: every output of the page for one request (see ``OUTPUTS``)."""
    path = _image_path(image)
    if path is None:  # one message, the other outputs left as they are
        return (NO_IMAGE, *[gr.skip()] * (len(OUTPUTS) - 1))
    what = parse_whatif(whatif, whatif_scale, whatif_delta)
    try:
        loaded = ctx.load(checkpoint)
        key = (_digest(path), ctx.models.key(loaded.path), str(tau), str(n), str(target),
               tuple(_methods(cam_methods)), str(seed), what)
    except CheckpointError as exc:
        raise _error(str(exc), title="Cannot use this checkpoint") from None
    hit = recent.get(key)
    if hit is not None:
        return hit
    try:
        example = ctx.example_for(path)
        result = inspect_image(
            loaded, path, tau=_number(tau, "tau"), jigsaw_n=_number(n, "n", int),
            target=_target(target, loaded.class_names), cam_methods=_methods(cam_methods),
            gt_box=example.box if example else None, seed=_number(seed, "seed", int) or 0, whatif=what)
    except gr.Error:
        raise
    except CheckpointError as exc:
        raise _error(str(exc), title="Cannot use this checkpoint") from None
    except ValueError as exc:  # ImageLoadError, InspectError, bad settings
        raise _error(_short(exc, path), title="Cannot inspect this image") from None
    except Exception as exc:  # keep serving; say what happened
        log.exception("inspect failed")
        raise _error(f"Unexpected {type(exc).__name__}: {exc}", title="Inspect failed") from None
    out = result_outputs(result, str(loaded.path))
    recent.put(key, out)
    return out


def whatif_request(ctx: DashboardContext, recent: RecentOutputs, image, *rest) -> tuple:
    """A what-if control changed: inspect again when an image is there; nothing to do without one."""
    if _image_path(image) is None:
        return tuple(gr.skip() for _ in OUTPUTS)
    return inspect_request(ctx, recent, image, *rest)


def checkpoint_request(ctx: DashboardContext, ckpt) -> tuple:
    """A checkpoint was picked: its summary, and the settings that depend on it."""
    try:
        loaded = ctx.load(ckpt)
    except (CheckpointError, OSError) as exc:
        return f"**Cannot load:** {exc}", gr.Slider(), gr.Dropdown(), gr.Dropdown()
    m = loaded.config.model
    return (model_summary(loaded), gr.Slider(value=m.tau),
            gr.Dropdown(choices=grid_choices(loaded), value=m.jigsaw_n),
            gr.Dropdown(choices=target_choices(loaded), value=PREDICTED))


# ---------------------------------------------------------------- the tab (layout and wiring only)
def build_inspect_tab(ctx: DashboardContext) -> dict[str, gr.components.Component]:
    """Create the Inspect tab's components and events; returns the components by name."""
    try:
        default_model = ctx.load()
        ready = model_summary(default_model)
    except (CheckpointError, OSError) as exc:
        default_model = None
        ready = f"**No model loaded:** {exc}. Enter a checkpoint file or run directory."
    cfg_model = default_model.config.model if default_model else None
    pic = dict(type="numpy", format="jpeg", height=220)  # JPEG: a tenth of PNG's bytes and time

    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            image = gr.Image(label="Image", elem_id="inspect-image", type="filepath", image_mode=None,
                             sources=["upload", "clipboard"], height=240)
            run = gr.Button("Inspect", variant="primary", elem_id="inspect-run")
            examples = None
            if ctx.examples:
                examples = gr.Examples(examples=[[str(e.file)] for e in ctx.examples], inputs=[image],
                                       examples_per_page=12, elem_id="inspect-examples",
                                       label="Examples: click one to inspect it (their ground-truth boxes are shown)")
            with gr.Accordion("What-if: the suppression controller (no retraining)", open=True):
                whatif = gr.Radio(WHATIF_CHOICES, value="model", label="gate G", elem_id="inspect-whatif")
                with gr.Row():
                    wi_scale = gr.Slider(0.25, 2.0, value=1.0, step=0.05, label="scale G by (clipped to [0, 1])",
                                         elem_id="inspect-whatif-scale")
                    wi_delta = gr.Slider(0.0, 1.0, value=0.7, step=0.05, label="constant delta",
                                         elem_id="inspect-whatif-delta")
            with gr.Accordion("Settings", open=True):
                with gr.Row():
                    checkpoint = gr.Dropdown(choices=ctx.checkpoint_choices(),
                                             value=str(ctx.checkpoint) if ctx.checkpoint else None,
                                             allow_custom_value=True, label="Checkpoint file or run directory",
                                             scale=4)
                    refresh = gr.Button("↻", scale=0, min_width=40)
                tau = gr.Slider(0.0, 1.0, value=cfg_model.tau if cfg_model else 0.5, step=0.05,
                                label="tau (box threshold)")
                with gr.Row():
                    grid = gr.Dropdown(choices=grid_choices(default_model),
                                       value=cfg_model.jigsaw_n if cfg_model else 4, label="jigsaw grid n")
                    seed = gr.Number(value=0, precision=0, label="shuffle seed")
                target = gr.Dropdown(choices=target_choices(default_model), value=PREDICTED,
                                     label="CAM target class")
                cams = gr.CheckboxGroup(
                    choices=[(m.label + (" (slow on CPU)" if m.slow else ""), m.key) for m in METHODS.values()],
                    value=list(DEFAULT_METHODS), label="CAM baselines (raw branch, layer4)")
        with gr.Column(scale=3):
            status = gr.Markdown(ready, label="Status", elem_id="inspect-status")
            with gr.Row():
                boxes = gr.AnnotatedImage(label="Prediction and foreground box", elem_id="inspect-boxes",
                                          height=300, color_map=dict(view.BOX_COLOURS), format="jpeg")
                label = gr.Label(num_top_classes=5, label="Combined prediction")
            gr.Markdown("#### 1 · Suppression controller - the paper's FL module on layer4: X' = min(X, X_max·G)")
            supp_note = gr.Markdown(elem_id="inspect-supp-note")
            with gr.Row(elem_id="inspect-suppression"):
                before = gr.Image(label=view.SUPPRESSION_TITLES["before"], elem_id="inspect-before", **pic)
                after = gr.Image(label=view.SUPPRESSION_TITLES["after"], elem_id="inspect-after", **pic)
                removed = gr.Image(label=view.SUPPRESSION_TITLES["removed"], elem_id="inspect-removed", **pic)
            with gr.Row():
                gate_plot = gr.LinePlot(x=view.GATE_X, y=view.GATE_Y, y_lim=[0, 1], elem_id="inspect-gate",
                                        label="Controller: G per channel, sorted", height=240, scale=2)
                channels = gr.Gallery(label="Channels cut most: X[c] / X_max, largest X_max·(1 - G) first",
                                      elem_id="inspect-channels", columns=3, rows=2, height=260,
                                      object_fit="contain", format="jpeg", scale=3)
            gr.Markdown("#### 2 · Box source, crop and shuffled patches")
            with gr.Row():
                loc = gr.Image(label="box source", elem_id="inspect-loc", **pic)
                crop = gr.Image(label="Cropped, enlarged foreground", elem_id="inspect-crop", **pic)
                jigsaw = gr.Image(label="Shuffled patches (jigsaw branch)", elem_id="inspect-jigsaw", **pic)
            gr.Markdown("#### 3 · What-if on the controller")
            whatif_note = gr.Markdown(elem_id="inspect-whatif-note")
            with gr.Row():
                whatif_map = gr.Image(label="X' under the what-if, with its box", elem_id="inspect-whatif-map",
                                      scale=1, **pic)
                whatif_table = gr.Dataframe(label="Top-5: the model's gate vs the what-if",
                                            elem_id="inspect-whatif-table", interactive=False, wrap=True, scale=2)
            gr.Markdown("#### 4 · Branches and CAM baselines")
            top5 = gr.Dataframe(label="Top-5 per branch", elem_id="inspect-top5", interactive=False, wrap=True)
            gallery = gr.Gallery(label="Maps with their boxes (red: box at tau, green: ground truth, white: the "
                                       "map's box when refined)",
                                 elem_id="inspect-gallery", columns=4, height="auto", object_fit="contain",
                                 format="jpeg")
            cam_df = gr.Dataframe(label="Boxes and IoU", elem_id="inspect-cam-table", interactive=False, wrap=True)
            with gr.Accordion("Timing per stage (ms, server-side)", open=False):
                timing = gr.Dataframe(show_label=False, elem_id="inspect-timing", interactive=False)

    recent = RecentOutputs()
    inputs = [image, checkpoint, tau, grid, target, cams, seed, whatif, wi_scale, wi_delta]
    outputs = [status, boxes, label, supp_note, before, after, removed, gate_plot, channels, loc, crop, jigsaw,
               whatif_note, whatif_map, whatif_table, top5, gallery, cam_df, timing]
    on_inspect = functools.partial(inspect_request, ctx, recent)
    on_whatif = functools.partial(whatif_request, ctx, recent)
    run.click(on_inspect, inputs=inputs, outputs=outputs, api_name="inspect", api_visibility="public",
              preprocess=False, concurrency_limit=CONCURRENCY, concurrency_id="inspect",
              api_description="Inspect one image: FLRDF box, the suppression controller (X, X', G), crop, jigsaw, "
                              "per-branch top-5, CAM baselines; whatif = model | scale | constant | off.")
    if examples is not None:  # a click on an example loads it, then inspects it
        examples.load_input_event.then(on_inspect, inputs=inputs, outputs=outputs, preprocess=False,
                                       concurrency_limit=CONCURRENCY, concurrency_id="inspect",
                                       api_visibility="private")
    for control, event in ((whatif, "change"), (wi_scale, "release"), (wi_delta, "release")):
        getattr(control, event)(on_whatif, inputs=inputs, outputs=outputs, preprocess=False,
                                concurrency_limit=CONCURRENCY, concurrency_id="inspect", api_visibility="private")

    def inspect_after(event):
        """Inspect once ``event`` has put an image in place (the Data tab's "open in Inspect")."""
        return event.then(on_inspect, inputs=inputs, outputs=outputs, preprocess=False,
                          concurrency_limit=CONCURRENCY, concurrency_id="inspect", api_visibility="private")

    checkpoint.change(functools.partial(checkpoint_request, ctx), inputs=[checkpoint],
                      outputs=[status, tau, grid, target], api_visibility="private")
    refresh.click(lambda: gr.Dropdown(choices=ctx.checkpoint_choices()), outputs=[checkpoint],
                  api_visibility="private")
    return {"image": image, "checkpoint": checkpoint, "tau": tau, "grid": grid, "seed": seed, "target": target,
            "cams": cams, "run": run, "whatif": whatif, "whatif_scale": wi_scale, "whatif_delta": wi_delta,
            "status": status, "boxes": boxes, "label": label, "supp_note": supp_note, "before": before,
            "after": after, "removed": removed, "gate_plot": gate_plot, "channels": channels, "loc": loc,
            "crop": crop, "jigsaw": jigsaw, "whatif_note": whatif_note, "whatif_map": whatif_map,
            "whatif_table": whatif_table, "top5": top5, "gallery": gallery, "cam_table": cam_df, "timing": timing,
            "inspect_after": inspect_after}


def _short(exc: Exception, path: str) -> str:
    """The error without the server's temporary upload path."""
    return str(exc).replace(path, Path(path).name)
