"""``ge2mst train``: a training run in a folder, safe to kill at any moment and to resume.

After every epoch the folder gets, each written atomically (temporary file, fsync, rename):

- ``trainer.pt``: everything a resumed run needs (weights, optimizer, EMA, data-order generator,
  counters, history, how the model was built and normalised); written first;
- ``last.safetensors`` / ``last.json``: the weights (the moving average with ``--ema-decay``) and
  config, for ``ge2mst verify`` / ``eval`` / ``convert``;
- ``metrics.csv``: one row per epoch (loss, train and test accuracy, mixing p, learning rate);
- ``tensorboard/``: the same scalars, when TensorBoard is installed (``--no-tensorboard`` to skip).

A kill mid-epoch loses at most that epoch; a kill mid-save leaves the previous files whole.
``--resume`` continues from ``trainer.pt`` and ends with the same weights as an uninterrupted run
with the same seed (CPU). The report gives the last epoch, never a best-epoch pick.

Methods: ``progressive`` (ExpG models: lambda calibrated, ClipReLU -> ExpG, converted and verified
at the end) and ``stbp`` (the spiking baselines of `ge2mst.baselines`, trained through time).
``--finetune CHECKPOINT`` starts from trained weights with a new head; data with other channels
(event frames) get an `InputAdapter`. Under ``torchrun`` the run is data-parallel (nccl on GPUs,
gloo on CPUs); only rank 0 prints and writes.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from .._files import FolderInUse, folder_lock
from ..analysis.verification import is_exact, verify
from ..conversion.kinds import method_of
from ..conversion.user_models import create_any_model
from ..errors import CheckpointError, ConfigError, DataError, Ge2msError
from ..io.checkpoint import atomic_write_bytes, save_checkpoint
from ..models import model_spec
from .inputs import first_images, load_splits, model_inputs, scoring_batches
from .provenance import cpu_model, provenance
from .run_model import new_model
from .trainer import TrainConfig, Trainer, count_hits

STATE = "trainer.pt"
METRICS = ("epoch", "loss", "train_accuracy", "test_accuracy", "p", "lr", "seconds",
           "skipped_images", "skipped_test_images")


def _read_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state["trainer"], state["run"]  # noqa: B018 - both must be there
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise CheckpointError(f"training state {str(path)!r} is truncated or corrupt "
                              f"({type(exc).__name__})") from None
    return state


def _setup_distributed(device: str) -> tuple[int, int, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for, but torch sees no CUDA device")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    where = torch.device(f"cuda:{local}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(where)
    if size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), where
    return 0, 1, where


def _config(args) -> TrainConfig:
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                       weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs,
                       label_smoothing=args.label_smoothing, grad_clip=args.grad_clip,
                       ramp_end=args.ramp_end, crop_padding=args.crop_padding,
                       hflip=args.hflip != "off", alternate_flip=args.hflip == "alternate",
                       schedule=args.schedule,
                       mixup_alpha=args.mixup, cutmix_alpha=args.cutmix, ema_decay=args.ema_decay,
                       amp=args.amp, seed=args.seed,
                       auto_augment=getattr(args, "auto_augment", "none"),
                       random_erase=getattr(args, "random_erase", 0.0),
                       min_crop_scale=getattr(args, "min_crop_scale", 0.08),
                       cutout=getattr(args, "cutout", 0))


def _tensorboard(out: Path, enabled: bool, purge_step: int):
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: metrics.csv has the same numbers
        return None
    return SummaryWriter(str(out / "tensorboard"), purge_step=purge_step or None)


def run_training(args) -> dict | None:
    """Train as ``args`` say; the report (rank 0), or None on the other ranks. Rank 0 holds the
    run folder (`folder_lock`) for the whole run: a second run given the same ``--out`` while
    this one runs is refused; a killed run leaves no lock behind."""
    rank, size, device = _setup_distributed(args.device)
    try:
        with _held(Path(args.out)) if rank == 0 else contextlib.nullcontext():
            return _run(args, rank, size, device)
    finally:
        if size > 1 and dist.is_initialized():
            dist.destroy_process_group()


@contextlib.contextmanager
def _held(out: Path):
    try:
        with folder_lock(out):
            yield
    except FolderInUse as exc:
        raise ConfigError(f"the run folder {exc}: wait for that run to end (then --resume "
                          "continues it), or choose another --out") from None


def _run(args, rank: int, size: int, device: torch.device) -> dict:
    out = Path(args.out)
    cfg = _config(args)
    state = _open_run(args, out)
    if args.amp and device.type == "cpu" and rank == 0 and not args.json:
        print("note: --amp on a CPU trains in bfloat16 autocast (quantizers stay float32)")
    spec = state["run"]["data"] if state else args.data
    train_set, test_set = _load_splits(spec, args, cfg, _img_size(args, state), rank, size)
    if state and bool(state["run"].get("streamed")) != bool(getattr(train_set, "streaming", False)):
        raise ConfigError("the resumed run read its images "
                          f"{'streamed' if state['run'].get('streamed') else 'in memory'}: "
                          "give the same --data-mode")
    if rank == 0 and not args.json:  # what the run trains on, before any time is spent
        print(f"train: {len(train_set):,} images of the train split"
              f"{'' if args.train_limit else ' (all; --train-limit for fewer)'}; held out: "
              f"{len(test_set):,} images of the {args.split} split"
              f"{'' if args.limit else ' (all; --test-limit for fewer)'}", flush=True)
    model, run = _build_or_restore(args, state, train_set, device)
    mean, std, method = torch.tensor(run["mean"]), torch.tensor(run["std"]), run["method"]
    model.to(device)
    workers = getattr(args, "workers", 0)
    x_train = model_inputs(train_set, mean, std, workers)
    x_test = model_inputs(test_set, mean, std, workers)
    _check_fits(model, run["model"], {"train": x_train, args.split: x_test}, device)
    net = model
    if size > 1:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    trainer = Trainer(net, x_train, train_set.labels, cfg, device=device,
                      compile=getattr(args, "compile", False))
    if state:
        trainer.load_state_dict(state["trainer"])
    writer = _tensorboard(out, rank == 0 and args.tensorboard, trainer.step)
    logger = _EpochLogger(args, cfg, run, out, writer, x_test, test_set.labels, rank, size,
                          trainer.history)
    history = trainer.fit(progress=not args.json, on_epoch_end=logger, on_step=logger.mid_epoch,
                          save_every=getattr(args, "save_every", 0) or 0)
    if writer is not None:
        writer.close()
    report = {"model": run["model"], "model_kwargs": run["model_kwargs"], "data": run["data"],
              "method": method, "seed": cfg.seed, "epochs": cfg.epochs, "processes": size,
              "device": str(device), "last_epoch": history[-1] if history else None,
              "checkpoint": str(out / "last.safetensors"), "state": str(out / STATE),
              "metrics": str(out / "metrics.csv"),
              "tensorboard": str(out / "tensorboard") if writer is not None else None}
    if "finetuned_from" in run:
        report["finetuned_from"] = run["finetuned_from"]
    if trainer.extensions:  # trained longer (or shorter) than first planned: when and how
        report["extensions"] = trainer.extensions
    if rank != 0:
        return None
    return _final_report(report, trainer.final_model.cpu(), method, x_test, test_set.labels)


@torch.no_grad()
def _check_fits(model: torch.nn.Module, name: str, splits: dict, device: torch.device) -> None:
    """One image of each split through the model before any training, so that an image size the
    model cannot take (e.g. a test split of another size) fails now, not after an epoch."""
    was_training = model.training
    model.eval()
    try:
        for split, images in splits.items():
            x = first_images(images, 1).to(device)
            try:
                model(x)
            except (RuntimeError, Ge2msError) as exc:
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise DataError(f"the {split} split's images ({' x '.join(map(str, x.shape[1:]))}) "
                                f"do not fit model {name!r}: {first}") from None
    finally:
        model.train(was_training)


def _open_run(args, out: Path) -> dict | None:
    """The saved state of the run to resume (``--resume``), or None for a new run in a folder
    that holds none."""
    state_path = out / STATE
    if args.resume:
        if not state_path.is_file():
            raise CheckpointError(f"nothing to resume: {str(state_path)!r} does not exist")
        return _read_state(state_path)
    if state_path.exists():
        raise CheckpointError(f"{str(out)!r} already holds a training run; pass --resume to "
                              "continue it, or choose another --out")
    return None


def _img_size(args, state: dict | None) -> int | None:
    """The input side: ``--img-size``, else the resumed run's, else (streamed data only) the
    side the model is registered for."""
    if getattr(args, "img_size", None):
        return args.img_size
    if state and state["run"].get("img_size"):
        return state["run"]["img_size"]
    name = state["run"]["model"] if state else args.model
    if getattr(args, "data_mode", "auto") == "stream" and name:
        return model_spec(name).img_size
    return None


def _load_splits(spec: str, args, cfg: TrainConfig, img_size: int | None, rank: int, size: int):
    """The training and test splits; rank 0 unpacks archives before the other ranks read them."""
    for turn in range(2 if size > 1 else 1):
        if (rank == 0) == (turn == 0):
            train_set, test_set = load_splits(spec, args, cfg, img_size)
        if size > 1:
            dist.barrier()
    return train_set, test_set


def _build_or_restore(args, state: dict | None, train_set, device: torch.device):
    """The model (rebuilt from the saved run, or new: seeded, calibrated) and the run's record:
    how it was built and normalised, its method and provenance."""
    if state:
        run = state["run"]
        run.setdefault("method", "progressive")
        # each sitting of a run that spans several (perhaps machines): where and from what it went on
        run.setdefault("resumed", []).append(
            {**provenance(device), "cpu": cpu_model(), "at_step": state["trainer"]["step"],
             "at_seconds": run.get("seconds_saved", 0.0), "compile": str(getattr(args, "compile", "off"))})
        return create_any_model(run["model"], **run["model_kwargs"]), run
    mean, std = train_set.channel_stats()
    torch.manual_seed(args.seed)
    model, method, info = new_model(args, train_set, mean, std)
    run = {"model": model.model_name, "model_kwargs": model.model_kwargs, "data": args.data,
           "mean": mean.tolist(), "std": std.tolist(), "method": method, **info,
           "streamed": bool(getattr(train_set, "streaming", False)), **provenance(device),
           "cpu": cpu_model()}
    if getattr(args, "img_size", None):
        run["img_size"] = args.img_size
    # what verify, eval and energy read the held-out images with, unless told otherwise
    run["data_settings"] = {"split": args.split, "img_size": getattr(args, "img_size", None),
                            "crop_ratio": getattr(args, "crop_ratio", None)}
    return model, run


class _EpochLogger:
    """What happens after each epoch: test accuracy and wall-clock (resumed sittings added up)
    into the record; on rank 0 the files of the epoch and a line of progress."""

    def __init__(self, args, cfg: TrainConfig, run: dict, out: Path, writer, x_test, y_test,
                 rank: int, size: int, history: list) -> None:
        self.args, self.cfg, self.run, self.out, self.writer = args, cfg, run, out, writer
        self.x_test, self.y_test, self.rank, self.size = x_test, y_test, rank, size
        self.start = time.perf_counter()
        # the sittings so far: up to the last save, mid-epoch ones included
        last = (history[-1].get("seconds") or 0.0) if history else 0.0
        self.before = max(last, run.get("seconds_saved", 0.0))

    def mid_epoch(self, t: Trainer) -> None:
        """A save within an epoch (``--save-every``): the trainer's state (and the wall-clock so
        far, so that a resumed run keeps counting from it)."""
        self.run["seconds_saved"] = self.before + time.perf_counter() - self.start
        if self.rank == 0:
            _save_state(t, self.run, self.out)
        if self.size > 1:
            dist.barrier()

    def __call__(self, t: Trainer, record: dict) -> None:
        record["test_accuracy"] = t.evaluate(self.x_test, self.y_test)
        if "skipped_images" in record:  # streamed: unreadable images skipped (--skip-bad-images)
            record["skipped_test_images"] = t.evaluation_skipped
        record["seconds"] = self.run["seconds_saved"] = self.before + time.perf_counter() - self.start
        if self.rank == 0:
            _save(t, record, self.run, self.out, self.cfg, self.writer)
            if not self.args.json:
                p = "" if record["p"] is None else f", p {record['p']:.2f}"
                print(f"epoch {t.epoch}/{self.cfg.epochs}: loss {record['loss']:.4f}, train "
                      f"{record['train_accuracy']:.4f}, test {record['test_accuracy']:.4f}{p}",
                      flush=True)
        if self.size > 1:
            dist.barrier()  # no rank runs ahead of the files of this epoch


def _final_report(report: dict, final: torch.nn.Module, method: str, x_test, y_test) -> dict:
    """The last epoch's network scored on the test split: STBP as it is, QCFS in ANN mode
    (vanilla IF is not exact by design), ExpG converted and verified."""
    if method == "stbp":  # the trained network is the spiking network: nothing to convert
        acc = _accuracy(final, scoring_batches(x_test, y_test))
        return {**report, "ann_accuracy": None, "snn_accuracy": acc, "exact": None}
    if method_of(final) == "qcfs":
        return {**report, "ann_accuracy": _accuracy(final, scoring_batches(x_test, y_test)),
                "snn_accuracy": None,
                "exact": None, "note": "QCFS models convert to vanilla IF neurons, whose error shrinks "
                                       "with T only: see benchmarks/vanilla_if.py"}
    check = verify(final, scoring_batches(x_test, y_test), step_mode="collapsed")
    return {**report, "ann_accuracy": check.get("ann_accuracy"), "snn_accuracy": check.get("snn_accuracy"),
            "exact": is_exact(check), "exactness_failures": check["exactness_failures"]}


@torch.no_grad()
def _accuracy(model: torch.nn.Module, batches) -> float:
    """Top-1 accuracy of ``model`` (on the CPU) over ``batches`` of (images, labels)."""
    hits, count = count_hits(model, batches)
    return hits / max(1, count)


def _save_state(t: Trainer, run: dict, out: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"trainer": t.state_dict(), "run": run}, buffer)
    atomic_write_bytes(out / STATE, buffer.getvalue())


def _save(t: Trainer, record: dict, run: dict, out: Path, cfg: TrainConfig, writer) -> None:
    _save_state(t, run, out)
    save_checkpoint(out / "last.safetensors", t.final_model, mean=run["mean"], std=run["std"],
                    data=run["data"], seed=cfg.seed, epoch=t.epoch, method=run.get("method"),
                    seconds=record.get("seconds"), training=asdict(cfg),
                    **{k: run[k] for k in ("commit", "ge2mst_version", "torch", "device_name", "started",
                                           "data_settings") if k in run})
    text = io.StringIO()
    writer_csv = csv.DictWriter(text, fieldnames=METRICS, extrasaction="ignore")
    writer_csv.writeheader()
    writer_csv.writerows(t.history)
    atomic_write_bytes(out / "metrics.csv", text.getvalue().encode())
    if writer is not None:
        for key in ("loss", "train_accuracy", "test_accuracy", "p", "lr"):
            if record.get(key) is not None:
                writer.add_scalar(f"train/{key}" if key != "test_accuracy" else "test/accuracy",
                                  record[key], t.epoch)
        writer.flush()
