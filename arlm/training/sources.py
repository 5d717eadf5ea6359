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
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

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

VALIDATION_BATCH = 64  # texts a validation batch reads


def make_source(
    train_ids: np.ndarray,
    val_ids: np.ndarray,
    config: TrainConfig,
    specials: dict | None,
    world: World,
) -> Stream | Sequences | Labelled | Pairs:
    """The source --sequences picks: a stream (TBPTT), or independent sequences; or, for
    --task classify, labelled texts (then `train_ids` and `val_ids` are labelled.Split), and
    for --task seq2seq, pairs of texts (pairs.Split)."""
    if config.task == "classify":
        return Labelled(train_ids, val_ids, config)
    if config.task == "seq2seq":
        return Pairs(train_ids, val_ids, config, specials)
    if config.sequences == "stream":
        return Stream(train_ids, config, world)
    return Sequences(train_ids, val_ids, config, specials)


class _Batched:
    """What a source of padded batches shares: bucketed batches of rows of similar length
    (`self.lengths`), in an order drawn from (seed, pass), the same for a resumed run."""

    config: TrainConfig
    lengths: np.ndarray
    accuracy: float | None = None  # figures beyond the loss: none but a classifier's

    def batches(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.config.seed, epoch])
        return seqs.batches(self.lengths, self.config.batch_size, rng)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.batches(0))

    def passes(self, epoch: int, position: int) -> float:
        return epoch + position / max(1, self.steps_per_epoch)


class Stream:
    """TBPTT over the B rows of one token stream (this process's share of them)."""

    accuracy = None

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


class Sequences(_Batched):
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


@dataclass
class LabelledBatch:
    """Texts and their labels: inputs (B, L) with each row's text first and pads (0) after,
    the texts' lengths (B,) and labels (B,)."""

    inputs: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor


def labelled_batch(split, rows: np.ndarray) -> LabelledBatch:
    inputs, lengths = seqs.padded([split.text(int(i)) for i in rows])
    labels = split.labels[rows].astype(np.int64)
    return LabelledBatch(*(torch.from_numpy(a) for a in (inputs, lengths, labels)))


class Labelled(_Batched):
    """Labelled texts (--task classify, arlm.labelled): padded batches of texts of similar
    length, each with its label; validation gives the loss and the accuracy."""

    def __init__(self, train, val, config: TrainConfig) -> None:
        if not len(train) or not len(val):
            raise UsageError("a classifier needs labelled texts to train and to validate on")
        self.train, self.val, self.config = train, val, config
        self.lengths = np.diff(train.offsets)

    def warnings(self) -> list[str]:
        return []

    def work(self, epoch: int, position: int, step: int) -> Iterator[LabelledBatch]:
        for rows in self.batches(epoch)[position:]:
            yield labelled_batch(self.train, rows)

    def class_weights(self, labels: int) -> torch.Tensor:
        """1 / each label's share of the training texts, scaled to a mean of one over the
        texts: a rare label's errors cost as much in all as a frequent one's."""
        counts = np.bincount(self.train.labels, minlength=labels).astype(np.float64)
        return torch.from_numpy(len(self.train.labels) / (labels * np.maximum(counts, 1))).float()

    @torch.no_grad()
    def validation_loss(self, model, val_ids, device: torch.device, precision):
        """(mean loss, texts scored, 0); the accuracy is kept in `self.accuracy`."""
        was_training = model.training
        model.eval()
        total = correct = 0.0
        order = np.argsort(np.diff(self.val.offsets), kind="stable")
        try:
            for start in range(0, len(order), VALIDATION_BATCH):
                batch = labelled_batch(self.val, order[start : start + VALIDATION_BATCH])
                with autocast(device, precision):
                    scores = model(batch.inputs.to(device), batch.lengths).float()
                labels = batch.labels.to(device)
                total += float(F.cross_entropy(scores, labels, reduction="sum"))
                correct += float((scores.argmax(-1) == labels).sum())
        finally:
            model.train(was_training)
        self.accuracy = correct / len(self.val)
        return total / len(self.val), len(self.val), 0


class Pairs(_Batched):
    """Pairs of texts (--task seq2seq, arlm.pairs): padded batches of sources of similar
    length with their targets (translate.PairBatch); validation gives the loss per target
    token and, as the accuracy, the share of sources whose greedy decoding is their target."""

    def __init__(self, train, val, config: TrainConfig, specials: dict) -> None:
        if not len(train) or not len(val):
            raise UsageError("seq2seq needs pairs of texts to train and to validate on")
        self.train, self.val, self.config = train, val, config
        self.bos, self.eos = specials["bos"], specials["eos"]
        self.lengths = np.diff(train.source_offsets)

    def warnings(self) -> list[str]:
        return []

    def work(self, epoch: int, position: int, step: int):
        for rows in self.batches(epoch)[position:]:
            chosen = [int(i) for i in rows]
            sources = [self.train.source(i) for i in chosen]
            targets = [self.train.target(i) for i in chosen]
            yield seqs.pair_batch(sources, targets, self.bos, self.eos)

    def validation_loss(self, model, val_ids, device: torch.device, precision):
        """(mean loss per target token, tokens scored, 0); the exact-match share is kept in
        `self.accuracy`: a decoding longer than the longest target cannot match, so none is
        decoded further."""
        sources = [self.val.source(i) for i in range(len(self.val))]
        targets = [self.val.target(i) for i in range(len(self.val))]
        with autocast(device, precision):
            loss, count = seqs.evaluate_pairs(model, sources, targets, self.bos, self.eos, device)
            longest = max(len(t) for t in targets)
            outputs = seqs.decode(model, sources, self.bos, self.eos, longest + 1)
        hits = sum(list(o) == t.tolist() for o, t in zip(outputs, targets, strict=True))
        self.accuracy = hits / len(targets)
        return loss, count, 0
