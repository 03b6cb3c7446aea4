"""Small image classifiers for the demo and the command line (pure torch, CPU friendly).

The research-scale networks (CIFAR ResNets, timm models) live in ``examples/``; these are the
models a laptop trains in seconds on 8x8 digits or 32x32 CIFAR images.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MODEL_NAMES", "SmallCNN", "build_model"]

MODEL_NAMES = ("cnn", "mlp")


class SmallCNN(nn.Module):
    """Three 3x3 convolution blocks with BatchNorm, global average pooling and a linear head.

    Works for any input size of at least 4x4 (the pooling is adaptive).

    Args:
        in_channels: channels of the input images (1 for digits, 3 for RGB).
        num_classes: number of output logits.
        width: channels of the first block; the next blocks use ``2 * width`` and
            ``4 * width``.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 32) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            )

        self.features = nn.Sequential(
            block(in_channels, width),
            block(width, 2 * width),
            nn.MaxPool2d(2),
            block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``(batch, num_classes)`` for images ``(batch, in_channels, H, W)``."""
        return self.head(self.features(images))


def build_model(
    name: str, in_channels: int, num_classes: int, image_size: int, *, seed: int = 0
) -> nn.Module:
    """Build one of :data:`MODEL_NAMES` with weights drawn from ``seed``.

    The global torch generator is neither read nor advanced (the initialisation runs inside
    ``torch.random.fork_rng``).

    Args:
        name: ``"cnn"`` (:class:`SmallCNN`) or ``"mlp"`` (two hidden layers of 256 units).
        in_channels: image channels.
        num_classes: number of classes.
        image_size: side of the square input images (the MLP's input size).
        seed: seed of the initial weights.
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"model: unknown model {name!r}; allowed: {', '.join(MODEL_NAMES)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == "cnn":
            return SmallCNN(in_channels, num_classes)
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * image_size * image_size, 256),
            nn.ReLU(inplace=True),
            nn.Linear(256, 256),
            nn.ReLU(inplace=True),
            nn.Linear(256, num_classes),
        )
