"""Issue 14 in a real browser (headless Debian Chromium via Playwright), on a fresh clone's state: a temporary
runs folder and a data folder that does not exist yet, the bundled demo model as the default model.

- Launch with the form's defaults: the demo data is created, the job starts from the bundled model's backbone,
  reaches ``running`` and shows loss points, with no error text anywhere.
- Evaluate: the one-click evaluation of the default model on its test split.
- Data: the browser shows images with their boxes; a click sends one to Inspect.

Screenshots go next to the test's temp folder; with FLRDF_SCREENSHOTS=DIR also (small) into DIR (the README's
come from ``python scripts/take_screenshots.py``, which drives the dashboard the same way at 1280 px).
No duration is asserted: the waits only keep a broken run from hanging the suite (tests/waits.py)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from test_browser import CHROMIUM, open_page

from conftest import _free_port
from waits import see

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "assets" / "demo_model.safetensors"
ERROR_TEXT = re.compile(r"Traceback|DatasetError|failed:|\berror\b", re.I)


@pytest.fixture(scope="module")
def fresh(tmp_path_factory, examples_dir):
    """(url, runs_dir, data_dir): the dashboard as on a fresh clone - no runs, no data folder, the bundled model."""
    if not DEMO_MODEL.is_file():
        pytest.skip("the bundled demo model is missing")
    from dashboard.app import build_app, launch
    from dashboard.context import DashboardContext

    base = tmp_path_factory.mktemp("fresh")
    runs_dir, data_dir = base / "runs", base / "data"
    ctx = DashboardContext.create(None, runs_dir, "cpu", data_dir=data_dir)
    app = build_app(ctx=ctx)
    _, url, _ = launch(app, host="127.0.0.1", port=_free_port(), prevent_thread_lock=True, quiet=True)
    yield url, runs_dir, data_dir
    app.close()
    import signal

    from dashboard import jobs

    # every job this module started - training runs and the evaluation - so none outlives it and slows the
    # tests after it
    for job_file in runs_dir.rglob(jobs.JOB_FILE):
        try:
            jobs.signal_job(job_file.parent, signal.SIGTERM, jobs.JOB_COMMANDS)
        except jobs.JobError:
            pass


@pytest.fixture(scope="module")
def page(fresh):
    yield from open_page(fresh[0], 1400, 1000)


def shoot(page, name: str, tmp_path_factory, locator=None) -> None:
    """A screenshot into the test's temp folder and, with FLRDF_SCREENSHOTS, a small PNG copy there."""
    path = tmp_path_factory.getbasetemp() / f"{name}.png"
    (locator or page).screenshot(path=str(path))
    folder = os.environ.get("FLRDF_SCREENSHOTS")
    if folder:
        from PIL import Image

        Path(folder).mkdir(parents=True, exist_ok=True)
        img = Image.open(path).convert("RGB")
        img.thumbnail((1000, 1000))
        img.quantize(colors=128).save(Path(folder) / f"{name}.png", optimize=True)


def _no_error_toast(page) -> None:
    toasts = page.locator(".toast-body")
    assert not any(ERROR_TEXT.search(toasts.nth(i).inner_text()) for i in range(toasts.count()))


def test_default_launch_on_a_fresh_clone(page, fresh, tmp_path_factory):
    _, runs_dir, data_dir = fresh
    assert not data_dir.exists()
    page.get_by_role("tab", name="Train").click()
    notes = page.locator("#train-notes")
    see(notes.get_by_text("Launch first creates the synthetic demo set"), show="#train-notes")
    page.locator("#train-launch").click()
    msg = page.locator("#train-launch-msg")
    see(msg.filter(has_text="Launched"), 600, show="#train-launch-msg")  # after creating 1,900 images
    text = msg.inner_text()
    assert "Created the synthetic demo set v2" in text, text
    # a fresh clone has no data/demo-backbone.pth: the job starts from the bundled model's own backbone
    fresh_clone = not (ROOT / "data" / "demo-backbone.pth").is_file()
    assert ("bundled demo model's own" in text) == fresh_clone, text
    assert (data_dir / "demo" / "CUB_200_2011" / "flrdf_synthetic.json").is_file()
    status = page.locator("#train-status")
    see(status.filter(has_text=re.compile(r"state: running")), 180, show=("#train-status", "#train-launch-msg"))
    see(status.filter(has_text=re.compile(r"loss points: [1-9]")), 300, show="#train-status")
    see(page.locator("#train-loss-plot img").first, show="#train-status")
    run = re.search(r"Launched (\S+)", text).group(1)
    table = page.locator("#train-runs").inner_text()
    assert run in table and "failed" not in table
    for elem in ("#train-status", "#train-log", "#train-launch-msg"):
        shown = page.locator(elem).first.inner_text() if elem != "#train-log" else \
            page.locator("#train-log textarea").input_value()
        assert not re.search(r"Traceback|DatasetError|error:", shown), (elem, shown)
    _no_error_toast(page)
    log = (runs_dir / run / "log.txt").read_text()
    assert "Traceback" not in log
    assert ("demo-model-backbone.pth" in (runs_dir / run / "config.yaml").read_text()) == fresh_clone
    shoot(page, "first_train", tmp_path_factory)
    page.locator("#train-stop").click()
    see(status.filter(has_text=re.compile(r"state: stopped")), 180, show="#train-status")


def test_evaluate_the_demo_model_with_one_click(page, fresh, tmp_path_factory):
    page.get_by_role("tab", name="Evaluate").click()
    # the form's image count applies to the one-click evaluation too: a subset keeps the test short
    limit = page.locator("#eval-limit input")
    limit.fill("16")
    limit.press("Tab")
    page.locator("#eval-demo").click()
    message = page.locator("#eval-message")
    shown = ("#eval-message", "#eval-progress")
    see(message.filter(has_text="Evaluating in the background"), 600, show=shown)
    assert "Test split: synthetic set v" in message.inner_text()
    see(page.locator("#eval-progress", has_text="state:"), 120, show=shown)
    see(page.locator("#eval-table").get_by_text(re.compile(r"^FLRDF \(")).filter(visible=True).first, 900, show=shown)
    see(page.locator("#eval-progress", has_text="finished"), show=shown)
    assert page.locator("#eval-gallery img").count() >= 1
    _no_error_toast(page)
    shoot(page, "first_evaluate", tmp_path_factory)


def test_dataset_browser_shows_boxes_and_sends_to_inspect(page, fresh, tmp_path_factory):
    _, _, data_dir = fresh
    if not (data_dir / "demo").exists():  # run alone: the launch test did not make it
        from dashboard import firstrun

        firstrun.ensure_demo_data(data_dir / "demo")
    page.get_by_role("tab", name="Data").click()
    page.locator("#browse-show").click()
    see(page.locator("#browse-info").get_by_text("No problems found"), 120, show="#browse-info")
    assert re.search(r"\|\s*test\s*\|\s*400\s*\|\s*400\s*\|", page.locator("#browse-info").inner_text()) or \
        "400" in page.locator("#browse-info").inner_text()
    gallery = page.locator("#browse-gallery")
    see(gallery.locator("img").first, show=("#browse-info", "#browse-page-text"))
    assert gallery.locator("img").count() >= 2
    see(page.locator("#browse-page-text", has_text="of 400 images in test"), show="#browse-page-text")
    # the model's boxes and classes, then only its mistakes
    model = page.locator("#browse-model input").first
    model.fill(str(DEMO_MODEL))
    model.press("Enter")
    see(page.locator("#browse-page-text", has_text="the model gets"), 600, show=("#browse-page-text", "#browse-info"))
    page.locator("#browse-wrong input").first.click()
    see(page.locator("#browse-page-text", has_text=re.compile(r"- (?!400 )\d+ of 400 images")), 300,
        show="#browse-page-text")
    captions = gallery.locator(".caption-label, figcaption")
    if captions.count():
        assert all("✗" in captions.nth(i).inner_text() for i in range(captions.count()))
    shoot(page, "first_data", tmp_path_factory)
    gallery.locator("img").first.click()
    see(page.locator("#browse-sent", has_text="Sent"), 60, show="#browse-sent")
    see(page.locator("#inspect-image img").first, 60, show="#inspect-status")
    # sent from the Data tab, the image is inspected there with no further click
    see(page.locator("#inspect-status", has_text="IoU with ground truth"), 120, show="#inspect-status")
    _no_error_toast(page)
    shoot(page, "first_inspect", tmp_path_factory)
