"""Labelled texts, for sequence classification (many-to-one: `--task classify`).

A corpus of labelled texts is a TSV file, one `label<TAB>text` a line, or a folder with a
subfolder per label holding one text file per document. `build` learns the label set from the
training texts, trains a tokenizer on them (or reuses one) and writes a dataset folder:

    tokenizer.model       the SentencePiece model, as for a language-model dataset
    meta.json             "task": "classify", the labels in order, counts per split and label
    train.bin, val.bin    the texts' token ids, one text after another
    train.offsets.bin     int64, texts + 1 entries: where each text starts (and the end)
    train.labels.bin      int32: each text's label, an index into meta["labels"]

A validation text whose label the training texts never had is refused: no classifier could
give it.
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

TASK = "classify"
FILES = data.TASK_FILES


@dataclass
class Examples:
    """Labelled texts: `labels[i]` is the label of `texts[i]`; `where[i]`, where it came from."""

    texts: list[str]
    labels: list[str]
    where: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, rows: np.ndarray) -> Examples:
        parts = (self.texts, self.labels, self.where)
        return Examples(*([part[i] for i in rows] for part in parts))


def read(path: Path) -> Examples:
    """The labelled texts of a TSV file (`label<TAB>text` lines; blank lines skipped) or of a
    folder (`FOLDER/LABEL/*.txt`, one text a file)."""
    path = Path(path)
    if path.is_dir():
        return _read_folder(path)
    if not path.exists():
        raise ArlmError(f"{path} does not exist: give a TSV file or a folder of label folders")
    rows = data.tsv_rows(path, ("label", "text"), "labelled text")
    where, labels, texts = (list(column) for column in zip(*rows, strict=True))
    return Examples(texts, [label.strip() for label in labels], where)


def _read_folder(folder: Path) -> Examples:
    texts, labels, where = [], [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        for file in sorted(sub.glob("*.txt")):
            try:
                text = file.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise ArlmError(f"{file} is not UTF-8 text") from None
            if text.strip():
                texts.append(text)
                labels.append(sub.name)
                where.append(str(file))
    if not texts:
        raise ArlmError(f"{folder} holds no LABEL/*.txt files: one folder per label, one text each")
    return Examples(texts, labels, where)


def read_split(path: Path, val: Path | None, fraction: float) -> tuple[Examples, Examples]:
    """The training and validation texts of `path`: `val`'s texts, or a random `fraction`."""
    examples = read(path)
    return (examples, read(val)) if val is not None else data.hold_out(examples, fraction)


def build(
    out: Path,
    train: Examples,
    val: Examples,
    tokenizer: tk.Tokenizer | None = None,
    model_type: str = "bpe",
    vocab_size: int | None = None,
    force: bool = False,
    lemmas: str | None = None,
) -> dict:
    """Learn the labels and (unless given) a tokenizer from `train`, encode both splits into
    `out`, and return the meta written there."""
    started = time.perf_counter()
    names = sorted(set(train.labels))
    if len(names) < 2:
        raise ArlmError(f"the training texts have one label ({names[0]!r}): a classifier needs two")
    pairs = zip(val.where, val.labels, strict=True)
    unknown = [(where, label) for where, label in pairs if label not in names]
    if unknown:
        where, label = unknown[0]
        raise ArlmError(
            f"{where}: label {label!r} is not among the training labels ({', '.join(names)})"
        )
    if tokenizer is None:
        lines = [line for text in train.texts for line in text.split("\n")]
        tokenizer = data.train_tokenizer(lines, model_type, vocab_size, lemmas=lemmas)
    elif lemmas:
        raise UsageError("--lemmatize makes a new tokenizer: not with --tokenizer")
    index = {name: i for i, name in enumerate(names)}
    with data.staged_dir(out, force, FILES) as stage:
        tokenizer.save(stage / "tokenizer.model")
        splits = {
            name: _encode(tokenizer, part, index, stage / name)
            for name, part in (("train", train), ("val", val))
        }
        meta = {
            "format": data.FORMAT,
            "format_version": data.FORMAT_VERSION,
            "task": TASK,
            "labels": names,
            "vocab_size": tokenizer.vocab_size,
            "dtype": data.dtype_for(tokenizer.vocab_size).name,
            "tokenizer": data.tokenizer_meta(tokenizer),
            **splits,
            "seconds": round(time.perf_counter() - started, 3),
        }
        write_json(stage / "meta.json", meta)
    return meta


def _encode(tokenizer: tk.Tokenizer, part: Examples, index: dict, stem: Path) -> dict:
    dtype = data.dtype_for(tokenizer.vocab_size)
    ids = [tokenizer.encode_array(text, dtype) for text in part.texts]
    lengths = np.array([len(i) for i in ids], dtype=np.int64)
    if len(lengths) and not lengths.all():
        where = part.where[int(np.argmin(lengths))]
        raise ArlmError(f"{where}: the text encodes to no token")
    np.concatenate(ids or [np.zeros(0, dtype)]).tofile(stem.with_suffix(".bin"))
    np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64).tofile(f"{stem}.offsets.bin")
    labels = np.array([index[label] for label in part.labels], dtype=np.int32)
    labels.tofile(f"{stem}.labels.bin")
    counts = {name: int((labels == i).sum()) for name, i in index.items()}
    text = "".join(part.texts)
    return {
        "texts": len(part),
        "tokens": int(lengths.sum()),
        "bytes": len(text.encode("utf-8")),
        "chars": len(text),
        "per_label": counts,
    }


@dataclass
class Split:
    """One split of a labelled dataset: the ids of text i are ids[offsets[i]:offsets[i + 1]]."""

    ids: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def text(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]


def load_meta(folder: Path) -> dict:
    """The meta of a labelled dataset; a language-model dataset is refused with what to do."""
    meta = data.load_meta(folder)
    if meta.get("task") != TASK:
        what = "a language-model dataset" if meta.get("task", "lm") == "lm" else "not labelled"
        raise UsageError(f"{folder} is {what}: make a labelled one with --task classify")
    return meta


def open_split(folder: Path, name: str) -> Split:
    """A split's ids, offsets and labels, checked against meta.json."""
    folder, meta = Path(folder), load_meta(folder)
    part = meta[name]
    dtype = np.dtype(meta["dtype"])
    expected = {
        f"{name}.bin": (dtype, part["tokens"]),
        f"{name}.offsets.bin": (np.int64, part["texts"] + 1),
        f"{name}.labels.bin": (np.int32, part["texts"]),
    }
    ids, offsets, labels = data.read_arrays(folder, expected)
    if len(labels) and not (0 <= labels.min() and labels.max() < len(meta["labels"])):
        raise ArlmError(f"{folder / (name + '.labels.bin')} holds unknown labels: re-tokenize")
    return Split(ids, offsets, labels)
