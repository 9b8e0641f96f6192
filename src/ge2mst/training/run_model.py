"""The network a new training run starts from: a registered model (calibrated for progressive
training), a ``--finetune`` checkpoint's with a new head, or the user's own network of
``--model-file`` (prepared, from ``--init-weights``)."""

from __future__ import annotations

import torch

from ..conversion.calibration import calibrate
from ..conversion.kinds import training_method
from ..conversion.user_models import build_user_model, parse_model_file
from ..errors import CheckpointError, ConfigError
from ..io.checkpoint import read_checkpoint
from ..models import create_model, model_kwargs_for, model_spec
from .inputs import first_images, model_inputs


def _finetune_model(args, data) -> tuple[torch.nn.Module, dict]:
    """The checkpoint's network with a new head for ``data`` (and an input adapter if the data's
    channels differ); every tensor whose name and shape match is loaded."""
    tensors, config = read_checkpoint(args.finetune)
    name = config["model"]
    if args.model is not None and args.model != name:
        raise ConfigError(f"--finetune {args.finetune!r} holds model {name!r}, but --model {args.model!r} "
                          "was given")
    kwargs = dict(config.get("model_kwargs", {}))
    base_chans = kwargs.get("in_chans", 3)
    kwargs["num_classes"] = data.num_classes
    kwargs.pop("adapter_chans", None)
    if data.in_chans != base_chans:
        kwargs["adapter_chans"] = data.in_chans
    for key, value in (("T", args.T), ("G", args.groups)):
        if value is not None:
            kwargs[key] = value
    if getattr(args, "drop_path", 0):
        kwargs["drop_path_rate"] = args.drop_path
    kwargs.update(dict(args.model_args))
    if model_spec(name).img_size not in (None, data.image_size[0]):  # built for one image side
        kwargs["img_size"] = data.image_size[0]
    model = create_model(name, **kwargs)
    state = model.state_dict()
    prefix = "body." if "adapter_chans" in kwargs and "adapter_chans" not in config["model_kwargs"] else ""
    loaded, fresh = [], []
    for key, value in tensors.items():
        target = prefix + key
        if target in state and state[target].shape == value.shape:
            state[target] = value
            loaded.append(target)
    fresh = sorted(set(state) - set(loaded))
    if not loaded:
        raise CheckpointError(f"--finetune {args.finetune!r}: no tensor matches model {name!r}")
    model.load_state_dict(state)
    return model, {"finetuned_from": str(args.finetune), "loaded_tensors": len(loaded),
                   "new_tensors": fresh}


def new_model(args, data, mean, std) -> tuple[torch.nn.Module, str, dict]:
    """The model of a new run (seeded by the caller), its training method and what to record."""
    if args.finetune:
        model, info = _finetune_model(args, data)
        return model, _checked_method(model.model_name, training_method(model), args.method), info
    if getattr(args, "model_file", None):
        return _user_model(args, data, mean, std)
    name = args.model or "ge2mst_cnn_tiny"
    method = _checked_method(name, model_spec(name).method, args.method)
    extra = {} if args.width is None else {"width": args.width}
    if getattr(args, "drop_path", 0):
        extra["drop_path_rate"] = args.drop_path
    kwargs = model_kwargs_for(name, num_classes=data.num_classes, in_chans=data.in_chans,
                              img_size=data.image_size[0], T=args.T, G=args.groups,
                              **extra, **dict(args.model_args))
    model = create_model(name, **kwargs)
    if method == "progressive":
        calibrate(model, [first_images(model_inputs(data, mean, std), 256)], seed=args.seed)
    return model, method, {}


def _user_model(args, data, mean, std) -> tuple[torch.nn.Module, str, dict]:
    """A new run of the network of ``--model-file`` (prepared, from ``--init-weights`` when
    given), lambda calibrated on the training images."""
    if args.model is not None:
        raise ConfigError("give --model or --model-file, not both")
    path, factory = parse_model_file(args.model_file)
    model = build_user_model(path, factory, T=args.T or 4, G=args.groups or 2,
                             factory_kwargs=dict(args.model_args), init_weights=args.init_weights)
    method = _checked_method(model.model_name, "progressive", args.method)
    calibrate(model, [first_images(model_inputs(data, mean, std), 256)], seed=args.seed)
    info = {} if args.init_weights is None else {"init_weights": str(args.init_weights)}
    return model, method, info


def _checked_method(name: str, method: str, asked: str | None) -> str:
    if asked is not None and asked != method:
        raise ConfigError(f"model {name!r} trains with --method {method}, not {asked}")
    return method


__all__ = ["new_model"]
