"""Training: the loop (`trainer`: progressive ClipReLU -> ExpG, STBP, EMA, schedules) and the
resumable run folder of ``ge2mst train`` (`run`)."""

from .run import run_training
from .trainer import ModelEma, TrainConfig, Trainer, accuracy, train

__all__ = ["ModelEma", "TrainConfig", "Trainer", "accuracy", "run_training", "train"]
