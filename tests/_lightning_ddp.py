"""Lightning DDP run on 2 CPU processes, executed by ``test_lightning.py``; not a test module.

Usage: ``python tests/_lightning_ddp.py OUT_DIR``. Lightning's DDP strategy relaunches this
script for rank 1. Each rank writes ``OUT_DIR/rank<r>.pt`` with the batches it trained on
(epoch, ids, loss), its final scores and the handler's history.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
from _lightning_model import TinyModule, make_data

from bls import BLS, InfoBatch
from bls.integrations.lightning import PruningCallback

N, BATCH, EPOCHS, ALPHA = 96, 8, 3, 0.6


def main(out_dir: Path) -> None:
    handler = BLS(InfoBatch(make_data(N), num_epochs=4, prune_ratio=0.5), alpha=ALPHA).proxy()
    module = TinyModule(handler, BATCH)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=EPOCHS,
        callbacks=[PruningCallback(handler)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module)
    torch.save(
        {
            "rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "steps": module.steps,
            "scores": handler.scores.cpu(),
            "history": handler.history,
            "sampler_type": type(trainer.train_dataloader.sampler).__name__,
        },
        out_dir / f"rank{trainer.global_rank}.pt",
    )
    # Lightning leaves the process group up; gloo can abort at interpreter exit without this.
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
