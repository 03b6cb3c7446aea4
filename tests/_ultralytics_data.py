"""A tiny YOLO-format detection data set and an offline guard for the Ultralytics tests.

``write_shapes(root)`` draws filled rectangles of two colours (class 0 red, class 1 green) on
noisy 64x64 images and writes them in Ultralytics' layout: ``images/{train,val}/*.png``,
``labels/{train,val}/*.txt`` (one ``class cx cy w h`` line per box, normalised to ``[0, 1]``)
and ``data.yaml``. Seeded, so every call writes the same files.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS = ((220, 40, 40), (40, 200, 60))  # class 0, class 1


def write_shapes(root: Path, train: int = 32, val: int = 8, size: int = 64, seed: int = 0) -> Path:
    """Write the data set under ``root``; returns the path of its ``data.yaml``."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        images, labels = root / "images" / split, root / "labels" / split
        images.mkdir(parents=True, exist_ok=True)
        labels.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            lines = []
            for _ in range(int(rng.integers(1, 3))):
                cls = int(rng.integers(0, 2))
                w, h = (int(v) for v in rng.integers(size // 6, size // 2, 2))
                x0, y0 = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
                pixels[y0 : y0 + h, x0 : x0 + w] = COLOURS[cls]
                cx, cy = (x0 + w / 2) / size, (y0 + h / 2) / size
                lines.append(f"{cls} {cx:.6f} {cy:.6f} {w / size:.6f} {h / size:.6f}")
            Image.fromarray(pixels).save(images / f"{split}_{i:03d}.png")
            (labels / f"{split}_{i:03d}.txt").write_text("\n".join(lines) + "\n")
    data = root / "data.yaml"
    data.write_text(
        f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: red\n  1: green\n"
    )
    return data


@contextmanager
def no_network() -> Iterator[list[str]]:
    """Record, and refuse, every attempt to resolve a host name or open a connection."""
    attempts: list[str] = []
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        attempts.append(f"getaddrinfo({host!r})")
        raise OSError(f"network access refused in this test: getaddrinfo({host!r})")

    def connect(self, address):  # type: ignore[no-untyped-def]
        if self.family == socket.AF_UNIX:
            return real_connect(self, address)
        attempts.append(f"connect({address!r})")
        raise OSError(f"network access refused in this test: connect({address!r})")

    socket.getaddrinfo, socket.socket.connect = getaddrinfo, connect  # type: ignore[method-assign]
    try:
        yield attempts
    finally:
        socket.getaddrinfo, socket.socket.connect = real_getaddrinfo, real_connect  # type: ignore[method-assign]
