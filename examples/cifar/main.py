"""CIFAR-10/100 with ResNet-18/50/101 and dynamic data pruning (BLS, InfoBatch, SeTa, ...).

Mirrors the research scripts of InfoBatch, SeTa and BLS: OneCycle learning rate, SGD / Adam /
LARS / LAMB, label smoothing, mixed precision and DDP. Run one GPU or CPU::

    python examples/cifar/main.py --data cifar100 --data-path ./data/cifar100 \\
        --prune_type BLS_InfoBatch --ratio 0.5 --alpha 0.7

or several GPUs with ``torchrun --nproc_per_node=4 examples/cifar/main.py ...``. The data
must be on disk in torchvision's python format (``cifar-10-batches-py`` or
``cifar-100-python`` under ``--data-path``); nothing is downloaded, torchvision is not needed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Subset

sys.path.insert(0, str(Path(__file__).resolve().parent))  # resnet.py and optim.py beside us

from optim import Lamb, Lars
from resnet import ARCHITECTURES, build_resnet

import bls
from bls.app.data import DataNotFoundError, load_cifar
from bls.schedule import EpochOneCycleLR

PRUNE_TYPES = ["Full", "InfoBatch", "SeTa", "Static", "Random", "BLS_InfoBatch", "BLS_SeTa"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="CIFAR training with dynamic data pruning")
    parser.add_argument("--data", default="cifar100", choices=["cifar10", "cifar100"])
    parser.add_argument("--data-path", default=None, help="default: ./data/<data>")
    parser.add_argument("--model", default="resnet18", choices=sorted(ARCHITECTURES))
    parser.add_argument("--width", default=64, type=int, help="ResNet base width (64: standard)")
    parser.add_argument("--num_epoch", default=200, type=int, help="training epochs")
    parser.add_argument("--batch-size", default=128, type=int, help="per process")
    parser.add_argument("--test-batch-size", default=512, type=int)
    parser.add_argument("--optimizer", default="sgd", choices=["sgd", "adam", "lars", "lamb"])
    parser.add_argument("--lr", default=0.2, type=float, help="initial LR given to the optimizer")
    parser.add_argument("--momentum", default=0.9, type=float)
    parser.add_argument("--weight-decay", default=5e-4, type=float)
    parser.add_argument("--label-smoothing", default=0.1, type=float)
    # One-cycle schedule, kept exact under pruning by bls.schedule.EpochOneCycleLR.
    parser.add_argument("--max-lr", default=0.05, type=float)
    parser.add_argument("--div-factor", default=25, type=float)
    parser.add_argument("--final-div", default=10000, type=float)
    parser.add_argument("--pct-start", default=0.3, type=float)
    parser.add_argument("--fp16", action="store_true", help="mixed precision (CUDA)")
    parser.add_argument("--use_ddp", action="store_true", help="implied under torchrun")
    parser.add_argument("--workers", default=4, type=int)
    parser.add_argument("--seed", default=42, type=int)
    parser.add_argument("--save_path", default="./results")
    parser.add_argument("--subset", default=0, type=int, help="train on the first N samples")
    # Pruning: the reference scripts' names.
    parser.add_argument("--prune_type", default="BLS_InfoBatch", choices=PRUNE_TYPES)
    parser.add_argument("--use_info_batch", action="store_true", help="ignored; see --prune_type")
    parser.add_argument("--ratio", default=0.5, type=float, help="prune ratio")
    parser.add_argument("--num_group", default=5, type=int, help="SeTa groups")
    parser.add_argument("--window_scale", default=0.9, type=float, help="SeTa window share")
    parser.add_argument("--delta", default=0.875, type=float, help="share of pruning epochs")
    parser.add_argument("--alpha", default=0.9, type=float, help="BLS EMA factor")
    return parser.parse_args(argv)


def setup_distributed(args: argparse.Namespace) -> tuple[torch.device, int, int]:
    """Join the torchrun process group when launched by torchrun (or --use_ddp)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 or args.use_ddp:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
            return torch.device("cuda", local_rank), dist.get_rank(), dist.get_world_size()
        return torch.device("cpu"), dist.get_rank(), dist.get_world_size()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu"), 0, 1


def build_optimizer(args: argparse.Namespace, model: nn.Module) -> torch.optim.Optimizer:
    params = model.parameters()
    if args.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay
        )
    if args.optimizer == "adam":
        return torch.optim.Adam(params, lr=args.lr, weight_decay=args.weight_decay)
    if args.optimizer == "lars":
        return Lars(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay)
    return Lamb(params, lr=args.lr, weight_decay=args.weight_decay)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> float:
    model.eval()
    correct = total = 0
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device)
        correct += int((model(images).argmax(1) == targets).sum())
        total += targets.numel()
    return 100.0 * correct / max(total, 1)


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = parse_args(argv)
    device, rank, world_size = setup_distributed(args)
    log = print if rank == 0 else (lambda *a, **k: None)
    torch.manual_seed(args.seed)  # a script owns its process: seed the model initialisation

    # 1. Data, from disk (torchvision's format), and the pruning handler in place of it.
    data_path = args.data_path or f"./data/{args.data}"
    try:
        train_set, test_set, info = load_cifar(data_path, args.data, seed=args.seed + rank)
    except DataNotFoundError as error:
        raise SystemExit(f"error: --data-path: {error}") from None
    if args.subset:
        train_set = Subset(train_set, range(min(args.subset, len(train_set))))
    args.epochs = args.num_epoch  # the names bls.prune reads: epochs, prune_ratio, ...
    args.prune_ratio = args.ratio
    handler = bls.prune(train_set, args)  # BLS_* take the mean loss, the others per-sample
    use_bls = bls.methods.lookup_method(args.prune_type).bls
    # Under a process group the workers come from a fork server and live across epochs: forking
    # a process that runs the group's threads can hang or crash it (docs/ddp_workers.md).
    workers: dict[str, Any] = {
        "num_workers": args.workers,
        "persistent_workers": args.workers > 0,
        "multiprocessing_context": "forkserver" if args.workers and world_size > 1 else None,
    }
    train_loader = DataLoader(
        handler,
        sampler=handler.sampler,
        batch_size=args.batch_size,
        pin_memory=device.type == "cuda",
        **workers,
    )
    test_loader = DataLoader(test_set, batch_size=args.test_batch_size, **workers)

    # 2. Model, optimizer, the epoch-aware one-cycle schedule, loss, mixed precision.
    model: nn.Module = build_resnet(args.model, info.num_classes, args.width).to(device)
    if world_size > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = build_optimizer(args, model)
    full_steps = math.ceil(len(handler) / (args.batch_size * world_size))
    schedule = EpochOneCycleLR(
        optimizer,
        args.max_lr,
        args.num_epoch,
        max(full_steps, 2),
        pct_start=args.pct_start,
        div_factor=args.div_factor,
        final_div_factor=args.final_div,
        cycle_momentum=args.optimizer != "lamb",
    )
    criterion = nn.CrossEntropyLoss(
        label_smoothing=args.label_smoothing, reduction="mean" if use_bls else "none"
    )
    amp = args.fp16 and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    log(
        f"{args.prune_type} on {args.data} ({len(handler)} samples), {args.model}, "
        f"{world_size} process(es) on {device}"
    )

    # 3. Train: the three-line integration (handler, handler.sampler, handler.update).
    accuracies: list[float] = []
    train_time = 0.0
    for epoch in range(args.num_epoch):
        handler.sampler.set_epoch(epoch)
        model.train()
        start = time.perf_counter()
        loss_sum, steps = 0.0, 0
        for step, (images, targets) in enumerate(train_loader):
            lr = schedule.set_step(epoch, step, len(train_loader))
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            with torch.autocast(device.type, enabled=amp):
                loss = criterion(model(images), targets)
            loss = handler.update(loss)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_sum += float(loss.detach())
            steps += 1
        train_time += time.perf_counter() - start
        accuracies.append(evaluate(model, test_loader, device))
        record = handler.history[-1]
        log(
            f"epoch {epoch}: kept {record['kept']}/{len(handler)}, lr {lr:.5f}, "
            f"train loss {loss_sum / max(steps, 1):.4f}, test acc {accuracies[-1]:.2f}%"
        )

    # 4. Report: saved share of sample visits and the accuracy reached.
    result = {
        "prune_type": args.prune_type,
        "data": args.data,
        "model": args.model,
        "epochs": args.num_epoch,
        "dataset_size": len(handler),
        "saved_ratio": handler.saved_ratio,
        "final_acc": accuracies[-1],
        "best_acc": max(accuracies),
        "valid_acc": accuracies,
        "kept": [r["kept"] for r in handler.history],
        "train_time_s": train_time,
        "hyperparameters": {
            k: v for k, v in vars(args).items() if isinstance(v, (int, float, str))
        },
    }
    log(
        f"saved ratio {100 * handler.saved_ratio:.1f}%, final accuracy {accuracies[-1]:.2f}%, "
        f"best {max(accuracies):.2f}%, training time {train_time:.1f} s"
    )
    if rank == 0:
        Path(args.save_path).mkdir(parents=True, exist_ok=True)
        (Path(args.save_path) / "res.json").write_text(json.dumps(result, indent=2))
    if world_size > 1:
        dist.barrier()  # leave together: a rank exiting while others still talk can abort
        dist.destroy_process_group()
    return result


if __name__ == "__main__":
    main()
