"""Hugging Face Trainer on 2 CPU processes (torchrun), executed by ``test_hf.py``.

Not a test module. Usage: ``torchrun --nproc_per_node 2 tests/_hf_ddp.py OUT_DIR``. Each rank
writes ``OUT_DIR/rank<r>.pt`` with the micro-batches it trained on (epoch, indices, the model's
loss), its final scores and the handler's history.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from _hf_setup import RecordingTrainer, TokenData, tiny_bert, training_arguments

from bls import BLS, InfoBatch
from bls.integrations.hf import STATE_FILE

N, ALPHA = 72, 0.6


def main(out_dir: Path) -> None:
    data = TokenData(N)
    handler = BLS(InfoBatch(data, num_epochs=4, prune_ratio=0.5), alpha=ALPHA).proxy()
    trainer = RecordingTrainer(
        model=tiny_bert(),
        # A checkpoint at step 3, inside epoch 0: every rank's on_save gathers the deferred
        # losses into the handler's state, and rank 0 writes it.
        args=training_arguments(
            str(out_dir / "run"), ddp_backend="gloo", save_strategy="steps", save_steps=3
        ),
        train_dataset=handler,
    )
    trainer.train()
    rank = dist.get_rank()
    torch.save(
        {
            "world_size": dist.get_world_size(),
            "micro_batches": [
                {key: value for key, value in batch.items() if key != "input_ids"}
                for batch in trainer.micro_batches
            ],
            "rows_match": all(
                torch.equal(batch["input_ids"], data.input_ids[batch["index"]])
                for batch in trainer.micro_batches
            ),
            "scores": handler.scores.cpu(),
            "history": handler.history,
            "saved": sorted(p.parent.name for p in (out_dir / "run").glob(f"*/{STATE_FILE}")),
        },
        out_dir / f"rank{rank}.pt",
    )
    # Without this, gloo's worker threads can outlive the interpreter and abort the process
    # at exit (SIGABRT, "terminate called without an active exception"); meet, then close.
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
