"""Independent sequences, the Keras `pad_sequences` way (`arlm train --sequences lines`).

The token stream is cut into sequences (lines, or documents separated by blank lines) at its
line ends: "\n", and a word model's "▁\n". Each is read on its own from a fresh state, with
full backpropagation through it:

    inputs   <s>  t1  t2  ...  tn          the start token, then the sequence
    targets  t1   t2  ...  tn  </s>        the sequence, then the end token (for the line end
                                           or blank line that it replaced)

A batch pads its rows to the longest one: after the sequence (`post`) or before it (`pre`).
Pads are never read by the recurrent layer (the rows are packed, or left-aligned for models
that step), and the loss ignores them, so `pre` and `post` train the same model. Sequences
of similar length are batched together (bucketing) so that little is padding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from arlm.errors import ArlmError, UsageError
from arlm.loss import linear_cross_entropy

UNITS = ("lines", "documents")
PADDINGS = ("pre", "post")
IGNORE = -100  # the target of a pad: cross_entropy skips it


SEPARATOR = {"lines": 1, "documents": 2}  # the line ends that end a sequence: what </s> stands for

# The ids that end a line, each with the bytes (and characters) it stands for
# (Tokenizer.line_ends): "\n" (1), and a word model's "▁\n" (2), a line's trailing space and
# its newline. One id alone is a "\n" of one byte.
LineEnds = dict[int, int] | int


def split(ids: np.ndarray, line_ends: LineEnds, unit: str) -> list[np.ndarray]:
    """The sequences of a token stream: cut at each line end (`lines`) or at each run of two or
    more (`documents`). The line ends themselves are left out; empty sequences are dropped."""
    ids = np.asarray(ids)
    is_end = np.isin(ids, list(_lengths(line_ends)))
    return [ids[a:b] for a, b, _ in _pieces(is_end, unit) if _kept(is_end[a:b], unit)]


def unscored_newlines(ids: np.ndarray, line_ends: LineEnds, unit: str) -> int:
    """How many line ends of `ids` no target stands for (see `_unscored`): each is a word."""
    return len(_unscored(ids, _lengths(line_ends), unit))


def unscored_bytes(ids: np.ndarray, line_ends: LineEnds, unit: str) -> int:
    """The bytes (and characters) of the line ends of `ids` that no target stands for."""
    lengths = _lengths(line_ends)
    return sum(lengths[i] for i in _unscored(ids, lengths, unit).tolist())


def _lengths(line_ends: LineEnds) -> dict[int, int]:
    return line_ends if isinstance(line_ends, dict) else {int(line_ends): 1}


def _unscored(ids: np.ndarray, lengths: dict[int, int], unit: str) -> np.ndarray:
    """The line-end ids that no target stands for: the `</s>` of a sequence stands for the
    SEPARATOR line ends after it, whichever pieces they are (none at the end of the text), a
    document's single line ends are its own tokens, and the rest (blank lines in `lines`,
    line ends past two in a row in `documents`) are predicted by nothing."""
    ids = np.asarray(ids)
    is_end = np.isin(ids, list(lengths))
    predicted = np.zeros(len(ids), dtype=bool)
    for start, stop, cut in _pieces(is_end, unit):
        if _kept(is_end[start:stop], unit):
            predicted[start : min(cut, stop + SEPARATOR[unit])] = True
    return ids[is_end & ~predicted]


def _pieces(is_end: np.ndarray, unit: str) -> list[tuple[int, int, int]]:
    """The stretches of the stream between cuts, as (start, stop, end of the cut after it)."""
    if unit not in UNITS:
        raise UsageError(f"--sequences must be stream, lines or documents, got {unit!r}")
    breaks = np.flatnonzero(is_end)
    if unit == "documents":  # a blank line: a line end right after a line end
        runs = np.split(breaks, np.flatnonzero(np.diff(breaks) > 1) + 1) if len(breaks) else []
        cuts = [(run[0], run[-1]) for run in runs if len(run) >= 2]
    else:
        cuts = [(b, b) for b in breaks]
    pieces, start = [], 0
    for first, last in cuts:
        pieces.append((start, int(first), int(last) + 1))
        start = int(last) + 1
    pieces.append((start, len(is_end), len(is_end)))
    return pieces


def _kept(is_end: np.ndarray, unit: str) -> bool:
    """Empty stretches are no sequence, nor, for documents, stretches of line ends only."""
    return len(is_end) > 0 and (unit == "lines" or not is_end.all())


def truncate(sequences: list[np.ndarray], max_length: int | None) -> tuple[list, int]:
    """Cut sequences to `max_length` ids; returns them and how many were cut."""
    if not max_length:
        return sequences, 0
    cut = sum(len(s) > max_length for s in sequences)
    return [s[:max_length] for s in sequences], cut


@dataclass
class Batch:
    inputs: torch.Tensor  # (B, L) int64, pads hold 0
    targets: torch.Tensor  # (B, L) int64, pads hold IGNORE
    lengths: torch.Tensor  # (B,) ids in each row (the sequence + 1)
    padding: str  # where the pads are: "pre" or "post"

    @property
    def tokens(self) -> int:
        return int(self.lengths.sum())


def pad(sequences: list[np.ndarray], bos: int, eos: int, padding: str = "post") -> Batch:
    """<s> + sequence as inputs, sequence + </s> as targets, padded to the longest row."""
    if padding not in PADDINGS:
        raise UsageError(f"--padding must be pre or post, got {padding!r}")
    lengths = [len(s) + 1 for s in sequences]
    width = max(lengths)
    inputs = np.zeros((len(sequences), width), dtype=np.int64)
    targets = np.full((len(sequences), width), IGNORE, dtype=np.int64)
    for row, seq in enumerate(sequences):
        start = width - len(seq) - 1 if padding == "pre" else 0
        inputs[row, start : start + len(seq) + 1] = np.concatenate([[bos], seq])
        targets[row, start : start + len(seq) + 1] = np.concatenate([seq, [eos]])
    return Batch(
        torch.from_numpy(inputs), torch.from_numpy(targets), torch.tensor(lengths), padding
    )


def left_aligned(batch: Batch) -> Batch:
    """The same batch with every row's ids first (post padding): a pre-padded row is rolled."""
    if batch.padding == "post":
        return batch
    width = batch.inputs.shape[1]
    shift = width - batch.lengths  # pads in front of each row
    index = (torch.arange(width)[None, :] + shift[:, None]) % width
    return Batch(
        batch.inputs.gather(1, index), batch.targets.gather(1, index), batch.lengths, "post"
    )


def batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Bucketing: shuffle, sort each stretch of 50 batches by length, cut it into batches and
    shuffle those: rows of a batch have similar lengths, yet every pass is in a new order."""
    order = rng.permutation(len(lengths))
    stretch = batch_size * 50
    out = []
    for start in range(0, len(order), stretch):
        chunk = order[start : start + stretch]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        out += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [out[i] for i in rng.permutation(len(out))]


def loss(model, batch: Batch, device: torch.device) -> tuple[torch.Tensor, int]:
    """Mean loss over the real targets of `batch` (pads ignored) and their number."""
    batch = left_aligned(batch)
    inputs, targets = batch.inputs.to(device), batch.targets.to(device)
    state = model.init_state(inputs.shape[0])
    real = targets != IGNORE
    if model.fused:  # packed: the recurrent layer reads no pad
        h, _ = model.features(inputs, state, batch.lengths)
        output = model.output
        value = linear_cross_entropy(h[real], output.weight, output.bias, targets[real])
    else:  # stepped from the left: pads come after the sequence and change nothing before it
        logits, _ = model(inputs, state)
        value = F.cross_entropy(logits[real].float(), targets[real])
    return value, int(real.sum())


@torch.no_grad()
def evaluate(
    model, sequences: list[np.ndarray], bos: int, eos: int, device: torch.device, size: int = 32
) -> tuple[float, int]:
    """Mean loss per target (the end tokens included) over independent sequences."""
    if not sequences:
        raise ArlmError("the evaluation text holds no sequence: give more text")

    def batch_loss(rows: np.ndarray) -> tuple[torch.Tensor, int]:
        return loss(model, pad([sequences[i] for i in rows], bos, eos), device)

    return _mean_loss(model, sequences, size, batch_loss)


def _mean_loss(model, sequences: list, size: int, batch_loss) -> tuple[float, int]:
    """The mean of `batch_loss(rows)` over batches of `size` rows of similar length (little
    padding), weighted by the targets each counts; the model in eval mode meanwhile."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for rows in by_length(sequences, size):
            value, n = batch_loss(rows)
            total += value.item() * n
            count += n
    finally:
        model.train(was_training)
    return total / max(count, 1), count


def by_length(sequences: list, size: int) -> list[np.ndarray]:
    """The rows of `sequences` in batches of `size`, shortest first."""
    order = np.argsort([len(s) for s in sequences], kind="stable")
    return [order[start : start + size] for start in range(0, len(order), size)]


# -- pairs of sequences: a source, and the target a decoder writes from it (--task seq2seq) -----


@dataclass
class PairBatch:
    """Sources (B, S), each first and pads (0) after, their lengths (B,) (on the CPU, where
    packing reads them), and the targets as a Batch: <s> + target in, target + </s> out."""

    sources: torch.Tensor
    lengths: torch.Tensor
    target: Batch


def pair_batch(sources: list, targets: list, bos: int, eos: int) -> PairBatch:
    ids, lengths = padded(sources)
    return PairBatch(torch.from_numpy(ids), torch.from_numpy(lengths), pad(targets, bos, eos))


def pair_loss(model, batch: PairBatch, device: torch.device) -> tuple[torch.Tensor, int]:
    """Teacher forcing: the mean loss of the target tokens (</s> included), and their count."""
    inputs, targets = batch.target.inputs.to(device), batch.target.targets.to(device)
    h = model.target_features(batch.sources.to(device), batch.lengths, inputs)
    real = targets != IGNORE
    output = model.output
    return linear_cross_entropy(h[real], output.weight, output.bias, targets[real]), int(real.sum())


@torch.no_grad()
def evaluate_pairs(
    model, sources: list, targets: list, bos: int, eos: int, device: torch.device, size: int = 64
) -> tuple[float, int]:
    """Mean loss per target token (the end tokens included) over pairs, teacher forced."""

    def batch_loss(rows: np.ndarray) -> tuple[torch.Tensor, int]:
        batch = pair_batch([sources[i] for i in rows], [targets[i] for i in rows], bos, eos)
        return pair_loss(model, batch, device)

    return _mean_loss(model, sources, size, batch_loss)


def greedy(logits: torch.Tensor) -> torch.Tensor:
    return logits.argmax(-1)


@torch.no_grad()
def decode(
    model, sources: list, bos: int, eos: int, max_tokens: int, pick=greedy, size: int = 64
) -> list[list[int]]:
    """Each source's output ids (</s> left out), at most `max_tokens`: the decoder started
    from <s> and fed back the token `pick(logits (B, V)) -> (B,)` chooses at each step (the
    argmax by default). `model.conditioned` gives the decoder its sources (models.seq2seq)."""
    out: list[list[int]] = [[] for _ in sources]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for rows in by_length(sources, size):
            ids, lengths = padded([sources[i] for i in rows])
            decoder = model.conditioned(torch.from_numpy(ids).to(device), torch.from_numpy(lengths))
            state = decoder.init_state(len(rows))
            tokens = torch.full((len(rows),), bos, device=device)
            running = np.ones(len(rows), dtype=bool)
            for _ in range(max_tokens):
                logits, state = decoder(tokens[:, None], state)
                tokens = pick(logits[:, -1])
                for j, token in enumerate(tokens.tolist()):
                    running[j] &= token != eos
                    if running[j]:
                        out[rows[j]].append(token)
                if not running.any():
                    break
    finally:
        model.train(was_training)
    return out


def padded(texts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Texts' ids in rows (B, the longest), each text first and pads (0) after, and the
    texts' lengths (B,); an empty text counts one pad, so that every row has a last token."""
    lengths = np.array([max(1, len(t)) for t in texts], dtype=np.int64)
    ids = np.zeros((len(texts), lengths.max()), dtype=np.int64)
    for row, text in enumerate(texts):
        ids[row, : len(text)] = text
    return ids, lengths
