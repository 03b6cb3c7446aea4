"""What a DataLoader worker needs of a pruning handler: the wrapped dataset, nothing more.

A worker only reads items; the scores, weights and epoch plan stay in the main process, where
the sampler and ``update()`` run. :class:`WorkerDataset` is that reading part: the wrapped
dataset plus, when the handler was built with ``return_indices=True``, how an item carries
its index. A handler sent to another process by ``multiprocessing`` (which is how ``spawn``
and ``forkserver`` DataLoader workers receive their dataset) travels as this view, so the
payload does not grow with ``N``; an ordinary ``pickle.dumps(handler)`` still copies it whole.
:class:`ForwardsToDataset` is the same reading part as the handler has it: items read as the
worker view reads them, the wrapped dataset's attributes forwarded, the worker view sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from multiprocessing.reduction import ForkingPickler
from typing import Any

from torch.utils.data import Dataset

__all__ = [
    "ForwardsToDataset",
    "WorkerDataset",
    "attach_index",
    "read_items",
    "send_as_worker_view",
]

# The handler's API, named in the error a worker view gives when it is used as a handler.
_HANDLER_API = frozenset(
    {"sampler", "update", "scores", "weights", "history", "state_dict", "load_state_dict"}
)


def attach_index(item: Any, index: int, index_key: str) -> Any:
    """``item`` carrying its sample index: a dict gains ``index_key``, a tuple or list a last
    slot; anything else becomes ``(item, index)``."""
    if isinstance(item, Mapping):
        return {**item, index_key: index}
    if isinstance(item, tuple):
        return (*item, index)
    if isinstance(item, list):
        return [*item, index]
    return (item, index)


def read_items(
    dataset: Any, indices: Sequence[int], return_indices: bool, index_key: str
) -> list[Any]:
    """The items at ``indices``, each carrying its index when ``return_indices``.

    A wrapped dataset's own batched read (a Hugging Face dataset's ``__getitems__``) is used
    when it has one; torch's fetcher prefers ``__getitems__``.
    """
    inner = getattr(dataset, "__getitems__", None)
    items = list(inner(indices)) if inner else [dataset[i] for i in indices]
    if return_indices:
        items = [attach_index(item, i, index_key) for item, i in zip(items, indices, strict=True)]
    return items


class WorkerDataset(Dataset[Any]):
    """Reads items of the wrapped dataset, attaching indices as the handler does.

    Args:
        dataset: the handler's wrapped dataset.
        return_indices: attach each item's index (see :func:`attach_index`).
        index_key: the dict key of the index.
    """

    def __init__(self, dataset: Any, return_indices: bool, index_key: str) -> None:
        self.dataset = dataset
        self.return_indices = return_indices
        self.index_key = index_key

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        item = self.dataset[index]
        return attach_index(item, index, self.index_key) if self.return_indices else item

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        return read_items(self.dataset, indices, self.return_indices, self.index_key)

    def __getattr__(self, name: str) -> Any:
        dataset = self.__dict__.get("dataset")
        if name.startswith("__") or dataset is None:
            raise AttributeError(name)
        if name in _HANDLER_API and not hasattr(dataset, name):
            raise AttributeError(
                f"{name}: this is the worker view of a pruning handler, which another process "
                "received through multiprocessing; it only reads items. Pruning state stays in "
                "the process that built the handler: build the handler in every process (every "
                "DDP rank builds the same one), or move its state with state_dict()"
            )
        return getattr(dataset, name)


def _as_worker_view(handler: Any) -> tuple[type[WorkerDataset], tuple[Any, bool, str]]:
    return WorkerDataset, (handler.dataset, handler.return_indices, handler.index_key)


def send_as_worker_view(cls: type) -> None:
    """Make ``multiprocessing`` send instances of ``cls`` as their :class:`WorkerDataset`.

    Registered with ``ForkingPickler.register``, the reducer hook ``multiprocessing`` offers
    for one's own types (torch registers its tensors the same way). Only objects sent between
    processes by ``multiprocessing`` are affected, never ``pickle.dumps``.
    """
    ForkingPickler.register(cls, _as_worker_view)


class ForwardsToDataset:
    """The handler as a dataset: reads ``self.dataset`` and stands in for it (a mixin).

    Items are read exactly as the :class:`WorkerDataset` reads them (it uses only ``dataset``,
    ``return_indices`` and ``index_key``); ``__getitems__`` keeps the handler in torch's fetch
    path even when the wrapped dataset (a Hugging Face dataset, say) has its own. Attributes
    the object lacks are read from the wrapped dataset (``handler.classes``), and, once the
    instance sets ``_forward_writes``, written to it when it has them: frameworks configure
    the dataset they are handed (timm's ``create_loader`` sets ``dataset.transform``), and the
    workers read the wrapped one. Every subclass travels to other processes as its worker
    view (:func:`send_as_worker_view`).
    """

    dataset: Any

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        send_as_worker_view(cls)  # multiprocessing registers reducers by exact type

    __getitem__ = WorkerDataset.__getitem__
    __getitems__ = WorkerDataset.__getitems__

    def __getattr__(self, name: str) -> Any:
        # Only reached for attributes the object lacks. Dunder names and a half-unpickled
        # object must not recurse.
        dataset = self.__dict__.get("dataset")
        if name.startswith("__") or dataset is None:
            raise AttributeError(name)
        return getattr(dataset, name)

    def __setattr__(self, name: str, value: Any) -> None:
        # A write of an attribute the wrapped dataset has, and the object does not, goes to
        # the wrapped dataset.
        own = self.__dict__
        if (
            own.get("_forward_writes")
            and name not in own
            and not hasattr(type(self), name)
            and hasattr(own["dataset"], name)
        ):
            setattr(own["dataset"], name, value)
            return
        super().__setattr__(name, value)
