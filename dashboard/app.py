"""FLRDF Studio's page: the tabs composed over one shared context, and how it is served.

``build_app`` creates the ``gr.Blocks``; ``launch`` queues it (concurrent
requests wait instead of failing), caps upload size and starts the server, with a login page
when ``ctx.logins`` has users (Gradio's own ``auth``; roles: ``dashboard.access``).
A new tab is a module with ``build_<name>_tab(ctx)``, appended to ``TABS``; a tab whose
builder returns a dict with a ``link(built, tabs)`` callable gets it called once every
tab exists (the Data tab sends images to Inspect that way).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

import gradio as gr
import torch

from dashboard import access
from dashboard.analyze_tab import build_analyze_tab
from dashboard.browse_tab import build_browse_tab
from dashboard.context import DashboardContext
from dashboard.evaluate_tab import build_evaluate_tab
from dashboard.inspect_tab import build_inspect_tab
from dashboard.train_tab import build_train_tab
from flrdf.auth import Logins

# (title, builder), in page order; a new tab is one more entry.
TABS: list[tuple[str, Callable[[DashboardContext], object]]] = [
    ("Inspect", build_inspect_tab),
    ("Train", build_train_tab),
    ("Evaluate", build_evaluate_tab),
    ("Analyze", build_analyze_tab),
    ("Data", build_browse_tab),
]

TITLE = "FLRDF Studio"
MAX_FILE_SIZE = "20mb"
QUEUE_SIZE = 64            # waiting requests beyond this are refused with a message
DEFAULT_CONCURRENCY = 2    # per event, unless the event sets its own
# Gallery captions wrap instead of being cut with an ellipsis (Inspect's map names are long).
CSS = ".gallery-item .caption-label { white-space: normal; max-width: 100%; }"
LOGIN_MESSAGE = f"{TITLE}: log in with the user name and password the operator gave you."


def build_app(checkpoint: str | None = None, runs_dir: str = "runs", device: str = "auto",
              ctx: DashboardContext | None = None, allow_dirs: list[str] | None = None,
              max_jobs: int = 1, logins: Logins | None = None) -> gr.Blocks:
    """The whole dashboard; ``checkpoint`` defaults to the bundled demo model. ``allow_dirs``: where else
    clients may name checkpoints (``--allow-dir``; see dashboard.paths). ``max_jobs``: CPU training jobs
    running at once (``--max-jobs``; dashboard.scheduler). ``logins``: who may log in and as what
    (``flrdf.auth``; default: no login, the local user is an editor)."""
    ctx = ctx or DashboardContext.create(checkpoint, runs_dir, device, allow_dirs=allow_dirs, max_jobs=max_jobs)
    if logins is not None:
        ctx.logins = logins
    with gr.Blocks(title=TITLE) as app:
        gr.Markdown(f"# {TITLE}\nFine-grained classification by foreground localization and region "
                    "discriminative feature training (FLRDF), with the classic CAM baselines side by side.")
        viewer_note = gr.Markdown(visible=False, elem_id="viewer-note")
        built = {}
        with gr.Tabs() as tabs:
            for title, build in TABS:
                with gr.Tab(title, id=title.lower()):
                    built[title] = build(ctx)
        for parts in built.values():  # cross-tab events (Data -> Inspect): a tab's "link" hook, once all exist
            if isinstance(parts, dict) and callable(parts.get("link")):
                parts["link"](built, tabs)
        access.lock_for_viewers(app, ctx, viewer_note)
    app.flrdf_context = ctx  # for tests and for tabs added later
    return app


def set_compute_threads(threads: int | None = 0) -> int:
    """Threads for torch's intra-op pool and for the BLAS numpy uses (EigenCAM's SVD); process-wide.

    0/None: half the cores, at least 1. On a small machine that also runs training
    (or other jobs), a second compute thread mostly waits to be scheduled: on the
    2-core reference machine under load, one thread served a demo-model Inspect in
    ~0.1 s where two took 0.3-2 s (median). Pass the core count when the machine is otherwise idle.
    """
    n = int(threads or 0) or max(1, (os.cpu_count() or 2) // 2)
    torch.set_num_threads(n)
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n)  # stays in force (not used as a context manager)
    return n


def _patient_url_ok(url: str, attempts: int = 10, timeout_s: float = 10.0) -> bool:
    """Gradio's start-up probe of its own page, with room for a loaded machine.

    ``gradio.networking.url_ok`` gives up after a single 3 s timeout, so on a busy 2-core machine a
    healthy server sometimes fails to start ("When localhost is not accessible, a shareable link must
    be created"). Same check, with retries and a longer timeout per try.
    """
    import httpx

    for _ in range(attempts):
        try:
            r = httpx.head(url, timeout=timeout_s, verify=False)
            if r.status_code in (200, 401, 301, 302, 303, 307, 308):
                return True
        except (httpx.ConnectError, httpx.TimeoutException, ConnectionError):
            pass
        time.sleep(0.5)
    return False


def launch(app: gr.Blocks, host: str = "127.0.0.1", port: int | None = 7860, share: bool = False,
           prevent_thread_lock: bool = False, max_file_size: str = MAX_FILE_SIZE, quiet: bool = False):
    """Queue and serve ``app``; returns Gradio's ``(fastapi_app, local_url, share_url)``. A login page when
    its context has logins (API clients: ``Client(url, auth=(user, password))``)."""
    app.queue(max_size=QUEUE_SIZE, default_concurrency_limit=DEFAULT_CONCURRENCY)
    from gradio import networking

    networking.url_ok = _patient_url_ok
    logins = getattr(getattr(app, "flrdf_context", None), "logins", None)
    auth = _auth_callable(logins) if logins is not None and logins.required else None
    return app.launch(server_name=host, server_port=port, share=share, max_file_size=max_file_size,
                      prevent_thread_lock=prevent_thread_lock, show_error=True, quiet=quiet, css=CSS,
                      auth=auth, auth_message=LOGIN_MESSAGE if auth else None)


def _auth_callable(logins: Logins):
    """Gradio's ``auth``: the password hash is checked in a worker thread (hashlib releases the GIL), so a
    login does not hold up the server's event loop for the hash (0.14 s for PBKDF2 at 600,000 iterations,
    0.23 s for scrypt, measured on the 2-core reference machine)."""

    async def check(user: str, password: str) -> bool:
        return await asyncio.to_thread(logins.check, user, password)

    return check
