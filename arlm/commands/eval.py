"""`arlm eval`: a text scored with a checkpoint: loss, perplexity, bits per byte and per
character, and per word for a word tokenizer (arlm.score)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from arlm import classify, labelled, pairs, sequences, translate
from arlm.checkpoint import target_tokenizer
from arlm.commands._shared import load, plot_path, score_checkpoint, stdout_console, task_of
from arlm.errors import ArlmError, UsageError
from arlm.formats import atomic_write
from arlm.plot import confusion_matrix


def run(
    *,
    checkpoint: Path,
    data: Path | None,
    text: str | None,
    per_token: Path | None,
    device: str,
    precision: str | None,
    json_output: bool,
    console: Console,
    plot: Path | None = None,
) -> None:
    """`arlm eval`: the figures on stderr, or as one JSON object on stdout."""
    if task_of(checkpoint) == "seq2seq":
        if text is not None or per_token is not None or plot is not None or data is None:
            raise UsageError(
                "a seq2seq model is scored on pairs: --data FILE.tsv (SOURCE<TAB>TARGET lines, or "
                "a dataset of pairs); `arlm translate` maps a text"
            )
        return _seq2seq(checkpoint, data, device, json_output, console)
    if task_of(checkpoint) == "classify":
        if text is not None or per_token is not None or data is None:
            raise UsageError(
                "a classifier is scored on labelled texts: --data FILE.tsv (or a labelled "
                "dataset); `arlm classify` labels a text"
            )
        return _classifier(checkpoint, data, device, json_output, console, plot_path(plot))
    if plot is not None:
        raise UsageError("--plot draws a classifier's confusion matrix: this is a language model")
    if (data is None) == (text is None):
        raise UsageError("give what to score: --data PATH or --text STRING (one of them)")
    if per_token is not None and (Path(per_token).is_dir() or not Path(per_token).parent.is_dir()):
        raise UsageError(f"--per-token {per_token}: give a file's path, in a folder that exists")
    loaded = load(checkpoint, device)
    figures = score_checkpoint(loaded, data, text, precision, per_token)
    if loaded.tokenizer.lemmas and not json_output:  # its tokenizer lemmatised the text first
        console.print(f"the text was scored as lemmas ({loaded.tokenizer.lemmas}), as trained")
    if json_output:
        sys.stdout.write(json.dumps(figures) + "\n")
        return
    per_word = ""
    if "perplexity_per_word" in figures:
        per_word = (
            f"; {figures['words']:,} words: perplexity {figures['perplexity_per_word']:.2f} "
            "per word"
        )
    console.print(
        f"{figures['tokens']:,} tokens: loss {figures['loss']:.4f} nats/token, perplexity "
        f"{figures['perplexity']:.2f}, {figures['bits_per_byte']:.4f} bits/byte, "
        f"{figures['bits_per_char']:.4f} bits/char{per_word}",
        highlight=False,
    )


def _classifier(
    checkpoint: Path, data: Path, device: str, json_output: bool, console, plot: Path | None
) -> None:
    """A classifier on labelled texts: a TSV file or a folder of label folders, or the
    validation split of a labelled dataset made with its tokenizer."""
    model, config, tokenizer, where = load(checkpoint, device, task="classify")
    names = config["data"]["labels"]
    if Path(data).is_dir() and (Path(data) / "meta.json").is_file():
        meta = labelled.load_meta(data)
        if meta["tokenizer"]["sha256"] != tokenizer.sha256:
            raise ArlmError(f"{data} was tokenized with another tokenizer than {checkpoint}'s")
        split = labelled.open_split(data, "val")
        texts = [split.text(i) for i in range(len(split))]
        truth = np.array([names.index(meta["labels"][i]) for i in split.labels])
    else:
        examples = labelled.read(data)
        for place, label in zip(examples.where, examples.labels, strict=True):
            if label not in names:
                raise ArlmError(f"{place}: label {label!r} is not one the classifier knows "
                                f"({', '.join(names)})")  # fmt: skip
        texts = classify.encode(tokenizer, examples.texts)
        truth = np.array([names.index(label) for label in examples.labels])
    predicted = classify.probabilities(model, texts, where).argmax(1)
    figures = classify.metrics(truth, predicted, names)
    if plot:
        title = f"{Path(checkpoint).name} on {Path(data).name}: accuracy {figures['accuracy']:.1%}"
        confusion = figures["confusion"]
        atomic_write(plot, lambda path: confusion_matrix(confusion, names, path, title))
        console.print(f"confusion matrix: {plot}", highlight=False)
    if json_output:
        sys.stdout.write(json.dumps(figures) + "\n")
        return
    table = Table(title=f"{figures['texts']:,} texts", title_justify="left")
    for column in ("label", "precision", "recall", "F1", "texts"):
        table.add_column(column, justify="left" if column == "label" else "right")
    for name, row in figures["per_label"].items():
        cells = (f"{row[k]:.3f}" for k in ("precision", "recall", "f1"))
        table.add_row(name, *cells, f"{row['support']:,}")
    title = "confusion: true label (rows), predicted (columns)"
    confusion = Table(title=title, title_justify="left")
    confusion.add_column("")
    for name in names:
        confusion.add_column(name, justify="right")
    for name, row in zip(names, figures["confusion"], strict=True):
        confusion.add_row(name, *(f"{n:,}" for n in row))
    stdout_console().print(table, confusion)
    console.print(
        f"accuracy {figures['accuracy']:.1%}, macro-F1 {figures['macro_f1']:.3f}", highlight=False
    )


def _seq2seq(checkpoint: Path, data: Path, device: str, json_output: bool, console) -> None:
    """A seq2seq model on pairs: a SOURCE<TAB>TARGET file, or the validation split of a
    dataset of pairs made with its tokenizers. Outputs are decoded greedily."""
    loaded = load(checkpoint, device, task="seq2seq")
    model, source_tokenizer = loaded.model, loaded.tokenizer
    target = target_tokenizer(checkpoint, loaded)
    if Path(data).is_dir() and (Path(data) / "meta.json").is_file():
        tokenizers = pairs.tokenizers(data)
        pairs.load_meta(data)  # checks both tokenizers against the ids
        if [t.sha256 for t in tokenizers] != [source_tokenizer.sha256, target.sha256]:
            raise ArlmError(f"{data} was tokenized with other tokenizers than {checkpoint}'s")
        split = pairs.open_split(data, "val")
        if not len(split):
            raise ArlmError(f"{data} holds no validation pairs: re-tokenize with --val FILE")
        sources = [split.source(i).astype(np.int64) for i in range(len(split))]
        targets = [split.target(i).astype(np.int64) for i in range(len(split))]
        texts = [source_tokenizer.decode(s) for s in sources]
        references = [target.decode(t) for t in targets]
    else:
        examples = pairs.read(data)
        texts, references = examples.sources, examples.targets
        sources = translate.encode(source_tokenizer, texts, examples.where)
        targets = translate.encode(target, references, examples.where)
    bos, eos = target.bos_id, target.eos_id
    loss, count = sequences.evaluate_pairs(model, sources, targets, bos, eos, loaded.device)
    limit = translate.longest_output(loaded.config)
    outputs = [target.decode(ids) for ids in translate.decode(model, sources, bos, eos, limit)]
    figures = translate.metrics(outputs, references, texts)
    figures |= {"loss": loss, "perplexity": math.exp(min(loss, 50)), "tokens": count}
    if json_output:
        sys.stdout.write(json.dumps(figures) + "\n")
        return
    table = Table(title="exact match by source length", title_justify="left")
    for column in ("source characters", "pairs", "exact match"):
        table.add_column(column, justify="right")
    for part in figures["by_source_length"]:
        low, high = part["chars"]
        table.add_row(f"{low}-{high}", f"{part['pairs']:,}", f"{part['exact_match']:.1%}")
    stdout_console().print(table)
    console.print(
        f"{figures['pairs']:,} pairs: exact match {figures['exact_match']:.1%}, chrF "
        f"{figures['chrf']:.1f}, BLEU {figures['bleu']:.1f}; {count:,} target tokens: loss "
        f"{loss:.4f} nats/token, perplexity {figures['perplexity']:.2f}",
        highlight=False,
    )
