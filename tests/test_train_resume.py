"""A training run killed mid-epoch or mid-save resumes to the very weights of an uninterrupted run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ge2mst.cli import main

ROOT = Path(__file__).resolve().parents[1]
# 256 digits in batches of 32: 8 optimizer steps per epoch; 4 atomic writes after each epoch
# (trainer.pt first, then last.safetensors, last.json, metrics.csv)
ARGS = ["--data", "digits", "--train-limit", "256", "--limit", "64", "--epochs", "3",
        "--batch-size", "32", "--seed", "7", "--json"]


def train(out: Path, *extra: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    env.pop("GE2MST_FAULT", None)
    if fault:
        env["GE2MST_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "ge2mst.cli", "train", *ARGS, "--out", str(out),
                           *extra], env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    assert train(out).returncode == 0
    return load_file(out / "last.safetensors")


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("fault,epochs_done", [("step:12", 1), ("save:5", 1), ("save:2", 1),
                                               ("save:1", 0)])
def test_kill_then_resume_gives_the_same_weights(tmp_path, reference, fault, epochs_done):
    killed = train(tmp_path, fault=fault)
    assert killed.returncode == -9  # SIGKILL: no handler ran, no cleanup
    state = tmp_path / "trainer.pt"
    if epochs_done:
        saved = torch.load(state, weights_only=True)
        assert saved["trainer"]["epoch"] == epochs_done  # the last complete state survived
        resumed = train(tmp_path, "--resume")
    else:  # killed while writing the very first state: nothing to resume, start again
        assert not state.exists()
        resumed = train(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert _same(load_file(tmp_path / "last.safetensors"), reference)
    run = torch.load(state, weights_only=True)["run"]
    # each sitting is on record: where the resumed one went on from, on what machine
    sittings = run.get("resumed", [])
    assert len(sittings) == (1 if epochs_done else 0)
    if epochs_done:
        assert sittings[0]["at_step"] >= 8 * epochs_done and sittings[0]["cpu"]
        assert sittings[0]["at_seconds"] > 0
    rows = (tmp_path / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 3 and rows[0].startswith("epoch,loss")
    # the wall-clock column adds the sittings up: it never restarts at a resume
    seconds = [float(row.split(",")[rows[0].split(",").index("seconds")]) for row in rows[1:]]
    assert all(b > a > 0 for a, b in zip(seconds, seconds[1:], strict=False))


def test_refuses_to_overwrite_a_run_and_reports_damage(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *ARGS, "--epochs", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    good = (out / "trainer.pt").read_bytes()
    assert main(["train", *ARGS, "--epochs", "1", "--out", str(out)]) == 2
    assert "already holds a training run" in capsys.readouterr().err
    assert (out / "trainer.pt").read_bytes() == good  # nothing written over it
    (out / "trainer.pt").write_bytes(good[: len(good) // 3])
    assert main(["train", *ARGS, "--epochs", "1", "--out", str(out), "--resume"]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err
    assert main(["train", *ARGS, "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--lr", "-1"], ["--lr", "abc"], ["--epochs", "0"],
                                  ["--weight-decay", "nan"], ["--ramp-end", "0"]])
def test_bad_hyper_parameters_are_one_line_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--data", "digits", *argv])
    assert exc.value.code == 2 and "error" in capsys.readouterr().err
