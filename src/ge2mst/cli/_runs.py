"""What the commands that run a model on images share: the model of ``--model``/``--checkpoint``,
the data, the normalised batches, calibration when no weights are given, and the plain table."""

from __future__ import annotations

import json
import sys
import warnings

import torch

from ..conversion.kinds import is_stbp
from ..data import CROP_RATIO
from ..errors import ConfigError, Ge2msError


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
    user = _user_model(args, override)
    if user is not None:
        return user, {}
    if args.checkpoint:
        model, config = load_checkpoint(args.checkpoint, model_name=args.model, **override)
        args.model = config["model"]
        return model, config
    args.model = args.model or args.default_model
    if getattr(args, "pretrained", None) is not None:
        with warnings.catch_warnings():  # a T or G the weights were not trained at: a note
            warnings.simplefilter("ignore", UserWarning)
            model = create_model(args.model, pretrained=args.pretrained, **override)
        if "note" in model.pretrained_cfg and not getattr(args, "json", False):
            print(f"note: {model.pretrained_cfg['note']}", file=sys.stderr)
        return model, model.pretrained_cfg
    kwargs = model_kwargs_for(args.model, num_classes=data.num_classes, in_chans=data.in_chans,
                              img_size=data.image_size[0], T=args.T, G=args.groups)
    return create_model(args.model, **kwargs), {}


def _user_model(args, override: dict):
    """The prepared network of ``--model-file`` (None without one); its float weights from
    ``--init-weights``. A checkpoint of such a network needs no ``--model-file``: it names it."""
    from ..conversion.user_models import build_user_model, parse_model_file

    if getattr(args, "init_weights", None) and not getattr(args, "model_file", None):
        raise ConfigError("--init-weights gives float weights to the network of --model-file")
    if not getattr(args, "model_file", None):
        return None
    if args.checkpoint or getattr(args, "pretrained", None) is not None or args.model:
        raise ConfigError("--model-file builds the network itself: drop --model, --checkpoint "
                          "and --pretrained (a checkpoint of it rebuilds it without the option)")
    path, factory = parse_model_file(args.model_file)
    model = build_user_model(path, factory, T=override.get("T", 4), G=override.get("G", 2),
                             init_weights=args.init_weights)
    args.model = model.model_name
    return model


def _load_run_data(args):
    """The ``--data`` split of a run, after seeding torch with ``--seed``: decoded, or streamed
    (``--data-mode``)."""
    from ..data import load_dataset

    torch.manual_seed(args.seed)
    if getattr(args, "data_mode", "memory") != "memory":
        streamed = _streamed_split(args, forced=args.data_mode == "stream")
        if streamed is not None:
            return streamed
    size = {} if getattr(args, "img_size", None) is None else {"img_size": args.img_size,
                                                               "crop_ratio": args.crop_ratio}
    return load_dataset(args.data, split=args.split, limit=args.limit, seed=args.seed,
                        cache_dir=args.data_dir, progress=not args.json, **size)


def _streamed_split(args, forced: bool):
    """The split as a streaming folder; None when ``auto`` finds it fits in memory (or is not an
    image folder, or no --img-size is given)."""
    from ..data import decoded_bytes
    from ..data.load import open_stream_dataset
    from ..errors import DataError
    from ..training.inputs import MEMORY_SHARE, machine_memory

    try:
        if args.img_size is None:
            raise DataError("streamed images need their side: give --img-size (e.g. 224)")
        data = open_stream_dataset(args.data, args.split, args.img_size, args.limit, args.seed,
                                   args.data_dir, None, args.crop_ratio)
    except DataError:
        if forced:
            raise
        return None
    if not forced and decoded_bytes(len(data), args.img_size) <= MEMORY_SHARE * machine_memory():
        return None
    return data


def _normalized_batches(args, data, stats: dict) -> list:
    """``--batch-size`` batches of ``data``, normalised with the ``mean``/``std`` that ``stats``
    (a checkpoint's config, a converted network's description) records, else the data's own."""
    from ..data import normalize

    if "mean" in stats and "std" in stats:
        mean, std = torch.tensor(stats["mean"]), torch.tensor(stats["std"])
    else:
        mean, std = data.channel_stats()
    if getattr(data, "streaming", False):  # decoded batch by batch, at every pass
        from ..training.sources import EvaluationBatches, StreamInput

        return EvaluationBatches(StreamInput(data, mean, std, args.workers), args.batch_size)
    return [(normalize(x, mean, std), y) for x, y in data.batches(args.batch_size)]


def batch_images(batches: list) -> list[torch.Tensor]:
    """The images of (images, labels) batches."""
    return [x for x, _ in batches]


def _first_images(batches: list, count: int) -> list[torch.Tensor]:
    """The first ``count`` images of ``batches``, batch by batch."""
    out, left = [], count
    for x, _ in batches:
        if left <= 0:
            break
        out.append(x[:left])
        left -= x.shape[0]
    return out


#: what a run without --checkpoint / --pretrained is told
UNTRAINED = ("no --checkpoint or --pretrained: this is an untrained network (initial weights, "
             "lambda calibrated on the images); its accuracy and energy are not those of a trained "
             "model")


#: the data settings a training run records in its checkpoints, and their defaults
DATA_SETTINGS = {"split": "test", "img_size": None, "crop_ratio": CROP_RATIO}


def apply_recorded_data_settings(args) -> dict:
    """Fill ``--split``, ``--img-size`` and ``--crop-ratio`` left unset from the data settings
    that the checkpoint (``--checkpoint``, or ``--pretrained PATH``) recorded, else from the
    defaults; returns the settings taken from the checkpoint."""
    from .._weights import read_config
    from ..models.pretrained import resolve

    source = args.checkpoint
    pretrained = getattr(args, "pretrained", None)
    if source is None and pretrained is not None and args.model is not None:
        try:
            source = resolve(args.model, pretrained)
        except Ge2msError:
            source = None  # loading the model says what is wrong
    recorded = ((read_config(source) or {}).get("data_settings") or {}) if source else {}
    taken = {}
    for key, default in DATA_SETTINGS.items():
        if getattr(args, key, None) is None:
            value = recorded.get(key)
            if value is not None:
                taken[key] = value
            setattr(args, key, default if value is None else value)
    return taken


def prepare_run(args):
    """Data, model (checkpoint, or built and calibrated on the images) and normalised batches."""
    from ..conversion.calibration import calibrate

    recorded = apply_recorded_data_settings(args)
    data = _load_run_data(args)
    model, config = load_model_for(args, data)
    batches = _normalized_batches(args, data, config)
    # an STBP baseline has no quantizer: untrained, it runs with its initial weights
    pretrained = getattr(args, "pretrained", None)
    calibrated = not args.checkpoint and pretrained is None and not is_stbp(model)
    if calibrated:
        calibrate(model, _first_images(batches, args.calib_images), percentile=args.percentile,
                  seed=args.seed)
    trained = bool(args.checkpoint) or pretrained is not None
    header = {"model": args.model, "checkpoint": args.checkpoint, "data": args.data,
              "split": args.split, "trained": trained, "calibrated": calibrated, "seed": args.seed}
    if recorded:  # the data settings the checkpoint recorded, used as no option overrode them
        header["data_settings_recorded"] = recorded
    if getattr(args, "init_weights", None):
        header["init_weights"] = args.init_weights  # float weights, lambda calibrated
    elif not trained and not getattr(args, "json", False):
        print(f"note: {UNTRAINED}", file=sys.stderr)
    if pretrained is not None:
        header["pretrained"] = "shipped" if pretrained is True else str(pretrained)
        header["pretrained_sha256"] = model.pretrained_cfg["sha256"]
        header["trained_at"] = model.pretrained_cfg.get("trained_at")
        if "note" in model.pretrained_cfg:
            header["note"] = model.pretrained_cfg["note"]
    return model, batches, header


def prepare_spiking(args):
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
    apply_recorded_data_settings(args)
    data = _load_run_data(args)
    batches = _normalized_batches(args, data, snn.description)
    header = {"model": name, "checkpoint": args.checkpoint, "data": args.data,
              "split": args.split, "calibrated": False, "seed": args.seed}
    return snn, batches, header


def _print_table(report: dict) -> None:
    width = max(len(k) for k in report)
    for key, value in report.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        print(f"{key:<{width}}  {value}")


def emit(args, report: dict, text) -> int:
    """Print ``report`` as JSON (``--json``) or as the text ``text(report)``; exit status 0."""
    print(json.dumps(report, indent=2) if args.json else text(report))
    return 0
