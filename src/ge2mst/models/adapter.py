"""An input adapter: a 1x1 convolution that maps another input layout onto a network's stem.

Fine-tuning a network trained on RGB images on event data (CIFAR10-DVS frames flattened to 2T
channels) needs the new channels mapped onto the three the stem was trained on. `InputAdapter`
puts a bias-free 1x1 convolution in front of the network; it starts as the channel average (every
output channel sees the mean of the inputs) and is trained with the rest. The adapter is an
ordinary weight layer: conversion wraps it like any other (it sees the real-valued frames, so the
energy counter charges it multiply-accumulates, and the stem after it too).
"""

from __future__ import annotations

import torch
from torch import nn


class InputAdapter(nn.Module):
    def __init__(self, body: nn.Module, in_chans: int, body_chans: int) -> None:
        super().__init__()
        self.adapter = nn.Conv2d(in_chans, body_chans, 1, bias=False)
        with torch.no_grad():
            self.adapter.weight.fill_(1.0 / in_chans)
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.adapter(x))

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:  # T, G, img_size, training_method ... of the wrapped network
            return getattr(super().__getattr__("body"), name)
