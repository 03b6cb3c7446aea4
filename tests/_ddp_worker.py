"""Training runs executed in child processes by ``test_distributed.py`` and ``test_resume.py``.

Not a test module. Each launch (``torch.multiprocessing.spawn`` with ``gloo`` on CPU) runs many
small scenarios one after the other and writes everything it observed to ``<out>/<phase>_<rank>.pt``
(index lists the loader delivered, per-step losses and scores, plans, weights, history), so
the tests can make many assertions from few process launches.

A scenario is a plain dict (it crosses the process boundary by pickling):

* ``name``, ``policy`` (``"InfoBatch"``, ``"SeTa"`` or ``"Random"``), ``alpha`` (``None`` for
  per-sample scoring, else BLS's ``alpha``), ``n`` samples, ``batch`` size, ``drop_last``,
  ``epochs``, ``prune_ratio``, ``explicit`` (route (b): ``return_indices=True`` and
  ``update(loss, indices=...)``), ``set_epoch`` (call ``sampler.set_epoch`` before each epoch),
  ``bf16`` (the loss handed to ``update`` is bfloat16), ``num_workers``,
  ``persistent_workers``, ``end_epoch`` (call ``handler.end_epoch()`` after each epoch;
  default ``True``), ``defer`` (under DDP, record each step's scores as ``handler.scores``
  holds them: those of the last fold, the epoch's last update; by default every rank calls
  ``handler.state_dict()`` after every step, which folds every rank's losses so far in).
"""

from __future__ import annotations

import datetime
import faulthandler
import multiprocessing
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from bls import BLS, InfoBatch, RandomPrune, SeTa
from bls.distributed import gather_equal, gather_uneven
from bls.handler import PruningDataset

SEED = 3
FEATURES = 8
CLASSES = 3

# DataLoader workers come from a fork server, never from forking a rank: once the process group
# is up a rank runs gloo's threads, and forking a multithreaded process can deadlock (a rank
# stalled 60 s in CI; fork-started workers beside gloo collectives stalled 3 runs of 3, a fork
# server none: docs/ddp_workers.md). The server imports torch and this module once
# (``_start_rank``), so a worker starts in milliseconds; "spawn" (what a child of mp.spawn
# inherits) would re-import torch for every worker of every epoch.
WORKER_CONTEXT = multiprocessing.get_context("forkserver")
# A launch takes seconds. Should a rank hang anyway, every thread's stack goes to stderr (which
# pytest shows with the failure) before gloo's 60 s timeout ends the run with a bare message.
WATCHDOG_SECONDS = 40


class IndexedData(Dataset[Any]):
    """``n`` random samples; each item is ``(x, y, index)`` so tests see what was delivered."""

    def __init__(self, n: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, FEATURES, generator=generator)
        self.y = torch.randint(0, CLASSES, (n,), generator=generator)

    def __len__(self) -> int:
        return int(self.y.numel())

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return self.x[index], self.y[index], index


def build_handler(cfg: dict[str, Any]) -> PruningDataset:
    data = IndexedData(cfg["n"])
    common = {"seed": SEED, "return_indices": cfg.get("explicit", False)}
    if cfg["policy"] == "InfoBatch":
        handler: PruningDataset = InfoBatch(data, cfg["epochs"], cfg["prune_ratio"], **common)
    elif cfg["policy"] == "SeTa":
        handler = SeTa(data, cfg["epochs"], cfg["prune_ratio"], num_group=4, **common)
    elif cfg["policy"] == "Random":
        handler = RandomPrune(data, cfg["epochs"], cfg["prune_ratio"], **common)
    else:
        raise ValueError(cfg["policy"])
    if cfg["alpha"] is not None:
        handler = BLS(handler, alpha=cfg["alpha"]).proxy()
    return handler


def build_model() -> nn.Module:
    torch.manual_seed(0)  # a child process of the test: its global generator is ours
    return nn.Sequential(nn.Linear(FEATURES, 16), nn.Tanh(), nn.Linear(16, CLASSES))


class MomentumSGD:
    """SGD with momentum that averages gradients over ranks first, as DDP does.

    Written out because ``torch.optim`` and ``DistributedDataParallel`` import
    ``torch._dynamo`` on first use: seconds in every fresh process, for runs this short.
    (``examples/ddp_train.py``, run by ``test_examples_ddp``, uses the real ones.)
    """

    def __init__(self, params: list[nn.Parameter], lr: float = 0.2, momentum: float = 0.9) -> None:
        self.params, self.lr, self.momentum = params, lr, momentum
        self.buffers = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self) -> None:
        world_size = dist.get_world_size() if dist.is_initialized() else 1
        for param, buffer in zip(self.params, self.buffers, strict=True):
            assert param.grad is not None
            if world_size > 1:
                dist.all_reduce(param.grad)
                param.grad /= world_size
            buffer.mul_(self.momentum).add_(param.grad)
            param.sub_(self.lr * buffer)

    def zero_grad(self) -> None:
        for param in self.params:
            param.grad = None

    def state_dict(self) -> dict[str, Any]:
        return {"buffers": [b.clone() for b in self.buffers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffers = [b.clone() for b in state["buffers"]]


def train(
    cfg: dict[str, Any],
    handler: PruningDataset,
    model: nn.Module,
    optimizer: MomentumSGD,
    epochs: range,
    checkpoint: Path | None = None,
    save_after: int = -1,
) -> list[dict[str, Any]]:
    """Train ``epochs``; return one record per epoch. Rank 0 saves after epoch ``save_after``."""
    loader = DataLoader(
        handler,
        sampler=handler.sampler,
        batch_size=cfg["batch"],
        drop_last=cfg["drop_last"],
        num_workers=cfg["num_workers"],
        multiprocessing_context=WORKER_CONTEXT if cfg["num_workers"] else None,
        persistent_workers=cfg.get("persistent_workers", False),
    )
    records = []
    for epoch in epochs:
        if cfg["set_epoch"]:
            handler.sampler.set_epoch(epoch)
        record: dict[str, Any] = {"epoch": epoch, "batches": [], "losses": [], "scores": []}
        for batch in loader:
            x, y, index = batch[0], batch[1], batch[2]
            per_sample = F.cross_entropy(model(x), y, reduction="none")
            if cfg.get("bf16"):
                per_sample = per_sample.to(torch.bfloat16)
            loss = per_sample if cfg["alpha"] is None else per_sample.mean()
            if cfg.get("explicit"):
                weighted = handler.update(loss, indices=batch[-1])
            else:
                weighted = handler.update(loss)
            weighted.float().backward()
            optimizer.step()
            optimizer.zero_grad()
            record["batches"].append(index.clone())
            record["losses"].append(loss.detach().float().clone())
            record["scores"].append(scores_now(cfg, handler))
            record.setdefault("len_sampler", len(handler.sampler))
        if cfg.get("end_epoch", True):
            handler.end_epoch()
        shards = handler._run.shards  # the epoch's plan as laid out over the ranks
        assert shards is not None
        record["plan"] = torch.from_numpy(shards.plan.copy())
        record["weights"] = handler.weights.clone()
        record["handler_epoch"] = handler.epoch
        records.append(record)
        if epoch == save_after and (not dist.is_initialized() or dist.get_rank() == 0):
            assert checkpoint is not None
            state = {
                "handler": handler.state_dict(),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
            }
            torch.save(state, checkpoint)
    return records


def scores_now(cfg: dict[str, Any], handler: PruningDataset) -> torch.Tensor:
    """The scores after this step. Under DDP every rank defers its losses to the epoch's last
    update; ``state_dict()``, called by every rank at the same step, folds them in now."""
    if dist.is_initialized() and not cfg.get("defer"):
        return handler.state_dict()["scores"]
    return handler.scores.clone()


def run_scenario(
    cfg: dict[str, Any],
    distributed: bool,
    epochs: range,
    checkpoint: Path | None = None,
    save_after: int = -1,
    resume: bool = False,
) -> dict[str, Any]:
    handler = build_handler(cfg)
    model = build_model()
    optimizer = MomentumSGD(list(model.parameters()))
    if resume:
        assert checkpoint is not None
        state = torch.load(checkpoint, weights_only=True)
        handler.load_state_dict(state["handler"])
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    if distributed:  # start from rank 0's weights, as DDP does
        for param in model.parameters():
            dist.broadcast(param.data, src=0)
    records = train(cfg, handler, model, optimizer, epochs, checkpoint, save_after)
    return {
        "epochs": records,
        "history": [dict(r) for r in handler.history],
        "saved_ratio": handler.saved_ratio,
        "final_scores": handler.scores.clone(),
        "params": [p.detach().clone() for p in model.parameters()],
    }


def _start_rank() -> None:
    """First thing in a launched rank."""
    torch.set_num_threads(1)  # two processes on two busy cores; also fixes reduction order
    WORKER_CONTEXT.set_forkserver_preload(["torch", "bls", __name__])
    faulthandler.dump_traceback_later(WATCHDOG_SECONDS)


def _init(rank: int, world_size: int, out: Path) -> None:
    # A short timeout turns a deadlock (ranks running different batch counts) into a failure.
    dist.init_process_group(
        "gloo",
        init_method=f"file://{out / 'pg_init'}",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=60),
    )


def _shut_down() -> None:
    # Leaving while the other rank still talks to this one can abort gloo's threads at exit
    # ("terminate called without an active exception"): meet first.
    dist.barrier()
    dist.destroy_process_group()
    faulthandler.cancel_dump_traceback_later()


def distributed_phase(
    rank: int, world_size: int, out: str, scenarios: list[dict[str, Any]]
) -> None:
    """``test_distributed``: every scenario under DDP, plus raw gathers of large int64 indices."""
    out_dir = Path(out)
    _start_rank()
    _init(rank, world_size, out_dir)
    results: dict[str, Any] = {"rank": rank, "world_size": world_size}
    # Indices past 2**53 (beyond float64, let alone bf16) must travel exactly.
    big = torch.tensor([2**53 + 1 + rank, -(2**62) + rank], dtype=torch.int64)
    results["gather_equal"] = gather_equal(big)
    results["gather_uneven"] = gather_uneven(big[: rank + 1])
    for cfg in scenarios:
        results[cfg["name"]] = run_scenario(cfg, True, range(cfg["epochs"]))
    torch.save(results, out_dir / f"distributed_{rank}.pt")
    _shut_down()


def resume_phase(
    rank: int, world_size: int, out: str, scenarios: list[dict[str, Any]], stop: int, resume: bool
) -> None:
    """``test_resume``: each scenario single-process (split over the launched processes, no
    process group yet) and then under DDP; ``resume=False`` runs all epochs and checkpoints
    after epoch ``stop``, ``resume=True`` restores that checkpoint and runs the rest."""
    out_dir = Path(out)
    _start_rank()
    phase = "resumed" if resume else "full"
    results: dict[str, Any] = {}
    for mode in ("single", "ddp"):
        if mode == "ddp":
            _init(rank, world_size, out_dir)
        for position, cfg in enumerate(scenarios):
            if mode == "single" and position % world_size != rank:
                continue
            cfg = {**cfg, "defer": True}  # the epochs' losses folded at their last updates
            epochs = range(stop + 1, cfg["epochs"]) if resume else range(cfg["epochs"])
            results[f"{mode}/{cfg['name']}"] = run_scenario(
                cfg,
                mode == "ddp",
                epochs,
                checkpoint=out_dir / f"ckpt_{mode}_{cfg['name']}.pt",
                save_after=-1 if resume else stop,
                resume=resume,
            )
    torch.save(results, out_dir / f"{phase}_{rank}.pt")
    _shut_down()


# ---------------------------------------------------------------- collectives (test_collectives)
#: ``torch.distributed`` functions that communicate with the other ranks.
COLLECTIVES = (
    "all_gather",
    "all_gather_into_tensor",
    "all_gather_single",
    "all_gather_object",
    "all_reduce",
    "all_to_all",
    "all_to_all_single",
    "barrier",
    "broadcast",
    "broadcast_object_list",
    "gather",
    "gather_object",
    "reduce",
    "reduce_scatter",
    "reduce_scatter_tensor",
    "scatter",
    "send",
    "recv",
    "isend",
    "irecv",
    "monitored_barrier",
)


class CollectiveCounter:
    """Counts calls of every ``torch.distributed`` collective, in this process only.

    ``install`` wraps the module's functions (the library looks them up on the module at call
    time, so it calls the wrappers); nothing outside this child process is patched.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []

    def install(self) -> None:
        for name in COLLECTIVES:
            original = getattr(dist, name, None)
            if original is not None:
                setattr(dist, name, self._wrap(name, original))

    def _wrap(self, name: str, original: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return original(*args, **kwargs)

        return counted

    def take(self) -> list[str]:
        calls, self.calls = self.calls, []
        return calls


def collectives_phase(
    rank: int, world_size: int, out: str, scenarios: list[dict[str, Any]]
) -> None:
    """``test_collectives``: count the collectives of each epoch, and check mid-epoch saving.

    Every scenario trains ``epochs`` epochs of many steps with a fixed loss of the index (no
    model, so the only collectives are the handler's); after each epoch's last update rank 0
    alone calls ``state_dict()`` (the usual "rank 0 saves"), which must return at once.
    Then, in one more epoch: every rank calls ``state_dict()`` at the same mid-epoch step (it
    folds every rank's losses in), and rank 0 alone calls it at another step, which must
    raise, naming rank 1, within the shortened wait.
    """
    import bls.distributed

    out_dir = Path(out)
    _start_rank()
    _init(rank, world_size, out_dir)
    counter = CollectiveCounter()
    counter.install()
    bls.distributed.AGREE_TIMEOUT = datetime.timedelta(seconds=3)
    results: dict[str, Any] = {}
    for cfg in scenarios:
        handler = build_handler(cfg)
        loader = DataLoader(
            handler, sampler=handler.sampler, batch_size=cfg["batch"], drop_last=cfg["drop_last"]
        )
        record: dict[str, Any] = {"collectives": [], "steps": [], "saves": []}
        for epoch in range(cfg["epochs"]):
            handler.sampler.set_epoch(epoch)
            counter.take()  # the decision closed the previous epoch: counted there
            steps = 0
            for batch in loader:
                loss = (batch[2].double() * 0.37 + epoch).sin().float() + 1.0
                _update(cfg, handler, loss, batch)
                steps += 1
            calls = counter.take()
            if rank == 0:
                started = datetime.datetime.now()
                state = handler.state_dict()  # rank 0 alone, at the epoch's end
                seconds = (datetime.datetime.now() - started).total_seconds()
                record["saves"].append((seconds, state["scores"].clone()))
            calls += counter.take()
            handler.end_epoch()
            calls += counter.take()
            record["collectives"].append(calls)
            record["steps"].append(steps)
        record["final_scores"] = handler.scores.clone()
        # One more epoch: a mid-epoch state_dict() on every rank, then rank 0 alone.
        handler.sampler.set_epoch(cfg["epochs"])
        seen = []
        for step, batch in enumerate(loader, start=1):
            loss = (batch[2].double() * 0.37).cos().float() + 2.0
            _update(cfg, handler, loss, batch)
            seen.append((batch[2].clone(), loss.clone()))
            if step == 3:
                record["midepoch_state"] = handler.state_dict()  # every rank, same step
                record["midepoch_seen"] = list(seen)
            if step == 5 and rank == 0:
                started = datetime.datetime.now()
                try:
                    handler.state_dict()
                except RuntimeError as error:
                    record["alone_error"] = str(error)
                record["alone_seconds"] = (datetime.datetime.now() - started).total_seconds()
        handler.end_epoch()
        results[cfg["name"]] = record
    torch.save(results, out_dir / f"collectives_{rank}.pt")
    _shut_down()


def _update(cfg: dict[str, Any], handler: PruningDataset, loss: torch.Tensor, batch: Any) -> None:
    loss = loss if cfg["alpha"] is None else loss.mean()
    handler.update(loss, indices=batch[-1] if cfg.get("explicit") else None)
