"""Hugging Face ``transformers.Trainer`` (and so Accelerate): a Trainer that prunes its data.

Pass the handler as the training set of :class:`PruningTrainer`; the loss the Trainer computes
is all BLS needs::

    handler = BLS(InfoBatch(train_data, num_epochs=E, prune_ratio=0.5), alpha=0.7).proxy()
    trainer = PruningTrainer(
        model=model,
        args=TrainingArguments(output_dir="out", num_train_epochs=E),
        train_dataset=handler,
    )
    trainer.train()

Why it is a subclass, and what each override is for:

* Accelerate reads one batch ahead, the Trainer pre-fetches all micro-batches of an optimizer
  step (gradient accumulation) and, on several processes, Accelerate's ``BatchSamplerShard``
  deals the batches of one global order out to the ranks. So losses are attributed by
  *explicit indices* (docs/design.md, 'Explicit-indices route'): the trainer switches the handler to
  ``return_indices=True``, every item then carries its index under ``handler.index_key``
  (``"index"``), the column is kept through ``remove_unused_columns`` and the data collator,
  taken out of the inputs before ``model(**inputs)``, and each micro-batch's loss is passed to
  ``handler.update(loss, indices=...)`` with that micro-batch's indices.
* The training sampler is ``handler.sampler``. Under Accelerate it yields the global plan and
  Accelerate shards it; all ranks hold the same scores because ``update`` gathers every rank's
  ``(indices, loss)``.
* BLS scores a batch by its *mean* loss, so every micro-batch's loss is its own mean: the
  trainer does not pass ``num_items_in_batch`` to the model or to ``compute_loss_func`` and
  lets the Trainer divide by the accumulation steps (the Trainer's behaviour before
  transformers 4.46; with token-level losses of varying length the accumulated gradient
  weighs micro-batches equally rather than tokens equally).
* The pruning state is saved as ``bls_pruning.pt`` in every checkpoint folder, and
  ``trainer.train(resume_from_checkpoint=...)`` restores it and resumes with the epoch after
  the last completed one: pruned epochs differ in length, so the Trainer's own count
  (``global_step // steps_per_epoch``) would name the wrong epoch. Save at epoch ends
  (``save_strategy="epoch"``) for an exact resume; a checkpoint from the middle of an epoch
  restarts that epoch with a plan decided from the scores saved with it.
* The Trainer sizes every epoch like the first, full one; each epoch is sized again from its
  own plan, so a shorter epoch's last group of micro-batches still ends in an optimizer step.

Limits: the learning-rate schedule is sized before training from full epochs; pruned epochs
take fewer optimizer steps, so a decaying schedule does not reach its final value (pass a
scheduler of your own through ``optimizers=`` if that matters).
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, cast

try:
    from transformers import Trainer, TrainerCallback
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "bls.integrations.hf needs transformers and accelerate: pip install 'bls-prune[hf]'"
    ) from error

import torch

from bls.handler import PruningDataset

__all__ = ["STATE_FILE", "PruningTrainer"]

logger = logging.getLogger("bls")

#: File name of the pruning state inside each Trainer checkpoint folder.
STATE_FILE = "bls_pruning.pt"


class PruningTrainer(Trainer):
    """A ``transformers.Trainer`` whose training set is a bls-prune handler.

    Takes exactly the ``Trainer``'s arguments; ``train_dataset`` must be a pruning dataset
    (``InfoBatch(...)``, ``BLS(SeTa(...)).proxy()``, ...) whose items are dicts, not yet
    iterated. Evaluation is unchanged.

    Attributes:
        handler: the pruning dataset (the same object as ``train_dataset``).

    Example:
        >>> from bls import BLS, InfoBatch
        >>> from bls.integrations.hf import PruningTrainer
        >>> # handler = BLS(InfoBatch(tokenized, num_epochs=3), alpha=0.7).proxy()
        >>> # PruningTrainer(model=model, args=args, train_dataset=handler).train()
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        handler = self.train_dataset
        if not isinstance(handler, PruningDataset):
            raise TypeError(
                f"train_dataset: PruningTrainer needs a pruning dataset such as "
                f"BLS(InfoBatch(data, num_epochs=E)).proxy(), got {type(handler).__name__}"
            )
        if not handler.return_indices:
            if handler.epoch >= 0:
                raise ValueError(
                    "train_dataset: the handler was already iterated without indices; build it "
                    "with return_indices=True or hand it to PruningTrainer before training"
                )
            handler.return_indices = True
        self.handler: PruningDataset = handler
        # Each micro-batch's loss must be its own mean (see the module docstring).
        self.model_accepts_loss_kwargs = False
        if hasattr(self, "loss_is_scaled_for_ga"):
            self.loss_is_scaled_for_ga = False
        self.add_callback(_CloseEpoch(handler))

    # ------------------------------------------------------------------ data
    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler[int]:
        return self.handler.sampler

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        columns = self._signature_columns
        if columns is not None and self.handler.index_key not in columns:
            columns.append(self.handler.index_key)

    # ------------------------------------------------------------------ loss
    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        """The Trainer's loss of one micro-batch, recorded by the handler and weighted by it."""
        key = self.handler.index_key
        indices = inputs.get(key)
        if indices is not None:
            inputs = {name: value for name, value in inputs.items() if name != key}
        result = super().compute_loss(model, inputs, return_outputs=return_outputs)
        if indices is None or not model.training:
            return result  # evaluation, or a data set other than the handler
        if return_outputs:
            loss, outputs = cast(tuple[torch.Tensor, Any], result)
            return self.handler.update(loss, indices=indices), outputs
        return self.handler.update(cast(torch.Tensor, result), indices=indices)

    def _run_epoch(self, *args: Any, **kwargs: Any) -> Any:
        # The Trainer sizes every epoch like the first, full one. Decide this epoch's plan now
        # and size the epoch from it, so that the last group of micro-batches of a shorter
        # epoch still ends in an optimizer step (set_epoch is idempotent; the Trainer calls it
        # again).
        loader = kwargs.get("train_dataloader")
        epoch = kwargs.get("epoch")
        if loader is not None and epoch is not None and hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
            steps_in_epoch = len(loader)
            kwargs["steps_in_epoch"] = steps_in_epoch
            accumulation = self.args.gradient_accumulation_steps
            kwargs["num_update_steps_per_epoch"] = max(1, math.ceil(steps_in_epoch / accumulation))
        return super()._run_epoch(*args, **kwargs)

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if not self.args.should_save:
            return
        folder = os.path.join(
            self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        )
        if os.path.isdir(folder):
            torch.save(self.handler.state_dict(), os.path.join(folder, STATE_FILE))

    def _init_training_state(
        self,
        max_steps: int,
        num_update_steps_per_epoch: int,
        num_train_epochs: int,
        resume_from_checkpoint: str | None,
        trial: Any,
    ) -> tuple[int, int]:
        epochs_trained, steps_in_epoch = super()._init_training_state(
            max_steps, num_update_steps_per_epoch, num_train_epochs, resume_from_checkpoint, trial
        )
        if resume_from_checkpoint is None:
            return epochs_trained, steps_in_epoch
        path = os.path.join(resume_from_checkpoint, STATE_FILE)
        if not os.path.isfile(path):
            logger.warning(
                "%s has no %s: pruning restarts from fresh scores",
                resume_from_checkpoint,
                STATE_FILE,
            )
            return epochs_trained, steps_in_epoch
        state = torch.load(path, weights_only=True)
        self.handler.load_state_dict(state)
        history = state["history"]
        if not history:
            return 0, 0
        if "updates" in history[-1]:  # saved after the epoch's end: continue with the next one
            return int(state["epoch"]) + 1, 0
        logger.warning(
            "checkpoint %s was saved inside epoch %d: that epoch restarts with a plan decided "
            "from the saved scores (save at epoch ends for an exact resume)",
            resume_from_checkpoint,
            state["epoch"],
        )
        return int(state["epoch"]), 0


class _CloseEpoch(TrainerCallback):
    """Closes the handler's epoch when the Trainer's ends, so its checkpoint is complete."""

    def __init__(self, handler: PruningDataset) -> None:
        self.handler = handler

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.handler.end_epoch()
