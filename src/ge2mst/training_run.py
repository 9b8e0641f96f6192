"""``ge2mst train``: a training run in a folder, safe to kill at any moment and to resume.

After every epoch the folder gets, each written atomically (temporary file, fsync, rename):

- ``trainer.pt``: everything a resumed run needs (weights, optimizer, data-order generator,
  counters, history, how the model was built and normalised); written first;
- ``last.safetensors`` / ``last.json``: the weights and config, for ``ge2mst verify`` & co.;
- ``metrics.csv``: one row per epoch (loss, train and test accuracy, mixing p, learning rate).

A kill mid-epoch loses at most that epoch; a kill mid-save leaves the previous files whole.
``--resume`` continues from ``trainer.pt`` and ends with the same weights as an uninterrupted run
with the same seed (CPU). The report gives the last epoch, never a best-epoch pick.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import torch

from .calibrate import calibrate
from .checkpoint import atomic_write_bytes, save_checkpoint
from .data import load_dataset, normalize
from .errors import CheckpointError
from .models import create_model
from .train import TrainConfig, Trainer, accuracy
from .verify import verify

STATE = "trainer.pt"
METRICS = ("epoch", "loss", "train_accuracy", "test_accuracy", "p", "lr", "seconds")


def _read_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state["trainer"], state["run"]  # noqa: B018 - both must be there
    except Exception as exc:  # torch raises many kinds for a damaged file
        raise CheckpointError(f"training state {str(path)!r} is truncated or corrupt "
                              f"({type(exc).__name__})") from None
    return state


def run_training(args) -> dict:
    out = Path(args.out)
    state_path = out / STATE
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs,
                      label_smoothing=args.label_smoothing, grad_clip=args.grad_clip,
                      ramp_end=args.ramp_end, crop_padding=args.crop_padding, hflip=args.hflip,
                      seed=args.seed)
    if args.resume:
        if not state_path.is_file():
            raise CheckpointError(f"nothing to resume: {str(state_path)!r} does not exist")
        state = _read_state(state_path)
        run = state["run"]
    elif state_path.exists():
        raise CheckpointError(f"{str(out)!r} already holds a training run; pass --resume to "
                              "continue it, or choose another --out")
    train_set = load_dataset(run["data"] if args.resume else args.data, split="train",
                             limit=args.train_limit, seed=args.seed, cache_dir=args.data_dir,
                             progress=not args.json)
    test_set = load_dataset(run["data"] if args.resume else args.data, split=args.split,
                            limit=args.limit, seed=args.seed, cache_dir=args.data_dir,
                            progress=not args.json)
    if args.resume:
        model = create_model(run["model"], **run["model_kwargs"])
        mean, std = torch.tensor(run["mean"]), torch.tensor(run["std"])
    else:
        mean, std = train_set.channel_stats()
        kwargs = {"num_classes": train_set.num_classes, "in_chans": train_set.in_chans,
                  "T": args.T, "G": args.groups}
        if args.width is not None:
            kwargs["width"] = args.width
        torch.manual_seed(args.seed)
        model = create_model(args.model, **kwargs)
        calibrate(model, [normalize(train_set.images[:256], mean, std)], seed=args.seed)
        run = {"model": args.model, "model_kwargs": model.model_kwargs, "data": args.data,
               "mean": mean.tolist(), "std": std.tolist()}
    x_train = normalize(train_set.images, mean, std)
    x_test = normalize(test_set.images, mean, std)
    trainer = Trainer(model, x_train, train_set.labels, cfg)
    if args.resume:
        trainer.load_state_dict(state["trainer"])
    start = time.perf_counter()

    def on_epoch_end(t: Trainer, record: dict) -> None:
        record["test_accuracy"] = accuracy(model, x_test, test_set.labels)
        record["seconds"] = time.perf_counter() - start
        buffer = io.BytesIO()
        torch.save({"trainer": t.state_dict(), "run": run}, buffer)
        atomic_write_bytes(state_path, buffer.getvalue())
        save_checkpoint(out / "last.safetensors", model, mean=run["mean"], std=run["std"],
                        data=run["data"], seed=cfg.seed, epoch=t.epoch)
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=METRICS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(t.history)
        atomic_write_bytes(out / "metrics.csv", text.getvalue().encode())
        if not args.json:
            print(f"epoch {t.epoch}/{cfg.epochs}: loss {record['loss']:.4f}, train "
                  f"{record['train_accuracy']:.4f}, test {record['test_accuracy']:.4f}, "
                  f"p {record['p']:.2f}", flush=True)

    history = trainer.fit(progress=not args.json, on_epoch_end=on_epoch_end)
    batches = [(x_test[i:i + 128], test_set.labels[i:i + 128]) for i in range(0, len(test_set), 128)]
    check = verify(model, batches, step_mode="collapsed")
    return {"model": run["model"], "model_kwargs": run["model_kwargs"], "data": run["data"],
            "seed": cfg.seed, "epochs": cfg.epochs, "last_epoch": history[-1] if history else None,
            "ann_accuracy": check.get("ann_accuracy"), "snn_accuracy": check.get("snn_accuracy"),
            "exact": check["code_mismatches"] == 0 and check["prediction_agreement"] == 1.0,
            "checkpoint": str(out / "last.safetensors"), "state": str(state_path),
            "metrics": str(out / "metrics.csv")}
