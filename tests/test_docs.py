"""The documentation stays true to the code: every config key has a meaning (flrdf/config.py's inline comments),
docs/CONFIG.md is what scripts/gen_docs.py generates, docs/CLI.md names every command and option, ``config show``
prints a configuration that reads back, and every relative link and #anchor in README.md and docs/*.md resolves."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flrdf import cli_docs, config_docs
from flrdf.cli import COMMANDS
from flrdf.config import dump_config, load_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(ROOT / "scripts"))
import gen_docs  # noqa: E402


# ---- configuration keys -------------------------------------------------------------------------------------------

def test_every_config_key_has_a_meaning():
    assert config_docs.undocumented_keys() == [], \
        "give these fields a comment on their line in flrdf/config.py, then run python scripts/gen_docs.py"
    docs = {d.key: d for d in config_docs.key_docs()}
    assert docs["model.tau"].meaning == "map threshold for the foreground box"
    assert docs["model.tau"].type == "float" and docs["model.tau"].default == 0.5
    assert docs["data.source_size"].type == "int | None"
    # a comment continued on the comment-only lines under its field is one meaning
    assert docs["model.box_refine"].meaning.startswith("none | grabcut | auto: in evaluation and inference")
    assert docs["model.box_refine"].meaning.endswith("unresolved, the map's box)")
    assert {"name", "model.backbone", "optim.epochs", "runtime.eval_jigsaw"} <= set(docs)


def test_the_comment_parser_sees_a_field_without_a_comment():
    source = '''
from dataclasses import dataclass

@dataclass
class Section:
    documented: int = 1     # one meaning
                            # continued here
    bare: float = 0.5
    # a comment-only line above a field is not that field's meaning
    after: str = "x"   # its own

    def method(self):  # not a field
        pass
'''
    docs = config_docs._comments_by_class(source)["Section"]
    assert docs == {"documented": "one meaning continued here", "bare": "", "after": "its own"}


def test_config_md_is_what_the_generator_writes():
    path = DOCS / "CONFIG.md"
    current = path.read_text(encoding="utf-8")
    assert current == gen_docs.regenerated(path, config_docs.render_reference()), \
        "docs/CONFIG.md is out of date: run python scripts/gen_docs.py"
    for d in config_docs.key_docs():
        assert f"| `{d.key}` |" in current


def test_cli_md_names_every_command_and_option():
    text = (DOCS / "CLI.md").read_text(encoding="utf-8")
    generated = text.split(gen_docs.MARKER, 1)[1]
    sections = {m.group(1): m.start() for m in re.finditer(r"^### `([^`]+)`$", generated, re.M)}
    helps = cli_docs.all_help()
    assert {f"python -m flrdf {name}" for name in COMMANDS} <= {inv for inv, _, _ in helps}
    for invocation, _, help_text in helps:
        assert invocation in sections, f"{invocation} is not in docs/CLI.md: run python scripts/gen_docs.py"
        start = sections[invocation]
        end = min([s for s in sections.values() if s > start], default=len(generated))
        missing = cli_docs.options_in(help_text) - cli_docs.options_in(generated[start:end])
        assert not missing, f"{invocation}: {sorted(missing)} not in docs/CLI.md: run python scripts/gen_docs.py"
        assert cli_docs.options_in(help_text) or invocation.endswith("list"), invocation
    # the overview table names every command too
    overview = text.split(gen_docs.MARKER, 1)[0]
    for name in COMMANDS:
        assert f"`{name}" in overview, name


# ---- config show ---------------------------------------------------------------------------------------------------

def _show(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = config_docs.config_main(argv)
    return rc, out.getvalue()


def test_config_show_prints_the_resolved_config_with_meanings_and_reads_back(tmp_path):
    rc, text = _show(["show", "demo", "--set", "optim.epochs=2", "model.weights=null"])
    assert rc == 0
    cfg = load_config("demo", ["optim.epochs=2", "model.weights=null"])
    assert yaml.safe_load(text) == yaml.safe_load(dump_config(cfg))  # the output is a config file
    lines = text.splitlines()
    epochs = next(line for line in lines if line.strip().startswith("epochs:"))
    assert re.match(r"\s+epochs: 2\s+# training epochs .*\[default 100\]$", epochs), epochs
    momentum = next(line for line in lines if line.strip().startswith("momentum:"))
    assert "# SGD momentum" in momentum and "[default" not in momentum  # the default value: no note
    assert "overrides: optim.epochs=2 model.weights=null" in lines[1]
    # every key is there, with its meaning
    for d in config_docs.key_docs():
        leaf = d.key.rsplit(".", 1)[-1]
        assert any(line.strip().startswith(f"{leaf}:") and d.meaning in line for line in lines), d.key
    # and train --config reads it back to the same configuration
    saved = tmp_path / "shown.yaml"
    saved.write_text(text)
    assert load_config(saved).to_dict() == cfg.to_dict()


def test_config_show_refuses_a_bad_key_and_lists_shipped_configs(capsys):
    assert config_docs.config_main(["show", "demo", "--set", "model.nope=1"]) == 2
    assert "unknown config key 'model.nope'" in capsys.readouterr().err
    rc, text = _show(["list"])
    assert rc == 0
    names = [line.split()[0] for line in text.splitlines()]
    assert {"cub", "cars", "aircraft", "demo", "cub-baseline"} <= set(names)
    assert "Plain ResNet-50 baseline twin of 'cub'" in text


def test_config_show_from_the_command_line():
    proc = subprocess.run([sys.executable, "-m", "flrdf", "config", "show", "cub", "--set", "model.tau=0.3",
                           "--set", "optim.epochs=5"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^  tau: 0.3\s+# map threshold for the foreground box \[default 0.5\]$", proc.stdout, re.M)
    assert re.search(r"^  epochs: 5\s+# .*\[default 100\]$", proc.stdout, re.M)


# ---- links ---------------------------------------------------------------------------------------------------------

LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|<(?:img|a)\s[^>]*?(?:src|href)=\"([^\"]+)\"")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def _documents() -> list[Path]:
    return [ROOT / "README.md"] + sorted(DOCS.glob("*.md"))


def _links(text: str) -> list[str]:
    text = CODE_SPAN.sub("", FENCE.sub("", text))
    return [a or b for a, b in LINK.findall(text)]


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: its rendered text, lower-cased, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = text.replace("`", "").replace("*", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def broken_links(path: Path) -> list[str]:
    bad = []
    for target in _links(path.read_text(encoding="utf-8")):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            bad.append(f"{target} (no {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest})")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target} (no heading #{anchor} in {dest.name})")
    return bad


def test_the_link_checker_finds_a_broken_file_and_a_broken_anchor(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## The zoom source (`data.source_size`)\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md) [ok](other.md#the-zoom-source-datasource_size) [ok](#top-heading)\n"
                    "# Top heading\n![gone](missing.png) [bad](other.md#nowhere) `[not a link](nope.md)`\n"
                    '<img src="also-missing.png" width="10">\n```\n[in code](nope.md)\n```\n')
    found = broken_links(page)
    assert len(found) == 3, found
    assert any(f.startswith("missing.png") for f in found)
    assert any(f.startswith("also-missing.png") for f in found)
    assert "other.md#nowhere (no heading #nowhere in other.md)" in found


@pytest.mark.parametrize("path", _documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    assert broken_links(path) == []


def test_readme_is_short_and_links_every_document():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    linked = {Path(t.partition("#")[0]).name for t in _links(text)}
    for doc in DOCS.glob("*.md"):
        assert doc.name in linked or doc.name == "README.md" and "docs/README.md" in text, doc.name
    # the test command is .ci/run's
    assert "python -m pytest -q" in text and "python3 -m pytest -q" in (ROOT / ".ci" / "run").read_text()
