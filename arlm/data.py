"""Corpus -> token ids -> memory-mapped `.bin` files, and texts read back for scoring.

A tokenized dataset is a folder:

    tokenizer.model   the SentencePiece model (train it once, reuse it everywhere)
    train.bin         training ids, raw little-endian uint16 (or uint32 for vocabularies > 65536)
    val.bin           validation ids, same dtype
    meta.json         vocab size, dtype, token/byte/char counts (and words, for a word
                      tokenizer), sources and their sha256

Text is read in chunks cut at line ends, so no corpus is ever held whole in memory.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import os
import random
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from arlm import tokenizer as tk
from arlm.errors import ArlmError, UsageError
from arlm.formats import read_versioned, write_json
from arlm.lemmas import lemmatizer
from arlm.streams import Window, batchify, windows  # noqa: F401  (data.batchify, as before)

FORMAT = "arlm-dataset"
FORMAT_VERSION = 1
DATASET_FILES = ("tokenizer.model", "train.bin", "val.bin", "meta.json")
TARGET_TOKENIZER = "target.model"  # a dataset of pairs' targets' tokenizer, when not the sources'

# a labelled dataset (arlm.labelled) adds where each text starts and its label; a dataset of
# pairs (arlm.pairs), where each source starts, the targets, and maybe their own tokenizer
_PARTS = ("offsets", "labels", "target", "target.offsets")
TASK_FILES = (
    *DATASET_FILES,
    TARGET_TOKENIZER,
    *(f"{split}.{part}.bin" for split in ("train", "val") for part in _PARTS),
)
BLOCK_BYTES = 4 << 20  # read and encode this much text at a time
SAMPLE_BYTES = 16 << 20  # the tokenizer trains on at most this much text (a random line sample)
INVALID_UTF8 = ("refuse", "replace")
VAL_FRACTION = 0.1  # held out for validation when neither --val nor --val-fraction is given
_ESCAPED = re.compile("[\udc80-\udcff]")  # how surrogateescape spells a byte that is not UTF-8

Progress = Callable[[int], None]  # called with the number of bytes just handled


def _no_progress(_: int) -> None:
    pass


# -- reading text -----------------------------------------------------------------------------


@dataclass
class Source:
    """One input file, scanned once: size, checksum and where its bytes are not UTF-8."""

    path: Path
    size: int
    sha256: str
    invalid_bytes: int = 0
    first_invalid: tuple[int, int] | None = None  # (byte offset, line number)
    label: str | None = None  # what to call it in meta.json, when not its path

    def describe(self) -> dict:
        return {"path": self.label or str(self.path), "bytes": self.size, "sha256": self.sha256}


def scan(path: Path, progress: Progress = _no_progress) -> Source:
    """Check that `path` is a readable file and find any bytes that are not UTF-8."""
    path = Path(path)
    if not path.exists():
        raise ArlmError(f"{path} does not exist: give the path of a text file")
    if path.is_dir():
        raise ArlmError(f"{path} is a directory: give the text files inside it instead")
    digest, decoder = hashlib.sha256(), codecs.getincrementaldecoder("utf-8")("surrogateescape")
    source = Source(path, 0, "")
    lines = 0
    try:
        with open(path, "rb") as file:
            while block := file.read(BLOCK_BYTES):
                if not source.size:
                    _refuse_binary(path, block)
                digest.update(block)
                text = decoder.decode(block)
                _count_invalid(source, text, source.size, lines)
                source.size += len(block)
                lines += block.count(b"\n")
                progress(len(block))
            _count_invalid(source, decoder.decode(b"", final=True), source.size, lines)
    except OSError as error:
        raise ArlmError(f"cannot read {path}: {error.strerror}") from None
    source.sha256 = digest.hexdigest()
    return source


def _refuse_binary(path: Path, first: bytes) -> None:
    """Text has no NUL bytes; binary files and UTF-16 do: refuse them from the first 64 KB of
    the `first` block, before reading the rest."""
    if (at := first.find(b"\0", 0, 1 << 16)) >= 0:
        raise ArlmError(
            f"{path} looks binary (a NUL byte at offset {at}): give UTF-8 text "
            "(convert UTF-16 with `iconv -f utf-16 -t utf-8`)"
        )


def _count_invalid(source: Source, text: str, offset: int, lines: int) -> None:
    bad = _ESCAPED.findall(text)
    if not bad:
        return
    if source.first_invalid is None:
        before = text[: _ESCAPED.search(text).start()]
        # the text decoded so far may start a little before `offset` (an unfinished character)
        where = max(0, offset + len(before.encode("utf-8", "surrogateescape")))
        source.first_invalid = (where, lines + before.count("\n") + 1)
    source.invalid_bytes += len(bad)


def check_utf8(sources: list[Source], policy: str, flag: bool = True) -> None:
    """Refuse text that is not UTF-8, saying how much and where, unless told to replace it.
    `flag`: the command has --invalid-utf8 (say so)."""
    for source in sources:
        if source.invalid_bytes and policy == "refuse":
            offset, line = source.first_invalid
            alternative = " or pass --invalid-utf8 replace to read them as U+FFFD" if flag else ""
            raise ArlmError(
                f"{source.path}: {source.invalid_bytes} bytes are not UTF-8 (first at byte offset "
                f"{offset}, line {line}); convert it (e.g. `iconv -f latin1 -t utf-8`)"
                + alternative
            )


@dataclass
class Span:
    """A byte range of a file: a whole source, or the part of it before or after the split."""

    path: Path
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


def read_text(spans: list[Span], block_bytes: int = BLOCK_BYTES) -> Iterator[str]:
    """The text of `spans` in chunks that end at a line end (or a span end). Bytes that are not
    UTF-8 come out as U+FFFD (`check_utf8` has refused them already unless that is wanted)."""
    for span in spans:
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        pending = ""
        with open(span.path, "rb") as file:
            file.seek(span.start)
            left = span.size
            while left > 0:
                block = file.read(min(block_bytes, left))
                if not block:
                    break
                left -= len(block)
                pending += decoder.decode(block)
                cut = pending.rfind("\n") + 1
                if cut:
                    yield pending[:cut]
                    pending = pending[cut:]
                elif len(pending) > 4 * block_bytes:  # one huge line: cut it anyway
                    yield pending
                    pending = ""
        pending += decoder.decode(b"", final=True)
        if pending:
            yield pending


def split_spans(sources: list[Source], val_fraction: float) -> tuple[list[Span], list[Span]]:
    """Cut the concatenated sources after the line end nearest past `1 - val_fraction` of the
    bytes: the head trains, the tail validates."""
    total = sum(source.size for source in sources)
    cut = round(total * (1 - val_fraction))
    train, val, offset = [], [], 0
    for source in sources:
        start, end = offset, offset + source.size
        offset = end
        if end <= cut:
            train.append(Span(source.path, 0, source.size))
        elif start >= cut:
            val.append(Span(source.path, 0, source.size))
        else:
            at = _next_line_start(source.path, cut - start)
            train.append(Span(source.path, 0, at))
            if at < source.size:
                val.append(Span(source.path, at, source.size))
    return [s for s in train if s.size], [s for s in val if s.size]


def _next_line_start(path: Path, offset: int) -> int:
    with open(path, "rb") as file:
        file.seek(offset)
        while block := file.read(1 << 16):
            newline = block.find(b"\n")
            if newline >= 0:
                return offset + newline + 1
            offset += len(block)
    return offset


def sample_lines(
    spans: list[Span], budget: int, seed: int = 0, characters: bool = True
) -> tuple[list[str], set[str]]:
    """Lines to train the tokenizer on (all of them, or a random sample of about `budget` bytes
    when the text is larger), and every character of the whole text (if `characters`)."""
    total = sum(span.size for span in spans)
    keep = min(1.0, budget / max(total, 1))
    rng = random.Random(seed)
    lines: list[str] = []
    seen: set[str] = set()
    for chunk in read_text(spans):
        if characters:
            seen.update(chunk)
        if keep == 1.0:
            lines.extend(chunk.split("\n"))
        else:
            lines.extend(line for line in chunk.split("\n") if rng.random() < keep)
    return lines, seen


# -- writing a dataset ------------------------------------------------------------------------


def dtype_for(vocab_size: int) -> np.dtype:
    """uint16 when every id fits in 16 bits, uint32 otherwise."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


@dataclass
class SplitStats:
    tokens: int = 0
    bytes: int = 0
    chars: int = 0
    words: int | None = None  # words and line ends (tk.count_words), for word tokenizers
    counts: np.ndarray = field(default=None, repr=False)  # tokens per id


def encode_to_file(
    tokenizer: tk.Tokenizer,
    spans: list[Span],
    path: Path,
    progress: Progress = _no_progress,
    chunks: Iterable[str] | None = None,
) -> SplitStats:
    """Encode the text of `spans` chunk by chunk (or `chunks`, that text already read) and
    write the ids to `path`."""
    dtype = dtype_for(tokenizer.vocab_size)
    stats = SplitStats(counts=np.zeros(tokenizer.vocab_size, dtype=np.int64))
    if tokenizer.model_type == "word":
        stats.words = 0
    with open(path, "wb") as out:
        for chunk in chunks if chunks is not None else read_text(spans):
            ids = tokenizer.encode_array(chunk, dtype)
            ids.tofile(out)
            stats.tokens += len(ids)
            stats.chars += len(chunk)
            if stats.words is not None:
                stats.words += tk.count_words(chunk)
            stats.counts += np.bincount(ids, minlength=tokenizer.vocab_size)
            progress(len(chunk.encode("utf-8", "surrogatepass")))
        out.flush()
        os.fsync(out.fileno())
    stats.bytes = sum(span.size for span in spans)
    return stats


@contextlib.contextmanager
def staged_dir(out: Path, force: bool, files: tuple[str, ...] = DATASET_FILES) -> Iterator[Path]:
    """A fresh folder beside `out` that replaces it only if the block finishes: a failure
    leaves `out` as it was, and nothing half-written behind. `--force` replaces a dataset (a
    folder holding only `files`, or a language-model dataset's), never anything else."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file: give a folder for the dataset")
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if held and not force:
        raise UsageError(f"{out} is not empty: pass --force to replace it, or choose another --out")
    if held and not set(held) <= set(files) | set(DATASET_FILES):
        raise UsageError(f"{out} holds files that are not a dataset: choose another --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(out.parent / f".{out.name}.partial-{os.getpid()}")
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
    except OSError as error:
        raise ArlmError(f"cannot write in {out.parent}: {error.strerror}") from None
    try:
        yield stage
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if out.exists():
            out.rename(old)
        stage.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def build(
    out: Path,
    train_sources: list[Source],
    val_sources: list[Source] | None = None,
    val_fraction: float = 0.1,
    tokenizer: tk.Tokenizer | None = None,
    model_type: str = "bpe",
    vocab_size: int | None = None,
    force: bool = False,
    progress: Progress = _no_progress,
    unk_marker: str = tk.DEFAULT_UNK_MARKER,
    lemmas: str | None = None,
) -> dict:
    """Train a tokenizer on the training text (unless one is given), encode train and validation
    text into `out`, and return the meta written there.

    Args:
        val_sources: validation files; when None the last `val_fraction` of the training
            sources (cut at a line end) is held out instead.
        unk_marker: the corpus's unknown-word marker, one piece in a trained `word` tokenizer.
        lemmas: a language: the tokenizer trained replaces each word by its lemma in it first
            (arlm.lemmas), in the training text and in every text it encodes after.
    """
    if lemmas and (tokenizer is not None or model_type == "char"):
        raise UsageError(
            "--lemmatize replaces words before a new tokenizer learns them: not with "
            "--tokenizer (a reused one lemmatises if it was made so) nor --model-type char"
        )
    started = time.perf_counter()
    if not sum(source.size for source in train_sources):
        names = ", ".join(source.label or str(source.path) for source in train_sources)
        raise ArlmError(f"the corpus is empty ({names}): give a file with some text in it")
    if val_sources is None:
        train_spans, val_spans = split_spans(train_sources, val_fraction)
        if val_fraction > 0 and not val_spans:
            raise ArlmError(
                "the corpus is too small to hold out a validation part: give more text, "
                "--val FILE, or --val-fraction 0"
            )
    else:
        train_spans = [Span(s.path, 0, s.size) for s in train_sources]
        val_spans = [Span(s.path, 0, s.size) for s in val_sources]
    if not sum(span.size for span in train_spans):
        raise ArlmError("the training text is empty: give a corpus with some text in it")
    with staged_dir(out, force) as stage:
        trained_on, text = None, None
        if tokenizer is None:
            if sum(span.size for span in train_spans) <= SAMPLE_BYTES:
                # the whole text is the sample: read it once, train on it, then encode it
                text = list(read_text(train_spans))
                lines = [line for chunk in text for line in chunk.split("\n")]
                # every character matters to a char vocabulary only
                characters = set().union(*text) if model_type == "char" else set()
                trained_on = sum(span.size for span in train_spans)
            else:
                lines, characters = sample_lines(
                    train_spans, SAMPLE_BYTES, characters=model_type == "char"
                )
                trained_on = sum(len(line.encode("utf-8", "surrogatepass")) + 1 for line in lines)
            tokenizer = train_tokenizer(
                lines, model_type, vocab_size, characters, unk_marker, lemmas=lemmas
            )
        tokenizer.save(stage / "tokenizer.model")
        train = encode_to_file(tokenizer, train_spans, stage / "train.bin", progress, text)
        val = encode_to_file(tokenizer, val_spans, stage / "val.bin", progress)
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "vocab_size": tokenizer.vocab_size,
            "dtype": dtype_for(tokenizer.vocab_size).name,
            "tokenizer": tokenizer_meta(tokenizer) | {"trained_on_bytes": trained_on},
            "train": _split_meta(train),
            "val": _split_meta(val),
            "vocab_used": int(np.count_nonzero(train.counts + val.counts)),
            "sources": {
                "train": [s.describe() for s in train_sources],
                "val": None if val_sources is None else [s.describe() for s in val_sources],
                "val_fraction": None if val_sources is not None else val_fraction,
            },
            "seconds": round(time.perf_counter() - started, 3),
        }
        write_json(stage / "meta.json", meta)
    return meta


def train_tokenizer(
    lines: Iterable[str],
    model_type: str,
    vocab_size: int | None,
    characters: set[str] | frozenset = frozenset(),
    unk_marker: str = tk.DEFAULT_UNK_MARKER,
    lemmas: str | None = None,
) -> tk.Tokenizer:
    """A tokenizer trained on `lines`; with `lemmas`, on their lemmas, and lemmatising every
    text it encodes after (arlm.lemmas)."""
    if lemmas:
        lines = map(lemmatizer(lemmas), lines)
    sentences = tk.training_sentences(lines)
    tokenizer = tk.train(sentences, model_type, vocab_size, set(characters), unk_marker)
    return tokenizer.with_lemmas(lemmas) if lemmas else tokenizer


def tokenizer_meta(tokenizer: tk.Tokenizer) -> dict:
    """What a dataset's meta.json says of its tokenizer (its SHA-256 ties the ids to it)."""
    meta = {
        "model_type": tokenizer.model_type,
        "vocab_size": tokenizer.vocab_size,
        "byte_fallback": tokenizer.byte_fallback,
        "normalization": "identity",
        "lemmas": tokenizer.lemmas,  # the language of the lemmas words became, if any
        "sha256": tokenizer.sha256,
    }
    if tokenizer.model_type == "word":
        meta["unk_marker"] = tokenizer.unk_marker
    return meta


def _split_meta(stats: SplitStats) -> dict:
    split = {"tokens": stats.tokens, "bytes": stats.bytes, "chars": stats.chars}
    if stats.words is not None:
        split["words"] = stats.words
    return split


# -- reading a dataset ------------------------------------------------------------------------


def load_meta(folder: Path) -> dict:
    """The meta of a tokenized dataset folder, checked for format and version, and for the
    tokenizer: ids read with another tokenizer than theirs would be silently wrong."""
    fix = "re-create it with `arlm tokenize`"
    meta = read_versioned(Path(folder) / "meta.json", FORMAT, FORMAT_VERSION, "dataset", fix)
    path = Path(folder) / "tokenizer.model"
    recorded = meta.get("tokenizer")
    if not isinstance(recorded, dict) or recorded.get("sha256") != sha256_of(path):
        raise ArlmError(
            f"{path} is not the tokenizer the ids of {folder} were made with (its checksum is "
            f"not meta.json's): put the right one back, or re-tokenize with `arlm tokenize`"
        )
    return meta


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file (a tokenizer's); an unreadable one is refused with what to do."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as error:
        raise ArlmError(
            f"cannot read {path} ({error.strerror}): re-create it with `arlm tokenize`"
        ) from None


def open_ids(folder: Path, split: str = "train") -> np.ndarray:
    """The ids of one split as a read-only memory map (nothing is read until it is used)."""
    meta = load_meta(folder)
    if meta.get("task", "lm") != "lm":  # labelled texts (arlm.labelled), not one text to model
        raise UsageError(f"{folder} is a dataset for --task {meta['task']}, not a text")
    path = Path(folder) / f"{split}.bin"
    dtype = np.dtype(meta["dtype"])
    expected = meta[split]["tokens"] * dtype.itemsize
    if not path.is_file() or path.stat().st_size != expected:
        raise ArlmError(f"{path} is missing or truncated: re-create it with `arlm tokenize`")
    if expected == 0:
        return np.zeros(0, dtype=dtype)
    if _largest_id(path, dtype) >= meta["vocab_size"]:  # an embedding lookup would crash
        raise ArlmError(f"{path} holds ids outside the vocabulary: it is corrupt, re-tokenize")
    return np.memmap(path, dtype=dtype, mode="r")


def reading_order(ids: np.ndarray, reverse: bool) -> np.ndarray:
    """The ids in the order a model reads them: as written, or right to left for a backwards
    model (`arlm train --reverse`), a copy then, since a memory map reads forwards."""
    return np.ascontiguousarray(ids[::-1]) if reverse else ids


def _largest_id(path: Path, dtype: np.dtype, block: int = 64 << 20) -> int:
    """One pass at disk speed, read in blocks rather than through the memory map, so that the
    pages do not stay mapped into (and counted in) the training process."""
    largest = 0
    with open(path, "rb") as file:
        while chunk := file.read(block):
            largest = max(largest, int(np.frombuffer(chunk, dtype=dtype).max()))
    return largest


def token_counts(folder: Path, split: str = "train", block: int = 4 << 20) -> np.ndarray:
    """How often each id of the vocabulary occurs in one split (vocab_size,), read in blocks
    as _largest_id does: memory stays flat whatever the corpus size."""
    ids = open_ids(folder, split)  # refuses a missing, truncated or corrupt split
    counts = np.zeros(load_meta(folder)["vocab_size"], dtype=np.int64)
    if len(ids):
        with open(ids.filename, "rb") as file:
            while chunk := file.read(block):
                counts += np.bincount(np.frombuffer(chunk, ids.dtype), minlength=len(counts))
    return counts


# -- texts to score ---------------------------------------------------------------------------


@dataclass
class Text:
    """Token ids and the size of the text they came from."""

    ids: np.ndarray
    bytes: int
    chars: int
    words: int | None = None  # words and line ends (count_words), for word tokenizers


def _words(tokenizer: tk.Tokenizer, text: str) -> int | None:
    return tk.count_words(text) if tokenizer.model_type == "word" else None


def text_from_string(tokenizer: tk.Tokenizer, text: str) -> Text:
    ids = np.asarray(tokenizer.encode(text), dtype=np.int64)
    return Text(ids, len(text.encode("utf-8")), len(text), _words(tokenizer, text))


def text_from_file(tokenizer: tk.Tokenizer, path: Path) -> Text:
    """A text file encoded in chunks with the checkpoint's tokenizer."""
    source = scan(path)
    check_utf8([source], "refuse", flag=False)
    chunks, chars = [], 0
    words = 0 if tokenizer.model_type == "word" else None
    for chunk in read_text([Span(source.path, 0, source.size)]):
        chunks.append(tokenizer.encode_array(chunk, dtype_for(tokenizer.vocab_size)))
        chars += len(chunk)
        if words is not None:
            words += tk.count_words(chunk)
    ids = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
    return Text(ids, source.size, chars, words)


def text_from_path(tokenizer: tk.Tokenizer, path: Path) -> Text:
    """A dataset folder's validation split, or a text file."""
    path = Path(path)
    return text_from_dataset(path, tokenizer) if path.is_dir() else text_from_file(tokenizer, path)


def text_from_dataset(folder: Path, tokenizer: tk.Tokenizer) -> Text:
    """The validation split of a tokenized dataset made with the same tokenizer."""
    meta = load_meta(folder)
    if meta["tokenizer"]["sha256"] != tokenizer.sha256:
        raise ArlmError(
            f"{folder} was tokenized with another tokenizer than this checkpoint's: give a "
            "text file instead, or the dataset the model was trained on"
        )
    ids = open_ids(folder, "val")
    words = meta["val"].get("words")
    if words is None:  # a dataset made before meta.json counted words
        words = _words(tokenizer, tokenizer.decode(ids))
    return Text(ids, meta["val"]["bytes"], meta["val"]["chars"], words)


# -- the files of tasks beyond a language model (arlm.labelled, arlm.pairs) ----------------


def tsv_rows(path: Path, sides: tuple[str, str], what: str) -> list[tuple[str, str, str]]:
    """(where, left, right) for each `LEFT<TAB>RIGHT` line of the UTF-8 file `path` (blank
    lines skipped; the first tab splits); `sides` names the two sides in errors, `what` a line."""
    path, form = Path(path), "<TAB>".join(side.upper() for side in sides)
    if not path.is_file():
        raise ArlmError(f"{path} does not exist: give a TSV file of {form} lines")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError:
        raise ArlmError(f"{path} is not UTF-8 text") from None
    rows = []
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        left, tab, right = line.partition("\t")
        if not tab:
            raise ArlmError(f"{path}:{number}: no tab after the {sides[0]}: write {form}")
        if not left.strip() or not right.strip():
            raise ArlmError(f"{path}:{number}: an empty {sides[0]} or {sides[1]}: write {form}")
        rows.append((f"{path}:{number}", left, right))
    if not rows:
        raise ArlmError(f"{path} holds no {what}: write {form} lines")
    return rows


def hold_out(examples, fraction: float, seed: int = 0) -> tuple:
    """A random `fraction` of `examples` (labelled texts, pairs: anything with `take(rows)`)
    held out for validation, the same for the same seed: (kept, held out)."""
    order = np.random.default_rng(seed).permutation(len(examples))
    held = int(round(len(examples) * fraction))
    if fraction > 0 and (held == 0 or held == len(examples)):
        raise ArlmError(
            f"{len(examples)} texts are too few to hold some out: give more, or --val FILE"
        )
    return examples.take(np.sort(order[held:])), examples.take(np.sort(order[:held]))


def read_arrays(folder: Path, expected: dict[str, tuple]) -> list[np.ndarray]:
    """The files `expected` names in `folder`, each checked to hold its count of its dtype."""
    arrays = []
    for file, (kind, count) in expected.items():
        path = Path(folder) / file
        if not path.is_file() or path.stat().st_size != np.dtype(kind).itemsize * count:
            raise ArlmError(f"{path} is missing or truncated: re-create it with `arlm tokenize`")
        arrays.append(np.fromfile(path, dtype=kind))
    return arrays
