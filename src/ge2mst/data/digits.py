"""scikit-learn's bundled 8 x 8 handwritten digits (offline), the ``"digits"`` data set.

One channel in [0, 1] (``pixel / 16``), ten classes ``"0"`` .. ``"9"``, and a fixed stratified
80 / 20 train / test split that never depends on the ``limit`` seed (``"val"`` = ``"test"``).
"""

from __future__ import annotations

import numpy as np
import torch

from .dataset import ImageDataset, balanced_choice, check_split

DIGITS_SPEC = "digits"


def load_digits(split: str = "test", limit: int | None = None, seed: int = 0) -> ImageDataset:
    """The ``split`` of the digits, ``limit`` of them (class-balanced, chosen by ``seed``)."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    split = check_split(split, repr(DIGITS_SPEC))
    digits = sklearn_digits()
    index = np.arange(len(digits.target))
    train_idx, test_idx = train_test_split(index, test_size=0.2, random_state=0,
                                           stratify=digits.target)
    chosen = np.sort(train_idx if split == "train" else test_idx)
    labels = torch.as_tensor(digits.target[chosen], dtype=torch.int64)
    images = torch.as_tensor(digits.images[chosen], dtype=torch.float32).unsqueeze(1) / 16.0
    keep = torch.as_tensor(balanced_choice(labels.tolist(), limit, seed), dtype=torch.int64)
    classes = [str(c) for c in range(10)]
    return ImageDataset(images[keep].contiguous(), labels[keep], classes, f"digits/{split}")


__all__ = ["DIGITS_SPEC", "load_digits"]
