"""Training throughput of arlm and of the textbook reference on the same token ids."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from arlm import data
from arlm.models import ModelConfig, build_model
from arlm.train import StepRecord, TrainConfig, Trainer
from bench.reference import ReferenceTrainer


def arlm_rate(
    dataset: Path, model: ModelConfig, config: TrainConfig, steps: int, warmup: int = 5
) -> float:
    """Tokens/s of arlm's trainer over `steps` updates, after `warmup` untimed ones."""
    meta = data.load_meta(dataset)
    model.vocab_size = meta["vocab_size"]
    config.max_steps, config.epochs, config.eval_every = warmup + steps, None, 10**9
    torch.manual_seed(config.seed)
    trainer = Trainer(
        build_model(model), data.open_ids(dataset, "train"), data.open_ids(dataset, "val"), config
    )
    seen, started = 0, None
    for record in trainer.run():
        if not isinstance(record, StepRecord):
            break
        if record.step == warmup:
            seen, started = record.tokens, time.perf_counter()
        finished = time.perf_counter()
    return (trainer.tokens - seen) / (finished - started)


def reference_rate(
    dataset: Path, model: ModelConfig, batch_size: int, bptt: int, steps: int, warmup: int = 5
) -> float:
    meta = data.load_meta(dataset)
    trainer = ReferenceTrainer(
        np.asarray(data.open_ids(dataset, "train")),
        meta["vocab_size"],
        model.embedding_dim,
        model.hidden_size,
        model.num_layers,
        model.dropout,
        batch_size,
        bptt,
    )
    for _ in range(warmup):
        trainer.step()
    started, seen = time.perf_counter(), 0
    for _ in range(steps):
        seen += trainer.step()
    return seen / (time.perf_counter() - started)
