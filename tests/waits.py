"""Waits that exist only to stop a broken test from hanging, and what they report when they run out.

Every such wait in the suite is a base time (enough on an idle machine) times ONE factor,
``FLRDF_TEST_WAIT_SCALE`` (default 3: a machine three times oversubscribed - two CPU-bound
jobs beside the suite on two cores - still passes; raise it on slower machines). A wait that
runs out fails with what the job or the page showed at that moment: a status, a log tail,
the page's text - never a bare "timed out". No speed is asserted anywhere through these.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable

SCALE_VAR = "FLRDF_TEST_WAIT_SCALE"


def _scale() -> float:
    text = os.environ.get(SCALE_VAR, "").strip()
    try:
        value = float(text) if text else 3.0
    except ValueError:
        raise ValueError(f"{SCALE_VAR} must be a positive number, got {text!r}") from None
    if not value > 0:
        raise ValueError(f"{SCALE_VAR} must be a positive number, got {text!r}")
    return value


WAIT_SCALE = _scale()


def wait_s(seconds: float) -> float:
    """A hang-stopping wait of ``seconds`` on an idle machine, scaled."""
    return seconds * WAIT_SCALE


def wait_ms(seconds: float) -> int:
    """The same in milliseconds (Playwright's unit)."""
    return int(wait_s(seconds) * 1000)


def _ran_out(what: str, seconds: float) -> str:
    return f"{what}: not reached within {wait_s(seconds):.0f} s ({seconds:g} s x {SCALE_VAR}={WAIT_SCALE:g})"


def tail(text: str | bytes | None, chars: int = 3000) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = text or ""
    return text if len(text) <= chars else "..." + text[-chars:]


def file_tail(path, chars: int = 3000) -> str:
    try:
        with open(path, "rb") as f:
            return tail(f.read(), chars)
    except OSError as exc:
        return f"({path}: {exc.strerror})"


def wait_until(pred: Callable, seconds: float, what: str, shown: Callable[[], str] = lambda: "",
               every: float = 0.1):
    """Poll ``pred`` until it returns something true (returned); after ``wait_s(seconds)`` an AssertionError
    naming ``what`` and carrying ``shown()`` - the job's status, a log tail - as it was at that moment."""
    end = time.monotonic() + wait_s(seconds)
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"{_ran_out(what, seconds)}; at that moment:\n{shown()}")
        time.sleep(every)


def communicate(proc: subprocess.Popen, seconds: float, what: str = "the process") -> tuple:
    """``proc.communicate()`` with a scaled timeout; a process still running then is killed and the failure
    carries the tail of what it printed."""
    try:
        return proc.communicate(timeout=wait_s(seconds))
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"{_ran_out(what + ' to exit', seconds)}; it was killed. stdout:\n{tail(out)}\n"
                             f"stderr:\n{tail(err)}") from None


def run_command(cmd, seconds: float, what: str = "the command", **kw) -> subprocess.CompletedProcess:
    """``subprocess.run(cmd, capture_output=True, text=True, **kw)`` with a scaled timeout and a readable failure."""
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=wait_s(seconds), **kw)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"{_ran_out(what + ' to exit', seconds)}; it was killed. stdout:\n{tail(exc.stdout)}\n"
                             f"stderr:\n{tail(exc.stderr)}") from None


# ---------------------------------------------------------------- the browser (Playwright)
def page_text(page, show=None, chars: int = 4000) -> str:
    """What the page showed: the inner text of the ``show`` selectors (each labelled), else of the whole page."""
    parts = []
    try:
        for sel in ([show] if isinstance(show, str) else list(show or [])):
            loc = page.locator(sel)
            parts.append(f"[{sel}] " + " | ".join(loc.nth(i).inner_text(timeout=2000) for i in range(loc.count())))
        if not parts:
            parts.append(page.inner_text("body", timeout=2000))
    except Exception as exc:  # noqa: BLE001 - the report must not hide the timeout it reports
        parts.append(f"(page text unavailable: {type(exc).__name__})")
    return tail("\n".join(parts), chars)


def see(locator, seconds: float = 60, state: str = "visible", show=None):
    """``locator.wait_for(state=...)`` with a scaled timeout; when it runs out, an AssertionError with the page's
    text (or that of the ``show`` selectors) at that moment. Returns the locator."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        locator.wait_for(state=state, timeout=wait_ms(seconds))
    except PlaywrightTimeout:
        raise AssertionError(f"{_ran_out(f'{locator} {state}', seconds)}; the page showed:\n"
                             f"{page_text(locator.page, show)}") from None
    return locator


def see_function(page, expression: str, arg, seconds: float, what: str, show=None) -> None:
    """``page.wait_for_function`` with a scaled timeout and the page's text when it runs out."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(expression, arg=arg, timeout=wait_ms(seconds))
    except PlaywrightTimeout:
        raise AssertionError(f"{_ran_out(what, seconds)}; the page showed:\n{page_text(page, show)}") from None
