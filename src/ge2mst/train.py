"""Progressive ExpG training: one ordinary forward pass per image, whatever T is.

The quantizers start as ClipReLU (p = 0) and move linearly to the full ExpG quantizer (p = 1),
which they reach at ``ramp_end`` of the run; the last epochs train the exact network that is
converted. AdamW, linear warm-up then cosine decay, label smoothing, gradient clipping.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .augment import augment
from .errors import ConfigError
from .faults import fault_point
from .quant import set_mixing


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    grad_clip: float = 5.0
    ramp_end: float = 0.7  # fraction of training at which p reaches 1
    crop_padding: int = 1
    hflip: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
        for name in ("lr", "weight_decay", "warmup_epochs", "label_smoothing", "grad_clip"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a non-negative number, got {value!r}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if not 0 < self.ramp_end <= 1:
            raise ConfigError(f"ramp_end must lie in (0, 1], got {self.ramp_end}")
        if self.crop_padding < 0:
            raise ConfigError(f"crop_padding must be >= 0, got {self.crop_padding}")


def mixing_fraction(step: int, total_steps: int, ramp_end: float) -> float:
    """p of the progressive schedule after ``step`` of ``total_steps`` (1 from ``ramp_end`` on)."""
    return min(1.0, step / max(1.0, ramp_end * total_steps))


def learning_rate(step: int, total_steps: int, warmup_steps: int, base: float) -> float:
    if step < warmup_steps:
        return base * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return base * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class Trainer:
    """The training loop, resumable to the step: ``state_dict`` holds everything a resumed run
    needs (weights, optimizer, the data-order / augmentation generator, counters, history), so
    that continuing from it gives the same weights as a run that was never interrupted."""

    def __init__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 cfg: TrainConfig) -> None:
        if images.shape[0] != labels.shape[0]:
            raise ConfigError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        self.model, self.images, self.labels, self.cfg = model, images, labels, cfg
        torch.manual_seed(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            (no_decay if p.dim() <= 1 or name.endswith(".lam") else decay).append(p)
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        n = images.shape[0]
        self.steps_per_epoch = math.ceil(n / cfg.batch_size)
        self.total = cfg.epochs * self.steps_per_epoch
        self.warmup = int(cfg.warmup_epochs * self.steps_per_epoch)
        self.epoch = 0  # completed epochs
        self.step = 0
        self.history: list[dict] = []

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "generator": self.gen.get_state(), "epoch": self.epoch, "step": self.step,
                "history": self.history, "config": asdict(self.cfg)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("config") != asdict(self.cfg):
            raise ConfigError("the resumed run's training settings differ from the saved ones: "
                              f"saved {state.get('config')}, now {asdict(self.cfg)}")
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.gen.set_state(state["generator"])
        self.epoch, self.step, self.history = state["epoch"], state["step"], list(state["history"])

    def run_epoch(self, bar=None) -> dict:
        model, cfg, opt = self.model, self.cfg, self.opt
        n = self.images.shape[0]
        model.train()
        order = torch.randperm(n, generator=self.gen)
        loss_sum = correct = 0.0
        for i in range(0, n, cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            x = augment(self.images[idx], self.gen, padding=cfg.crop_padding, hflip=cfg.hflip)
            y = self.labels[idx]
            p = mixing_fraction(self.step, self.total, cfg.ramp_end)
            set_mixing(model, p)
            for group in opt.param_groups:
                group["lr"] = learning_rate(self.step, self.total, self.warmup, cfg.lr)
            out = model(x)
            loss = self.loss_fn(out, y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss became {float(loss)} at epoch {self.epoch + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            with torch.no_grad():
                for q in model.modules():
                    if hasattr(q, "lam") and isinstance(q.lam, nn.Parameter):
                        q.lam.clamp_(min=1e-3)  # lambda stays positive
            loss_sum += float(loss.detach()) * len(idx)
            correct += float((out.argmax(1) == y).sum())
            self.step += 1
            fault_point("step", self.step)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(epoch=self.epoch + 1, loss=f"{float(loss.detach()):.3f}",
                                p=f"{p:.2f}")
        self.epoch += 1
        record = {"epoch": self.epoch, "loss": loss_sum / n, "train_accuracy": correct / n,
                  "p": mixing_fraction(self.step, self.total, cfg.ramp_end),
                  "lr": learning_rate(self.step - 1, self.total, self.warmup, cfg.lr)}
        self.history.append(record)
        return record

    def fit(self, progress: bool = True, on_epoch_end=None) -> list[dict]:
        """Train the remaining epochs; ``on_epoch_end(trainer, record)`` after each one."""
        bar = _bar(self.total, progress)
        if bar is not None:
            bar.update(self.step)
        while self.epoch < self.cfg.epochs:
            record = self.run_epoch(bar)
            if on_epoch_end is not None:
                on_epoch_end(self, record)
        if bar is not None:
            bar.close()
        set_mixing(self.model, 1.0)
        self.model.eval()
        return self.history


def train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig,
          progress: bool = True, log=None) -> list[dict]:
    """Train ``model`` on normalised ``images`` / ``labels`` in place; return per-epoch metrics."""
    trainer = Trainer(model, images, labels, cfg)
    return trainer.fit(progress, None if log is None else (lambda t, record: log(record)))


def _bar(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return None
    return tqdm(total=total, desc="train", unit="step", leave=False, disable=None, mininterval=0.5)


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    model.eval()
    correct = 0
    for i in range(0, images.shape[0], batch_size):
        correct += int((model(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum())
    return correct / images.shape[0]


__all__ = ["TrainConfig", "Trainer", "accuracy", "learning_rate", "mixing_fraction", "train"]
