"""The `arlm` command line: typer only. Each command declares its flags (train's help shows the
defaults of the config classes), calls one `run(...)` in arlm.commands, and turns arlm's errors
into one line on stderr and an exit code. The commands print: the product (ids, text, --json)
on stdout; progress, summaries and errors on stderr (docs/ARCHITECTURE.md)."""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from typer.core import TyperCommand

from arlm.data import VAL_FRACTION
from arlm.errors import ArlmError
from arlm.tokenizer import DEFAULT_UNK_MARKER, DEFAULT_VOCAB_SIZE

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    rich_markup_mode="rich",  # help texts are rich markup: a literal [ is written \[
    help="Train and sample autoregressive language models (Elman, Jordan, LSTM, GRU, n-gram, HMM) "
    "on your own text.",
)
console = Console(stderr=True, soft_wrap=True)  # never wrap a path or a command in two


def _fail(message: str, code: int = 1):
    if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all
        console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code) from None


OUT_OF_MEMORY = ("out of memory", "can't allocate memory")


def clean_errors(command: Callable) -> Callable:
    """Turn arlm's own errors into one line on stderr and an exit code, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except ArlmError as error:
            _fail(str(error), error.exit_code)
        except KeyboardInterrupt:
            console.print("[bold red]interrupted[/]")
            raise typer.Exit(130) from None
        except OSError as error:  # a file system failure that no check above foresaw
            where = f" {error.filename}" if error.filename else ""
            _fail(f"cannot use{where}: {error.strerror or error}")
        except (MemoryError, RuntimeError) as error:
            said = str(error).lower()  # CUDA's words, and the CPU allocator's
            if not isinstance(error, MemoryError) and not any(w in said for w in OUT_OF_MEMORY):
                raise
            _fail(
                "out of memory: lower --batch-size, --bptt or --hidden-size "
                "(or --num-samples for generate, --dim for embed)"
            )

    return wrapper


@app.callback()
def _root() -> None:
    """Train and sample autoregressive language models (Elman, Jordan, LSTM, GRU, n-gram, HMM)
    on your own text."""


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
        typer.Option(
            help=f"Pieces in the vocabulary. \\[default: {DEFAULT_VOCAB_SIZE}, or as many as the "
            "text allows; char, word: every character, every word]"
        ),
    ] = None,
    model_type: Annotated[ModelType, typer.Option(help="SentencePiece model type.")] = "bpe",
    unk_marker: Annotated[
        str | None,
        typer.Option(
            help="--model-type word: the corpus's unknown-word marker, made one piece "
            f'("" for none). \\[default: {DEFAULT_UNK_MARKER}]'
        ),
    ] = None,
    val: Annotated[Path | None, typer.Option(help="Validation text file.")] = None,
    val_fraction: Annotated[
        float | None,
        typer.Option(
            help="Hold out this last part of the corpus for validation. "
            f"\\[default: {VAL_FRACTION}]"
        ),
    ] = None,
    tokenizer: Annotated[
        Path | None,
        typer.Option(help="Reuse this tokenizer.model (or dataset folder): encode only."),
    ] = None,
    builtin: Annotated[
        Literal["python-docs", "python-modules", "dates"] | None,
        typer.Option(
            help="Use a corpus that ships with Python instead of files: python-docs (text), "
            "python-modules (docstrings labelled by package: a corpus to classify), dates "
            "(dates in many human forms, each with its ISO 8601 form, made on the fly: a "
            "seq2seq corpus)."
        ),
    ] = None,
    task: Annotated[
        Literal["lm", "classify", "seq2seq"],
        typer.Option(
            help="lm: a text to model; classify: labelled texts (LABEL<TAB>TEXT lines, or a "
            "folder of label folders) for a classifier; seq2seq: pairs (SOURCE<TAB>TARGET "
            "lines)."
        ),
    ] = "lm",
    separate_vocab: Annotated[
        bool,
        typer.Option(
            "--separate-vocab",
            help="--task seq2seq: a tokenizer for the sources and another for the targets "
            "(two languages), instead of one for both.",
        ),
    ] = False,
    text: Annotated[str | None, typer.Option(help="Show the pieces and ids of this text.")] = None,
    decode: Annotated[
        str | None, typer.Option(help='Print the text of these ids, e.g. "12 7 99".')
    ] = None,
    invalid_utf8: Annotated[
        Literal["refuse", "replace"],
        typer.Option(help="Bytes that are not UTF-8: refuse the corpus, or read them as U+FFFD."),
    ] = "refuse",
    lemmatize: Annotated[
        bool,
        typer.Option(
            "--lemmatize",
            help="Replace each word by its lemma (simplemma) before the tokenizer learns the "
            "text, and in every text it encodes after.",
        ),
    ] = False,
    language: Annotated[
        str | None, typer.Option(help="--lemmatize: the language (ISO 639-1). \\[default: en]")
    ] = None,
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
    from arlm.commands import tokenize as command

    command.run(
        corpus=corpus,
        out=out,
        vocab_size=vocab_size,
        model_type=model_type,
        unk_marker=unk_marker,
        val=val,
        val_fraction=val_fraction,
        tokenizer=tokenizer,
        builtin=builtin,
        text=text,
        decode=decode,
        invalid_utf8=invalid_utf8,
        force=force,
        json_output=json_output,
        console=console,
        lemmatize=lemmatize,
        language=language,
        task=task,
        separate_vocab=separate_vocab,
    )


def main() -> None:
    """The console script: like `app()`, but a usage error is one line, as ours are."""
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        sys.exit(1)
    except Exception as error:  # typer's usage errors (click's, in older typer releases)
        if not hasattr(error, "format_message") or not isinstance(
            getattr(error, "exit_code", None), int
        ):
            raise
        if message := error.format_message():
            console.print(
                f"[bold red]error:[/] {message} (see --help)", highlight=False, soft_wrap=True
            )
        sys.exit(error.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


# -- train ------------------------------------------------------------------------------------

ModelKind = Literal["elman", "jordan", "lstm", "gru", "ngram", "hmm", "ffnn"]


def _config_defaults() -> dict[str, object]:
    """Each `arlm train` option that sets a field of ModelConfig or TrainConfig -> its default."""
    from arlm.settings import MODEL_FIELDS, TRAIN_FIELDS, ModelConfig, TrainConfig

    model = {field.name: field.default for field in dataclasses.fields(ModelConfig)}
    train = {field.name: field.default for field in dataclasses.fields(TrainConfig)}
    return {flag: model[name] for flag, name in MODEL_FIELDS.items()} | {
        flag: train[name] for flag, name in TRAIN_FIELDS.items()
    }


TRAIN_HELP = {  # `arlm train`'s options -> what --help says of each (TrainCommand)
    "data_path": (
        "A dataset folder (arlm tokenize), or a text file; with --task classify, a labelled "
        "dataset or a LABEL<TAB>TEXT file; with --task seq2seq, a dataset of pairs or a "
        "SOURCE<TAB>TARGET file."
    ),
    "val": "With --data FILE: the validation text (or labelled texts). \\[default: 10% of FILE]",
    "out": "Checkpoint folder. \\[default: checkpoints/MODEL]",
    "model": "Model kind.",
    "embedding_dim": "Size of each input vector.",
    "hidden_size": "Units in each layer.",
    "num_layers": "Recurrent layers, stacked (ffnn: tanh hidden layers; 0: none).",
    "dropout": (
        "On embeddings, between layers and before the output; never on one-hot inputs or "
        "recurrent connections."
    ),
    "dropout_input": (
        "Locked (variational) dropout on the input vectors, one mask a row. \\[default: --dropout,"
        " not locked]"
    ),
    "dropout_hidden": "Locked dropout between recurrent layers. \\[default: --dropout, not locked]",
    "dropout_output": "Locked dropout before the output layer. \\[default: --dropout, not locked]",
    "dropout_embedding": "Drop whole words from the embedding (AWD-LSTM).",
    "weight_drop": "DropConnect on the hidden-to-hidden weights, a new mask each pass.",
    "tie_weights": "Share input and output embeddings.",
    "input": "Input layer: a learned embedding or one-hot vectors (never dropped out).",
    "nonlinearity": "Elman only: the activation.",
    "jordan_decay": "Jordan only: the context's self-loop a.",
    "order": "N-gram only: the length N.",
    "init_embeddings": "Start the input layer from `arlm embed` vectors.",
    "init_from": (
        "Classify: start the classifier's layers from this language model (the same "
        "tokenizer; its shape is kept)."
    ),
    "states": "HMM only: hidden states K.",
    "context": "Ffnn only: the N tokens its window reads.",
    "direct": "Ffnn only: connections from the input vectors straight to the output too.",
    "batch_size": "Parallel streams.",
    "bptt": "Sets both --k1 and --k2.",
    "k1": "Tokens between updates.",
    "k2": "Tokens backpropagated, at least k1. \\[default: k1]",
    "optimizer": (
        "Update rule. nt-asgd: SGD, then the average of the weights once validation stops "
        "improving (evaluated and saved as the best)."
    ),
    "nonmono": (
        "nt-asgd: averaging starts at the first evaluation worse than the best before the last N."
    ),
    "lr": "Peak learning rate.",
    "weight_decay": "On weight matrices only (not biases).",
    "embedding_decay": "Weight decay on embeddings.",
    "warmup": "Steps of linear warmup.",
    "schedule": (
        "The learning rate after warmup; plateau: divided when an evaluation does not improve."
    ),
    "plateau_factor": "--schedule plateau: the divisor.",
    "clip": "Gradient norm clip; 0: off.",
    "ar": (
        "Activation regularisation: adds AR x mean(h^2) of the last layer's output after dropout "
        "to the loss optimised; 0: off."
    ),
    "tar": (
        "Temporal activation regularisation: adds TAR x mean((h_t - h_t-1)^2) of the last layer's"
        " output before dropout; 0: off."
    ),
    "bptt_jitter": (
        "Draw each window's length around k1 (AWD-LSTM: k1, or k1/2 one time in 20, spread 5, at "
        "most k1+20) and scale the rate by length / k1. Stream only."
    ),
    "eval_every": (
        "Steps between evaluations. \\[default: a multiple of 200 steps once evaluating and saving"
        " stay under 5% of the time]"
    ),
    "patience": "Stop after this many evaluations without progress.",
    "max_steps": "Stop after this many updates.",
    "epochs": "Passes over the data (none with --max-steps or --time-budget alone).",
    "time_budget": (
        "Wall time, e.g. 90s, 10m, 1h; the last evaluation and save end inside it (on --resume: "
        "all runs together)."
    ),
    "seed": "Same seed, same run (same device).",
    "device": "Where to train.",
    "precision": "auto: bf16 where the hardware has it, else fp16 (CUDA) or fp32.",
    "compile": "Compile the model (torch.compile).",
    "sequences": (
        "stream: TBPTT over the text; lines/documents: each on its own, padded, full BPTT."
    ),
    "padding": "Sequences: where pads go.",
    "max_length": "Sequences: cut longer ones (with a warning).",
    "reverse": (
        "Read the text right to left: generate writes the text before the prompt, eval scores "
        "backwards."
    ),
    "task": (
        "lm: a language model; classify: a classifier of texts (a --task classify dataset); "
        "seq2seq: an encoder and a decoder mapping texts to texts (a --task seq2seq dataset)."
    ),
    "attention": (
        "Seq2seq: none: the decoder sees the source through the context vector alone; luong "
        "(multiplicative) or bahdanau (additive): it also looks at every source token."
    ),
    "pooling": "Classify: what the label is read from: the last state, or the mean over the text.",
    "class_weights": "Classify: weigh each label's loss by 1 / its share of the training texts.",
    "config": "TOML file with these settings.",
    "resume": "Continue this checkpoint.",
    "log_every": "Steps between log lines.",
    "nproc": "Data-parallel processes (runs torchrun; see README).",
    "force": "Start over in an existing --out.",
    "tensorboard": (
        "Also write the scalars of metrics.jsonl (loss, validation loss, learning rate, gradient "
        "norm, clip rate, tokens/s) as TensorBoard events into this folder."
    ),
}


class TrainCommand(TyperCommand):
    """`arlm train`, whose options take their help from TRAIN_HELP, and whose help shows the
    defaults of the config classes. Its options default to None (settings.merge must see which
    were given), and the classes import torch, which the other commands start without: so the
    defaults are read when the help is shown."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            param.help = param.help or TRAIN_HELP.get(param.name)

    def format_help(self, ctx: typer.Context, formatter: Any) -> None:
        if not getattr(self, "_defaults_shown", False):
            defaults = _config_defaults()
            for param in self.params:
                value = defaults.get(param.name)
                if value is not None:
                    shown = ("on" if value else "off") if isinstance(value, bool) else value
                    param.help = f"{param.help} \\[default: {shown}]"
            self._defaults_shown = True
        super().format_help(ctx, formatter)


@app.command(cls=TrainCommand)
@clean_errors
def train(
    data_path: Annotated[Path | None, typer.Option("--data")] = None,
    val: Path | None = None,
    out: Path | None = None,
    model: ModelKind | None = None,
    embedding_dim: int | None = None,
    hidden_size: int | None = None,
    num_layers: int | None = None,
    dropout: float | None = None,
    dropout_input: float | None = None,
    dropout_hidden: float | None = None,
    dropout_output: float | None = None,
    dropout_embedding: float | None = None,
    weight_drop: float | None = None,
    tie_weights: Annotated[bool | None, typer.Option("--tie-weights/--no-tie-weights")] = None,
    input: Literal["embedding", "one-hot"] | None = None,
    nonlinearity: Literal["tanh", "relu"] | None = None,
    jordan_decay: float | None = None,
    order: int | None = None,
    init_embeddings: Path | None = None,
    init_from: Path | None = None,
    states: int | None = None,
    context: int | None = None,
    direct: bool | None = None,
    batch_size: int | None = None,
    bptt: int | None = None,
    k1: int | None = None,
    k2: int | None = None,
    optimizer: Literal["adamw", "sgd", "nt-asgd"] | None = None,
    nonmono: int | None = None,
    lr: float | None = None,
    weight_decay: float | None = None,
    embedding_decay: Annotated[
        bool | None, typer.Option("--embedding-decay/--no-embedding-decay")
    ] = None,
    warmup: int | None = None,
    schedule: Literal["cosine", "constant", "plateau"] | None = None,
    plateau_factor: float | None = None,
    clip: float | None = None,
    ar: float | None = None,
    tar: float | None = None,
    bptt_jitter: Annotated[bool | None, typer.Option("--bptt-jitter")] = None,
    eval_every: int | None = None,
    patience: int | None = None,
    max_steps: int | None = None,
    epochs: float | None = None,
    time_budget: str | None = None,
    seed: int | None = None,
    device: Literal["auto", "cpu", "cuda", "mps"] | None = None,
    precision: Literal["auto", "fp32", "bf16", "fp16"] | None = None,
    compile: Annotated[bool | None, typer.Option("--compile")] = None,
    sequences: Literal["stream", "lines", "documents"] | None = None,
    padding: Literal["pre", "post"] | None = None,
    max_length: int | None = None,
    reverse: Annotated[bool | None, typer.Option("--reverse")] = None,
    task: Literal["lm", "classify", "seq2seq"] | None = None,
    pooling: Literal["last", "mean"] | None = None,
    class_weights: bool | None = None,
    attention: Literal["none", "luong", "bahdanau"] | None = None,
    config: Path | None = None,
    resume: Path | None = None,
    log_every: int = 10,
    tensorboard: Path | None = None,
    nproc: int | None = None,
    force: bool = False,
) -> None:
    """Train a language model: a recurrent network (TBPTT), a feed-forward network over a
    window of tokens, an HMM (gradient, TBPTT) or an n-gram model (counting)."""
    flags = {k: v for k, v in locals().items() if k not in ("config", "resume", "force")}
    flags["data"] = flags.pop("data_path")
    from arlm.commands import train as command  # torch loads only for the commands that need it

    if flags.pop("nproc") is not None and "WORLD_SIZE" not in os.environ:
        command.check_parallel(flags, config, resume, nproc)  # before starting processes
        from arlm.distributed import launch

        raise typer.Exit(launch(nproc, _without_nproc(sys.argv[1:]), _echo))

    command.run(flags=flags, config_path=config, resume=resume, force=force, console=console)


def _echo(line: str) -> None:
    """What the processes of --nproc say, passed on as it comes."""
    sys.stderr.write(line)
    sys.stderr.flush()


def _without_nproc(argv: list[str]) -> list[str]:
    """The command line minus --nproc N (or --nproc=N): what each process runs."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


# -- generate and eval ------------------------------------------------------------------------

Device = Literal["auto", "cpu", "cuda", "mps"]


@app.command()
@clean_errors
def generate(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint folder (arlm train --out).")],
    prompt: Annotated[str | None, typer.Option(help="Text to continue.")] = None,
    prompt_file: Annotated[Path | None, typer.Option(help="Read the prompt from a file.")] = None,
    max_tokens: Annotated[int, typer.Option(help="Tokens to generate.")] = 200,
    temperature: Annotated[float, typer.Option(help="Softmax temperature; 0 is greedy.")] = 0.8,
    top_k: Annotated[int, typer.Option(help="Sample from the k most likely tokens; 0: all.")] = 0,
    top_p: Annotated[float, typer.Option(help="Nucleus: the smallest set with mass p.")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="Same seed, same text (same device).")] = None,
    num_samples: Annotated[int, typer.Option(help="Samples, generated as one batch.")] = 1,
    stop: Annotated[
        list[str] | None, typer.Option(help="Stop before this text (may repeat).")
    ] = None,
    beam: Annotated[int, typer.Option(help="Beam search width (>1: most likely text).")] = 1,
    length_penalty: Annotated[
        float,
        typer.Option(help="Beam search ranks texts by total log-prob / length^ALPHA; 0: by total."),
    ] = 1.0,
    repetition_penalty: Annotated[
        float,
        typer.Option(
            help="Above 1: lower the score of every token the text already holds (CTRL's "
            "penalty: a positive logit divided by it, a negative one multiplied); 1: off."
        ),
    ] = 1.0,
    no_repeat_ngram: Annotated[
        int,
        typer.Option(
            help="Never write an N-gram the text already holds (prompt included); 0: off."
        ),
    ] = 0,
    device: Annotated[Device, typer.Option(help="Where to run.")] = "auto",
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON object per sample on stdout.")
    ] = False,
) -> None:
    """Generate text from a checkpoint, carrying the recurrent state from token to token.

    The prompt comes from --prompt, --prompt-file, or standard input when it is not a terminal;
    the text is streamed to stdout as it is produced.
    """
    from arlm.commands import generate as command

    command.run(
        checkpoint=checkpoint,
        prompt=prompt,
        prompt_file=prompt_file,
        max_tokens=max_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        num_samples=num_samples,
        stop=stop or [],
        beam=beam,
        length_penalty=length_penalty,
        device=device,
        json_output=json_output,
        console=console,
        repetition_penalty=repetition_penalty,
        no_repeat_ngram=no_repeat_ngram,
    )


@app.command(name="eval")
@clean_errors
def eval_command(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint folder (arlm train --out).")],
    data_path: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="A text file, or a dataset folder (its val.bin); for a classifier, a "
            "LABEL<TAB>TEXT file or a labelled dataset; for seq2seq, a SOURCE<TAB>TARGET file "
            "or a dataset of pairs.",
        ),
    ] = None,
    text: Annotated[str | None, typer.Option(help="Score this string.")] = None,
    per_token: Annotated[
        Path | None, typer.Option(help="Write each token and its log-probability (TSV).")
    ] = None,
    device: Annotated[Device, typer.Option(help="Where to run.")] = "auto",
    precision: Annotated[
        Literal["fp32", "bf16", "fp16"] | None,
        typer.Option(help="Number format. \\[default: the precision the model trained in]"),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="The figures as one JSON object on stdout.")
    ] = False,
    plot: Annotated[
        Path | None, typer.Option(help="A classifier: draw its confusion matrix to this PNG.")
    ] = None,
) -> None:
    """Score text: tokens, loss (nats/token), perplexity, bits per byte and per character, and
    for a word tokenizer perplexity per word (a line end counts as a word, as papers count).
    A classifier: accuracy, macro-F1, precision and recall per label, the confusion matrix.
    Seq2seq: exact match, chrF and BLEU of greedy decoding, and the loss per target token."""
    from arlm.commands import eval as command

    command.run(
        checkpoint=checkpoint,
        data=data_path,
        text=text,
        per_token=per_token,
        device=device,
        precision=precision,
        json_output=json_output,
        console=console,
        plot=plot,
    )


@app.command(name="classify")
@clean_errors
def classify_command(
    checkpoint: Annotated[Path, typer.Argument(help="A classifier (arlm train --task classify).")],
    file: Annotated[
        Path | None, typer.Argument(help="Texts to label, one a line. \\[default: stdin]")
    ] = None,
    text: Annotated[str | None, typer.Option(help="Label this text.")] = None,
    top: Annotated[int, typer.Option(help="The most likely labels to show.")] = 1,
    device: Annotated[Device, typer.Option(help="Where to run.")] = "auto",
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON object per text on stdout.")
    ] = False,
) -> None:
    """Label texts with a classifier: the most likely labels, with their probabilities."""
    from arlm.commands import classify as command

    command.run(checkpoint=checkpoint, text=text, file=file, top=top, device=device,
                json_output=json_output, console=console)  # fmt: skip


@app.command()
@clean_errors
def translate(
    checkpoint: Annotated[
        Path, typer.Argument(help="A seq2seq model (arlm train --task seq2seq).")
    ],
    file: Annotated[
        Path | None, typer.Argument(help="Texts to map, one a line. \\[default: stdin]")
    ] = None,
    text: Annotated[str | None, typer.Option(help="Map this text.")] = None,
    beam: Annotated[int, typer.Option(help="Beam search width (>1: the most likely output).")] = 1,
    temperature: Annotated[
        float, typer.Option(help="Softmax temperature; 0 is greedy, above 0 samples.")
    ] = 0.0,
    top_k: Annotated[int, typer.Option(help="Sample from the k most likely tokens; 0: all.")] = 0,
    top_p: Annotated[float, typer.Option(help="Nucleus: the smallest set with mass p.")] = 1.0,
    seed: Annotated[int | None, typer.Option(help="Same seed, same samples (same device).")] = None,
    max_tokens: Annotated[
        int | None,
        typer.Option(help="Longest output. \\[default: twice the longest training target, +8]"),
    ] = None,
    device: Annotated[Device, typer.Option(help="Where to run.")] = "auto",
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON object per text on stdout.")
    ] = False,
    plot: Annotated[
        Path | None,
        typer.Option(help="Draw the attention of the --text's decoding to this PNG."),
    ] = None,
) -> None:
    """Map texts with a sequence-to-sequence model: greedy decoding, beam search (--beam) or
    sampling (--temperature above 0), one output line per input line."""
    from arlm.commands import translate as command

    command.run(checkpoint=checkpoint, text=text, file=file, beam=beam, temperature=temperature,
                top_k=top_k, top_p=top_p, seed=seed, max_tokens=max_tokens, device=device,
                json_output=json_output, console=console, plot=plot)  # fmt: skip


@app.command()
@clean_errors
def serve(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint folder (arlm train --out).")],
    host: Annotated[str, typer.Option(help="The address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="The port to listen on.")] = 8000,
    max_streams: Annotated[
        int, typer.Option(help="Streams in flight at once (n counts each); more get a 503.")
    ] = 64,
    max_tokens: Annotated[int, typer.Option(help="The most max_tokens a request may ask.")] = 1024,
    max_prompt: Annotated[int, typer.Option(help="The longest prompt, in tokens.")] = 4096,
    device: Annotated[Device, typer.Option(help="Where to run.")] = "auto",
) -> None:
    """Serve a language model over HTTP: OpenAI-style /v1/completions (streamed or whole),
    /v1/models, /health, and a web page at / to try it. The streams in flight are stepped as
    one batch; Ctrl-C or SIGTERM lets them finish, then stops."""
    from arlm.commands import serve as command

    command.run(checkpoint=checkpoint, host=host, port=port, max_streams=max_streams,
                max_tokens=max_tokens, max_prompt=max_prompt, device=device,
                console=console)  # fmt: skip


@app.command()
@clean_errors
def export(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint folder (arlm train --out).")],
    out: Annotated[
        Path | None, typer.Option(help="The file to write. \\[default: CHECKPOINT.onnx, beside it]")
    ] = None,
    format: Annotated[Literal["onnx"], typer.Option(help="The format.")] = "onnx",
    force: Annotated[
        bool, typer.Option(help="Replace a graph arlm export wrote there before (nothing else).")
    ] = False,
) -> None:
    """Export a language model's one generation step (token and state in, logits and state
    out) as an ONNX graph, to run with onnxruntime where PyTorch is not installed."""
    from arlm.commands import export as command

    command.run(checkpoint=checkpoint, out=out, format=format, console=console, force=force)


@app.command()
@clean_errors
def compare(
    checkpoints: Annotated[list[Path], typer.Argument(help="Checkpoint folders.")],
    data_path: Annotated[
        Path,
        typer.Option("--data", help="The text every model is scored on (a file or dataset)."),
    ],
    plot: Annotated[
        Path | None, typer.Option(help="Also draw bits per byte as a bar chart in this PNG file.")
    ] = None,
    device: Annotated[Device, typer.Option(help="Where to run.")] = "auto",
    json_output: Annotated[
        bool, typer.Option("--json", help="The rows as JSON on stdout.")
    ] = False,
) -> None:
    """Score several checkpoints on the same text: model, size, training cost, perplexity and
    bits per byte (the scale every tokenizer shares)."""
    from arlm.commands import compare as command

    command.run(
        checkpoints=checkpoints,
        data=data_path,
        plot=plot,
        device=device,
        json_output=json_output,
        console=console,
    )


@app.command()
@clean_errors
def diagnose(
    checkpoints: Annotated[list[Path], typer.Argument(help="Checkpoint folders (overlaid).")],
    data_path: Annotated[
        Path, typer.Option("--data", help="Text to probe on (a file or a dataset's val split).")
    ],
    max_distance: Annotated[int, typer.Option(help="K: how many steps back.")] = 50,
    windows: Annotated[int, typer.Option(help="Windows averaged over.")] = 64,
    plot: Annotated[
        Path | None, typer.Option(help="Also draw all curves, log scale, in this PNG file.")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="The curves as JSON.")] = False,
) -> None:
    """The vanishing-gradient probe: how much the prediction of a token depends on the input
    k steps back (mean gradient norm with respect to that input vector), k = 0..K."""
    from arlm.commands import diagnose as command

    command.run(
        checkpoints=checkpoints,
        data=data_path,
        max_distance=max_distance,
        windows=windows,
        plot=plot,
        json_output=json_output,
        console=console,
    )


@app.command()
@clean_errors
def embed(
    data_path: Annotated[
        Path, typer.Option("--data", help="A dataset folder: its tokens and tokenizer.")
    ],
    method: Annotated[Literal["skipgram", "cbow"], typer.Option(help="word2vec flavour.")] = (
        "skipgram"
    ),
    dim: Annotated[int, typer.Option(help="Vector size (= train's --embedding-dim).")] = 128,
    window: Annotated[int, typer.Option(help="Context tokens on each side (at most).")] = 5,
    negatives: Annotated[int, typer.Option(help="Noise tokens per example.")] = 5,
    epochs: Annotated[float, typer.Option(help="Passes over the training tokens.")] = 1.0,
    lr: Annotated[float, typer.Option(help="SparseAdam learning rate.")] = 0.01,
    seed: Annotated[int, typer.Option(help="Same seed, same vectors.")] = 0,
    out: Annotated[Path, typer.Option(help="Where to save them.")] = Path("embeddings.safetensors"),
    embeddings: Annotated[
        Path | None, typer.Option(help="Use this file instead of training.")
    ] = None,
    neighbors: Annotated[
        list[str] | None, typer.Option(help="List the pieces nearest to this one (may repeat).")
    ] = None,
    count: Annotated[int, typer.Option(help="How many neighbours.")] = 10,
    force: Annotated[bool, typer.Option(help="Replace an existing --out.")] = False,
) -> None:
    """word2vec embeddings (skip-gram or CBOW, negative sampling) of a dataset's tokens, and
    the nearest pieces to a piece by cosine similarity."""
    from arlm.commands import embed as command

    command.run(
        data_path=data_path,
        method=method,
        dim=dim,
        window=window,
        negatives=negatives,
        epochs=epochs,
        lr=lr,
        seed=seed,
        out=out,
        embeddings=embeddings,
        neighbors=neighbors,
        count=count,
        force=force,
        console=console,
    )
