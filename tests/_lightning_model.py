"""The tiny LightningModule shared by ``test_lightning.py`` and ``_lightning_ddp.py``.

Not a test module. The data set carries its own sample id as a third column, so what the
module records (ids and the mean loss of every batch it trained on) is independent of the
library under test.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from _replay import bls_replay
from torch.utils.data import DataLoader, TensorDataset

from bls.handler import PruningDataset

FEATURES = 6
CLASSES = 3


def make_data(n: int, seed: int = 0) -> TensorDataset:
    """``n`` samples ``(x, y, id)``; labels are learnable so losses spread over training."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, FEATURES, generator=generator)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    return TensorDataset(x, y, torch.arange(n))


class TinyModule(pl.LightningModule):
    """A linear classifier whose ``training_step`` returns the ordinary mean loss.

    ``steps`` records ``(epoch, ids, loss)`` per batch, in training order.
    """

    def __init__(self, handler: PruningDataset, batch_size: int, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)  # test code: fixes the initial weights
        self.layer = torch.nn.Linear(FEATURES, CLASSES)
        self.handler = handler
        self.batch_size = batch_size
        self.steps: list[tuple[int, list[int], float]] = []

    def train_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.handler, sampler=self.handler.sampler, batch_size=self.batch_size)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y, ids = batch
        loss = F.cross_entropy(self.layer(x), y)
        self.steps.append((self.current_epoch, ids.tolist(), float(loss.detach())))
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.5)


def bls_scores(steps: list[tuple[int, list[int], float]], n: int, alpha: float) -> torch.Tensor:
    """The BLS formula applied independently (``tests/_replay.py``) to recorded steps.

    ``steps`` are ``(epoch, indices, loss)`` in update order; batches of one step on different
    ranks are disjoint, so their relative order does not matter.
    """
    return bls_replay(((ids, loss) for _, ids, loss in steps), n, alpha).float()
