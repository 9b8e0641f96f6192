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
