"""Progressive ExpG training: one ordinary forward pass per image, whatever T is.

The quantizers start as ClipReLU (p = 0) and move linearly to the full ExpG quantizer (p = 1),
which they reach at ``ramp_end`` of the run; the last epochs train the exact network that is
converted. AdamW, linear warm-up then cosine decay, label smoothing, gradient clipping, optional
mixup / cutmix, mixed precision (bfloat16 autocast; float16 with loss scaling on GPUs without
bfloat16) and an exponential moving average of the weights.

The same loop trains STBP baselines (`ge2mst.baselines`), whose forward pass runs the T steps
itself: there is nothing to mix, and backpropagation goes through time.

Distributed data parallel: when ``torch.distributed`` is initialised (``torchrun``), every rank
draws the same global batch from the same generator, augments it identically and trains on its
own slice ``batch[rank::world]``; the loss is scaled so that the averaged gradient is the global
batch's mean gradient. Metrics are summed over ranks. BatchNorm statistics are per process.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist
from torch import nn

from .._checks import whole_number
from .._faults import fault_point
from .._files import LineProgress
from .._files import progress as _progress
from ..core.quantizers import quantizers, set_mixing
from ..data.augment import augment
from ..errors import ConfigError
from .ema import ModelEma


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
    alternate_flip: bool = False  # with hflip: each image flipped in every other epoch
    schedule: str = "cosine"  # decay after the warm-up: "cosine" or "linear", to 0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    ema_decay: float = 0.0  # 0: no moving average
    amp: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            whole_number(name, getattr(self, name))
        for name in ("lr", "weight_decay", "warmup_epochs", "label_smoothing", "grad_clip",
                     "mixup_alpha", "cutmix_alpha", "ema_decay"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a non-negative number, got {value!r}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if not 0 < self.ramp_end <= 1:
            raise ConfigError(f"ramp_end must lie in (0, 1], got {self.ramp_end}")
        if self.crop_padding < 0:
            raise ConfigError(f"crop_padding must be >= 0, got {self.crop_padding}")
        if self.ema_decay >= 1:
            raise ConfigError(f"ema_decay must lie in [0, 1), got {self.ema_decay}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.alternate_flip and not self.hflip:
            raise ConfigError("alternate_flip needs hflip")


#: learning-rate decays after the warm-up, both to 0 at the last step
SCHEDULES = ("cosine", "linear")


def mixing_fraction(step: int, total_steps: int, ramp_end: float) -> float:
    """p of the progressive schedule after ``step`` of ``total_steps`` (1 from ``ramp_end`` on)."""
    return min(1.0, step / max(1.0, ramp_end * total_steps))


def learning_rate(step: int, total_steps: int, warmup_steps: int, base: float,
                  schedule: str = "cosine") -> float:
    """Linear warm-up over ``warmup_steps``, then ``schedule`` (cosine or linear) down to 0."""
    if step < warmup_steps:
        return base * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "linear":
        return base * (1.0 - progress)
    return base * 0.5 * (1 + math.cos(math.pi * progress))


def world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside ``torch.distributed``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _all_sum(values: list[float], device: torch.device) -> list[float]:
    if world()[1] == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _autocast(device: torch.device, enabled: bool):
    if not enabled:
        return torch.autocast(device.type, enabled=False)
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast(device.type, dtype=torch.bfloat16)


#: training steps between two looks of the host at the device (progress bar, non-finite loss)
SYNC_EVERY = 25
#: seconds between two progress lines when the output is not a terminal
PROGRESS_LINE_SECONDS = 30.0


class Trainer:
    """The training loop, resumable to the step: ``state_dict`` holds everything a resumed run
    needs (weights, optimizer, EMA, loss scaler, the data-order / augmentation generator,
    counters, history), so that continuing from it gives the same weights as a run that was
    never interrupted.

    ``model`` may be wrapped in DistributedDataParallel by the caller; ``device`` is where the
    batches go (the model must already be there).
    """

    def __init__(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                 cfg: TrainConfig, device: torch.device | str | None = None,
                 compile: bool = False) -> None:
        if images.shape[0] != labels.shape[0]:
            raise ConfigError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        self.rank, self.world = world()
        if cfg.batch_size < self.world:
            raise ConfigError(f"batch_size {cfg.batch_size} is smaller than the {self.world} "
                              "processes that share each batch")
        self.cfg = cfg
        self.net = model.module if hasattr(model, "module") else model  # without the DDP wrapper
        # torch.compile wraps the forward only; weights, optimizer and checkpoints use the plain
        # module (its state_dict keys stay those of the model)
        self.model = torch.compile(model) if compile else model
        self.device = torch.device(device) if device is not None else _device_of(self.net)
        if self.device.type == "cuda":  # a data set that fits stays on the GPU: no copies
            images, labels = images.to(self.device), labels.to(self.device)
        self.images, self.labels = images, labels
        self.num_classes = int(labels.max()) + 1 if labels.numel() else 1
        torch.manual_seed(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        decay, no_decay = [], []
        for name, p in self.net.named_parameters():
            (no_decay if p.dim() <= 1 or name.endswith(".lam") else decay).append(p)
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
        fp16 = cfg.amp and self.device.type == "cuda" and not torch.cuda.is_bf16_supported()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)
        self.ema = ModelEma(self.net, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.quantized = any(True for _ in quantizers(self.net))
        # the learned clips, kept positive after each step
        self._lambdas = [q.lam for _, q in quantizers(self.net) if isinstance(q.lam, nn.Parameter)]
        n = images.shape[0]
        self.steps_per_epoch = math.ceil(n / cfg.batch_size)
        self.total = cfg.epochs * self.steps_per_epoch
        self.warmup = int(cfg.warmup_epochs * self.steps_per_epoch)
        # alternating flips: a fixed random half of the images is flipped in even epochs, the
        # other half in odd ones (every image seen both ways every two epochs); from the seed
        self.flip_base = (torch.rand(n, generator=torch.Generator().manual_seed(cfg.seed + 1))
                          < 0.5) if cfg.alternate_flip else None
        self.epoch = 0  # completed epochs
        self.step = 0
        self.history: list[dict] = []

    @property
    def final_model(self) -> nn.Module:
        """The network to evaluate and export: the moving average when there is one."""
        return self.ema.module if self.ema is not None else self.net

    def state_dict(self) -> dict:
        state = {"model": self.net.state_dict(), "optimizer": self.opt.state_dict(),
                 "generator": self.gen.get_state(), "epoch": self.epoch, "step": self.step,
                 "history": self.history, "config": asdict(self.cfg),
                 "scaler": self.scaler.state_dict()}
        if self.ema is not None:
            state["ema"] = self.ema.module.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        saved = {**asdict(TrainConfig()), **state.get("config", {})}  # older runs lack new fields
        if saved != asdict(self.cfg):
            changed = {k: (saved[k], v) for k, v in asdict(self.cfg).items() if saved.get(k) != v}
            raise ConfigError("the resumed run's training settings differ from the saved ones "
                              f"(setting: (saved, now)): {changed}")
        self.net.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.gen.set_state(state["generator"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.module.load_state_dict(state["ema"])
        self.epoch, self.step, self.history = state["epoch"], state["step"], list(state["history"])

    def _batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The global batch ``idx``, augmented and mixed on every rank alike, then this rank's
        slice: (inputs, targets for the loss, labels for the accuracy)."""
        cfg = self.cfg
        flips = None
        if self.flip_base is not None:
            flips = self.flip_base[idx] ^ bool(self.epoch % 2)
        x = augment(self.images[idx.to(self.images.device)].to(self.device), self.gen,
                    padding=cfg.crop_padding, hflip=cfg.hflip, flips=flips)
        y = self.labels[idx.to(self.labels.device)].to(self.device)
        target = y
        if cfg.mixup_alpha > 0 or cfg.cutmix_alpha > 0:
            from ..data.augment import mix_batch

            x, target = mix_batch(x, y, self.num_classes, self.gen, mixup_alpha=cfg.mixup_alpha,
                                  cutmix_alpha=cfg.cutmix_alpha, label_smoothing=cfg.label_smoothing)
        if self.world > 1:
            x, target, y = (t[self.rank::self.world] for t in (x, target, y))
        return x, target, y

    def _train_step(self, x: torch.Tensor, target: torch.Tensor, p: float, size: int):
        """One optimizer step on a batch of ``size`` images at mixing fraction ``p``: the logits,
        the per-image losses and the loss that was back-propagated."""
        cfg, opt = self.cfg, self.opt
        set_mixing(self.net, p)
        for group in opt.param_groups:
            group["lr"] = learning_rate(self.step, self.total, self.warmup, cfg.lr, cfg.schedule)
        with _autocast(self.device, cfg.amp):
            out = self.model(x)
        out = out.float()
        if target.dim() == 1:
            losses = nn.functional.cross_entropy(out, target, reduction="none",
                                                 label_smoothing=cfg.label_smoothing)
        else:  # soft targets of mixup / cutmix, smoothing already in them
            losses = -(target * torch.log_softmax(out, 1)).sum(1)
        # sum over this rank's slice / global batch size x world: DDP's gradient average is
        # then the global batch's mean gradient; with one process it is the plain mean
        loss = losses.sum() * (self.world / size)
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            self.scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(self.net.parameters(), cfg.grad_clip)
        self.scaler.step(opt)
        self.scaler.update()
        with torch.no_grad():
            for lam in self._lambdas:
                lam.clamp_(min=1e-3)  # lambda stays positive
        if self.ema is not None:
            self.ema.update(self.net, self.step)
        return out, losses, loss

    def run_epoch(self, bar=None) -> dict:
        cfg = self.cfg
        n = self.images.shape[0]
        self.model.train()
        order = torch.randperm(n, generator=self.gen)
        # running sums stay on the device: a step never waits for it; the host looks only every
        # SYNC_EVERY steps (progress bar, non-finite loss) and at the end of the epoch
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.float64, device=self.device)
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        for i in range(0, n, cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            x, target, y = self._batch(idx)
            p = mixing_fraction(self.step, self.total, cfg.ramp_end)
            out, losses, loss = self._train_step(x, target, p, len(idx))
            with torch.no_grad():
                finite &= torch.isfinite(loss)
                loss_sum += losses.detach().sum()
                correct += (out.argmax(1) == y).sum()
            self.step += 1
            fault_point("step", self.step)
            last = i + cfg.batch_size >= n
            if self.step % SYNC_EVERY == 0 or last:
                if not bool(finite):
                    raise FloatingPointError(f"the loss became non-finite (NaN or inf) at epoch "
                                             f"{self.epoch + 1}, before step {self.step}")
                if bar is not None:
                    bar.set_postfix(epoch=self.epoch + 1,
                                    loss=f"{float(losses.detach().mean()):.3f}", p=f"{p:.2f}")
            if bar is not None:
                bar.update(1)
        loss_sum, correct = _all_sum([float(loss_sum), float(correct)], self.device)
        self.epoch += 1
        p = mixing_fraction(self.step, self.total, cfg.ramp_end)
        set_mixing(self.net, p)  # the record's p is the one its test accuracy is measured at
        if self.ema is not None:
            set_mixing(self.ema.module, p)
        record = {"epoch": self.epoch, "loss": loss_sum / n, "train_accuracy": correct / n,
                  "p": p if self.quantized else None,
                  "lr": learning_rate(self.step - 1, self.total, self.warmup, cfg.lr,
                                      cfg.schedule)}
        self.history.append(record)
        return record

    def evaluate(self, images: torch.Tensor, labels: torch.Tensor) -> float:
        """Accuracy of `final_model` on ``images``, shared over the ranks."""
        if self.world == 1:
            return accuracy(self.final_model, images, labels)
        for net in {id(self.net): self.net, id(self.final_model): self.final_model}.values():
            for buffer in net.buffers():  # BN statistics are per process: rank 0's count
                dist.broadcast(buffer, 0)
        part = accuracy(self.final_model, images[self.rank::self.world], labels[self.rank::self.world])
        count = len(range(self.rank, images.shape[0], self.world))
        hits, total = _all_sum([part * count, float(count)], self.device)
        return hits / total

    def fit(self, progress: bool = True, on_epoch_end=None) -> list[dict]:
        """Train the remaining epochs; ``on_epoch_end(trainer, record)`` after each one."""
        bar = _progress(None, "train", progress and self.rank == 0, total=self.total, unit="step",
                        disable=None, mininterval=0.5)
        if progress and self.rank == 0 and (bar is None or bar.disable):  # no terminal: lines
            if bar is not None:
                bar.close()
            bar = LineProgress(self.total, "train", interval=PROGRESS_LINE_SECONDS)
        if bar is not None and self.step:  # a resumed run starts where it stopped
            bar.update(self.step)
        while self.epoch < self.cfg.epochs:
            record = self.run_epoch(bar)
            if on_epoch_end is not None:
                on_epoch_end(self, record)
        if bar is not None:
            bar.close()
        for net in (self.net, self.final_model):
            set_mixing(net, 1.0)
            net.eval()
        return self.history


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig,
          progress: bool = True, log=None) -> list[dict]:
    """Train ``model`` on normalised ``images`` / ``labels`` in place; return per-epoch metrics."""
    trainer = Trainer(model, images, labels, cfg)
    return trainer.fit(progress, None if log is None else (lambda t, record: log(record)))


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy; batches go to the model's device."""
    model.eval()
    device = _device_of(model)
    correct = 0
    for i in range(0, images.shape[0], batch_size):
        out = model(images[i:i + batch_size].to(device))
        correct += int((out.argmax(1).cpu() == labels[i:i + batch_size].cpu()).sum())
    return correct / max(1, images.shape[0])


__all__ = ["ModelEma", "TrainConfig", "Trainer", "accuracy", "learning_rate", "mixing_fraction", "train",
           "world"]
