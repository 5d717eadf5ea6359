"""What the trainer yields, one record per event: the caller prints, logs and saves from them."""

from __future__ import annotations

from dataclasses import dataclass

# why a run stopped, in order of precedence when processes disagree (distributed.highest)
STOP_REASONS = (None, "interrupted", "max steps", "epochs", "time budget", "patience")


@dataclass
class StepRecord:
    step: int
    epoch: int
    tokens: int  # training targets seen so far
    loss: float  # nats per token, this update
    lr: float
    grad_norm: float
    clipped: bool
    tokens_per_second: float
    elapsed: float  # wall time of the runs so far
    progress: float  # 0..1 towards the first stopping rule
    skipped: bool = False  # the loss or the gradients were not finite: no update


@dataclass
class RollbackRecord:
    """Too many non-finite updates in a row: the trainer went back to a good state."""

    step: int  # where it failed
    to_step: int  # the state it went back to
    lr_scale: float  # the learning rate is now multiplied by this


@dataclass
class EvalRecord:
    step: int
    tokens: int
    val_loss: float
    perplexity: float
    bits_per_byte: float
    best: bool
    elapsed: float
    accuracy: float | None = None  # a classifier's share of validation texts labelled right


@dataclass
class StopRecord:
    step: int
    reason: str
