"""A small shapes detection data set in COCO layout, and a loader for it (json + PIL only).

Layout written by :func:`write_shapes`::

    root/
      images/train_000000.png ... val_000000.png ...
      annotations/instances_train.json
      annotations/instances_val.json

Each annotation file is COCO's ``instances_*.json``: ``images`` (``id``, ``file_name``,
``width``, ``height``), ``annotations`` (``id``, ``image_id``, ``category_id``, ``bbox`` as
``[x, y, w, h]`` in pixels, ``area``, ``iscrowd``) and ``categories`` (``id``, ``name``,
``supercategory``); category ids start at 1, as in COCO, so they serve as torchvision labels
directly (0 is the background). ``area`` is the shape's geometric area (a COCO file holds the
mask's area; these shapes have no masks). The generator is deterministic: the same arguments
give the same files.

:class:`CocoDetection` reads any file of that layout back (no pycocotools needed) and returns
``(image, target)`` items as torchvision's detection models take them: ``image`` a float
tensor ``(3, H, W)`` in ``[0, 1]``, ``target`` a dict with ``boxes`` (``(n, 4)`` float32,
``x1, y1, x2, y2``), ``labels`` (``(n,)`` int64), ``image_id``, ``area`` and ``iscrowd``.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

CATEGORIES = ("rectangle", "ellipse", "triangle")
#: Image sizes ``(width, height)``: three aspect ratios, so aspect-ratio grouping has work.
SIZES = ((128, 96), (96, 128), (112, 112))
SPLITS = ("train", "val")


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """IoU of two ``(x1, y1, x2, y2)`` boxes."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _draw_image(rng: random.Random, max_objects: int) -> tuple[Image.Image, list[dict[str, Any]]]:
    """One image with 1..max_objects shapes that overlap little; annotations without ids."""
    width, height = rng.choice(SIZES)
    background = np.full((height, width, 3), rng.randint(20, 90), dtype=np.uint8)
    noise = np.random.default_rng(rng.getrandbits(32)).integers(0, 25, background.shape)
    image = Image.fromarray((background + noise).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    placed: list[tuple[float, float, float, float]] = []
    annotations = []
    for _ in range(rng.randint(1, max_objects)):
        for _attempt in range(20):  # rejection sampling keeps objects mostly separate
            w, h = rng.randint(18, 48), rng.randint(18, 48)
            x, y = rng.randint(0, width - w), rng.randint(0, height - h)
            box = (float(x), float(y), float(x + w), float(y + h))
            if all(_iou(box, other) < 0.2 for other in placed):
                break
        else:
            continue
        placed.append(box)
        category = rng.randrange(len(CATEGORIES))
        color = tuple(rng.randint(130, 255) for _ in range(3))
        if CATEGORIES[category] == "rectangle":
            draw.rectangle((x, y, x + w - 1, y + h - 1), fill=color)
            area = float(w * h)
        elif CATEGORIES[category] == "ellipse":
            draw.ellipse((x, y, x + w - 1, y + h - 1), fill=color)
            area = math.pi * w * h / 4
        else:  # a triangle pointing up, its base the box's bottom edge
            draw.polygon([(x + w / 2, y), (x + w - 1, y + h - 1), (x, y + h - 1)], fill=color)
            area = w * h / 2
        annotations.append(
            {
                "category_id": category + 1,
                "bbox": [float(x), float(y), float(w), float(h)],
                "area": round(area, 2),
                "iscrowd": 0,
            }
        )
    return image, annotations


def write_shapes(
    root: str | Path, num_train: int, num_val: int, *, seed: int = 0, max_objects: int = 3
) -> Path:
    """Generate the data set under ``root`` (created); returns ``root`` as a ``Path``.

    Files already there are overwritten. The train and val splits draw from separate seeded
    generators, so ``num_val`` does not change the training images.
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    categories = [
        {"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CATEGORIES)
    ]
    for split_number, (split, count) in enumerate(zip(SPLITS, (num_train, num_val), strict=True)):
        rng = random.Random(f"{seed}-{split_number}")
        images, annotations = [], []
        for image_id in range(1, count + 1):
            image, objects = _draw_image(rng, max_objects)
            file_name = f"{split}_{image_id:06d}.png"
            image.save(root / "images" / file_name)
            images.append(
                {
                    "id": image_id,
                    "file_name": file_name,
                    "width": image.width,
                    "height": image.height,
                }
            )
            for annotation in objects:
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, **annotation})
        coco = {
            "info": {
                "description": "bls-prune shapes",
                "seed": seed,
                "max_objects": max_objects,
                "num_images": count,
            },
            "images": images,
            "annotations": annotations,
            "categories": categories,
        }
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    return root


def matches(root: str | Path, num_train: int, num_val: int, seed: int, max_objects: int) -> bool:
    """Whether ``root`` holds the data set these arguments generate (read from its ``info``)."""
    for split, count in zip(SPLITS, (num_train, num_val), strict=True):
        path = Path(root) / "annotations" / f"instances_{split}.json"
        if not path.is_file():
            return False
        info = json.loads(path.read_text()).get("info", {})
        wanted = {"seed": seed, "max_objects": max_objects, "num_images": count}
        if any(info.get(key) != value for key, value in wanted.items()):
            return False
    return True


class CocoDetection(Dataset[tuple[torch.Tensor, dict[str, torch.Tensor]]]):
    """A COCO-layout split: ``root/images/*``, ``root/annotations/instances_<split>.json``.

    Items are ``(image, target)`` in torchvision's detection format (see the module
    docstring); crowd annotations (``iscrowd=1``) are kept in the target with their flag.
    Image order is the order of the file's ``images`` list.
    """

    def __init__(self, root: str | Path, split: str) -> None:
        self.root = Path(root)
        coco = json.loads((self.root / "annotations" / f"instances_{split}.json").read_text())
        self.images: list[dict[str, Any]] = coco["images"]
        self.categories: dict[int, str] = {c["id"]: c["name"] for c in coco["categories"]}
        self.annotations: dict[int, list[dict[str, Any]]] = {
            image["id"]: [] for image in self.images
        }
        for annotation in coco["annotations"]:
            self.annotations[annotation["image_id"]].append(annotation)

    def __len__(self) -> int:
        return len(self.images)

    def aspect_ratios(self) -> list[float]:
        """Width / height of every image, read from the annotation file (no image is opened)."""
        return [image["width"] / image["height"] for image in self.images]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        info = self.images[index]
        with Image.open(self.root / "images" / info["file_name"]) as file:
            pixels = np.asarray(file.convert("RGB"), dtype=np.float32) / 255.0
        image = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
        objects = self.annotations[info["id"]]
        boxes = torch.tensor([a["bbox"] for a in objects], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # [x, y, w, h] -> [x1, y1, x2, y2]
        target = {
            "boxes": boxes,
            "labels": torch.tensor([a["category_id"] for a in objects], dtype=torch.int64),
            "image_id": torch.tensor(info["id"]),
            "area": torch.tensor([a["area"] for a in objects], dtype=torch.float32),
            "iscrowd": torch.tensor([a["iscrowd"] for a in objects], dtype=torch.int64),
        }
        return image, target
