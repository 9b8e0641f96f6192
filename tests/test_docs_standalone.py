"""What a user's clone reads must hold in a user's clone: README and the docs name no path of the
project's own machines (``../shared``) outside a developer section, and every repository file
that a help text, README or a docs page names exists."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from ge2mst.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
#: a repository file named in prose: a top-level folder of the repository, then a file name
REPO_FILE = re.compile(r"(?<![\w./-])((?:recipes|benchmarks|docs|tests|checkpoints|src/ge2mst|"
                       r"\.ci)/[\w./-]*\w\.(?:py|md|toml|json|sh|png|safetensors|yml|jsonl))")


def _sections(text: str) -> list[tuple[str, str]]:
    """(heading, body) of each markdown section (the text before the first heading: "")."""
    out, heading, body = [], "", []
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and re.match(r"#{1,6} ", line):
            out.append((heading, "\n".join(body)))
            heading, body = line, []
        else:
            body.append(line)
    out.append((heading, "\n".join(body)))
    return out


def shared_paths_outside_developer_sections(path: Path) -> list[str]:
    found = []
    for heading, body in _sections(path.read_text()):
        if "developer" not in heading.lower():
            found += [f"{path.name} ({heading or 'top'}): {line.strip()[:80]}"
                      for line in body.splitlines() if "../shared" in line]
    return found


def test_the_section_reader_keeps_fenced_comments_out_of_headings(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# Top\n```bash\n# a comment, ../shared/x\n```\n## For developers\n"
                    "../shared/data\n## Next\nsee ../shared/y\n")
    found = shared_paths_outside_developer_sections(page)
    assert len(found) == 2 and "a comment" in found[0] and "see" in found[1]


def test_readme_and_docs_name_no_machine_path_outside_a_developer_section():
    found = [hit for page in PAGES for hit in shared_paths_outside_developer_sections(page)]
    assert not found, "\n".join(found)


def _help_texts(parser: argparse.ArgumentParser) -> list[str]:
    texts = [parser.description or ""]
    for action in parser._actions:
        texts.append(action.help or "")
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                texts += _help_texts(sub)
    return texts


def test_every_repository_file_named_by_help_readme_or_docs_exists():
    named = {}  # name -> (where it is named, the folders it may be relative to)
    for text in _help_texts(build_parser()):
        for name in REPO_FILE.findall(text):
            named.setdefault(name, ("a help text", [ROOT]))
    for page in PAGES:
        for name in REPO_FILE.findall(page.read_text()):  # a link may be relative to its page
            named.setdefault(name, (str(page.relative_to(ROOT)), [ROOT, page.parent]))
    assert len(named) > 20  # the reader finds the names people follow
    missing = [f"{name} (named in {where})" for name, (where, bases) in sorted(named.items())
               if not any((base / name).exists() for base in bases)]
    assert not missing, "\n".join(missing)


def test_the_file_reader_sees_a_drifted_name():
    assert REPO_FILE.findall("e.g. recipes/imagenet.toml or benchmarks/step_profile.py.") == [
        "recipes/imagenet.toml", "benchmarks/step_profile.py"]
    assert not (ROOT / "recipes/imagenet.toml").exists()
