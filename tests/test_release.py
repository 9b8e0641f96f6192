"""The release files people look for, one version everywhere, and a wheel that installs and runs
``ge2mst quickstart`` in a clean virtual environment."""

import importlib.metadata
import inspect
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import ge2mst

ROOT = Path(__file__).resolve().parents[1]


def test_the_license_is_the_full_apache_text_the_metadata_declares():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text.splitlines()) > 150
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "Apache-2.0"}


def test_one_version_in_the_package_its_metadata_the_citation_and_the_changelog():
    yaml = pytest.importorskip("yaml")
    version = ge2mst.__version__
    assert importlib.metadata.version("ge2mst") == version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]  # read from _version.py
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and str(cff["version"]) == version
    assert cff["license"] == "Apache-2.0"
    paper = cff["preferred-citation"]
    assert "Ge²mS-T" in paper["title"] and len(paper["authors"]) == 6
    assert any("2604.08894" in i["value"] for i in paper["identifiers"])
    first = re.search(r"^## (\S+)", (ROOT / "CHANGELOG.md").read_text(), re.M)
    assert first and first.group(1) == version  # the newest entry is this version


def test_the_public_api_is_annotated_and_marked_typed():
    assert (Path(ge2mst.__file__).parent / "py.typed").is_file()
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in data["ge2mst"]
    unannotated = []
    for name in ge2mst.__all__:
        obj = getattr(ge2mst, name)
        if inspect.isclass(obj):
            obj = vars(obj).get("__init__")
            if obj is None:
                continue
        if not inspect.isfunction(obj):
            continue
        sig = inspect.signature(obj)
        params = [p for p in sig.parameters.values() if p.name != "self"
                  and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if any(p.annotation is inspect.Parameter.empty for p in params) or (
                obj.__name__ != "__init__" and sig.return_annotation is inspect.Signature.empty):
            unannotated.append(name)
    assert not unannotated, unannotated


@pytest.mark.slow
def test_the_wheel_installs_and_runs_the_quickstart_in_a_clean_environment(tmp_path):
    pytest.importorskip("build", reason="the 'build' package (pip install -e '.[test]') is needed")
    dist = tmp_path / "dist"
    built = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(ROOT)],
                           capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next(dist.glob("ge2mst-*.whl"))
    assert f"-{ge2mst.__version__}-" in wheel.name
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    torch_spec = os.environ.get("TORCH_SPEC", "torch==2.13.0")  # the CPU build kept on disk here
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", torch_spec, str(wheel)],
                             capture_output=True, text=True, timeout=1200)
    assert install.returncode == 0, install.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    run = subprocess.run([str(venv / "bin" / "ge2mst"), "quickstart", "--epochs", "1",
                          "--train-limit", "200", "--limit", "60", "--out", "run", "--json"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)
    assert report["exact"] is True and report["test_images"] == 60
    where = subprocess.run([str(python), "-c", "import ge2mst, pathlib; p = pathlib.Path(ge2mst.__file__)"
                            ".parent; print(p); print((p / 'py.typed').is_file())"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    folder, typed = where.stdout.split()
    assert "site-packages" in folder and typed == "True"  # the wheel, not the checkout
