"""The only code that knows the checkpoint format. A checkpoint is a folder:

    config.json          format version, model config, training config, dataset facts
    model.safetensors    the best weights so far (by validation loss): what generate/eval use
    last.safetensors     the latest weights: what --resume continues from
    trainer_state.pt     optimizer, counters, RNG states, carried hidden state: tensors and plain
                         values only, read with torch.load(weights_only=True), never unpickled
    tokenizer.model      a copy of the dataset's tokenizer
    metrics.jsonl        one JSON object per logged step and per evaluation
    learning_curve.png   train and validation loss against tokens seen

Weights are never a pickled module. Each file is written beside its final name, synced, then
renamed into place, so a crash leaves the previous file or the new one, never half of one.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from arlm.errors import ArlmError, UsageError
from arlm.formats import atomic_write, read_versioned
from arlm.models import ModelConfig, RecurrentLM, build_model

FORMAT = "arlm-checkpoint"
FORMAT_VERSION = 1
CONFIG = "config.json"
BEST = "model.safetensors"
LAST = "last.safetensors"
TRAINER = "trainer_state.pt"
TOKENIZER = "tokenizer.model"
METRICS = "metrics.jsonl"
CURVE = "learning_curve.png"


def save_weights(model: RecurrentLM, folder: Path, name: str) -> None:
    """Every tensor of the state dict, copied to the CPU as a tensor of its own: on a GPU cuDNN
    packs a recurrent layer's weights into one buffer, which safetensors refuses to store as
    shared views. Tied weights are stored under both names; loading restores the tie."""
    tensors = {
        k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()
    }
    atomic_write(Path(folder) / name, lambda p: save_file(tensors, str(p)))


def save_trainer_state(state: dict, folder: Path) -> None:
    atomic_write(Path(folder) / TRAINER, lambda p: torch.save(state, p))


def read_config(folder: Path) -> dict:
    """config.json of a checkpoint, checked for format and version."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a checkpoint folder: give the --out of `arlm train`")
    fix = "give the --out folder of `arlm train`, or retrain"
    return read_versioned(folder / CONFIG, FORMAT, FORMAT_VERSION, "checkpoint", fix)


def load(
    folder: Path, which: str = BEST, device: str | torch.device = "cpu"
) -> tuple[RecurrentLM, dict]:
    """Rebuild the model of a checkpoint with its weights; returns (model, config)."""
    config = read_config(folder)
    model = build_model(ModelConfig.from_dict(config["model"]))
    path = Path(folder) / which
    if not path.is_file():
        raise UsageError(f"{folder} has no {which}: the run saved no weights yet")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ArlmError(f"{path} is damaged or foreign ({error}): retrain or restore it") from None
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[1:2] or [str(error)]
        raise ArlmError(f"{path} does not fit its config.json ({first[0].strip()})") from None
    return model.to(device), config


def load_trainer_state(folder: Path) -> dict:
    """The trainer state, read without unpickling arbitrary objects."""
    path = Path(folder) / TRAINER
    if not path.is_file():
        raise UsageError(f"{folder} has no {TRAINER}: it cannot be resumed")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # weights_only refuses anything but tensors and plain values
        raise ArlmError(
            f"{path} is damaged or unsafe to load ({error.__class__.__name__})"
        ) from None


def append_metrics(folder: Path, record: dict) -> None:
    with open(Path(folder) / METRICS, "a") as file:
        file.write(json.dumps(record) + "\n")


def read_metrics(folder: Path) -> list[dict]:
    path = Path(folder) / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
