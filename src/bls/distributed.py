"""The few ``torch.distributed`` operations pruning needs, safe to call without a process group.

Every function here degrades to the single-process answer when ``torch.distributed`` is not
available or not initialised, so the handler has one code path. Tensors are gathered on the
device they live on (``gloo`` for CPU tensors, ``nccl`` for CUDA ones) and keep their dtype:
indices travel as int64, never cast to the loss's dtype.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["gather_equal", "gather_uneven", "rank_and_world_size"]


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
