"""Scoring text with a trained model on one scale: nats per token, perplexity, and bits per byte
and per character of the original text, which compare models across tokenizers; for a word
tokenizer also perplexity per word, the figure word-level papers publish."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from arlm import sequences as seqs
from arlm.errors import ArlmError
from arlm.formats import atomic_write
from arlm.loss import token_losses
from arlm.models import LanguageModel, State, device_of
from arlm.runtime import autocast
from arlm.streams import batchify, windows
from arlm.tokenizer import Tokenizer

if TYPE_CHECKING:  # a type only: scoring reads no files (data reads the texts)
    from arlm.data import Text

LN2 = math.log(2)


def score(
    model: LanguageModel,
    text: Text,
    device: torch.device,
    precision: torch.dtype,
    logprobs: np.ndarray | None = None,
    by_sequence: tuple[str, Tokenizer] | None = None,
) -> dict:
    """The figures of `text`: every token scored once, with all the text before it.

    `tokens` is the number of targets scored: len(text.ids) for a stream. A model trained on
    --sequences reads each line (or document) on its own and predicts `</s>` at its end, which
    stands for the line end that ends a line, or the blank line (two line ends) that ends a
    document; the line ends of blank lines (lines), and those past the first two of a run
    (documents), are predicted by nothing, so their bytes and characters (1 for "\n", 2 for a
    word model's "▁\n") and words (a line end counts as one) are left out of bits per byte and
    per character and of perplexity per word. Adding blank lines then changes no figure, and
    figures compare with stream models, which predict every line end. With `logprobs`
    (len(text.ids) floats, for a stream), writes each token's log-probability at its position.

    With `text.words`, also `words` and `perplexity_per_word`, exp(total nats / words): the
    figure of word-level papers, which count a line end as a word.
    """
    if len(text.ids) == 0:
        raise ArlmError("the text to score is empty: give some text")
    unscored, unscored_bytes = 0, 0  # line ends that no target predicts, and their bytes
    if by_sequence:
        unit, tokenizer = by_sequence
        ends = tokenizer.line_ends
        pieces = seqs.split(text.ids, ends, unit)
        with autocast(device, precision):
            loss, count = seqs.evaluate(model, pieces, tokenizer.bos_id, tokenizer.eos_id, device)
        unscored = seqs.unscored_newlines(text.ids, ends, unit)
        unscored_bytes = seqs.unscored_bytes(text.ids, ends, unit)  # characters too: ASCII
    else:
        loss, count = evaluate(model, text.ids, device, precision, logprobs=logprobs)
    total_bits = loss * count / LN2
    figures = {
        "tokens": count,
        "loss": loss,
        "perplexity": math.exp(min(loss, 700)),
        "bits_per_byte": total_bits / (text.bytes - unscored_bytes),
        "bits_per_char": total_bits / (text.chars - unscored_bytes),
    }
    if text.words:
        words = text.words - unscored
        figures["words"] = words
        figures["perplexity_per_word"] = math.exp(min(loss * count / words, 700))
    return figures


def write_per_token(
    path: Path, tokenizer: Tokenizer, ids: np.ndarray, logprobs: np.ndarray
) -> None:
    """Every token of the text, in order, with its log-probability (TSV)."""
    lines = ["position\tid\tpiece\tlogprob\n"]
    for position, (token, logprob) in enumerate(zip(ids.tolist(), logprobs.tolist(), strict=True)):
        piece = tokenizer.sp.id_to_piece(token).replace("\t", "\\t").replace("\n", "\\n")
        lines.append(f"{position}\t{token}\t{piece}\t{logprob:.6f}\n")
    text = "".join(lines)
    atomic_write(Path(path), lambda p: p.write_text(text, encoding="utf-8"))


# -- evaluation -------------------------------------------------------------------------------

EVAL_STREAMS = 16  # rows of a long text read in parallel, at most
EVAL_WINDOW = 256  # tokens of each row per forward pass
EVAL_ROW = 4096  # the shortest row: a text under two rows' worth is read as one exact stream
# Tokens read, unscored, before a row that starts mid-text. The n-gram's state is its last
# order - 1 tokens (at most 61, as base ** order < 2 ** 62), so it starts such a row exactly.
# For the recurrent nets and the HMM the state after 512 tokens stands in for the whole text
# before it: TBPTT teaches dependencies over k2 tokens (64 by default), and the state forgets
# where it started within a few hundred. Measured on tinyshakespeare's validation text (111k
# characters, a char LSTM 1x256 at 2.02 nats): 16 rows with no burn-in are off one exact stream
# by 1.4e-4 (relative), with 64 tokens by 7e-8, with 512 by 1e-10. On WikiText-2's 217k
# validation tokens the burn-in reads 4% more.
EVAL_BURN_IN = 512


@torch.no_grad()
def evaluate(
    model: LanguageModel,
    ids: np.ndarray,
    device: torch.device | None = None,
    precision: torch.dtype = torch.float32,
    streams: int = EVAL_STREAMS,
    logprobs: np.ndarray | None = None,
) -> tuple[float, int]:
    """Mean loss in nats per token over every token of `ids`, each predicted from the text
    before it. Returns (mean loss, tokens scored), and the tokens scored are len(ids).

    The first token is scored from the initial state (`initial_logits`), the others with the
    state carried along the text. A long text is read as up to `streams` rows of at least
    EVAL_ROW targets in parallel; a row that starts mid-text first reads the EVAL_BURN_IN tokens
    before it, unscored, and the tail (fewer tokens than rows) continues the last row:

        t0       from initial_logits
        row 0    t1 ..... tL               from the initial state
        row 1    [burn-in] tL+1 ..... t2L
        ...
        tail                        ... tn-1   the last row's state, carried on

    With `logprobs` (len(ids) floats), writes each token's log-probability at its position.
    """
    device = device or device_of(model)
    if len(ids) < 1:
        raise ArlmError("the text to score is empty: give at least one token")
    rows = max(1, min(streams, (len(ids) - 1) // EVAL_ROW))
    length = (len(ids) - 1) // rows  # targets per row; the first one is ids[1]
    was_training = model.training
    model.eval()
    try:
        with autocast(device, precision):
            logits = model.initial_logits(1).to(device)
        first = torch.tensor([int(ids[0])], device=device)
        parts = [F.cross_entropy(logits.float(), first, reduction="none")]
        if length > 0:
            state, grid = _row_states(model, ids, rows, length, device, precision), []
            for window in windows(batchify(ids[: rows * length + 1], rows), EVAL_WINDOW):
                losses, state = _scored(
                    model, window.inputs, window.targets, state, device, precision
                )
                grid.append(losses)
            parts.append(torch.cat(grid, dim=1).flatten())  # read row by row: text order
            tail = np.asarray(ids[rows * length :], dtype=np.int64)
            if len(tail) > 1:  # fewer targets than rows: the last row reads on to the end
                index = torch.tensor([rows - 1], device=state[0].device)
                last = model.select_state(state, index)
                losses, _ = _scored(model, tail[None, :-1], tail[None, 1:], last, device, precision)
                parts.append(losses.flatten())
        scored = torch.cat([part.float() for part in parts]).cpu()
    finally:
        model.train(was_training)
    if logprobs is not None:
        logprobs[:] = -scored.numpy()
    return scored.double().mean().item(), len(scored)


def _row_states(
    model: LanguageModel, ids: np.ndarray, rows: int, length: int, device, precision
) -> State:
    """The state each row starts from: the initial one for row 0, the state after reading the
    EVAL_BURN_IN tokens before it for every other row (a row is longer than the burn-in)."""
    state = model.init_state(1)
    if rows == 1:
        return state
    burn = np.stack([ids[r * length - EVAL_BURN_IN : r * length] for r in range(1, rows)])
    later = model.init_state(rows - 1)
    for start in range(0, EVAL_BURN_IN, EVAL_WINDOW):  # a window at a time: bounded memory
        inputs = torch.from_numpy(burn[:, start : start + EVAL_WINDOW].astype(np.int64))
        with autocast(device, precision):
            if model.fused:  # the state alone: no output layer
                later = model.features(inputs.to(device), later)[1]
            else:
                later = model(inputs.to(device), later)[1]
    return model.concat_state(state, later)


def _scored(
    model: LanguageModel,
    inputs: np.ndarray,
    targets: np.ndarray,
    state: State,
    device: torch.device,
    precision: torch.dtype,
) -> tuple[torch.Tensor, State]:
    """The (B, T) losses of the targets of a stretch of rows, and the state at its end."""
    inputs = torch.as_tensor(inputs, device=device)
    targets = torch.as_tensor(targets, device=device)
    with autocast(device, precision):
        losses, state = _window_losses(model, inputs, targets, state)
    return losses.view(targets.shape), state


def _window_losses(
    model: LanguageModel, inputs: torch.Tensor, targets: torch.Tensor, state: State | None
) -> tuple[torch.Tensor, State]:
    """Cross-entropy of each target of a window (B * T,), and the state at its end."""
    if model.fused:
        h, state = model.features(inputs, state)
        return token_losses(
            h.flatten(0, 1), model.output.weight, model.output.bias, targets.flatten()
        ), state
    logits, state = model(inputs, state)
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none"), state
