"""The handler's epochs in order: fold the scores in, close an epoch, decide the next, start it.

:class:`~bls.epochs.EpochCycle` decides, lays out and closes one epoch; :mod:`bls.recording`
folds deferred losses into the scores. These functions put the two together in the order the
handler's entry points need (``sampler.set_epoch``, ``iter(sampler)``, ``end_epoch()``,
``load_state_dict()``): an epoch is closed only after every rank's losses are in its scores,
and the next one is decided from those scores (docs/design.md, "The epoch schedule").

Args common to every function:
    cycle: the handler's epochs (its ``run`` and declared ``state``).
    source: the handler's score source.
    seed: the handler's seed.
    explicit: the items carry their indices (``return_indices=True``).
"""

from __future__ import annotations

import numpy as np
import torch

from bls.attribution import check_in_order
from bls.epochs import EpochCycle, EpochRun, warn_if_too_few_batches
from bls.recording import flush, fold_every_rank
from bls.resume import Resume
from bls.sampler import LoaderInfo, _EpochIterator
from bls.scores import ScoreSource

__all__ = [
    "close_epoch",
    "continue_loaded",
    "decide_epoch",
    "decide_unless_current",
    "start_pass",
]


def decide_epoch(cycle: EpochCycle, source: ScoreSource, seed: int, epoch: int) -> None:
    """Decide epoch ``epoch``'s plan from the current scores (one host sync per epoch)."""
    flush(source, cycle.state, cycle.run)
    scores = cycle.state.scores.detach().to("cpu", torch.float32).numpy()
    cycle.decide(epoch, scores, seed, source.name)


def close_epoch(cycle: EpochCycle, source: ScoreSource, *, explicit: bool) -> None:
    """Fold every rank's losses into the scores, then close the epoch (idempotent)."""
    # Every rank closes the epoch at the same point: a collective gather is safe here.
    fold_every_rank(source, cycle.state, cycle.run)
    cycle.close(explicit=explicit)


def decide_unless_current(
    cycle: EpochCycle, source: ScoreSource, seed: int, epoch: int, *, explicit: bool
) -> None:
    """Decide epoch ``epoch``'s plan unless it is the current one."""
    if epoch == cycle.state.epoch and cycle.run.decided is not None:
        # Decided already. Frameworks call set_epoch more than once per epoch (the trainer
        # and the loader wrapper), sometimes after iteration began: never decide twice.
        return
    close_epoch(cycle, source, explicit=explicit)
    decide_epoch(cycle, source, seed, epoch)


def start_pass(
    cycle: EpochCycle,
    source: ScoreSource,
    seed: int,
    loader: LoaderInfo,
    into: _EpochIterator | None = None,
    *,
    explicit: bool,
) -> _EpochIterator:
    """Start iterating the current epoch for ``loader`` (deciding the next one if it was
    iterated already, or none was decided); returns this rank's iterator.

    ``into``: an iterator a loader already holds, restarted for this pass instead of a new one.
    """
    check_in_order(loader.in_order)
    run = cycle.run
    if run.decided is None or (run.iterator is not None and run.iterator.drew):
        # A pass that drew nothing is not an epoch: torchdata's StatefulDataLoader calls
        # iter(sampler) twice per epoch, and again while restoring its state.
        close_epoch(cycle, source, explicit=explicit)
        decide_epoch(cycle, source, seed, int(cycle.state.epoch) + 1)
    iterator = cycle.begin(loader, into)
    if source.records and not source.per_sample:
        warn_if_too_few_batches(cycle)
    return iterator


def continue_loaded(
    cycle: EpochCycle,
    source: ScoreSource,
    seed: int,
    epoch: int,
    resume: tuple[np.ndarray, Resume] | None,
    *,
    explicit: bool,
) -> None:
    """Continue from a state just loaded into ``cycle.state`` (``HandlerState.restore``).

    ``epoch`` and ``resume`` are what the restore returned. A mid-epoch checkpoint resumes the
    rest of the same plan; an epoch decided but not yet iterated is decided again (the scores
    have not moved since, so the plan is the same).
    """
    waiting = cycle.run.iterator  # a loader may hold a pass that drew nothing yet
    cycle.run = EpochRun()
    if resume is not None:
        cycle.resume(*resume)  # mid-epoch: the rest of the same plan
    elif epoch >= 0 and cycle.state.epoch < 0:
        decide_epoch(cycle, source, seed, epoch)
    if waiting is not None and not waiting.drew:
        # torchdata's StatefulDataLoader (no workers) restores the dataset's state after it
        # began the sampler's pass: that pass continues from the loaded state.
        start_pass(cycle, source, seed, cycle.loader, waiting, explicit=explicit)
