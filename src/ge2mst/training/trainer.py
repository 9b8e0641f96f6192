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
Streamed images (`ge2mst.training.sources.StreamInput`) are decoded by each rank for its own
slice only, and can be saved mid-epoch (``fit(save_every=...)``): the epoch's order and running
sums are part of the state.
"""

from __future__ import annotations

import math
from dataclasses import asdict

import torch
import torch.distributed as dist
from torch import nn

from .._faults import fault_point
from .._files import LineProgress
from .._files import progress as _progress
from ..core.quantizers import fuse_quantizers, quantizers, set_mixing
from ..errors import ConfigError
from .batches import TrainingBatches
from .config import SCHEDULES, TrainConfig, learning_rate, mixing_fraction
from .distributed import all_sum as _all_sum
from .distributed import world
from .ema import ModelEma
from .sources import StreamInput, is_streaming


def _autocast(device: torch.device, enabled: bool):
    if not enabled:
        return torch.autocast(device.type, enabled=False)
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.float16)
    return torch.autocast(device.type, dtype=torch.bfloat16)


#: what ``Trainer(compile=...)`` takes: off, the whole forward, or the quantizers' kernels only
COMPILE_MODES = (False, None, True, "off", "model", "quantizers")
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

    def __init__(self, model: nn.Module, images: torch.Tensor | StreamInput,
                 labels: torch.Tensor | None, cfg: TrainConfig,
                 device: torch.device | str | None = None, compile: bool | str = False) -> None:
        self.rank, self.world = world()
        if cfg.batch_size < self.world:
            raise ConfigError(f"batch_size {cfg.batch_size} is smaller than the {self.world} "
                              "processes that share each batch")
        self.cfg = cfg
        self.net = model.module if hasattr(model, "module") else model  # without the DDP wrapper
        # compile: "model" (or True) wraps the forward in torch.compile; weights, optimizer and
        # checkpoints use the plain module (its state_dict keys stay those of the model);
        # "quantizers" fuses each quantizer's passes only (`fuse_quantizers`)
        if compile not in COMPILE_MODES:
            raise ConfigError(f"compile must be one of {COMPILE_MODES}, got {compile!r}")
        self.model = torch.compile(model) if compile in (True, "model") else model
        if compile == "quantizers":
            fuse_quantizers(self.net)
        self.device = torch.device(device) if device is not None else _device_of(self.net)
        torch.manual_seed(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.data = TrainingBatches(images, labels, cfg, self.gen, self.device, self.rank, self.world)
        self.n = len(self.data)
        self._optimizer()
        self.ema = ModelEma(self.net, cfg.ema_decay) if cfg.ema_decay > 0 else None
        self.quantized = any(True for _ in quantizers(self.net))
        # the learned clips, kept positive after each step
        self._lambdas = [q.lam for _, q in quantizers(self.net) if isinstance(q.lam, nn.Parameter)]
        self.steps_per_epoch = math.ceil(self.n / cfg.batch_size)
        self.total = cfg.epochs * self.steps_per_epoch
        # the step count whose ramp_end fraction ends the mix: the planned length of the run as
        # it started (a run trained longer keeps its ramp, `load_state_dict`)
        self.ramp_total = self.total
        self.extensions: list[dict] = []
        self.warmup = int(cfg.warmup_epochs * self.steps_per_epoch)
        self.epoch = 0  # completed epochs
        self.step = 0
        self.history: list[dict] = []
        self._order: torch.Tensor | None = None  # the batch order of an epoch under way
        self._sums: tuple = (0.0, 0.0, 0)  # its running loss, hits and skipped images

    def _optimizer(self) -> None:
        """AdamW; weight decay on the weights only (not on lambda, BatchNorm or biases)."""
        cfg = self.cfg
        decay, no_decay = [], []
        for name, p in self.net.named_parameters():
            (no_decay if p.dim() <= 1 or name.endswith(".lam") else decay).append(p)
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                      {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
        fp16 = cfg.amp and self.device.type == "cuda" and not torch.cuda.is_bf16_supported()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)

    @property
    def final_model(self) -> nn.Module:
        """The network to evaluate and export: the moving average when there is one."""
        return self.ema.module if self.ema is not None else self.net

    def state_dict(self) -> dict:
        state = {"model": self.net.state_dict(), "optimizer": self.opt.state_dict(),
                 "generator": self.gen.get_state(), "epoch": self.epoch, "step": self.step,
                 "history": self.history, "config": asdict(self.cfg),
                 "scaler": self.scaler.state_dict(), "torch_rng": torch.get_rng_state(),
                 "ramp_total": self.ramp_total, "extensions": list(self.extensions)}
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        if self.ema is not None:
            state["ema"] = self.ema.module.state_dict()
        if self._order is not None:  # saved mid-epoch: the epoch's order and running sums
            loss_sum, correct, skipped = self._sums
            state["epoch_order"] = self._order.clone()
            state["partial"] = [float(loss_sum), float(correct), int(skipped)]
        return state

    def load_state_dict(self, state: dict) -> None:
        """Continue the saved run. Every setting must be the saved one except ``epochs``: a run
        may be trained longer (or shorter, down to the epochs it has done). Its learning rate
        then follows the schedule planned for the new length from the step reached on (a
        finished cosine run restarts at the rate that schedule has there), while the mix keeps
        the ramp of the run as it started (p never falls back below 1)."""
        saved = {**asdict(TrainConfig()), **state.get("config", {})}  # older runs lack new fields
        now = asdict(self.cfg)
        changed = {k: (saved[k], v) for k, v in now.items() if saved.get(k) != v and k != "epochs"}
        if changed:
            raise ConfigError("the resumed run's training settings differ from the saved ones "
                              f"(setting: (saved, now)): {changed}")
        if self.cfg.epochs < state["epoch"]:
            raise ConfigError(f"the resumed run has trained {state['epoch']} epochs already: "
                              f"--epochs {self.cfg.epochs} cannot take it back")
        self.ramp_total = state.get("ramp_total", saved["epochs"] * self.steps_per_epoch)
        self.extensions = list(state.get("extensions", []))
        if saved["epochs"] != self.cfg.epochs:
            self.extensions.append({"at_epoch": state["epoch"], "at_step": state["step"],
                                    "from_epochs": saved["epochs"], "to_epochs": self.cfg.epochs})
        self.net.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.gen.set_state(state["generator"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            self.ema.module.load_state_dict(state["ema"])
        self.epoch, self.step, self.history = state["epoch"], state["step"], list(state["history"])
        if "torch_rng" in state:  # the global generator (stochastic depth draws from it)
            torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self._order = state.get("epoch_order")
        self._sums = tuple(state.get("partial", (0.0, 0.0, 0)))

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

    def run_epoch(self, bar=None, on_step=None, save_every: int = 0) -> dict:
        """Train one epoch, or what is left of it after a mid-epoch resume; with ``save_every``
        call ``on_step(trainer)`` after every ``save_every``-th step (not the epoch's last)."""
        cfg = self.cfg
        self.model.train()
        if self._order is None:
            self._order = torch.randperm(self.n, generator=self.gen)
            self._sums = (0.0, 0.0, 0)
        start = (self.step - self.epoch * self.steps_per_epoch) * cfg.batch_size
        index_lists = list(self._order[start:].split(cfg.batch_size))
        # running sums stay on the device: a step never waits for it; the host looks only every
        # SYNC_EVERY steps (progress bar, non-finite loss) and at the end of the epoch
        loss_sum = torch.full((), self._sums[0], dtype=torch.float64, device=self.device)
        correct = torch.full((), self._sums[1], dtype=torch.float64, device=self.device)
        skipped = self._sums[2]
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        batches = self.data.epoch(index_lists, self.epoch)
        for left, (x, target, y, lost) in zip(range(len(index_lists) - 1, -1, -1), batches,
                                              strict=True):
            p = mixing_fraction(self.step, self.ramp_total, cfg.ramp_end)
            out, losses, loss = self._train_step(x, target, p, len(index_lists[-1 - left]))
            with torch.no_grad():
                finite &= torch.isfinite(loss)
                loss_sum += losses.detach().sum()
                correct += (out.argmax(1) == y).sum()
            skipped += lost
            self._sums = (loss_sum, correct, skipped)
            self.step += 1
            fault_point("step", self.step)
            if self.step % SYNC_EVERY == 0 or not left:
                self._look(finite, losses, p, bar)
            if bar is not None:
                bar.update(1)
            if on_step is not None and save_every and self.step % save_every == 0 and left:
                on_step(self)
        return self._end_epoch(loss_sum, correct, skipped)

    def _look(self, finite: torch.Tensor, losses: torch.Tensor, p: float, bar) -> None:
        """The host's look at the device: stop on a non-finite loss, refresh the bar."""
        if not bool(finite):
            raise FloatingPointError(f"the loss became non-finite (NaN or inf) at epoch "
                                     f"{self.epoch + 1}, before step {self.step}")
        if bar is not None:
            bar.set_postfix(epoch=self.epoch + 1, loss=f"{float(losses.detach().mean()):.3f}",
                            p=f"{p:.2f}")

    def _end_epoch(self, loss_sum: torch.Tensor, correct: torch.Tensor, skipped: int) -> dict:
        cfg = self.cfg
        loss_sum, correct, skipped = _all_sum([float(loss_sum), float(correct), float(skipped)],
                                              self.device)
        self._order, self._sums = None, (0.0, 0.0, 0)
        self.epoch += 1
        p = mixing_fraction(self.step, self.ramp_total, cfg.ramp_end)
        set_mixing(self.net, p)  # the record's p is the one its test accuracy is measured at
        if self.ema is not None:
            set_mixing(self.ema.module, p)
        seen = max(1.0, self.n - skipped)
        record = {"epoch": self.epoch, "loss": loss_sum / seen, "train_accuracy": correct / seen,
                  "p": p if self.quantized else None,
                  "lr": learning_rate(self.step - 1, self.total, self.warmup, cfg.lr,
                                      cfg.schedule)}
        if self.data.stream is not None:
            record["skipped_images"] = int(skipped)
        self.history.append(record)
        return record

    def evaluate(self, images: torch.Tensor | StreamInput,
                 labels: torch.Tensor | None = None) -> float:
        """Accuracy of `final_model` on ``images`` (a tensor, or a streaming folder), shared
        over the ranks; ``evaluation_skipped`` counts the images skipped as unreadable."""
        self.evaluation_skipped = 0  # held-out images skipped as unreadable in this call
        if self.world == 1 and not is_streaming(images):
            return accuracy(self.final_model, images, labels)
        if self.world > 1:
            for net in {id(self.net): self.net, id(self.final_model): self.final_model}.values():
                for buffer in net.buffers():  # BN statistics are per process: rank 0's count
                    dist.broadcast(buffer, 0)
        skipped = 0
        if is_streaming(images):
            batches = images.evaluation_batches(self.device, rank=self.rank, world=self.world)
            hits, count = count_hits(self.final_model, batches)
            skipped = images.skipped
        else:
            part = accuracy(self.final_model, images[self.rank::self.world],
                            labels[self.rank::self.world])
            count = len(range(self.rank, images.shape[0], self.world))
            hits = part * count
        hits, total, skipped = _all_sum([float(hits), float(count), float(skipped)], self.device)
        self.evaluation_skipped = int(skipped)
        return hits / max(1.0, total)

    def fit(self, progress: bool = True, on_epoch_end=None, on_step=None,
            save_every: int = 0) -> list[dict]:
        """Train the remaining epochs; ``on_epoch_end(trainer, record)`` after each one, and
        ``on_step(trainer)`` every ``save_every`` steps within an epoch (mid-epoch saves)."""
        bar = _progress(None, "train", progress and self.rank == 0, total=self.total, unit="step",
                        disable=None, mininterval=0.5)
        if progress and self.rank == 0 and (bar is None or bar.disable):  # no terminal: lines
            if bar is not None:
                bar.close()
            bar = LineProgress(self.total, "train", interval=PROGRESS_LINE_SECONDS)
        if bar is not None and self.step:  # a resumed run starts where it stopped
            bar.update(self.step)
        while self.epoch < self.cfg.epochs:
            record = self.run_epoch(bar, on_step, save_every)
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


@torch.no_grad()
def count_hits(model: nn.Module, batches) -> tuple[int, int]:
    """(correct predictions, images) of ``model`` over ``batches`` of (images, labels)."""
    model.eval()
    hits = count = 0
    for x, y in batches:
        hits += int((model(x).argmax(1) == y).sum())
        count += int(y.shape[0])
    return hits, count


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


__all__ = ["SCHEDULES", "ModelEma", "TrainConfig", "Trainer", "accuracy", "count_hits",
           "learning_rate", "mixing_fraction", "train", "world"]
