"""Live-curve latency of the Train tab: a metrics line written -> the page showing it, as JSON.

The figure tests/test_browser_train.py used to assert (and must not: a test asserts behaviour,
a benchmark reports the number). Setup, all on this machine:

- ``python app.py`` in its own process on a loopback port, over a temporary runs folder,
  with a random-init tiny model file;
- headless Debian Chromium (``/usr/bin/chromium``) driven by Playwright opens the Train tab,
  fills the form and launches the tiny synthetic job (ResNet-18, 64 px, batch 8, one metrics
  line per step, one compute thread, in-process data loading), as a user would;
- a MutationObserver in the page notes, on the next animation frame (just before the browser
  paints), each new ``loss points: N`` in the status text; ``metrics.jsonl`` gives the time each
  line was written (its ``time`` field, same clock).

Latency of a line = first paint showing it (or a later line) - the time it was written. The page
refreshes from the run files on a 1 s timer, so about 0.5-1.5 s is the design; more means the
server or the machine is behind. One JSON object is printed and written to ``--out``.

    python scripts/bench_live_curves.py [--lines 30] [--out docs/results/bench_live_curves_cpu.json]
                                        [--note "what else ran on the machine"]
"""

from __future__ import annotations

import argparse
import json
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
sys.path.insert(0, str(ROOT))

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
FORM = {"optim-epochs": 200, "data-image-size": 64, "data-resize": 72, "optim-batch-size": 8,
        "runtime-log-every": 1, "runtime-eval-every": 0, "data-num-workers": 0, "threads": 1, "name": "bench",
        "extra": "optim.warmup_steps=0"}
OBSERVER = """() => {
  window.__painted = [];
  let last = -1;
  const el = document.querySelector('#train-status');
  const note = () => {
    const m = /loss points: (\\d+)/.exec(el.innerText);
    const n = m ? parseInt(m[1]) : 0;
    if (n !== last) { last = n; requestAnimationFrame(() => window.__painted.push([n, Date.now() / 1000])); }
  };
  new MutationObserver(note).observe(el, {subtree: true, childList: true, characterData: true});
  note();
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_model(path: Path) -> Path:
    """A random-init FLRDF model file (ResNet-18, 64 px, 4 classes): the app needs one for Inspect."""
    import torch

    from flrdf.config import Config
    from flrdf.data.synthetic import class_specs
    from flrdf.engine.checkpoint import save_model_file
    from flrdf.model import FLRDF

    torch.manual_seed(0)
    cfg = Config()
    cfg.model.backbone, cfg.model.pretrained, cfg.model.jigsaw_n = "resnet18", False, 4
    cfg.data.image_size, cfg.data.resize = 64, 72
    save_model_file(path, FLRDF(cfg.model, 4), cfg, [s.name for s in class_specs(4)])
    return path


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with code {proc.returncode} before serving")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"the app did not answer on {url} within {timeout} s")


def stats(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    q = statistics.quantiles(values, n=10) if len(values) >= 2 else [values[0]] * 9
    return {"n": len(values), "median_s": round(statistics.median(values), 3), "mean_s": round(statistics.fmean(values), 3),
            "p90_s": round(q[8], 3), "min_s": round(min(values), 3), "max_s": round(max(values), 3)}


def measure(page, run_dir: Path, lines: int, timeout: float) -> dict:
    """Watch until ``lines`` more loss lines were painted after the first one; latencies per line."""
    status = page.locator("#train-status")
    status.filter(has_text=re.compile(r"loss points: [1-9]")).wait_for(timeout=timeout * 1000)
    page.evaluate(OBSERVER)
    start = json.loads(page.evaluate("JSON.stringify(window.__painted)"))
    first = start[0][0] if start else 0
    deadline = time.monotonic() + timeout
    painted = start
    while time.monotonic() < deadline:
        painted = json.loads(page.evaluate("JSON.stringify(window.__painted)"))
        if painted and painted[-1][0] >= first + lines:
            break
        time.sleep(0.2)
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    written = [r["time"] for r in records if "loss_total" in r]
    per_line, per_paint = [], []
    for n, t in painted[1:]:           # paints after the observer started (the first one is its baseline)
        per_paint.append(t - written[n - 1])
    painted_after = painted[1:]
    for i in range(first + 1, painted[-1][0] + 1 if painted else first + 1):
        shown = next((t for n, t in painted_after if n >= i), None)  # first paint showing line i or a later one
        if shown is not None:
            per_line.append(shown - written[i - 1])
    gaps = [b - a for a, b in zip(written[first:], written[first + 1:])]
    return {"lines_observed": len(per_line), "line_to_paint": stats(per_line), "newest_line_to_paint": stats(per_paint),
            "seconds_between_lines": stats(gaps), "line_to_paint_all_s": [round(v, 3) for v in per_line]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=30, help="new metrics lines to watch after the first one")
    p.add_argument("--timeout", type=float, default=600, help="give up after this many seconds per wait")
    p.add_argument("--out", default=str(ROOT / "docs" / "results" / "bench_live_curves_cpu.json"))
    p.add_argument("--note", default="", help="what else ran on the machine (recorded in the JSON)")
    args = p.parse_args(argv)
    if not CHROMIUM.exists():
        print(f"error: needs Debian's chromium at {CHROMIUM} (apt-get install chromium)", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    from dashboard import jobs, runs
    from flrdf.data.synthetic import make_demo_data

    report = {"what": "Train tab: metrics line written -> painted in headless Chromium (1 s refresh timer)",
              "machine": {"platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
                          "load_avg_before": [round(v, 2) for v in os.getloadavg()], "note": args.note},
              "job": {k: v for k, v in FORM.items() if k != "name"}}
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        tmp = Path(tmp)
        root = tmp / "demo"
        make_demo_data(root, num_classes=4, train_per_class=8, test_per_class=3, image_size=80, seed=0)
        runs_dir = tmp / "runs"
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False")
        app = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--checkpoint", str(tiny_model(tmp / "m.safetensors")),
                                "--runs-dir", str(runs_dir), "--host", "127.0.0.1", "--port", str(port),
                                "--device", "cpu", "--threads", "1"],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            wait_http(url, app)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
                try:
                    page = browser.new_page(viewport={"width": 1500, "height": 1100})
                    page.set_default_timeout(args.timeout * 1000)
                    page.goto(url)
                    page.get_by_role("tab", name="Train").click()
                    for elem, value in {"data-root": root, **FORM}.items():
                        box = page.locator(f"#train-{elem}").locator("input, textarea").first
                        box.fill(str(value))
                        box.press("Tab")
                    page.locator("#train-command").get_by_text(
                        re.compile(r"optim\.epochs=200.*optim\.warmup_steps=0", re.S)).first.wait_for()
                    page.locator("#train-launch").click()
                    page.locator("#train-launch-msg", has_text="Launched").wait_for()
                    run = re.search(r"Launched (\S+)", page.locator("#train-launch-msg").inner_text()).group(1)
                    report["results"] = measure(page, runs_dir / run, args.lines, args.timeout)
                finally:
                    browser.close()
        finally:
            for run_dir in runs.list_runs(runs_dir):  # SIGTERM the job, and wait until it has stopped
                try:
                    jobs.stop_run(run_dir)
                except jobs.JobError:
                    continue
                deadline = time.monotonic() + 120
                while runs.run_state(run_dir).get("state") in runs.ACTIVE and time.monotonic() < deadline:
                    time.sleep(0.5)
            app.terminate()
            try:
                app.wait(timeout=60)
            except subprocess.TimeoutExpired:
                app.kill()
                app.wait()
    report["machine"]["load_avg_after"] = [round(v, 2) for v in os.getloadavg()]
    report_json(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
