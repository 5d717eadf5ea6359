"""The only code that knows the checkpoint format. A checkpoint is a folder:

    config.json          format version, model config, training config, dataset facts
    model.safetensors    the best weights so far (by validation loss): what generate/eval use
    last.safetensors     the latest snapshot, what --resume continues from: the weights and the
                         trainer state (optimizer, counters, RNG states, carried hidden state) in
                         one file, so that it can never be half old and half new
    tokenizer.model      a copy of the dataset's tokenizer
    target.model         seq2seq: a copy of the targets' tokenizer, when they have their own
    metrics.jsonl        one JSON object per logged step and per evaluation
    learning_curve.png   train and validation loss against tokens seen
    dataset/             the tokens of --data when it was a text file (an arlm dataset)

Nothing is ever unpickled: tensors are safetensors, everything else JSON. Each .safetensors file
carries a SHA-256 of its contents (names, shapes, bytes and the JSON beside them), checked on
load: safetensors itself would load a flipped byte silently. Each file is written beside its
final name, synced, then renamed into place, so a crash leaves the previous file or the new one.
A training run copies each snapshot off the device, then writes it in the background (`Writer`).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

from arlm.data import TARGET_TOKENIZER as TARGET
from arlm.data import TASK_FILES
from arlm.errors import ArlmError
from arlm.formats import atomic_write, read_versioned
from arlm.models import LanguageModel, ModelConfig, all_finite, build_model, device_of
from arlm.models.classifier import Classifier
from arlm.models.seq2seq import Seq2Seq
from arlm.tensorfile import on_cpu, read_tensors, write_cpu_tensors, write_tensors  # noqa: F401 (checkpoint.read_tensors, as before)
from arlm.tokenizer import Tokenizer

FORMAT = "arlm-checkpoint"
FORMAT_VERSION = 2
CONFIG = "config.json"
BEST = "model.safetensors"
LAST = "last.safetensors"
TOKENIZER = "tokenizer.model"
TARGET_TOKENIZER = TARGET  # seq2seq: the targets' tokenizer, when it is not the sources'
METRICS = "metrics.jsonl"
CURVE = "learning_curve.png"
FILES = (CONFIG, BEST, LAST, TOKENIZER, TARGET_TOKENIZER, METRICS, CURVE)
DATASET = "dataset"
# what a killed run leaves while writing NAME: ".NAME.tmp-PID" (atomic_write), and
# ".dataset.partial-PID" or ".dataset.old-PID" (data.build's staging)
_LEFTOVER = re.compile(r"\.(.+)\.(?:tmp|partial|old)-\d+")


# -- what arlm owns ---------------------------------------------------------------------------


def _named(name: str, names: tuple[str, ...]) -> bool:
    """`name` is one of `names`, or what a killed run left while writing one."""
    match = _LEFTOVER.fullmatch(name)
    return (match.group(1) if match else name) in names


def _owned(entry: Path) -> bool:
    """Whether arlm wrote `entry` of a checkpoint folder: one of its files, or the dataset
    folder (holding dataset files only), or what a killed run left of either."""
    if entry.is_symlink():
        return False
    if entry.is_dir():
        return _named(entry.name, (DATASET,)) and all(
            child.is_file() and not child.is_symlink() and _named(child.name, TASK_FILES)
            for child in entry.iterdir()
        )
    return entry.is_file() and _named(entry.name, FILES)


def is_checkpoint(folder: Path) -> bool:
    """Whether `folder` is an arlm checkpoint holding nothing but what arlm writes there: the
    only kind of folder that `arlm train --force` may clear."""
    folder = Path(folder)
    try:
        config = json.loads((folder / CONFIG).read_text())
        entries = list(folder.iterdir())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return (
        isinstance(config, dict)
        and config.get("format") == FORMAT
        and all(_owned(entry) for entry in entries)
    )


def clear(folder: Path, keep: Path | None = None) -> None:
    """Delete what arlm wrote in the checkpoint `folder`, except the folder `keep` (the dataset
    a new run trains on); a file arlm did not write stays, whatever its name."""
    for entry in Path(folder).iterdir():
        if _owned(entry) and (keep is None or entry.resolve() != keep.resolve()):
            _delete(entry)


def clear_leftovers(folder: Path) -> None:
    """Delete what a killed run left in the checkpoint `folder` while writing (or what a failed
    start set aside): arlm's own leftovers only, whatever else the folder holds."""
    for entry in Path(folder).iterdir():
        if _LEFTOVER.fullmatch(entry.name) and _owned(entry):
            _delete(entry)


def _delete(entry: Path) -> None:
    """A file, or a folder of files (what `_owned` accepts)."""
    if entry.is_dir():
        for child in entry.iterdir():
            child.unlink()
        entry.rmdir()
    else:
        entry.unlink()


# -- nested trainer state <-> flat tensors and JSON -------------------------------------------


def pack(value, tensors: dict[str, torch.Tensor], name: str):
    """`value` (dicts, lists, tuples, tensors, plain values) as JSON, its tensors moved into
    `tensors` under names that start with `name`."""
    if isinstance(value, torch.Tensor):
        tensors[name] = value
        return {"$tensor": name}
    if isinstance(value, dict):
        return {"$dict": [[k, pack(v, tensors, f"{name}.{k}")] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        items = [pack(v, tensors, f"{name}.{i}") for i, v in enumerate(value)]
        return items if isinstance(value, list) else {"$tuple": items}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint")


def unpack(value, tensors: dict[str, torch.Tensor]):
    if isinstance(value, list):
        return [unpack(v, tensors) for v in value]
    if isinstance(value, dict):
        if "$tensor" in value:
            return tensors[value["$tensor"]]
        if "$tuple" in value:
            return tuple(unpack(v, tensors) for v in value["$tuple"])
        return {k: unpack(v, tensors) for k, v in value["$dict"]}
    return value


# -- weights and snapshots --------------------------------------------------------------------


def _weights(model: LanguageModel) -> dict[str, torch.Tensor]:
    """The state dict; tied weights appear under both names (write_tensors copies each, since
    safetensors refuses shared storage, as do cuDNN's packed weights); loading restores ties."""
    return dict(model.state_dict())


def _check_finite(model: LanguageModel, path: Path) -> None:
    if not all_finite(model):
        raise ArlmError(f"refusing to write {path}: the weights are not finite (old file kept)")


def save_weights(model: LanguageModel, folder: Path, name: str = BEST, **meta) -> None:
    """Weights alone, under their own names: other tools can read model.safetensors."""
    path = Path(folder) / name
    _check_finite(model, path)
    write_tensors(path, _weights(model), {"kind": "weights", **meta})


def save_last(model: LanguageModel, trainer_state: dict, folder: Path) -> None:
    """Weights and trainer state in one file: one rename replaces both."""
    snapshot(model, trainer_state, folder)()


def snapshot(
    model: LanguageModel, trainer_state: dict, folder: Path, best: dict | None = None
) -> Callable[[], None]:
    """Copy the weights and the trainer state off the device now; return what writes them to
    last.safetensors (and the weights to model.safetensors, with the meta `best`, when they
    are the best): it can run in the background while training changes the originals."""
    folder = Path(folder)
    _check_finite(model, folder / LAST)
    weights = on_cpu(_weights(model))
    state: dict[str, torch.Tensor] = {}
    skeleton = pack(trainer_state, state, "trainer")
    tensors = {f"model.{k}": v for k, v in weights.items()} | on_cpu(state)

    def write() -> None:
        if best is not None:
            write_cpu_tensors(folder / BEST, weights, {"kind": "weights", **best})
        write_cpu_tensors(folder / LAST, tensors, {"kind": "snapshot", "trainer": skeleton})

    return write


class Writer:
    """Runs write jobs in a background thread, one at a time, so that training goes on while a
    snapshot is written. A job's error is raised in the caller's thread by the next `submit` or
    `wait`; a job in flight when the program ends is finished first (the thread is no daemon).
    """

    def __init__(self) -> None:
        self.seconds = 0.0  # the jobs' time, all told
        self.last = 0.0  # the last finished job's time
        self.waited = 0.0  # the caller's time waiting for a job to finish
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._started = 0.0  # when the job in flight started

    def estimate(self) -> float:
        """How long a write takes: the last one, or the one in flight so far if longer."""
        if self._thread is None or not self._thread.is_alive():
            return self.last
        return max(self.last, time.perf_counter() - self._started)

    def submit(self, job: Callable[[], None]) -> None:
        """Start `job` once the job in flight is done: at most one write at a time."""
        self.wait()
        self._thread = threading.Thread(target=self._run, args=(job,), name="arlm-writer")
        self._started = time.perf_counter()
        self._thread.start()

    def check(self) -> None:
        """Raise the error of a job that has finished, if it had one: without waiting."""
        if self._thread is None or not self._thread.is_alive():
            self.wait()

    def wait(self) -> None:
        """Wait for the job in flight; raise its error, if it had one (once)."""
        if self._thread is not None:
            started = time.perf_counter()
            self._thread.join()
            self.waited += time.perf_counter() - started
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error

    def _run(self, job: Callable[[], None]) -> None:
        started = time.perf_counter()
        try:
            job()
        except BaseException as error:  # for the caller's thread: see wait()
            self._error = error
        finally:
            self.last = time.perf_counter() - started
            self.seconds += self.last


def read_config(folder: Path) -> dict:
    """config.json of a checkpoint, checked for format and version."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArlmError(f"{folder} is not a checkpoint folder: give the --out of `arlm train`")
    fix = "give the --out folder of `arlm train`, or retrain"
    return read_versioned(folder / CONFIG, FORMAT, FORMAT_VERSION, "checkpoint", fix)


def _read(folder: Path, name: str, kind: str) -> tuple[dict, dict, dict]:
    config = read_config(folder)
    path = Path(folder) / name
    if not path.is_file():
        raise ArlmError(f"{folder} has no {name}: restore it, or retrain (no weights were saved)")
    tensors, meta = read_tensors(path)
    if meta.get("kind") != kind:
        raise ArlmError(f"{path} holds {meta.get('kind')!r}, not {kind!r}: restore or retrain")
    return config, tensors, meta


def _build(config: dict, tensors: dict, path: Path, device) -> LanguageModel:
    model_config = ModelConfig.from_dict(config["model"])
    train = config.get("train", {})
    if train.get("task", "lm") == "classify":  # a classifier: its labels are the data's
        labels = len(config["data"]["labels"])
        model = Classifier(model_config, labels, train.get("pooling", "last"))
    elif train.get("task", "lm") == "seq2seq":  # the decoder's vocabulary is the targets'
        target_vocab = config.get("data", {}).get("target_vocab_size")
        if not isinstance(target_vocab, int):
            raise ArlmError(f"{path.parent / CONFIG} has no target vocabulary size: retrain")
        model = Seq2Seq(model_config, target_vocab, train.get("attention", "none"))
    else:
        model = build_model(model_config)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[1:2] or [str(error)]
        raise ArlmError(f"{path} does not fit its config.json ({first[0].strip()})") from None
    return model.to(device)


def load(folder: Path, device: str | torch.device = "cpu") -> tuple[LanguageModel, dict]:
    """The best model of a checkpoint with its weights; returns (model, config)."""
    config, tensors, _ = _read(folder, BEST, "weights")
    return _build(config, tensors, Path(folder) / BEST, device), config


class Loaded(NamedTuple):
    """A checkpoint ready to use: its best model (in eval mode), config.json and tokenizer,
    and the device the model is on (the CPU for an n-gram, whose tables stay there)."""

    model: LanguageModel
    config: dict
    tokenizer: Tokenizer
    device: torch.device


def load_for_use(folder: Path, device: str | torch.device = "cpu") -> Loaded:
    """`load`, with the checkpoint's tokenizer, checked to be the one the model trained with."""
    model, config = load(folder, device)
    path = Path(folder) / TOKENIZER
    tokenizer = Tokenizer.load(path)
    expected = config.get("data", {}).get("tokenizer_sha256")
    if tokenizer.vocab_size != model.config.vocab_size or (
        expected and tokenizer.sha256 != expected
    ):
        raise ArlmError(
            f"{path} is not the tokenizer this model was trained with: copy it back from the "
            "dataset folder"
        )
    return Loaded(model.eval(), config, tokenizer, device_of(model))


def target_tokenizer(folder: Path, loaded: Loaded) -> Tokenizer:
    """A seq2seq checkpoint's targets' tokenizer: the sources' where the sides share one, else
    target.model, checked to be the one the decoder trained with."""
    facts = loaded.config["data"]
    expected = facts.get("target_tokenizer_sha256")
    path = Path(folder) / TARGET_TOKENIZER
    if expected is None:  # shared: then the decoder's vocabulary is the sources'
        tokenizer = loaded.tokenizer
        expected = tokenizer.sha256
    else:
        tokenizer = Tokenizer.load(path) if path.is_file() else None
    if (
        tokenizer is None
        or tokenizer.sha256 != expected
        or tokenizer.vocab_size != facts.get("target_vocab_size")
    ):
        raise ArlmError(
            f"{path} is not the target tokenizer this model was trained with: copy it back from "
            "the dataset folder"
        )
    return tokenizer


def load_last(folder: Path) -> tuple[LanguageModel, dict]:
    """The latest snapshot: (model on the CPU, trainer state)."""
    config, tensors, meta = _read(folder, LAST, "snapshot")
    weights = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    try:
        state = unpack(meta["trainer"], tensors)
    except (KeyError, TypeError, ValueError):
        raise ArlmError(f"{Path(folder) / LAST} has no usable trainer state: retrain") from None
    return _build(config, weights, Path(folder) / LAST, "cpu"), state


# -- metrics ----------------------------------------------------------------------------------


def append_metrics(folder: Path, record: dict) -> None:
    path = Path(folder) / METRICS
    try:
        with open(path, "a") as file:
            file.write(json.dumps(record) + "\n")
    except OSError as error:
        raise ArlmError(f"cannot write {path}: {error.strerror or error}") from None


def read_metrics(folder: Path) -> list[dict]:
    """The records of metrics.jsonl; a line cut short by a crash is skipped."""
    path = Path(folder) / METRICS
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [r for r in records if isinstance(r, dict)]


def rewind_metrics(folder: Path, step: int) -> None:
    """Keep the records up to `step` (a resumed run logs the later ones again)."""
    kept = [r for r in read_metrics(folder) if r.get("step", 0) <= step]
    text = "".join(json.dumps(r) + "\n" for r in kept)
    atomic_write(Path(folder) / METRICS, lambda p: p.write_text(text))
