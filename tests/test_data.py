"""The torchvision-free loaders: digits, CIFAR pickles and image folders."""

from __future__ import annotations

import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_data import write_cifar, write_image_folder
from torch.utils.data import DataLoader

from bls.app.data import (
    CIFAR_STATS,
    BadDataError,
    DataNotFoundError,
    load_cifar,
    load_data,
    load_digits_split,
    load_image_folder,
)


def test_digits_split_is_fixed_and_disjoint() -> None:
    from sklearn.datasets import load_digits

    train, test, info = load_digits_split()
    again, _, _ = load_digits_split()
    assert (len(train), len(test)) == (1438, 359)
    assert info.num_classes == 10 and info.in_channels == 1 and info.image_size == 8
    assert torch.equal(train.images, again.images)
    # Every original image lands in exactly one split.
    originals = {bytes(row) for row in np.asarray(load_digits().images, dtype=np.uint8)}
    split_rows = [bytes(img.numpy().reshape(8, 8)) for img in (*train.images, *test.images)]
    assert set(split_rows) == originals
    image, label = train[0]
    assert image.shape == (1, 8, 8) and image.dtype == torch.float32 and 0 <= label < 10


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_pickles_round_trip(tmp_path: Path, name: str) -> None:
    root = write_cifar(tmp_path, name, per_file=6)
    train, test, info = load_cifar(root, name, augment=False)
    assert (len(train), len(test)) == ((30, 6) if name == "cifar10" else (12, 6))
    assert info.num_classes == (10 if name == "cifar10" else 100)
    folder = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    with (folder / ("data_batch_1" if name == "cifar10" else "train")).open("rb") as handle:
        raw = pickle.load(handle, encoding="latin1")
    first = raw["data"][0].reshape(3, 32, 32).astype(np.float32) / 255.0
    mean, std = (np.asarray(s, dtype=np.float32)[:, None, None] for s in CIFAR_STATS)
    image, label = train[0]
    np.testing.assert_allclose(image.numpy(), (first - mean) / std, rtol=1e-5, atol=1e-5)
    assert label == raw["labels" if name == "cifar10" else "fine_labels"][0]
    assert info.classes[0] == ("class0" if name == "cifar10" else "fine0")
    # The folder itself is accepted as well as torchvision's root.
    assert len(load_cifar(folder, name)[0]) == len(train)


def test_cifar_augmentation_is_a_crop_and_flip_and_leaves_global_rng(tmp_path: Path) -> None:
    root = write_cifar(tmp_path, "cifar10", per_file=4)
    plain, _, _ = load_cifar(root, augment=False)
    augmented, _, _ = load_cifar(root, augment=True, seed=1)
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    python_state, numpy_state, torch_state = (
        random.getstate(),
        np.random.get_state()[1].copy(),
        torch.get_rng_state(),
    )
    views = [augmented[0][0] for _ in range(8)]
    assert python_state == random.getstate()
    assert np.array_equal(numpy_state, np.random.get_state()[1])
    assert torch.equal(torch_state, torch.get_rng_state())
    assert any(not torch.equal(v, views[0]) for v in views)
    # Every augmented view is a shifted (possibly mirrored) window of the padded original.
    padded = torch.nn.functional.pad(plain[0][0].unsqueeze(0), (4,) * 4, mode="reflect")[0]
    for view in views:
        windows = [
            padded[:, top : top + 32, left : left + 32] for top in range(9) for left in range(9)
        ]
        assert any(torch.equal(view, w) or torch.equal(view, w.flip(-1)) for w in windows)


def test_image_folder_reads_pngs_and_jpegs(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path, classes=3, per_class=4)
    train, test, info = load_image_folder(root, image_size=16, augment=False)
    assert (len(train), len(test), info.num_classes) == (12, 6, 3)
    assert info.classes == ("class_0", "class_1", "class_2")
    images, labels = next(iter(DataLoader(train, batch_size=12)))
    assert images.shape == (12, 3, 16, 16)
    assert labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    # Classes differ in mean colour; the loader keeps that apart.
    means = [images[labels == c].mean().item() for c in range(3)]
    assert len({round(m, 2) for m in means}) == 3


def test_missing_data_names_the_paths(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match=r"cifar-10-batches-py"):
        load_cifar(tmp_path / "nowhere")
    with pytest.raises(DataNotFoundError, match=r"val"):
        load_image_folder(tmp_path)
    (tmp_path / "train" / "a").mkdir(parents=True)
    (tmp_path / "val" / "a").mkdir(parents=True)
    with pytest.raises(DataNotFoundError, match="no images found"):
        load_image_folder(tmp_path)
    corrupt = write_cifar(tmp_path / "corrupt", "cifar10", per_file=2)
    (corrupt / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(DataNotFoundError, match="data_batch_3 is not a CIFAR python pickle"):
        load_cifar(corrupt)
    with pytest.raises(ValueError, match="data: unknown data set 'mnist'"):
        load_data("mnist")
    with pytest.raises(ValueError, match="data_path"):
        load_data("cifar10")


def _truncate(path: Path, drop: int | None = None) -> None:
    """Cut the file's end: its second half, or its last ``drop`` bytes."""
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) - (drop or len(raw) // 2)])


def test_unreadable_images_are_found_before_training(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path, classes=2, per_class=4)
    (root / "train" / "class_1" / "002.jpg").write_bytes(b"not an image at all")
    _truncate(root / "val" / "class_0" / "001.png")
    with pytest.raises(BadDataError) as raised:
        load_image_folder(root, image_size=8)
    message = str(raised.value)
    assert "\n" not in message and "002.jpg: not a readable image" in message
    (root / "train" / "class_1" / "002.jpg").unlink()
    with pytest.raises(BadDataError, match=r"001\.png: not a readable image"):
        load_image_folder(root, image_size=8)
    train, test, _ = load_image_folder(root, image_size=8, check_images=False)
    assert len(train) == 7 and len(test) == 4
    with pytest.raises(BadDataError, match=r"val/class_0/001\.png: not a readable image"):
        test[1]  # the same file, read without the check first


def test_several_unreadable_images_are_counted(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path, classes=2, per_class=4)
    for name in ("000.jpg", "003.png"):
        (root / "train" / "class_0" / name).write_bytes(b"")
    with pytest.raises(BadDataError, match=r"^2 of 8 images are unreadable; the first: .*000\.jpg"):
        load_image_folder(root, image_size=8)


def test_a_truncated_jpeg_fails_when_read_and_names_the_file(tmp_path: Path) -> None:
    # Its header is intact, so the cheap check passes; decoding it fails, with the file named.
    root = write_image_folder(tmp_path, classes=2, per_class=4)
    _truncate(root / "train" / "class_0" / "002.jpg", drop=40)  # part of the scan data
    train, _, _ = load_image_folder(root, image_size=8, augment=False)
    assert train[1][1] == 0
    with pytest.raises(BadDataError, match=r"class_0/002\.jpg: not a readable image \(image file"):
        train[2]


def test_class_folders_must_agree_between_train_and_val(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path, classes=3, per_class=4)
    (root / "val" / "class_0").rename(root / "val" / "class_9")
    with pytest.raises(
        BadDataError, match=r"val: 1 class folder\(s\) are not classes of .*'class_9'"
    ):
        load_image_folder(root, image_size=8)
    # A training class without validation images is allowed, and said.
    (root / "val" / "class_9").rename(root / "val" / "unused")
    shutil.rmtree(root / "val" / "unused")
    with pytest.warns(UserWarning, match=r"no folder for 1 training class\(es\): 'class_0'"):
        _, test, info = load_image_folder(root, image_size=8)
    assert info.num_classes == 3 and sorted(set(test.targets)) == [1, 2]


@pytest.mark.parametrize("split", ["train", "val"])
def test_an_empty_class_folder_is_an_error(tmp_path: Path, split: str) -> None:
    root = write_image_folder(tmp_path, classes=2, per_class=4)
    (root / "train" / "class_5").mkdir()
    if split == "val":
        (root / "train" / "class_5" / "a.png").write_bytes(
            (root / "train" / "class_0" / "001.png").read_bytes()
        )
        (root / "val" / "class_5").mkdir()
    (root / split / "class_5" / "notes.txt").write_text("not an image")
    with pytest.raises(
        BadDataError, match=rf"{split}: 1 class folder\(s\) hold no images: 'class_5'"
    ):
        load_image_folder(root, image_size=8)
