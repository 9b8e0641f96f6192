"""The ``ge2mst`` command line.

Every user error (bad argument, missing data, corrupt checkpoint, impossible T/G) is printed as one
line ``ge2mst: error: ...`` on standard error with exit status 2; no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys

import torch

from .._version import __version__
from ..analysis.energy import PRESETS
from ..conversion.kinds import is_stbp
from ..errors import ConfigError, Ge2msError


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


def _add_data_args(p: argparse.ArgumentParser, split: str = "test", limit: int | None = None):
    p.add_argument("--data", default="digits",
                   help="'digits' (scikit-learn's bundled 8x8 digits), an ImageFolder directory, "
                        "a directory with train/ and test/ ImageFolders, or a .tar.gz of either "
                        "(default: digits)")
    p.add_argument("--split", default=split, help=f"split to use (default: {split})")
    p.add_argument("--limit", type=_positive_int, default=limit,
                   help="use this many images, balanced over classes (default: all)")
    p.add_argument("--data-dir", default=None,
                   help="cache folder for extracted archives (default: $GE2MST_CACHE or "
                        "~/.cache/ge2mst)")


def _add_model_args(p: argparse.ArgumentParser, default_model: str = "ge2mst_cnn_tiny"):
    p.add_argument("--model", default=None, help="registered model (default: the checkpoint's "
                   f"model, else {default_model})")
    p.set_defaults(default_model=default_model)
    p.add_argument("--checkpoint", default=None, help="a .safetensors checkpoint of the model")
    p.add_argument("--pretrained", nargs="?", const=True, default=None, metavar="PATH",
                   help="the weights shipped with ge2mst for --model (alone), or a checkpoint "
                        "or run folder (see create_model(..., pretrained=...))")
    p.add_argument("--T", type=_positive_int, default=None, help="time steps (default: 4, or "
                   "the checkpoint's)")
    p.add_argument("--groups", "-G", type=_positive_int, default=None,
                   help="temporal groups G, dividing T (default: 2, or the checkpoint's)")


def _add_run_args(p: argparse.ArgumentParser, limit: int = 512) -> None:
    """Model, data and calibration options shared by the commands that run a model on images."""
    _add_model_args(p)
    _add_data_args(p, limit=limit)
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--calib-images", type=_positive_int, default=256,
                   help="images used to calibrate lambda when no checkpoint is given")
    p.add_argument("--percentile", type=_percentile, default=99.9,
                   help="calibration percentile of the pre-activations (default: 99.9)")
    p.add_argument("--seed", type=int, default=0)


class _Parser(argparse.ArgumentParser):
    """Bad arguments are one line on standard error (exit 2), with a pointer to --help."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ge2mst",
        description="Ge2mS-T: ExpG spiking networks, exactly lossless conversion, energy counts.")
    parser.add_argument("--version", action="version", version=f"ge2mst {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("verify", help="compare a model's ANN and converted SNN outputs on images")
    _add_run_args(p)
    p.add_argument("--form", choices=("search", "sequential"), default="search",
                   help="ExpG-IF firing form: binary search (A) or sequential IF dynamics (B)")
    p.add_argument("--step-mode", choices=("event", "collapsed"), default="event",
                   help="event: layer by layer over T steps of spike trains; collapsed: synapses "
                        "summed over time in one pass")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                   help="arithmetic of both modes (float64: the tight check)")
    p.add_argument("--reference", choices=("trained", "folded"), default="trained",
                   help="ANN to compare with: as trained, or with BatchNorm folded (the "
                        "deployable ANN; bit-identical to --step-mode collapsed in float32)")
    p.add_argument("--attention-products", choices=("codes", "spikes"), default="codes",
                   help="spiking attention products from the integer codes read from the spike "
                        "trains (codes) or from the spike trains themselves, step pair by step "
                        "pair (spikes: the event-level attention)")
    p.add_argument("--oracle-sample", type=_positive_int, default=None,
                   help="neurons per layer and batch that the independent oracle and the form "
                        "cross-check examine (default: 65536; every neuron with --strict)")
    from ..analysis.faults import FAULTS

    p.add_argument("--inject-fault", default=None, metavar="FAULT", choices=FAULTS,
                   help="break the conversion deliberately in one documented way, to see the "
                        f"checks catch it: {', '.join(FAULTS)} (the last with --form sequential)")
    p.add_argument("--strict", action="store_true",
                   help="the oracle examines every neuron, and the exit status is 1 unless the "
                        "run is exact (every check listed under exactness_failures passes)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("energy", help="count SOPs, MACs, spikes and energy per image from the "
                                      "spikes a converted model emits")
    _add_run_args(p, limit=64)
    p.add_argument("--form", choices=("search", "sequential"), default="search",
                   help="ExpG-IF firing form (changes the neuron comparisons, not the spikes)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="45nm-fp32",
                   help="energy per accumulate / per MAC (default: 45nm-fp32, 0.9 / 4.6 pJ)")
    p.add_argument("--plot", default=None, help="write a PNG: cumulative SOPs and upper bound, "
                   "firing rate per layer")
    p.add_argument("--markdown", default=None, help="write the per-layer table as markdown")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_energy)

    p = sub.add_parser("eval", help="top-1/top-5 accuracy, images/s and energy of a checkpoint's "
                                    "ANN and of its spiking network")
    _add_run_args(p, limit=None)
    p.add_argument("--mode", choices=("ann", "snn", "both"), default=None,
                   help="run the trained network (ann), its converted spiking network (snn) or "
                        "both and compare them (default: both; snn for a 'ge2mst convert' file)")
    p.add_argument("--form", choices=("search", "sequential"), default="search",
                   help="ExpG-IF firing form of the conversion")
    p.add_argument("--encoding", choices=("once", "repeat"), default=None,
                   help="image as the input current of step 1 (once) or x / T at every step "
                        "(repeat); default: repeat for QCFS models, else once")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                   help="arithmetic of both modes (float64: the exact comparison)")
    p.add_argument("--step-mode", choices=("event", "collapsed"), default="event",
                   help="spiking network layer by layer over T steps of spike trains (event), "
                        "or with the synapses summed over time in one pass (collapsed: same "
                        "spikes and outputs; ExpG models only)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="45nm-fp32",
                   help="energy per accumulate / per MAC (default: 45nm-fp32)")
    p.add_argument("--no-energy", dest="energy", action="store_false",
                   help="skip the operation and energy counts (a second pass of the SNN)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--out", default=None, help="also write the JSON report to this file")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("convert", help="convert a trained checkpoint into its spiking network and "
                                       "save it (safetensors + JSON)")
    p.add_argument("checkpoint", help="the trained .safetensors checkpoint")
    p.add_argument("--out", required=True, help="the spiking network's .safetensors (its "
                   "description goes beside it as .json)")
    p.add_argument("--T", type=_positive_int, default=None,
                   help="time steps (default: the checkpoint's)")
    p.add_argument("--groups", "-G", type=_positive_int, default=None,
                   help="temporal groups G, dividing T (default: the checkpoint's)")
    p.add_argument("--form", choices=("search", "sequential"), default="search",
                   help="ExpG-IF firing form")
    p.add_argument("--step-mode", choices=("event", "collapsed"), default="event")
    p.add_argument("--encoding", choices=("once", "repeat"), default=None,
                   help="default: repeat for QCFS models (vanilla IF), else once")
    p.add_argument("--attention-products", choices=("codes", "spikes"), default="codes")
    p.add_argument("--if-steps", type=_positive_int, default=None,
                   help="time steps of vanilla IF neurons (QCFS models; default: the quantizer's L)")
    p.add_argument("--json", action="store_true", help="print the description as one JSON object")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("effdim", help="effective dimension of pixels and attention inputs, the "
                                      "error against (T, G), and a fit of the spike constant C")
    _add_run_args(p, limit=256)
    p.add_argument("--layers", nargs="*", default=None, help="also measure these named layers")
    p.add_argument("--bootstrap", type=int, default=100, help="bootstrap draws (default: 100)")
    p.add_argument("--settings", nargs="*", default=["1:1", "2:1", "2:2", "4:1", "4:2", "4:4",
                                                     "8:2", "8:4"],
                   help="T:G pairs of the error curve (default: 1:1 2:1 2:2 4:1 4:2 4:4 8:2 8:4)")
    p.add_argument("--curve-images", type=_positive_int, default=128)
    p.add_argument("--target-epsilon", type=float, default=0.05,
                   help="error target of the time-step advice (default: 0.05)")
    p.add_argument("--plot", default=None, help="write a PNG")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_effdim)

    p = sub.add_parser("train", help="train in a folder, safe to kill and to resume (--resume): "
                                     "progressive ExpG training, or STBP for the baselines")
    _add_data_args(p, limit=None)
    p.add_argument("--frames", type=_positive_int, default=None,
                   help="event data: time frames per sample (stacked as 2 x frames channels)")
    p.add_argument("--event-size", type=_positive_int, default=None,
                   help="event data: average-pool each frame to this side (e.g. 48; default: the "
                        "sensor's 128)")
    p.add_argument("--model", default=None, help="registered model (default: ge2mst_cnn_tiny, or "
                   "the --finetune checkpoint's)")
    p.add_argument("--method", choices=("progressive", "stbp"), default=None,
                   help="progressive (ExpG models) or stbp (spiking baselines); default: the model's")
    p.add_argument("--finetune", default=None, metavar="CHECKPOINT",
                   help="start from these weights with a new head (and an input adapter when the "
                        "data have other channels, e.g. event frames)")
    p.add_argument("--width", type=_positive_int, default=None, help="base width (model default)")
    p.add_argument("--model-arg", dest="model_args", type=_model_arg, action="append", default=[],
                   metavar="KEY=VALUE", help="another keyword of the model's builder, e.g. "
                   "quantizer=qcfs or attention=a2os2a (VALUE read as JSON when it parses); repeatable")
    p.add_argument("--T", type=_positive_int, default=None, help="time steps (default: 4, or the "
                   "--finetune checkpoint's)")
    p.add_argument("--groups", "-G", type=_positive_int, default=None,
                   help="temporal groups G dividing T (default: 2, or the checkpoint's)")
    p.add_argument("--epochs", type=_positive_int, default=30)
    p.add_argument("--batch-size", type=_positive_int, default=64,
                   help="global batch size (shared by the processes under torchrun)")
    p.add_argument("--lr", type=_positive_float, default=3e-3)
    p.add_argument("--weight-decay", type=_non_negative_float, default=5e-4)
    p.add_argument("--warmup-epochs", type=_non_negative_float, default=1.0)
    p.add_argument("--label-smoothing", type=_non_negative_float, default=0.1)
    p.add_argument("--grad-clip", type=_non_negative_float, default=5.0)
    p.add_argument("--ramp-end", type=_positive_float, default=0.7,
                   help="fraction of training at which ClipReLU has become ExpG (p = 1)")
    p.add_argument("--crop-padding", type=_non_negative_int, default=1)
    p.add_argument("--hflip", nargs="?", const="random", default="off",
                   choices=("off", "random", "alternate"),
                   help="horizontal flips: random per image (--hflip alone), or alternate: each "
                        "image flipped in every other epoch (default: off)")
    p.add_argument("--schedule", choices=("cosine", "linear"), default="cosine",
                   help="learning-rate decay to 0 after the warm-up (default: cosine)")
    p.add_argument("--mixup", type=_non_negative_float, default=0.0, metavar="ALPHA",
                   help="mixup with Beta(ALPHA, ALPHA) mixing (default: off)")
    p.add_argument("--cutmix", type=_non_negative_float, default=0.0, metavar="ALPHA",
                   help="cutmix with Beta(ALPHA, ALPHA) areas (default: off; with --mixup, one "
                        "of the two per batch)")
    p.add_argument("--ema-decay", type=_unit_interval, default=0.0,
                   help="keep a moving average of the weights with this decay (e.g. 0.999) and "
                        "export it (default: off)")
    p.add_argument("--amp", action="store_true", help="mixed precision (bfloat16 autocast; "
                   "float16 with loss scaling on GPUs without bfloat16)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the training forward and backward (the first steps "
                        "compile for a minute or two; needs a C++ compiler on a CPU)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false",
                   help="do not write TensorBoard logs (written when tensorboard is installed)")
    p.add_argument("--train-limit", type=_positive_int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/train", help="folder of the run (default: runs/train)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("quickstart", help="train a small ExpG network, convert it, verify it "
                       "and report its energy (the embedded default runs in minutes on a CPU)")
    _add_data_args(p)
    p.add_argument("--model", default="ge2mst_cnn_tiny")
    p.add_argument("--width", type=_positive_int, default=16, help="base channel width")
    p.add_argument("--T", type=_positive_int, default=4)
    p.add_argument("--groups", "-G", type=_positive_int, default=2)
    p.add_argument("--epochs", type=_positive_int, default=30)
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--lr", type=_positive_float, default=3e-3)
    p.add_argument("--train-limit", type=_positive_int, default=None,
                   help="use this many training images (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/quickstart",
                   help="folder for report.json, report.png and the checkpoint")
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    p.set_defaults(func=cmd_quickstart)

    p = sub.add_parser("info", help="parameters, MACs, SOPs upper bound, tokens and attention "
                                    "groups per stage of a model")
    p.add_argument("--model", default="ge2mst_small")
    p.add_argument("--img-size", type=_positive_int, default=None,
                   help="input side (default: the model's, e.g. 224 or 32)")
    p.add_argument("--in-chans", type=_positive_int, default=3)
    p.add_argument("--num-classes", type=_positive_int, default=None)
    p.add_argument("--T", type=_positive_int, default=None, help="time steps (default: 4)")
    p.add_argument("--groups", "-G", type=_positive_int, default=None,
                   help="temporal groups of ExpG models (default: 2)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("list-models", help="list the registered models")
    p.add_argument("pattern", nargs="?", default="*")
    p.set_defaults(func=cmd_list_models)
    return parser


def load_model_for(args, data) -> tuple[torch.nn.Module, dict]:
    """The model of ``--model``/``--checkpoint`` (T and G overridden when given) and its config."""
    from ..io.checkpoint import load_checkpoint
    from ..models import create_model, model_kwargs_for

    override = {}
    if args.T is not None:
        override["T"] = args.T
    if args.groups is not None:
        override["G"] = args.groups
    if args.checkpoint and getattr(args, "pretrained", None) is not None:
        raise ConfigError("give --checkpoint or --pretrained, not both")
    if args.checkpoint:
        model, config = load_checkpoint(args.checkpoint, model_name=args.model, **override)
        args.model = config["model"]
        return model, config
    args.model = args.model or args.default_model
    if getattr(args, "pretrained", None) is not None:
        model = create_model(args.model, pretrained=args.pretrained, **override)
        return model, model.pretrained_cfg
    kwargs = model_kwargs_for(args.model, num_classes=data.num_classes, in_chans=data.in_chans,
                              img_size=data.image_size[0], T=args.T, G=args.groups)
    return create_model(args.model, **kwargs), {}


def _load_run_data(args):
    """The ``--data`` split of a run, after seeding torch with ``--seed``."""
    from ..data import load_dataset

    torch.manual_seed(args.seed)
    return load_dataset(args.data, split=args.split, limit=args.limit, seed=args.seed,
                        cache_dir=args.data_dir, progress=not args.json)


def _normalized_batches(args, data, stats: dict) -> list:
    """``--batch-size`` batches of ``data``, normalised with the ``mean``/``std`` that ``stats``
    (a checkpoint's config, a converted network's description) records, else the data's own."""
    from ..data import normalize

    if "mean" in stats and "std" in stats:
        mean, std = torch.tensor(stats["mean"]), torch.tensor(stats["std"])
    else:
        mean, std = data.channel_stats()
    return [(normalize(x, mean, std), y) for x, y in data.batches(args.batch_size)]


def prepare_run(args):
    """Data, model (checkpoint, or built and calibrated on the images) and normalised batches."""
    from ..conversion.calibration import calibrate

    data = _load_run_data(args)
    model, config = load_model_for(args, data)
    batches = _normalized_batches(args, data, config)
    # an STBP baseline has no quantizer: untrained, it runs with its initial weights
    pretrained = getattr(args, "pretrained", None)
    calibrated = not args.checkpoint and pretrained is None and not is_stbp(model)
    if calibrated:
        calib, left = [], args.calib_images
        for x, _ in batches:
            if left <= 0:
                break
            calib.append(x[:left])
            left -= x.shape[0]
        calibrate(model, calib, percentile=args.percentile, seed=args.seed)
    header = {"model": args.model, "checkpoint": args.checkpoint, "data": args.data,
              "split": args.split, "calibrated": calibrated, "seed": args.seed}
    if pretrained is not None:
        header["pretrained"] = "shipped" if pretrained is True else str(pretrained)
        header["pretrained_sha256"] = model.pretrained_cfg["sha256"]
    return model, batches, header


def cmd_verify(args) -> int:
    from ..analysis.verification import DEFAULT_ORACLE_SAMPLE, is_exact, verify

    if args.strict and args.oracle_sample is not None:
        raise ConfigError("--strict makes the oracle examine every neuron: drop --oracle-sample")
    sample = None if args.strict else (args.oracle_sample or DEFAULT_ORACLE_SAMPLE)
    fault = args.inject_fault
    if fault is not None:
        from ..analysis.faults import FAULT_FORMS, inject

        if FAULT_FORMS.get(fault, args.form) != args.form:
            raise ConfigError(f"--inject-fault {fault} acts on --form {FAULT_FORMS[fault]} only")
    model, batches, header = prepare_run(args)
    with inject(fault, model) if fault is not None else contextlib.nullcontext():
        report = verify(model, batches, step_mode=args.step_mode, form=args.form, dtype=args.dtype,
                        reference=args.reference, attention_products=args.attention_products,
                        oracle_sample=sample, seed=args.seed, progress=not args.json)
    report = {**header, **report}
    if fault is not None:
        report["injected_fault"] = fault
    exact = is_exact(report)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_table(report)
    return 1 if (args.strict and not exact) else 0


def cmd_energy(args) -> int:
    from ..analysis.energy import count_operations, plot_report, to_markdown
    from ..conversion.converter import convert

    model, batches, header = prepare_run(args)
    if is_stbp(model):  # already its own spiking network
        from ..analysis.energy_stbp import count_stbp_operations

        counts = count_stbp_operations(model.eval(), [x for x, _ in batches], preset=args.preset)
        report = {**header, "T": model.T, **counts}
    else:
        snn = convert(model.eval(), form=args.form)
        report = {**header, "T": snn.T, **count_operations(snn, [x for x, _ in batches],
                                                           preset=args.preset)}
    if args.plot:
        plot_report(report, args.plot, title=f"{args.model} on {report['images']} images of "
                                               f"{args.data}")
        report["plot"] = args.plot
    table = to_markdown(report)
    if args.markdown:
        from ..io.checkpoint import atomic_write_bytes

        atomic_write_bytes(args.markdown, (table + "\n").encode())
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(table)
    return 0


def cmd_eval(args) -> int:
    from ..analysis.evaluation import evaluate, format_report
    from ..io.spiking import is_spiking_file

    if args.checkpoint and is_spiking_file(args.checkpoint):
        model, batches, header = _prepare_spiking(args)
        mode = args.mode or "snn"
    else:
        model, batches, header = prepare_run(args)
        mode = args.mode or "both"
    report = evaluate(model, batches, mode=mode, form=args.form, encoding=args.encoding,
                      dtype=args.dtype, preset=args.preset, energy=args.energy,
                      step_mode=args.step_mode)
    report = {**header, **report}
    if args.out:
        from ..io.checkpoint import atomic_write_bytes

        atomic_write_bytes(args.out, (json.dumps(report, indent=2) + "\n").encode())
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
    return 0


def _prepare_spiking(args):
    """Data and batches for a spiking network written by ``ge2mst convert``."""
    from ..errors import CheckpointError
    from ..io.spiking import load_spiking

    if args.T is not None or args.groups is not None:
        raise ConfigError(f"{args.checkpoint!r} is a converted spiking network: T and G were fixed "
                          "by 'ge2mst convert'; convert the trained checkpoint again with --T/--groups")
    snn = load_spiking(args.checkpoint)
    name = snn.description["model"]
    if args.model is not None and args.model != name:
        raise CheckpointError(f"spiking network {args.checkpoint!r} holds model {name!r}, "
                              f"not {args.model!r}")
    data = _load_run_data(args)
    batches = _normalized_batches(args, data, snn.description)
    header = {"model": name, "checkpoint": args.checkpoint, "data": args.data,
              "split": args.split, "calibrated": False, "seed": args.seed}
    return snn, batches, header


def cmd_convert(args) -> int:
    from pathlib import Path

    from ..errors import CheckpointError
    from ..io.spiking import convert_checkpoint, save_spiking

    out, src = Path(args.out), Path(args.checkpoint)
    if out.suffix != ".safetensors":
        raise CheckpointError(f"--out must end in .safetensors, got {args.out!r}")
    if src.exists() and (out.resolve() == src.resolve()
                         or out.with_suffix(".json").resolve() == src.with_suffix(".json").resolve()):
        raise CheckpointError(f"--out {args.out!r} would overwrite the trained checkpoint "
                              f"{args.checkpoint!r}: choose another file")
    snn, description = convert_checkpoint(
        args.checkpoint, T=args.T, G=args.groups, form=args.form, step_mode=args.step_mode,
        encoding=args.encoding, attention_products=args.attention_products,
        if_steps=args.if_steps)
    save_spiking(out, snn, description)
    files = {"weights": str(out), "description": str(out.with_suffix(".json"))}
    if args.json:
        print(json.dumps({**description, "files": files}, indent=2))
    else:
        groups = f", G={description['G']}" if description["G"] is not None else ""
        print(f"converted {description['model']} (T={description['T']}{groups}, "
              f"{', '.join(description['neurons'])}, form {args.form}, {args.step_mode} steps)")
        print(f"wrote {files['weights']} and {files['description']}")
    return 0


def _print_table(report: dict) -> None:
    width = max(len(k) for k in report)
    for key, value in report.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        print(f"{key:<{width}}  {value}")


def _settings(texts: list[str]) -> list[tuple[int, int]]:
    from ..errors import ConfigError

    out = []
    for text in texts:
        try:
            T, G = (int(v) for v in text.split(":"))
        except ValueError:
            raise ConfigError(f"settings are T:G pairs such as 4:2, got {text!r}") from None
        out.append((T, G))
    return out


def cmd_effdim(args) -> int:
    from ..analysis import effdim as ed

    settings = _settings(args.settings)
    model, batches, header = prepare_run(args)
    images = torch.cat([x for x, _ in batches])
    feats = ed.features(model, images, args.layers)
    dims, spectra = {}, {}
    for name, x in feats.items():
        dims[name] = ed.estimate_dimensions(x, bootstrap=args.bootstrap, seed=args.seed)
        spectra[name] = ed.spectrum(x[:4000])
    curve = ed.epsilon_curve(model, images[:args.curve_images], settings)
    l_f = ed.lipschitz_estimate(ed.full_precision(model), images[:64], seed=args.seed)
    n = curve[0]["neurons_per_image"]
    d = dims["pixels"]["participation_ratio"]["value"]
    fit = None
    usable = [dict(p, L_f=l_f, n=n, d=d) for p in curve if p["epsilon"] > 0]
    if len(usable) >= 2:
        fit = ed.fit_constant(usable, seed=args.seed)
    report = {**header, "dimensions": dims, "curve": curve, "L_f": l_f, "n": n, "d": d,
              "d_source": "participation ratio of the pixels", "fit": fit,
              "advice": {"target_epsilon": args.target_epsilon,
                         "cheapest_measured": ed.advise(curve, args.target_epsilon)},
              "reconstruction": "n = spiking neurons per image, d = participation ratio, L_f = "
                                "empirical local Lipschitz constant, epsilon = mean relative "
                                "logit error against the full-precision network; seed 004 does "
                                "not define these"}
    if args.plot:
        ed.plot_effdim({**report, "_spectra": spectra}, args.plot)
        report["plot"] = args.plot
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for name, dm in dims.items():
            print(f"{name:<28} PCA-90/95/99 {dm['pca_90']['value']:.0f} / {dm['pca_95']['value']:.0f}"
                  f" / {dm['pca_99']['value']:.0f}, participation ratio "
                  f"{dm['participation_ratio']['value']:.1f} {dm['participation_ratio']['ci']}, "
                  f"entropy rank {dm['entropy_rank']['value']:.1f}")
        for p in curve:
            print(f"T={p['T']} G={p['G']}: epsilon {p['epsilon']:.4f}, "
                  f"{p['spikes_per_image']:,.0f} spikes per image")
        if fit:
            print(f"C = {fit['C']:.4g} (CI {fit['ci'][0]:.3g}..{fit['ci'][1]:.3g}), R^2 = {fit['r2']}")
    return 0


def cmd_train(args) -> int:
    from ..training.run import run_training

    report = run_training(args)
    if report is None:  # a rank other than 0 under torchrun: rank 0 reports
        return 0
    if args.json:
        print(json.dumps(report, indent=2))
    elif report["method"] == "stbp":
        print(f"last epoch: {report['last_epoch']}")
        print(f"test accuracy (spiking network) {report['snn_accuracy']}; weights {report['checkpoint']}")
    else:
        print(f"last epoch: {report['last_epoch']}")
        print(f"test accuracy ANN {report['ann_accuracy']}, SNN {report['snn_accuracy']}, "
              f"exact {report['exact']}; weights {report['checkpoint']}")
    return 1 if report["exact"] is False else 0


def cmd_quickstart(args) -> int:
    from .quickstart import run_quickstart

    report = run_quickstart(args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_summary(report)
    return 0 if report["exact"] else 1


def _print_summary(report: dict) -> None:
    v, e = report["verify"], report["energy"]
    print(f"model            {report['model']}  (T={report['T']}, G={report['groups']}, "
          f"{report['params']:,} parameters)")
    print(f"data             {report['data']}: {report['train_images']} train / "
          f"{report['test_images']} held-out images")
    print(f"training         {report['epochs']} epochs in {report['train_seconds']:.1f} s "
          f"(seed {report['seed']})")
    print(f"accuracy         ANN {v['ann_accuracy']:.4f}   SNN {v['snn_accuracy']:.4f}")
    print(f"exactness        max |SNN - ANN| = {v['max_abs_diff']:.3g} (rel {v['max_rel_diff']:.3g}),"
          f" {v['code_mismatches']} of {v['codes_compared']:,} neuron codes differ, "
          f"prediction agreement {v['prediction_agreement']:.4f}")
    print(f"spikes           {v['mean_spikes_per_neuron']:.3f} per neuron (max "
          f"{v['max_spikes_per_neuron']}, cap G = {report['groups']}), "
          f"{v['illegal_patterns']} illegal patterns")
    print(f"operations/image {e['sops']:,.0f} SOPs + {e['macs']:,.0f} MACs "
          f"(SOP upper bound {e['sops_upper_bound']:,.0f})")
    print(f"energy/image     SNN {e['energy_mj'] * 1e3:.4f} uJ vs ANN {e['ann_energy_mj'] * 1e3:.4f} uJ "
          f"({e['preset']}: {e['energy_ratio']:.2f}x less)")
    print(f"saved            {report['files']['report']}, {report['files'].get('plot', '(no plot)')}, "
          f"{report['files']['checkpoint']}")
    print("verdict          " + ("EXACT: the spiking network reproduces the ANN on every image"
                                 if report["exact"] else "NOT EXACT: see report.json"))


def cmd_info(args) -> int:
    from ..analysis.info import model_info
    from ..models import create_model, model_kwargs_for, model_spec

    spec = model_spec(args.model)
    size = args.img_size or spec.img_size or 32
    kwargs = model_kwargs_for(args.model, num_classes=args.num_classes or 10, in_chans=args.in_chans,
                              img_size=size, T=args.T, G=args.groups)
    if args.num_classes is None:
        kwargs.pop("num_classes")  # the model's own default
    model = create_model(args.model, **kwargs)
    info = {"model": args.model, **model_info(model, (args.in_chans, size, size))}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{args.model}: {info['params']:,} parameters, input {size}x{size}, T={info['T']}, "
          f"G={info['G']}")
    print(f"  ANN MACs per image          {info['macs']:,.0f}")
    print(f"  SOPs upper bound per image  {info['sops_upper_bound']:,.0f}")
    for a in info["attention"]:
        print(f"  {a['module']:<28} {a['type']:<6} {a['map'][0]}x{a['map'][1]} tokens, "
              f"{a['groups']} groups of {a['tokens_per_group']}, {a['heads']} heads "
              f"({a['global_heads']} global)")
    return 0


def cmd_list_models(args) -> int:
    from ..models import list_models

    for name in list_models(args.pattern):
        print(name)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except Ge2msError as exc:
        print(f"ge2mst: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ge2mst: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
