"""Data sets for the demo, the command line and the CIFAR example, without torchvision.

Three sources, each returning ``(train_set, test_set, DataInfo)``:

* ``digits``: scikit-learn's embedded ``load_digits`` (1,797 real 8x8 grey images of the
  digits 0-9), split 80/20 into train/test by a fixed permutation of ``seed``. No download.
* ``cifar10`` / ``cifar100``: the python-pickle format torchvision writes to disk
  (``cifar-10-batches-py/data_batch_1..5, test_batch, batches.meta`` and
  ``cifar-100-python/train, test, meta``), read with ``pickle`` and ``numpy``. Never
  downloaded: the folder must exist.
* ``imagefolder``: ``root/train/<class>/<image>`` and ``root/val/<class>/<image>`` (``test/``
  also accepted), the ImageNet layout; images are read lazily with Pillow.

Training-time augmentation (random crop with padding, horizontal flip) draws from a generator
owned by the data set, reseeded from the worker seed inside DataLoader workers; the global
random state is never touched.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

__all__ = [
    "DATA_SOURCES",
    "BadDataError",
    "DataInfo",
    "DataNotFoundError",
    "ImageFolderDataset",
    "ImageTensorDataset",
    "load_cifar",
    "load_data",
    "load_digits_split",
    "load_image_folder",
]

DATA_SOURCES = ("digits", "cifar10", "cifar100", "imagefolder")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".webp", ".tif", ".tiff")
CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class DataNotFoundError(FileNotFoundError):
    """The data set is not where it was looked for; the message lists the paths tried."""


class BadDataError(ValueError):
    """The data set is there but malformed: an unreadable image, an empty class folder, a
    validation class the training set lacks. The message names the file or folder."""


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about a data set.

    Attributes:
        name: the source (``digits``, ``cifar10``, ``cifar100``, ``imagefolder``).
        num_classes: number of classes.
        in_channels: image channels.
        image_size: side of the square images the data set yields.
        classes: class names, index ``i`` is label ``i``.
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    classes: tuple[str, ...]


class _Augmenter:
    """Random crop (with reflect padding) and horizontal flip from an owned generator."""

    def __init__(self, pad: int, flip: bool, seed: int) -> None:
        self.pad = pad
        self.flip = flip
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._worker_seed: int | None = None

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        worker = get_worker_info()
        if worker is not None and worker.seed != self._worker_seed:
            # Each worker holds a copy of this object; without reseeding, all copies would
            # produce the same augmentations. worker.seed differs per worker and per epoch.
            self._worker_seed = worker.seed
            self._rng = np.random.default_rng([self.seed, worker.seed])
        if self.pad:
            height, width = image.shape[-2:]
            padded = torch.nn.functional.pad(
                image.unsqueeze(0), (self.pad,) * 4, mode="reflect"
            ).squeeze(0)
            top, left = self._rng.integers(0, 2 * self.pad + 1, size=2)
            image = padded[..., top : top + height, left : left + width]
        if self.flip and self._rng.random() < 0.5:
            image = image.flip(-1)
        return image


class ImageTensorDataset(Dataset[tuple[torch.Tensor, int]]):
    """Images held in memory; yields ``(float image (C, H, W), int label)``, normalised.

    Args:
        images: ``uint8`` array ``(N, C, H, W)`` with values ``0 .. scale``.
        labels: integer labels ``(N,)``.
        mean: per-channel mean of the images scaled to ``[0, 1]``.
        std: per-channel standard deviation of the images scaled to ``[0, 1]``.
        scale: the value of a white pixel (255 for 8-bit images, 16 for digits).
        augment_pad: reflect padding of the random crop (0: no crop).
        augment_flip: random horizontal flip.
        seed: seed of the augmentation generator.
        classes: class names.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        scale: float = 255.0,
        augment_pad: int = 0,
        augment_flip: bool = False,
        seed: int = 0,
        classes: Sequence[str] = (),
    ) -> None:
        if images.ndim != 4 or len(images) != len(labels):
            raise ValueError(
                f"images: expected (N, C, H, W) with N == len(labels)={len(labels)}, got shape "
                f"{images.shape}"
            )
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = [int(label) for label in labels]
        self.targets = self.labels
        self.classes = list(classes)
        self.scale = float(scale)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        augment = augment_pad > 0 or augment_flip
        self.augment = _Augmenter(augment_pad, augment_flip, seed) if augment else None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = (self.images[index].float() / self.scale - self.mean) / self.std
        if self.augment is not None:
            image = self.augment(image)
        return image, self.labels[index]


def load_digits_split(
    seed: int = 0, test_fraction: float = 0.2
) -> tuple[ImageTensorDataset, ImageTensorDataset, DataInfo]:
    """scikit-learn's 8x8 digits, split train/test by a permutation drawn from ``seed``.

    Raises:
        ImportError: scikit-learn is not installed (``pip install "bls-prune[examples]"``).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(
            "the digits data set needs scikit-learn: pip install 'bls-prune[examples]'"
        ) from error
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.uint8).reshape(-1, 1, 8, 8)
    labels = np.asarray(bunch.target, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    num_test = round(test_fraction * len(labels))
    test_idx, train_idx = order[:num_test], order[num_test:]
    scaled = images.astype(np.float64) / 16.0
    stats = ([float(scaled.mean())], [float(scaled.std())])
    classes = [str(digit) for digit in range(10)]
    common: dict[str, Any] = {"scale": 16.0, "classes": classes}
    train = ImageTensorDataset(images[train_idx], labels[train_idx], *stats, **common)
    test = ImageTensorDataset(images[test_idx], labels[test_idx], *stats, **common)
    return train, test, DataInfo("digits", 10, 1, 8, tuple(classes))


def _unpickle(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            raw = pickle.load(handle, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError) as error:
        raise DataNotFoundError(
            f"{path} is not a CIFAR python pickle ({type(error).__name__}: {error}); re-extract "
            "the archive"
        ) from None
    if not isinstance(raw, dict):
        raise DataNotFoundError(f"{path} is not a CIFAR python pickle (holds {type(raw).__name__})")
    # Files written by Python 2 decode to str keys, files pickled with bytes keys keep them.
    return {key.decode() if isinstance(key, bytes) else key: value for key, value in raw.items()}


def load_cifar(
    root: str | Path, name: str = "cifar10", *, augment: bool = True, seed: int = 0
) -> tuple[ImageTensorDataset, ImageTensorDataset, DataInfo]:
    """CIFAR-10/100 from torchvision's on-disk python format (never downloaded).

    Args:
        root: the folder holding ``cifar-10-batches-py`` / ``cifar-100-python`` (as passed to
            torchvision's ``root``), or that folder itself.
        name: ``"cifar10"`` or ``"cifar100"``.
        augment: random crop (padding 4) and horizontal flip on the training set.
        seed: seed of the augmentation generator.

    Raises:
        DataNotFoundError: the files are missing; the message lists the paths looked at.
    """
    if name not in ("cifar10", "cifar100"):
        raise ValueError(f"name: expected 'cifar10' or 'cifar100', got {name!r}")
    if name == "cifar10":
        folder_name = "cifar-10-batches-py"
        train_files = [f"data_batch_{i}" for i in range(1, 6)]
        test_files, meta_file, label_key, names_key = (
            ["test_batch"],
            "batches.meta",
            "labels",
            "label_names",
        )
    else:
        folder_name = "cifar-100-python"
        train_files, test_files, meta_file = ["train"], ["test"], "meta"
        label_key, names_key = "fine_labels", "fine_label_names"
    root = Path(root).expanduser()
    candidates = [root / folder_name, root]
    folder = next(
        (c for c in candidates if all((c / f).is_file() for f in (*train_files, *test_files))),
        None,
    )
    if folder is None:
        wanted = ", ".join([*train_files, *test_files])
        raise DataNotFoundError(
            f"{name} data not found: looked for {wanted} in {candidates[0]} and in {root} "
            f"(torchvision's python format; extract {folder_name} there, nothing is downloaded)"
        )

    def read(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        batches = [_unpickle(folder / f) for f in files]
        data = np.concatenate([np.asarray(b["data"], dtype=np.uint8) for b in batches])
        labels = np.concatenate([np.asarray(b[label_key], dtype=np.int64) for b in batches])
        return data.reshape(-1, 3, 32, 32), labels

    train_images, train_labels = read(train_files)
    test_images, test_labels = read(test_files)
    num_classes = 10 if name == "cifar10" else 100
    classes: list[str] = [str(i) for i in range(num_classes)]
    if (folder / meta_file).is_file():
        classes = list(_unpickle(folder / meta_file).get(names_key, classes))
    pad, flip = (4, True) if augment else (0, False)
    train = ImageTensorDataset(
        train_images,
        train_labels,
        *CIFAR_STATS,
        augment_pad=pad,
        augment_flip=flip,
        seed=seed,
        classes=classes,
    )
    test = ImageTensorDataset(test_images, test_labels, *CIFAR_STATS, classes=classes)
    return train, test, DataInfo(name, num_classes, 3, 32, tuple(classes))


def _image_error(path: Path, error: BaseException) -> BadDataError:
    reason = str(error) or type(error).__name__
    return BadDataError(f"{path}: not a readable image ({reason}); remove or replace the file")


class ImageFolderDataset(Dataset[tuple[torch.Tensor, int]]):
    """``root/<class>/<image>`` read lazily with Pillow, resized to ``image_size`` squared.

    Args:
        root: the folder whose sub-folders are the classes (sorted by name: label order).
        image_size: side of the square output images.
        classes: class names to use (the training set's, so labels agree); default: the
            sub-folders of ``root``. A class without a folder under ``root`` has no samples.
        augment: random horizontal flip.
        seed: seed of the augmentation generator.

    Raises:
        DataNotFoundError: ``root`` holds no images at all.
        BadDataError: a class folder holds no images (it would add a class no sample has).
            An image Pillow cannot decode raises it when the image is read.
    """

    def __init__(
        self,
        root: str | Path,
        image_size: int = 32,
        *,
        classes: Sequence[str] | None = None,
        augment: bool = False,
        seed: int = 0,
    ) -> None:
        self.root = Path(root)
        found = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        self.classes = list(classes) if classes is not None else found
        self.samples: list[tuple[Path, int]] = []
        empty = []
        for label, name in enumerate(self.classes):
            folder = self.root / name
            if not folder.is_dir():
                continue
            files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                empty.append(name)
            self.samples.extend((path, label) for path in files)
        if not self.samples:
            raise DataNotFoundError(
                f"no images found under {self.root}/<class>/ (extensions "
                f"{', '.join(IMAGE_EXTENSIONS)})"
            )
        if empty:
            raise BadDataError(
                f"{self.root}: {len(empty)} class folder(s) hold no images: {_listed(empty)}; "
                "each would be a class without samples: remove them or add images"
            )
        self.targets = [label for _, label in self.samples]
        self.image_size = int(image_size)
        self.mean = torch.tensor(IMAGENET_STATS[0]).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STATS[1]).view(3, 1, 1)
        self.augment = _Augmenter(0, True, seed) if augment else None

    def __len__(self) -> int:
        return len(self.samples)

    def check_images(self) -> None:
        """Open every image's header and check it (Pillow's ``verify``), without decoding.

        Raises:
            BadDataError: naming how many images are unreadable and the first of them.
        """
        from PIL import Image

        bad: list[tuple[Path, BaseException]] = []
        for path, _ in self.samples:
            try:
                with Image.open(path) as opened:
                    opened.verify()
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
                bad.append((path, error))
        if bad:
            first = _image_error(*bad[0])
            more = f"{len(bad)} of {len(self.samples)} images are unreadable; the first: "
            raise BadDataError(more + str(first) if len(bad) > 1 else str(first))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        path, label = self.samples[index]
        try:
            with Image.open(path) as opened:
                rgb = opened.convert("RGB").resize(
                    (self.image_size, self.image_size), Image.Resampling.BILINEAR
                )
                pixels = np.asarray(rgb, dtype=np.uint8)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            raise _image_error(path, error) from None
        image = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float() / 255.0
        image = (image - self.mean) / self.std
        if self.augment is not None:
            image = self.augment(image)
        return image, label


def _listed(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def load_image_folder(
    root: str | Path,
    image_size: int = 32,
    *,
    augment: bool = True,
    seed: int = 0,
    check_images: bool = True,
) -> tuple[ImageFolderDataset, ImageFolderDataset, DataInfo]:
    """``root/train/<class>/*`` and ``root/val/<class>/*`` (or ``test/``), read with Pillow.

    The layout is checked before anything trains: every class folder must hold images, and
    every validation class must be a training class (labels come from the training folders).
    A training class without validation images is allowed, with a warning.

    Args:
        root: the folder holding ``train/`` and ``val/`` (or ``test/``).
        image_size: side of the square output images.
        augment: random horizontal flip on the training set.
        seed: seed of the augmentation generator.
        check_images: open and verify every image's header first (cheap next to training:
            no pixel is decoded), so an unreadable file stops the run before it starts rather
            than mid-epoch. Files that pass but fail to decode still raise when read.

    Raises:
        DataNotFoundError: a split folder is missing or holds no images.
        BadDataError: an empty class folder, a validation class the training set lacks, or
            (with ``check_images``) an unreadable image.
        ImportError: Pillow is not installed.
    """
    try:
        import PIL  # noqa: F401
    except ImportError as error:
        raise ImportError("image folders need Pillow: pip install 'bls-prune[examples]'") from error
    root = Path(root).expanduser()
    train_dir = root / "train"
    test_dir = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        raise DataNotFoundError(
            f"image folder not found: looked for {train_dir}/<class>/<image> and "
            f"{root / 'val'}/<class>/<image> (or {root / 'test'})"
        )
    train = ImageFolderDataset(train_dir, image_size, augment=augment, seed=seed)
    test_classes = sorted(p.name for p in test_dir.iterdir() if p.is_dir())
    unknown = [name for name in test_classes if name not in train.classes]
    if unknown:
        raise BadDataError(
            f"{test_dir}: {len(unknown)} class folder(s) are not classes of {train_dir}: "
            f"{_listed(unknown)}; labels come from the training folders, so their images "
            "could not be scored: rename or remove them"
        )
    test = ImageFolderDataset(test_dir, image_size, classes=train.classes)
    absent = [name for name in train.classes if name not in test_classes]
    if absent:
        warnings.warn(
            f"{test_dir}: no folder for {len(absent)} training class(es): {_listed(absent)}; "
            "the test accuracy covers the other classes only",
            UserWarning,
            stacklevel=2,
        )
    if check_images:
        train.check_images()
        test.check_images()
    info = DataInfo("imagefolder", len(train.classes), 3, image_size, tuple(train.classes))
    return train, test, info


def load_data(
    name: str,
    data_path: str | Path | None = None,
    *,
    image_size: int = 32,
    augment: bool = True,
    seed: int = 0,
    check_images: bool = True,
) -> tuple[Dataset[Any], Dataset[Any], DataInfo]:
    """Load one of :data:`DATA_SOURCES` as ``(train_set, test_set, info)``.

    Args:
        name: ``digits``, ``cifar10``, ``cifar100`` or ``imagefolder``.
        data_path: the data's folder (ignored for ``digits``, required otherwise).
        image_size: output size for image folders.
        augment: training-set augmentation (CIFAR: crop and flip; image folder: flip).
        seed: seed of the augmentation.
        check_images: image folders only: verify every image before returning (see
            :func:`load_image_folder`).
    """
    if name not in DATA_SOURCES:
        raise ValueError(f"data: unknown data set {name!r}; allowed: {', '.join(DATA_SOURCES)}")
    if name == "digits":
        return load_digits_split()  # a fixed split, so every run tests on the same images
    if data_path is None:
        raise ValueError(f"data_path: the {name} data set needs a folder (--data-path DIR)")
    if name in ("cifar10", "cifar100"):
        return load_cifar(data_path, name, augment=augment, seed=seed)
    return load_image_folder(
        data_path, image_size, augment=augment, seed=seed, check_images=check_images
    )
