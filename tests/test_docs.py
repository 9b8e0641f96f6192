"""The documentation site (mkdocs.yml, docs/): its tutorials run, its commands exist, it builds.

- the ```python blocks of each page in docs/tutorials/ run, in order, in one fresh namespace per
  page, in an empty temporary folder; the pages assert what they show, so an API change that
  breaks a tutorial fails here;
- every ```bash command of the tutorials is a ``ge2mst`` command naming a real sub-command, and
  every ``ge2mst`` command in any page of docs/ parses with the real parser
  (`ge2mst.cli.build_parser`, options and values included; ``--config FILE`` read as ``main``
  reads it);
- docs/getting-started.md carries the README's two commands word for word;
- the figures of benchmarks/RESULTS.md are in docs/benchmarks/ and equal those of benchmarks/;
- ``mkdocs build --strict`` passes (skipped when the docs extra is not installed).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ge2mst.cli import build_parser
from ge2mst.cli._config import expand_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TUTORIALS = sorted((DOCS / "tutorials").glob("*.md"))
PAGES = sorted(DOCS.rglob("*.md"))
#: what `mkdocs build` needs: pip install -e ".[docs]"
DOCS_MODULES = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
SEPARATORS = {"&&", "||", ";", "|"}
#: the sub-commands of `ge2mst`
SUBCOMMANDS = next(a for a in build_parser()._actions
                   if isinstance(a, argparse._SubParsersAction)).choices


def code_blocks(text: str, language: str) -> list[tuple[int, str]]:
    """(line of the block's first code line, code) of each top-level fenced block in
    ``language``."""
    return [(text.count("\n", 0, m.start(2)) + 1, m.group(2))
            for m in FENCE.finditer(text) if m.group(1) == language]


def shell_commands(code: str) -> list[list[str]]:
    """The simple commands of a bash block, as token lists: continuation lines joined, comments
    dropped, pipelines and lists (``&&``, ``||``, ``;``, ``|``) split."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        current: list[str] = []
        for token in shlex.split(line, comments=True):
            if token in SEPARATORS:
                commands.append(current)
                current = []
            else:
                current.append(token)
        commands.append(current)
    return [c for c in commands if c]


def ge2mst_arguments(command: list[str]) -> list[str] | None:
    """The arguments after ``ge2mst`` or ``python -m ge2mst.cli`` (also under ``torchrun``), or
    None when ``command`` does not run ge2mst."""
    if command[0] == "ge2mst":
        return command[1:]
    for i, token in enumerate(command[:-1]):
        if token == "-m" and command[i + 1] == "ge2mst.cli":
            return command[i + 2:]
    return None


def parse_error(arguments: list[str]) -> str | None:
    """Why the ``ge2mst`` command line ``arguments`` does not parse, or None when it does."""
    parser = build_parser()
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(expand_config(list(arguments), parser))
    except SystemExit as exc:
        return stderr.getvalue().strip() or f"exit status {exc.code}"
    return None


# ---- tutorials ----------------------------------------------------------------------------------
def test_there_are_tutorials_that_assert_what_they_show():
    assert len(TUTORIALS) >= 3, TUTORIALS
    for page in TUTORIALS:
        blocks = code_blocks(page.read_text(), "python")
        assert blocks, f"{page.name} has no ```python block to run"
        assert any(re.search(r"^\s*assert ", code, re.MULTILINE) for _, code in blocks), \
            f"{page.name} asserts nothing"


@pytest.mark.parametrize("page", TUTORIALS, ids=lambda p: p.stem)
def test_tutorial_runs(page, tmp_path, monkeypatch):
    """Every ```python block of ``page``, in order, in one namespace, in an empty folder; a
    traceback points at the Markdown file and its line."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"tutorial_{page.stem.replace('-', '_')}"}
    for line, code in code_blocks(page.read_text(), "python"):
        exec(compile("\n" * (line - 1) + code, str(page), "exec"), namespace)


def test_tutorial_commands_name_real_subcommands():
    commands = 0
    for page in TUTORIALS:
        for line, code in code_blocks(page.read_text(), "bash"):
            for command in shell_commands(code):
                where = f"{page.name}:{line}: {shlex.join(command)}"
                arguments = ge2mst_arguments(command)
                assert arguments, f"{where}: a tutorial's commands are ge2mst commands"
                assert arguments[0] in SUBCOMMANDS, f"{where}: no such ge2mst sub-command"
                commands += 1
    assert commands, "no tutorial shows a ge2mst command"


# ---- every page ---------------------------------------------------------------------------------
def test_every_ge2mst_command_in_the_docs_parses(monkeypatch):
    monkeypatch.chdir(ROOT)  # --config recipes/... is read from the repository root
    checked, failures = 0, []
    for page in PAGES:
        for line, code in code_blocks(page.read_text(), "bash"):
            for command in shell_commands(code):
                arguments = ge2mst_arguments(command)
                if arguments is None:
                    continue
                checked += 1
                error = parse_error(arguments)
                if error:
                    failures.append(f"{page.relative_to(ROOT)}:{line}: {shlex.join(command)}\n  {error}")
    assert not failures, "\n".join(failures)
    assert checked >= 10, checked


def test_getting_started_carries_the_readme_commands():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Two commands", 1)[1].split("\n## ", 1)[0]
    commands = [code for _, code in code_blocks(section, "bash")]
    assert len(commands) == 2, "the README's 'Two commands' section should hold two bash blocks"
    page = (DOCS / "getting-started.md").read_text()
    for code in commands:
        assert code in page, f"docs/getting-started.md lacks the README command\n{code}"


def test_benchmark_figures_are_those_of_benchmarks():
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    figures = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", results)
    assert figures
    for name in figures:
        copy, original = DOCS / "benchmarks" / name, ROOT / "benchmarks" / name
        assert copy.is_file() and copy.read_bytes() == original.read_bytes(), \
            f"docs/benchmarks/{name} is missing or stale: cp benchmarks/{name} docs/benchmarks/"


def test_the_site_builds_strictly(tmp_path):
    missing = [m for m in DOCS_MODULES if importlib.util.find_spec(m.split(".")[0]) is None
               or importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"the docs extra is not installed ({', '.join(missing)} missing): "
                    "pip install -e \".[docs]\" to build the site (.ci/run builds it)")
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-6000:]
    for page in TUTORIALS:
        assert (site / "tutorials" / page.stem / "index.html").is_file(), page.name
    assert (site / "reference" / "conversion" / "index.html").is_file()
