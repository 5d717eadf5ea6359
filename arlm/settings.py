"""Training settings from three places, in order of precedence: command-line flags, a TOML
file (`--config`, the same names as the flags), then the built-in defaults."""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path

from arlm.errors import ArlmError, UsageError
from arlm.models import ModelConfig
from arlm.train import TrainConfig

# flag name -> (which config, field name)
MODEL_FIELDS = {
    "model": "kind",
    "embedding_dim": "embedding_dim",
    "hidden_size": "hidden_size",
    "num_layers": "num_layers",
    "dropout": "dropout",
    "tie_weights": "tie_weights",
    "input": "input",
    "nonlinearity": "nonlinearity",
    "jordan_decay": "jordan_decay",
    "dropout_input": "dropout_input",
    "dropout_hidden": "dropout_hidden",
    "dropout_output": "dropout_output",
    "dropout_embedding": "dropout_embedding",
    "weight_drop": "weight_drop",
    "order": "order",
    "states": "states",
}
TRAIN_FIELDS = {name: name for name in TrainConfig.__dataclass_fields__} | {
    "warmup": "warmup_steps"
}
OTHER = {"data", "out", "bptt", "log_every", "resume", "force", "config", "init_embeddings"}
OTHER_TYPES = {"data": "str", "out": "str", "resume": "str", "config": "str", "bptt": "int"}
OTHER_TYPES |= {"init_embeddings": "str"}
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
