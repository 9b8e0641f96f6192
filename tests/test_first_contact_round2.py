"""First contact, round 2: what a new user still tripped over, each at the level where they meet
it (the command line, or Python)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ge2mst import create_model
from ge2mst._files import LOCK_NAME
from ge2mst.cli import main
from ge2mst.errors import Ge2msError, InputError

DIGITS_RUN = ["--data", "digits", "--train-limit", "120", "--test-limit", "40", "--batch-size",
              "40", "--no-tensorboard"]


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("ge2mst: error:"), err
    return err


# ---- 1. a run folder in use is refused; a killed holder leaves nothing stuck -------------------
def test_a_run_folder_in_use_is_refused_and_a_killed_run_leaves_no_lock(tmp_path, capsys):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from ge2mst._files import folder_lock\n"
         "with folder_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(120)",
         str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        code = main(["train", *DIGITS_RUN, "--epochs", "1", "--out", str(out)])
        err = _one_line_error(capsys)
        assert code == 2 and "in use by process" in err and str(holder.pid) in err
        assert not (out / "trainer.pt").exists()  # refused before any work
    finally:
        holder.kill()  # as a killed training run would end
        holder.wait()
    assert main(["train", *DIGITS_RUN, "--epochs", "1", "--out", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["last_epoch"]["epoch"] == 1
    assert (out / LOCK_NAME).is_file()  # the lock file stays; the lock itself went with its holder


# ---- 2 and 3. one rule for every output; figures checked before the work -----------------------
@pytest.mark.parametrize("command", [
    ["eval", "--data", "digits", "--limit", "20", "--no-energy", "--out", "{file}"],
    ["energy", "--data", "digits", "--limit", "8", "--markdown", "{file}"],
    ["energy", "--data", "digits", "--limit", "8", "--plot", "{png}"],
    ["effdim", "--data", "digits", "--limit", "40", "--plot", "{png}"],
])
def test_an_existing_output_file_is_kept_unless_overwrite_is_given(command, tmp_path, capsys):
    files = {"file": tmp_path / "mine.txt", "png": tmp_path / "mine.png"}
    argv = [a.format(file=files["file"], png=files["png"]) for a in command]
    target = Path(next(a for a in argv if a.startswith(str(tmp_path))))
    target.write_text("the user's own file")
    assert main(argv) == 2
    assert "--overwrite" in _one_line_error(capsys)
    assert target.read_text() == "the user's own file"
    assert main([*argv, "--overwrite"]) == 0
    capsys.readouterr()
    assert target.read_bytes() != b"the user's own file"


def test_convert_keeps_an_existing_spiking_network_unless_overwrite(tmp_path, capsys):
    checkpoint = tmp_path / "run"
    assert main(["train", *DIGITS_RUN, "--epochs", "1", "--out", str(checkpoint), "--json"]) == 0
    capsys.readouterr()
    out = tmp_path / "snn.safetensors"
    argv = ["convert", str(checkpoint / "last.safetensors"), "--out", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    first = out.read_bytes()
    assert main(argv) == 2 and "--overwrite" in _one_line_error(capsys)
    out.unlink()  # the description alone still stands: replacing it needs --overwrite too
    assert main(argv) == 2 and "description" in _one_line_error(capsys)
    assert main([*argv, "--overwrite"]) == 0 and out.read_bytes() == first


def test_a_figure_matplotlib_cannot_write_is_refused_before_the_count(tmp_path, capsys,
                                                                      monkeypatch):
    import ge2mst.cli.energy as energy

    def no_count(*args, **kwargs):
        raise AssertionError("the count ran before the figure's name was checked")

    monkeypatch.setattr(energy, "_counts", no_count)
    for name in ("out.txt", "figure"):
        assert main(["energy", "--data", "digits", "--limit", "8", "--plot",
                     str(tmp_path / name)]) == 2
        assert ".png" in _one_line_error(capsys)


def test_a_figure_in_a_missing_folder_is_written_there(tmp_path, capsys):
    target = tmp_path / "figures" / "of" / "energy.pdf"
    assert main(["energy", "--data", "digits", "--limit", "8", "--plot", str(target)]) == 0
    capsys.readouterr()
    assert target.read_bytes()[:5] == b"%PDF-"


# ---- 4. a wrong rank or channel count is a Ge2msError in ANN mode, as in the SNN -------------------
@pytest.mark.parametrize("shape", [(3, 32, 32), (2, 1, 32, 32), (2, 3, 32), (1, 2, 3, 32, 32)])
@pytest.mark.parametrize("training", [False, True])
def test_an_ann_refuses_a_wrong_rank_or_channel_count_with_one_error(shape, training):
    model = create_model("ge2mst_cifar_tiny").train(training)
    with pytest.raises(InputError, match=r"B x 3 x H x W") as info:
        model(torch.randn(*shape))
    assert isinstance(info.value, Ge2msError) and str(tuple(shape)) in str(info.value)
    with pytest.raises(InputError, match="floating-point"):
        model(torch.zeros(2, 3, 32, 32, dtype=torch.int64))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)  # the right input still runs


def test_an_adapted_model_asks_for_its_adapters_channels():
    model = create_model("ge2mst_cnn_tiny", in_chans=3, adapter_chans=4).eval()
    assert model(torch.randn(2, 4, 16, 16)).shape[0] == 2
    with pytest.raises(InputError, match="B x 4 x H x W"):
        model(torch.randn(2, 3, 16, 16))


# ---- 6. shipped weights run at another (T, G): a note ------------------------------------------------
def test_pretrained_weights_at_another_t_or_g_come_with_a_note(tmp_path, capsys):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = create_model("ge2mst_cifar_tiny", pretrained=True, T=8, G=2)
    assert model.pretrained_cfg["trained_at"] == {"T": 4, "G": 2}
    assert any("trained at T = 4, G = 2" in str(w.message) for w in caught)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the shipped setting: not a word
        create_model("ge2mst_cifar_tiny", pretrained=True)
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                tmp_path / cls / f"{i}.png")
    argv = ["eval", "--model", "ge2mst_cifar_tiny", "--pretrained", "--data", str(tmp_path),
            "--no-energy", "--step-mode", "collapsed", "--mode", "snn"]
    assert main([*argv, "--T", "8"]) == 0
    assert "note: the weights of 'ge2mst_cifar_tiny' were trained at T = 4, G = 2; this model " \
           "runs at T = 8, G = 2" in capsys.readouterr().err
    assert main(argv) == 0
    assert "were trained at" not in capsys.readouterr().err


# ---- 7. Ctrl-C names --resume; a finished run can be trained longer --------------------------------
def test_ctrl_c_during_training_names_resume(tmp_path, capsys, monkeypatch):
    import ge2mst.training.run as run

    out = tmp_path / "run"
    assert main(["train", *DIGITS_RUN, "--epochs", "1", "--out", str(out), "--json"]) == 0
    capsys.readouterr()

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "run_training", interrupted)
    assert main(["train", *DIGITS_RUN, "--epochs", "2", "--resume", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "--resume" in err
    assert main(["train", *DIGITS_RUN, "--out", str(tmp_path / "new")]) == 130
    assert "nothing of the run was saved yet" in capsys.readouterr().err


def test_a_finished_run_trains_longer_with_resume_and_more_epochs(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", *DIGITS_RUN, "--out", str(out), "--json", "--ramp-end", "1.0"]
    assert main([*base, "--epochs", "2"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main([*base, "--epochs", "4", "--resume"]) == 0
    longer = json.loads(capsys.readouterr().out)
    assert longer["last_epoch"]["epoch"] == 4 and longer["exact"] is True
    assert longer["extensions"] == [{"at_epoch": 2, "at_step": 6, "from_epochs": 2,
                                     "to_epochs": 4}]
    with open(out / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    # the mix keeps the ramp of the run as planned (reached at step 6): it never falls back
    assert [float(r["p"]) for r in rows] == [0.5, 1.0, 1.0, 1.0]
    lrs = [float(r["lr"]) for r in rows]
    assert lrs[1] == pytest.approx(first["last_epoch"]["lr"])
    assert lrs[2] > lrs[1] and lrs[3] < lrs[2]  # the schedule of 4 epochs from step 6 on
    assert main([*base, "--epochs", "3", "--resume"]) == 2  # cannot take epochs back
    assert "trained 4 epochs already" in _one_line_error(capsys)


# ---- 9. the ImageNet layout: val/ when there is no test/ --------------------------------------------
def test_an_imagefolder_with_train_and_val_holds_out_val(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 2)):
        for cls in ("a", "b"):
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(
                    tmp_path / "data" / split / cls / f"{i}.png")
    code = main(["train", "--data", str(tmp_path / "data"), "--epochs", "1", "--batch-size", "4",
                 "--out", str(tmp_path / "run"), "--no-tensorboard", "--json"])
    captured = capsys.readouterr()
    assert code == 0 and "using val/ as the held-out split" in captured.err
    assert json.loads(captured.out)["exact"] is True


# ---- 10 and 13. what float32 is exact against; the slow exact path says so ---------------------------
def test_eval_in_float32_compares_with_the_folded_ann_and_says_so(capsys):
    argv = ["eval", "--data", "digits", "--limit", "60", "--dtype", "float32", "--no-energy",
            "--json"]
    assert main([*argv, "--step-mode", "collapsed"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ann_reference"] == "BatchNorm folded" and report["max_abs_diff"] == 0.0
    assert "bit for bit" in report["note"]
    assert main(argv) == 0  # event mode: what can differ, and how to get the exact comparison
    assert "--step-mode collapsed" in json.loads(capsys.readouterr().out)["note"]


def test_the_default_exact_evaluation_names_the_fast_path(capsys):
    assert main(["eval", "--data", "digits", "--limit", "20"]) == 0
    err = capsys.readouterr().err
    assert "event by event in float64" in err and "--step-mode collapsed --dtype float32" in err
    assert main(["eval", "--data", "digits", "--limit", "20", "--json"]) == 0
    assert "event by event" not in capsys.readouterr().err  # JSON output stays clean


# ---- 11. a failed download names the other forms --data takes ------------------------------------
def test_a_failed_download_names_the_other_forms_of_data(tmp_path, capsys, monkeypatch):
    import urllib.error
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    assert main(["eval", "--data", "cifar10", "--data-dir", str(tmp_path), "--limit", "4"]) == 2
    err = _one_line_error(capsys)
    assert "--data-dir" in err and "image folder" in err and ".tar.gz" in err and "digits" in err
