"""bls.integrations.ultralytics: a YOLO detector trained on a pruned, generated data set.

Every run trains YOLOv8n from its YAML (no weights are downloaded) on 32 generated 64x64
images, batch 8, on the CPU without workers, with the network refused: any attempt to resolve
a host or connect fails the test. Each test takes 5-20 s.
"""

from __future__ import annotations

import inspect
import os
import tempfile
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

# Before Ultralytics is imported: no online checks, and its settings file in a scratch folder.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="bls-ultralytics-"))
ultralytics = pytest.importorskip("ultralytics")

from _ultralytics_data import no_network, write_shapes  # noqa: E402
from ultralytics.models.yolo.detect import DetectionTrainer  # noqa: E402

from bls import BLS, InfoBatch  # noqa: E402
from bls.integrations.ultralytics import (  # noqa: E402
    TRAINER_API,
    PruningDetectionTrainer,
    state_path,
)

pytestmark = pytest.mark.vision

ALPHA = 0.7
TRAIN_IMAGES = 32
BATCH = 8


class Interrupt(Exception):
    """Raised by a callback to stop a run as a crash would."""


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # check_det_dataset looks for the Arial font of its plots and asks the network for it when
    # missing; plots are off here, so the look-up is skipped.
    monkeypatch.setattr("ultralytics.data.utils.check_font", lambda *args, **kwargs: None)
    return write_shapes(tmp_path / "shapes", train=TRAIN_IMAGES, val=8)


def overrides(data: Path, project: Path, epochs: int, **extra: Any) -> dict[str, Any]:
    return {
        "model": "yolov8n.yaml",
        "data": str(data),
        "epochs": epochs,
        "imgsz": 64,
        "batch": BATCH,
        "workers": 0,
        "device": "cpu",
        "amp": False,  # Ultralytics' AMP check downloads weights
        "plots": False,  # plots need fonts
        "pretrained": False,
        "close_mosaic": 1,  # mosaic in all but the last epoch
        "project": str(project),
        "name": "run",
        "exist_ok": True,
        "seed": 0,
        "verbose": False,
        **extra,
    }


class Recorder:
    """A handler factory that records every ``update()`` and each epoch's plan."""

    def __init__(self) -> None:
        self.updates: list[dict[str, Any]] = []
        self.plans: dict[int, list[int]] = {}
        self.passes = 0  # epochs begun, counting an epoch Ultralytics runs again
        self.handler: Any = None

    def __call__(self, dataset: Any, num_epochs: int) -> Any:
        handler = BLS(
            InfoBatch(dataset, num_epochs, prune_ratio=0.5, seed=0, return_indices=True),
            alpha=ALPHA,
        ).proxy()
        update = handler.update

        def recorded(loss: torch.Tensor, indices: Any = None) -> torch.Tensor:
            weight = float(handler.weights[indices].mean())
            weighted = update(loss, indices=indices)
            self.updates.append(
                {
                    "epoch": handler.epoch,
                    "indices": indices.tolist(),
                    "loss": float(loss.detach()),
                    "weight": weight,
                    "weighted": float(weighted.detach()),
                    "pass": self.passes,
                }
            )
            return weighted

        handler.update = recorded  # an instance attribute: the trainer calls it
        self.handler = handler
        return handler

    def attach(self, trainer: PruningDetectionTrainer) -> None:
        def on_batch_end(trainer: PruningDetectionTrainer) -> None:
            # What Ultralytics back-propagates: the weighted mean loss times the batch size.
            last = self.updates[-1]
            expected = last["weighted"] * len(last["indices"])
            assert float(trainer.loss.detach()) == pytest.approx(expected, rel=1e-6)

        def on_epoch_start(trainer: PruningDetectionTrainer) -> None:
            self.passes += 1

        def on_epoch_end(trainer: PruningDetectionTrainer) -> None:
            self.plans[trainer.epoch] = self.handler._run.decided.tolist()

        trainer.add_callback("on_train_epoch_start", on_epoch_start)
        trainer.add_callback("on_train_batch_end", on_batch_end)
        trainer.add_callback("on_train_epoch_end", on_epoch_end)

    def trained(self, epoch: int) -> list[int]:
        return [i for u in self.updates if u["epoch"] == epoch for i in u["indices"]]


def replay_bls(updates: list[dict[str, Any]], num_samples: int) -> torch.Tensor:
    """BLS from its definition: each sample of a batch moves to a*s + (1-a)*batch loss."""
    scores = [0.0] * num_samples
    for update in updates:
        for i in update["indices"]:
            scores[i] = ALPHA * scores[i] + (1 - ALPHA) * update["loss"]
    return torch.tensor(scores, dtype=torch.float32)


def test_trainer_api_matches_the_installed_ultralytics() -> None:
    for name, parameters in TRAINER_API.items():
        assert tuple(inspect.signature(getattr(DetectionTrainer, name)).parameters) == parameters


@pytest.mark.parametrize("workers", [0, 2])
def test_each_epoch_trains_the_plan_and_scores_replay_bls(
    data: Path, tmp_path: Path, workers: int
) -> None:
    recorder = Recorder()
    with no_network() as attempts:
        trainer = PruningDetectionTrainer(
            overrides=overrides(data, tmp_path / "runs", epochs=3), handler_factory=recorder
        )
        trainer.args.workers = workers  # Ultralytics sets 0 on the CPU; exercise workers too
        recorder.attach(trainer)
        trainer.train()
    assert trainer.train_loader.num_workers == workers
    assert attempts == []
    handler = trainer.handler
    assert handler is recorder.handler
    assert [r["epoch"] for r in handler.history] == [0, 1, 2]
    for record in handler.history:
        epoch = record["epoch"]
        trained = recorder.trained(epoch)
        assert Counter(trained) == Counter(recorder.plans[epoch])  # the plan, nothing else
        assert len(set(trained)) == len(trained) == record["kept"]  # each image once
        assert record["updates"] == -(-record["kept"] // BATCH)
    kept = [r["kept"] for r in handler.history]
    assert kept[0] == kept[2] == TRAIN_IMAGES  # the first epoch and the annealing one are full
    assert kept[1] < TRAIN_IMAGES  # the pruning epoch is shorter
    torch.testing.assert_close(
        handler.scores.cpu(), replay_bls(recorder.updates, TRAIN_IMAGES), rtol=1e-5, atol=1e-6
    )
    weights = [u["weight"] for u in recorder.updates if u["epoch"] == 1]
    assert max(weights) > 1  # InfoBatch re-weights the kept well-learned images...
    for update in recorder.updates:  # ...and the returned loss carries the batch's mean weight
        assert update["weighted"] == pytest.approx(update["loss"] * update["weight"], rel=1e-6)
    weights_dir = Path(trainer.wdir)
    assert state_path(weights_dir / "last.pt").is_file()
    saved = torch.load(state_path(weights_dir / "last.pt"), weights_only=True)
    torch.testing.assert_close(saved["scores"], handler.scores.cpu())


def test_a_resumed_run_continues_the_pruning_state(data: Path, tmp_path: Path) -> None:
    epochs = 4  # epochs 0-2 prune, 3 anneals

    def stop_at_epoch_2(trainer: PruningDetectionTrainer) -> None:
        if trainer.epoch == 2:
            raise Interrupt

    first = Recorder()
    with no_network() as attempts:
        trainer = PruningDetectionTrainer(
            overrides=overrides(data, tmp_path / "runs", epochs), handler_factory=first
        )
        first.attach(trainer)
        trainer.add_callback("on_train_epoch_start", stop_at_epoch_2)
        with pytest.raises(Interrupt):
            trainer.train()
        last = Path(trainer.wdir) / "last.pt"
        saved = torch.load(state_path(last), weights_only=True)
        assert int(saved["epoch"]) == 1 and bool(saved["epoch_finished"])

        resumed = Recorder()
        trainer = PruningDetectionTrainer(
            overrides=overrides(data, tmp_path / "runs", epochs, resume=str(last)),
            handler_factory=resumed,
        )
        resumed.attach(trainer)
        trainer.train()
    assert attempts == []
    history = trainer.handler.history
    assert [r["epoch"] for r in history] == [0, 1, 2, 3]
    assert history[:2] == first.handler.history[:2]  # restored, not retrained
    assert {u["epoch"] for u in resumed.updates} == {2, 3}
    # Epoch 2's plan is the one the saved scores decide: an independent handler loaded with
    # the saved state decides the same, and the resumed run trained exactly it.
    reference = BLS(
        InfoBatch(list(range(TRAIN_IMAGES)), epochs, prune_ratio=0.5, seed=0), alpha=ALPHA
    ).proxy()
    reference.load_state_dict(saved)
    reference.sampler.set_epoch(2)
    plan = reference._run.decided.tolist()
    assert len(plan) < TRAIN_IMAGES
    assert resumed.plans[2] == plan
    assert Counter(resumed.trained(2)) == Counter(plan)
    # The scores continue from the saved ones: a replay of the resumed updates from them.
    scores = saved["scores"].clone()
    for update in resumed.updates:
        for i in update["indices"]:
            scores[i] = ALPHA * scores[i] + (1 - ALPHA) * update["loss"]
    torch.testing.assert_close(trainer.handler.scores.cpu(), scores, rtol=1e-5, atol=1e-6)


def test_an_epoch_run_again_starts_from_its_first_scores(data: Path, tmp_path: Path) -> None:
    # Ultralytics' NaN recovery reloads last.pt and runs the epoch again (as its out-of-memory
    # retry does): the pruning state goes back to that epoch's start, the plan is decided again
    # identically, and the aborted pass leaves no trace in the scores.
    recorder = Recorder()
    plans: list[list[int]] = []

    def poison_epoch_1_once(trainer: PruningDetectionTrainer) -> None:
        if trainer.epoch == 1:
            plans.append(recorder.plans[1])
            if len(plans) == 1:
                trainer.loss = torch.tensor(float("nan"))

    with no_network() as attempts:
        trainer = PruningDetectionTrainer(
            overrides=overrides(data, tmp_path / "runs", epochs=3), handler_factory=recorder
        )
        recorder.attach(trainer)
        trainer.add_callback("on_train_epoch_end", poison_epoch_1_once)
        trainer.train()
    assert attempts == []
    assert recorder.passes == 4  # epoch 1 ran twice
    assert len(plans) == 2 and plans[0] == plans[1] and len(plans[0]) < TRAIN_IMAGES
    history = trainer.handler.history
    assert [r["epoch"] for r in history] == [0, 1, 2]
    aborted = {u["pass"] for u in recorder.updates if u["epoch"] == 1} - {3}
    assert aborted == {2}
    kept_updates = [u for u in recorder.updates if u["pass"] != 2]
    torch.testing.assert_close(
        trainer.handler.scores.cpu(), replay_bls(kept_updates, TRAIN_IMAGES), rtol=1e-5, atol=1e-6
    )


def test_refuses_arguments_it_cannot_honour(data: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"compile=True: not supported with pruning"):
        PruningDetectionTrainer(overrides=overrides(data, tmp_path / "runs", 2, compile=True))
    with pytest.raises(ValueError, match=r"rect=True: not supported with pruning"):
        PruningDetectionTrainer(overrides=overrides(data, tmp_path / "runs", 2, rect=True))
    with pytest.raises(ValueError, match=r"handler_factory: pass either a factory or alpha"):
        PruningDetectionTrainer(
            overrides=overrides(data, tmp_path / "runs", 2), handler_factory=Recorder(), alpha=0.5
        )


def test_refuses_several_devices(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No GPU here: let Ultralytics believe that device="0,1" names two, up to its DDP decision.
    import ultralytics.engine.trainer as engine

    monkeypatch.setattr(engine, "parse_device", lambda device: device)
    monkeypatch.setattr(engine, "select_device", lambda device: SimpleNamespace(type="cuda"))
    monkeypatch.setattr(engine, "get_torch_device_backend", lambda device: None)
    with pytest.raises(RuntimeError, match=r"device='0,1': PruningDetectionTrainer trains in one"):
        PruningDetectionTrainer(overrides=overrides(data, tmp_path / "runs", 2, device="0,1"))
