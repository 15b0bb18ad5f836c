"""The command-line reference (docs/CLI.md) read from the commands' own argparse parsers.

Each ``python -m flrdf`` command parses its own arguments (flrdf/cli.py maps names to functions), so the
one complete statement of a command's options is its ``--help``. This module runs every command - and the
dashboard's ``python app.py`` - with ``--help`` at a fixed width and collects the text; ``scripts/gen_docs.py``
writes it into docs/CLI.md under the hand-written overview, and a test checks that every command and every
option it prints appears there.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import sys
from pathlib import Path

from flrdf.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 100
# commands with sub-commands of their own: each sub-command's --help as well
SUBCOMMANDS: dict[str, tuple[str, ...]] = {"config": ("show", "list")}
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _help_of(func, argv: list[str], argv0: str | None = None) -> str:
    out = io.StringIO()
    old, old_argv = os.environ.get("COLUMNS"), list(sys.argv)
    os.environ["COLUMNS"] = str(WIDTH)  # argparse sizes its help to the terminal: fixed, so the text is stable
    if argv0:  # a parser without prog= names itself after sys.argv[0]
        sys.argv[:1] = [argv0]
    try:
        with contextlib.redirect_stdout(out):
            try:
                func(argv)
            except SystemExit:
                pass
    finally:
        sys.argv[:] = old_argv
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old
    return out.getvalue().rstrip() + "\n"


def _command_func(name: str):
    module_name, func_name = COMMANDS[name][0].split(":")
    return getattr(importlib.import_module(module_name), func_name)


def _app_main():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return importlib.import_module("app").main


def all_help() -> list[tuple[str, str, str]]:
    """[(invocation, one-line summary, --help text)]: ``python app.py``, then every ``python -m flrdf`` command
    (and sub-command) in flrdf/cli.py's order."""
    rows = [("python app.py", "serve the dashboard", _help_of(_app_main(), ["--help"], "app.py"))]
    for name, (_, summary) in COMMANDS.items():
        func = _command_func(name)
        rows.append((f"python -m flrdf {name}", summary, _help_of(func, ["--help"])))
        for sub in SUBCOMMANDS.get(name, ()):
            rows.append((f"python -m flrdf {name} {sub}", "", _help_of(func, [sub, "--help"])))
    return rows


def options_in(help_text: str) -> set[str]:
    """The long options (``--split``) a help text names."""
    return set(OPTION.findall(help_text))


def render_reference() -> str:
    """The generated part of docs/CLI.md: each command's --help, verbatim."""
    parts = []
    for invocation, summary, text in all_help():
        parts.append(f"### `{invocation}`\n")
        if summary:
            parts.append(f"{summary[0].upper()}{summary[1:]}.\n")
        parts.append(f"```text\n{text}```\n")
    return "\n".join(parts)
