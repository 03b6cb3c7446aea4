"""Shared test data: data sets whose items know their own index."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset


class IndexedDataset(Dataset[tuple[torch.Tensor, int]]):
    """Item ``i`` is ``(tensor([i]), i)``; ``classes`` checks attribute forwarding."""

    classes = ("even", "odd")

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.tensor([float(index)]), int(index)


class DictDataset(Dataset[dict[str, torch.Tensor]]):
    """Hugging Face style: dict items and a batched ``__getitems__``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.getitems_calls = 0

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"x": torch.tensor([float(index)])}

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        self.getitems_calls += 1
        return [self[i] for i in indices]


def sample_loss(index: torch.Tensor, epoch: int) -> torch.Tensor:
    """A known per-sample "loss": a function of the sample's index and the epoch."""
    return ((index % 7) + 1.0) * (0.5 + 0.1 * epoch) + (index % 3) * 0.25
