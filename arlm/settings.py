"""The settings of a training run (TrainConfig) and where a run's settings come from: command-line
flags, then a TOML file (`--config`, the same names as the flags), then the defaults of
TrainConfig and of the model's config (arlm.models.ModelConfig), which the CLI's help shows.

A checkpoint stores both configs (config.json), so sampling and resuming need no flags.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path

from arlm.errors import ArlmError, UsageError
from arlm.models import ModelConfig
from arlm.models.seq2seq import ATTENTIONS
from arlm.sequences import PADDINGS, UNITS

OPTIMIZERS = ("adamw", "sgd", "nt-asgd")
SCHEDULES = ("cosine", "constant", "plateau")
TASKS = ("lm", "classify", "seq2seq")


@dataclass
class TrainConfig:
    """How to train; stored in the checkpoint. Defaults train a small corpus well on a CPU."""

    batch_size: int = 32  # parallel streams B
    k1: int = 64  # tokens between updates
    k2: int | None = None  # tokens backpropagated (>= k1); None: k1
    optimizer: str = "adamw"  # adamw | sgd | nt-asgd (SGD, then averaged: see Averager)
    nonmono: int = 5  # nt-asgd: evaluations that may pass without beating the best before them
    lr: float = 3e-3
    weight_decay: float = 0.01
    embedding_decay: bool = True  # False: no weight decay on the embedding (nor a tied output)
    warmup_steps: int = 50
    schedule: str = "cosine"  # cosine | constant | plateau
    min_lr_ratio: float = 0.1  # cosine decays to lr * this
    plateau_factor: float = 4.0  # plateau: lr divided by this at each evaluation not the best
    clip: float = 1.0  # gradient norm clipping; 0 turns it off
    ar: float = 0.0  # activation regularisation: ar * mean(h^2) of the last layer's output
    tar: float = 0.0  # temporal AR: tar * mean((h_t - h_{t-1})^2), before output dropout
    bptt_jitter: bool = False  # stream only: each window's length drawn around k1 (AWD-LSTM)
    eval_every: int | None = None  # steps; None: a share of the wall time (training.clock)
    patience: int | None = None  # evaluations without improvement before stopping
    max_steps: int | None = None
    epochs: float | None = 10.0
    time_budget: float | None = None  # seconds of wall time, over the runs of a checkpoint
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | mps
    precision: str = "auto"  # auto | fp32 | bf16 | fp16
    compile: bool = False
    sequences: str = "stream"  # stream (TBPTT over one long text) | lines | documents
    padding: str = "post"  # sequences only: pads after (post) or before (pre) each sequence
    max_length: int | None = None  # sequences only: cut longer ones
    reverse: bool = False  # the tokens read right to left: a backwards model (data.reading_order)
    task: str = "lm"  # lm: model a text | classify: label texts (arlm.labelled, models.classifier)
    # | seq2seq: map texts to texts (arlm.pairs, models.seq2seq)
    pooling: str = "last"  # classify: the encoder's output at the last token, or the mean
    class_weights: bool = False  # classify: weigh each label's loss by 1 / its share of texts
    attention: str = "none"  # seq2seq: none (the context vector alone) | luong | bahdanau

    @property
    def backprop_steps(self) -> int:
        return self.k2 or self.k1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})

    def check(self) -> None:
        positive = ("batch_size", "k1", "eval_every", "nonmono")
        for name in positive:
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be positive")
        if self.k2 is not None and self.k2 < self.k1:
            raise UsageError(f"--k2 ({self.k2}) must be at least --k1 ({self.k1})")
        for name in ("max_steps", "epochs", "time_budget", "patience"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.lr <= 0 or self.weight_decay < 0 or self.clip < 0 or self.warmup_steps < 0:
            raise UsageError("--lr must be positive; --weight-decay, --clip, --warmup >= 0")
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"--optimizer must be adamw, sgd or nt-asgd, got {self.optimizer!r}")
        if self.ar < 0 or self.tar < 0:
            raise UsageError(f"--ar and --tar must be >= 0, got {self.ar} and {self.tar}")
        if self.sequences not in ("stream", *UNITS):
            raise UsageError(
                f"--sequences must be stream, lines or documents, got {self.sequences!r}"
            )
        if self.padding not in PADDINGS:
            raise UsageError(f"--padding must be pre or post, got {self.padding!r}")
        if self.max_length is not None and self.max_length < 1:
            raise UsageError(f"--max-length must be positive, got {self.max_length}")
        if self.schedule not in SCHEDULES:
            raise UsageError(
                f"--schedule must be cosine, constant or plateau, got {self.schedule!r}"
            )
        if self.plateau_factor < 1:
            raise UsageError(f"--plateau-factor must be at least 1, got {self.plateau_factor}")
        if self.sequences != "stream" and (self.ar or self.tar or self.bptt_jitter):
            raise UsageError("--ar, --tar and --bptt-jitter train on a stream: drop --sequences")
        if self.sequences != "stream" and self.reverse:
            raise UsageError("--reverse trains on a stream read backwards: drop --sequences")
        if self.task not in TASKS:
            raise UsageError(f"--task must be lm, classify or seq2seq, got {self.task!r}")
        lm_only = [
            f for f in ("reverse", "ar", "tar", "bptt_jitter", "compile") if getattr(self, f)
        ]
        if self.task != "lm" and (lm_only or self.sequences != "stream"):
            flag = lm_only[0].replace("_", "-") if lm_only else "sequences"
            raise UsageError(f"--{flag} is for language models, not --task {self.task}: drop it")
        if self.attention not in ATTENTIONS:
            raise UsageError(f"--attention must be none, luong or bahdanau, got {self.attention!r}")
        if self.attention != "none" and self.task != "seq2seq":
            raise UsageError("--attention is between an encoder and a decoder: --task seq2seq")
        if self.max_steps is None and self.epochs is None and self.time_budget is None:
            raise UsageError("give a way to stop: --max-steps, --epochs or --time-budget")


# -- flags > TOML > defaults ------------------------------------------------------------------

# flag name -> field name: every field is a flag of `arlm train` (the vocabulary size comes
# from the dataset), --model sets the kind and --warmup the warm-up steps
MODEL_FIELDS = {"model": "kind"} | {
    name: name for name in ModelConfig.__dataclass_fields__ if name not in ("kind", "vocab_size")
}
TRAIN_FIELDS = {name: name for name in TrainConfig.__dataclass_fields__} | {
    "warmup": "warmup_steps"
}
OTHER = {"data", "out", "bptt", "log_every", "resume", "force", "config", "init_embeddings"}
OTHER |= {"init_from", "val", "tensorboard"}
OTHER_TYPES = {"data": "str", "out": "str", "resume": "str", "config": "str", "bptt": "int"}
OTHER_TYPES |= {"init_embeddings": "str", "init_from": "str", "val": "str", "tensorboard": "str"}
OTHER_TYPES |= {"log_every": "int", "force": "bool", "time_budget": "str"}
ACCEPTS = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}
ARTICLE = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "text"}


def _type_of(key: str) -> str:
    """'int', 'float', 'bool' or 'str': what the setting `key` takes."""
    if key in OTHER_TYPES:
        return OTHER_TYPES[key]
    if key in MODEL_FIELDS:
        field = ModelConfig.__dataclass_fields__[MODEL_FIELDS[key]]
    else:
        field = TrainConfig.__dataclass_fields__[TRAIN_FIELDS[key]]
    return str(field.type).split("|")[0].strip()


def _check_types(path: Path, values: dict) -> None:
    for key, value in values.items():
        kind = _type_of(key)
        accepted = ACCEPTS[kind] + ((int, float) if key == "time_budget" else ())
        if isinstance(value, bool) != (kind == "bool") or not isinstance(value, accepted):
            raise UsageError(
                f"--config {path}: {key.replace('_', '-')} takes {ARTICLE[kind]}, got {value!r}"
            )


def _check_finite(values: dict, where: str = "--") -> None:
    """nan and ±inf are refused for every number, whatever the setting: no setting means
    anything by them, and they fail late and loudly (the optimizer, the schedule, the loss)."""
    for key, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{where}{key.replace('_', '-')} must be a finite number, got {value}")


def parse_duration(text: str | float | int | None) -> float | None:
    """'90s', '10m', '1.5h' or a plain number of seconds -> seconds."""
    if text is None or isinstance(text, int | float):
        return None if text is None else float(text)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match:
        raise UsageError(f"--time-budget takes a duration like 90s, 10m or 1.5h, got {text!r}")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def read_toml(path: Path) -> dict:
    """A --config file, with its keys as flag names (dashes or underscores)."""
    try:
        values = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ArlmError(f"--config {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ArlmError(f"--config {path} is not valid TOML: {error}") from None
    values = {key.replace("-", "_"): value for key, value in values.items()}
    unknown = set(values) - set(MODEL_FIELDS) - set(TRAIN_FIELDS) - OTHER
    if unknown:
        raise UsageError(f"--config {path}: unknown setting(s) {', '.join(sorted(unknown))}")
    _check_types(path, values)
    _check_finite(values, f"--config {path}: ")
    return values


def merge(flags: dict, toml: dict) -> dict:
    """Flags that were given (not None) win over the TOML file."""
    given = {key: value for key, value in flags.items() if value is not None}
    _check_finite(given)
    merged = dict(toml) | given
    if "bptt" in merged:  # --bptt N sets both k1 and k2 unless they are given
        merged.setdefault("k1", merged["bptt"])
        merged.setdefault("k2", merged["bptt"])
    if "time_budget" in merged:
        merged["time_budget"] = parse_duration(merged["time_budget"])
        _check_finite({"time_budget": merged["time_budget"]})  # "9999...9h" is inf too
    return merged


def model_config(values: dict, base: ModelConfig | None = None) -> ModelConfig:
    fields = (base or ModelConfig()).to_dict()
    fields.update({MODEL_FIELDS[k]: v for k, v in values.items() if k in MODEL_FIELDS})
    return ModelConfig.from_dict(fields)


def train_config(values: dict, base: TrainConfig | None = None) -> TrainConfig:
    fields = (base or TrainConfig()).to_dict()
    fields.update({TRAIN_FIELDS[k]: v for k, v in values.items() if k in TRAIN_FIELDS})
    if any(k in values for k in ("max_steps", "time_budget")) and "epochs" not in values:
        fields["epochs"] = None  # a step or time limit replaces the default number of passes
    return TrainConfig.from_dict(fields)
