"""Training throughput of arlm and of the textbook reference on the same token ids.

Each measurement runs in a fresh process (`in_process`), so that nothing one trainer sets up
for itself (arlm keeps freed memory, see arlm.runtime) helps or hinders the other.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from arlm import data
from arlm.models import ModelConfig, build_model
from arlm.training import StepRecord, TrainConfig, Trainer
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


def in_process(function: str, *args) -> float:
    """Call `bench.speed.<function>(*args)` in a new Python process; return its result."""
    encoded = json.dumps(
        [
            str(a)
            if isinstance(a, Path)
            else asdict(a)
            if hasattr(a, "__dataclass_fields__")
            else a
            for a in args
        ]
    )
    code = (
        "import json, sys; from pathlib import Path; from bench import speed; "
        "from arlm.models import ModelConfig; from arlm.settings import TrainConfig; "
        f"args = json.loads({encoded!r}); print(speed.{function}_from_json(args))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    return float(result.stdout.strip().splitlines()[-1])


def arlm_rate_from_json(args: list) -> float:
    dataset, model, config, *rest = args
    return arlm_rate(Path(dataset), ModelConfig(**model), TrainConfig(**config), *rest)


def reference_rate_from_json(args: list) -> float:
    dataset, model, *rest = args
    return reference_rate(Path(dataset), ModelConfig(**model), *rest)
