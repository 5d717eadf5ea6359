"""`arlm tokenize`: a corpus into a dataset folder (a SentencePiece tokenizer trained on it, or
reused, and the ids of each split in a memory-mapped file: arlm.data), or a tokenizer inspected:
the pieces and ids of a text, the text of ids."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from arlm import data, labelled, lemmas, pairs
from arlm.commands._shared import print_json
from arlm.corpus import BUILTINS, LABELLED_BUILTINS, PAIR_BUILTINS
from arlm.errors import UsageError
from arlm.tokenizer import DEFAULT_UNK_MARKER, Tokenizer, check_unk_marker


def run(
    *,
    corpus: list[Path] | None,
    out: Path | None,
    vocab_size: int | None,
    model_type: str,
    unk_marker: str | None,
    val: Path | None,
    val_fraction: float | None,
    tokenizer: Path | None,
    builtin: str | None,
    text: str | None,
    decode: str | None,
    invalid_utf8: str,
    force: bool,
    json_output: bool,
    console: Console,
    lemmatize: bool = False,
    language: str | None = None,
    task: str = "lm",
    separate_vocab: bool = False,
) -> None:
    """`arlm tokenize`: the dataset's table on stderr (and its meta.json on stdout with --json),
    or, with --text or --decode, the inspection on stdout."""
    if text is not None or decode is not None:
        if corpus or builtin or out:
            raise UsageError("--text/--decode inspect a tokenizer: drop the corpus and --out")
        if tokenizer is None:
            raise UsageError("--text/--decode need --tokenizer MODEL (a tokenizer.model)")
        _inspect(Tokenizer.load(tokenizer), text, decode, json_output, console)
        return
    if bool(corpus) == bool(builtin):
        raise UsageError("give corpus files or --builtin NAME (one of the two)")
    made_for = "classify" if builtin in LABELLED_BUILTINS else "lm"
    made_for = "seq2seq" if builtin in PAIR_BUILTINS else made_for
    if builtin and made_for != task:
        wanted = f"--task {made_for}" if made_for != "lm" else "a language-model corpus"
        raise UsageError(f"--builtin {builtin} is a corpus for {wanted}")
    if separate_vocab and task != "seq2seq":
        raise UsageError(
            "--separate-vocab gives the two sides of pairs a tokenizer each: --task seq2seq"
        )
    if out is None:
        raise UsageError("--out DIR is required: the folder to write the dataset to")
    if val is not None and val_fraction is not None:
        raise UsageError("--val and --val-fraction both choose the validation text: give one")
    if val_fraction is not None and not 0 <= val_fraction < 1:
        raise UsageError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if tokenizer is not None and (
        vocab_size is not None or model_type != "bpe" or unk_marker is not None
    ):
        raise UsageError(
            "--tokenizer reuses a trained tokenizer: drop --vocab-size/--model-type/--unk-marker"
        )
    if unk_marker is not None and model_type != "word":
        raise UsageError("--unk-marker is for --model-type word: drop it, or pass that")
    if unk_marker is not None:
        check_unk_marker(unk_marker)
    if vocab_size is not None and vocab_size < 1:
        raise UsageError(f"--vocab-size must be positive, got {vocab_size}")
    if language is not None and not lemmatize:
        raise UsageError("--language is the language of --lemmatize: add it, or drop --language")
    language = language or "en"
    if lemmatize and not lemmas.known(language):  # before reading anything
        raise UsageError(lemmas.UNKNOWN.format(language))
    reused = Tokenizer.load(tokenizer) if tokenizer is not None else None
    if task == "seq2seq":
        if lemmatize:
            raise UsageError("--lemmatize is for a language model or a classifier, not seq2seq")
        folder = Path(tokenizer) if tokenizer is not None else None
        # a dataset of pairs (or a seq2seq checkpoint) whose targets have their own tokenizer
        target = folder / pairs.TARGET_TOKENIZER if folder and folder.is_dir() else None
        target = Tokenizer.load(target) if target and target.is_file() else None
        options = (reused, model_type, vocab_size, separate_vocab, force, target)
        meta = _pairs(corpus, builtin, val, val_fraction, out, options)
        _summarize_pairs(meta, out, console)
        if json_output:
            print_json(meta)
        return
    if task == "classify":
        options = (reused, model_type, vocab_size, force, language if lemmatize else None)
        meta = _labelled(corpus, builtin, val, val_fraction, out, options)
        _summarize_labelled(meta, out, console)
        if json_output:
            print_json(meta)
        return
    with tempfile.TemporaryDirectory(prefix="arlm-") as scratch:
        if builtin:
            path = Path(scratch) / f"{builtin}.txt"
            path.write_text(BUILTINS[builtin](), encoding="utf-8")
            sources = [data.scan(path)]
            sources[0].label = f"builtin:{builtin}"
        else:
            sources = [data.scan(path) for path in corpus]
        val_sources = [data.scan(val)] if val is not None else None
        data.check_utf8(sources + (val_sources or []), invalid_utf8)
        fraction = data.VAL_FRACTION if val_fraction is None else val_fraction
        total = sum(s.size for s in sources + (val_sources or []))
        with _progress(console) as progress:
            task = progress.add_task("encoding", total=total)
            meta = data.build(
                out,
                sources,
                val_sources,
                fraction,
                reused,
                model_type,
                vocab_size,
                force,
                progress=lambda n: progress.advance(task, n),
                unk_marker=DEFAULT_UNK_MARKER if unk_marker is None else unk_marker,
                lemmas=language if lemmatize else None,
            )
    _summarize(meta, out, console)
    if json_output:
        print_json(meta)


def _labelled(corpus, builtin, val, val_fraction, out: Path, options: tuple) -> dict:
    """`--task classify`: a TSV file or a folder of label folders (or a labelled built-in
    corpus) into a labelled dataset (arlm.labelled)."""
    if corpus and len(corpus) > 1:
        raise UsageError("--task classify reads one TSV file or one folder of label folders")
    with _tsv(corpus, builtin, LABELLED_BUILTINS) as path:
        train, held = labelled.read_split(path, val, _fraction(val_fraction))
        return labelled.build(out, train, held, *options)


def _pairs(corpus, builtin, val, val_fraction, out: Path, options: tuple) -> dict:
    """`--task seq2seq`: a TSV file of pairs (or the built-in dates) into a dataset of pairs
    (arlm.pairs)."""
    if corpus and len(corpus) > 1:
        raise UsageError("--task seq2seq reads one TSV file of SOURCE<TAB>TARGET lines")
    with _tsv(corpus, builtin, PAIR_BUILTINS) as path:
        train, held = pairs.read_split(path, val, _fraction(val_fraction))
        return pairs.build(out, train, held, *options)


def _fraction(val_fraction: float | None) -> float:
    return data.VAL_FRACTION if val_fraction is None else val_fraction


@contextlib.contextmanager
def _tsv(corpus: list[Path] | None, builtin: str | None, builtins: dict):
    """The TSV file to read: the one given, or the built-in corpus written to a scratch file."""
    if not builtin:
        yield corpus[0]
        return
    with tempfile.TemporaryDirectory(prefix="arlm-") as scratch:
        path = Path(scratch) / f"{builtin}.tsv"
        path.write_text(builtins[builtin](), encoding="utf-8")
        yield path


def _summarize_pairs(meta: dict, out: Path, console: Console) -> None:
    table = Table(title=f"dataset of pairs {out}", title_justify="left")
    for column in ("split", "pairs", "source tokens", "target tokens", "longest target"):
        table.add_column(column, justify="right" if column != "split" else "left")
    for name in ("train", "val"):
        part = meta[name]
        counts = (part[k] for k in ("pairs", "source_tokens", "target_tokens", "longest_target"))
        table.add_row(name, *(f"{n:,}" for n in counts))
    console.print(table)
    tok, target = meta["tokenizer"], meta["target_tokenizer"]
    sides = (
        f"vocabularies {meta['vocab_size']:,} (sources) and {meta['target_vocab_size']:,} (targets)"
        if target
        else f"one vocabulary of {meta['vocab_size']:,} for both sides"
    )
    console.print(
        f"{tok['model_type']} tokenizer, {sides}, {meta['seconds']:.1f}s", highlight=False
    )


def _summarize_labelled(meta: dict, out: Path, console: Console) -> None:
    table = Table(title=f"labelled dataset {out}", title_justify="left")
    for column in ("label", "train texts", "val texts"):
        table.add_column(column, justify="right" if column != "label" else "left")
    for label in meta["labels"]:
        counts = (f"{meta[s]['per_label'][label]:,}" for s in ("train", "val"))
        table.add_row(label, *counts)
    console.print(table)
    tok = meta["tokenizer"]
    console.print(
        f"{len(meta['labels'])} labels; {tok['model_type']} tokenizer, vocabulary "
        f"{meta['vocab_size']:,}; {meta['train']['tokens']:,} training tokens, "
        f"{meta['seconds']:.1f}s",
        highlight=False,
    )


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


def _summarize(meta: dict, out: Path, console: Console) -> None:
    table = Table(title=f"dataset {out}", title_justify="left")
    words = "words" in meta["train"]  # a word tokenizer: words and line ends, as papers count
    columns = ["split", "characters", "bytes", "tokens", "bytes/token"] + ["words"] * words
    for column in columns:
        table.add_column(column, justify="right")
    for split in ("train", "val"):
        part = meta[split]
        per_token = part["bytes"] / part["tokens"] if part["tokens"] else 0.0
        cells = [f"{part['chars']:,}", f"{part['bytes']:,}", f"{part['tokens']:,}"]
        cells += [f"{per_token:.2f}"] + ([f"{part['words']:,}"] if words else [])
        table.add_row(split, *cells)
    console.print(table)
    tok = meta["tokenizer"]
    lemmas = f", words lemmatised ({tok['lemmas']})" if tok.get("lemmas") else ""
    console.print(
        f"{tok['model_type']} tokenizer{lemmas}, vocabulary {meta['vocab_size']:,} "
        f"({meta['vocab_used']:,} used), ids as {meta['dtype']}, {meta['seconds']:.1f}s",
        highlight=False,
    )


def _inspect(
    tok: Tokenizer, text: str | None, decode: str | None, json_output: bool, console: Console
) -> None:
    if tok.lemmas and not json_output:  # what it encodes, and so what it decodes to
        console.print(f"this tokenizer replaces words by their lemmas ({tok.lemmas})")
    if text is not None:
        ids = tok.encode(text)
        pieces = tok.pieces(ids)
        if json_output:
            return print_json({"text": text, "ids": ids, "pieces": pieces})
        print(f"pieces ({len(ids)}): " + " ".join(pieces))
        print("ids: " + " ".join(map(str, ids)))
    if decode is not None:
        try:
            ids = [int(word) for word in decode.replace(",", " ").split()]
        except ValueError:
            raise UsageError(
                f"--decode takes whole numbers separated by spaces, got {decode!r}"
            ) from None
        decoded = tok.decode(ids)
        if json_output:
            lemmas = {"lemmas": tok.lemmas} if tok.lemmas else {}
            return print_json({"ids": ids, "text": decoded} | lemmas)
        sys.stdout.write(decoded + "\n")
