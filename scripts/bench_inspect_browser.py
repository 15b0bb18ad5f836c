"""Inspect in a real browser, end to end: page load and click -> every result painted, as JSON.

Starts ``python app.py`` (the bundled demo model) and drives headless Debian Chromium
(Playwright, ``/usr/bin/chromium``). For each round it loads the page (until the Inspect
button and the example thumbnails are shown), then, per example image, clicks the example,
waits for the upload, and times the Inspect click until the status line is new and every
output image (boxes, maps, crop, patches, CAM gallery) is decoded (``img.complete``,
``naturalWidth > 0``); then it goes through the same examples again ("same_input":
inputs the server has seen). "Painted" also needs every output's progress indicator gone
(while pending, Gradio keeps the previous result on the page under its progress text). An image the browser defers on purpose (``loading=lazy``,
below the fold: the lower CAM gallery of a long page) counts once its source is set. On a page where a click on an example inspects it, the
time runs from that click (upload included); elsewhere from the Inspect click. Where the time
goes: the server-side compute the status line reports, the bytes and count of the files
the page fetched for the results (Resource Timing), and the rest (encoding, caching,
transport, rendering).

``--before REV`` also serves the dashboard of git revision REV (a temporary worktree) and
alternates rounds between the two servers, so both are measured in one run on the same load.

    python scripts/bench_inspect_browser.py [--rounds 3] [--examples 4] [--threads 1] [--before REV]
        [--cams gradcam,...] [--out docs/results/bench_inspect_browser.json] [--note TEXT]

Writes the JSON to ``--out``; no test asserts these figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from benchlib import report_json  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
OUTPUTS = ["#inspect-boxes", "#inspect-loc", "#inspect-plain", "#inspect-crop", "#inspect-jigsaw", "#inspect-gallery",
           "#inspect-maps", "#inspect-before", "#inspect-after", "#inspect-removed", "#inspect-channels"]
PAINTED = """([outputs, before, minGallery]) => {
  const st = document.querySelector('#inspect-status');
  if (!st || st.innerText === before || !st.innerText.includes('Prediction:')) return false;
  // still pending: Gradio's progress text ("processing | 0.2/0.6s") over the previous result, which is complete
  if (st.innerText.startsWith('processing') || document.querySelector('.eta-bar, .progress-text')) return false;
  const imgs = outputs.flatMap(s => Array.from(document.querySelectorAll(s + ' img')));
  if (imgs.length === 0) return false;
  const g = document.querySelectorAll('#inspect-gallery img').length;
  if (g < minGallery) return false;
  const deferred = i => i.loading === 'lazy' && i.src && i.getBoundingClientRect().top > window.innerHeight;
  return imgs.every(i => (i.complete && i.naturalWidth > 0) || deferred(i));
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(tree: Path, threads: int, runs: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=str(threads), GRADIO_ANALYTICS_ENABLED="False")
    proc = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--runs-dir", str(runs),
                             "--threads", str(threads)], cwd=tree, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/"
    end = time.monotonic() + 300
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py in {tree} exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("app.py did not start within 300 s")


def load_page(browser, url: str) -> tuple[object, float]:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(120_000)
    t0 = time.perf_counter()
    page.goto(url)
    page.locator("#inspect-run").wait_for(state="visible")
    page.wait_for_function("() => { const i = Array.from(document.querySelectorAll('.gallery img, table img'));"
                           " return i.length === 0 || i.every(x => x.complete); }")
    return page, time.perf_counter() - t0


def inspect_once(page, min_gallery: int, example: int | None = None) -> dict:
    """One inspection timed from the click that starts it: a click on example ``example`` (pages where that
    inspects it), else a click on Inspect (after the example was loaded by :func:`pick_example`)."""
    before = page.locator("#inspect-status").inner_text()
    page.evaluate("() => performance.clearResourceTimings()")
    t0 = time.perf_counter()
    if example is not None:
        page.locator(EXAMPLE_CELLS).nth(example).click()
    else:
        page.locator("#inspect-run").click()
    page.wait_for_function(PAINTED, arg=[OUTPUTS, before, min_gallery], polling="raf", timeout=120_000)
    dt = time.perf_counter() - t0
    res = page.evaluate("() => performance.getEntriesByType('resource').filter(e => e.name.includes('/file='))"
                        ".map(e => [e.transferSize || e.encodedBodySize || 0, e.duration])")
    status = page.locator("#inspect-status").inner_text()
    m = re.search(r"(\d+) ms server-side", status)
    return {"s": round(dt, 4), "server_ms": int(m.group(1)) if m else None, "files": len(res),
            "file_bytes": int(sum(r[0] for r in res))}


EXAMPLE_CELLS = ".gallery-item, button.gallery-item, tbody tr"


def pick_example(page, i: int) -> None:
    cells = page.locator(EXAMPLE_CELLS)
    cells.nth(i).click()
    page.locator("#inspect-image img").first.wait_for(state="visible")
    time.sleep(0.3)  # the image component settles (its upload to the server) before Inspect


def round_for(browser, url: str, examples: int, cams: list[str] | None) -> dict:
    page, load_s = load_page(browser, url)
    if cams is not None:
        boxes = page.locator("input[type=checkbox]")
        for k in range(boxes.count()):
            box = boxes.nth(k)
            label = box.evaluate("e => e.closest('label') ? e.closest('label').innerText : ''")
            if "CAM" in label or "Score" in label or "Eigen" in label:
                want = any(c.lower() in label.lower().replace("-", "").replace(" ", "") for c in cams)
                if box.is_checked() != want:
                    box.click()
    n_gallery = 1 + (len(cams) if cams is not None else 5)
    one_click = page.locator("#inspect-examples").count() > 0  # a click on an example inspects it
    out = {"page_load_s": round(load_s, 3), "example_click_inspects": one_click, "new_input": [], "same_input": []}
    for key in ("new_input", "same_input"):  # the same inputs again (each differs from the one before)
        for i in range(examples):
            if one_click:
                out[key].append(inspect_once(page, min(n_gallery, 2), example=i))
            else:
                pick_example(page, i)
                out[key].append(inspect_once(page, min(n_gallery, 2)))
    page.close()
    return out


def summarise(rounds: list[dict]) -> dict:
    def med(key, field):
        vals = [x[field] for r in rounds for x in r[key] if x.get(field) is not None]
        return round(statistics.median(vals), 4) if vals else None

    loads = [r["page_load_s"] for r in rounds]
    return {"page_load_s_median": round(statistics.median(loads), 3), "page_load_s": loads,
            **{f"{k}_s_median": med(k, "s") for k in ("new_input", "same_input")},
            **{f"{k}_server_ms_median": med(k, "server_ms") for k in ("new_input", "same_input")},
            "result_files_median": med("new_input", "files"), "result_bytes_median": med("new_input", "file_bytes"),
            "rounds": rounds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--examples", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--before", help="git revision to measure beside the working tree (one run, alternating)")
    p.add_argument("--cams", default=None, help="comma-separated CAM methods (default: the page's defaults)")
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "bench_inspect_browser.json"))
    p.add_argument("--note", default="")
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    cams = None if args.cams is None else [c for c in args.cams.split(",") if c]
    trees = {"now": ROOT}
    tmp = Path(tempfile.mkdtemp(prefix="bench-inspect-"))
    if args.before:
        rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.before], check=True,
                             capture_output=True, text=True).stdout.strip()
        trees = {f"before ({rev})": tmp / "before", "now": ROOT}
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tmp / "before"), rev], check=True,
                       capture_output=True)
    servers = {}
    try:
        for name, tree in trees.items():
            servers[name] = serve(tree, args.threads, tmp / f"runs-{len(servers)}")
        results = {name: [] for name in trees}
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            for _ in range(args.rounds):
                for name in trees:  # alternate: both servers see the same machine load
                    results[name].append(round_for(browser, servers[name][1], args.examples, cams))
            browser.close()
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)
        if args.before:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "before")],
                           capture_output=True)
    report = {"what": "Inspect in headless Chromium: page load; click -> every result image decoded",
              "command": "python scripts/bench_inspect_browser.py " + " ".join(argv or sys.argv[1:]),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "loadavg_at_end": os.getloadavg()},
              "threads": args.threads, "note": args.note,
              "servers": {name: summarise(r) for name, r in results.items()}}
    if args.before:
        b, n = report["servers"][next(iter(trees))], report["servers"]["now"]
        report["ratio_now_over_before"] = {k: round(n[k] / b[k], 3) for k in
                                           ("page_load_s_median", "new_input_s_median", "same_input_s_median")
                                           if b.get(k) and n.get(k)}
    report_json(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
