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
* The pruning state is saved as ``bls_pruning.pt`` in every checkpoint folder (a
  ``TrainerCallback``'s ``on_save``), and ``trainer.train(resume_from_checkpoint=...)``
  restores it and resumes with the epoch after the last completed one: pruned epochs differ in
  length, so the Trainer's own count (``global_step // steps_per_epoch``) would name the wrong
  epoch. A checkpoint from inside an epoch resumes that epoch where it stopped: the Trainer
  skips the batches already trained (Accelerate's ``skip_first_batches``) and the handler
  replays the same plan under the skip (``ignore_data_skip=True`` is refused there).
* The Trainer sizes every epoch like the first, full one; each epoch is sized again from its
  own plan, so a shorter epoch's last group of micro-batches still ends in an optimizer step.
* With a budget (``target_saving=...``) every epoch's length is known before training, so the
  run's optimizer steps are counted from the plan lengths, per epoch
  ``ceil(batches on this rank / gradient_accumulation_steps)`` (the Trainer's own count of a
  short last group), and that total is the ``max_steps`` the Trainer sizes everything from:
  ``state.max_steps``, the progress bar and the scheduler's ``num_training_steps``. A decaying
  schedule then ends exactly at its final value. ``TrainingArguments(max_steps=...)`` set by
  the user is kept as it is.

Public hooks first: the handler's epoch is closed in ``on_epoch_end`` and its state saved in
``on_save``. Five things have no public hook and override ``Trainer`` methods outside its
documented subclassing hooks: the sampler (``_get_train_sampler``), the kept index column
(``_set_signature_columns_if_needed``), the epoch's length (``_run_epoch``), the resumed epoch
(``_init_training_state``) and the run's step total (``set_initial_training_values``, which
returns ``max_steps`` as the last of seven values). :data:`TRAINER_PRIVATE_API` lists them
with the parameter names of the transformers they were written against
(:data:`TESTED_TRANSFORMERS`); every override binds the Trainer's arguments to the installed
signature, so positional and keyword calls both work, and ``PruningTrainer()`` raises
``RuntimeError`` when a parameter it reads is missing. Nothing is skipped silently: an
unexpected loader, folder, column or return value ends in an error that names it.

Limits: without a budget each pruning epoch's length depends on scores not seen yet, so the
Trainer's step total (and with it the progress bar and the learning-rate schedule) is sized
from full epochs; pruned epochs take fewer optimizer steps, so a decaying schedule does not
reach its final value (use ``target_saving=...``, or pass a scheduler of your own through
``optimizers=``). A scheduler passed through ``optimizers=`` is never resized: size it from
``handler.total_steps(...)``.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import weakref
from collections.abc import Callable
from typing import Any, cast

try:
    import transformers
    from transformers import Trainer, TrainerCallback
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "bls.integrations.hf needs transformers and accelerate: pip install 'bls-prune[hf]'"
    ) from error

import torch

from bls.handler import PruningDataset
from bls.integrations import _with_indices
from bls.sharding import planned_shards

__all__ = ["STATE_FILE", "TESTED_TRANSFORMERS", "TRAINER_PRIVATE_API", "PruningTrainer"]

logger = logging.getLogger("bls")

#: File name of the pruning state inside each Trainer checkpoint folder.
STATE_FILE = "bls_pruning.pt"

#: The transformers versions the integration is tested with (the ``hf`` extra of bls-prune).
TESTED_TRANSFORMERS = ">=5.24,<6"

#: The ``Trainer`` methods outside its documented subclassing hooks that PruningTrainer
#: overrides (``_get_output_dir`` it only calls), each with its parameter names in the
#: transformers it was written against (5.24 and 5.25).
#: ``tests/test_hf.py`` compares them with the installed transformers.
TRAINER_PRIVATE_API: dict[str, tuple[str, ...]] = {
    "_get_train_sampler": ("self", "train_dataset"),
    "_set_signature_columns_if_needed": ("self",),
    "_run_epoch": (
        "self",
        "model",
        "epoch",
        "train_dataloader",
        "steps_in_epoch",
        "num_update_steps_per_epoch",
        "trial",
        "ignore_keys_for_eval",
        "start_time",
        "resume_from_checkpoint",
        "epochs_trained",
        "steps_trained_in_current_epoch",
    ),
    "_init_training_state": (
        "self",
        "max_steps",
        "num_update_steps_per_epoch",
        "num_train_epochs",
        "resume_from_checkpoint",
        "trial",
    ),
    "_get_output_dir": ("self", "trial"),
    "set_initial_training_values": ("self", "args", "dataloader"),
}

# The parameters each override reads or replaces: these must exist in the installed Trainer.
_READS: dict[str, tuple[str, ...]] = {
    "_get_train_sampler": ("train_dataset",),
    "_set_signature_columns_if_needed": (),
    "_run_epoch": ("epoch", "train_dataloader", "steps_in_epoch", "num_update_steps_per_epoch"),
    "_init_training_state": ("resume_from_checkpoint",),
    "_get_output_dir": ("trial",),
    "set_initial_training_values": ("args",),
}

# set_initial_training_values returns (num_train_epochs, num_update_steps_per_epoch,
# num_examples, num_train_samples, total_train_batch_size, steps_in_epoch, max_steps).
_TRAINING_VALUES = 7


def _unsupported(what: str) -> str:
    return (
        f"{what}; bls.integrations.hf is tested with transformers{TESTED_TRANSFORMERS}, "
        f"this is transformers {transformers.__version__} (pip install 'bls-prune[hf]')"
    )


def _trainer_signature(name: str) -> inspect.Signature:
    """The installed ``Trainer.<name>``'s signature, checked for the parameters bls-prune reads."""
    method = getattr(Trainer, name, None)
    if not callable(method):
        raise RuntimeError(_unsupported(f"transformers.Trainer has no method {name}()"))
    signature = inspect.signature(method)
    missing = [p for p in _READS[name] if p not in signature.parameters]
    if missing:
        raise RuntimeError(
            _unsupported(
                f"Trainer.{name}{signature} has no parameter {', '.join(map(repr, missing))}, "
                "which PruningTrainer reads"
            )
        )
    return signature


def _bind(
    name: str, trainer: Trainer, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> inspect.BoundArguments:
    """The arguments of a call of ``Trainer.<name>`` by parameter name, positional or not."""
    try:
        bound = _trainer_signature(name).bind(trainer, *args, **kwargs)
    except TypeError as error:
        raise RuntimeError(
            _unsupported(
                f"Trainer.{name}() was called with arguments its signature rejects: {error}"
            )
        ) from None
    bound.apply_defaults()
    return bound


def _call_parent(method: Callable[..., Any], bound: inspect.BoundArguments) -> Any:
    """Call ``method`` (``super().<name>``, bound to the trainer) with the ``bound`` arguments."""
    return method(*bound.args[1:], **bound.kwargs)


class PruningTrainer(Trainer):
    """A ``transformers.Trainer`` whose training set is a bls-prune handler.

    Takes exactly the ``Trainer``'s arguments; ``train_dataset`` must be a pruning dataset
    (``InfoBatch(...)``, ``BLS(SeTa(...)).proxy()``, ...) whose items are dicts, not yet
    iterated. Evaluation is unchanged.

    Attributes:
        handler: the pruning dataset (the same object as ``train_dataset``).

    Raises:
        TypeError: ``train_dataset`` is not a pruning dataset.
        ValueError: the handler was already iterated without indices.
        RuntimeError: the installed transformers lacks a private ``Trainer`` parameter the
            integration reads (see :data:`TRAINER_PRIVATE_API`).

    Example:
        >>> from bls import BLS, InfoBatch
        >>> from bls.integrations.hf import PruningTrainer
        >>> # handler = BLS(InfoBatch(tokenized, num_epochs=3), alpha=0.7).proxy()
        >>> # PruningTrainer(model=model, args=args, train_dataset=handler).train()
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        for name in TRAINER_PRIVATE_API:  # fail here, not in the middle of training
            _trainer_signature(name)
        super().__init__(*args, **kwargs)
        self.handler: PruningDataset = _with_indices(
            self.train_dataset,
            "train_dataset",
            "PruningTrainer needs a pruning dataset such as "
            "BLS(InfoBatch(data, num_epochs=E)).proxy()",
            "build it with return_indices=True or hand it to PruningTrainer before training",
        )
        # Batches each epoch runs on this rank, when a budget fixes them before training.
        self._planned_batches: list[int] | None = None
        # Each micro-batch's loss must be its own mean (see the module docstring).
        self.model_accepts_loss_kwargs = False
        if hasattr(self, "loss_is_scaled_for_ga"):
            self.loss_is_scaled_for_ga = False
        self.add_callback(_PruningCallback(self))

    # ------------------------------------------------------------------ data
    def _get_train_sampler(self, *args: Any, **kwargs: Any) -> torch.utils.data.Sampler[int]:
        dataset = _bind("_get_train_sampler", self, args, kwargs).arguments["train_dataset"]
        if dataset is not None and dataset is not self.handler:
            raise ValueError(
                f"train_dataset: PruningTrainer samples its handler, but the Trainer asked for a "
                f"sampler of another data set ({type(dataset).__name__}); do not replace "
                "trainer.train_dataset after building the trainer"
            )
        return self.handler.sampler

    def _set_signature_columns_if_needed(self, *args: Any, **kwargs: Any) -> None:
        bound = _bind("_set_signature_columns_if_needed", self, args, kwargs)
        _call_parent(super()._set_signature_columns_if_needed, bound)
        columns = getattr(self, "_signature_columns", None)
        if not isinstance(columns, list):
            raise RuntimeError(
                _unsupported(
                    "Trainer._set_signature_columns_if_needed() left _signature_columns as "
                    f"{type(columns).__name__}, not a list, so the handler's "
                    f"{self.handler.index_key!r} column cannot be kept"
                )
            )
        if self.handler.index_key not in columns:
            columns.append(self.handler.index_key)

    # ------------------------------------------------------------------ loss
    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        """The Trainer's loss of one micro-batch, recorded by the handler and weighted by it.

        Raises:
            RuntimeError: a training batch came without the handler's index column (a data
                collator that drops unknown keys, for example).
        """
        key = self.handler.index_key
        indices = inputs.get(key)
        if indices is not None:
            inputs = {name: value for name, value in inputs.items() if name != key}
        result = super().compute_loss(model, inputs, return_outputs=return_outputs)
        if not model.training:
            return result  # evaluation
        if indices is None:
            raise RuntimeError(
                f"a training batch has no {key!r} column (its keys: {sorted(inputs)}); the "
                "data collator must keep it, as the Trainer's default collators do"
            )
        if return_outputs:
            loss, outputs = cast(tuple[torch.Tensor, Any], result)
            return self.handler.update(loss, indices=indices), outputs
        return self.handler.update(cast(torch.Tensor, result), indices=indices)

    # ------------------------------------------------------------------ step counts
    def set_initial_training_values(self, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """The Trainer's training values, with the true ``max_steps`` when a budget is set.

        The Trainer counts ``max_steps`` from full epochs; ``state.max_steps``, the progress
        bar and the scheduler's ``num_training_steps`` all come from it. With a budget
        (``target_saving=...``) every epoch's length is known now, so the optimizer steps are
        counted from the epochs' plans. A ``max_steps`` the user set stays; the number of
        epochs is then the one that reaches it with the (shorter) pruned epochs.

        Raises:
            RuntimeError: the installed Trainer returned something other than its seven values.
        """
        bound = _bind("set_initial_training_values", self, args, kwargs)
        values = _call_parent(super().set_initial_training_values, bound)
        if not isinstance(values, tuple) or len(values) != _TRAINING_VALUES:
            size = len(values) if isinstance(values, tuple) else "no"
            raise RuntimeError(
                _unsupported(
                    f"Trainer.set_initial_training_values() returned a {type(values).__name__} "
                    f"of {size} values, not the {_TRAINING_VALUES} ending with max_steps"
                )
            )
        training_args, loader = bound.arguments["args"], bound.arguments["dataloader"]
        accumulation = training_args.gradient_accumulation_steps
        self._planned_batches = None
        if training_args.max_steps > 0:  # the user's total: plan the epochs that reach it
            batches = _plan_batches(
                self.handler, loader, accumulation, max_steps=training_args.max_steps
            )
            if batches is None:
                return values
            self._planned_batches = batches
            return (len(batches), *values[1:])
        epochs = training_args.num_train_epochs
        batches = _plan_batches(self.handler, loader, accumulation, epochs=math.ceil(epochs))
        if batches is None:
            return values  # no budget: the lengths depend on scores not seen yet
        self._planned_batches = batches
        return (*values[:-1], _optimizer_steps(batches, epochs, accumulation))

    def _run_epoch(self, *args: Any, **kwargs: Any) -> Any:
        # The Trainer sizes every epoch like the first, full one. Decide this epoch's plan now
        # and size the epoch from it, so that the last group of micro-batches of a shorter
        # epoch still ends in an optimizer step (set_epoch is idempotent; the Trainer calls it
        # again).
        bound = _bind("_run_epoch", self, args, kwargs)
        loader, epoch = bound.arguments["train_dataloader"], bound.arguments["epoch"]
        if not hasattr(loader, "set_epoch"):
            raise TypeError(
                _unsupported(
                    f"the Trainer's training loader ({type(loader).__name__}) has no "
                    "set_epoch(), so the epoch cannot be sized from its plan"
                )
            )
        loader.set_epoch(epoch)
        planned = self._planned_batches
        if planned is not None and epoch < len(planned):
            # Before an epoch's first batch the sampler may not know the batch size yet, and
            # so not the cut that avoids a last batch of one sample: the plan's count is exact.
            steps_in_epoch = planned[epoch]
        else:
            planned, steps_in_epoch = None, len(loader)
        accumulation = self.args.gradient_accumulation_steps
        bound.arguments["steps_in_epoch"] = steps_in_epoch
        bound.arguments["num_update_steps_per_epoch"] = max(
            1, math.ceil(steps_in_epoch / accumulation)
        )
        result = _call_parent(super()._run_epoch, bound)
        ran = len(loader)  # the iterated epoch's own length
        if planned is not None and steps_in_epoch != ran:
            logger.warning(
                "epoch %d had %d batches, but %d were planned before training: the Trainer's "
                "step total (max_steps=%d) and the learning-rate schedule do not match the run",
                epoch,
                ran,
                steps_in_epoch,
                self.state.max_steps,
            )
        return result

    # ------------------------------------------------------------------ checkpoints
    def _init_training_state(self, *args: Any, **kwargs: Any) -> tuple[int, int]:
        bound = _bind("_init_training_state", self, args, kwargs)
        epochs_trained, steps_in_epoch = _call_parent(super()._init_training_state, bound)
        resume_from_checkpoint = bound.arguments["resume_from_checkpoint"]
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
        self.handler.load_state_dict(state)  # checks every value first
        epoch = int(state["epoch"])
        if epoch < 0 or not state["epoch_started"]:
            return max(epoch, 0), 0  # nothing trained yet in the saved epoch
        if state["epoch_finished"]:
            # Every batch of the epoch was trained (saved at its end, or at its last step just
            # before it closed): continue with the next one.
            return epoch + 1, 0
        # Saved inside the epoch: the Trainer skips the micro-batches already trained
        # (Accelerate's skip_first_batches) and the handler replays the same plan under it,
        # checking that the skip matches its own count.
        trained = int(state["updates"])
        if self.args.ignore_data_skip:
            raise ValueError(
                f"resume_from_checkpoint: {resume_from_checkpoint} was saved inside epoch "
                f"{epoch}, after {trained} batches; with ignore_data_skip=True the Trainer would "
                "not skip them and the epoch's plan would not match its steps. Resume with "
                "ignore_data_skip=False, or from a checkpoint saved at an epoch's end"
            )
        logger.info(
            "%s was saved inside epoch %d: resuming it after its first %d batches",
            resume_from_checkpoint,
            epoch,
            trained,
        )
        return epoch, trained

    def _checkpoint_folder(self, global_step: int) -> str:
        """The folder the Trainer saves the checkpoint of ``global_step`` in.

        ``<output_dir>/checkpoint-<global_step>``, inside the trial's folder during a
        hyperparameter search, as ``Trainer._save_checkpoint`` names it.
        """
        run_dir = self._get_output_dir(trial=getattr(self, "_trial", None))
        return os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{global_step}")


class _RankBatches:
    """Batches one rank runs from a plan of ``size`` indices, as the Trainer's loader batches it.

    A stock ``BatchSampler`` on one process; on several, Accelerate's ``BatchSamplerShard``
    deals the batches of the global plan out to the ranks (its own ``__len__`` rule).
    """

    def __init__(self, batch_size: int, drop_last: bool, shard: Any = None) -> None:
        self.batch_size, self.drop_last, self.shard = batch_size, drop_last, shard

    def __call__(self, size: int) -> int:
        batches = size // self.batch_size if self.drop_last else -(-size // self.batch_size)
        shard = self.shard
        if shard is None or shard.split_batches or shard.num_processes == 1:
            return batches
        share, rest = divmod(batches, shard.num_processes)
        if rest == 0 or self.drop_last:
            return share
        if shard.even_batches:
            return share + 1  # the last ranks repeat samples from the start
        return share + int(shard.process_index < rest)


def _rank_batches(loader: Any) -> _RankBatches | None:
    """How ``loader`` batches a plan on this rank; ``None`` for batching it does not know."""
    batch_sampler = getattr(loader, "batch_sampler", None)
    shard = None
    if type(batch_sampler).__name__ == "BatchSamplerShard":
        shard, batch_sampler = batch_sampler, getattr(batch_sampler, "batch_sampler", None)
    if type(batch_sampler) is not torch.utils.data.BatchSampler:
        return None  # a batch sampler of its own: its batch count is its own
    return _RankBatches(int(batch_sampler.batch_size), bool(batch_sampler.drop_last), shard)


def _plan_batches(
    handler: PruningDataset,
    loader: Any,
    accumulation: int,
    *,
    epochs: int | None = None,
    max_steps: int | None = None,
) -> list[int] | None:
    """Batches per epoch on this rank, of ``epochs`` epochs or of those reaching ``max_steps``.

    ``None`` when an epoch's length is not known before training (no budget) or the
    loader's batching is not a stock one.
    """
    batches_of = _rank_batches(loader)
    if batches_of is None:
        if handler.policy.kept_count(handler.num_samples, 0, handler.is_pruning_epoch(0)):
            logger.warning(
                "the training loader's batch sampler (%s) is not a stock BatchSampler: "
                "the Trainer's step total is counted from full epochs, not from the budget",
                type(getattr(loader, "batch_sampler", None)).__name__,
            )
        return None
    batches: list[int] = []
    steps = 0
    while len(batches) < epochs if epochs is not None else steps < (max_steps or 0):
        try:
            # The plan the handler lays out for a loader that Accelerate shards (one rank).
            shards = planned_shards(
                handler.policy,
                len(batches),
                num_samples=handler.num_samples,
                num_epochs=handler.num_epochs,
                delta=handler.delta,
                batch_size=batches_of.batch_size,
                drop_last=batches_of.drop_last,
                world_size=1,
            )
        except ValueError:
            return None  # no budget: the lengths depend on scores not seen yet
        batches.append(batches_of(shards.plan.size))
        steps += max(1, math.ceil(batches[-1] / accumulation))
    return batches


def _optimizer_steps(batches: list[int], epochs: float, accumulation: int) -> int:
    """Optimizer steps of ``epochs`` (maybe fractional) epochs of ``batches`` each.

    Per epoch ``ceil(batches / accumulation)``, at least one: the Trainer ends every epoch
    with an optimizer step, also after a short last group of micro-batches. A fractional last
    epoch counts as the Trainer does, ``ceil(fraction * its steps)``.
    """
    updates = [max(1, math.ceil(count / accumulation)) for count in batches]
    whole = math.floor(epochs)
    total = sum(updates[:whole])
    if epochs > whole:
        total += math.ceil((epochs - whole) * updates[whole])
    return total


class _PruningCallback(TrainerCallback):
    """Closes the handler's epoch when the Trainer's ends and saves its state in checkpoints."""

    def __init__(self, trainer: PruningTrainer) -> None:
        self.handler = trainer.handler
        self._trainer = weakref.ref(trainer)  # the trainer holds this callback

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.handler.end_epoch()  # before the epoch-end checkpoint, so that it is complete

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # Every rank runs on_save at the same step: mid-epoch, state_dict() gathers the ranks'
        # deferred losses, so every rank calls it, and the process that saves writes it.
        handler_state = self.handler.state_dict()
        if not args.should_save:
            return  # another process writes the checkpoint; every rank holds the same state
        trainer = self._trainer()
        if trainer is None:
            raise RuntimeError("the PruningTrainer of this callback no longer exists")
        folder = trainer._checkpoint_folder(state.global_step)
        if not os.path.isdir(folder):
            raise RuntimeError(
                _unsupported(
                    f"the Trainer reported a checkpoint at step {state.global_step}, but "
                    f"{folder} does not exist, so {STATE_FILE} has nowhere to go"
                )
            )
        torch.save(handler_state, os.path.join(folder, STATE_FILE))
