"""Tiny data sets written in the exact on-disk formats the loaders read (no download).

* CIFAR: torchvision's python format, ``cifar-10-batches-py/data_batch_1..5, test_batch,
  batches.meta`` and ``cifar-100-python/train, test, meta``: pickled dicts with a ``data``
  array ``(n, 3072)`` of ``uint8`` (channel-major rows: 1024 red, 1024 green, 1024 blue) and
  a label list.
* image folder: ``root/train/<class>/*.png|jpg`` and ``root/val/<class>/*``.

Images of class ``c`` are mostly of one colour per class, so a model can learn them quickly.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


def _images(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``(n, 3, size, size)`` uint8 images whose mean colour depends on the label."""
    base = np.stack([(labels * 37) % 256, (labels * 91) % 256, (labels * 53) % 256], axis=1)
    noise = rng.integers(-20, 21, size=(len(labels), 3, size, size))
    return np.clip(base[:, :, None, None] + noise, 0, 255).astype(np.uint8)


def write_cifar(root: Path, name: str = "cifar10", per_file: int = 8, seed: int = 0) -> Path:
    """Write a CIFAR-10 (5 train batches) or CIFAR-100 data set of ``per_file`` images a file.

    Returns:
        The folder holding ``cifar-10-batches-py`` / ``cifar-100-python`` (torchvision's root).
    """
    rng = np.random.default_rng(seed)
    num_classes = 10 if name == "cifar10" else 100
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        files = {f"data_batch_{i}": per_file for i in range(1, 6)} | {"test_batch": per_file}
        label_key, meta_name = "labels", "batches.meta"
        meta = {"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": per_file}
    else:
        folder = root / "cifar-100-python"
        files = {"train": 2 * per_file, "test": per_file}
        label_key, meta_name = "fine_labels", "meta"
        meta = {
            "fine_label_names": [f"fine{i}" for i in range(100)],
            "coarse_label_names": [f"coarse{i}" for i in range(20)],
        }
    folder.mkdir(parents=True, exist_ok=True)
    for file_name, count in files.items():
        labels = rng.integers(0, min(num_classes, 4), size=count)
        images = _images(labels, 32, rng)
        batch = {
            "batch_label": f"{file_name} of a tiny test set",
            label_key: labels.tolist(),
            "data": images.reshape(count, -1),
            "filenames": [f"img_{i}.png" for i in range(count)],
        }
        if name == "cifar100":
            batch["coarse_labels"] = (labels // 5).tolist()
        with (folder / file_name).open("wb") as handle:
            pickle.dump(batch, handle, protocol=2)
    with (folder / meta_name).open("wb") as handle:
        pickle.dump(meta, handle, protocol=2)
    return root


def write_image_folder(
    root: Path, classes: int = 3, per_class: int = 6, size: int = 20, seed: int = 0
) -> Path:
    """Write ``root/train/<class>/`` and ``root/val/<class>/`` PNG and JPEG images."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", per_class), ("val", max(2, per_class // 2))):
        for label in range(classes):
            folder = root / split / f"class_{label}"
            folder.mkdir(parents=True, exist_ok=True)
            images = _images(np.full(count, label), size, rng)
            for number, image in enumerate(images):
                suffix = "png" if number % 2 else "jpg"
                # Different sizes per image, as in a real folder: the loader resizes.
                picture = Image.fromarray(image.transpose(1, 2, 0)).resize(
                    (size + number, size + 2 * number)
                )
                picture.save(folder / f"{number:03d}.{suffix}")
    return root
