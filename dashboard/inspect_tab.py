"""The Inspect tab: one image through FLRDF, beside the classic CAM baselines.

``build_inspect_tab(ctx)`` creates the components and events inside the
enclosing ``gr.Blocks``/``gr.Tab``. The Inspect button's event is the public
API endpoint ``/inspect`` (gradio_client), with the same inputs as the page.
Its inputs are not preprocessed by Gradio (``preprocess=False``): the handler
reads the uploaded file itself with ``flrdf.data.load_image``, so a non-image,
truncated, huge or exotic file gets the data layer's readable message rather
than a generic component error. Every failure is raised as ``gr.Error``; the
server keeps serving.
"""

from __future__ import annotations

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

log = logging.getLogger(__name__)
PREDICTED = "predicted"
CONCURRENCY = 2  # inference itself is serialised per model (flrdf.cams.model_lock)
CACHED_RESULTS = 16  # recent requests whose outputs are kept (a repeated click is not recomputed)


def _digest(path: str) -> str:
    try:
        return file_sha1(path)
    except OSError:
        return path  # unreadable: inspect_image reports it


def _error(message: str, title: str) -> gr.Error:
    """A user-facing error: stays on the page until closed; no server traceback (it is not a bug)."""
    return gr.Error(message, title=title, duration=None, print_exception=False)


# ---------------------------------------------------------------- input parsing (raw payloads)
def _image_path(payload) -> str:
    if payload is None or payload == "":
        raise _error("Upload an image or pick an example first.", title="No image")
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


# ---------------------------------------------------------------- choices that depend on the model
def target_choices(loaded: LoadedModel | None) -> list[tuple[str, str]]:
    names = loaded.class_names if loaded else []
    return [("predicted (combined)", PREDICTED)] + [(f"{i}: {n}", str(i)) for i, n in enumerate(names)]


def grid_choices(loaded: LoadedModel | None) -> list[int]:
    return valid_grids(loaded.config.data.image_size) if loaded else [1, 2, 4]


def model_summary(loaded: LoadedModel) -> str:
    cfg = loaded.config
    bits = [f"`{loaded.path}`", f"{cfg.model.backbone}", f"{cfg.data.image_size} px input",
            f"{len(loaded.class_names)} classes", f"branches {cfg.model.branches}"]
    if loaded.epoch is not None:
        bits.append(f"epoch {loaded.epoch}, step {loaded.step}")
    metrics = (loaded.extra or {}).get("metrics") or {}
    if metrics:
        bits.append(", ".join(f"{k} {v:.3g}" if isinstance(v, (int, float)) else f"{k} {v}"
                              for k, v in list(metrics.items())[:4]))
    return "**Model:** " + " · ".join(bits)


# ---------------------------------------------------------------- the tab
def build_inspect_tab(ctx: DashboardContext) -> dict[str, gr.components.Component]:
    """Create the Inspect tab's components and events; returns the components by name."""
    try:
        default_model = ctx.load()
        ready = model_summary(default_model)
    except (CheckpointError, OSError) as exc:
        default_model = None
        ready = f"**No model loaded:** {exc}. Enter a checkpoint file or run directory."
    cfg_model = default_model.config.model if default_model else None

    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            image = gr.Image(label="Image", elem_id="inspect-image", type="filepath", image_mode=None,
                             sources=["upload", "clipboard"], height=280)
            if ctx.examples:
                gr.Examples(examples=[[str(e.file)] for e in ctx.examples], inputs=[image], examples_per_page=12,
                            label="Examples (synthetic test split; their ground-truth boxes are shown)")
            with gr.Row():
                checkpoint = gr.Dropdown(choices=ctx.checkpoint_choices(),
                                         value=str(ctx.checkpoint) if ctx.checkpoint else None,
                                         allow_custom_value=True, label="Checkpoint file or run directory", scale=4)
                refresh = gr.Button("↻", scale=0, min_width=40)
            tau = gr.Slider(0.0, 1.0, value=cfg_model.tau if cfg_model else 0.5, step=0.05, label="tau (box threshold)")
            with gr.Row():
                grid = gr.Dropdown(choices=grid_choices(default_model), value=cfg_model.jigsaw_n if cfg_model else 4,
                                   label="jigsaw grid n")
                seed = gr.Number(value=0, precision=0, label="shuffle seed")
            target = gr.Dropdown(choices=target_choices(default_model), value=PREDICTED,
                                 label="CAM target class")
            cams = gr.CheckboxGroup(
                choices=[(m.label + (" (slow on CPU)" if m.slow else ""), m.key) for m in METHODS.values()],
                value=list(DEFAULT_METHODS), label="CAM baselines (raw branch, layer4)")
            run = gr.Button("Inspect", variant="primary", elem_id="inspect-run")
        with gr.Column(scale=2):
            status = gr.Markdown(ready, label="Status", elem_id="inspect-status")
            with gr.Row():
                boxes = gr.AnnotatedImage(label="Prediction and foreground box", elem_id="inspect-boxes", height=320,
                                          color_map=dict(view.BOX_COLOURS), format="jpeg")
                label = gr.Label(num_top_classes=5, label="Combined prediction")
            with gr.Row():
                pic = dict(type="numpy", format="jpeg", height=240)  # JPEG: a tenth of PNG's bytes and time
                loc = gr.Image(label="FLRDF localization map (its layer: status line)", elem_id="inspect-loc", **pic)
                plain = gr.Image(label="Plain map: channel mean, no suppression", elem_id="inspect-plain", **pic)
                crop = gr.Image(label="Cropped, enlarged foreground", elem_id="inspect-crop", **pic)
                jigsaw = gr.Image(label="Shuffled patches (jigsaw branch)", elem_id="inspect-jigsaw", **pic)
            top5 = gr.Dataframe(label="Top-5 per branch", elem_id="inspect-top5", interactive=False, wrap=True)
            gallery = gr.Gallery(label="FLRDF vs CAM baselines (red: box at tau, green: ground truth, "
                                       "white: FLRDF's map box when refined)",
                                 elem_id="inspect-gallery", columns=4, height="auto", object_fit="contain",
                                 format="jpeg")
            with gr.Row():
                cam_df = gr.Dataframe(label="Boxes and IoU", elem_id="inspect-cam-table", interactive=False)
                timing = gr.Dataframe(label="Timing per stage (ms, server-side)", elem_id="inspect-timing",
                                      interactive=False)

    recent: OrderedDict[tuple, tuple] = OrderedDict()  # unchanged inputs -> the same outputs, not recomputed
    recent_lock = threading.Lock()

    def on_inspect(image, checkpoint, tau, n, target, cam_methods, seed):
        path = _image_path(image)
        try:
            loaded = ctx.load(checkpoint)
            key = (_digest(path), ctx.models.key(loaded.path), str(tau), str(n), str(target),
                   tuple(_methods(cam_methods)), str(seed))
        except CheckpointError as exc:
            raise _error(str(exc), title="Cannot use this checkpoint") from None
        with recent_lock:
            hit = recent.get(key)
            if hit is not None:
                recent.move_to_end(key)
                return hit
        out = _compute(path, loaded, tau, n, target, cam_methods, seed)
        with recent_lock:
            recent[key] = out
            while len(recent) > CACHED_RESULTS:
                recent.popitem(last=False)
        return out

    def _compute(path, loaded, tau, n, target, cam_methods, seed):
        try:
            example = ctx.example_for(path)
            result = inspect_image(
                loaded, path, tau=_number(tau, "tau"), jigsaw_n=_number(n, "n", int),
                target=_target(target, loaded.class_names), cam_methods=_methods(cam_methods),
                gt_box=example.box if example else None, seed=_number(seed, "seed", int) or 0)
        except gr.Error:
            raise
        except CheckpointError as exc:
            raise _error(str(exc), title="Cannot use this checkpoint") from None
        except ValueError as exc:  # ImageLoadError, InspectError, bad settings
            raise _error(_short(exc, path), title="Cannot inspect this image") from None
        except Exception as exc:  # keep serving; say what happened
            log.exception("inspect failed")
            raise _error(f"Unexpected {type(exc).__name__}: {exc}", title="Inspect failed") from None
        return (
            view.status_text(result, str(loaded.path)),
            view.annotated_preview(result),
            view.combined_label(result),
            view.enlarge(result.loc_overlay),
            view.enlarge(result.plain_overlay),
            view.enlarge(result.object_image),
            view.enlarge(result.jigsaw_image),
            view.top5_table(result),
            view.cam_gallery(result),
            view.cam_table(result),
            view.timing_table(result),
        )

    def on_checkpoint(ckpt):
        try:
            loaded = ctx.load(ckpt)
        except (CheckpointError, OSError) as exc:
            return f"**Cannot load:** {exc}", gr.Slider(), gr.Dropdown(), gr.Dropdown()
        m = loaded.config.model
        return (model_summary(loaded), gr.Slider(value=m.tau),
                gr.Dropdown(choices=grid_choices(loaded), value=m.jigsaw_n),
                gr.Dropdown(choices=target_choices(loaded), value=PREDICTED))

    run.click(on_inspect, inputs=[image, checkpoint, tau, grid, target, cams, seed],
              outputs=[status, boxes, label, loc, plain, crop, jigsaw, top5, gallery, cam_df, timing],
              api_name="inspect", api_visibility="public", preprocess=False, concurrency_limit=CONCURRENCY,
              api_description="Inspect one image: FLRDF box, maps, crop, jigsaw, per-branch top-5, CAM baselines.")
    checkpoint.change(on_checkpoint, inputs=[checkpoint], outputs=[status, tau, grid, target],
                      api_visibility="private")
    refresh.click(lambda: gr.Dropdown(choices=ctx.checkpoint_choices()), outputs=[checkpoint],
                  api_visibility="private")
    return {"image": image, "checkpoint": checkpoint, "tau": tau, "grid": grid, "seed": seed, "target": target,
            "cams": cams, "run": run, "status": status, "boxes": boxes, "label": label, "loc": loc, "plain": plain,
            "crop": crop, "jigsaw": jigsaw, "top5": top5, "gallery": gallery, "cam_table": cam_df, "timing": timing}


def _short(exc: Exception, path: str) -> str:
    """The error without the server's temporary upload path."""
    return str(exc).replace(path, Path(path).name)
