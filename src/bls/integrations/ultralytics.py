"""Ultralytics YOLO detection: a ``DetectionTrainer`` that prunes its training images.

Use :class:`PruningDetectionTrainer` where you would use Ultralytics' ``DetectionTrainer``;
its extra keyword arguments choose the pruning (BLS + InfoBatch by default)::

    trainer = PruningDetectionTrainer(
        overrides=dict(model="yolo11n.yaml", data="data.yaml", epochs=E, imgsz=640),
        prune_ratio=0.5, alpha=0.7,
    )
    trainer.train()
    print(trainer.handler.saved_ratio)

Ultralytics builds the training set itself (a ``YOLODataset`` from ``data.yaml``), so the
trainer builds the handler around it, through ``handler_factory(dataset, num_epochs)``.

Why it looks as it does, and what each override is for:

* Ultralytics' ``InfiniteDataLoader`` iterates its sampler through ``_RepeatSampler``, which
  starts the next epoch's pass before the current epoch's losses arrive; bls-prune refuses such
  a loader. ``get_dataloader(mode="train")`` therefore returns a stock
  ``torch.utils.data.DataLoader`` over the handler with ``sampler=handler.sampler`` (no
  persistent workers, so that the workers of each epoch see the data set as it is then, e.g.
  after ``close_mosaic``), whose iteration begins lazily, at its first batch: Ultralytics calls
  ``iter()`` on the loader twice per epoch and consumes one of them.
* The losses are matched to their images by explicit indices: the handler is switched to
  ``return_indices=True``, every item (a dict) gains the key ``handler.index_key``
  (``"index"``) and ``preprocess_batch`` takes it out of the batch. Ultralytics computes the
  batch's loss as ``loss, loss_items = self.model(batch)`` and stores ``self.loss =
  loss.sum()`` (the box, class and DFL terms times the batch size) before
  ``self.loss.backward()``; ``loss`` is a property here, and that assignment passes
  ``self.loss / batch_size`` (the batch's mean loss) to ``handler.update(..., indices=...)``
  and stores the returned (InfoBatch-weighted) mean times the batch size. The gradient keeps
  Ultralytics' scale, and ``loss_items`` (what Ultralytics logs) stay unweighted. Nothing is
  attached to the model, which Ultralytics deep-copies into its EMA and pickles into
  checkpoints.
* Epochs: the handler decides each epoch's plan in ``on_train_epoch_start`` and closes it in
  ``on_train_epoch_end``. An epoch that Ultralytics runs again (its out-of-memory retry on
  the first epoch, its NaN recovery) starts again from the pruning state of that epoch's start.
* Checkpoints: every ``save_model()`` writes the pruning state beside each checkpoint it
  writes, ``weights/last.pt`` -> ``weights/bls_pruning_last.pt`` (a name that Ultralytics'
  ``resume=True`` search for ``last*.pt`` does not pick), and a resumed run loads it.

Everything overridden is public (``get_dataloader``, ``preprocess_batch``, ``save_model``,
the ``loss`` attribute, the callbacks); :data:`TRAINER_API` lists the methods with the
parameter names they had in the Ultralytics release this was written against
(:data:`TESTED_ULTRALYTICS`), and the trainer raises ``RuntimeError`` at construction when
the installed release differs. A training batch whose loss was not assigned to ``self.loss``
raises at that batch's end.

Limits: one process only. Ultralytics runs several GPUs by re-launching a generated script that
re-creates the trainer from its class and arguments alone, without this trainer's pruning
arguments, so ``device="0,1"`` raises ``RuntimeError``. ``compile``, ``rect`` (training),
``time`` and ``quantize`` are refused: each changes how batches are formed, how the loss is
computed or how many epochs there are. With mosaic augmentation a training sample is four
images; the loss is recorded for the first of them only (see docs/ultralytics.md).
"""

from __future__ import annotations

import inspect
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

try:
    import ultralytics
    from ultralytics.data.build import seed_worker
    from ultralytics.models.yolo.detect import DetectionTrainer
    from ultralytics.utils import DEFAULT_CFG, LOCAL_RANK
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "bls.integrations.ultralytics needs ultralytics: pip install 'bls-prune[ultralytics]'"
    ) from error

import torch
from torch.utils.data import DataLoader

from bls.epochs import AttributionWarning
from bls.handler import PruningDataset
from bls.integrations import _with_indices
from bls.methods import BLS, InfoBatch

__all__ = [
    "TESTED_ULTRALYTICS",
    "TRAINER_API",
    "HandlerFactory",
    "PruningDetectionTrainer",
    "state_path",
]

logger = logging.getLogger("bls")

#: The Ultralytics versions the integration is tested with (8.4.190).
TESTED_ULTRALYTICS = ">=8.4,<9"

#: The ``DetectionTrainer`` methods PruningDetectionTrainer overrides, with their parameter
#: names in the Ultralytics it was written against. ``tests/test_ultralytics.py`` compares them
#: with the installed release.
TRAINER_API: dict[str, tuple[str, ...]] = {
    "get_dataloader": ("self", "dataset_path", "batch_size", "rank", "mode"),
    "preprocess_batch": ("self", "batch"),
    "save_model": ("self",),
    "build_dataset": ("self", "img_path", "mode", "batch"),
}

#: Builds the handler around Ultralytics' training set: ``factory(dataset, num_epochs)``.
HandlerFactory = Callable[[Any, int], PruningDataset]

# The trainer arguments each refusal names, with why.
_REFUSED: dict[str, str] = {
    "compile": "compiled training drops the last partial batch for static shapes, and is untested",
    "rect": "rectangular training batches group images by shape, not by the pruning plan",
    "time": "time-limited training changes the number of epochs after the handler planned them",
    "quantize": "quantization-aware training calibrates on the training loader",
}


def _unsupported(what: str) -> str:
    return (
        f"{what}; bls.integrations.ultralytics is tested with ultralytics{TESTED_ULTRALYTICS}, "
        f"this is ultralytics {ultralytics.__version__}"
    )


def _check_trainer_api() -> None:
    """Raise ``RuntimeError`` when an overridden method or one of its parameters is gone."""
    for name, expected in TRAINER_API.items():
        method = getattr(DetectionTrainer, name, None)
        if not callable(method):
            raise RuntimeError(_unsupported(f"DetectionTrainer has no method {name}()"))
        parameters = tuple(inspect.signature(method).parameters)
        if parameters != expected:
            raise RuntimeError(
                _unsupported(
                    f"DetectionTrainer.{name} takes {parameters}, PruningDetectionTrainer "
                    f"overrides it as {expected}"
                )
            )


def state_path(checkpoint: str | os.PathLike[str]) -> Path:
    """Where the pruning state of an Ultralytics checkpoint is saved.

    ``weights/last.pt`` -> ``weights/bls_pruning_last.pt`` (and so for ``best.pt`` and
    ``epoch<N>.pt``).
    """
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f"bls_pruning_{checkpoint.name}")


class _PlanLoader(DataLoader[Any]):
    """A stock DataLoader over the handler whose epoch begins at its first batch.

    Ultralytics calls ``enumerate(loader)`` twice per epoch and iterates the second; starting
    the sampler's pass lazily keeps the unconsumed call from beginning an epoch. ``reset`` and
    ``close`` are what Ultralytics calls on its own loader; without persistent workers there
    is nothing to reset (each epoch's workers copy the data set as it is then).
    """

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        yield from super().__iter__()

    def reset(self) -> None:
        """Nothing to do: workers do not outlive an epoch."""

    def close(self) -> None:
        """Nothing to do: workers do not outlive an epoch."""


class PruningDetectionTrainer(DetectionTrainer):
    """An Ultralytics ``DetectionTrainer`` whose training images are pruned by bls-prune.

    Takes the ``DetectionTrainer``'s arguments plus the pruning ones, keyword only. Evaluation,
    checkpoints and logs are Ultralytics' own.

    Args:
        cfg: Ultralytics' configuration (default: its ``DEFAULT_CFG``).
        overrides: Ultralytics' training arguments (``model``, ``data``, ``epochs``, ...).
        _callbacks: Ultralytics' callbacks, as ``YOLO(...).train(trainer=...)`` passes them.
        handler_factory: ``factory(dataset, num_epochs) -> PruningDataset`` builds the handler
            around Ultralytics' ``YOLODataset``; ``num_epochs`` is the trainer's ``epochs``.
            Not together with ``prune_ratio``, ``delta`` or ``alpha``.
        prune_ratio: InfoBatch's share of well-learned images dropped per pruning epoch
            (default 0.5).
        delta: InfoBatch's share of epochs that prune (default 0.875).
        alpha: the BLS EMA factor (default 0.7).
        seed: the handler's seed (default: Ultralytics' ``seed``).

    Attributes:
        handler: the pruning dataset, built when training builds its loader (``None`` before).

    Raises:
        RuntimeError: several devices (Ultralytics DDP), or an installed Ultralytics whose
            overridden methods differ from :data:`TRAINER_API`.
        ValueError: a refused training argument (``compile``, ``rect``, ``time``,
            ``quantize``), or ``handler_factory`` given with the InfoBatch/BLS arguments.

    Example:
        >>> from bls.integrations.ultralytics import PruningDetectionTrainer
        >>> # trainer = PruningDetectionTrainer(overrides=dict(model="yolo11n.yaml",
        >>> #     data="data.yaml", epochs=50), prune_ratio=0.5)
        >>> # trainer.train(); trainer.handler.history
    """

    def __init__(
        self,
        cfg: Any = DEFAULT_CFG,
        overrides: dict[str, Any] | None = None,
        _callbacks: dict[str, Any] | None = None,
        *,
        handler_factory: HandlerFactory | None = None,
        prune_ratio: float | None = None,
        delta: float | None = None,
        alpha: float | None = None,
        seed: int | None = None,
    ) -> None:
        _check_trainer_api()  # fail here, not in the middle of training
        given = {"prune_ratio": prune_ratio, "delta": delta, "alpha": alpha}
        if handler_factory is not None and any(v is not None for v in given.values()):
            named = ", ".join(k for k, v in given.items() if v is not None)
            raise ValueError(
                f"handler_factory: pass either a factory or {named}, not both (the factory "
                "builds the whole handler)"
            )
        super().__init__(cfg, overrides, _callbacks)
        if self.ddp or self.world_size > 1 or LOCAL_RANK != -1:
            raise RuntimeError(
                f"device={self.args.device!r}: PruningDetectionTrainer trains in one process "
                "only. Ultralytics trains on several GPUs by launching a generated script that "
                "re-creates the trainer from its class and Ultralytics arguments alone, so the "
                "pruning arguments and callbacks would be lost; train on one device"
            )
        for name, why in _REFUSED.items():
            value = getattr(self.args, name, None)
            if value:
                raise ValueError(f"{name}={value!r}: not supported with pruning ({why})")
        self._factory = handler_factory
        self._prune_ratio = 0.5 if prune_ratio is None else prune_ratio
        self._delta = 0.875 if delta is None else delta
        self._seed = int(self.args.seed) if seed is None else seed
        self._alpha = 0.7 if alpha is None else alpha
        self.handler: PruningDataset | None = None
        # (indices, images) of the batch between preprocess_batch and its loss
        self._pending: tuple[torch.Tensor, int] | None = None
        self._updates = 0  # this epoch's updates
        self._started_epoch = -1
        self._epoch_start_state: dict[str, Any] | None = None
        self.add_callback("on_train_start", _on_train_start)
        self.add_callback("on_train_epoch_start", _on_train_epoch_start)
        self.add_callback("on_train_batch_end", _on_train_batch_end)
        self.add_callback("on_train_epoch_end", _on_train_epoch_end)

    # ------------------------------------------------------------------ data
    def _build_handler(self, dataset: Any) -> PruningDataset:
        if self._factory is None:
            return BLS(
                InfoBatch(
                    dataset,
                    self.epochs,
                    prune_ratio=self._prune_ratio,
                    delta=self._delta,
                    seed=self._seed,
                    return_indices=True,
                ),
                alpha=self._alpha,
            ).proxy()
        return _with_indices(
            self._factory(dataset, self.epochs),
            "handler_factory",
            "expected it to return a pruning dataset such as "
            "BLS(InfoBatch(dataset, num_epochs)).proxy()",
            "return a fresh handler, or one built with return_indices=True",
        )

    def get_dataloader(
        self, dataset_path: str, batch_size: int = 16, rank: int = 0, mode: str = "train"
    ) -> Any:
        """Ultralytics' loader for ``mode="val"``; for training a stock DataLoader over the
        handler (built on first use around Ultralytics' training set, reused afterwards)."""
        if mode != "train":
            return super().get_dataloader(dataset_path, batch_size, rank, mode)
        if self.handler is None:
            self.handler = self._build_handler(self.build_dataset(dataset_path, mode, batch_size))
        handler = self.handler
        batch = max(1, min(batch_size, len(handler)))
        workers = min(os.cpu_count() or 1, int(self.args.workers))
        generator = torch.Generator()
        generator.manual_seed(int(self.args.seed))
        return _PlanLoader(
            handler,
            batch_size=batch,
            sampler=handler.sampler,
            num_workers=workers,
            collate_fn=getattr(handler.dataset, "collate_fn", None),
            pin_memory=self.device.type == "cuda",
            worker_init_fn=seed_worker,
            generator=generator,
            prefetch_factor=4 if workers > 0 else None,
        )

    def preprocess_batch(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Take the handler's index column out of a training batch, then Ultralytics' own."""
        assert self.handler is not None  # a training batch comes from the handler's loader
        key = self.handler.index_key
        if key not in batch:
            raise RuntimeError(
                f"a training batch has no {key!r} entry (its keys: {sorted(batch)}); the "
                "training loader must be the one PruningDetectionTrainer.get_dataloader builds"
            )
        indices = torch.as_tensor(batch.pop(key), dtype=torch.long)
        images = int(batch["img"].shape[0])
        if indices.numel() != images:
            raise RuntimeError(
                f"a training batch holds {images} images but {indices.numel()} indices"
            )
        self._pending = (indices, images)  # taken by the next ``self.loss = ...``
        return cast(dict[str, Any], super().preprocess_batch(batch))

    @property
    def loss(self) -> Any:
        """The loss Ultralytics back-propagates: the batch's, re-weighted by the handler.

        Ultralytics computes a training batch's loss as ``loss, loss_items =
        self.model(batch)`` and assigns ``self.loss = loss.sum()`` (box, class and DFL terms
        times the batch size) before ``self.loss.backward()``. That assignment records the
        batch: ``self.loss / batch_size``, the batch's mean loss, goes to
        ``handler.update(..., indices=...)``, and the returned (InfoBatch-weighted) mean times
        the batch size is what is stored and back-propagated. Every other assignment (``None``
        at the start and on Ultralytics' out-of-memory retry) is stored unchanged.
        """
        return self.__dict__.get("_loss")

    @loss.setter
    def loss(self, value: Any) -> None:
        pending, self._pending = self.__dict__.get("_pending"), None
        if pending is None or not isinstance(value, torch.Tensor):
            self.__dict__["_loss"] = value
            return
        assert self.handler is not None
        indices, images = pending
        if value.dim() != 0:
            raise RuntimeError(
                _unsupported(
                    f"Ultralytics assigned a training loss of shape {tuple(value.shape)}, not "
                    "the scalar loss.sum() PruningDetectionTrainer records"
                )
            )
        weighted = self.handler.update(value / images, indices=indices)
        self._updates += 1
        self.__dict__["_loss"] = weighted * images

    # ------------------------------------------------------------------ checkpoints
    def save_model(self) -> bool:
        """Ultralytics' checkpoints, each with the pruning state beside it (:func:`state_path`)."""
        saved = super().save_model()
        if saved and self.handler is not None:
            state = self.handler.state_dict()
            written = [self.last]
            if self.best_fitness == self.fitness:
                written.append(self.best)
            if self.save_period > 0 and self.epoch % self.save_period == 0:
                written.append(self.wdir / f"epoch{self.epoch}.pt")
            for checkpoint in written:
                torch.save(state, state_path(checkpoint))
        return bool(saved)

    def _load_resumed_state(self) -> None:
        if not (self.resume and self.start_epoch > 0) or self.handler is None:
            return
        path = state_path(self.args.resume)
        if not path.is_file():
            logger.warning("%s is missing: pruning restarts from fresh scores", path)
            return
        state = torch.load(path, weights_only=True)
        self.handler.load_state_dict(state)  # checks every value first
        epoch = int(state["epoch"])
        if epoch != self.start_epoch - 1 or not state["epoch_finished"]:
            raise ValueError(
                f"resume: {path} holds the pruning state of epoch {epoch} "
                f"(finished: {bool(state['epoch_finished'])}), but Ultralytics resumes after "
                f"epoch {self.start_epoch - 1}; the two files come from different saves"
            )


# Ultralytics' callbacks take the trainer alone.
def _on_train_start(trainer: PruningDetectionTrainer) -> None:
    # After Ultralytics read the full epoch's length (len(train_loader)), as a fresh run does.
    trainer._load_resumed_state()


def _on_train_epoch_start(trainer: PruningDetectionTrainer) -> None:
    handler = trainer.handler
    assert handler is not None
    epoch = int(trainer.epoch)
    if epoch == trainer._started_epoch and trainer._epoch_start_state is not None:
        # Ultralytics runs this epoch again (out-of-memory retry, NaN recovery): start it
        # again from the scores it started with, and decide the same plan.
        handler.load_state_dict(trainer._epoch_start_state)
    else:
        trainer._epoch_start_state = handler.state_dict()
        trainer._started_epoch = epoch
    trainer._updates = 0
    handler.sampler.set_epoch(epoch)


def _on_train_batch_end(trainer: PruningDetectionTrainer) -> None:
    if trainer._pending is not None:
        raise RuntimeError(
            _unsupported(
                "a training batch ended without Ultralytics assigning its loss to "
                "trainer.loss, so PruningDetectionTrainer could not record or weight it"
            )
        )


def _on_train_epoch_end(trainer: PruningDetectionTrainer) -> None:
    handler = trainer.handler
    assert handler is not None
    handler.end_epoch()
    batches = len(trainer.train_loader)
    if trainer._updates != batches and not trainer.stop:
        warnings.warn(
            f"epoch {trainer.epoch}: {trainer._updates} losses were recorded for {batches} "
            "batches; the images of the other batches keep their previous scores",
            AttributionWarning,
            stacklevel=2,
        )
