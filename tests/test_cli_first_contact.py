"""What a new user meets first at the command line: help that says what each option does and what
it defaults to, and a training run that says what it trains on before it spends any time."""

from __future__ import annotations

import argparse

import pytest

from ge2mst.cli import build_parser, main
from ge2mst.cli._args import _no_default


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_option_has_a_description_and_shows_its_default(command):
    p = _commands()[command]
    missing, no_default = [], []
    for action in p._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        if not action.help:
            missing.append(name)
        elif not _no_default(action.default) \
                and "default" not in p.formatter_class(prog="x")._get_help_string(action):
            no_default.append(name)
    assert not missing, f"ge2mst {command}: options without a description: {missing}"
    assert not no_default, f"ge2mst {command}: options that hide their default: {no_default}"


def test_help_prints_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "training epochs (default: 30)" in out and "(default: 0)" in out
    assert "--limit LIMIT, --test-limit LIMIT" in out and "--train-limit" in out


def test_train_says_how_many_images_each_split_uses(tmp_path, capsys):
    rc = main(["train", "--data", "digits", "--epochs", "1", "--train-limit", "100",
               "--test-limit", "50", "--out", str(tmp_path / "run"), "--no-tensorboard"])
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert rc == 0
    assert first == "train: 100 images of the train split; held out: 50 images of the test split"
    rc = main(["train", "--data", "digits", "--epochs", "1", "--out", str(tmp_path / "all"),
               "--no-tensorboard"])
    first = capsys.readouterr().out.splitlines()[0]
    assert rc == 0 and "(all; --train-limit for fewer)" in first
    assert "(all; --test-limit for fewer)" in first


def test_the_readme_main_command_installs_what_the_quickstart_plots_with():
    """The README promises report.png from its first command: that command must install the
    extra that carries matplotlib."""
    import re
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    first = re.search(r"```bash\n(.*?)\n```", readme, re.S).group(1)
    assert "ge2mst quickstart" in first and "report.png" in readme[:readme.index(first)]
    extras = re.findall(r'-e "\.\[([a-z,]+)\]"', first)
    assert extras, f"the main command installs no extra: {first}"
    optional = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    wanted = {dep.split(">")[0] for extra in extras[0].split(",") for dep in optional[extra]}
    assert "matplotlib" in wanted


def test_quickstart_without_matplotlib_says_how_to_get_the_plot(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("no matplotlib here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    rc = main(["quickstart", "--epochs", "1", "--train-limit", "200", "--limit", "60",
               "--out", str(tmp_path / "qs")])
    out = capsys.readouterr().out
    assert rc == 0 and not (tmp_path / "qs" / "report.png").exists()
    assert "pip install matplotlib" in out


@pytest.mark.parametrize("argv", [
    ["train", "--data", "digits", "--out", "{blocked}/run"],
    ["quickstart", "--out", "{blocked}/qs"],
    ["convert", "{tmp}/missing.safetensors", "--out", "{blocked}/snn.safetensors"],
    ["eval", "--model", "ge2mst_cnn_tiny", "--out", "{blocked}/eval.json"],
    ["energy", "--model", "ge2mst_cnn_tiny", "--plot", "{blocked}/energy.png"],
    ["energy", "--model", "ge2mst_cnn_tiny", "--markdown", "{tmp}"],
    ["effdim", "--model", "ge2mst_cnn_tiny", "--plot", "{blocked}/effdim.png"],
])
def test_an_output_that_cannot_be_written_is_refused_before_any_work(argv, tmp_path, capsys):
    """A file where a folder must go (or a folder where a file must go): one line, exit 2, at once
    (nothing trained, no data read: the checkpoint above does not even exist)."""
    blocked = tmp_path / "a-file"
    blocked.write_text("in the way")
    argv = [a.format(blocked=blocked, tmp=tmp_path) for a in argv]
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "cannot be written" in err and ("is a file, not a folder" in err or "is a folder" in err)
    assert blocked.read_text() == "in the way"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_model_in_ann_mode_refuses_nan_and_infinite_pixels(bad):
    import torch

    from ge2mst import InputError, calibrate, create_model

    model = create_model("ge2mst_cifar_tiny")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    calibrate(model, [x])
    model.eval()
    assert torch.isfinite(model(x)).all()
    x[1, 2, 3, 4] = bad
    with pytest.raises(InputError, match="NaN or infinite input"):
        model(x)
    model.train()  # a training step is not checked (no host synchronisation): the loss shows it
    assert not torch.isfinite(model(x)).all()


def test_a_quantizer_with_a_broken_lambda_is_one_clear_error():
    import torch

    from ge2mst import ConfigError, Quantizer, create_model

    model = create_model("ge2mst_cnn_tiny").eval()
    quantizer = next(m for m in model.modules() if isinstance(m, Quantizer))
    for value in (float("nan"), 0.0, -1.0):
        quantizer.lam.data.fill_(value)
        with pytest.raises(ConfigError, match="must be a positive finite number"):
            model(torch.zeros(1, 3, 32, 32))


@pytest.mark.parametrize("command", ["verify", "energy", "eval"])
def test_an_untrained_network_is_called_untrained(command, tmp_path, capsys):
    import json

    argv = [command, "--model", "ge2mst_cnn_tiny", "--data", "digits", "--limit", "40"]
    assert main([*argv, "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["trained"] is False and captured.err == ""
    assert main(argv) == 0
    assert "untrained network" in capsys.readouterr().err


def test_a_trained_checkpoint_is_called_trained(tmp_path, capsys):
    import json

    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--epochs", "1", "--train-limit", "100",
                 "--test-limit", "40", "--out", str(run), "--no-tensorboard", "--json"]) == 0
    capsys.readouterr()
    assert main(["energy", "--checkpoint", str(run / "last.safetensors"), "--data", "digits",
                 "--limit", "40", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["trained"] is True and "untrained" not in captured.err


def test_training_without_a_terminal_prints_progress_lines(tmp_path, capsys, monkeypatch):
    """Logs, CI and nohup get plain lines where tqdm cannot draw (here: captured output)."""
    import ge2mst.training.trainer as trainer

    monkeypatch.setattr(trainer, "PROGRESS_LINE_SECONDS", 0.0)  # a line after every step
    assert main(["train", "--data", "digits", "--epochs", "2", "--train-limit", "128",
                 "--test-limit", "40", "--batch-size", "32", "--out", str(tmp_path / "run"),
                 "--no-tensorboard"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("train: ")]
    assert lines[0].startswith("train: 1/8 steps (12 %)")
    assert lines[-1].startswith("train: 8/8 steps (100 %)") and "loss" in lines[-1]
    monkeypatch.setattr(trainer, "PROGRESS_LINE_SECONDS", 3600.0)  # only the closing line
    assert main(["train", "--data", "digits", "--epochs", "1", "--train-limit", "64",
                 "--test-limit", "40", "--out", str(tmp_path / "run2"), "--no-tensorboard"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("train: ")]
    assert len(lines) == 1 and lines[0].startswith("train: 1/1 steps (100 %)")


def test_a_test_split_the_model_cannot_take_fails_before_training(tmp_path, capsys):
    """train/ at 32 px, test/ at 40 px: ge2mst_cifar_tiny's GW-SSA windows do not divide the 40 px
    token maps; the run says so before the first step, not after an epoch."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, side in (("train", 32), ("test", 40)):
        for label in ("cat", "dog"):
            folder = tmp_path / "data" / split / label
            folder.mkdir(parents=True)
            for i in range(4):
                pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    rc = main(["train", "--model", "ge2mst_cifar_tiny", "--data", str(tmp_path / "data"),
               "--epochs", "1", "--out", str(tmp_path / "run"), "--no-tensorboard"])
    captured = capsys.readouterr()
    assert rc == 2
    assert "the test split's images (3 x 40 x 40) do not fit model 'ge2mst_cifar_tiny'" in captured.err
    assert "epoch 1/1" not in captured.out and not (tmp_path / "run" / "last.safetensors").exists()


def test_train_ends_with_a_short_table_and_outputs_say_where_they_went(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--data", "digits", "--epochs", "1", "--train-limit", "100",
                 "--test-limit", "40", "--out", str(run), "--no-tensorboard"]) == 0
    out = capsys.readouterr().out
    assert "{" not in out  # no raw Python dict
    import re

    table = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in out.splitlines()[-8:])
    assert table["epochs"] == "1 of 1" and table["conversion exact"] == "True"
    assert table["weights"] == str(run / "last.safetensors")
    assert table["test top-1, ANN"] == table["test top-1, SNN"]
    checkpoint = str(run / "last.safetensors")
    assert main(["eval", "--checkpoint", checkpoint, "--data", "digits", "--limit", "40",
                 "--out", str(tmp_path / "eval.json")]) == 0
    assert f"wrote {tmp_path / 'eval.json'}" in capsys.readouterr().err
    assert main(["energy", "--checkpoint", checkpoint, "--data", "digits", "--limit", "40",
                 "--markdown", str(tmp_path / "energy.md")]) == 0
    assert f"wrote {tmp_path / 'energy.md'}" in capsys.readouterr().err


def test_one_attention_group_is_not_one_groups(capsys):
    assert main(["info", "--model", "ge2mst_cifar_tiny"]) == 0
    out = capsys.readouterr().out
    assert "1 groups" not in out and " 1 group of " in out


def test_an_epochs_record_gives_the_mixing_its_test_accuracy_was_measured_at():
    import torch

    from ge2mst import create_model
    from ge2mst.core.quantizers import quantizers
    from ge2mst.training.trainer import TrainConfig, Trainer

    torch.manual_seed(0)
    model = create_model("ge2mst_cnn_tiny", num_classes=4, width=4)
    images = torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(64) % 4
    trainer = Trainer(model, images, labels, TrainConfig(epochs=2, batch_size=16, ramp_end=1.0))
    for _ in range(2):
        record = trainer.run_epoch()
        assert {q.p for _, q in quantizers(trainer.final_model)} == {record["p"]}
    assert record["p"] == 1.0


def test_a_folder_given_as_a_checkpoint_is_called_a_folder(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.safetensors").write_bytes(b"")
    assert main(["eval", "--checkpoint", str(run), "--data", "digits", "--limit", "20"]) == 2
    err = capsys.readouterr().err
    assert "is a folder, not a .safetensors file" in err and "last.safetensors" in err


def test_an_edited_sidecar_json_is_named_and_the_embedded_config_wins(tmp_path, recwarn):
    import json

    from ge2mst import create_model
    from ge2mst.io.checkpoint import load_checkpoint, save_checkpoint

    path = save_checkpoint(tmp_path / "m.safetensors", create_model("ge2mst_cnn_tiny", width=4))
    load_checkpoint(path)
    assert not [w for w in recwarn if "embedded" in str(w.message)]  # untouched: nothing to say
    sidecar = tmp_path / "m.json"
    config = json.loads(sidecar.read_text())
    config["model"] = "ge2mst_cifar_tiny"
    sidecar.write_text(json.dumps(config))
    with pytest.warns(UserWarning, match="the embedded one is used"):
        model, config = load_checkpoint(path)
    assert model.model_name == "ge2mst_cnn_tiny" and config["model"] == "ge2mst_cnn_tiny"


def test_figures_name_layers_by_stage_and_block():
    from ge2mst.analysis.plots import readable_layers

    assert readable_layers(["0.conv", "2.conv", "4.conv", "10"]) == [
        "layer 1", "layer 2", "layer 3", "layer 4"]
    assert readable_layers(["stem.conv", "stages.1.0.fn.attn.q", "stages.2.1.fn.0.conv",
                            "stages.3", "head"]) == [
        "stem", "stage 2 block 1 q", "stage 3 block 2", "stage 4", "head"]


def test_an_unwritable_cache_names_the_option_to_change_it(tmp_path, capsys):
    from conftest import CIFAR, CIFAR_MISSING

    if not CIFAR.is_file():
        pytest.skip(CIFAR_MISSING)
    blocked = tmp_path / "a-file"
    blocked.write_text("in the way")
    rc = main(["verify", "--model", "ge2mst_cnn_tiny", "--data", str(CIFAR), "--limit", "20",
               "--data-dir", str(blocked / "cache")])
    err = capsys.readouterr().err
    assert rc == 2 and "cannot write to the cache folder" in err and "--data-dir" in err
