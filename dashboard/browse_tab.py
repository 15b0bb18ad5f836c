"""The Data tab: browse a dataset as the readers see it, before training on it.

Pick a dataset (demo, cub, aircraft, cars, folder), its root and split; the tab shows
``data-info``'s counts and the problems it finds (missing files, images without a box,
classes absent from a split), then pages of images with their ground-truth boxes (green),
filtered by class. With a checkpoint or run selected, each image also gets the model's
predicted box (red) and class, and the page can be filtered to wrong predictions. Clicking
an image sends it to the Inspect tab (with its ground-truth box, so Inspect reports IoU).

Every root, split and checkpoint a client names goes through ``ctx.roots``
(``dashboard.paths``): datasets are read only under the data folder, the runs directory or
an ``--allow-dir`` directory. Public API endpoint: ``/browse`` (the page's inputs) -> gallery,
summary, page text.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import gradio as gr

from dashboard import browse
from dashboard.context import DashboardContext, Example
from dashboard.paths import PathError, check_slug, private_dir
from flrdf.data.errors import DatasetError
from flrdf.engine.checkpoint import CheckpointError

ALL = "(all classes)"
NO_MODEL = ""
PER_PAGE = 24


def _error(message: str) -> gr.Error:
    return gr.Error(message, title="Data", duration=None, print_exception=False)


def _norm(name: str) -> str:
    return str(name).replace("_", " ").strip().lower()


def send_file(ctx: DashboardContext, src: Path, label: int | None, class_name: str | None, box=None,
              crop_bottom: int = 0) -> str:
    """A copy of a dataset image in this process's private folder, remembered (label, GT box in the image's own
    pixels) for the Inspect tab; returns the copy's path, for Inspect's image input. Data and Analyze send
    their clicked images through it."""
    send_dir = private_dir("browse")  # this process's own temporary folder: nothing planted there
    if crop_bottom:
        from flrdf.data.images import load_image

        image = load_image(src, crop_bottom=int(crop_bottom))
        tmp = send_dir / f".tmp-{hashlib.sha1(str(src).encode()).hexdigest()}.png"
        image.save(tmp)
    else:
        tmp = send_dir / f".tmp-{hashlib.sha1(str(src).encode()).hexdigest()}{src.suffix.lower()}"
        shutil.copyfile(src, tmp)
    from dashboard.context import file_sha1

    digest = file_sha1(tmp)
    dest = send_dir / f"{digest}{tmp.suffix}"
    tmp.replace(dest)
    ctx.browsed[digest] = Example(dest, label, class_name, box, digest)
    return str(dest)


def build_browse_tab(ctx: DashboardContext):
    roots = ctx.roots
    default_root = ctx.data_dir / "demo"
    shown_root = "data/demo" if default_root == (Path.cwd() / "data" / "demo").absolute() else str(default_root)

    gr.Markdown("### Dataset browser\nWhat the readers see in a download: counts and problems (as "
                "`python -m flrdf data-info` reports them), images with their ground-truth boxes (green) and, with "
                "a model selected, its box (red) and class. Click an image to open it in Inspect.")
    with gr.Row():
        dataset = gr.Dropdown(list(browse.DATASETS), value="demo", label="dataset", elem_id="browse-dataset", scale=1)
        root = gr.Textbox(shown_root, label="root (under data/, runs/ or an --allow-dir folder)",
                          elem_id="browse-root", scale=3)
        split = gr.Dropdown(["test", "train"], value="test", allow_custom_value=True, label="split",
                            elem_id="browse-split", scale=1)
        show_btn = gr.Button("Show", variant="primary", elem_id="browse-show", scale=0, min_width=90)
    info = gr.Markdown(elem_id="browse-info")
    with gr.Row():
        klass = gr.Dropdown([ALL], value=ALL, label="class", elem_id="browse-class", scale=2)
        model = gr.Dropdown([NO_MODEL, *ctx.checkpoint_choices()], value=NO_MODEL, allow_custom_value=True,
                            label="overlay predictions of (checkpoint or run; empty = none)", elem_id="browse-model",
                            scale=3)
        wrong = gr.Checkbox(False, label="wrong predictions only", elem_id="browse-wrong", scale=1)
    with gr.Row():
        prev_btn = gr.Button("◀ previous", size="sm", elem_id="browse-prev")
        page = gr.Number(1, precision=0, label="page", elem_id="browse-page", minimum=1)
        next_btn = gr.Button("next ▶", size="sm", elem_id="browse-next")
        page_text = gr.Markdown(elem_id="browse-page-text")
    gallery = gr.Gallery(label="images (green: ground truth, red: the model's box and class)", columns=6,
                         height="auto", object_fit="contain", format="jpeg", elem_id="browse-gallery",
                         allow_preview=False)
    sent = gr.Markdown(elem_id="browse-sent")
    shown = gr.State([])

    def _split_data(dataset_name, root_text, split_name):
        if dataset_name not in browse.DATASETS:
            raise _error(f"dataset must be one of {', '.join(browse.DATASETS)}")
        try:
            split_name = check_slug(str(split_name or "test").strip(), "split")
            folder = roots.dataset_root(root_text)
        except PathError as exc:
            raise _error(str(exc)) from None
        try:
            data = browse.load_split(dataset_name, folder, split_name)
        except DatasetError as exc:
            raise _error(f"{dataset_name} at {Path(str(root_text)).name}: {exc}".replace(str(folder), folder.name)) \
                from None
        return folder, split_name, data

    def show(dataset_name, root_text, split_name, class_name, page_no, model_path, wrong_only,
             progress=gr.Progress()):
        """Summary, page of images (GT and predicted boxes), page text; the class list and the shown records."""
        folder, split_name, data = _split_data(dataset_name, root_text, split_name)
        summary, problems = browse.dataset_info(dataset_name, folder)
        notes = []
        preds = None
        model_names = None
        if str(model_path or "").strip():
            try:
                loaded = ctx.load(model_path)
            except CheckpointError as exc:
                raise _error(f"Cannot use this checkpoint: {exc}") from None
            model_names = loaded.class_names
            if [_norm(n) for n in model_names] != [_norm(n) for n in data.class_names]:
                notes.append(f"the model's {len(model_names)} classes are not this split's {data.num_classes}: "
                             "its predictions are compared by class index")
            ckpt_key = ctx.models.key(loaded.path)
            data_key = (dataset_name, str(folder), split_name, browse._mtime(folder))
            preds = browse.cached_predictions(ckpt_key, data_key)
            if preds is None:
                progress(0, desc="predicting the split")
                preds = browse.predict_split(
                    loaded, data, ckpt_key, data_key,
                    progress=lambda n, t: progress((n, t), desc="predicting the split", unit="images"))
        label = None
        if class_name and class_name != ALL:
            names = [_norm(n) for n in data.class_names]
            label = names.index(_norm(class_name)) if _norm(class_name) in names else None
        idx = browse.select(data.records, label, bool(wrong_only), preds)
        pages = max(1, -(-len(idx) // PER_PAGE))
        p = min(max(1, int(page_no or 1)), pages)
        page_idx = idx[(p - 1) * PER_PAGE:p * PER_PAGE]
        items, records = [], []
        for i in page_idx:
            r = data.records[i]
            pred = preds[i] if preds is not None else None
            items.append((browse.thumbnail(r, data.crop_bottom, pred, model_names),
                          browse.caption(r, pred, model_names)))
            records.append({"path": r.path, "label": r.label, "class_name": r.class_name,
                            "box": list(r.box) if r.box is not None else None, "crop_bottom": data.crop_bottom})
        what = f"{len(idx)} of {len(data.records)} images in {split_name}"
        if preds is not None:
            wrong_n = sum(1 for i, r in enumerate(data.records) if preds[i].label != r.label)
            what += f"; the model gets {len(data.records) - wrong_n} right, {wrong_n} wrong " \
                    f"(top-1 {100 * (1 - wrong_n / max(1, len(data.records))):.1f} %)"
        text = f"page {p} of {pages} - {what}" + "".join(f"\n\n_{n}_" for n in notes)
        choices = [ALL, *data.class_names]
        return (items, browse.info_markdown(summary, problems), text, p,
                gr.Dropdown(choices=choices, value=class_name if class_name in choices else ALL), records)

    inputs = [dataset, root, split, klass, page, model, wrong]
    outputs = [gallery, info, page_text, page, klass, shown]

    def browse_api(dataset_name, root_text, split_name, class_name, page_no, model_path, wrong_only,
                   progress=gr.Progress()):
        """The page of images, the data-info summary and the page text (API)."""
        items, md, text, _, _, _ = show(dataset_name, root_text, split_name, class_name, page_no, model_path,
                                        wrong_only, progress)
        return items, md, text

    show_btn.click(browse_api, inputs, [gallery, info, page_text], api_name="browse", concurrency_limit=2).then(
        show, inputs, outputs, api_visibility="private", show_progress="hidden")
    gr.on([klass.input, wrong.input, model.input, split.input, dataset.input], lambda: 1, None, page,
          api_visibility="private").then(show, inputs, outputs, api_visibility="private", concurrency_limit=2)
    page.submit(show, inputs, outputs, api_visibility="private", concurrency_limit=2)
    prev_btn.click(lambda p: max(1, int(p or 1) - 1), page, page, api_visibility="private").then(
        show, inputs, outputs, api_visibility="private", concurrency_limit=2)
    next_btn.click(lambda p: int(p or 1) + 1, page, page, api_visibility="private").then(
        show, inputs, outputs, api_visibility="private", concurrency_limit=2)

    def send(records, evt: gr.SelectData):
        """A copy of the clicked image (its GT box remembered for Inspect), for the Inspect tab's image input."""
        i = evt.index if isinstance(evt.index, int) else -1
        if not records or not 0 <= i < len(records):
            raise _error("Pick an image on the current page.")
        rec = records[i]
        src = Path(rec["path"])
        dest = send_file(ctx, src, rec["label"], rec["class_name"], rec["box"], int(rec.get("crop_bottom") or 0))
        return dest, f"Sent **{src.name}** ({rec['class_name']}) to Inspect."

    def link(built: dict, tabs) -> None:
        """Wire the click to the Inspect tab (called once every tab exists)."""
        inspect = built.get("Inspect") or {}
        image = inspect.get("image")
        if image is None:
            return
        opened = gallery.select(send, shown, [image, sent], api_visibility="private").then(
            lambda: gr.Tabs(selected="inspect"), None, tabs, api_visibility="private")
        if callable(inspect.get("inspect_after")):  # and inspect it there, as a click on an example does
            inspect["inspect_after"](opened)

    return {"gallery": gallery, "info": info, "link": link}
