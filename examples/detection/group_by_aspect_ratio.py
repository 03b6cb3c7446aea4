"""Batches of images with similar aspect ratios, as torchvision's detection reference forms them.

Written for this example after the behaviour of torchvision's
``references/detection/group_by_aspect_ratio.py`` (its code is not copied):

* :func:`aspect_ratio_groups` bins every image's ``width / height`` at the edges
  ``2 ** linspace(-1, 1, 2 * k + 1)``: ``k`` bins between 1/2 and 1, ``k`` between 1 and 2,
  one below 1/2 and one from 2 up (group ids ``0 .. 2k + 1``); a ratio equal to an edge goes
  to the bin above it.
* :class:`GroupedBatchSampler` walks its sampler once and yields a batch whenever one group
  has gathered ``batch_size`` indices, so every batch holds a single group. Its length is
  ``len(sampler) // batch_size``. When the sampler is exhausted and fewer batches than that
  were yielded, the groups' partial buffers, the fullest first (ties: the buffer begun
  earliest), are topped up with the group's indices of the epoch, from its first, repeated
  cyclically, until the count is reached (there are always enough partial buffers). Indices
  left in the other partial buffers are not trained in that epoch, and the topped-up batches
  repeat some samples.

Like torchvision's, it subclasses ``torch.utils.data.BatchSampler`` without calling its
``__init__``, so it has ``batch_size`` but no ``drop_last``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence, Sized

from torch.utils.data import BatchSampler, Sampler


def aspect_ratio_groups(aspect_ratios: Sequence[float], k: int = 3) -> list[int]:
    """Group id of every image (see the module docstring); ``k = 0`` puts all in one group."""
    if k == 0:
        return [0] * len(aspect_ratios)
    edges = [2 ** (-1 + 2 * i / (2 * k)) for i in range(2 * k + 1)]
    return [bisect.bisect_right(edges, ratio) for ratio in aspect_ratios]


class GroupedBatchSampler(BatchSampler):
    """Batches of ``batch_size`` indices of one group each, drawn in ``sampler`` order.

    Args:
        sampler: yields the epoch's indices (``handler.sampler``); its length must be right
            once its iteration has begun, as the pruning sampler's is.
        group_ids: the group of every index of the data set (:func:`aspect_ratio_groups`).
        batch_size: indices per batch.
    """

    def __init__(self, sampler: Sampler[int], group_ids: Sequence[int], batch_size: int) -> None:
        if not isinstance(sampler, Sampler):
            raise TypeError(f"sampler: expected a torch Sampler, got {type(sampler).__name__}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
        self.sampler = sampler
        self.group_ids = list(group_ids)
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        partial: dict[int, list[int]] = {}
        seen: dict[int, list[int]] = {}
        yielded = 0
        for index in self.sampler:
            group = self.group_ids[index]
            partial.setdefault(group, []).append(index)
            seen.setdefault(group, []).append(index)
            if len(partial[group]) == self.batch_size:
                yield partial.pop(group)
                yielded += 1
        # The length is read after the pass: a pruning sampler knows it once iteration began.
        missing = len(self) - yielded
        for group, batch in sorted(partial.items(), key=lambda item: -len(item[1])):
            if missing <= 0:
                break
            group_indices = seen[group]
            repeats = group_indices * math.ceil(self.batch_size / len(group_indices))
            yield batch + repeats[: self.batch_size - len(batch)]
            missing -= 1

    def __len__(self) -> int:
        sampler: Sized = self.sampler  # type: ignore[assignment]
        return len(sampler) // self.batch_size
