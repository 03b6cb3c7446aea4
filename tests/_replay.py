"""An independent replay of the BLS score rule, for checking the handler's scores.

BLS (docs/design.md, 'BLS batch-loss EMA'): scores start at 0 and, for every batch in update
order, each distinct index ``i`` of the batch moves to
``alpha * score[i] + (1 - alpha) * batch_mean_loss``. The replay computes this in float64 from
recorded ``(indices, loss)`` pairs, without any of the library's code.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


def bls_replay(
    batches: Iterable[tuple[Iterable[Any], float]],
    n: int,
    alpha: float,
    *,
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """float64 scores of ``n`` samples after the BLS EMA over ``batches``.

    Args:
        batches: ``(indices, mean loss)`` per batch, in the order ``update()`` saw them; the
            indices may be any iterable of integers (a repeated index is updated once). Batches
            that different ranks ran in the same step hold disjoint indices, so their relative
            order does not matter.
        n: the number of samples.
        alpha: the EMA factor.
        start: the scores before the first of ``batches`` (copied, not modified); zeros, the
            BLS initial score, when ``None``. Lets a test replay step by step.
    """
    if start is None:
        scores = torch.zeros(n, dtype=torch.float64)
    else:
        scores = torch.as_tensor(start, dtype=torch.float64).clone()
        assert scores.shape == (n,), scores.shape
    for indices, loss in batches:
        index = torch.tensor(sorted({int(i) for i in indices}), dtype=torch.int64)
        scores[index] = alpha * scores[index] + (1 - alpha) * float(loss)
    return scores
