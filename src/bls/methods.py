"""The public pruning datasets, the BLS proxy and the ``prune`` factory.

Each class is a :class:`~bls.handler.PruningDataset` with one policy. They accept both the
keyword style ``InfoBatch(data, num_epochs=200, prune_ratio=0.5)`` and the reference code's
``InfoBatch(data, args)``, where ``args`` is a namespace or dict with ``epochs`` (or
``num_epochs``/``num_epoch``), ``prune_ratio`` (or ``ratio``), ``delta`` and, for SeTa,
``num_group`` and ``window_scale``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from bls._checks import (
    check_fraction,
    check_int,
    check_positive,
    looks_like_args,
    read_args,
)
from bls.handler import PruningDataset
from bls.policies import InfoBatchPolicy, Policy, RandomPolicy, SeTaPolicy, StaticPolicy
from bls.scores import BatchLossEMA

__all__ = ["BLS", "Full", "InfoBatch", "RandomPrune", "SeTa", "Static", "prune"]

Handler = TypeVar("Handler", bound=PruningDataset)


def _resolve(num_epochs: Any, given: dict[str, Any], wanted: tuple[str, ...]) -> dict[str, Any]:
    """Merge the reference-style ``args`` (when ``num_epochs`` is one) over the keywords."""
    if not looks_like_args(num_epochs):
        return {"num_epochs": num_epochs, **given}
    found = read_args(num_epochs, ("num_epochs", "seed", *wanted))
    if "num_epochs" not in found:
        raise ValueError(
            "args: the namespace or dict needs 'epochs' (or 'num_epochs'/'num_epoch'), the "
            "number of training epochs"
        )
    return {**given, **found}


def _setup(
    handler: PruningDataset,
    dataset: Any,
    num_epochs: Any,
    options: dict[str, Any],
    make_policy: Callable[[dict[str, Any]], Policy],
    return_indices: bool,
) -> None:
    """Read the options (keywords or reference ``args``), build the policy, init the handler."""
    opts = _resolve(num_epochs, options, tuple(name for name in options if name != "seed"))
    PruningDataset.__init__(
        handler,
        dataset,
        make_policy(opts),
        opts["num_epochs"],
        opts.get("delta", 1.0),
        seed=opts["seed"],
        return_indices=return_indices,
    )


def _prune_ratio(opts: dict[str, Any]) -> float:
    return check_fraction("prune_ratio", opts["prune_ratio"], upper_inclusive=False)


def _infobatch_policy(opts: dict[str, Any]) -> InfoBatchPolicy:
    return InfoBatchPolicy(prune_ratio=_prune_ratio(opts))


def _random_policy(opts: dict[str, Any]) -> RandomPolicy:
    return RandomPolicy(prune_ratio=_prune_ratio(opts))


def _static_policy(opts: dict[str, Any]) -> StaticPolicy:
    return StaticPolicy(prune_ratio=_prune_ratio(opts), seed=check_int("seed", opts["seed"], 0))


def _seta_policy(opts: dict[str, Any]) -> SeTaPolicy:
    groups = check_int("num_group", opts["num_group"], 1)
    scale = check_positive("window_scale", opts["window_scale"])
    if scale > 1.0 or round(groups * scale) < 1:
        raise ValueError(
            f"window_scale: round(num_group * window_scale) must be between 1 and "
            f"num_group={groups}; got window_scale={scale} (window "
            f"{round(groups * scale)}); allowed: (0, 1] with num_group * window_scale >= 0.5"
        )
    return SeTaPolicy(prune_ratio=_prune_ratio(opts), num_group=groups, window_scale=scale)


class InfoBatch(PruningDataset):
    """InfoBatch (Qin et al., ICLR 2024): prune well-learned samples, rescale the rest.

    Args:
        dataset: map-style dataset to prune.
        num_epochs: planned epochs ``E >= 1`` (or the reference ``args`` namespace/dict).
        prune_ratio: share of the well-learned samples dropped per pruning epoch, ``[0, 1)``;
            the keep ratio is ``clamp(1 - prune_ratio, 0.1, 1)``.
        delta: share of epochs that prune, ``[0, 1]``; the rest anneal on the full data.
        seed: seed of the handler's own generator (``>= 0``).
        return_indices: items carry their index; pass ``update(loss, indices=...)``.

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> from bls import InfoBatch
        >>> data = TensorDataset(torch.randn(100, 3), torch.randint(0, 2, (100,)))
        >>> handler = InfoBatch(data, num_epochs=4, prune_ratio=0.5)
        >>> loader = DataLoader(handler, sampler=handler.sampler, batch_size=16)
        >>> for x, y in loader:
        ...     per_sample = torch.nn.functional.cross_entropy(torch.zeros(len(y), 2), y,
        ...                                                    reduction="none")
        ...     loss = handler.update(per_sample)
        >>> handler.history[0]["kept"]
        100
    """

    def __init__(
        self,
        dataset: Any,
        num_epochs: Any,
        prune_ratio: float = 0.5,
        delta: float = 0.875,
        *,
        seed: int = 0,
        return_indices: bool = False,
    ) -> None:
        options = {"prune_ratio": prune_ratio, "delta": delta, "seed": seed}
        _setup(self, dataset, num_epochs, options, _infobatch_policy, return_indices)


class SeTa(PruningDataset):
    """SeTa (Zhou et al., CVPR 2025): random pruning, score groups and a sliding window.

    Args:
        dataset: map-style dataset to prune.
        num_epochs: planned epochs ``E >= 1`` (or the reference ``args`` namespace/dict).
        prune_ratio: share dropped by the random pre-selection, ``[0, 1)``.
        num_group: number of k-means score groups, ``>= 1``.
        window_scale: share of groups in the sliding window, ``(0, 1]``; the window
            ``round(num_group * window_scale)`` must be at least 1.
        delta: share of epochs that prune, ``[0, 1]``.
        seed: seed of the handler's own generator (``>= 0``).
        return_indices: items carry their index; pass ``update(loss, indices=...)``.
    """

    def __init__(
        self,
        dataset: Any,
        num_epochs: Any,
        prune_ratio: float = 0.0,
        num_group: int = 10,
        window_scale: float = 0.5,
        delta: float = 0.875,
        *,
        seed: int = 0,
        return_indices: bool = False,
    ) -> None:
        options = {
            "prune_ratio": prune_ratio,
            "num_group": num_group,
            "window_scale": window_scale,
            "delta": delta,
            "seed": seed,
        }
        _setup(self, dataset, num_epochs, options, _seta_policy, return_indices)


class Static(PruningDataset):
    """A fixed random subset of ``floor((1 - prune_ratio) * N)`` samples, every epoch.

    The baseline for static pruning: the subset is drawn once from ``seed`` and never changes
    (no annealing). Scores are still recorded, so ``BLS(Static(...))`` works for diagnostics.
    """

    def __init__(
        self,
        dataset: Any,
        num_epochs: Any,
        prune_ratio: float = 0.5,
        *,
        seed: int = 0,
        return_indices: bool = False,
    ) -> None:
        options = {"prune_ratio": prune_ratio, "seed": seed}
        _setup(self, dataset, num_epochs, options, _static_policy, return_indices)


class RandomPrune(PruningDataset):
    """A fresh uniform ``floor((1 - prune_ratio) * N)`` samples every pruning epoch.

    The control every pruning paper compares against; anneals like InfoBatch after
    ``delta * num_epochs``.
    """

    def __init__(
        self,
        dataset: Any,
        num_epochs: Any,
        prune_ratio: float = 0.5,
        delta: float = 0.875,
        *,
        seed: int = 0,
        return_indices: bool = False,
    ) -> None:
        options = {"prune_ratio": prune_ratio, "delta": delta, "seed": seed}
        _setup(self, dataset, num_epochs, options, _random_policy, return_indices)


class Full(PruningDataset):
    """No pruning: the whole data set, reshuffled every epoch, with the same handler API.

    ``update(loss)`` returns ``loss.mean()``; useful as the baseline in one training script.
    """

    def __init__(
        self,
        dataset: Any,
        num_epochs: Any,
        *,
        seed: int = 0,
        return_indices: bool = False,
    ) -> None:
        _setup(self, dataset, num_epochs, {"seed": seed}, lambda opts: Policy(), return_indices)


class BLS(Generic[Handler]):
    """Batch Loss Score: score samples by an EMA of the ordinary mean batch loss.

    ``BLS(handler, alpha).proxy()`` switches ``handler`` to batch-loss scoring and returns it:
    ``update()`` then takes the scalar mean loss, and every sample of the batch moves its score
    to ``alpha * score + (1 - alpha) * loss``. Scores start at 0.

    Args:
        handler: a pruning dataset (``InfoBatch``, ``SeTa``, ``RandomPrune``, ...) not yet
            iterated.
        alpha: EMA smoothing factor in ``[0, 1)``; the paper uses 0.7-0.9.
    """

    def __init__(self, handler: Handler, alpha: float = 0.9) -> None:
        if not isinstance(handler, PruningDataset):
            raise TypeError(
                f"handler: expected a pruning dataset such as InfoBatch(...) or SeTa(...), got "
                f"{type(handler).__name__}"
            )
        self.handler = handler
        self.alpha = check_fraction("alpha", alpha, upper_inclusive=False)

    def proxy(self) -> Handler:
        """Return the wrapped handler, now scoring by batch-loss EMA."""
        self.handler.use_score_source(BatchLossEMA(alpha=self.alpha))
        return self.handler


_FACTORIES: dict[str, Callable[..., PruningDataset]] = {
    "infobatch": InfoBatch,
    "seta": SeTa,
    "static": Static,
    "random": RandomPrune,
    "randomprune": RandomPrune,
    "full": Full,
    "none": Full,
}
PRUNE_TYPES = ("Full", "None", "InfoBatch", "SeTa", "Static", "Random", "BLS_InfoBatch", "BLS_SeTa")


def prune(dataset: Any, args: Any) -> PruningDataset:
    """Build a handler from the reference scripts' ``args`` (namespace or dict).

    ``args.prune_type`` picks the method: ``InfoBatch``, ``SeTa``, ``Static``, ``Random``,
    ``BLS_InfoBatch``, ``BLS_SeTa`` (any policy with a ``BLS_`` prefix) or ``None``/``Full``
    (no pruning; a Python ``None`` works too). ``args.alpha`` (default 0.9) sets the BLS EMA
    factor. Method options are read as the constructors' reference style reads them.
    """
    found = read_args(args, ("prune_type", "alpha"))
    prune_type = found.get("prune_type")
    key = "none" if prune_type is None else str(prune_type).strip().lower()
    use_bls = key.startswith("bls_")
    factory = _FACTORIES.get(key[4:] if use_bls else key)
    if factory is None or (use_bls and factory is Full):
        raise ValueError(
            f"prune_type: unknown value {prune_type!r}; allowed: {', '.join(PRUNE_TYPES)}"
        )
    handler = factory(dataset, args)
    if use_bls:
        return BLS(handler, alpha=found.get("alpha", 0.9)).proxy()
    return handler
