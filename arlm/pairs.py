"""Pairs of texts, for sequence to sequence (`--task seq2seq`): a source and the target it maps
to, one `source<TAB>target` a line of a TSV file. `build` trains a tokenizer on the training
pairs' sources and targets together (or one for each side: `separate`), or reuses one, and
writes a dataset folder:

    tokenizer.model          the sources' tokenizer (both sides', when shared)
    target.model             the targets' tokenizer, when each side has its own
    meta.json                "task": "seq2seq", the sides' vocabularies, counts per split
    train.bin, val.bin       the sources' token ids, one after another
    train.offsets.bin        int64, pairs + 1 entries: where each source starts (and the end)
    train.target.bin         the targets' ids, and where each starts: train.target.offsets.bin

The decoder reads a target after a <s> and learns to end it with </s>: both are the target
tokenizer's own pieces (Tokenizer.bos_id, eos_id), never written into the files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arlm import data
from arlm import tokenizer as tk
from arlm.errors import ArlmError, UsageError
from arlm.formats import write_json

TASK = "seq2seq"
TARGET_TOKENIZER = data.TARGET_TOKENIZER


@dataclass
class Pairs:
    """Texts and what each maps to: `targets[i]` is the target of `sources[i]`; `where[i]`,
    the line it came from."""

    sources: list[str]
    targets: list[str]
    where: list[str]

    def __len__(self) -> int:
        return len(self.sources)

    def take(self, rows: np.ndarray) -> Pairs:
        parts = (self.sources, self.targets, self.where)
        return Pairs(*([part[i] for i in rows] for part in parts))


def read(path: Path) -> Pairs:
    """The pairs of a TSV file of `source<TAB>target` lines (blank lines skipped)."""
    rows = data.tsv_rows(path, ("source", "target"), "pair of texts")
    where, sources, targets = (list(column) for column in zip(*rows, strict=True))
    return Pairs(sources, targets, where)


def read_split(path: Path, val: Path | None, fraction: float) -> tuple[Pairs, Pairs]:
    """The training and validation pairs of `path`: `val`'s pairs, or a random `fraction`."""
    pairs = read(path)
    return (pairs, read(val)) if val is not None else data.hold_out(pairs, fraction)


def build(
    out: Path,
    train: Pairs,
    val: Pairs,
    tokenizer: tk.Tokenizer | None = None,
    model_type: str = "char",
    vocab_size: int | None = None,
    separate: bool = False,
    force: bool = False,
    target_tokenizer: tk.Tokenizer | None = None,
) -> dict:
    """Train a tokenizer on `train` (both sides, or one per side with `separate`) unless one
    is given (then both sides use it, or the targets `target_tokenizer`), encode both splits
    into `out`, and return the meta."""
    started = time.perf_counter()
    if tokenizer is not None and separate:
        raise UsageError("--separate-vocab trains two tokenizers: not with --tokenizer")
    if tokenizer is not None:
        source, target = tokenizer, target_tokenizer or tokenizer
        separate = target_tokenizer is not None
    elif separate:
        source = data.train_tokenizer(_lines(train.sources), model_type, vocab_size)
        target = data.train_tokenizer(_lines(train.targets), model_type, vocab_size)
    else:
        both = _lines(train.sources + train.targets)
        source = target = data.train_tokenizer(both, model_type, vocab_size)
    with data.staged_dir(out, force, data.TASK_FILES) as stage:
        source.save(stage / "tokenizer.model")
        if separate:
            target.save(stage / TARGET_TOKENIZER)
        splits = {
            name: _encode(source, target, part, stage / name)
            for name, part in (("train", train), ("val", val))
        }
        meta = {
            "format": data.FORMAT,
            "format_version": data.FORMAT_VERSION,
            "task": TASK,
            "vocab_size": source.vocab_size,
            "dtype": data.dtype_for(source.vocab_size).name,
            "tokenizer": data.tokenizer_meta(source),
            "target_vocab_size": target.vocab_size,
            "target_dtype": data.dtype_for(target.vocab_size).name,
            "target_tokenizer": data.tokenizer_meta(target) if separate else None,
            **splits,
            "seconds": round(time.perf_counter() - started, 3),
        }
        write_json(stage / "meta.json", meta)
    return meta


def _lines(texts: list[str]) -> list[str]:
    return [line for text in texts for line in text.split("\n")]


def _encode(source: tk.Tokenizer, target: tk.Tokenizer, part: Pairs, stem: Path) -> dict:
    """Write a split's sources and targets; return its counts."""
    counts = {}
    for side, tokenizer, texts, suffix in (
        ("source", source, part.sources, ""),
        ("target", target, part.targets, ".target"),
    ):
        dtype = data.dtype_for(tokenizer.vocab_size)
        ids = [tokenizer.encode_array(text, dtype) for text in texts]
        lengths = np.array([len(i) for i in ids], dtype=np.int64)
        if len(lengths) and not lengths.all():
            where = part.where[int(np.argmin(lengths))]
            raise ArlmError(f"{where}: the {side} encodes to no token")
        np.concatenate(ids or [np.zeros(0, dtype)]).tofile(f"{stem}{suffix}.bin")
        np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64).tofile(
            f"{stem}{suffix}.offsets.bin"
        )
        counts[f"{side}_tokens"] = int(lengths.sum())
        counts[f"longest_{side}"] = int(lengths.max(initial=0))
    return {
        "pairs": len(part),
        **counts,
        "tokens": counts["target_tokens"],  # what the loss is taken over
        "bytes": sum(len(text.encode("utf-8")) for text in part.targets),
        "chars": sum(len(text) for text in part.targets),
    }


@dataclass
class Split:
    """One split of a dataset of pairs: the ids of source i are sources[source_offsets[i]:
    source_offsets[i + 1]], and likewise its target's."""

    sources: np.ndarray
    source_offsets: np.ndarray
    targets: np.ndarray
    target_offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.source_offsets) - 1

    def source(self, i: int) -> np.ndarray:
        return self.sources[self.source_offsets[i] : self.source_offsets[i + 1]]

    def target(self, i: int) -> np.ndarray:
        return self.targets[self.target_offsets[i] : self.target_offsets[i + 1]]


def load_meta(folder: Path) -> dict:
    """The meta of a dataset of pairs; another kind of dataset is refused with what to do."""
    meta = data.load_meta(folder)
    if meta.get("task") != TASK:
        raise UsageError(f"{folder} is not a dataset of pairs: make one with --task seq2seq")
    path = Path(folder) / TARGET_TOKENIZER
    recorded = (meta.get("target_tokenizer") or {}).get("sha256")
    if path.is_file() != bool(recorded) or (recorded and data.sha256_of(path) != recorded):
        raise ArlmError(
            f"{path} is not the target tokenizer the ids of {folder} were made with: put the "
            "right one back, or re-tokenize with `arlm tokenize`"
        )
    return meta


def open_split(folder: Path, name: str) -> Split:
    """A split's sources and targets with their offsets, checked against meta.json."""
    folder, meta = Path(folder), load_meta(folder)
    part = meta[name]
    source, target = np.dtype(meta["dtype"]), np.dtype(meta["target_dtype"])
    expected = {
        f"{name}.bin": (source, part["source_tokens"]),
        f"{name}.offsets.bin": (np.int64, part["pairs"] + 1),
        f"{name}.target.bin": (target, part["target_tokens"]),
        f"{name}.target.offsets.bin": (np.int64, part["pairs"] + 1),
    }
    return Split(*data.read_arrays(folder, expected))


def tokenizers(folder: Path) -> tuple[tk.Tokenizer, tk.Tokenizer]:
    """The (source, target) tokenizers of a dataset of pairs (or of a folder made like one):
    the same one twice where the sides share it."""
    folder = Path(folder)
    source = tk.Tokenizer.load(folder / "tokenizer.model")
    target_path = folder / TARGET_TOKENIZER
    return source, tk.Tokenizer.load(target_path) if target_path.is_file() else source
