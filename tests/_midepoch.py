"""Mid-epoch checkpoints, run in child processes by ``test_midepoch_resume.py``.

Not a test module. ``python tests/_midepoch.py PHASE OUT`` runs every scenario of
``SCENARIOS`` in one process (``PHASE`` ``"first"``: the uninterrupted run, then the run
stopped after update ``STOP_UPDATE`` of epoch ``STOP_EPOCH`` with its checkpoint saved;
``"resume"``: a fresh process that loads each checkpoint and continues with the user's usual
loop) and writes what it observed to ``OUT/<phase>.pt``. ``PHASE`` ``"ddp-first"`` and
``"ddp-resume"`` do the same for the DDP scenarios on two ``gloo`` ranks: every rank calls
``state_dict()`` at the stop (mid-epoch it gathers the ranks' deferred losses), rank 0 alone
writes it, and every rank resumes from rank 0's file.

The "loss" of a sample is a known function of its index and the epoch (``_data.sample_loss``),
so the scores depend only on which batches ``update()`` saw, in which order.
"""

from __future__ import annotations

import datetime
import multiprocessing
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import IndexedDataset, sample_loss

from bls import BLS, InfoBatch

N, EPOCHS, BATCH = 83, 4, 8
STOP_EPOCH, STOP_UPDATE = 1, 3  # epoch 1 prunes; stop after its third update()
CONTEXT = "fork"  # one process, no process group: fork is safe; the DDP phase uses forkserver

SCENARIOS: list[dict[str, Any]] = [
    {"name": "stock-bls-set_epoch", "loader": "stock", "bls": True, "set_epoch": True},
    {"name": "stock-bls-no_set_epoch", "loader": "stock", "bls": True, "set_epoch": False},
    {"name": "stock-per_sample", "loader": "stock", "bls": False, "set_epoch": True},
    {"name": "stock-bls-drop_last", "loader": "stock", "bls": True, "drop_last": True},
    {"name": "stock-persistent", "loader": "stock", "bls": True, "persistent": True},
    {"name": "stock-explicit", "loader": "stock", "bls": True, "explicit": True},
    {"name": "stateful-bls", "loader": "stateful", "bls": True, "set_epoch": True},
    {"name": "stateful-per_sample-0w", "loader": "stateful", "bls": False, "workers": 0},
    {"name": "stateful-no_set_epoch", "loader": "stateful", "bls": True, "set_epoch": False},
    # The Hugging Face Trainer's resume: the epoch replayed through skip_first_batches.
    {"name": "accelerate-skip", "loader": "stock", "bls": True, "skip": True},
    {"name": "accelerate-skip-per_sample", "loader": "stock", "bls": False, "skip": True},
]
DDP_SCENARIOS: list[dict[str, Any]] = [
    {"name": "ddp-stock-bls", "loader": "stock", "bls": True, "set_epoch": True, "workers": 0},
    {"name": "ddp-stock-per_sample", "loader": "stock", "bls": False, "workers": 0},
]


def _handler(cfg: dict[str, Any]) -> Any:
    handler = InfoBatch(
        IndexedDataset(N),
        num_epochs=EPOCHS,
        prune_ratio=0.5,
        seed=5,
        return_indices=bool(cfg.get("explicit")),
    )
    return BLS(handler, alpha=0.7).proxy() if cfg["bls"] else handler


def _loader(cfg: dict[str, Any], handler: Any) -> Any:
    workers = int(cfg.get("workers", 2))
    options: dict[str, Any] = {
        "sampler": handler.sampler,
        "batch_size": BATCH,
        "drop_last": bool(cfg.get("drop_last")),
        "num_workers": workers,
        "persistent_workers": bool(cfg.get("persistent")) and workers > 0,
    }
    if workers:
        options["multiprocessing_context"] = multiprocessing.get_context(CONTEXT)
    if cfg["loader"] == "stateful":
        from torchdata.stateful_dataloader import StatefulDataLoader

        return StatefulDataLoader(handler, **options)
    return DataLoader(handler, **options)


def _loop(cfg, handler, loader, first_epoch: int, stop: tuple[int, int] | None, save=None, skip=0):
    """The user's usual loop; returns ``(epoch, indices)`` of every updated batch.

    ``skip``: the first epoch's loader is Accelerate's ``skip_first_batches(loader, skip)``.
    """
    seen: list[tuple[int, list[int]]] = []
    for epoch in range(first_epoch, EPOCHS):
        if cfg.get("set_epoch", True):
            handler.sampler.set_epoch(epoch)
        epoch_loader = loader
        if skip and epoch == first_epoch:
            from accelerate import skip_first_batches

            epoch_loader = skip_first_batches(loader, skip)
        for step, batch in enumerate(epoch_loader):
            index = batch[-1] if cfg.get("explicit") else batch[1]
            losses = sample_loss(index.double(), epoch).float()
            loss = losses.mean() if cfg["bls"] else losses
            handler.update(loss, indices=index if cfg.get("explicit") else None)
            seen.append((epoch, index.tolist()))
            if stop is not None and (epoch, step + 1) == stop:
                save(epoch)
                return seen
    handler.end_epoch()
    return seen


def _summary(handler: Any, seen: list[tuple[int, list[int]]], caught: list[Any]) -> dict[str, Any]:
    return {
        "seen": seen,
        "warnings": [f"{w.category.__name__}: {w.message}" for w in caught if _ours(w)],
        "scores": handler.scores.clone(),
        "weights": handler.weights.clone(),
        "history": [dict(r) for r in handler.history],
        "saved_ratio": handler.saved_ratio,
    }


def _ours(caught: Any) -> bool:
    return "bls" in caught.filename or caught.category.__module__.startswith("bls")


def first(cfg: dict[str, Any], out: Path, rank: int = 0) -> dict[str, Any]:
    handler = _handler(cfg)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seen = _loop(cfg, handler, _loader(cfg, handler), 0, None)
    full = _summary(handler, seen, caught)
    handler = _handler(cfg)
    loader = _loader(cfg, handler)

    def save(epoch: int) -> None:
        # Mid-epoch under DDP the ranks' losses since the epoch began are still deferred on
        # each rank: every rank calls state_dict() at the same step (it gathers them into the
        # scores), and rank 0 alone writes the result.
        state = handler.state_dict()
        if rank == 0:
            checkpoint = {"epoch": epoch, "handler": state}
            if cfg["loader"] == "stateful":
                checkpoint["loader"] = loader.state_dict()
            torch.save(checkpoint, out / f"{cfg['name']}.pt")

    # The "crash": the loop ends mid-epoch and the loader's workers go with this frame.
    stopped = _loop(cfg, handler, loader, 0, (STOP_EPOCH, STOP_UPDATE), save)
    return {"full": full, "stopped": stopped}


def resume(cfg: dict[str, Any], out: Path) -> dict[str, Any]:
    checkpoint = torch.load(out / f"{cfg['name']}.pt", weights_only=True)
    handler = _handler(cfg)
    handler.load_state_dict(checkpoint["handler"])
    loader = _loader(cfg, handler)
    if "loader" in checkpoint:
        loader.load_state_dict(checkpoint["loader"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        skip = checkpoint["handler"]["updates"] if cfg.get("skip") else 0
        seen = _loop(cfg, handler, loader, checkpoint["epoch"], None, skip=skip)
    return _summary(handler, seen, caught)


def _ddp(rank: int, world: int, out: str, phase: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{Path(out) / ('pg_' + phase)}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    results = {}
    for cfg in DDP_SCENARIOS:
        if phase == "ddp-first":
            results[cfg["name"]] = first(cfg, Path(out), rank)
            dist.barrier()  # rank 0's checkpoint is written before anyone leaves
        else:
            results[cfg["name"]] = resume(cfg, Path(out))
    torch.save(results, Path(out) / f"{phase}_{rank}.pt")
    dist.barrier()
    dist.destroy_process_group()


def main(phase: str, out: Path) -> None:
    torch.set_num_threads(1)
    if phase.startswith("ddp"):
        import torch.multiprocessing as mp

        mp.spawn(_ddp, args=(2, str(out), phase), nprocs=2)
        return
    run = first if phase == "first" else resume
    torch.save({cfg["name"]: run(cfg, out) for cfg in SCENARIOS}, out / f"{phase}.pt")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
