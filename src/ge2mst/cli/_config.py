"""``--config FILE.toml``: options read from a file, written as the command line would.

The file is a flat TOML table of long option names without their dashes (``batch-size = 1024``,
``hflip = "random"``, ``amp = true``); a list repeats the option (``model-arg = ["a=1", "b=2"]``).
It is read before the command line is parsed and its options go in front of the others, so an
option given on the command line wins over the file's.
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

from ..errors import ConfigError

FLAG = "--config"


def expand_config(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """``argv`` with ``--config FILE`` replaced by the file's options, placed right after the
    command name; ``argv`` unchanged when it names no file."""
    where = [i for i, token in enumerate(argv) if token == FLAG or token.startswith(FLAG + "=")]
    if not where:
        return argv
    if len(where) > 1:
        raise ConfigError(f"{FLAG} given {len(where)} times: give one file")
    i = where[0]
    if argv[i] == FLAG:
        if i + 1 >= len(argv):
            raise ConfigError(f"{FLAG} needs a file name")
        path, rest = argv[i + 1], argv[:i] + argv[i + 2:]
    else:
        path, rest = argv[i].split("=", 1)[1], argv[:i] + argv[i + 1:]
    command = next((t for t in rest if not t.startswith("-")), None)
    options = _command_options(parser, command)
    tokens = _tokens(_read(path), options, path)
    at = rest.index(command) + 1
    return rest[:at] + tokens + rest[at:]


def _read(path: str) -> dict:
    try:
        with Path(path).expanduser().open("rb") as f:
            return tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path!r} ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path!r} is not valid TOML ({exc})") from None


def _command_options(parser: argparse.ArgumentParser, command: str | None) -> dict:
    """The long options of ``command`` that a config file may set: name -> argparse action."""
    for action in parser._actions:  # the sub-command table
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            sub = action.choices[command]
            return {flag: a for flag, a in sub._option_string_actions.items()
                    if flag.startswith("--") and flag not in ("--help", FLAG)}
    raise ConfigError(f"{FLAG} needs a command before it (e.g. 'ge2mst train {FLAG} FILE')")


def _tokens(table: dict, options: dict, path: str) -> list[str]:
    tokens: list[str] = []
    for key, value in table.items():
        flag = "--" + key
        action = options.get(flag)
        if action is None:
            raise ConfigError(f"config file {path!r}: {key!r} is not an option of this command "
                              "(use the long option names, without the dashes)")
        if isinstance(value, dict):
            raise ConfigError(f"config file {path!r}: {key!r} holds a table; give a value")
        if isinstance(value, bool):
            if action.nargs != 0:
                raise ConfigError(f"config file {path!r}: {key!r} takes a value, not {value}")
            tokens += [flag] if value else []
            continue
        if action.nargs == 0:
            raise ConfigError(f"config file {path!r}: {key!r} is a switch: write true or false")
        for item in value if isinstance(value, list) else [value]:
            tokens += [flag, str(item)]
    return tokens


__all__ = ["expand_config"]
