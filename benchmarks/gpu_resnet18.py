"""GPU check: ResNet-18 on random 32x32 data, with and without pruning, no per-step sync.

Trains a CIFAR-style ResNet-18 (written here in pure torch: 3x3 stem, no max-pool, four
stages of two basic blocks) on random, teacher-labelled 32x32 images held on the device, three
ways: ``bls.Full`` (no pruning), ``bls.InfoBatch(prune_ratio=0.5)`` with per-sample losses and
``BLS(InfoBatch(prune_ratio=0.5))`` with the mean batch loss. It reports steps/s and samples/s,
the ideal saving ``1 - sum(kept) / (N * E)``, the measured saving ``1 - t / t_full`` and their
ratio, and whether ``update()`` synchronised with the host: every ``update()`` call runs
under ``torch.cuda.set_sync_debug_mode("error")``, which raises on any synchronising CUDA call.
Only the very first call of a run may legitimately copy the score table to the GPU; it is
reported separately.

Sized for well under 5 minutes on one H200: ``python benchmarks/gpu_resnet18.py``.
Without CUDA it runs on the CPU (``--tiny`` makes that a seconds-long smoke run, used by
``tests/test_benchmarks_smoke.py``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _common import IndexDataset, emit, print_machine
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from bls import BLS, Full, InfoBatch


class BasicBlock(nn.Module):
    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inputs, outputs, 1, stride, bias=False), nn.BatchNorm2d(outputs)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """CIFAR ResNet-18 (He et al. 2016, the 3x3-stem variant); ``width`` scales channels."""

    def __init__(self, classes: int = 10, width: int = 64) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        blocks: list[nn.Module] = []
        channels = width
        for stage, stride in enumerate((1, 2, 2, 2)):
            out = width * 2**stage
            blocks += [BasicBlock(channels, out, stride), BasicBlock(out, out, 1)]
            channels = out
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def memory_format(device: torch.device) -> torch.memory_format:
    """``channels_last`` on CUDA (faster convolutions); the default layout on the CPU.

    On the CPU, ``channels_last`` selects a oneDNN convolution that aborted the process (heap
    corruption in backward) on an AMD Zen 1 CPU with one thread, in torch 2.13 and 2.14; the
    CPU run is only a smoke test, so it keeps the layout every CPU handles.
    """
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def checked_update(handler: Any, loss: torch.Tensor, cuda: bool) -> tuple[torch.Tensor, bool]:
    """``handler.update(loss)`` under sync-debug "error" mode; returns (loss, synchronised)."""
    if not cuda:
        return handler.update(loss), False
    # The update count tells whether the refused call stopped before changing any state (the
    # first call's copy of the score table to the GPU is refused before it is assigned).
    before = handler._run.updates
    torch.cuda.set_sync_debug_mode("error")
    try:
        return handler.update(loss), False
    except RuntimeError as error:
        if "synchroniz" not in str(error).lower() or handler._run.updates != before:
            raise
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return handler.update(loss), True  # the call did not complete: make it without the check


def train(
    kind: str, images: torch.Tensor, labels: torch.Tensor, args: argparse.Namespace
) -> dict[str, Any]:
    device = images.device
    cuda = device.type == "cuda"
    n = images.shape[0]
    torch.manual_seed(0)  # a benchmark may seed globally; the library never does
    model = ResNet18(width=args.width).to(device, memory_format=memory_format(device))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    if kind == "Full":
        handler: Any = Full(IndexDataset(n), num_epochs=args.epochs)
    else:
        handler = InfoBatch(IndexDataset(n), num_epochs=args.epochs, prune_ratio=0.5)
        if kind == "BLS+InfoBatch":
            handler = BLS(handler, alpha=0.9).proxy()
    per_sample = kind == "InfoBatch"
    loader = DataLoader(handler, sampler=handler.sampler, batch_size=args.batch, num_workers=0)
    steps, synced = 0, []
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.epochs):
        for index in loader:
            index = index.to(device, non_blocking=True)
            x, y = images[index], labels[index]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                logits = model(x)
            losses = F.cross_entropy(logits.float(), y, reduction="none")
            loss, was_synced = checked_update(
                handler, losses if per_sample else losses.mean(), cuda
            )
            if was_synced:
                synced.append(steps)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    kept = [r["kept"] for r in handler.history]
    return {
        "kind": kind,
        "seconds": seconds,
        "steps": steps,
        "steps_per_s": steps / seconds,
        "samples_per_s": sum(kept) / seconds,
        "kept": kept,
        "ideal_saving": 1.0 - sum(kept) / (n * args.epochs),
        "synced_steps": synced,
        "synced_after_first": [s for s in synced if s > 0],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--width", type=int, default=64, help="channels of the first stage")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--tiny", action="store_true", help="seconds-long CPU smoke run")
    args = parser.parse_args(argv)
    if args.tiny:
        args.n, args.epochs, args.batch, args.width, args.size = 64, 3, 32, 4, 8
        torch.set_num_threads(1)
    info = print_machine()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(args.n, 3, args.size, args.size, generator=generator)
    teacher = torch.randn(3 * args.size**2, 10, generator=generator)
    labels = images.flatten(1) @ teacher + 20.0 * torch.randn(args.n, 10, generator=generator)
    images = images.to(device).contiguous(memory_format=memory_format(device))
    labels = labels.argmax(1).to(device)
    if device.type == "cuda":  # warm-up: cuDNN autotuning and allocator, untimed
        warm = argparse.Namespace(**{**vars(args), "epochs": 1})
        train("Full", images[: 8 * args.batch], labels[: 8 * args.batch], warm)
    rows = []
    for kind in ("Full", "InfoBatch", "BLS+InfoBatch"):
        rows.append(train(kind, images, labels, args))
    full = rows[0]["seconds"]
    for r in rows:
        r["measured_saving"] = 1.0 - r["seconds"] / full
        r["ratio"] = r["measured_saving"] / r["ideal_saving"] if r["ideal_saving"] > 0 else None
        ratio = "n/a" if r["ratio"] is None else f"{r['ratio']:.3f}"
        print(
            f"{args.device} ResNet-18(width {args.width}, {args.size}x{args.size}) {r['kind']:13s} "
            f"N={args.n:,d} "
            f"E={args.epochs} batch {args.batch}: {r['seconds']:.2f} s, "
            f"{r['steps_per_s']:.1f} steps/s, {r['samples_per_s']:,.0f} samples/s, ideal saving "
            f"{r['ideal_saving']:.4f}, measured {r['measured_saving']:.4f}, ratio {ratio}; "
            f"update() synchronised on {len(r['synced_after_first'])} steps after the first"
            + (" (first call: one-time copy of the score table)" if 0 in r["synced_steps"] else "")
            + ("" if args.device.startswith("cuda") else " (CPU: sync check not applicable)")
        )
    layout = str(memory_format(device))
    result = {"machine": info, "config": vars(args), "memory_format": layout, "runs": rows}
    emit(result)
    return result


if __name__ == "__main__":
    main()
