"""ImageNet-style training of any timm model with dynamic data pruning (BLS, InfoBatch, SeTa).

Follows the DeiT-based research scripts of SeTa and BLS, trimmed to what pruning needs: timm's
model factory (``create_model``: CNNs such as ``mobilenetv3_small_050``, Transformers such as
``vit_tiny_patch16_224``, any timm name), timm's optimizer factory (``create_optimizer_v2``)
and transforms, mixup/cutmix, label smoothing, mixed precision and DDP via torchrun. The data
is an image folder, ``--data-path`` holding ``train/<class>/*`` and ``val/<class>/*``::

    torchrun --nproc_per_node=8 examples/imagenet/main.py --model vit_tiny_patch16_224 \\
        --data-path /data/imagenet --prune_type BLS_InfoBatch --prune_ratio 0.5 --alpha 0.9

Needs ``timm`` (and so torchvision): ``pip install timm``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Subset

import bls
from bls.schedule import EpochOneCycleLR

try:
    import timm
    from timm.data import Mixup, create_transform
    from timm.optim import create_optimizer_v2
    from torchvision.datasets import ImageFolder
except ImportError as error:  # say what to install instead of a bare traceback
    raise SystemExit(
        f"error: this example needs timm and torchvision ({error}); pip install timm"
    ) from None

PRUNE_TYPES = ["Full", "InfoBatch", "SeTa", "Static", "Random", "BLS_InfoBatch", "BLS_SeTa"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="timm training with dynamic data pruning")
    parser.add_argument("--model", default="mobilenetv3_small_050", help="any timm model name")
    parser.add_argument("--input-size", default=224, type=int)
    parser.add_argument("--drop", default=0.0, type=float, help="dropout rate")
    parser.add_argument("--drop-path", default=0.1, type=float)
    parser.add_argument("--batch-size", default=128, type=int, help="per process")
    parser.add_argument("--epochs", default=300, type=int)
    # Optimizer: any name timm's create_optimizer_v2 knows (adamw, sgd, lamb, lars, ...).
    parser.add_argument("--opt", default="adamw")
    parser.add_argument("--opt-eps", default=1e-8, type=float)
    parser.add_argument("--momentum", default=0.9, type=float)
    parser.add_argument("--weight-decay", default=0.05, type=float)
    parser.add_argument("--clip-grad", default=None, type=float)
    # Schedule: linear-scaled peak LR, warm-up then cosine, exact under pruning.
    parser.add_argument("--lr", default=5e-4, type=float, help="peak LR per 512 images")
    parser.add_argument("--unscale-lr", action="store_true", help="do not scale --lr by batch")
    parser.add_argument("--warmup-lr", default=1e-6, type=float)
    parser.add_argument("--min-lr", default=1e-5, type=float)
    parser.add_argument("--warmup-epochs", default=5, type=int)
    # Augmentation and regularisation.
    parser.add_argument("--aa", default="rand-m9-mstd0.5-inc1", help="timm auto-augment or none")
    parser.add_argument("--color-jitter", default=0.3, type=float)
    parser.add_argument("--reprob", default=0.25, type=float, help="random erase probability")
    parser.add_argument("--smoothing", default=0.1, type=float, help="label smoothing")
    parser.add_argument("--mixup", default=0.0, type=float, help="mixup alpha (0: off)")
    parser.add_argument("--cutmix", default=0.0, type=float, help="cutmix alpha (0: off)")
    parser.add_argument("--eval-crop-ratio", default=0.875, type=float)
    # Data and run.
    parser.add_argument("--data-path", required=True, help="folder with train/ and val/")
    parser.add_argument("--data-set", default="IMNET", choices=["IMNET", "IMAGEFOLDER"])
    parser.add_argument("--subset", default=0, type=int, help="train on the first N images")
    parser.add_argument("--num_workers", default=8, type=int)
    parser.add_argument("--output_dir", default="./results/imagenet")
    parser.add_argument("--seed", default=0, type=int)
    parser.add_argument("--if_amp", action="store_true", help="mixed precision (CUDA)")
    parser.add_argument("--no_amp", action="store_false", dest="if_amp")
    parser.add_argument("--local-rank", default=0, type=int, help="ignored (torchrun sets env)")
    # Pruning: the reference scripts' names.
    parser.add_argument("--prune_type", default="BLS_SeTa", choices=PRUNE_TYPES)
    parser.add_argument("--prune_ratio", default=0.0, type=float)
    parser.add_argument("--delta", default=0.875, type=float)
    parser.add_argument("--num_group", default=10, type=int)
    parser.add_argument("--window_scale", default=0.6, type=float)
    parser.add_argument("--alpha", default=0.9, type=float, help="BLS EMA factor")
    return parser.parse_args(argv)


def setup_distributed() -> tuple[torch.device, int, int]:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local_rank)
            return torch.device("cuda", local_rank), dist.get_rank(), dist.get_world_size()
        return torch.device("cpu"), dist.get_rank(), dist.get_world_size()
    return torch.device("cuda" if torch.cuda.is_available() else "cpu"), 0, 1


def soft_target_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample cross entropy against soft (mixup/cutmix, smoothed) targets, shape (B,)."""
    return torch.sum(-target * torch.log_softmax(logits, dim=-1), dim=-1)


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[float, float]:
    model.eval()
    top1 = top5 = total = 0
    for images, targets in loader:
        images, targets = images.to(device), targets.to(device)
        ranked = model(images).topk(min(5, model_classes(model)), dim=1).indices
        top1 += int((ranked[:, 0] == targets).sum())
        top5 += int((ranked == targets[:, None]).any(dim=1).sum())
        total += targets.numel()
    return 100.0 * top1 / max(total, 1), 100.0 * top5 / max(total, 1)


def model_classes(model: nn.Module) -> int:
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return int(inner.num_classes)


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = parse_args(argv)
    device, rank, world_size = setup_distributed()
    log = print if rank == 0 else (lambda *a, **k: None)
    torch.manual_seed(args.seed + rank)  # a script owns its process: seed init and augmentation

    # 1. Data: an image folder with timm's transforms; the pruning handler wraps the train set.
    root = Path(args.data_path)
    if not (root / "train").is_dir() or not (root / "val").is_dir():
        raise SystemExit(f"error: --data-path: expected {root}/train/<class>/ and {root}/val/")
    train_tf = create_transform(
        args.input_size,
        is_training=True,
        color_jitter=args.color_jitter,
        auto_augment=None if args.aa.lower() == "none" else args.aa,
        re_prob=args.reprob,
        interpolation="bicubic",
    )
    eval_tf = create_transform(
        args.input_size,
        is_training=False,
        crop_pct=args.eval_crop_ratio,
        interpolation="bicubic",
    )
    train_set = ImageFolder(str(root / "train"), transform=train_tf)
    test_set = ImageFolder(str(root / "val"), transform=eval_tf)
    num_classes = len(train_set.classes)
    if args.subset:
        train_set = Subset(train_set, range(min(args.subset, len(train_set))))
    handler = bls.prune(train_set, args)  # reads prune_type, prune_ratio, epochs, alpha, ...
    use_bls = args.prune_type.startswith("BLS_")
    # Under a process group the workers come from a fork server and live across epochs: forking
    # a process that runs the group's threads can hang or crash it (docs/ddp_workers.md).
    workers: dict[str, Any] = {
        "num_workers": args.num_workers,
        "persistent_workers": args.num_workers > 0,
        "multiprocessing_context": "forkserver" if args.num_workers and world_size > 1 else None,
    }
    train_loader = DataLoader(
        handler,
        sampler=handler.sampler,
        batch_size=args.batch_size,
        pin_memory=device.type == "cuda",
        drop_last=True,
        **workers,
    )
    test_loader = DataLoader(test_set, batch_size=2 * args.batch_size, **workers)

    # 2. Model and optimizer from timm's factories; the epoch-aware schedule drives the LR.
    extra = {"img_size": args.input_size} if "vit" in args.model or "deit" in args.model else {}
    model: nn.Module = timm.create_model(
        args.model,
        pretrained=False,
        num_classes=num_classes,
        drop_rate=args.drop,
        drop_path_rate=args.drop_path,
        **extra,
    ).to(device)
    if world_size > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    peak_lr = args.lr if args.unscale_lr else args.lr * args.batch_size * world_size / 512
    optimizer = create_optimizer_v2(
        model,
        opt=args.opt,
        lr=peak_lr,
        weight_decay=args.weight_decay,
        momentum=args.momentum,
        eps=args.opt_eps,
    )
    full_steps = max(len(handler) // (args.batch_size * world_size), 1)
    warmup_share = min(max(args.warmup_epochs / args.epochs, 1e-3), 0.5)
    schedule = EpochOneCycleLR(
        optimizer,
        peak_lr,
        args.epochs,
        max(full_steps, 2),
        pct_start=warmup_share,
        div_factor=peak_lr / args.warmup_lr,
        final_div_factor=args.warmup_lr / args.min_lr,
        cycle_momentum=False,
    )
    mixup = None
    if args.mixup > 0 or args.cutmix > 0:
        mixup = Mixup(
            mixup_alpha=args.mixup,
            cutmix_alpha=args.cutmix,
            label_smoothing=args.smoothing,
            num_classes=num_classes,
        )
    amp = args.if_amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    log(
        f"{args.prune_type} with {args.model} on {len(handler)} images, {num_classes} classes, "
        f"optimizer {type(optimizer).__name__}, {world_size} process(es) on {device}"
    )

    # 3. Train with the three-line integration.
    history: list[dict[str, float]] = []
    train_time = 0.0
    for epoch in range(args.epochs):
        handler.sampler.set_epoch(epoch)
        model.train()
        start = time.perf_counter()
        for step, (images, targets) in enumerate(train_loader):
            lr = schedule.set_step(epoch, step, len(train_loader))
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            if mixup is not None:
                images, soft = mixup(images, targets)
            else:
                soft = nn.functional.one_hot(targets, num_classes).float()
                soft = soft * (1 - args.smoothing) + args.smoothing / num_classes
            with torch.autocast(device.type, enabled=amp):
                per_sample = soft_target_cross_entropy(model(images).float(), soft)
            # BLS scores from the ordinary mean loss; InfoBatch/SeTa need the per-sample vector.
            loss = handler.update(per_sample.mean() if use_bls else per_sample)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if args.clip_grad:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), args.clip_grad)
            scaler.step(optimizer)
            scaler.update()
        train_time += time.perf_counter() - start
        top1, top5 = evaluate(model, test_loader, device)
        kept = handler.history[-1]["kept"]
        history.append({"epoch": epoch, "kept": kept, "top1": top1, "top5": top5, "lr": lr})
        log(
            f"epoch {epoch}: kept {kept}/{len(handler)}, lr {lr:.2e}, top-1 {top1:.2f}%, "
            f"top-5 {top5:.2f}%"
        )

    # 4. Report.
    result = {
        "prune_type": args.prune_type,
        "model": args.model,
        "epochs": args.epochs,
        "dataset_size": len(handler),
        "saved_ratio": handler.saved_ratio,
        "final_acc": history[-1]["top1"],
        "best_acc": max(h["top1"] for h in history),
        "history": history,
        "train_time_s": train_time,
    }
    log(
        f"saved ratio {100 * handler.saved_ratio:.1f}%, final top-1 {history[-1]['top1']:.2f}%, "
        f"training time {train_time:.1f} s"
    )
    if rank == 0:
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(args.output_dir) / "log.json").write_text(json.dumps(result, indent=2))
    if world_size > 1:
        dist.barrier()  # leave together: a rank exiting while others still talk can abort
        dist.destroy_process_group()
    return result


if __name__ == "__main__":
    main()
