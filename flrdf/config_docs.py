"""Each configuration key's meaning, read from one place: the inline comments of ``flrdf/config.py``.

The dataclasses in ``flrdf/config.py`` are the configuration's single source of truth - type and default
from the field, meaning from the ``# comment`` on the field's line (and the comment-only lines right under
it, which continue it). This module parses those comments with ``ast`` + ``tokenize`` (no second copy of
the text to keep in step) and renders them twice:

- ``python -m flrdf config show NAME [--set key=value ...]``: the resolved configuration as YAML, each key
  with its meaning and, where the value differs from the dataclass default, the default;
- ``docs/CONFIG.md`` (``scripts/gen_config_doc.py``): every key's type, default and meaning, and what each
  shipped config sets.

``undocumented_keys()`` lists fields without a comment; a test keeps it empty.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import io
import sys
import tokenize
from functools import lru_cache
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from flrdf import config as config_module
from flrdf.config import Config, ConfigError, load_config, override_arg, resolve_config_path, \
    shipped_configs


@dataclasses.dataclass(frozen=True)
class KeyDoc:
    key: str          # dotted: "model.tau"
    type: str         # "float", "str | None", ...
    default: Any      # the dataclass default
    meaning: str      # the inline comment ("" when the field has none)


def _comments_by_class(source: str) -> dict[str, dict[str, str]]:
    """{class name: {field name: comment}} for every class in ``source`` whose body annotates fields."""
    comments: dict[int, str] = {}
    comment_only: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            row = tok.start[0]
            comments[row] = tok.string.lstrip("#").strip()
            if not tok.line[: tok.start[1]].strip():
                comment_only.add(row)
    out: dict[str, dict[str, str]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        fields_ = [s for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]
        docs: dict[str, str] = {}
        for i, stmt in enumerate(fields_):
            stop = fields_[i + 1].lineno if i + 1 < len(fields_) else (node.end_lineno or stmt.end_lineno) + 1
            parts = [comments[r] for r in range(stmt.lineno, stmt.end_lineno + 1) if r in comments]
            row = stmt.end_lineno + 1
            while parts and row < stop and row in comment_only:  # continuation lines of the field's comment
                parts.append(comments[row])
                row += 1
            docs[stmt.target.id] = " ".join(p for p in parts if p)
        if docs:
            out[node.name] = docs
    return out


@lru_cache(maxsize=1)
def _class_comments() -> dict[str, dict[str, str]]:
    return _comments_by_class(Path(config_module.__file__).read_text(encoding="utf-8"))


def _type_name(hint: Any) -> str:
    name = getattr(hint, "__name__", None) if isinstance(hint, type) else None
    return name or str(hint).replace("typing.", "")


def _section_doc(cls: type) -> str:
    return " ".join((cls.__doc__ or "").split()) if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "(") \
        else ""


def sections() -> list[tuple[str, type, str]]:
    """[(section name, its dataclass, its docstring)] in Config's order (model, data, optim, loss, runtime)."""
    hints = get_type_hints(Config)
    return [(f.name, hints[f.name], _section_doc(hints[f.name])) for f in dataclasses.fields(Config)
            if dataclasses.is_dataclass(hints[f.name])]


def key_docs() -> list[KeyDoc]:
    """Every configuration key, in declaration order: top-level scalars first, then each section's fields."""
    comments = _class_comments()
    rows: list[KeyDoc] = []

    def add(cls: type, prefix: str) -> None:
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if dataclasses.is_dataclass(hints[f.name]):
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            rows.append(KeyDoc(prefix + f.name, _type_name(hints[f.name]), default,
                               comments.get(cls.__name__, {}).get(f.name, "")))

    add(Config, "")
    for name, cls, _ in sections():
        add(cls, name + ".")
    return rows


def undocumented_keys() -> list[str]:
    return [d.key for d in key_docs() if not d.meaning]


def yaml_scalar(value: Any) -> str:
    """``value`` as YAML writes it inline (``null``, ``0.1``, ``'1.0'``, ``raw+object``)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    return text[:-3].strip() if text.endswith("...") else text


def _get(cfg: Config, key: str) -> Any:
    obj: Any = cfg
    for part in key.split("."):
        obj = getattr(obj, part)
    return obj


def render_show(cfg: Config, header: list[str] | None = None) -> str:
    """The resolved configuration as YAML (``load_config`` reads it back), each key with its meaning."""
    docs = {d.key: d for d in key_docs()}
    lines = [f"# {h}" for h in header or []]

    def line(indent: str, key: str) -> str:
        d = docs[key]
        value = _get(cfg, key)
        text = f"{indent}{key.rsplit('.', 1)[-1]}: {yaml_scalar(value)}"
        note = d.meaning + (f" [default {yaml_scalar(d.default)}]" if value != d.default else "")
        return f"{text:<34} # {note}" if note else text

    for d in docs.values():
        if "." not in d.key:
            lines.append(line("", d.key))
    for name, _, doc in sections():
        lines.append(f"{name}:" + (f"  # {doc}" if doc else ""))
        lines += [line("  ", d.key) for d in docs.values() if d.key.startswith(name + ".")]
    return "\n".join(lines) + "\n"


def config_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flrdf config",
                                description="Look at configurations before launching a run.")
    sub = p.add_subparsers(dest="action", required=True)
    show = sub.add_parser("show", help="the resolved configuration (YAML) with each key's meaning",
                          description="Print the resolved configuration - the shipped config or YAML file, its "
                                      "base: chain and the --set overrides applied - as YAML with each key's "
                                      "one-line meaning, and the default where the value differs from it. "
                                      "The output is itself a config file (train --config FILE reads it).")
    show.add_argument("config", metavar="NAME|PATH", nargs="?", default=None,
                      help="a shipped config name or a YAML file (none: the dataclass defaults)")
    show.add_argument("--set", dest="overrides", nargs="+", action="extend", default=[], type=override_arg,
                      metavar="KEY=VALUE", help="override keys, as train's --set does (YAML value syntax; several "
                                                "pairs after one --set; repeatable)")
    sub.add_parser("list", help="the shipped configs, one per line, with their first comment line",
                   description="List the shipped configs (flrdf/configs/*.yaml) with the first line of each "
                               "file's leading comment.")
    args = p.parse_args(argv)
    if args.action == "list":
        for name in shipped_configs():
            print(f"{name:<20} {first_comment(resolve_config_path(name))}".rstrip())
        return 0
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    source = _shown_path(resolve_config_path(args.config)) if args.config else \
        "the dataclass defaults (flrdf/config.py)"
    header = [f"config: {args.config or 'defaults'} ({source})"]
    if args.overrides:
        header.append("overrides: " + " ".join(args.overrides))
    header.append("each key: its meaning; [default X] where the value is not the dataclass default")
    sys.stdout.write(render_show(cfg, header))
    return 0


def _shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it lies under it (flrdf/configs/demo.yaml), else absolute."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path.resolve())


def first_comment(path: Path) -> str:
    """A YAML file's leading comment block as one line ("" when it starts without one)."""
    lines: list[str] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        text = raw.strip()
        if not text.startswith("#"):
            if text or lines:
                break
            continue
        lines.append(text.lstrip("#").strip())
    return " ".join(line for line in lines if line)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def shipped_settings(name: str) -> list[str]:
    """``key=value`` for every key the shipped config ``name`` sets to something other than the default."""
    cfg, defaults = load_config(name), Config()
    return [f"{d.key}={yaml_scalar(_get(cfg, d.key))}" for d in key_docs()
            if d.key != "name" and _get(cfg, d.key) != _get(defaults, d.key)]


def render_reference() -> str:
    """The generated part of docs/CONFIG.md: every key's type, default and meaning; what each shipped config sets."""
    docs = key_docs()
    out = ["## Every key", "",
           "Type and default from the dataclasses in `flrdf/config.py`, meaning from the comment on each field "
           "(the same text `python -m flrdf config show` prints).", ""]
    groups = [("top level", "", [d for d in docs if "." not in d.key])]
    groups += [(f"`{name}`", doc, [d for d in docs if d.key.startswith(name + ".")]) for name, _, doc in sections()]
    for title, doc, rows in groups:
        out += [f"### {title}", ""] + ([doc, ""] if doc else [])
        out += ["| key | type | default | meaning |", "|---|---|---|---|"]
        out += [f"| `{d.key}` | {_cell(d.type)} | `{_cell(yaml_scalar(d.default))}` | {_cell(d.meaning)} |"
                for d in rows]
        out.append("")
    out += ["## What each shipped config sets", "",
            "`flrdf/configs/NAME.yaml`: its leading comment, then every key it sets to something other than the "
            "default (after its `base:` chain).", ""]
    for name in shipped_configs():
        settings = shipped_settings(name)
        out += [f"### `{name}`", "", first_comment(resolve_config_path(name)), "",
                " ".join(f"`{s}`" for s in settings) if settings else "(the defaults)", ""]
    return "\n".join(out).rstrip() + "\n"
