"""What the commands share in their arguments: the argument types, the parser class (one-line
errors) and the option groups several commands declare. Choices come from the library's own
constants, so a new form, step mode or preset reaches the command line by itself."""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

from .._checks import DTYPES
from ..analysis.energy import PRESETS
from ..conversion.converter import ATTENTION_PRODUCTS, ENCODINGS
from ..core.neurons import FORMS, STEP_MODES
from ..data import CROP_RATIO
from ..errors import ConfigError


def _int_type(minimum: int):
    """An argparse type: a whole number >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_type(1)
_non_negative_int = _int_type(0)


def _number_type(accept, what: str):
    """An argparse type: a finite float for which ``accept(value)`` holds, else ``what``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


def _model_arg(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with a keyword name, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


_positive_float = _number_type(lambda v: v > 0, "a positive number")
_non_negative_float = _number_type(lambda v: v >= 0, "a number >= 0")
_unit_interval = _number_type(lambda v: 0 <= v < 1, "a number in [0, 1)")
_percentile = _number_type(lambda v: 0 < v <= 100, "a percentile in (0, 100]")
_fraction = _number_type(lambda v: 0 < v <= 1, "a number in (0, 1]")
_probability = _number_type(lambda v: 0 <= v <= 1, "a number in [0, 1]")


def _no_default(value) -> bool:
    """True for the defaults help does not show: None, flags and empty lists (0 is shown)."""
    return any(value is v for v in (None, False, True, argparse.SUPPRESS)) or value == []


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the text already names one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = not _no_default(action.default)
        if shown and "default" not in text and action.option_strings:
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """Bad arguments are one line on standard error (exit 2), with a pointer to --help; help
    texts show each option's default."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def add_time_steps(p, default: int | None = None, help: str | None = None) -> None:
    """``--T``: the time steps of the spiking network."""
    p.add_argument("--T", type=_positive_int, default=default, help=help)


def add_groups(p, default: int | None = None, help: str | None = None) -> None:
    """``--groups``/``-G``: the temporal groups G of ExpG models."""
    p.add_argument("--groups", "-G", type=_positive_int, default=default, help=help)


#: the choice options several commands share: flag -> (choices, default, help when none is given)
CHOICES = {
    "--form": (FORMS, "search", "ExpG-IF firing form"),
    "--step-mode": (STEP_MODES, "event", "event: layer by layer over T steps of spike trains; "
                    "collapsed: synapses summed over time in one pass (the same outputs)"),
    "--dtype": (tuple(DTYPES), "float64", "arithmetic of the networks"),
    "--encoding": (ENCODINGS, None, "how images enter the spiking network"),
    "--attention-products": (ATTENTION_PRODUCTS, "codes", "spiking attention products from the "
                             "integer codes, or from the spike trains themselves (the event-level "
                             "form)"),
    "--preset": (tuple(sorted(PRESETS)), "45nm-fp32", "energy per accumulate / per MAC"),
}


def add_choice(p, flag: str, help: str | None = None) -> None:
    """One of the shared choice options of `CHOICES`, with the command's own help text."""
    choices, default, fallback = CHOICES[flag]
    p.add_argument(flag, choices=choices, default=default, help=help or fallback)


def add_json(p, help: str | None = None) -> None:
    p.add_argument("--json", action="store_true",
                   help=help or "print one JSON object instead of the text report")


def add_data_args(p, split: str = "test", limit: int | None = None,
                  held_out: bool = False, recorded: bool = False) -> None:
    """``--data``, ``--split``, ``--limit`` and ``--data-dir``; ``held_out``: the split and limit
    are those of the images scored while training (``--limit`` also spelt ``--test-limit``);
    ``recorded``: ``--split``, ``--img-size`` and ``--crop-ratio`` default to the settings a
    checkpoint recorded (`_runs.apply_recorded_data_settings`), else ``split`` and the usual."""
    p.add_argument("--data", default="digits",
                   help="'digits' (scikit-learn's bundled 8x8 digits), an ImageFolder directory, "
                        "a directory with train/ and test/ ImageFolders, or a .tar.gz of either "
                        "(default: digits)")
    if held_out:
        p.add_argument("--split", default=split, help="the held-out split, scored after each "
                       f"epoch and at the end (default: {split})")
        p.add_argument("--limit", "--test-limit", dest="limit", type=_positive_int, default=limit,
                       help="score this many held-out images, balanced over classes (default: "
                            "all; the training images: --train-limit)")
    else:
        where = "the checkpoint's, else " if recorded else ""
        p.add_argument("--split", default=None if recorded else split,
                       help=f"split to use (default: {where}{split})")
        p.add_argument("--limit", type=_positive_int, default=limit,
                       help="use this many images, balanced over classes (default: all)")
    p.add_argument("--data-dir", default=None,
                   help="cache folder for extracted archives (default: $GE2MST_CACHE or "
                        "~/.cache/ge2mst)")
    own = "the checkpoint's, else " if recorded else ""
    p.add_argument("--img-size", type=_positive_int, default=None, metavar="S",
                   help="image folders: resize each image and centre-crop it to S x S (images "
                        "of any size; training crops at random); other data: resize to S "
                        f"(default: {own}the images' own size)")
    p.add_argument("--crop-ratio", type=_fraction, default=None if recorded else CROP_RATIO,
                   help="with --img-size: the centre crop's share of the resized image's shorter "
                        f"side (the image is resized to S / ratio first; default: {own}"
                        f"{CROP_RATIO})")


def add_user_model_args(p) -> None:
    """``--model-file`` and ``--init-weights``: a network of the user's own, from a file."""
    p.add_argument("--model-file", default=None, metavar="PATH.py:FACTORY",
                   help="your own network: a Python file and the function or class in it that "
                        "builds it (an ordinary nn.Module; ge2mst.prepare makes its ReLUs ExpG "
                        "quantizers)")
    p.add_argument("--init-weights", default=None, metavar="FILE",
                   help="with --model-file: float weights to start from (a state_dict saved with "
                        "torch.save, or a .safetensors file)")


def add_model_args(p, default_model: str = "ge2mst_cnn_tiny") -> None:
    """``--model``, ``--checkpoint``, ``--pretrained``, ``--T`` and ``--groups`` of a run."""
    p.add_argument("--model", default=None, help="registered model (default: the checkpoint's "
                   f"model, else {default_model})")
    p.set_defaults(default_model=default_model)
    p.add_argument("--checkpoint", default=None, help="a .safetensors checkpoint of the model")
    p.add_argument("--pretrained", nargs="?", const=True, default=None, metavar="PATH",
                   help="the weights shipped with ge2mst for --model (alone), or a checkpoint "
                        "or run folder (see create_model(..., pretrained=...))")
    add_user_model_args(p)
    add_time_steps(p, help="time steps (default: 4, or the checkpoint's)")
    add_groups(p, help="temporal groups G, dividing T (default: 2, or the checkpoint's)")


def add_run_args(p, limit: int | None = 512) -> None:
    """Model, data and calibration options shared by the commands that run a model on images."""
    add_model_args(p)
    add_data_args(p, limit=limit, recorded=True)
    p.add_argument("--batch-size", type=_positive_int, default=64, help="images per batch")
    p.add_argument("--calib-images", type=_positive_int, default=256,
                   help="images used to calibrate lambda when no checkpoint is given")
    p.add_argument("--percentile", type=_percentile, default=99.9,
                   help="calibration percentile of the pre-activations (default: 99.9)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the data subset, the weights of an untrained model and samples")
    p.add_argument("--data-mode", choices=("auto", "memory", "stream"), default="auto",
                   help="memory: decode the images first; stream: decode an image folder batch by "
                        "batch (needs --img-size), each pass anew; auto: stream a folder whose "
                        "decoded images would fill a quarter of the memory")
    p.add_argument("--workers", type=_non_negative_int, default=0,
                   help="streamed data: decoding processes (0: in this process)")


def _unwritable_folder(folder: Path) -> str | None:
    """Why files cannot be made in ``folder`` (created when missing), or None."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"{str(existing)!r} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{str(existing)!r} is not writable"
    return None


#: the figure formats matplotlib writes (``--plot``), by file suffix
FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".svgz", ".eps", ".ps", ".jpg", ".jpeg", ".tif",
                   ".tiff", ".webp")


def add_overwrite(p) -> None:
    """``--overwrite``: the one way to let a command replace a file that exists."""
    p.add_argument("--overwrite", action="store_true",
                   help="replace output files that exist (without it an existing file is refused "
                        "before any work)")


def check_outputs(args, outputs: dict[str, str]) -> None:
    """Refuse, before any work, an output that cannot or may not be written: ``outputs`` maps an
    argument (``"out"``, ``"plot"``, ...) to ``"file"``, ``"figure"`` (a file matplotlib can write,
    by its suffix), ``"folder"`` or ``"pair"`` (a file whose command checks itself whether it and
    its companions exist, after its own checks); unset arguments are skipped. The one rule of
    every command: an existing file is replaced only with ``--overwrite`` (a training run folder:
    only with ``--resume``, `ge2mst.training.run`); a missing folder is created."""
    for name, kind in outputs.items():
        value = getattr(args, name, None)
        if not value:
            continue
        flag = "--" + name.replace("_", "-")
        path = Path(value)
        why = _why_not(path, kind, getattr(args, "overwrite", False))
        if why:
            raise ConfigError(f"{flag} {value!r} cannot be written: {why}")


def _why_not(path: Path, kind: str, overwrite: bool) -> str | None:
    if kind == "folder":
        return _unwritable_folder(path)
    if path.is_dir():
        return f"{str(path)!r} is a folder"
    if kind == "figure" and path.suffix.lower() not in FIGURE_SUFFIXES:
        return (f"matplotlib writes no {path.suffix or 'suffix-less'!r} figure; end the name in "
                f"one of {', '.join(FIGURE_SUFFIXES)}")
    if path.exists() and not overwrite and kind != "pair":
        return "the file exists; pass --overwrite to replace it, or choose another name"
    if path.exists() and not os.access(path, os.W_OK):
        return f"{str(path)!r} is not writable"
    return _unwritable_folder(path.parent)
