"""The few ``torch.distributed`` operations pruning needs, safe to call without a process group.

Every function here degrades to the single-process answer when ``torch.distributed`` is not
available or not initialised, so the handler has one code path. Tensors are gathered on the
device they live on (``gloo`` for CPU tensors, ``nccl`` for CUDA ones) and keep their dtype:
indices travel as int64, never cast to the loss's dtype.
"""

from __future__ import annotations

import collections
import datetime

import torch
import torch.distributed as dist

__all__ = [
    "AGREE_TIMEOUT",
    "check_ranks_agree",
    "gather_equal",
    "gather_uneven",
    "rank_and_world_size",
]

#: How long :func:`check_ranks_agree` waits for the other ranks before it raises.
AGREE_TIMEOUT = datetime.timedelta(seconds=60)
# How many times this process called check_ranks_agree at each point: with the point, it
# names the call's keys, the same on every rank that reached it as often, and a call that
# failed on one rank cannot meet the next ones.
_calls: collections.Counter[str] = collections.Counter()


def rank_and_world_size() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_equal(tensor: torch.Tensor) -> torch.Tensor:
    """Stack ``tensor`` from every rank into shape ``(world_size, *tensor.shape)``.

    Every rank must pass the same shape and dtype. Without a process group this is
    ``tensor.unsqueeze(0)``. Makes no host-device synchronisation of its own.
    """
    _, world_size = rank_and_world_size()
    if world_size == 1:
        return tensor.unsqueeze(0)
    # The concatenated (flat) output form: gloo rejects the stacked ``(world_size, ...)`` form
    # that nccl accepts, and both accept a flat buffer of ``world_size * numel`` elements.
    flat = torch.empty(world_size * tensor.numel(), dtype=tensor.dtype, device=tensor.device)
    _all_gather_single(flat, tensor.reshape(-1).contiguous())
    return flat.view(world_size, *tensor.shape)


def _all_gather_single(output: torch.Tensor, tensor: torch.Tensor) -> None:
    # torch 2.13 renamed all_gather_into_tensor (now a deprecated alias) to all_gather_single.
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(output, tensor)


def gather_uneven(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Gather 1-D tensors whose lengths differ between ranks; returns one tensor per rank.

    The lengths are exchanged first (one small synchronisation), then every rank pads to
    the longest length and the padding is trimmed after the gather.
    """
    _, world_size = rank_and_world_size()
    if world_size == 1:
        return [tensor]
    length = torch.tensor([tensor.shape[0]], dtype=torch.int64, device=tensor.device)
    lengths = gather_equal(length).flatten().tolist()
    longest = max(lengths)
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    gathered = gather_equal(padded)
    return [gathered[r, :n] for r, n in enumerate(lengths)]


def check_ranks_agree(what: str, where: str, timeout: datetime.timedelta | None = None) -> None:
    """Make sure every rank reached the call ``what`` at the same point ``where``.

    Every rank writes a key of its own, named by ``what``, ``where`` and how often this
    process reached that point before, into the default process group's store, and waits for
    the other ranks' keys. It makes no collective call, so a rank that alone reached ``what``
    (or reached it at another step) is not paired with some other collective of the other
    ranks, which would hang or exchange the wrong data: it raises instead, once ``timeout``
    (:data:`AGREE_TIMEOUT` by default) has passed. Without a process group it returns at once.

    Raises:
        RuntimeError: some rank did not reach ``what`` at ``where`` in time.
    """
    rank, world_size = rank_and_world_size()
    if world_size == 1:
        return
    timeout = AGREE_TIMEOUT if timeout is None else timeout
    point = f"{what}/{where}"
    store = dist.PrefixStore(f"bls-prune/{point}/{_calls[point]}/", _default_store())
    _calls[point] += 1
    store.set(f"rank{rank}", "1")
    keys = [f"rank{r}" for r in range(world_size)]
    try:
        store.wait(keys, timeout)
    except RuntimeError as error:  # the store's timeout (DistStoreError is a RuntimeError)
        missing = [r for r, key in enumerate(keys) if not store.check([key])]
        raise RuntimeError(
            f"{what}(): under a process group it needs every rank at the same step; rank "
            f"{rank} called it ({where}) and waited {timeout.total_seconds():.0f} s, but "
            f"rank(s) {', '.join(map(str, missing)) or '?'} did not call it there; call it on "
            "every rank at the same step (rank 0 may then write the result alone)"
        ) from error


def _default_store() -> dist.Store:
    """The default process group's key-value store (torch keeps it for its own barriers)."""
    from torch.distributed import distributed_c10d

    return distributed_c10d._get_default_store()
