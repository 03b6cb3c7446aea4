"""PyTorch Lightning integration: ``PruningCallback`` with real Lightning trainers on CPU.

Each test trains a tiny linear model for a few epochs and checks what the core tests check:
scores equal the BLS formula applied independently to what the module trained on, pruning
saves samples, 2-process DDP runs equal batch counts on disjoint shards, resuming from a
Lightning checkpoint reproduces the next epoch's sample list, and each epoch's batch count,
progress bar and validation follow the epoch's plan.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from _launch import run_two_ranks
from _lightning_model import TinyModule, bls_scores, make_data
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from bls import BLS, InfoBatch
from bls.integrations.lightning import PruningCallback

BUDGET_N, BUDGET_BATCH = 200, 16

TESTS = Path(__file__).parent
ALPHA = 0.6


def _trainer(max_epochs: int, callbacks: list[Any], root: Path, **options: Any) -> pl.Trainer:
    settings: dict[str, Any] = {
        "default_root_dir": root,
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": max_epochs,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "log_every_n_steps": 1,
        **options,
    }
    return pl.Trainer(callbacks=callbacks, **settings)


def _handler(n: int, num_epochs: int = 4) -> InfoBatch:
    return BLS(InfoBatch(make_data(n), num_epochs=num_epochs, prune_ratio=0.5), alpha=ALPHA).proxy()


class _RecordingModule(TinyModule):
    """Also records the loss Lightning back-propagates and the weighted loss BLS should give."""

    def __init__(self, handler: InfoBatch, batch_size: int) -> None:
        super().__init__(handler, batch_size)
        self.backward_losses: list[tuple[float, float]] = []

    def on_before_backward(self, loss: torch.Tensor) -> None:
        _, ids, batch_loss = self.steps[-1]
        weight = self.handler.weights[torch.tensor(ids)].mean().item()
        self.backward_losses.append((float(loss.detach()), batch_loss * weight))


def test_scores_follow_formula_and_epochs_are_logged(tmp_path: Path) -> None:
    n, batch = 128, 16
    handler = _handler(n)
    module = _RecordingModule(handler, batch)
    # PruningCallback() without a handler finds it through the training loader's sampler.
    trainer = _trainer(3, [PruningCallback()], tmp_path, logger=CSVLogger(tmp_path, name="run"))
    trainer.fit(module)

    expected = bls_scores(module.steps, n, ALPHA)
    torch.testing.assert_close(handler.scores.cpu(), expected, rtol=0, atol=1e-5)
    assert handler.saved_ratio > 0
    kept = [record["kept"] for record in handler.history]
    assert kept[0] == n and 0 < kept[1] < n
    for epoch in range(3):  # every sample of the plan was trained on exactly once
        ids = [i for e, batch_ids, _ in module.steps if e == epoch for i in batch_ids]
        assert len(ids) == len(set(ids)) == kept[epoch]
    # The loss Lightning back-propagated is BLS's weighted loss L * mean(weight of the batch).
    assert len(module.backward_losses) == len(module.steps)
    for got, wanted in module.backward_losses:
        assert got == pytest.approx(wanted, rel=1e-5, abs=1e-7)
    rescaled = [
        got / step[2] for (got, _), step in zip(module.backward_losses, module.steps, strict=True)
    ]
    assert max(rescaled) > 1.01  # InfoBatch up-weighted some batches of the pruning epochs
    # self.log: one row per epoch with that epoch's kept count and the running saved ratio.
    with open(Path(trainer.logger.log_dir) / "metrics.csv") as file:
        rows = [row for row in csv.DictReader(file) if row.get("bls/kept")]
    assert [int(float(row["bls/kept"])) for row in rows] == kept
    running = [sum(n - k for k in kept[: e + 1]) / (n * 4) for e in range(3)]
    assert [float(row["bls/saved_ratio"]) for row in rows] == pytest.approx(running)
    assert "training_step" not in module.__dict__  # the wrapper is gone after fit


class _BudgetModule(TinyModule):
    """Counts each epoch's batches three ways and sizes a stock OneCycleLR from the handler."""

    max_lr = 0.5

    def __init__(self, handler: InfoBatch, batch_size: int) -> None:
        super().__init__(handler, batch_size)
        self.planned: list[int | float] = []  # trainer.num_training_batches at the epoch's start
        self.bars: list[tuple[int, int]] = []  # the progress bar's count and total at its end
        self.validated: list[int] = []
        self.learning_rates: list[float] = []  # the rate of every optimizer step

    def on_train_epoch_start(self) -> None:
        self.planned.append(self.trainer.num_training_batches)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.learning_rates.append(optimizer.param_groups[0]["lr"])

    def on_train_epoch_end(self) -> None:
        bar = self.trainer.progress_bar_callback
        assert isinstance(bar, TQDMProgressBar)
        self.bars.append((bar.train_progress_bar.n, bar.train_progress_bar.total))

    def val_dataloader(self) -> DataLoader[Any]:
        return DataLoader(make_data(16, seed=1), batch_size=8)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        if batch_idx == 0:
            self.validated.append(self.current_epoch)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.max_lr)
        total = self.handler.total_steps(self.batch_size)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, self.max_lr, total_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def test_a_budget_run_counts_each_epochs_batches_and_fits_a_one_cycle_schedule(
    tmp_path: Path,
) -> None:
    epochs = 4
    data = make_data(BUDGET_N)
    handler = BLS(InfoBatch(data, num_epochs=epochs, target_saving=0.3), alpha=ALPHA).proxy()
    module = _BudgetModule(handler, BUDGET_BATCH)
    callbacks = [PruningCallback(handler, log=False), TQDMProgressBar()]  # the bar after it
    trainer = _trainer(epochs, callbacks, tmp_path, enable_progress_bar=True)
    trainer.fit(module)

    kept = [record["kept"] for record in handler.history]
    assert len(kept) == epochs and min(kept) < BUDGET_N
    plan_batches = [-(-k // BUDGET_BATCH) for k in kept]
    ran = [sum(1 for epoch, _, _ in module.steps if epoch == e) for e in range(epochs)]
    assert module.planned == ran == plan_batches
    assert module.bars == [(count, count) for count in plan_batches]  # each bar reaches 100%
    assert module.validated == list(range(epochs))  # the epoch-end validation of pruned epochs
    # The stock OneCycleLR sized from handler.total_steps steps exactly that often (one more
    # step would raise "Tried to step ... times") and its last step ran at the final rate.
    total = handler.total_steps(BUDGET_BATCH)
    schedule = trainer.lr_scheduler_configs[0].scheduler
    assert len(module.learning_rates) == sum(plan_batches) == total == schedule.last_epoch
    final = module.max_lr / 25.0 / 1e4  # OneCycleLR's div_factor and final_div_factor
    assert module.learning_rates[-1] == pytest.approx(final, rel=1e-9)
    # Lightning's estimate counts full epochs: the reason to size from total_steps.
    assert trainer.estimated_stepping_batches == epochs * -(-BUDGET_N // BUDGET_BATCH) > total


def test_resume_from_lightning_checkpoint_gives_the_same_next_epoch(tmp_path: Path) -> None:
    n, batch = 96, 8
    first = TinyModule(_handler(n), batch)
    saver = ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", save_top_k=-1)
    _trainer(3, [PruningCallback(first.handler), saver], tmp_path, enable_checkpointing=True).fit(
        first
    )

    resumed = TinyModule(_handler(n), batch, seed=99)  # other initial weights: restored anyway
    # PruningCallback() finds its handler only when training starts, after Lightning restored
    # the callback's state: the state waits for it.
    saver = ModelCheckpoint(dirpath=tmp_path / "resumed", filename="{epoch}", save_top_k=-1)
    resumer = _trainer(3, [PruningCallback(), saver], tmp_path, enable_checkpointing=True)
    resumer.fit(resumed, ckpt_path=tmp_path / "epoch=1.ckpt")
    epoch_two = [ids for e, ids, _ in first.steps if e == 2]
    assert [ids for _, ids, _ in resumed.steps] == epoch_two
    assert first.handler.history[2]["kept"] < n  # a pruning epoch, decided from the scores
    assert resumed.handler.history == first.handler.history
    torch.testing.assert_close(resumed.handler.scores, first.handler.scores, rtol=0, atol=1e-5)


def test_ddp_on_two_cpu_processes(tmp_path: Path) -> None:
    ranks = run_two_ranks([sys.executable, str(TESTS / "_lightning_ddp.py")], tmp_path)
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert [r["sampler_type"] for r in ranks] == ["PruningSampler"] * 2  # not replaced
    history = ranks[0]["history"]
    assert ranks[1]["history"] == history
    assert history[1]["kept"] < 96
    merged = []
    for epoch in range(3):
        per_rank = [[s for s in r["steps"] if s[0] == epoch] for r in ranks]
        assert len(per_rank[0]) == len(per_rank[1]) > 0  # equal batch counts, no deadlock
        ids = [set(i for s in steps for i in s[1]) for steps in per_rank]
        assert not ids[0] & ids[1]  # disjoint shards
        assert len(ids[0] | ids[1]) == history[epoch]["kept"]
        for pair in zip(*per_rank, strict=True):
            merged.extend(pair)
    expected = bls_scores(merged, 96, ALPHA)
    for r in ranks:  # every rank holds every rank's updates
        torch.testing.assert_close(r["scores"], expected, rtol=0, atol=1e-5)


def test_rejects_a_loader_that_bypasses_the_handler(tmp_path: Path) -> None:
    handler = _handler(32)

    class PlainLoader(TinyModule):
        def train_dataloader(self) -> DataLoader[Any]:
            return DataLoader(make_data(32), batch_size=8)

    with pytest.raises(ValueError, match="does not draw from this callback's handler"):
        _trainer(1, [PruningCallback(handler)], tmp_path).fit(PlainLoader(handler, 8))
    with pytest.raises(TypeError, match="handler: expected a pruning dataset"):
        PruningCallback(make_data(8))  # type: ignore[arg-type]


class _DictItems(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        self.data = make_data(n)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        x, y, ids = self.data[index]
        return {"x": x, "y": y, "id": ids}


def test_explicit_indices_route_with_dict_batches(tmp_path: Path) -> None:
    n, batch = 64, 8
    handler = BLS(
        InfoBatch(_DictItems(n), num_epochs=4, prune_ratio=0.5, return_indices=True), alpha=ALPHA
    ).proxy()

    class DictModule(TinyModule):
        def training_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
            assert torch.equal(batch["index"], batch["id"])  # the index the handler attached
            loss = torch.nn.functional.cross_entropy(self.layer(batch["x"]), batch["y"])
            self.steps.append((self.current_epoch, batch["id"].tolist(), float(loss.detach())))
            return {"loss": loss}

    module = DictModule(handler, batch)
    _trainer(3, [PruningCallback(handler)], tmp_path).fit(module)
    torch.testing.assert_close(
        handler.scores, bls_scores(module.steps, n, ALPHA), rtol=0, atol=1e-5
    )
    assert handler.saved_ratio > 0


def test_importing_bls_imports_no_framework() -> None:
    code = "import sys, bls, bls.integrations; print(sorted({'lightning', 'transformers', "
    code += "'accelerate'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_resume_from_a_mid_epoch_lightning_checkpoint_trains_the_rest_of_the_epoch(
    tmp_path: Path,
) -> None:
    n, batch, stop = 96, 8, 15  # epoch 0 has 12 batches: step 15 is inside pruning epoch 1
    first = TinyModule(_handler(n), batch)
    saver = ModelCheckpoint(
        dirpath=tmp_path, filename="{epoch}-{step}", every_n_train_steps=stop, save_top_k=-1
    )
    _trainer(3, [PruningCallback(first.handler), saver], tmp_path, enable_checkpointing=True).fit(
        first
    )
    assert first.steps[stop - 1][0] == 1 and first.steps[stop][0] == 1  # mid-epoch

    resumed = TinyModule(_handler(n), batch, seed=99)
    resumer = _trainer(3, [PruningCallback()], tmp_path / "resumed")
    with warnings.catch_warnings():
        # Lightning warns that a stock DataLoader is "not resumable"; the handler's sampler
        # continues the epoch itself, which is what the assertions below check.
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended")
        resumer.fit(resumed, ckpt_path=tmp_path / f"epoch=1-step={stop}.ckpt")
    assert [ids for _, ids, _ in resumed.steps] == [ids for _, ids, _ in first.steps[stop:]]
    assert resumed.handler.history == first.handler.history
    torch.testing.assert_close(resumed.handler.scores, first.handler.scores, rtol=0, atol=1e-5)
