"""The research examples: a few steps of each script, the wrappers, LARS/LAMB and DDP.

The CIFAR example runs in the main environment (no torchvision). The ImageNet example needs
timm and torchvision; its tests carry ``@pytest.mark.vision`` and run in the vision
environment (``pytest -m vision``), where a missing timm fails loudly rather than skipping.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from fake_data import write_cifar, write_image_folder

ROOT = Path(__file__).resolve().parents[1]
VISION_INSTALL = "pip install torch==2.14.1 torchvision==0.29.1 timm"


def _env() -> dict[str, str]:
    # One thread per process: the machine is shared and the models are tiny.
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def _load_example(name: str) -> ModuleType:
    path = ROOT / "examples" / name / "main.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}_main", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _check_accounting(result: dict[str, object], epochs: int) -> None:
    kept = result["kept"] if "kept" in result else [h["kept"] for h in result["history"]]  # type: ignore[union-attr]
    n = result["dataset_size"]
    assert len(kept) == epochs  # type: ignore[arg-type]
    expected = sum(n - k for k in kept) / (n * epochs)  # type: ignore[operator, union-attr]
    assert result["saved_ratio"] == pytest.approx(expected)
    assert 0.0 <= result["final_acc"] <= 100.0  # type: ignore[operator]


def test_cifar_script_with_the_readme_arguments(tmp_path: Path) -> None:
    """``scripts/cifar.sh BLS_SeTa 0.1 5 0.9`` plus flags that make it tiny."""
    root = write_cifar(tmp_path / "data", "cifar10", per_file=8)
    env = {**_env(), "DATA": "cifar10", "DATA_PATH": str(root)}
    save = tmp_path / "run"
    done = _run(
        [
            "bash",
            "scripts/cifar.sh",
            "BLS_SeTa",
            "0.1",
            "5",
            "0.9",
            "--num_epoch",
            "3",
            "--width",
            "4",
            "--batch-size",
            "8",
            "--workers",
            "0",
            "--save_path",
            str(save),
        ],
        env,
    )
    assert "saved ratio" in done.stdout and "final accuracy" in done.stdout
    result = json.loads((save / "res.json").read_text())
    assert (result["prune_type"], result["dataset_size"], result["epochs"]) == ("BLS_SeTa", 40, 3)
    assert result["hyperparameters"]["optimizer"] == "lars"
    assert result["hyperparameters"]["num_group"] == 5
    _check_accounting(result, 3)
    assert result["saved_ratio"] > 0  # SeTa's random pre-selection drops 10% per pruning epoch


@pytest.mark.parametrize(
    ("optimizer", "prune_type", "model"),
    [
        ("sgd", "InfoBatch", "resnet18"),
        ("adam", "Full", "resnet50"),
        ("lamb", "Random", "resnet18"),
    ],
)
def test_cifar_main_optimizers_and_models(
    tmp_path: Path, optimizer: str, prune_type: str, model: str, one_thread: None
) -> None:
    root = write_cifar(tmp_path / "data", "cifar100", per_file=8)
    example = _load_example("cifar")
    result = example.main(
        [
            "--data",
            "cifar100",
            "--data-path",
            str(root),
            "--model",
            model,
            "--width",
            "4",
            "--num_epoch",
            "2",
            "--batch-size",
            "4",
            "--workers",
            "0",
            "--optimizer",
            optimizer,
            "--prune_type",
            prune_type,
            "--ratio",
            "0.5",
            "--save_path",
            str(tmp_path / "out"),
            "--subset",
            "10",
        ]
    )
    assert result["dataset_size"] == 10
    _check_accounting(result, 2)
    if prune_type == "Random":
        # floor((1 - 0.5) * 10) = 5 samples, trimmed to 4 so no batch of 4 ends with one sample.
        assert result["kept"][0] == 4
    if prune_type == "Full":
        assert result["saved_ratio"] == 0.0


def test_cifar_example_under_torchrun_with_two_processes(tmp_path: Path) -> None:
    root = write_cifar(tmp_path / "data", "cifar10", per_file=8)
    save = tmp_path / "ddp"
    done = _run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "examples/cifar/main.py",
            "--data",
            "cifar10",
            "--data-path",
            str(root),
            "--width",
            "4",
            "--num_epoch",
            "2",
            "--batch-size",
            "4",
            "--workers",
            "0",
            "--prune_type",
            "BLS_InfoBatch",
            "--ratio",
            "0.5",
            "--save_path",
            str(save),
        ],
        _env(),
    )
    assert "2 process(es)" in done.stdout
    result = json.loads((save / "res.json").read_text())
    _check_accounting(result, 2)


def test_lars_and_lamb_scale_steps_by_the_trust_ratio() -> None:
    sys.path.insert(0, str(ROOT / "examples" / "cifar"))
    try:
        from optim import Lamb, Lars
    finally:
        sys.path.pop(0)
    weight = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))  # norm 5
    weight.grad = torch.tensor([[0.6, 0.8]])  # norm 1
    Lars([weight], lr=1.0, momentum=0.0, weight_decay=0.0, eta=0.1).step()
    # update = grad * eta * ||w|| / ||grad|| = grad * 0.5
    assert torch.allclose(weight.detach(), torch.tensor([[2.7, 3.6]]))
    weight = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))
    weight.grad = torch.tensor([[1.0, 1.0]])
    Lamb([weight], lr=0.1, weight_decay=0.0).step()
    # First Adam step is sign(grad) (norm sqrt 2); trust ratio 5 / sqrt(2) scales it to norm 5.
    step = torch.tensor([[3.0, 4.0]]) - weight.detach()
    assert step.norm().item() == pytest.approx(0.1 * 5.0, rel=1e-5)


def _require_vision() -> None:
    try:
        import timm  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError as error:
        pytest.fail(
            f"the ImageNet example tests need timm and torchvision ({error}); run them in the "
            f"vision environment: {VISION_INSTALL} && pip install -e '.[dev]'"
        )


@pytest.mark.vision
def test_imagenet_script_with_the_readme_arguments(tmp_path: Path) -> None:
    """``scripts/imagenet.sh BLS_InfoBatch mobilenetv3_small_050`` on a tiny image folder."""
    _require_vision()
    root = write_image_folder(tmp_path / "images", classes=3, per_class=8, size=24)
    out = tmp_path / "run"
    done = _run(
        [
            "bash",
            "scripts/imagenet.sh",
            "BLS_InfoBatch",
            "mobilenetv3_small_050",
            "0.5",
            "0.6",
            "5",
            "--epochs",
            "4",
            "--batch-size",
            "8",
            "--input-size",
            "32",
            "--num_workers",
            "0",
            "--output_dir",
            str(out),
        ],
        {**_env(), "DATA_PATH": str(root)},
    )
    assert "optimizer AdamW" in done.stdout  # built by timm's optimizer factory
    result = json.loads((out / "log.json").read_text())
    assert (result["model"], result["dataset_size"]) == ("mobilenetv3_small_050", 24)
    _check_accounting(result, 4)
    assert result["saved_ratio"] > 0


@pytest.mark.vision
def test_imagenet_main_vit_with_mixup_and_timm_sgd(tmp_path: Path) -> None:
    _require_vision()
    root = write_image_folder(tmp_path / "images", classes=2, per_class=6, size=24)
    out = tmp_path / "vit"
    done = _run(
        [
            sys.executable,
            "examples/imagenet/main.py",
            "--data-path",
            str(root),
            "--model",
            "vit_tiny_patch16_224",
            "--input-size",
            "32",
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--num_workers",
            "0",
            "--prune_type",
            "SeTa",
            "--prune_ratio",
            "0.3",
            "--num_group",
            "2",
            "--window_scale",
            "0.5",
            "--mixup",
            "0.8",
            "--cutmix",
            "1.0",
            "--opt",
            "sgd",
            "--aa",
            "none",
            "--output_dir",
            str(out),
        ],
        _env(),
    )
    assert "optimizer SGD" in done.stdout
    result = json.loads((out / "log.json").read_text())
    _check_accounting(result, 2)
