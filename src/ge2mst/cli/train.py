"""``ge2mst train``: train in a folder, safe to kill and to resume (``--resume``): progressive
ExpG training, or STBP for the baselines (`ge2mst.training.run.run_training`)."""

from __future__ import annotations

import json

from ..conversion.kinds import TRAINING_METHODS
from ..training.config import AUTO_AUGMENTS, SCHEDULES
from ..training.inputs import DATA_MODES
from . import _args

#: ``--hflip``: no flips, a random flip per image, or each image flipped every other epoch
HFLIPS = ("off", "random", "alternate")
#: ``--device``: a GPU when there is one, else the CPU; or the one named
DEVICES = ("auto", "cpu", "cuda")
#: the argument groups of ``ge2mst train --help``, in order
GROUPS = ("data", "model", "optimisation", "augmentation", "run")

#: the outputs of the command, checked before any work (`_args.check_outputs`)
OUTPUTS = {"out": "folder"}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train", help="train in a folder, safe to kill and to resume "
                                            "(--resume): progressive ExpG training, or STBP for "
                                            "the baselines")
    groups = {name: p.add_argument_group(name) for name in GROUPS}
    # declared in the order of the usage line; each option in its group
    _add_data_and_model(groups)
    _add_optimisation(groups)
    _add_run(groups)
    p.set_defaults(func=run)


def _add_data_and_model(g: dict) -> None:
    _args.add_data_args(g["data"], limit=None, held_out=True)
    g["data"].add_argument("--frames", type=_args._positive_int, default=None,
                           help="event data: time frames per sample (stacked as 2 x frames "
                                "channels)")
    g["data"].add_argument("--event-size", type=_args._positive_int, default=None,
                           help="event data: average-pool each frame to this side (e.g. 48; "
                                "default: the sensor's 128)")
    _add_streaming(g["data"])
    model = g["model"]
    model.add_argument("--model", default=None, help="registered model (default: "
                       "ge2mst_cnn_tiny, or the --finetune checkpoint's)")
    model.add_argument("--method", choices=TRAINING_METHODS, default=None,
                       help="progressive (ExpG models) or stbp (spiking baselines); default: the "
                            "model's")
    model.add_argument("--finetune", default=None, metavar="CHECKPOINT",
                       help="start from these weights with a new head (and an input adapter "
                            "when the data have other channels, e.g. event frames)")
    model.add_argument("--width", type=_args._positive_int, default=None,
                       help="base width (model default)")
    model.add_argument("--model-arg", dest="model_args", type=_args._model_arg, action="append",
                       default=[], metavar="KEY=VALUE",
                       help="another keyword of the model's builder, e.g. quantizer=qcfs or "
                            "attention=a2os2a (VALUE read as JSON when it parses); repeatable")
    _args.add_user_model_args(model)
    model.add_argument("--drop-path", type=_args._unit_interval, default=0.0, metavar="RATE",
                       help="stochastic depth of the Ge2mS-T blocks, rising to RATE in the last "
                            "block (training only: the converted network has none)")
    _args.add_time_steps(model, help="time steps (default: 4, or the --finetune checkpoint's)")
    _args.add_groups(model, help="temporal groups G dividing T (default: 2, or the checkpoint's)")


def _add_streaming(data) -> None:
    data.add_argument("--data-mode", choices=DATA_MODES, default="auto",
                      help="memory: decode every image first; stream: decode image folders "
                           "batch by batch in worker processes; auto: stream a folder whose "
                           "decoded images would fill a quarter of the memory")
    data.add_argument("--workers", type=_args._non_negative_int, default=0,
                      help="streamed data: decoding processes per training process (0: decode "
                           "in the training process)")
    data.add_argument("--skip-bad-images", action="store_true",
                      help="streamed data: skip corrupt or truncated images instead of stopping "
                           "with the file's name; counted per epoch (skipped_images, "
                           "skipped_test_images) in metrics.csv, the report and its summary")


def _add_optimisation(g: dict) -> None:
    opt, aug = g["optimisation"], g["augmentation"]
    opt.add_argument("--epochs", type=_args._positive_int, default=30, help="training epochs")
    opt.add_argument("--batch-size", type=_args._positive_int, default=64,
                     help="global batch size (shared by the processes under torchrun)")
    opt.add_argument("--lr", type=_args._positive_float, default=3e-3,
                     help="peak AdamW learning rate")
    opt.add_argument("--weight-decay", type=_args._non_negative_float, default=5e-4,
                     help="AdamW weight decay of the weights (not of lambda, BatchNorm or biases)")
    opt.add_argument("--warmup-epochs", type=_args._non_negative_float, default=1.0,
                     help="epochs of linear learning-rate warm-up (fractions allowed)")
    opt.add_argument("--label-smoothing", type=_args._non_negative_float, default=0.1,
                     help="label smoothing of the cross-entropy")
    opt.add_argument("--grad-clip", type=_args._non_negative_float, default=5.0,
                     help="clip the gradient norm to this (0: no clipping)")
    opt.add_argument("--ramp-end", type=_args._positive_float, default=0.7,
                     help="fraction of training at which ClipReLU has become ExpG (p = 1)")
    aug.add_argument("--crop-padding", type=_args._non_negative_int, default=1,
                     help="random crops of the image padded by this many pixels (0: no crops)")
    aug.add_argument("--hflip", nargs="?", const="random", default="off", choices=HFLIPS,
                     help="horizontal flips: random per image (--hflip alone), or alternate: each "
                          "image flipped in every other epoch (default: off)")
    opt.add_argument("--schedule", choices=SCHEDULES, default="cosine",
                     help="learning-rate decay to 0 after the warm-up (default: cosine)")
    aug.add_argument("--mixup", type=_args._non_negative_float, default=0.0, metavar="ALPHA",
                     help="mixup with Beta(ALPHA, ALPHA) mixing (default: off)")
    aug.add_argument("--cutmix", type=_args._non_negative_float, default=0.0, metavar="ALPHA",
                     help="cutmix with Beta(ALPHA, ALPHA) areas (default: off; with --mixup, one "
                          "of the two per batch)")
    aug.add_argument("--cutout", type=_args._non_negative_int, default=0, metavar="PX",
                     help="zero a PX x PX square at a random place of every training image "
                          "(clipped at the border; 0: off)")
    aug.add_argument("--auto-augment", choices=AUTO_AUGMENTS, default="none",
                     help="streamed images: TrivialAugment or RandAugment per image")
    aug.add_argument("--random-erase", type=_args._probability, default=0.0, metavar="P",
                     help="streamed images: erase a random rectangle with probability P")
    aug.add_argument("--min-crop-scale", type=_args._fraction, default=0.08,
                     help="streamed images: smallest area share of a random-resized crop")
    opt.add_argument("--ema-decay", type=_args._unit_interval, default=0.0,
                     help="keep a moving average of the weights with this decay (e.g. 0.999) and "
                          "export it (default: off)")


def _add_run(g: dict) -> None:
    run_group = g["run"]
    run_group.add_argument("--amp", action="store_true", help="mixed precision (bfloat16 "
                           "autocast; float16 with loss scaling on GPUs without bfloat16)")
    run_group.add_argument("--compile", nargs="?", const="model", default="off",
                           choices=("off", "model", "quantizers"),
                           help="torch.compile the training step: 'model' (alone: --compile) the "
                                "whole forward and backward (2 to 4 minutes of compiling on 2 CPU "
                                "cores), 'quantizers' each quantizer's forward and backward into "
                                "fused loops (about 30 s; the fastest on CPUs, same bits); needs "
                                "a C++ compiler on a CPU")
    run_group.add_argument("--device", choices=DEVICES, default="auto",
                           help="auto: a CUDA GPU when torch sees one, else the CPU")
    run_group.add_argument("--no-tensorboard", dest="tensorboard", action="store_false",
                           help="do not write TensorBoard logs (written when tensorboard is "
                                "installed)")
    g["data"].add_argument("--train-limit", type=_args._positive_int, default=None,
                           help="train on this many images of the train split, balanced over "
                                "classes (default: all)")
    run_group.add_argument("--seed", type=int, default=0,
                           help="seed of the data subsets, the weights and the batch order")
    run_group.add_argument("--out", default="runs/train",
                           help="folder of the run (default: runs/train)")
    run_group.add_argument("--resume", action="store_true", help="continue the run in --out")
    run_group.add_argument("--save-every", type=_args._non_negative_int, default=0,
                           metavar="STEPS", help="also save the run every STEPS steps within an "
                           "epoch, so that a kill loses at most that many (0: at epoch ends)")
    run_group.add_argument("--config", default=None, metavar="FILE.toml",
                           help="read options from a TOML file of long option names (e.g. "
                                "recipes/imagenet_ge2mst_small.toml); options on the command line win")
    _args.add_json(run_group)


def run(args) -> int:
    from ..training.run import run_training

    report = run_training(args)
    if report is None:  # a rank other than 0 under torchrun: rank 0 reports
        return 0
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_summary(report))
    return 1 if report["exact"] is False else 0


def _share(value) -> str:
    return "-" if value is None else f"{100 * value:.2f} %"


def format_summary(report: dict) -> str:
    """The end of a run as a short table (the last epoch, never a best one)."""
    last = report["last_epoch"] or {}
    rows = [("epochs", f"{last.get('epoch', 0)} of {report['epochs']}"),
            ("last epoch: loss", "-" if last.get("loss") is None else f"{last['loss']:.4f}"),
            ("last epoch: train top-1", _share(last.get("train_accuracy"))),
            ("wall-clock", "-" if last.get("seconds") is None else f"{last['seconds']:.0f} s")]
    if "skipped_images" in last:  # streamed data: unreadable images skipped (--skip-bad-images)
        rows.append(("last epoch: images skipped", f"{last['skipped_images']} of the train split, "
                                                   f"{last.get('skipped_test_images', 0)} held out"))
    if report["method"] == "stbp":
        rows.append(("test top-1, spiking network", _share(report["snn_accuracy"])))
    elif report.get("note"):  # QCFS: vanilla IF, not exact by design
        rows.append(("test top-1, ANN", _share(report["ann_accuracy"])))
    else:
        rows += [("test top-1, ANN", _share(report["ann_accuracy"])),
                 ("test top-1, SNN", _share(report["snn_accuracy"])),
                 ("conversion exact", str(report["exact"]))]
    rows.append(("weights", report["checkpoint"]))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    if report.get("note"):
        lines.append(f"note: {report['note']}")
    return "\n".join(lines)
