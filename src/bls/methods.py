"""The public pruning datasets, the BLS proxy and the ``prune`` factory.

Each class is a :class:`~bls.handler.PruningDataset` with one policy. They accept both the
keyword style ``InfoBatch(data, num_epochs=200, prune_ratio=0.5)`` and the reference code's
``InfoBatch(data, args)``, where ``args`` is a namespace or dict with ``epochs`` (or
``num_epochs``/``num_epoch``), ``prune_ratio`` (or ``ratio``), ``delta`` and, for SeTa,
``num_group`` and ``window_scale``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from bls._checks import check_dataset, check_fraction, check_int, looks_like_args, read_args
from bls.handler import PruningDataset
from bls.policies import (
    InfoBatchPolicy,
    Policy,
    RandomPolicy,
    SeTaPolicy,
    StaticPolicy,
    budget_prune_count,
)
from bls.scores import BatchLossEMA

__all__ = [
    "BLS",
    "PRUNE_TYPES",
    "REGISTRY",
    "Full",
    "InfoBatch",
    "MethodSpec",
    "RandomPrune",
    "SeTa",
    "Static",
    "lookup_method",
    "method_name",
    "method_names",
    "prune",
]

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
    policy = make_policy(opts)
    target = opts.get("target_saving")
    if target is not None:
        # Budget-first: the policy prunes a fixed count per budget epoch, fixed now.
        target = check_fraction("target_saving", target, upper_inclusive=False)
        epochs = check_int("num_epochs", opts["num_epochs"], 1)
        delta = check_fraction("delta", opts.get("delta", 1.0), upper_inclusive=True)
        count = budget_prune_count(
            target, check_dataset(dataset), epochs, delta, policy.budget_from
        )
        policy = dataclasses.replace(policy, prune_count=count)  # type: ignore[call-arg]
    PruningDataset.__init__(
        handler,
        dataset,
        policy,
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
    scale = check_fraction(
        "window_scale", opts["window_scale"], upper_inclusive=True, lower_inclusive=False
    )
    if round(groups * scale) < 1:
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
        target_saving: budget-first pruning, ``[0, 1)``: the run's ``saved_ratio``, fixed
            before training (replaces ``prune_ratio``). Every pruning epoch from epoch 1 on
            prunes the same number of samples, well-learned ones first (see
            :meth:`~bls.handler.PruningDataset.total_steps`).

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
        target_saving: float | None = None,
    ) -> None:
        options = {
            "prune_ratio": prune_ratio,
            "delta": delta,
            "seed": seed,
            "target_saving": target_saving,
        }
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
        target_saving: budget-first pruning, ``[0, 1)``: the run's ``saved_ratio``, fixed
            before training (the random pre-selection of ``prune_ratio`` is then skipped).
            Every pruning epoch from epoch 1 on keeps the same number of samples: a run of
            the score order starting where SeTa's window starts.
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
        target_saving: float | None = None,
    ) -> None:
        options = {
            "prune_ratio": prune_ratio,
            "num_group": num_group,
            "window_scale": window_scale,
            "delta": delta,
            "seed": seed,
            "target_saving": target_saving,
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
    ``delta * num_epochs``. ``target_saving`` (``[0, 1)``) fixes the run's saved share instead
    of ``prune_ratio``: every pruning epoch, epoch 0 included, keeps the same number.
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
        target_saving: float | None = None,
    ) -> None:
        options = {
            "prune_ratio": prune_ratio,
            "delta": delta,
            "seed": seed,
            "target_saving": target_saving,
        }
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


@dataclass(frozen=True)
class MethodSpec:
    """One entry of :data:`REGISTRY`: a method's names and how :func:`prune` builds it.

    Attributes:
        name: the canonical name (``"InfoBatch"``, ``"BLS_SeTa"``).
        handler_class: the pruning dataset built for it (its policy and options); it reads the
            reference-style ``args``.
        bls: wrap the handler with :class:`BLS` (scores by batch-loss EMA; ``update`` then takes
            the scalar mean loss).
        aliases: other names of the same method, kept as spelled where the name is shown (the
            class name ``RandomPrune`` of ``Random``, in the demo's table and results).
        legacy: spellings of the reference scripts, read as ``name`` (``None`` for ``Full``).
        listed: a documented method, in :data:`PRUNE_TYPES` and the command line's choices;
            unlisted ones are accepted by :func:`prune` and the training engine only.
    """

    name: str
    handler_class: type[PruningDataset]
    bls: bool = False
    aliases: tuple[str, ...] = ()
    legacy: tuple[str, ...] = ()
    listed: bool = True


def _registry(*specs: MethodSpec) -> Mapping[str, MethodSpec]:
    spellings = [name.lower() for s in specs for name in (s.name, *s.aliases, *s.legacy)]
    if len(spellings) != len(set(spellings)):
        # Case-insensitive lookup needs every spelling to name one method.
        raise ValueError(f"method registry: a name is declared twice in {spellings}")
    # Read-only: the spelling index below is built once from it.
    return MappingProxyType({spec.name: spec for spec in specs})


# Every pruning method, in the documented order. The one place a method name is declared:
# prune(), the training engine and the command line all read their names from here.
REGISTRY: Mapping[str, MethodSpec] = _registry(
    MethodSpec("Full", Full, legacy=("None",)),
    MethodSpec("InfoBatch", InfoBatch),
    MethodSpec("SeTa", SeTa),
    MethodSpec("Static", Static),
    MethodSpec("Random", RandomPrune, aliases=("RandomPrune",)),
    MethodSpec("BLS_InfoBatch", InfoBatch, bls=True),
    MethodSpec("BLS_SeTa", SeTa, bls=True),
    # Scoring without a score-based policy: the study's alpha sweep and diagnostics.
    MethodSpec("BLS_Static", Static, bls=True, listed=False),
    MethodSpec("BLS_Random", RandomPrune, bls=True, aliases=("BLS_RandomPrune",), listed=False),
)
_BY_SPELLING: dict[str, MethodSpec] = {
    name.lower(): spec
    for spec in REGISTRY.values()
    for name in (spec.name, *spec.aliases, *spec.legacy)
}
# The reference scripts' ``--prune_type`` choices (with ``Full``): the documented methods.
PRUNE_TYPES = tuple(
    name for spec in REGISTRY.values() if spec.listed for name in (spec.name, *spec.legacy)
)


def method_names(*, unlisted: bool = False, legacy: bool = False) -> tuple[str, ...]:
    """Names and aliases of the registry's methods, in its order.

    Args:
        unlisted: also the methods outside :data:`PRUNE_TYPES` (``BLS_Static``, ...).
        legacy: also the reference spellings (``None``).
    """
    return tuple(
        name
        for spec in REGISTRY.values()
        if spec.listed or unlisted
        for name in (spec.name, *spec.aliases, *(spec.legacy if legacy else ()))
    )


def lookup_method(name: Any, *, listed_only: bool = False) -> MethodSpec:
    """The registry entry of a method name, alias or reference spelling, in any case.

    A Python ``None`` is ``Full``, as in the reference code; surrounding spaces are ignored.

    Args:
        name: ``"BLS_InfoBatch"``, ``"bls_infobatch"``, ``"RandomPrune"``, ``"None"``, ...
        listed_only: accept only the methods of :data:`PRUNE_TYPES`.

    Raises:
        ValueError: ``prune_type: unknown value 'X'; allowed: ...`` (the :data:`PRUNE_TYPES`).
    """
    spec = _BY_SPELLING.get("none" if name is None else str(name).strip().lower())
    if spec is None or (listed_only and not spec.listed):
        raise ValueError(f"prune_type: unknown value {name!r}; allowed: {', '.join(PRUNE_TYPES)}")
    return spec


def method_name(name: Any, *, listed_only: bool = False) -> str:
    """The registry's spelling of ``name``: ``"bls_infobatch"`` gives ``"BLS_InfoBatch"``.

    An alias keeps its own spelling (``"randomprune"`` gives ``"RandomPrune"``); a reference
    spelling becomes the canonical name (``"none"`` gives ``"Full"``).

    Raises:
        ValueError: as :func:`lookup_method`.
    """
    spec = lookup_method(name, listed_only=listed_only)
    key = str(name).strip().lower()
    return next((alias for alias in spec.aliases if alias.lower() == key), spec.name)


def prune(dataset: Any, args: Any) -> PruningDataset:
    """Build a handler from the reference scripts' ``args`` (namespace or dict).

    ``args.prune_type`` picks the method: ``InfoBatch``, ``SeTa``, ``Static``, ``Random``,
    ``BLS_InfoBatch``, ``BLS_SeTa`` (also ``BLS_Static``, ``BLS_Random``) or ``None``/``Full``
    (no pruning; a Python ``None`` works too), in any case; see :data:`REGISTRY`. ``args.alpha``
    (default 0.9) sets the BLS EMA factor. Method options are read as the constructors'
    reference style reads them.
    """
    found = read_args(args, ("prune_type", "alpha"))
    spec = lookup_method(found.get("prune_type"))
    # Every handler class takes the reference ``args`` in place of ``num_epochs``.
    build: Callable[..., PruningDataset] = spec.handler_class
    handler = build(dataset, args)
    if spec.bls:
        return BLS(handler, alpha=found.get("alpha", 0.9)).proxy()
    return handler
