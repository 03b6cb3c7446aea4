"""Hugging Face integration: ``PruningTrainer`` with the real ``transformers.Trainer`` on CPU.

A 2-layer BERT built from a config trains a few epochs on generated tokens. The tests check
what the core tests check: scores equal the BLS formula applied to the model's own losses of
the micro-batches it trained on (gradient accumulation and Accelerate's read-ahead included),
every index the handler attached belongs to the sample it came with, pruning saves samples,
Accelerate's batch sharding deals one global plan out to the ranks, resuming from a
Trainer checkpoint reproduces the next epoch's sample list, and with a budget
(``target_saving``) the Trainer's step total, progress bar and schedule end with the run.
"""

from __future__ import annotations

import inspect
import logging
import math
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from _hf_setup import RecordingTrainer, TokenData, tiny_bert, training_arguments
from _launch import run_two_ranks
from _replay import bls_replay
from accelerate.data_loader import BatchSamplerShard, prepare_data_loader
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from torch.utils.data import BatchSampler, DataLoader
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ProgressCallback

import bls.epochs
import bls.sampler
from bls import BLS, InfoBatch, RandomPrune
from bls.integrations.hf import (
    STATE_FILE,
    TESTED_TRANSFORMERS,
    TRAINER_PRIVATE_API,
    PruningTrainer,
    _rank_batches,
)

ALPHA = 0.6
TESTS = Path(__file__).parent
PYPROJECT = TESTS.parent / "pyproject.toml"


def _handler(n: int, **options: object) -> InfoBatch:
    data = TokenData(n)
    return BLS(InfoBatch(data, num_epochs=4, prune_ratio=0.5, **options), alpha=ALPHA).proxy()


def _bls_formula(micro_batches: list[dict], n: int) -> torch.Tensor:
    pairs = ((batch["index"], batch["loss"]) for batch in micro_batches)
    return bls_replay(pairs, n, ALPHA).float()


def _epoch_ids(micro_batches: list[dict], epoch: int) -> list[int]:
    return [i for batch in micro_batches if batch["epoch"] == epoch for i in batch["index"]]


def test_trainer_with_gradient_accumulation_scores_the_right_samples(tmp_path: Path) -> None:
    n = 96
    handler = _handler(n)
    trainer = RecordingTrainer(
        model=tiny_bert(),
        args=training_arguments(str(tmp_path), gradient_accumulation_steps=3),
        train_dataset=handler,
    )
    trainer.train()
    batches = trainer.micro_batches

    data = handler.dataset
    for batch in batches:  # the index each item carried is the sample it came with
        assert torch.equal(batch["input_ids"], data.input_ids[batch["index"]])
    torch.testing.assert_close(handler.scores, _bls_formula(batches, n), rtol=0, atol=1e-5)
    kept = [record["kept"] for record in handler.history]
    assert len(kept) == 3 and kept[0] == n and kept[1] < n
    assert handler.saved_ratio == pytest.approx(sum(n - k for k in kept) / (n * 4))
    for epoch in range(3):  # every planned sample was trained on exactly once per epoch
        ids = _epoch_ids(batches, epoch)
        assert len(ids) == len(set(ids)) == kept[epoch]
        assert handler.history[epoch]["updates"] == -(-kept[epoch] // 8)
    # Every epoch ends in an optimizer step, also when its batch count is not a multiple of
    # the accumulation steps.
    micro_batches = [-(-k // 8) for k in kept]
    assert any(count % 3 for count in micro_batches), kept
    assert trainer.state.global_step == sum(-(-count // 3) for count in micro_batches)
    # Without a budget the Trainer's total stays its full-epoch count (the documented limit).
    assert trainer.state.max_steps == 3 * -(-(n // 8) // 3) > trainer.state.global_step


def test_resume_from_trainer_checkpoint_gives_the_same_next_epoch(tmp_path: Path) -> None:
    n = 64
    first = RecordingTrainer(
        model=tiny_bert(),
        args=training_arguments(str(tmp_path), save_strategy="epoch"),
        train_dataset=_handler(n),
    )
    first.train()
    checkpoints = sorted(tmp_path.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert len(checkpoints) == 3 and all((c / STATE_FILE).is_file() for c in checkpoints)

    resumed = RecordingTrainer(
        model=tiny_bert(seed=7),
        args=training_arguments(str(tmp_path / "resumed"), save_strategy="no"),
        train_dataset=_handler(n),
    )
    resumed.train(resume_from_checkpoint=str(checkpoints[1]))
    assert first.handler.history[2]["kept"] < n  # a pruning epoch: decided from the scores
    assert [b["epoch"] for b in resumed.micro_batches] == [2] * len(resumed.micro_batches)
    assert _epoch_ids(resumed.micro_batches, 2) == _epoch_ids(first.micro_batches, 2)
    assert resumed.handler.history == first.handler.history


def test_resume_from_a_checkpoint_inside_an_epoch_continues_it_exactly(tmp_path: Path) -> None:
    n = 64  # 8 batches in epoch 0: the checkpoint at step 4 is inside it
    first = RecordingTrainer(
        model=tiny_bert(),
        args=training_arguments(str(tmp_path), save_strategy="steps", save_steps=4),
        train_dataset=_handler(n),
    )
    first.train()
    inside = tmp_path / "checkpoint-4"
    saved = torch.load(inside / STATE_FILE, weights_only=True)
    assert (saved["epoch"], saved["epoch_finished"], saved["updates"]) == (0, False, 4)

    resumed = RecordingTrainer(
        model=tiny_bert(seed=7),
        args=training_arguments(str(tmp_path / "resumed"), save_strategy="no"),
        train_dataset=_handler(n),
    )
    resumed.train(resume_from_checkpoint=str(inside))
    # The rest of epoch 0, not a new epoch 1: the batches after the first 4, then the same
    # epochs as the uninterrupted run.
    assert _epoch_ids(resumed.micro_batches, 0) == _epoch_ids(first.micro_batches, 0)[4 * 8 :]
    for epoch in (1, 2):
        assert _epoch_ids(resumed.micro_batches, epoch) == _epoch_ids(first.micro_batches, epoch)
    assert resumed.handler.history == first.handler.history
    assert resumed.state.global_step == first.state.global_step

    refused = RecordingTrainer(
        model=tiny_bert(),
        args=training_arguments(str(tmp_path / "refused"), ignore_data_skip=True),
        train_dataset=_handler(n),
    )
    with pytest.raises(ValueError, match="saved inside epoch 0, after 4 batches; with ignore"):
        refused.train(resume_from_checkpoint=str(inside))


def test_accelerate_sharding_deals_the_global_plan_to_the_ranks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Two ranks simulated in one process: each builds the same handler (same seed) and
    # Accelerate shards its loader; both handlers then receive both ranks' updates, as the
    # gather in update() would give them. The handler and sampler are told they run as rank r
    # of 2, so sharding the plan a second time would show. The sampler must yield the global
    # plan under the shard, so the ranks' batches together cover the epoch's plan once.
    def as_rank(rank: int) -> None:
        for module in (bls.epochs, bls.sampler):  # where rank and world size are read
            monkeypatch.setattr(module, "rank_and_world_size", lambda: (rank, 2))

    n, batch_size = 60, 8
    handlers = [_handler(n, return_indices=True) for _ in range(2)]
    shards = [
        prepare_data_loader(
            DataLoader(h, sampler=h.sampler, batch_size=batch_size),
            num_processes=2,
            process_index=rank,
            put_on_device=False,
        )
        for rank, h in enumerate(handlers)
    ]
    for epoch in range(3):
        batches, lengths = [], []
        for rank, shard in enumerate(shards):
            as_rank(rank)
            lengths.append(len(shard))
            batches.append([batch["index"].tolist() for batch in shard])
        assert len(batches[0]) == len(batches[1])  # equal batch counts
        if epoch == 0:  # later epochs are shorter than the Trainer's len() before iterating
            assert lengths == [len(batches[0])] * 2
        for handler in handlers:
            for indices in batches[0] + batches[1]:
                handler.update(torch.tensor(float(sum(indices) % 7)), indices=indices)
        flat = [i for rank_batches in batches for b in rank_batches for i in b]
        kept = handlers[0].history[epoch]["kept"]
        assert len(set(flat)) == kept
        # Accelerate's even_batches repeats at most one batch's worth from the start.
        assert len(flat) - kept < batch_size
    assert handlers[0].history == handlers[1].history
    assert handlers[0].history[1]["kept"] < n
    torch.testing.assert_close(handlers[0].scores, handlers[1].scores)


def test_trainer_ddp_on_two_cpu_processes(tmp_path: Path) -> None:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    ranks = run_two_ranks([*torchrun, "2", str(TESTS / "_hf_ddp.py")], tmp_path)
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert "checkpoint-3" in ranks[0]["saved"]  # mid-epoch, and no rank waited for another
    assert all(r["rows_match"] for r in ranks)  # every index belongs to its own sample
    history = ranks[0]["history"]
    assert ranks[1]["history"] == history and history[1]["kept"] < 72
    torch.testing.assert_close(ranks[0]["scores"], ranks[1]["scores"], rtol=0, atol=0)
    steps: list[list[dict]] = []
    for epoch in range(3):
        per_rank = [[b for b in r["micro_batches"] if b["epoch"] == epoch] for r in ranks]
        assert len(per_rank[0]) == len(per_rank[1]) > 0  # equal batch counts
        ids = [{i for b in batches for i in b["index"]} for batches in per_rank]
        assert len(ids[0] | ids[1]) == history[epoch]["kept"]  # one global plan, dealt out
        steps.extend([list(pair) for pair in zip(*per_rank, strict=True)])
    # The formula, one step at a time over both ranks' micro-batches. Accelerate's even_batches
    # repeats a few samples on both ranks in an epoch's last step; such a sample gets one of
    # the two losses, so those samples are left out of the comparison.
    repeated = set()
    for pair in steps:
        repeated |= set(pair[0]["index"]) & set(pair[1]["index"])
    expected = _bls_formula([b for pair in steps for b in pair], 72)
    checked = torch.tensor(sorted(set(range(72)) - repeated))
    assert len(checked) >= 60
    torch.testing.assert_close(ranks[0]["scores"][checked], expected[checked], rtol=0, atol=1e-5)


# ---------------------------------------------------------------------- budget: step totals
class _LastStep(TrainerCallback):
    """Records the step total at the start and the progress bar's count and total at the end."""

    def __init__(self) -> None:
        self.progress: ProgressCallback | None = None  # the trainer's, once it is built
        self.bar: tuple[int, int] | None = None
        self.max_steps_at_start = -1

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.max_steps_at_start = state.max_steps

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.progress is not None:  # runs before the progress callback closes its bar
            bar = self.progress.training_bar
            self.bar = (bar.n, bar.total)


def _budget_handler(method: str, n: int) -> Any:
    data = TokenData(n)
    if method == "InfoBatch":
        return BLS(InfoBatch(data, num_epochs=4, target_saving=0.3), alpha=ALPHA).proxy()
    # 100 samples, 3 budget epochs from epoch 0 pruning 11: 89 kept, 8 * 11 + 1, so the last
    # sample is cut (no batch of one) before the sampler has seen the batch size.
    return BLS(RandomPrune(data, num_epochs=4, target_saving=0.0825), alpha=ALPHA).proxy()


@pytest.mark.parametrize(
    ("method", "n", "accumulation"),
    [("InfoBatch", 96, 1), ("InfoBatch", 96, 2), ("RandomPrune", 100, 2)],
)
def test_a_budget_run_takes_the_trainers_step_total_and_ends_its_schedule(
    method: str, n: int, accumulation: int, tmp_path: Path
) -> None:
    handler = _budget_handler(method, n)
    last_step = _LastStep()
    trainer = RecordingTrainer(
        model=tiny_bert(),
        args=training_arguments(
            str(tmp_path),
            num_train_epochs=4,
            gradient_accumulation_steps=accumulation,
            disable_tqdm=False,
        ),
        train_dataset=handler,
        callbacks=[last_step],
    )
    callbacks = trainer.callback_handler.callbacks
    [last_step.progress] = [c for c in callbacks if isinstance(c, ProgressCallback)]
    trainer.train()
    kept = [record["kept"] for record in handler.history]
    assert len(kept) == 4 and min(kept) < n
    # Independently: every epoch ends in an optimizer step after ceil(kept / 8) micro-batches.
    batches = [-(-k // 8) for k in kept]
    assert [-(-len(_epoch_ids(trainer.micro_batches, e)) // 8) for e in range(4)] == batches
    expected = sum(-(-count // accumulation) for count in batches)
    state = trainer.state
    assert state.global_step == state.max_steps == expected == last_step.max_steps_at_start
    assert last_step.bar == (expected, expected)  # the progress bar reaches 100%
    assert sum(batches) == handler.total_steps(8, world_size=1)
    # The default schedule decays linearly to 0 over max_steps: it ends exactly there.
    assert trainer.lr_scheduler.get_last_lr() == pytest.approx([0.0, 0.0], abs=1e-12)


def test_a_budget_run_keeps_a_max_steps_the_user_set(tmp_path: Path) -> None:
    handler = _budget_handler("InfoBatch", 96)
    trainer = RecordingTrainer(
        model=tiny_bert(),
        args=training_arguments(str(tmp_path), max_steps=30),
        train_dataset=handler,
    )
    trainer.train()
    kept = [record["kept"] for record in handler.history]
    # Full epochs of 12 steps would need 3 epochs; the pruned ones need a fourth.
    assert sum(-(-k // 8) for k in kept[:3]) < 30 <= sum(-(-k // 8) for k in kept)
    assert trainer.state.global_step == trainer.state.max_steps == 30
    assert trainer.lr_scheduler.get_last_lr() == pytest.approx([0.0, 0.0], abs=1e-12)


@pytest.mark.parametrize("processes", [1, 2, 3])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("even_batches", [False, True])
def test_the_batches_a_rank_runs_are_accelerates_count(
    processes: int, drop_last: bool, even_batches: bool
) -> None:
    for rank in range(processes):
        for size in range(1, 30):
            batch_sampler = BatchSampler(range(size), 4, drop_last)
            shard = BatchSamplerShard(
                batch_sampler, processes, rank, split_batches=False, even_batches=even_batches
            )
            loader = DataLoader(range(size), batch_sampler=shard)
            batches_of = _rank_batches(loader)
            assert batches_of is not None
            assert batches_of(size) == len(shard) == len(list(shard)), (rank, size)
    plain = DataLoader(range(10), batch_size=4, drop_last=drop_last)
    assert _rank_batches(plain) is not None and _rank_batches(plain)(10) == len(plain)  # type: ignore[misc]


def test_training_values_of_another_shape_are_an_error(
    trainer: PruningTrainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _spy_on(monkeypatch, "set_initial_training_values", result=(3, 12))
    with pytest.raises(RuntimeError, match=r"returned a tuple of 2 values, not the 7 ending with"):
        trainer.set_initial_training_values(trainer.args, None)


def test_rejects_a_plain_dataset(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="train_dataset: PruningTrainer needs a pruning dataset"):
        PruningTrainer(
            model=tiny_bert(), args=training_arguments(str(tmp_path)), train_dataset=TokenData(8)
        )


# ---------------------------------------------------------------------- the private Trainer API
@pytest.mark.parametrize("name", sorted(TRAINER_PRIVATE_API))
def test_private_trainer_methods_have_the_signatures_the_integration_was_written_for(
    name: str,
) -> None:
    """Fails when the installed transformers changed a private method PruningTrainer relies on.

    Then read the new ``Trainer.<name>``, adapt the override in bls/integrations/hf.py and
    update TRAINER_PRIVATE_API (and the ``hf`` extra's range) to what was tested.
    """
    installed = tuple(inspect.signature(getattr(Trainer, name)).parameters)
    assert installed == TRAINER_PRIVATE_API[name], (
        f"transformers {transformers.__version__} changed Trainer.{name}: parameters "
        f"{installed}, PruningTrainer was written against {TRAINER_PRIVATE_API[name]}"
    )


def test_every_private_trainer_method_overridden_is_listed() -> None:
    overridden = {
        name
        for name in vars(PruningTrainer)
        if name.startswith("_") and not name.startswith("__") and hasattr(Trainer, name)
    }
    assert overridden <= set(TRAINER_PRIVATE_API), overridden - set(TRAINER_PRIVATE_API)


def test_hf_extra_declares_the_tested_range_and_the_installed_versions_are_in_it() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extra = tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]["hf"]
    requirements = {Requirement(text).name: Requirement(text) for text in extra}
    assert requirements["transformers"].specifier == SpecifierSet(TESTED_TRANSFORMERS)
    import accelerate

    for name, version in (
        ("transformers", transformers.__version__),
        ("accelerate", accelerate.__version__),
    ):
        assert requirements[name].specifier.contains(version), (name, version)


@pytest.fixture
def trainer(tmp_path: Path) -> PruningTrainer:
    return PruningTrainer(
        model=tiny_bert(),
        args=training_arguments(str(tmp_path), gradient_accumulation_steps=3),
        train_dataset=_handler(40),
    )


def _spy_on(monkeypatch: pytest.MonkeyPatch, name: str, result: Any = None) -> list[dict]:
    """Replace ``Trainer.<name>`` by a stand-in of the same signature that records its arguments."""
    original = getattr(Trainer, name)
    calls: list[dict] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(dict(inspect.signature(original).bind(*args, **kwargs).arguments))
        return result

    spy.__signature__ = inspect.signature(original)  # type: ignore[attr-defined]
    monkeypatch.setattr(Trainer, name, spy)
    return calls


def test_a_missing_private_parameter_fails_when_the_trainer_is_built(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def renamed(self: Any, model: Any, epoch: Any, loader: Any, **rest: Any) -> None: ...

    monkeypatch.setattr(Trainer, "_run_epoch", renamed)
    with pytest.raises(
        RuntimeError,
        match=r"Trainer\._run_epoch\(.*\) .*has no parameter 'train_dataloader', "
        r"'steps_in_epoch', 'num_update_steps_per_epoch'.*tested with transformers>=5\.24",
    ):
        PruningTrainer(
            model=tiny_bert(), args=training_arguments(str(tmp_path)), train_dataset=_handler(8)
        )


class _Loader:
    """A stand-in training loader: ``set_epoch`` decides the plan, ``len`` counts its batches."""

    def __init__(self, handler: Any, batch_size: int = 8) -> None:
        self.handler, self.batch_size, self.epochs = handler, batch_size, []

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)
        self.handler.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.handler.sampler) / self.batch_size)


@pytest.mark.parametrize("style", ["keywords", "positions"])
def test_run_epoch_sizes_the_epoch_from_its_plan_however_the_arguments_come(
    style: str, trainer: PruningTrainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _spy_on(monkeypatch, "_run_epoch")
    loader = _Loader(trainer.handler)
    values = {
        "model": trainer.model,
        "epoch": 0,
        "train_dataloader": loader,
        "steps_in_epoch": 999,  # the Trainer's full-epoch count, to be replaced
        "num_update_steps_per_epoch": 333,
        "trial": None,
        "ignore_keys_for_eval": None,
        "start_time": 0.0,
        "resume_from_checkpoint": None,
        "epochs_trained": 0,
        "steps_trained_in_current_epoch": 0,
    }
    if style == "keywords":
        trainer._run_epoch(**values)
    else:
        trainer._run_epoch(*values.values())
    [call] = calls
    assert loader.epochs == [0] and call["epoch"] == 0 and call["train_dataloader"] is loader
    assert call["steps_in_epoch"] == len(loader) == 5  # 40 samples, batches of 8
    assert call["num_update_steps_per_epoch"] == 2  # ceil(5 / 3 accumulation steps)
    assert call["start_time"] == 0.0 and call["model"] is trainer.model


def test_run_epoch_refuses_a_loader_without_set_epoch(
    trainer: PruningTrainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _spy_on(monkeypatch, "_run_epoch")
    with pytest.raises(TypeError, match=r"training loader \(list\) has no set_epoch\(\)"):
        trainer._run_epoch(
            model=trainer.model,
            epoch=0,
            train_dataloader=[],
            steps_in_epoch=1,
            num_update_steps_per_epoch=1,
            trial=None,
            ignore_keys_for_eval=None,
            start_time=0.0,
            resume_from_checkpoint=None,
            epochs_trained=0,
            steps_trained_in_current_epoch=0,
        )


@pytest.mark.parametrize("style", ["keywords", "positions"])
def test_init_training_state_reads_the_checkpoint_however_the_arguments_come(
    style: str,
    trainer: PruningTrainer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    calls = _spy_on(monkeypatch, "_init_training_state", result=(2, 6))
    folder = tmp_path / "checkpoint-4"
    folder.mkdir()
    values = [100, 5, 3, str(folder), None]
    names = ["max_steps", "num_update_steps_per_epoch", "num_train_epochs"]
    names += ["resume_from_checkpoint", "trial"]
    with caplog.at_level(logging.WARNING, logger="bls"):
        if style == "keywords":
            result = trainer._init_training_state(**dict(zip(names, values, strict=True)))
        else:
            result = trainer._init_training_state(*values)
    assert calls[0]["resume_from_checkpoint"] == str(folder)
    assert result == (2, 6)  # no pruning state saved there: the Trainer's own count stands
    assert f"{folder} has no {STATE_FILE}" in caplog.text


def test_a_checkpoint_folder_that_is_not_there_is_an_error_not_a_skip(
    trainer: PruningTrainer, tmp_path: Path
) -> None:
    callbacks = trainer.callback_handler.callbacks
    [callback] = [c for c in callbacks if type(c).__module__ == "bls.integrations.hf"]
    trainer.state.global_step = 7
    folder = tmp_path / "checkpoint-7"
    with pytest.raises(RuntimeError, match=re.escape(f"{folder} does not exist, so {STATE_FILE}")):
        trainer.callback_handler.on_save(trainer.args, trainer.state, trainer.control)
    folder.mkdir()
    trainer.callback_handler.on_save(trainer.args, trainer.state, trainer.control)
    saved = torch.load(folder / STATE_FILE, weights_only=True)
    assert saved.keys() == trainer.handler.state_dict().keys()
    assert callback.handler is trainer.handler


def test_the_index_column_is_kept_and_a_missing_column_list_is_an_error(
    trainer: PruningTrainer, monkeypatch: pytest.MonkeyPatch
) -> None:
    trainer._set_signature_columns_if_needed()
    assert "index" in trainer._signature_columns and "input_ids" in trainer._signature_columns
    trainer._signature_columns = None
    monkeypatch.setattr(Trainer, "_set_signature_columns_if_needed", lambda self: None)
    with pytest.raises(RuntimeError, match="left _signature_columns as NoneType, not a list"):
        trainer._set_signature_columns_if_needed()


def test_the_sampler_is_the_handlers_and_another_data_set_is_refused(
    trainer: PruningTrainer,
) -> None:
    assert trainer._get_train_sampler(trainer.handler) is trainer.handler.sampler
    assert trainer._get_train_sampler(train_dataset=trainer.handler) is trainer.handler.sampler
    assert trainer._get_train_sampler() is trainer.handler.sampler
    with pytest.raises(ValueError, match=r"sampler of another data set \(TokenData\)"):
        trainer._get_train_sampler(TokenData(4))


def test_a_training_batch_without_indices_is_an_error(trainer: PruningTrainer) -> None:
    item = TokenData(4)[0]
    inputs = {
        "input_ids": item["input_ids"][None],
        "attention_mask": item["attention_mask"][None],
        "labels": torch.tensor([item["labels"]]),
    }
    model = trainer.model.train()
    with pytest.raises(RuntimeError, match="a training batch has no 'index' column"):
        trainer.compute_loss(model, inputs)
    loss = trainer.compute_loss(model.eval(), inputs)  # evaluation: no indices needed
    assert loss.ndim == 0
