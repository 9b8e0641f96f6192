"""Training: the loop (`trainer`: progressive ClipReLU -> ExpG, STBP, EMA, schedules), the
resumable run folder of ``ge2mst train`` (`run`) and the main job of ``ge2mst quickstart``
(`quickstart`: train, convert, verify, count)."""

from .quickstart import run_quickstart
from .run import run_training
from .trainer import ModelEma, TrainConfig, Trainer, accuracy, train

__all__ = ["ModelEma", "TrainConfig", "Trainer", "accuracy", "run_quickstart", "run_training",
           "train"]
