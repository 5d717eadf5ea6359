"""The `arlm` command line. All console output lives here: the product (ids, text, --json) on
stdout; progress, summaries and errors on stderr."""

from __future__ import annotations

import functools
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from arlm import data
from arlm.corpus import BUILTINS
from arlm.errors import ArlmError, UsageError
from arlm.tokenizer import Tokenizer

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Train and sample autoregressive language models (RNN, LSTM, GRU) on your own text.",
)
console = Console(stderr=True)


def clean_errors(command: Callable) -> Callable:
    """Turn arlm's own errors into one line on stderr and an exit code, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ArlmError as error:
            console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(error.exit_code) from None
        except KeyboardInterrupt:
            console.print("[bold red]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper


@app.callback()
def _root() -> None:
    """Train and sample autoregressive language models (RNN, LSTM, GRU) on your own text."""


def _print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False) + "\n")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )


ModelType = Literal["bpe", "unigram", "char", "word"]


@app.command()
@clean_errors
def tokenize(
    corpus: Annotated[
        list[Path] | None, typer.Argument(help="Training text files (UTF-8), read in order.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Dataset folder to write.")] = None,
    vocab_size: Annotated[
        int | None,
        typer.Option(help="Pieces in the vocabulary [default: 4000; char: every character]."),
    ] = None,
    model_type: Annotated[ModelType, typer.Option(help="SentencePiece model type.")] = "bpe",
    val: Annotated[Path | None, typer.Option(help="Validation text file.")] = None,
    val_fraction: Annotated[
        float | None,
        typer.Option(help="Hold out this last part of the corpus for validation [default: 0.1]."),
    ] = None,
    tokenizer: Annotated[
        Path | None,
        typer.Option(help="Reuse this tokenizer.model (or dataset folder): encode only."),
    ] = None,
    builtin: Annotated[
        Literal["python-docs"] | None,
        typer.Option(help="Use a corpus that ships with Python instead of files."),
    ] = None,
    text: Annotated[str | None, typer.Option(help="Show the pieces and ids of this text.")] = None,
    decode: Annotated[
        str | None, typer.Option(help='Print the text of these ids, e.g. "12 7 99".')
    ] = None,
    invalid_utf8: Annotated[
        Literal["refuse", "replace"],
        typer.Option(help="Bytes that are not UTF-8: refuse the corpus, or read them as U+FFFD."),
    ] = "refuse",
    force: Annotated[bool, typer.Option(help="Replace an existing dataset in --out.")] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Machine-readable output on stdout.")
    ] = False,
) -> None:
    """Tokenize a corpus into a dataset folder, or inspect a tokenizer.

    Trains a SentencePiece tokenizer on the training text (or reuses --tokenizer), then encodes
    training and validation text into train.bin and val.bin. With --tokenizer, --text shows the
    pieces and ids of a text and --decode turns ids back into text.
    """
    if text is not None or decode is not None:
        if corpus or builtin or out:
            raise UsageError("--text/--decode inspect a tokenizer: drop the corpus and --out")
        if tokenizer is None:
            raise UsageError("--text/--decode need --tokenizer MODEL (a tokenizer.model)")
        _inspect(Tokenizer.load(tokenizer), text, decode, json_output)
        return
    if bool(corpus) == bool(builtin):
        raise UsageError("give corpus files or --builtin python-docs (one of the two)")
    if out is None:
        raise UsageError("--out DIR is required: the folder to write the dataset to")
    if val is not None and val_fraction is not None:
        raise UsageError("--val and --val-fraction both choose the validation text: give one")
    if val_fraction is not None and not 0 <= val_fraction < 1:
        raise UsageError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if tokenizer is not None and (vocab_size is not None or model_type != "bpe"):
        raise UsageError("--tokenizer reuses a trained tokenizer: drop --vocab-size/--model-type")
    if vocab_size is not None and vocab_size < 1:
        raise UsageError(f"--vocab-size must be positive, got {vocab_size}")
    reused = Tokenizer.load(tokenizer) if tokenizer is not None else None
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
        fraction = 0.1 if val_fraction is None else val_fraction
        total = sum(s.size for s in sources + (val_sources or []))
        with _progress() as progress:
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
            )
    _summarize(meta, out)
    if json_output:
        _print_json(meta)


def _summarize(meta: dict, out: Path) -> None:
    table = Table(title=f"dataset {out}", title_justify="left")
    for column in ("split", "characters", "bytes", "tokens", "bytes/token"):
        table.add_column(column, justify="right")
    for split in ("train", "val"):
        part = meta[split]
        per_token = part["bytes"] / part["tokens"] if part["tokens"] else 0.0
        table.add_row(
            split,
            f"{part['chars']:,}",
            f"{part['bytes']:,}",
            f"{part['tokens']:,}",
            f"{per_token:.2f}",
        )
    console.print(table)
    tok = meta["tokenizer"]
    console.print(
        f"{tok['model_type']} tokenizer, vocabulary {meta['vocab_size']:,} "
        f"({meta['vocab_used']:,} used), ids as {meta['dtype']}, {meta['seconds']:.1f}s",
        highlight=False,
    )


def _inspect(tok: Tokenizer, text: str | None, decode: str | None, json_output: bool) -> None:
    if text is not None:
        ids = tok.encode(text)
        pieces = tok.pieces(ids)
        if json_output:
            return _print_json({"text": text, "ids": ids, "pieces": pieces})
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
            return _print_json({"ids": ids, "text": decoded})
        sys.stdout.write(decoded + "\n")


def main() -> None:
    """The console script: like `app()`, but a usage error is one line, as ours are."""
    from typer._click.exceptions import ClickException

    try:
        code = app(standalone_mode=False)
    except ClickException as error:
        if message := error.format_message():
            console.print(
                f"[bold red]error:[/] {message} (see --help)", highlight=False, soft_wrap=True
            )
        sys.exit(error.exit_code)
    except typer.Abort:
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
