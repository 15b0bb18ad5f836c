"""Editors and viewers on the page: who may start, stop or resume jobs and write under the runs directory.

The roles come from ``ctx.logins`` (``flrdf.auth.Logins``: ``--auth``, ``--auth-file``, ``--read-only``).
Every handler that starts, stops or resumes a job or writes under the runs or data folder begins with
``require_editor(ctx, request)`` - the one check, made from ``gr.Request.username`` at the handler
boundary, so API clients are refused exactly as the page is. ``lock_for_viewers`` only disables those
buttons for a viewer and shows a one-line note; the check in the handlers is what enforces it.
"""

from __future__ import annotations

import gradio as gr

from dashboard.context import DashboardContext
from flrdf.auth import EDITOR

# the buttons whose handlers begin with require_editor (elem_id); a test checks each exists on the page
EDITOR_CONTROLS = ("train-launch", "train-make-data", "train-stop", "train-resume", "train-cancel", "eval-run",
                   "eval-demo", "an-run")
VIEWER_NOTE = ("**read-only: you are a viewer** - Inspect, Data, the live curves and saved evaluations and analyses "
               "are yours; launching, stopping, resuming and evaluating need an editor login.")


def role(ctx: DashboardContext, request: gr.Request | None) -> str:
    """The role of the user who sent ``request`` (None: a direct call, no login)."""
    return ctx.logins.role(getattr(request, "username", None))


def require_editor(ctx: DashboardContext, request: gr.Request | None) -> None:
    """Raises a gr.Error (shown on the page, an AppError for API clients) unless the caller is an editor."""
    if role(ctx, request) != EDITOR:
        who, read_only = getattr(request, "username", None), ctx.logins.read_only
        if who:
            subject = f"{who!r} is a viewer" + (" (the dashboard runs with --read-only)" if read_only else "")
        else:
            subject = "this dashboard runs with --read-only" if read_only else "nobody is logged in"
        raise gr.Error(f"Read-only: {subject}; starting, stopping or resuming jobs and writing results need an "
                       "editor login.", title="Viewer", duration=None, print_exception=False)


def page_updates(ctx: DashboardContext, request: gr.Request | None, n_controls: int) -> list:
    """The viewer note and the editor buttons as a page load leaves them for this user."""
    if role(ctx, request) == EDITOR:
        return [gr.skip()] * (1 + n_controls)
    return [gr.update(value=VIEWER_NOTE, visible=True)] + [gr.update(interactive=False)] * n_controls


def editor_controls(app: gr.Blocks) -> list[gr.components.Component]:
    """The page's editor buttons, in EDITOR_CONTROLS order."""
    by_id = {getattr(b, "elem_id", None): b for b in app.blocks.values()}
    return [by_id[i] for i in EDITOR_CONTROLS if i in by_id]


def lock_for_viewers(app: gr.Blocks, ctx: DashboardContext, note: gr.Markdown) -> None:
    """On page load, a viewer sees ``note`` and the editor buttons disabled (call inside ``with app:``).
    Nothing is added when nobody can be a viewer (no login and no --read-only: the local operator)."""
    if not (ctx.logins.required or ctx.logins.read_only):
        return
    controls = editor_controls(app)

    def viewer_lock(request: gr.Request):
        return page_updates(ctx, request, len(controls))

    app.load(viewer_lock, None, [note, *controls], api_visibility="private", show_progress="hidden")
