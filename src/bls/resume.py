"""Resuming inside an epoch: where a checkpoint left the epoch's pass, and where it restarts.

A ``state_dict()`` taken after the epoch's iteration began saves the epoch's plan, its
``update()`` count and the shard position the updated batches used
(:func:`checkpoint_position`). Loading it gives a :class:`Resume`, from which the resumed pass
starts (:func:`resume_point`) with exactly the epoch's remaining batches. The rules are in
docs/design.md ("State and checkpoints").
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Protocol

from bls.attribution import AttributionWarning, OrderRoute, TrackedRoute
from bls.sampler import LoaderInfo, _EpochIterator

__all__ = [
    "Resume",
    "ResumeWarning",
    "checkpoint_position",
    "resume_point",
    "warn_if_not_loaded",
]


class ResumeWarning(UserWarning):
    """A run seems to resume training without having loaded the handler's state."""


@dataclass(frozen=True)
class Resume:
    """Where a mid-epoch checkpoint left its epoch.

    Attributes:
        updates: ``update()`` calls made in the epoch before the checkpoint.
        position: indices of this rank's shard the updated batches used (``-1``: unknown).
        layout: ``(ranks, batch_size, drop_last)`` the epoch was laid out with.
    """

    updates: int
    position: int
    layout: tuple[int, int | None, bool]


class EpochPass(Protocol):
    """What a checkpoint reads of the epoch's pass (a :class:`~bls.epochs.EpochRun`)."""

    iterator: _EpochIterator | None
    route: OrderRoute | None
    tracked: TrackedRoute | None
    updates: int


def warn_if_not_loaded(epoch: int, current: int, loaded: bool) -> None:
    """Warn when ``set_epoch(epoch)`` past 0 is the first epoch a handler sees, unloaded.

    Args:
        epoch: the epoch asked for.
        current: the handler's current epoch (``-1`` before the first).
        loaded: whether a state was loaded into the handler.
    """
    if epoch > 0 and current < 0 and not loaded:
        warnings.warn(
            f"set_epoch({epoch}) is the first epoch this handler sees: if the run resumes a "
            "checkpoint, call handler.load_state_dict(...) with the state saved beside the "
            "model first; otherwise every sample's score starts afresh",
            ResumeWarning,
            stacklevel=4,  # the caller of sampler.set_epoch
        )


def resume_point(
    resume: Resume | None, layout: tuple[int, int | None, bool], skip_batches: int, epoch: int
) -> tuple[int, int]:
    """``(position, updates)`` to start epoch ``epoch``'s pass at: ``(0, 0)`` unless resumed.

    ``layout`` is the ``(ranks, batch_size, drop_last)`` of the loader starting the pass; a
    resumed epoch needs the one it was checkpointed with. A loader that drops its first
    ``skip_batches`` batches (Accelerate's ``skip_first_batches``, the Hugging Face Trainer's
    resume) replays the epoch from its first index, and the batches it drops count as updated.
    """
    if resume is not None and tuple(layout) != tuple(resume.layout):
        raise ValueError(
            f"the checkpoint was taken in epoch {epoch} with (ranks, batch_size, drop_last) = "
            f"{tuple(resume.layout)}, this loader has {tuple(layout)}; a mid-epoch resume "
            "needs the same loader setup"
        )
    if skip_batches:
        if resume is not None and resume.updates != skip_batches:
            raise ValueError(
                f"the loader skips the first {skip_batches} batches of epoch {epoch}, but the "
                f"handler's checkpoint was taken after {resume.updates}; save "
                "handler.state_dict() at the step the framework checkpoints"
            )
        return 0, skip_batches
    if resume is None:
        return 0, 0
    if resume.position < 0:
        warnings.warn(
            f"epoch {epoch}: the checkpoint does not say which samples its {resume.updates} "
            "updated batches used (a batch sampler of its own with explicit indices), so the "
            "epoch restarts from its first batch",
            AttributionWarning,
            stacklevel=6,  # the caller of iter(sampler)
        )
        return 0, 0
    return resume.position, resume.updates


def checkpoint_position(
    run: EpochPass, loader: LoaderInfo, batch_size: int | None
) -> tuple[int, bool]:
    """``(position, finished)`` of the epoch's pass, for a checkpoint.

    ``position``: indices of this rank's shard that the updated batches used (``-1``:
    unknown). Stock batches are consecutive runs of ``B``, so prefetched batches are not
    counted; tracked batches report where the shard stood when the last updated one was
    drawn. ``finished``: every batch of the epoch was updated (where it cannot be counted,
    the sampler is exhausted).

    Args:
        run: the epoch's pass.
        loader: what the sampler learnt of the loader iterating it.
        batch_size: the loader's batch size, ``None`` while unknown.
    """
    if run.iterator is None:
        return 0, False
    size = int(run.iterator.shard.size)
    exhausted = run.iterator.position >= size
    if run.tracked is not None:
        return run.tracked.consumed, exhausted and not run.tracked.pending
    if loader.batch_sampler is not None or loader.sharded_by_framework:
        return -1, exhausted
    if batch_size is None:
        return (0, False) if run.updates == 0 else (-1, exhausted)
    assert run.route is not None
    return min(run.updates * batch_size, size), run.updates >= run.route.batches()
