"""Tiny data, model and a recording trainer shared by ``test_hf.py`` and ``_hf_ddp.py``.

Not a test module. Nothing is downloaded: the model is a 2-layer BERT with hidden size 32
built from a config, the data are generated token sequences.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset
from transformers import BertConfig, BertForSequenceClassification

from bls.integrations.hf import PruningTrainer

VOCAB, LENGTH = 48, 8


class TokenData(Dataset[dict[str, Any]]):
    """``n`` generated sequences; the label says whether the first token is in the upper half."""

    def __init__(self, n: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.input_ids = torch.randint(1, VOCAB, (n, LENGTH), generator=generator)
        self.labels = (self.input_ids[:, 0] >= VOCAB // 2).long()

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {
            "input_ids": self.input_ids[index],
            "attention_mask": torch.ones(LENGTH, dtype=torch.long),
            "labels": int(self.labels[index]),
        }


def tiny_bert(seed: int = 0) -> BertForSequenceClassification:
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=LENGTH,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=2,
    )
    torch.manual_seed(seed)  # test code: fixes the initial weights
    return BertForSequenceClassification(config)


class RecordingTrainer(PruningTrainer):
    """Records, per micro-batch, the epoch, the indices, the inputs and the model's mean loss.

    The loss comes from a forward hook on the model, so it is what the model computed, not
    what the handler returned.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.micro_batches: list[dict[str, Any]] = []
        self.model.register_forward_hook(self._record_loss)

    def _record_loss(self, module: Any, inputs: Any, output: Any) -> None:
        if module.training and self.micro_batches and "loss" not in self.micro_batches[-1]:
            self.micro_batches[-1]["loss"] = float(output.loss.detach())

    def compute_loss(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if model.training:
            self.micro_batches.append(
                {
                    "epoch": self.handler.epoch,  # the plan being iterated
                    "index": inputs["index"].tolist(),
                    "input_ids": inputs["input_ids"].cpu(),
                }
            )
        return super().compute_loss(model, inputs, *args, **kwargs)


def training_arguments(output_dir: str, **options: Any) -> Any:
    from transformers import TrainingArguments

    settings: dict[str, Any] = {
        "output_dir": output_dir,
        "per_device_train_batch_size": 8,
        "num_train_epochs": 3,
        "learning_rate": 5e-3,
        "use_cpu": True,
        "report_to": [],
        "save_strategy": "no",
        "logging_strategy": "no",
        "disable_tqdm": True,
        "seed": 0,
        "dataloader_num_workers": 0,
        **options,
    }
    return TrainingArguments(**settings)
