"""Retake the dashboard screenshots of the README and docs/dashboard.md, 1280 px wide, in one command.

    python scripts/take_screenshots.py          # -> docs/screenshots/first_{inspect,train,evaluate,data}.png
    python scripts/take_screenshots.py --out /tmp/shots --tabs inspect,data

It drives the dashboard the way tests/test_browser_firsthour.py does, on a fresh clone's state: the app is
served in this process on a free 127.0.0.1 port with the bundled demo model, a temporary runs folder and a
data folder that does not exist yet, and headless Debian Chromium (/usr/bin/chromium, via Playwright) opens
it at a 1280 x 1000 viewport.

- inspect:  a click on the first bundled example; the page's top 1400 px once every image is painted.
- train:    Launch with the form's defaults (this writes the synthetic set v2 into the data folder first,
            about a minute), a shot once the live view has a few loss points, then Stop.
- evaluate: the one-click evaluation of the demo model on its test split (--eval-limit images).
- data:     the dataset browser on the demo test split with the demo model's boxes, its mistakes only.

Each PNG is the browser's 1280-px-wide capture, reduced to a 256-colour palette (small files for the
repository; --full-colour keeps 24-bit). Needs the playwright Python package and Debian's chromium. All four
took 14 minutes on a 2-core CPU shared with other training jobs (2026-12-07), most of it writing the demo set,
the training job reaching its first loss points and the evaluation; --tabs inspect alone takes about a minute.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
TABS = ("inspect", "train", "evaluate", "data")
PAINTED = """ids => ids.every(id => {
  const imgs = Array.from(document.querySelectorAll('#' + id + ' img'));
  return imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth > 0);
})"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_text(page, selector: str, pattern: str | re.Pattern, timeout_s: float) -> None:
    """Wait until ``selector`` shows text matching ``pattern``; on timeout, fail with what it showed."""
    locator = page.locator(selector).filter(has_text=re.compile(pattern) if isinstance(pattern, str) else pattern)
    try:
        locator.first.wait_for(state="visible", timeout=timeout_s * 1000)
    except Exception:
        shown = page.locator(selector).first.inner_text() if page.locator(selector).count() else "(absent)"
        raise SystemExit(f"{selector} did not show {pattern!r} within {timeout_s:.0f} s; it shows:\n{shown}")


def save(page, out: Path, name: str, full_colour: bool, height: int | None = None) -> Path:
    """The viewport, or with ``height`` the page's top ``height`` px (beyond the viewport if need be)."""
    from PIL import Image

    raw = out / f".{name}.raw.png"
    if height:
        width = page.viewport_size["width"]
        page.screenshot(path=str(raw), full_page=True, clip={"x": 0, "y": 0, "width": width, "height": height})
    else:
        page.screenshot(path=str(raw))
    img = Image.open(raw).convert("RGB")
    path = out / f"{name}.png"
    (img if full_colour else img.quantize(colors=256)).save(path, optimize=True)
    raw.unlink()
    print(f"{path}  {img.width} x {img.height}", flush=True)
    return path


def shoot_inspect(page, args) -> None:
    page.get_by_role("tab", name="Inspect").click()
    page.locator("#inspect-examples button").first.click()
    wait_text(page, "#inspect-status", "IoU with ground truth", args.wait)
    page.locator("#inspect-gallery").scroll_into_view_if_needed()  # its images load lazily, once in view
    page.wait_for_function(PAINTED, arg=["inspect-before", "inspect-after", "inspect-removed", "inspect-loc",
                                         "inspect-crop", "inspect-jigsaw", "inspect-gallery"],
                       timeout=args.wait * 1000)
    page.evaluate("window.scrollTo(0, 0)")
    save(page, args.out, "first_inspect", args.full_colour, args.inspect_height)


def shoot_train(page, args) -> None:
    page.get_by_role("tab", name="Train").click()
    page.locator("#train-launch").click()
    wait_text(page, "#train-launch-msg", "Launched", args.wait + 600)  # after writing the demo set
    wait_text(page, "#train-status", r"loss points: ([3-9]|\d\d+)", args.wait + 600)
    page.locator("#train-loss-plot img").first.wait_for(state="visible", timeout=args.wait * 1000)
    time.sleep(2)  # the plot's next one-second refresh
    page.evaluate("window.scrollTo(0, 0)")
    save(page, args.out, "first_train", args.full_colour)
    page.locator("#train-stop").click()
    wait_text(page, "#train-status", "state: stopped", args.wait)


def shoot_evaluate(page, args) -> None:
    page.get_by_role("tab", name="Evaluate").click()
    limit = page.locator("#eval-limit input")
    limit.fill(str(args.eval_limit))
    limit.press("Tab")
    page.locator("#eval-demo").click()
    wait_text(page, "#eval-message", "Evaluating in the background", args.wait + 600)
    wait_text(page, "#eval-progress", "finished", args.wait + 900)
    page.locator("#eval-gallery img").first.wait_for(state="visible", timeout=args.wait * 1000)
    page.evaluate("window.scrollTo(0, 0)")
    save(page, args.out, "first_evaluate", args.full_colour)


def shoot_data(page, args, data_dir: Path, model: Path) -> None:
    if not (data_dir / "demo").exists():  # the train shot writes it; without that shot, write it here
        from dashboard import firstrun

        firstrun.ensure_demo_data(data_dir / "demo")
    page.get_by_role("tab", name="Data").click()
    page.locator("#browse-show").click()
    wait_text(page, "#browse-info", "No problems found", args.wait)
    box = page.locator("#browse-model input").first
    box.fill(str(model))
    box.press("Enter")
    wait_text(page, "#browse-page-text", "the model gets", args.wait + 600)
    page.locator("#browse-wrong input").first.click()
    wait_text(page, "#browse-page-text", r"- (?!400 )\d+ of 400 images", args.wait)
    page.locator("#browse-gallery img").first.wait_for(state="visible", timeout=args.wait * 1000)
    time.sleep(1)
    page.evaluate("window.scrollTo(0, 0)")
    save(page, args.out, "first_data", args.full_colour)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots", help="folder for the PNGs")
    p.add_argument("--tabs", default=",".join(TABS), help=f"comma-separated, from {','.join(TABS)}")
    p.add_argument("--width", type=int, default=1280, help="viewport width in px (default 1280)")
    p.add_argument("--height", type=int, default=1000, help="viewport height in px (default 1000)")
    p.add_argument("--inspect-height", type=int, default=1400,
                   help="px of the Inspect page's top to keep (default 1400: the prediction, the suppression "
                        "controller, the box source and crop; 0: the whole page)")
    p.add_argument("--eval-limit", type=int, default=16, help="images of the one-click evaluation (default 16)")
    p.add_argument("--wait", type=float, default=180, help="seconds any one step may take before giving up")
    p.add_argument("--full-colour", action="store_true", help="keep 24-bit colour instead of a 256-colour palette")
    p.add_argument("--device", default="cpu", help="the dashboard's device (default cpu)")
    args = p.parse_args(argv)
    tabs = [t.strip() for t in args.tabs.split(",") if t.strip()]
    unknown = set(tabs) - set(TABS)
    if unknown:
        p.error(f"unknown tabs {sorted(unknown)}; known: {', '.join(TABS)}")
    if not CHROMIUM.exists():
        p.error(f"needs Debian's chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    from dashboard import jobs
    from dashboard.app import build_app, launch
    from dashboard.context import DEMO_MODEL, DashboardContext

    args.out.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="flrdf-shots-"))
    runs_dir, data_dir = base / "runs", base / "data"  # a fresh clone: no runs, no data folder yet
    os.chdir(ROOT)  # the page shows the model as the README names it: assets/demo_model.safetensors
    ctx = DashboardContext.create(DEMO_MODEL.relative_to(ROOT), runs_dir, args.device, data_dir=data_dir)
    app = build_app(ctx=ctx)
    _, url, _ = launch(app, host="127.0.0.1", port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
            try:
                page = browser.new_page(viewport={"width": args.width, "height": args.height})
                page.set_default_timeout(args.wait * 1000)
                page.goto(url)
                for tab in TABS:  # always in this order: train writes the data the data shot browses
                    if tab not in tabs:
                        continue
                    if tab == "data":
                        shoot_data(page, args, data_dir, DEMO_MODEL.relative_to(ROOT))
                    else:
                        globals()[f"shoot_{tab}"](page, args)
            finally:
                browser.close()
    finally:
        app.close()
        for job_file in runs_dir.rglob(jobs.JOB_FILE):  # no job outlives the script
            try:
                jobs.signal_job(job_file.parent, signal.SIGTERM, jobs.JOB_COMMANDS)
            except jobs.JobError:
                pass
        time.sleep(1)
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
