"""Hugging Face integration: ``PruningTrainer`` with the real ``transformers.Trainer`` on CPU.

A 2-layer BERT built from a config trains a few epochs on generated tokens. The tests check
what the core tests check: scores equal the BLS formula applied to the model's own losses of
the micro-batches it trained on (gradient accumulation and Accelerate's read-ahead included),
every index the handler attached belongs to the sample it came with, pruning saves samples,
Accelerate's batch sharding deals one global plan out to the ranks, and resuming from a
Trainer checkpoint reproduces the next epoch's sample list.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from _hf_setup import RecordingTrainer, TokenData, tiny_bert, training_arguments
from _launch import run_two_ranks
from _replay import bls_replay
from accelerate.data_loader import prepare_data_loader
from torch.utils.data import DataLoader

import bls.epochs
import bls.sampler
from bls import BLS, InfoBatch
from bls.integrations.hf import STATE_FILE, PruningTrainer

ALPHA = 0.6
TESTS = Path(__file__).parent


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


def test_rejects_a_plain_dataset(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="train_dataset: PruningTrainer needs a pruning dataset"):
        PruningTrainer(
            model=tiny_bert(), args=training_arguments(str(tmp_path)), train_dataset=TokenData(8)
        )
