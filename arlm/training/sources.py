"""What a pass of training reads, chosen once by the trainer from --sequences:

- Stream: one long text cut into B rows read in parallel, TBPTT windows along them (the state
  carried from window to window); the position is a column of the rows.
- Sequences: independent lines or documents, padded into batches of similar lengths, each read
  from a fresh state with full backpropagation; the position is a batch of the pass.

Both give the trainer the same four things: the work of a pass from a position, the number of
updates a pass takes, how far along the passes are, and the validation loss.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch

from arlm import sequences as seqs
from arlm.distributed import World, my_share
from arlm.errors import UsageError
from arlm.models import LanguageModel
from arlm.runtime import autocast
from arlm.score import evaluate
from arlm.settings import TrainConfig
from arlm.streams import Window, batchify, windows
from arlm.training.awd import jitter_length
from arlm.training.tbptt import counted_columns


def make_source(
    train_ids: np.ndarray,
    val_ids: np.ndarray,
    config: TrainConfig,
    specials: dict | None,
    world: World,
) -> Stream | Sequences:
    """The source --sequences picks: a stream (TBPTT), or independent sequences."""
    if config.sequences == "stream":
        return Stream(train_ids, config, world)
    return Sequences(train_ids, val_ids, config, specials)


class Stream:
    """TBPTT over the B rows of one token stream (this process's share of them)."""

    def __init__(self, train_ids: np.ndarray, config: TrainConfig, world: World) -> None:
        self.config, self.world = config, world
        self.rows = my_share(world, batchify(train_ids, config.batch_size), 0)

    def warnings(self) -> list[str]:
        return []

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil((self.rows.shape[1] - 1) / self.config.k1)

    def passes(self, epoch: int, position: int) -> float:
        return epoch + position / max(1, self.rows.shape[1] - 1)

    def work(self, epoch: int, position: int, step: int) -> Iterator[Window]:
        """The windows of the rest of the pass from column `position`, for updates from `step`
        on. With --bptt-jitter each window's length is drawn (jitter_length) from a generator
        seeded by (seed, step), so that a resumed run, or one that went back to a good state,
        draws the same lengths; each still reaches k2 - k1 tokens further back."""
        c = self.config
        if not c.bptt_jitter:
            yield from windows(self.rows, c.k1, c.k2, position)
            return
        end, extra = self.rows.shape[1] - 1, c.backprop_steps - c.k1
        while position < end:
            length = jitter_length(c.k1, np.random.default_rng([c.seed, step]))
            window = next(windows(self.rows, length, length + extra, position))
            yield window
            position, step = self.next_position(window), step + 1

    def next_position(self, window: Window) -> int:
        """Where the window after `window` starts: k1 columns on, or, with --bptt-jitter, as
        many as `window` counted."""
        stride = counted_columns(window) if self.config.bptt_jitter else self.config.k1
        return window.position + stride

    def validation_loss(
        self, model: LanguageModel, val_ids: np.ndarray, device: torch.device, precision
    ) -> tuple[float, int, int]:
        """(mean loss, tokens scored, bytes no target predicts: none), as `arlm eval` scores;
        with several processes rank 0 evaluates (and shares the result)."""
        if not self.world.main:
            return 0.0, len(val_ids), 0
        return (*evaluate(model, val_ids, device, precision), 0)


class Sequences:
    """Independent sequences (--sequences lines|documents), padded, in bucketed batches."""

    def __init__(
        self, train_ids: np.ndarray, val_ids: np.ndarray, config: TrainConfig, specials: dict | None
    ) -> None:
        if not specials or not specials.get("line_ends"):
            raise UsageError("--sequences needs a dataset whose tokenizer has a newline piece")
        self.config, self.specials = config, specials
        ends, unit = specials["line_ends"], config.sequences
        self.train_sequences, self.truncated = seqs.truncate(
            seqs.split(train_ids, ends, unit), config.max_length
        )
        self.val_sequences = seqs.split(val_ids, ends, unit)  # all of it, as `arlm eval` scores
        self.val_unscored_bytes = seqs.unscored_bytes(val_ids, ends, unit)
        if not self.train_sequences or not self.val_sequences:
            raise UsageError(f"the dataset holds no {unit} to train or validate on")
        self.lengths = np.array([len(s) for s in self.train_sequences])

    def warnings(self) -> list[str]:
        if not self.truncated:
            return []
        return [
            f"{self.truncated:,} of {len(self.lengths):,} training sequences were longer than "
            f"--max-length {self.config.max_length} and were cut"
        ]

    def batches(self, epoch: int) -> list[np.ndarray]:
        """The batches of sequence indices of pass `epoch`: the same for a resumed run."""
        rng = np.random.default_rng([self.config.seed, epoch])
        return seqs.batches(self.lengths, self.config.batch_size, rng)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.batches(0))

    def passes(self, epoch: int, position: int) -> float:
        return epoch + position / max(1, self.steps_per_epoch)

    def work(self, epoch: int, position: int, step: int) -> Iterator[seqs.Batch]:
        """The padded batches of the rest of pass `epoch`, from batch `position` on."""
        s = self.specials
        for rows in self.batches(epoch)[position:]:
            chosen = [self.train_sequences[i] for i in rows]
            yield seqs.pad(chosen, s["bos"], s["eos"], self.config.padding)

    def validation_loss(
        self, model: LanguageModel, val_ids: np.ndarray, device: torch.device, precision
    ) -> tuple[float, int, int]:
        """(mean loss, targets scored, bytes of the line ends no target predicts: score.score)."""
        s = self.specials
        with autocast(device, precision):
            loss, count = seqs.evaluate(model, self.val_sequences, s["bos"], s["eos"], device)
        return loss, count, self.val_unscored_bytes
