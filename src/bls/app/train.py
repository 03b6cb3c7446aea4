"""A small, reusable training engine: one classification run with any pruning method.

Used by ``bls-prune demo`` / ``bls-prune train`` and by studies that compare methods. It is
the three-line integration of the README with the details done right:

* non-BLS methods get the per-sample loss (``reduction='none'``), BLS methods the ordinary
  scalar mean loss;
* the learning rate follows :class:`bls.schedule.EpochOneCycleLR`, which ends at its final
  value although pruned epochs are shorter;
* the run is reproducible from ``cfg.seed`` and leaves the caller's random state untouched:
  the model is re-initialised and trained inside ``torch.random.fork_rng``, the DataLoader
  gets its own generator, and the handler draws from its own.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from bls._checks import check_fraction, check_int, check_positive
from bls.handler import PruningDataset
from bls.methods import Full, InfoBatch, RandomPrune, SeTa, lookup_method, method_names, prune
from bls.schedule import EpochOneCycleLR

__all__ = ["METHODS", "EpochRecord", "RunConfig", "RunResult", "build_handler", "evaluate", "train"]

logger = logging.getLogger("bls")

# Every name ``RunConfig.method`` accepts, in any case: the whole method registry.
METHODS = method_names(unlisted=True, legacy=True)

OptimizerFactory = Callable[[nn.Module, "RunConfig"], torch.optim.Optimizer]


@dataclass
class RunConfig:
    """Settings of one training run.

    Attributes:
        method: a name of :data:`METHODS` in any case (``Full``, ``InfoBatch``, ``SeTa``,
            ``Static``, ``Random`` or ``RandomPrune``, ``BLS_InfoBatch``, ``BLS_SeTa``, ...;
            see :data:`bls.methods.REGISTRY`). Results carry it as given.
        prune_ratio: the method's prune ratio, ``[0, 1)``.
        target_saving: budget-first pruning, ``[0, 1)`` or ``None``: the run's saved share,
            fixed before training, in place of ``prune_ratio`` (InfoBatch, SeTa, Random and
            their BLS forms; ``Full`` trains on everything whatever it is).
        alpha: BLS EMA factor, ``[0, 1)`` (BLS methods only).
        delta: share of epochs that prune, ``[0, 1]``.
        num_group: SeTa's number of score groups.
        window_scale: SeTa's sliding-window share of the groups.
        epochs: number of epochs.
        batch_size: samples per batch.
        lr: peak learning rate of the one-cycle schedule.
        seed: seed of the model's initial weights, the data order and the pruning choices.
        workers: DataLoader worker processes.
        label_smoothing: cross-entropy label smoothing.
    """

    method: str = "Full"
    prune_ratio: float = 0.5
    target_saving: float | None = None
    alpha: float = 0.7
    delta: float = 0.875
    num_group: int = 10
    window_scale: float = 0.5
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.05
    seed: int = 0
    workers: int = 0
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        # The library's checks, so a setting has one rule and one message everywhere. The
        # method's own options (prune_ratio, alpha, ...) are checked when its handler is built:
        # which apply depends on the method.
        lookup_method(self.method)
        self.epochs = check_int("epochs", self.epochs, 1)
        self.batch_size = check_int("batch_size", self.batch_size, 1)
        self.workers = check_int("workers", self.workers, 0)
        self.lr = check_positive("lr", self.lr)
        self.label_smoothing = check_fraction(
            "label_smoothing", self.label_smoothing, upper_inclusive=False
        )

    @property
    def uses_bls(self) -> bool:
        """Whether the method scores by batch-loss EMA (takes the scalar mean loss)."""
        return lookup_method(self.method).bls


@dataclass
class EpochRecord:
    """One epoch of a run.

    Attributes:
        epoch: epoch number, from 0.
        kept: samples trained on this epoch.
        train_loss: mean of the returned (weighted) batch losses.
        test_accuracy: accuracy on the test set after the epoch, ``[0, 1]``.
        seconds: wall time of the epoch's training (without evaluation).
        lr: learning rate of the epoch's last step.
    """

    epoch: int
    kept: int
    train_loss: float
    test_accuracy: float
    seconds: float
    lr: float = 0.0


@dataclass
class RunResult:
    """The outcome of :func:`train`.

    Attributes:
        method: the method name of the config.
        test_accuracy: accuracy on the test set after the last epoch, ``[0, 1]``.
        saved_ratio: share of sample visits skipped, ``sum_e (N - kept_e) / (N * E)``.
        wall_time_s: wall time of the whole run (training and per-epoch evaluation).
        sample_steps: samples forwarded in training, ``sum_e kept_e``.
        epochs: one record per epoch.
        config: the settings of the run.
        train_time_s: wall time of the training steps alone.
        num_train: training-set size ``N``.
    """

    method: str
    test_accuracy: float
    saved_ratio: float
    wall_time_s: float
    sample_steps: int
    epochs: list[EpochRecord]
    config: RunConfig
    train_time_s: float = 0.0
    num_train: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (numbers, strings, lists, dicts)."""
        return asdict(self)


def build_handler(dataset: Any, cfg: RunConfig) -> PruningDataset:
    """The pruning dataset for ``cfg.method``, built with :func:`bls.prune`.

    Raises:
        ValueError: unknown method or an option out of range (the message names it).
    """
    args = {
        "prune_type": cfg.method,
        "epochs": cfg.epochs,
        "prune_ratio": cfg.prune_ratio,
        "delta": cfg.delta,
        "num_group": cfg.num_group,
        "window_scale": cfg.window_scale,
        "alpha": cfg.alpha,
        "seed": cfg.seed,
    }
    if cfg.target_saving is not None:
        spec = lookup_method(cfg.method)
        if spec.handler_class not in _BUDGETED and spec.handler_class is not Full:
            raise ValueError(
                f"target_saving: method {cfg.method!r} has no budget; allowed with "
                "InfoBatch, SeTa, Random and their BLS forms (Full ignores it)"
            )
        args["target_saving"] = cfg.target_saving
    return prune(dataset, args)


# The handlers that take target_saving.
_BUDGETED = (InfoBatch, SeTa, RandomPrune)


def default_optimizer(model: nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum 0.9 and weight decay 5e-4 (no decay on biases and norms)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9, nesterov=True)


@torch.no_grad()
def evaluate(
    model: nn.Module, dataset: Any, *, batch_size: int = 256, device: str | torch.device = "cpu"
) -> float:
    """Top-1 accuracy of ``model`` on ``dataset`` of ``(image, label)`` items, in ``[0, 1]``."""
    was_training = model.training
    model.eval()
    correct = total = 0
    for images, targets in DataLoader(dataset, batch_size=batch_size):
        images, targets = images.to(device), targets.to(device)
        correct += int((model(images).argmax(dim=1) == targets).sum())
        total += int(targets.numel())
    model.train(was_training)
    return correct / max(total, 1)


def _reset_parameters(model: nn.Module) -> None:
    for module in model.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()


def _progress_bar(enabled: bool | None, total: int, description: str) -> Any:
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=description, unit="epoch", leave=True, dynamic_ncols=True)


def train(
    model: nn.Module,
    train_set: Any,
    test_set: Any,
    cfg: RunConfig,
    *,
    device: str | torch.device = "cpu",
    progress: bool | None = None,
    on_epoch_end: Callable[[int, PruningDataset, nn.Module], None] | None = None,
    optimizer_factory: OptimizerFactory | None = None,
    reinit: bool = True,
) -> RunResult:
    """Train ``model`` on ``train_set`` with ``cfg.method``; test after every epoch.

    Args:
        model: a classifier mapping a batch of images to logits. Trained in place.
        train_set: map-style dataset of ``(image, label)`` items.
        test_set: dataset of the same form, for the per-epoch accuracy.
        cfg: the run's settings.
        device: where to train.
        progress: a tqdm bar over the epochs; ``None`` shows one only when stderr is a
            terminal (and tqdm is installed).
        on_epoch_end: called as ``on_epoch_end(epoch, handler, model)`` after each epoch's
            evaluation (inspect ``handler.scores``, save checkpoints, ...).
        optimizer_factory: ``factory(model, cfg)`` returning the optimizer; default
            :func:`default_optimizer`. Its learning rate is driven by the one-cycle schedule
            with peak ``cfg.lr``.
        reinit: re-initialise every parameter from ``cfg.seed`` first (each submodule's
            ``reset_parameters``), so runs that differ only in the method start from the same
            weights. ``False`` keeps the weights given.

    Returns:
        The run's :class:`RunResult`.
    """
    device = torch.device(device)
    rng_devices: list[int] = []
    if device.type == "cuda":
        rng_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=rng_devices, device_type=device.type):
        # Everything that draws from torch's global generator (initialisation, dropout) sees
        # a generator seeded from cfg.seed; the caller's state is restored on exit.
        torch.manual_seed(cfg.seed)
        return _train(
            model,
            train_set,
            test_set,
            cfg,
            device,
            progress,
            on_epoch_end,
            optimizer_factory,
            reinit,
        )


def _train(
    model: nn.Module,
    train_set: Any,
    test_set: Any,
    cfg: RunConfig,
    device: torch.device,
    progress: bool | None,
    on_epoch_end: Callable[[int, PruningDataset, nn.Module], None] | None,
    optimizer_factory: OptimizerFactory | None,
    reinit: bool,
) -> RunResult:
    started = time.perf_counter()
    handler = build_handler(train_set, cfg)
    if reinit:
        _reset_parameters(model)
    model.to(device)
    loader_generator = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(
        handler,
        sampler=handler.sampler,
        batch_size=cfg.batch_size,
        num_workers=cfg.workers,
        generator=loader_generator,  # worker seeds: never drawn from the global generator
        persistent_workers=cfg.workers > 0,
    )
    optimizer = (optimizer_factory or default_optimizer)(model, cfg)
    schedule = EpochOneCycleLR(
        optimizer,
        max_lr=cfg.lr,
        epochs=cfg.epochs,
        steps_per_epoch=max(math.ceil(len(handler) / cfg.batch_size), 2),
    )
    criterion = nn.CrossEntropyLoss(
        reduction="mean" if cfg.uses_bls else "none", label_smoothing=cfg.label_smoothing
    )
    bar = _progress_bar(progress, cfg.epochs, cfg.method)
    records: list[EpochRecord] = []
    train_time = 0.0
    lr = 0.0
    try:
        for epoch in range(cfg.epochs):
            handler.sampler.set_epoch(epoch)
            model.train()
            epoch_start = time.perf_counter()
            loss_sum = torch.zeros((), device=device)
            steps = 0
            for step, (images, targets) in enumerate(loader):
                # len(loader) is this epoch's pruned length once its first batch was drawn.
                lr = schedule.set_step(epoch, step, len(loader))
                images, targets = images.to(device), targets.to(device)
                loss = handler.update(criterion(model(images), targets))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                loss_sum += loss.detach()
                steps += 1
            handler.end_epoch()
            seconds = time.perf_counter() - epoch_start
            train_time += seconds
            accuracy = evaluate(model, test_set, device=device)
            kept = int(handler.history[-1]["kept"])
            records.append(
                EpochRecord(epoch, kept, float(loss_sum) / max(steps, 1), accuracy, seconds, lr)
            )
            logger.info(
                "%s epoch %d: kept %d, loss %.4f, test accuracy %.4f",
                cfg.method,
                epoch,
                kept,
                records[-1].train_loss,
                accuracy,
            )
            if on_epoch_end is not None:
                on_epoch_end(epoch, handler, model)
            if bar is not None:
                bar.set_postfix(acc=f"{accuracy:.3f}", kept=kept)
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return RunResult(
        method=cfg.method,
        test_accuracy=records[-1].test_accuracy,
        saved_ratio=float(handler.saved_ratio),
        wall_time_s=time.perf_counter() - started,
        sample_steps=sum(r.kept for r in records),
        epochs=records,
        config=cfg,
        train_time_s=train_time,
        num_train=len(handler),
        history=[{k: _plain(v) for k, v in r.items()} for r in handler.history],
    )


def _plain(value: Any) -> Any:
    """JSON-friendly copy of a history value (numpy scalars and arrays become Python)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return value
