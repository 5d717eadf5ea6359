"""`arlm train`: settings, datasets, checkpoints, metrics,
the learning curve and the progress display. The trainer itself prints and writes nothing."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from arlm import (
    __version__,
    checkpoint,
    data,
    distributed,
    embed,
    labelled,
    pairs,
    recipes,
    settings,
)
from arlm.distributed import World
from arlm.errors import ArlmError, UsageError
from arlm.formats import atomic_write, write_json
from arlm.models import ModelConfig, all_finite, build_model, kinds
from arlm.models.base import REGULARISERS, require_fused
from arlm.models.classifier import Classifier
from arlm.models.seq2seq import Seq2Seq
from arlm.plot import learning_curve
from arlm.runtime import pick_device
from arlm.settings import TrainConfig
from arlm.tokenizer import Tokenizer
from arlm.training import EvalRecord, RollbackRecord, StepRecord, StopRecord, Trainer
from arlm.training.trainer import MAX_BAD_STEPS


def run(
    *, flags: dict, config_path: Path | None, resume: Path | None, force: bool, console: Console
) -> None:
    """`arlm train`: `flags` are the options given on the command line (None where not given),
    which win over the TOML file at `config_path`, which wins over the recipe and the defaults."""
    values = settings.merge(flags, settings.read_toml(config_path) if config_path else {})
    log_every = values.pop("log_every", 10) or 10
    board = values.pop("tensorboard", None)
    if board:
        Board.check(Path(board))  # before anything is written
    device = pick_device(values.get("device") or "auto")
    world = distributed.from_environment(device)
    if not world.main:  # rank 0 speaks and writes for all
        console = Console(quiet=True)
    try:
        _train(values, resume, force, console, world, log_every, board, cpu=device.type == "cpu")
    finally:  # the trainer (and its DDP wrapper) is gone by now: only then leave the group
        distributed.finish(world)


def _train(
    values: dict,
    resume: Path | None,
    force: bool,
    console: Console,
    world: World,
    log_every: int,
    board: str | None,
    *,
    cpu: bool,
) -> None:
    if resume is not None:
        trainer, out, dataset = _resume(Path(resume), values, world)
        recipe = checkpoint.read_config(out).get("recipe")
    else:
        recipe = _recipe(values)
        trainer, out, dataset = _start(
            recipes.apply(recipe, values, cpu=cpu), force, console, world
        )
    config = _describe(trainer, dataset) | {"recipe": recipe}
    tensorboard = Board(Path(board), trainer.step) if board and world.main else None
    if world.main:
        write_json(out / checkpoint.CONFIG, config)
    _report_start(trainer, out, console, recipe)
    try:
        _loop(trainer, out, config, console, log_every, tensorboard)
    finally:
        if tensorboard:
            tensorboard.close()


def check_parallel(flags: dict, config_path: Path | None, resume: Path | None, n: int) -> None:
    """What can be refused before `--nproc N` starts N processes."""
    values = settings.merge(flags, settings.read_toml(config_path) if config_path else {})
    if not resume:
        values = recipes.apply(_recipe(values), values)
    saved = checkpoint.read_config(resume) if resume else None
    config = settings.train_config(values, TrainConfig.from_dict(saved["train"]) if saved else None)
    distributed.check_split(config.batch_size, n)
    kind = saved["model"]["kind"] if saved else settings.model_config(values).kind
    # refused here once, not by each of the N processes
    if kind == "ngram":
        raise UsageError("--model ngram counts the text in one process: drop --nproc")
    if config.sequences != "stream":
        raise UsageError("several processes train on a stream: drop --sequences or --nproc")
    if not resume and values.get("data"):
        distributed.check_dataset(values["data"])


# -- setting up -------------------------------------------------------------------------------


def _recipe(values: dict) -> str | None:
    """The recipe for --data and --model (arlm.recipes): from a dataset's meta.json; a text
    file is tokenized as characters. A missing or damaged dataset is refused later."""
    path, kind = values.get("data"), values.get("model") or ModelConfig.kind
    if values.get("task", "lm") == "seq2seq":
        return "pairs" if kind in kinds(fused=True) else None
    if values.get("task", "lm") != "lm":  # a classifier keeps the built-in defaults
        return None
    meta = None
    if path is not None and Path(path).is_dir():
        with contextlib.suppress(ArlmError):
            meta = data.load_meta(Path(path))
    return recipes.pick(meta, kind)


def _start(values: dict, force: bool, console: Console, world: World) -> tuple[Trainer, Path, Path]:
    if values.get("data") is None:  # what is missing comes before what is in the way
        raise UsageError("--data is required: a dataset folder (arlm tokenize) or a text file")
    model_config = settings.model_config(values)
    train_config = settings.train_config(values)
    model_config.check()
    train_config.check()
    if model_config.kind == "ngram" and train_config.sequences != "stream":
        raise UsageError("--model ngram counts the stream: drop --sequences")
    if train_config.task != "lm":  # before tokenizing: refused at once
        require_fused(model_config.kind, f"--task {train_config.task} reads texts")
    if values.get("init_from") and train_config.task != "classify":
        raise UsageError("--init-from starts a classifier from a language model: --task classify")
    path = Path(values["data"])
    out = Path(values.get("out") or Path("checkpoints") / model_config.kind)
    _check_out(out, path, force)
    if world.active:
        distributed.check_dataset(path)
    if not world.main:  # the other ranks read; rank 0 alone touches --out
        return _new_trainer(values, model_config, train_config, path, world), out, path
    source = None
    if path.is_dir():
        meta = data.load_meta(path)  # a damaged dataset is refused before anything is written
        _check_task(path, meta.get("task", "lm"), train_config.task)
    else:
        source = _text_source(path)
    created = not out.exists()
    empty = created or not any(out.iterdir())
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ArlmError(f"cannot create the checkpoint folder {out}: {error.strerror}") from None
    aside = out / f".{checkpoint.DATASET}.tmp-{os.getpid()}"  # the old run's dataset, for now
    try:
        dataset = path if source is None else _tokenize(values, source, out, aside, console)
        trainer = _new_trainer(values, model_config, train_config, dataset, world)
    except BaseException:  # leave nothing behind, and the old run as it was
        if created:
            shutil.rmtree(out, ignore_errors=True)
        elif empty:
            checkpoint.clear(out)
        elif aside.is_dir():
            shutil.rmtree(out / checkpoint.DATASET, ignore_errors=True)
            aside.rename(out / checkpoint.DATASET)
        raise
    checkpoint.clear(out, keep=dataset)  # --force: the old run goes once this one can start
    shutil.copyfile(dataset / "tokenizer.model", out / checkpoint.TOKENIZER)
    if (dataset / pairs.TARGET_TOKENIZER).is_file():  # seq2seq: the targets' own tokenizer
        shutil.copyfile(dataset / pairs.TARGET_TOKENIZER, out / checkpoint.TARGET_TOKENIZER)
    return trainer, out, dataset


def _check_task(path: Path, holds: str, task: str) -> None:
    """A dataset made for one task cannot train another: say which to run."""
    if holds == task:
        return
    if holds == "classify":
        raise UsageError(f"{path} holds labelled texts: train a classifier (--task classify)")
    if holds == "seq2seq":
        raise UsageError(f"{path} holds pairs of texts: train with --task seq2seq")
    what = "labelled texts" if task == "classify" else "pairs of texts"
    raise UsageError(
        f"{path} is a language-model dataset: --task {task} needs {what} "
        f"(arlm tokenize FILE.tsv --task {task})"
    )


def _check_out(out: Path, dataset: Path, force: bool) -> None:
    """--out must be a new folder, an empty one, or an arlm checkpoint (replaced only with
    --force): any other folder is refused before a byte is written, --force or not."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file: give a folder for the checkpoint")
    inside = out.resolve() == dataset.resolve() or dataset.resolve() in out.resolve().parents
    if inside and dataset.is_dir():
        raise UsageError(f"--out {out} is in the dataset folder {dataset}: choose another --out")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not checkpoint.is_checkpoint(out):
        raise UsageError(
            f"--out {out} holds files that arlm did not write, which it never deletes (even with "
            "--force): choose a new or empty folder"
        )
    if not force:
        raise UsageError(
            f"{out} holds a checkpoint: continue it with --resume {out}, "
            "or pass --force to start over"
        )


def _new_trainer(
    values: dict, model_config: ModelConfig, train_config: TrainConfig, dataset: Path, world: World
) -> Trainer:
    """A fresh model (seeded, sized to the dataset's vocabulary, its first prediction the
    training text's unigram distribution, embeddings loaded if asked) and its trainer."""
    meta = data.load_meta(dataset)
    model_config.vocab_size = meta["vocab_size"]
    torch.manual_seed(train_config.seed)
    if train_config.task == "classify":
        if values.get("init_from"):  # the language model's shape, and then its weights
            language_model, model_config = _language_model(values, meta)
        model = Classifier(model_config, len(meta["labels"]), train_config.pooling)
        if values.get("init_from"):
            model.encoder.load_state_dict(language_model.state_dict())
    elif train_config.task == "seq2seq":
        model = Seq2Seq(model_config, meta["target_vocab_size"], train_config.attention)
    else:
        model = build_model(model_config)
    if model.starts_at_unigram:  # no plateau above the unigram level (see start_at_unigram)
        model.start_at_unigram(torch.from_numpy(data.token_counts(dataset)))
    if values.get("init_embeddings"):
        embed.init_embeddings(model, values["init_embeddings"], meta["tokenizer"]["sha256"])
    return _trainer(model, dataset, meta, train_config, world)


def _language_model(values: dict, meta: dict):
    """--init-from: an arlm language model trained with the dataset's tokenizer, and its
    config, which the classifier's layers take (their shape is its)."""
    folder = Path(values["init_from"])
    shape = [k for k in settings.MODEL_FIELDS if k in values and not k.startswith("dropout")]
    if shape:
        flag = "--" + shape[0].replace("_", "-")
        raise UsageError(f"--init-from takes the language model's shape: drop {flag}")
    config = checkpoint.read_config(folder)
    if config.get("train", {}).get("task", "lm") != "lm":
        raise UsageError(f"--init-from {folder} is not a language model")
    if config.get("data", {}).get("tokenizer_sha256") != meta["tokenizer"]["sha256"]:
        raise UsageError(
            f"--init-from {folder} was trained with another tokenizer: make the labelled dataset "
            f"with it (arlm tokenize FILE.tsv --task classify --tokenizer {folder})"
        )
    model, _ = checkpoint.load(folder)
    model_config = ModelConfig.from_dict(config["model"])
    for name in ("dropout", *REGULARISERS):  # what may differ: regularisation
        if name in values:
            setattr(model_config, name, values[name])
    return model, model_config


def _text_source(path: Path) -> data.Source:
    source = data.scan(path)  # refuses missing paths and binary files clearly
    data.check_utf8([source], "refuse", flag=False)
    if not source.size:
        raise ArlmError(f"{path} is empty: give a file with some text in it")
    return source


def _tokenize(values: dict, source: data.Source, out: Path, aside: Path, console: Console) -> Path:
    """A text file tokenized (characters) into OUT/dataset, or, for --task classify, a labelled
    TSV file (BPE), unless that is done already; `--val FILE` is the validation text. An
    older dataset there is moved to `aside`: the old run keeps it until this one can start."""
    path, val, task = Path(values["data"]), values.get("val"), values.get("task", "lm")
    val_source = _text_source(Path(val)) if val else None
    made_from = [source.sha256, val_source.sha256 if val_source else None, task]
    target = out / checkpoint.DATASET
    if target.is_dir():
        try:
            if data.load_meta(target).get("made_from") == made_from:
                return target
        except Exception:  # a damaged leftover: tokenize again
            pass
        target.rename(aside)
    held = f"{val} for validation" if val else "10% for validation"
    if task == "classify":
        console.print(f"tokenizing {path} (labelled texts, BPE, {held}) into {target}")
        train, held_out = labelled.read_split(path, val, 0.1)
        labelled.build(target, train, held_out, force=True)
    elif task == "seq2seq":
        console.print(f"tokenizing {path} (pairs of texts, characters, {held}) into {target}")
        train, held_out = pairs.read_split(path, val, 0.1)
        pairs.build(target, train, held_out, model_type="char", force=True)
    else:
        console.print(f"tokenizing {path} (characters, {held}) into {target}")
        val_sources = [val_source] if val_source else None
        data.build(target, [source], val_sources, model_type="char", force=True)
    # what it came from, so that a run on the same files reuses it
    write_json(target / "meta.json", data.load_meta(target) | {"made_from": made_from})
    return target


def _trainer(model, dataset: Path, meta: dict, config: TrainConfig, world: World) -> Trainer:
    if config.task == "classify":  # labelled texts: ids, offsets and labels (arlm.labelled)
        train, val = labelled.open_split(dataset, "train"), labelled.open_split(dataset, "val")
        return Trainer(model, train, val, config, world=world)
    if config.task == "seq2seq":  # sources and targets (arlm.pairs); <s>, </s>: the targets'
        train, val = pairs.open_split(dataset, "train"), pairs.open_split(dataset, "val")
        _, target = pairs.tokenizers(dataset)
        specials = {"bos": target.bos_id, "eos": target.eos_id}
        per_pair = meta["val"]["bytes"] / max(1, meta["val"]["pairs"])  # per byte of the targets
        return Trainer(model, train, val, config, per_pair, specials, world)
    train_ids, val_ids = data.open_ids(dataset, "train"), data.open_ids(dataset, "val")
    train_ids = data.reading_order(train_ids, config.reverse)
    val_ids = data.reading_order(val_ids, config.reverse)
    if len(val_ids) < 2:
        raise ArlmError(
            f"{dataset} has no validation text: re-tokenize with --val-fraction or --val"
        )
    val = meta["val"]
    tokenizer = Tokenizer.load(dataset)
    specials = {"line_ends": tokenizer.line_ends, "bos": tokenizer.bos_id, "eos": tokenizer.eos_id}
    bytes_per_token = val["bytes"] / val["tokens"]
    return Trainer(model, train_ids, val_ids, config, bytes_per_token, specials, world)


def _resume(folder: Path, values: dict, world: World) -> tuple[Trainer, Path, Path]:
    saved = checkpoint.read_config(folder)
    kept = (*settings.MODEL_FIELDS, "init_embeddings", "init_from", "reverse", "task", "pooling")
    kept += ("attention",)
    changed = [k for k in kept if k in values]
    if changed:  # the direction of reading is the model's too
        raise UsageError(
            f"--resume keeps the model it saved: drop --{changed[0].replace('_', '-')}"
        )
    dataset = Path(values.get("data") or saved["data"]["path"])
    meta = data.load_meta(dataset)
    _check_task(dataset, meta.get("task", "lm"), saved.get("train", {}).get("task", "lm"))
    target = (meta.get("target_tokenizer") or {}).get("sha256")
    if meta["tokenizer"]["sha256"] != saved["data"]["tokenizer_sha256"] or (
        target != saved["data"].get("target_tokenizer_sha256")
    ):
        raise ArlmError(
            f"{dataset} was tokenized with another tokenizer than {folder}: resume on the "
            "dataset it was trained on"
        )
    train_config = settings.train_config(values, TrainConfig.from_dict(saved["train"]))
    train_config.check()
    model, state = checkpoint.load_last(folder)
    trainer = _trainer(model, dataset, meta, train_config, world)
    trainer.load_state_dict(state)
    if world.main:
        checkpoint.clear_leftovers(folder)  # what a killed run was writing or set aside
        checkpoint.rewind_metrics(folder, trainer.step)  # records logged after the snapshot
    return trainer, folder, dataset


def _describe(trainer: Trainer, dataset: Path) -> dict:
    meta = data.load_meta(dataset)
    return {
        "format": checkpoint.FORMAT,
        "format_version": checkpoint.FORMAT_VERSION,
        "arlm_version": __version__,
        "model": trainer.model.config.to_dict(),
        "train": trainer.config.to_dict(),
        "parameters": trainer.model.num_parameters(),
        "data": {
            "path": str(dataset.resolve()),
            "vocab_size": meta["vocab_size"],
            "tokenizer_sha256": meta["tokenizer"]["sha256"],
            "model_type": meta["tokenizer"]["model_type"],
            "train_tokens": meta["train"]["tokens"],
            "val_tokens": meta["val"]["tokens"],
            "val_bytes": meta["val"]["bytes"],
            "val_chars": meta["val"]["chars"],
        }
        | ({"labels": meta["labels"]} if "labels" in meta else {})
        | (_pairs_facts(meta) if meta.get("task") == "seq2seq" else {}),
        "device": str(trainer.device),
        "precision": str(trainer.precision).removeprefix("torch."),
    }


def _pairs_facts(meta: dict) -> dict:
    """What a seq2seq checkpoint keeps of its dataset: the targets' vocabulary and tokenizer
    (None: the sources'), and the longest training target, which bounds a decoding."""
    target = meta.get("target_tokenizer")
    return {
        "target_vocab_size": meta["target_vocab_size"],
        "target_tokenizer_sha256": target["sha256"] if target else None,
        "longest_target": meta["train"]["longest_target"],
    }


# -- the loop ---------------------------------------------------------------------------------


def _report_start(trainer: Trainer, out: Path, console: Console, recipe: str | None) -> None:
    c, m = trainer.config, trainer.model.config
    if trainer.counting:
        how = f"counting {len(trainer.train_ids):,} tokens"
    elif c.task == "seq2seq":
        how = (
            f"{len(trainer.lengths):,} pairs, attention {c.attention}, {c.batch_size} per batch, "
            f"{trainer.steps_per_epoch} steps per pass"
        )
    elif c.task == "classify":
        how = (
            f"{len(trainer.lengths):,} texts, {len(trainer.model.head.bias)} labels, "
            f"{c.batch_size} per batch, {c.pooling} state, {trainer.steps_per_epoch} steps per pass"
        )
    elif trainer.by_sequence:
        how = (
            f"{len(trainer.lengths):,} {c.sequences}, {c.batch_size} per batch padded "
            f"{c.padding}, full BPTT, {trainer.steps_per_epoch} steps per pass"
        )
    else:
        how = (
            f"{c.batch_size} streams, k1={c.k1} k2={c.backprop_steps}, "
            f"{trainer.steps_per_epoch} steps per pass"
        )
    console.print(
        f"{m.describe()}, {trainer.model.num_parameters():,} parameters | {how} | "
        f"{trainer.device}, {str(trainer.precision).removeprefix('torch.')}, "
        f"{torch.get_num_threads()} threads"
        f"{f' | recipe: {recipe}' if recipe else ''} | {out}",
        highlight=False,
    )
    for warning in trainer.warnings:
        console.print(f"[yellow]warning:[/] {warning}")
    trainer.warnings.clear()


class _StopOnSignal:
    """First Ctrl-C (or SIGTERM): finish the update, save, exit. Second Ctrl-C: stop now."""

    def __init__(self, trainer: Trainer, console: Console) -> None:
        self.trainer, self.console, self.hits = trainer, console, 0

    def __enter__(self):
        self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def handle(self, signum, frame) -> None:
        self.hits += 1
        if self.hits > 1:
            raise KeyboardInterrupt
        self.console.print("stopping after this update and saving (Ctrl-C again to abort)")
        self.trainer.request_stop("interrupted")

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def _save(
    trainer: Trainer,
    out: Path,
    best: bool,
    console: Console,
    writer: checkpoint.Writer,
    curve: Callable[[], None] = lambda: None,
) -> None:
    """Copy the snapshot off the device, then write it, and draw `curve`, in the background."""
    if not all_finite(trainer.model):
        console.print(f"[yellow]warning:[/] weights not finite at step {trainer.step}: not saved")
        return
    state = trainer.state_dict()  # every rank: it gathers the ranks' streams
    if not trainer.world.main:
        return
    writer.wait()  # the write in flight first (and its error): one snapshot in memory at a time
    meta = {"step": trainer.step, "val_loss": trainer.best_loss} if best else None
    write = checkpoint.snapshot(trainer.model, state, out, meta)

    def job() -> None:
        write()
        curve()

    writer.submit(job)


class Board:
    """--tensorboard DIR: the scalars of metrics.jsonl as TensorBoard event files too, so the
    curves are live in TensorBoard (`tensorboard --logdir DIR`) as training goes."""

    TAGS = {  # a field of metrics.jsonl -> its tag in TensorBoard
        "loss": "train/loss",
        "lr": "train/learning_rate",
        "grad_norm": "train/grad_norm",
        "clipped": "train/clip_rate",
        "tokens_per_second": "train/tokens_per_second",
        "val_loss": "validation/loss",
        "perplexity": "validation/perplexity",
        "bits_per_byte": "validation/bits_per_byte",
        "accuracy": "validation/accuracy",
    }

    @staticmethod
    def check(folder: Path) -> None:
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"--tensorboard {folder} is a file: give a folder for the events")
        try:
            import tensorboard  # noqa: F401 (what torch.utils.tensorboard writes with)
        except ImportError:
            raise UsageError(
                "--tensorboard needs the tensorboard package: pip install tensorboard"
            ) from None

    def __init__(self, folder: Path, step: int = 0) -> None:
        """`step`: where the run starts, 0 or where a resume goes on from. TensorBoard drops
        what the folder holds for later steps (what the run before logged past its last
        snapshot, as metrics.jsonl does; all of it, for a new run), so no curve doubles back."""
        from torch.utils.tensorboard import SummaryWriter

        try:
            self.writer = SummaryWriter(log_dir=str(folder), flush_secs=10, purge_step=step + 1)
        except OSError as error:
            raise ArlmError(f"cannot write TensorBoard events in {folder}: {error}") from None

    def add(self, record: dict) -> None:
        for field, tag in self.TAGS.items():
            value = record.get(field)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(tag, value, record["step"])

    def close(self) -> None:
        self.writer.close()


def _loop(
    trainer: Trainer,
    out: Path,
    config: dict,
    console: Console,
    log_every: int,
    board: Board | None = None,
) -> None:
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    window: list[StepRecord] = []
    last_line, started, before = 0.0, time.perf_counter(), trainer.elapsed
    stop, writer, saving = None, checkpoint.Writer(), 0.0  # saving: what training waited for

    def save(best: bool, curve: Callable[[], None] = lambda: None) -> None:
        nonlocal saving
        begun = time.perf_counter()
        _save(trainer, out, best, console, writer, curve)
        saving += time.perf_counter() - begun

    def metrics(record: dict) -> None:  # rank 0 writes for all
        if trainer.world.main:
            checkpoint.append_metrics(out, record)
        if board and "step" in record:
            board.add(record)

    with _StopOnSignal(trainer, console), progress:
        task = progress.add_task("training", total=1000, status="")
        for record in trainer.run():
            writer.check()  # a failed write stops the run at once, not at the next save
            if estimate := writer.estimate():  # the time budget keeps this long for the last write
                trainer.write_seconds = estimate
            if isinstance(record, StepRecord):
                window.append(record)
                if record.skipped:
                    progress.console.print(
                        f"[yellow]warning:[/] step {record.step}: loss {record.loss} or gradient "
                        f"norm {record.grad_norm} not finite: update skipped",
                        highlight=False,
                    )
                if record.step % log_every == 0:
                    line = _log_steps(window, metrics)
                    window = []
                    progress.update(task, completed=1000 * record.progress, status=line)
                    if not console.is_terminal and time.perf_counter() - last_line > 2:
                        console.print(line, highlight=False)
                        last_line = time.perf_counter()
            elif isinstance(record, EvalRecord):
                if window:
                    _log_steps(window, metrics)
                    window = []
                metrics(asdict(record))
                save(record.best, lambda: _plot(out, config))
                progress.console.print(_eval_line(record, trainer.config.task), highlight=False)
            elif isinstance(record, RollbackRecord):
                metrics({"rollback": True, **asdict(record)})
                progress.console.print(
                    f"[yellow]warning:[/] {MAX_BAD_STEPS} non-finite updates in a row at step "
                    f"{record.step}: back to step {record.to_step}, learning rate x"
                    f"{record.lr_scale:g}",
                    highlight=False,
                )
            elif isinstance(record, StopRecord):
                stop = record
                if trainer.evaluated_at != trainer.step:  # saved with its evaluation otherwise
                    save(False)
        begun = time.perf_counter()
        writer.wait()  # the last file written: the time budget ends here
        saving += time.perf_counter() - begun
        for warning in trainer.warnings:
            console.print(f"[yellow]warning:[/] {warning}")
    if trainer.world.main:
        seconds = time.perf_counter() - started
        costs = _costs(trainer, writer, saving, seconds)
        _summary(trainer, out, stop, (seconds, before + seconds), costs, console)


def _plot(out: Path, config: dict) -> None:
    metrics = checkpoint.read_metrics(out)
    atomic_write(out / checkpoint.CURVE, lambda p: learning_curve(metrics, p, _title(config)))


def _log_steps(window: list[StepRecord], write: Callable[[dict], None]) -> str:
    """Average the updates since the last log line, append them to metrics.jsonl."""
    last = window[-1]
    record = {
        "step": last.step,
        "epoch": last.epoch,
        "tokens": last.tokens,
        "loss": sum(r.loss for r in window) / len(window),
        "lr": last.lr,
        "grad_norm": sum(r.grad_norm for r in window) / len(window),
        "clipped": sum(r.clipped for r in window) / len(window),
        "tokens_per_second": len(window) / sum(1 / r.tokens_per_second for r in window),
        "elapsed": last.elapsed,
    }
    write(record)
    return (
        f"step {last.step} loss {record['loss']:.3f} lr {last.lr:.2e} "
        f"|g| {record['grad_norm']:.2f} {record['tokens_per_second']:,.0f} tok/s"
    )


def _eval_line(record: EvalRecord, task: str = "lm") -> str:
    mark = " (best)" if record.best else ""
    if task == "seq2seq":  # the accuracy: the share of sources decoded to their target exactly
        return (
            f"step {record.step}: validation loss {record.val_loss:.4f}, perplexity "
            f"{record.perplexity:.2f}, exact match {record.accuracy:.1%}{mark}"
        )
    if record.accuracy is not None:  # a classifier
        return (
            f"step {record.step}: validation loss {record.val_loss:.4f}, "
            f"accuracy {record.accuracy:.1%}{mark}"
        )
    return (
        f"step {record.step}: validation loss {record.val_loss:.4f}, perplexity "
        f"{record.perplexity:.2f}, {record.bits_per_byte:.3f} bits/byte{mark}"
    )


def _title(config: dict) -> str:
    m = config["model"]
    return (
        f"{ModelConfig.from_dict(m).describe()} on "
        f"{Path(config['data']['path']).name} ({config['data']['model_type']} tokens)"
    )


def _costs(trainer: Trainer, writer: checkpoint.Writer, saving: float, seconds: float) -> dict:
    """The summary's rows on what evaluating and writing checkpoints cost this run."""
    n, spent = trainer.evaluations, trainer.eval_seconds
    return {
        "evaluation": f"{spent:.1f}s, {spent / seconds:.0%} of the time "
        f"({n} evaluation{'s' * (n != 1)})",
        "checkpoints": f"{writer.seconds:.1f}s writing, {writer.seconds / seconds:.0%} of the "
        f"time, in the background: training waited {saving:.1f}s ({saving / seconds:.0%})",
    }


def _summary(
    trainer: Trainer,
    out: Path,
    stop: StopRecord | None,
    seconds: tuple[float, float],
    costs: dict[str, str],
    console: Console,
) -> None:
    """`seconds`: this run's wall time and all the runs', each to its last file written."""
    evals = [m for m in checkpoint.read_metrics(out) if "val_loss" in m]
    best = min(evals, key=lambda m: m["val_loss"]) if evals else None
    table = Table(title=f"training summary: {out}", title_justify="left", show_header=False)
    table.add_row("stopped", f"{stop.reason if stop else 'aborted'} at step {trainer.step:,}")
    passes = trainer.schedule.passes()  # the epoch counter says which pass, not how many
    unit = "texts" if trainer.config.task == "classify" else "tokens"  # what an update counts
    table.add_row(f"{unit} seen", f"{trainer.tokens:,} ({passes:.2f} passes over the data)")
    this_run, in_all = seconds
    budget = trainer.config.time_budget
    limit = f" (budget {budget:g}s)" if budget else ""
    table.add_row("time", f"{this_run:.1f}s this run, {in_all:.1f}s in all{limit}")
    for name, text in costs.items():
        table.add_row(name, text)
    rate = trainer.tokens / in_all if in_all else 0.0
    table.add_row("throughput", f"{rate:,.0f} {unit}/s (evaluation and writing included)")
    clip_rate = trainer.clip_count / max(1, trainer.step)
    table.add_row("clipping", f"fired on {clip_rate:.0%} of updates")
    if best:
        figures = (
            f"accuracy {best['accuracy']:.1%}"
            if best.get("accuracy") is not None
            else f"perplexity {best['perplexity']:.2f}, {best['bits_per_byte']:.3f} bits/byte"
        )
        if trainer.config.task == "seq2seq":
            figures = f"perplexity {best['perplexity']:.2f}, exact match {best['accuracy']:.1%}"
        table.add_row(
            "best validation", f"loss {best['val_loss']:.4f} at step {best['step']}, {figures}"
        )
    console.print(table)
    if stop and stop.reason == "interrupted":
        console.print(f"resume with: arlm train --resume {out}", highlight=False)
    if math.isfinite(trainer.best_loss):
        console.print(f"learning curve: {out / checkpoint.CURVE}", highlight=False)
