"""BLS + InfoBatch under DDP, with checkpoints a preempted run resumes from exactly.

Trains a small classifier on scikit-learn's digits (no download). Runs as one process or
under torchrun (``gloo`` on CPU, ``nccl`` on GPUs)::

    python examples/ddp_train.py --epochs 3
    torchrun --standalone --nproc_per_node=2 examples/ddp_train.py --epochs 3
    # preempted after epoch 1, then resumed: the same plans, scores and weights from epoch 2 on
    torchrun --standalone --nproc_per_node=2 examples/ddp_train.py --epochs 3 --stop-after 1
    torchrun --standalone --nproc_per_node=2 examples/ddp_train.py --epochs 3 --resume

Every rank builds the same handler; ``handler.sampler`` gives each rank a disjoint shard of the
epoch's plan with the same number of batches, and ``handler.update`` gathers every rank's
losses so the scores stay identical everywhere. Rank 0 writes the checkpoint after each epoch:
model, optimizer and ``handler.state_dict()`` (plain tensors and numbers, so it loads with
``torch.load(..., weights_only=True)``).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from bls import BLS, InfoBatch, RandomPrune, SeTa


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--policy", choices=["InfoBatch", "SeTa", "Random"], default="InfoBatch")
    parser.add_argument("--prune-ratio", type=float, default=0.5)
    parser.add_argument("--alpha", type=float, default=0.7, help="BLS EMA factor; 0 = off")
    parser.add_argument("--batch-size", type=int, default=32, help="per rank")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers per rank")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path("results/ddp_train"),
        help="checkpoint and summary.json go here (default: results/ddp_train)",
    )
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="default: OUTPUT_DIR/checkpoint.pt"
    )
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    parser.add_argument("--stop-after", type=int, default=-1, help="simulate preemption")
    parser.add_argument(
        "--out", type=Path, default=None, help="the JSON summary (default: OUTPUT_DIR/summary.json)"
    )
    args = parser.parse_args(argv)
    args.checkpoint = args.checkpoint or args.output_dir / "checkpoint.pt"
    args.out = args.out or args.output_dir / "summary.json"
    return args


def setup_distributed() -> tuple[torch.device, int, int]:
    """Join torchrun's process group when launched by torchrun; else one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu"), 0, 1
    if torch.cuda.is_available():
        local_rank = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
        device = torch.device("cuda", local_rank)
    else:
        dist.init_process_group("gloo")
        device = torch.device("cpu")
    return device, dist.get_rank(), dist.get_world_size()


def build_handler(args: argparse.Namespace, data: TensorDataset) -> Any:
    """Every rank builds the same handler (same seed): they all decide the same epoch plans."""
    kinds = {"InfoBatch": InfoBatch, "SeTa": SeTa, "Random": RandomPrune}
    handler = kinds[args.policy](data, num_epochs=args.epochs, prune_ratio=args.prune_ratio)
    if args.alpha > 0:
        handler = BLS(handler, alpha=args.alpha).proxy()  # update() takes the mean batch loss
    return handler


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device, rank, world_size = setup_distributed()
    torch.manual_seed(0)  # the same initial model on every rank (DDP also broadcasts rank 0's)

    digits = load_digits()
    data = TensorDataset(
        torch.tensor(digits.data, dtype=torch.float32) / 16, torch.tensor(digits.target)
    )
    model: nn.Module = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    criterion = nn.CrossEntropyLoss()  # the ordinary mean loss: BLS needs nothing else
    handler = build_handler(args, data)

    start_epoch = 0
    if args.resume:
        state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        handler.load_state_dict(state["pruning"])
        start_epoch = state["epoch"] + 1
    if world_size > 1:
        model = nn.parallel.DistributedDataParallel(model)

    # The three lines: handler (above), loader, update (below). Under a process group the
    # workers come from a fork server, started once: forking a process that runs the group's
    # threads can hang or crash it.
    loader = DataLoader(
        handler,
        sampler=handler.sampler,
        batch_size=args.batch_size,
        num_workers=args.workers,
        multiprocessing_context="forkserver" if args.workers and world_size > 1 else None,
        persistent_workers=args.workers > 0,
    )
    batches_per_rank = []
    for epoch in range(start_epoch, args.epochs):
        handler.sampler.set_epoch(epoch)  # decides this epoch's plan, identically on all ranks
        model.train()
        batches = 0
        for x, y in loader:
            loss = handler.update(criterion(model(x.to(device)), y.to(device)))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            batches += 1
        counts = [batches] * world_size
        if world_size > 1:
            dist.all_gather_object(counts, batches)
        batches_per_rank.append(counts)
        record = handler.history[-1]
        if rank == 0:
            print(
                f"epoch {epoch}: kept {record['kept']} of {len(handler)}, "
                f"batches per rank {counts}, {world_size} process(es)",
                flush=True,
            )
            save_checkpoint(args.checkpoint, epoch, model, optimizer, handler)
        if epoch == args.stop_after:
            break

    summary = {
        "world_size": world_size,
        "start_epoch": start_epoch,
        "batches_per_rank": batches_per_rank,
        "history": handler.history,
        "saved_ratio": handler.saved_ratio,
        "scores": handler.scores.cpu().tolist(),
        "accuracy": accuracy(model, data, device),
    }
    if rank == 0:
        print(
            f"saved {handler.saved_ratio:.1%} of sample-steps, accuracy {summary['accuracy']:.3f}"
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary))
    if world_size > 1:
        dist.barrier()  # leave together: a rank exiting while others still talk can abort
        dist.destroy_process_group()
    return summary


def save_checkpoint(
    path: Path, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer, handler: Any
) -> None:
    """Write atomically, so a preemption during the write leaves the previous checkpoint."""
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    state = {
        "epoch": epoch,
        "model": inner.state_dict(),
        "optimizer": optimizer.state_dict(),
        "pruning": handler.state_dict(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)


@torch.no_grad()
def accuracy(model: nn.Module, data: TensorDataset, device: torch.device) -> float:
    model.eval()
    x, y = data.tensors
    return (model(x.to(device)).argmax(1).cpu() == y).float().mean().item()


if __name__ == "__main__":
    main()
