"""PyTorch Lightning: one callback prunes the training data of any ``LightningModule``.

Add :class:`PruningCallback` to ``Trainer(callbacks=[...])`` and build the training loader from
the handler; ``training_step`` returns its loss as usual::

    handler = BLS(InfoBatch(train_data, num_epochs=E, prune_ratio=0.5), alpha=0.7).proxy()

    class Model(L.LightningModule):
        def train_dataloader(self):
            return DataLoader(handler, sampler=handler.sampler, batch_size=64)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self(x), y)      # the ordinary mean batch loss

    trainer = L.Trainer(max_epochs=E, callbacks=[PruningCallback(handler)])

What the callback does, and why:

* it routes every loss ``training_step`` returns through ``handler.update()`` and hands the
  returned (weighted) loss to Lightning's backward. It does so by wrapping the module's
  ``training_step`` on the instance for the duration of ``fit`` (removed at teardown);
  Lightning looks the method up on the instance, also under DDP. With manual optimisation
  (``automatic_optimization = False``) the loss is back-propagated inside ``training_step``,
  so there call ``loss = handler.update(loss)`` yourself before ``self.manual_backward``;
* the handler's sampler is a ``DistributedSampler`` by type, so Lightning's DDP strategies keep
  it instead of wrapping it in a sampler of their own (``use_distributed_sampler`` may stay at
  its default); Lightning calls its ``set_epoch`` every epoch;
* the pruning state (scores, weights, epoch, history) travels in Lightning checkpoints as this
  callback's state; resuming with ``trainer.fit(model, ckpt_path=...)`` from a checkpoint saved
  at the end of an epoch decides the next epochs exactly as the uninterrupted run;
* Lightning counts an epoch's batches once, from the first (full) epoch. It calls the
  sampler's ``set_epoch`` before ``on_train_epoch_start``, so there the epoch's plan is decided
  and ``len(loader)`` is its final length: the callback sets ``trainer.num_training_batches``
  (``fit_loop.max_batches``, under ``limit_train_batches``) to it, and, for a fractional
  ``val_check_interval``, ``trainer.val_check_batch`` as Lightning derives it. The progress
  bar's total is then the epoch's batches and the epoch-end validation runs in pruned epochs
  too (with the full count it would wait for a batch the epoch does not have);
* at the end of every training epoch it logs, through ``LightningModule.log``,
  ``bls/kept`` and ``bls/pruned`` (samples of that epoch before DDP sharding) and
  ``bls/saved_ratio`` (the running share of sample visits saved).

Limits: a ``training_step`` returning ``None`` (a skipped batch) gives no ``update()`` for that
batch, which the handler reports as an :class:`bls.AttributionWarning` at the epoch's end.
``trainer.estimated_stepping_batches`` is computed from full epochs (it reads one batch count
for all of them), so a schedule sized from it stops short of its final value in a pruned run.
With a budget (``target_saving=...``) size it from ``handler.total_steps(batch_size)``, the
exact count of batches, in ``configure_optimizers`` (with ``accumulate_grad_batches=a > 1``
the optimizer steps ``sum_e ceil(batches_e / a)``, up to one per epoch more than
``total_steps / a``). With several
training loaders (a ``CombinedLoader``) Lightning's own count is kept; an epoch resumed from a
mid-epoch checkpoint keeps the count Lightning took when training started.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

from torch.utils.data import DataLoader

try:
    import lightning.pytorch as pl
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "bls.integrations.lightning needs PyTorch Lightning: pip install 'bls-prune[lightning]'"
    ) from error

import torch

from bls.handler import PruningDataset
from bls.sampler import PruningSampler

__all__ = ["PruningCallback"]

logger = logging.getLogger("bls")


class PruningCallback(pl.Callback):
    """Prunes a ``LightningModule``'s training data with a bls-prune handler.

    Args:
        handler: the pruning dataset the training ``DataLoader`` is built from (with
            ``sampler=handler.sampler``). ``None`` finds it in the trainer's training loader
            when training starts.
        log: whether to log ``kept``, ``pruned`` and ``saved_ratio`` every epoch.
        log_prefix: prefix of the logged names.

    Example:
        >>> import torch
        >>> from bls import BLS, InfoBatch
        >>> from bls.integrations.lightning import PruningCallback
        >>> data = torch.utils.data.TensorDataset(torch.randn(64, 3))
        >>> handler = BLS(InfoBatch(data, num_epochs=3), alpha=0.7).proxy()
        >>> callback = PruningCallback(handler)   # Trainer(callbacks=[callback])
    """

    def __init__(
        self,
        handler: PruningDataset | None = None,
        *,
        log: bool = True,
        log_prefix: str = "bls/",
    ) -> None:
        if handler is not None and not isinstance(handler, PruningDataset):
            raise TypeError(
                f"handler: expected a pruning dataset such as InfoBatch(...) or "
                f"BLS(InfoBatch(...)).proxy(), got {type(handler).__name__}"
            )
        self.handler = handler
        self._log = bool(log)
        self.log_prefix = str(log_prefix)
        # A checkpoint may be restored before the handler is found in the training loader.
        self._pending_state: dict[str, Any] | None = None

    # ------------------------------------------------------------------ wiring
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not pl_module.automatic_optimization:
            logger.info(
                "manual optimisation: PruningCallback does not touch training_step; call "
                "loss = handler.update(loss) before self.manual_backward(loss)"
            )
            return
        if isinstance(pl_module.__dict__.get("training_step"), _PrunedTrainingStep):
            return
        pl_module.training_step = _PrunedTrainingStep(  # type: ignore[method-assign]
            self, pl_module.training_step
        )

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if isinstance(pl_module.__dict__.get("training_step"), _PrunedTrainingStep):
            del pl_module.training_step

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        found = _handler_of(trainer.train_dataloader)
        if self.handler is None:
            if found is None:
                raise ValueError(
                    "handler: PruningCallback() found no pruning handler in the training "
                    "DataLoader; build it as DataLoader(handler, sampler=handler.sampler, ...) "
                    "or pass PruningCallback(handler)"
                )
            self.handler = found
        elif found is not self.handler:
            raise ValueError(
                "handler: the training DataLoader does not draw from this callback's handler; "
                "build it as DataLoader(handler, sampler=handler.sampler, ...)"
            )
        if self._pending_state is not None:
            self.handler.load_state_dict(self._pending_state)
            self._pending_state = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning took the batch count from the first, full epoch; set_epoch has just
        # decided this epoch's plan, so the loader's length is the epoch's own.
        loader = trainer.train_dataloader
        if not isinstance(loader, DataLoader) or _handler_of(loader) is not self.handler:
            return  # several loaders: their combined length is Lightning's to count
        loop = trainer.fit_loop
        if loop.max_batches == float("inf"):
            return
        batches = _limited(len(loader), trainer.limit_train_batches)
        if batches == loop.max_batches:
            return
        loop.max_batches = batches
        interval = trainer.val_check_interval
        if isinstance(interval, float) and isinstance(trainer.val_check_batch, int):
            # Lightning's own rule (FitLoop.setup_data), for the epoch's length.
            trainer.val_check_batch = max(1, int(batches * interval))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        handler = self.handler
        if handler is None or not handler.history:
            return
        handler.end_epoch()
        if not self._log:
            return
        record = handler.history[-1]
        # Every rank holds the same numbers (same plan, gathered scores): no reduction needed.
        for name, value in (
            ("kept", float(record["kept"])),
            ("pruned", float(record["pruned"])),
            ("saved_ratio", float(handler.saved_ratio)),
        ):
            pl_module.log(self.log_prefix + name, value, on_step=False, on_epoch=True)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        if self.handler is not None:
            return {"handler": self.handler.state_dict()}
        return {} if self._pending_state is None else {"handler": self._pending_state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = state_dict.get("handler")
        if state is None:
            return
        if self.handler is None:
            self._pending_state = state
        else:
            self.handler.load_state_dict(state)


class _PrunedTrainingStep:
    """``training_step`` with its loss passed through ``handler.update()``.

    A class rather than a closure so that the module stays picklable while it is wrapped;
    ``__wrapped__`` lets Lightning's ``is_overridden`` see the user's method through it.
    """

    def __init__(self, callback: PruningCallback, training_step: Any) -> None:
        self.callback = callback
        self.training_step = training_step
        functools.update_wrapper(self, training_step)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        output = self.training_step(*args, **kwargs)
        handler = self.callback.handler
        if output is None or handler is None:
            return output
        indices = None
        if handler.return_indices:
            batch = kwargs["batch"] if "batch" in kwargs else args[0]
            indices = _indices_of(batch, handler.index_key)
        if isinstance(output, torch.Tensor):
            return handler.update(output, indices=indices)
        if isinstance(output, Mapping) and "loss" in output:
            return {**output, "loss": handler.update(output["loss"], indices=indices)}
        raise TypeError(
            f"training_step: expected the loss tensor, a dict with key 'loss' or None, got "
            f"{type(output).__name__}"
        )


def _limited(batches: int, limit: int | float) -> int:
    """``batches`` under ``Trainer(limit_train_batches=limit)``: a count, or a share of them."""
    if isinstance(limit, int):
        return min(batches, limit)
    return max(1, int(batches * limit)) if batches and limit > 0 else 0


def _indices_of(batch: Any, index_key: str) -> Any:
    """The indices a ``return_indices=True`` handler put into the collated batch."""
    if isinstance(batch, Mapping):
        return batch[index_key]
    if isinstance(batch, (tuple, list)):
        return batch[-1]
    raise TypeError(
        f"batch: a handler with return_indices=True gives tuples, lists or dicts, got "
        f"{type(batch).__name__}"
    )


def _handler_of(loaders: Any) -> PruningDataset | None:
    """The handler behind the (first) training loader, found through its sampler."""
    if isinstance(loaders, Mapping):
        candidates = list(loaders.values())
    elif isinstance(loaders, (list, tuple)):
        candidates = list(loaders)
    else:
        candidates = [loaders]
    for loader in candidates:
        sampler = getattr(loader, "sampler", None)
        if isinstance(sampler, PruningSampler):
            dataset = sampler.dataset
            return dataset if isinstance(dataset, PruningDataset) else None
    return None
