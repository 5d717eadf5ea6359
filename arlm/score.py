"""Scoring text with a trained model on one scale: nats per token, perplexity, and bits per byte
and per character of the original text, which compare models across tokenizers; for a word
tokenizer also perplexity per word, the figure word-level papers publish."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from arlm import data
from arlm import sequences as seqs
from arlm.errors import ArlmError
from arlm.formats import atomic_write
from arlm.models import LanguageModel
from arlm.tokenizer import Tokenizer, count_words
from arlm.train import autocast, evaluate

LN2 = math.log(2)


@dataclass
class Text:
    """Token ids and the size of the text they came from."""

    ids: np.ndarray
    bytes: int
    chars: int
    words: int | None = None  # words and line ends (count_words), for word tokenizers


def _words(tokenizer: Tokenizer, text: str) -> int | None:
    return count_words(text) if tokenizer.model_type == "word" else None


def text_from_string(tokenizer: Tokenizer, text: str) -> Text:
    ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
    return Text(ids, len(text.encode("utf-8")), len(text), _words(tokenizer, text))


def text_from_file(tokenizer: Tokenizer, path: Path) -> Text:
    """A text file encoded in chunks with the checkpoint's tokenizer."""
    source = data.scan(path)
    data.check_utf8([source], "refuse", flag=False)
    chunks, chars = [], 0
    words = 0 if tokenizer.model_type == "word" else None
    for chunk in data.read_text([data.Span(source.path, 0, source.size)]):
        chunks.append(tokenizer.encode_array(chunk, data.dtype_for(tokenizer.vocab_size)))
        chars += len(chunk)
        if words is not None:
            words += count_words(chunk)
    ids = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    return Text(ids, source.size, chars, words)


def text_from_path(tokenizer: Tokenizer, path: Path) -> Text:
    """A dataset folder's validation split, or a text file."""
    path = Path(path)
    return text_from_dataset(path, tokenizer) if path.is_dir() else text_from_file(tokenizer, path)


def text_from_dataset(folder: Path, tokenizer: Tokenizer) -> Text:
    """The validation split of a tokenized dataset made with the same tokenizer."""
    meta = data.load_meta(folder)
    if meta["tokenizer"]["sha256"] != tokenizer.sha256:
        raise ArlmError(
            f"{folder} was tokenized with another tokenizer than this checkpoint's: give a "
            "text file instead, or the dataset the model was trained on"
        )
    ids = data.open_ids(folder, "val")
    words = meta["val"].get("words")
    if words is None:  # a dataset made before meta.json counted words
        words = _words(tokenizer, tokenizer.decode(ids))
    return Text(ids, meta["val"]["bytes"], meta["val"]["chars"], words)


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
