"""Data sets for the accuracy study (``benchmarks/study.py``), built in memory, no download.

Two tasks:

- ``digits``: scikit-learn's 1,797 8x8 handwritten digits (shipped with scikit-learn), split
  75/25 stratified with a fixed seed; pixels scaled to ``[0, 1]``.
- ``noisy16``: a larger task built from the same digits with known easy/hard structure. Each
  training image is a digit of the digits *training* split, upsampled to 16x16, shifted by up to
  2 pixels, and corrupted by Gaussian pixel noise whose strength marks its difficulty: 60% easy
  (sigma 0.05), 30% medium (sigma 0.35), 10% hard (sigma 0.7). On top, 10% of the training
  labels are replaced by a different random class (label noise). The test set is built the same
  way from the digits *test* split, with clean labels, so no test digit was seen in training.
  The data are fixed (generated from ``data_seed``), whatever the run's seed.

Every generator here is a local ``torch.Generator``; the global random state is untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

TASK_NAMES = ("digits", "noisy16")

# (share of the training set, Gaussian pixel-noise sigma) per difficulty level
DIFFICULTY_LEVELS = ((0.6, 0.05), (0.3, 0.35), (0.1, 0.7))


@dataclass
class Task:
    """A train/test pair and what a model needs to know about it.

    Attributes:
        name: the task's name.
        train: ``TensorDataset(images (N, 1, S, S) float32, labels (N,) int64)``.
        test: same layout.
        image_size: ``S``.
        num_classes: 10.
        difficulty: ``(N,)`` int64, the difficulty level of each training sample (0 easiest;
            ``noisy16`` only, zeros for ``digits``).
        label_noise: ``(N,)`` bool, whether the training label was corrupted.
    """

    name: str
    train: TensorDataset
    test: TensorDataset
    image_size: int
    num_classes: int
    difficulty: torch.Tensor
    label_noise: torch.Tensor

    def describe(self) -> str:
        return (
            f"{self.name}: {len(self.train)} train / {len(self.test)} test images of "
            f"{self.image_size}x{self.image_size}, {self.num_classes} classes, "
            f"{int(self.label_noise.sum())} noisy training labels"
        )


def _digits_split(data_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    return train_test_split(images, labels, test_size=0.25, stratify=labels, random_state=data_seed)


def digits_task(data_seed: int = 0, train_limit: int | None = None) -> Task:
    """The embedded 8x8 digits, 1,347 train / 450 test images (the first ``train_limit``)."""
    train_x, test_x, train_y, test_y = _digits_split(data_seed)
    if train_limit is not None:
        train_x, train_y = train_x[:train_limit], train_y[:train_limit]
    train = TensorDataset(torch.from_numpy(train_x).unsqueeze(1), torch.from_numpy(train_y))
    test = TensorDataset(torch.from_numpy(test_x).unsqueeze(1), torch.from_numpy(test_y))
    size = len(train)
    return Task(
        "digits",
        train,
        test,
        8,
        10,
        torch.zeros(size, dtype=torch.int64),
        torch.zeros(size, dtype=torch.bool),
    )


def _augment(
    images: np.ndarray, labels: np.ndarray, count: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``count`` upsampled, shifted, noise-corrupted copies drawn from ``images``."""
    source = torch.from_numpy(images).unsqueeze(1)
    picks = torch.randint(0, source.shape[0], (count,), generator=generator)
    big = F.interpolate(source[picks], size=(16, 16), mode="bilinear", align_corners=False)
    # shift by up to 2 pixels in each direction: pad with zeros, then crop
    padded = F.pad(big, (2, 2, 2, 2))
    dx = torch.randint(0, 5, (count,), generator=generator)
    dy = torch.randint(0, 5, (count,), generator=generator)
    shifted = torch.empty_like(big)
    for offset_y in range(5):  # 25 possible shifts: crop each group of images at once
        for offset_x in range(5):
            group = (dy == offset_y) & (dx == offset_x)
            shifted[group] = padded[group, :, offset_y : offset_y + 16, offset_x : offset_x + 16]
    shares = torch.tensor([share for share, _ in DIFFICULTY_LEVELS])
    sigmas = torch.tensor([sigma for _, sigma in DIFFICULTY_LEVELS])
    difficulty = torch.multinomial(shares, count, replacement=True, generator=generator)
    noise = (
        torch.randn(shifted.shape, generator=generator) * sigmas[difficulty][:, None, None, None]
    )
    return (shifted + noise).float(), torch.from_numpy(labels)[picks], difficulty


def noisy16_task(
    train_size: int = 8000, test_size: int = 2000, label_noise: float = 0.1, data_seed: int = 0
) -> Task:
    """The larger task: 16x16 augmented digits with easy/hard noise levels and label noise."""
    train_x, test_x, train_y, test_y = _digits_split(data_seed)
    generator = torch.Generator().manual_seed(1000 + data_seed)
    train_images, train_labels, difficulty = _augment(train_x, train_y, train_size, generator)
    test_images, test_labels, _ = _augment(test_x, test_y, test_size, generator)
    flipped = torch.rand(train_size, generator=generator) < label_noise
    # a corrupted label is a *different* class: add 1..9 modulo 10
    offsets = torch.randint(1, 10, (train_size,), generator=generator)
    train_labels = torch.where(flipped, (train_labels + offsets) % 10, train_labels)
    return Task(
        "noisy16",
        TensorDataset(train_images, train_labels),
        TensorDataset(test_images, test_labels),
        16,
        10,
        difficulty,
        flipped,
    )


def build_task(name: str, *, scale: float = 1.0, data_seed: int = 0) -> Task:
    """Build task ``name``; ``scale < 1`` shrinks its training set (for the quick test)."""
    if name == "digits":
        return digits_task(data_seed, None if scale >= 1.0 else max(100, int(1347 * scale)))
    if name == "noisy16":
        return noisy16_task(
            train_size=max(200, int(8000 * scale)),
            test_size=max(100, int(2000 * scale)),
            data_seed=data_seed,
        )
    raise ValueError(f"task: unknown task {name!r}; allowed: {', '.join(TASK_NAMES)}")
