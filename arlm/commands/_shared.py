"""What several commands share: a checkpoint loaded by a --device name and scored on a text,
the console for tables that are a command's product, --plot paths and JSON on stdout."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
from rich.console import Console

from arlm import checkpoint, data, score
from arlm.errors import ArlmError, UsageError
from arlm.runtime import pick_device, pick_precision


def task_of(folder: Path) -> str:
    """What a checkpoint was trained for: "lm" (a language model), "classify" or "seq2seq"."""
    return checkpoint.read_config(folder).get("train", {}).get("task", "lm")


def load(folder: Path, device: str, task: str = "lm") -> checkpoint.Loaded:
    """A checkpoint's best model, config and tokenizer on --device `device` (auto, cpu, ...);
    one trained for another `task` than the command's is refused with what to run instead."""
    trained_for = task_of(folder)
    if trained_for != task:
        what = {"lm": "a language model", "classify": "a classifier", "seq2seq": "a seq2seq model"}
        raise UsageError(
            f"{folder} is {what.get(trained_for, trained_for)}: this command reads "
            f"{what.get(task, task)}"
        )
    return checkpoint.load_for_use(folder, pick_device(device))


def input_lines(text: str | None, file: Path | None, verb: str, blank: bool = False) -> list[str]:
    """The texts a command reads: --text, else a file's non-empty lines (all of them with
    `blank`), else stdin's; `verb` says what it does with them ("give texts to label")."""
    if text is not None and file is not None:
        raise UsageError("--text and a FILE both give texts: use one")
    if text is not None:
        return [text]
    if file is not None:
        if not Path(file).is_file():
            raise ArlmError(f"{file} does not exist")
        try:
            lines = Path(file).read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError:
            raise ArlmError(f"{file} is not UTF-8 text") from None
    elif not sys.stdin.isatty():
        lines = sys.stdin.read().splitlines()
    else:
        raise UsageError(f"give texts to {verb}: --text TEXT, a FILE of lines, or lines on stdin")
    if not any(line.strip() for line in lines):
        raise ArlmError(f"no text to {verb}: every line is empty")
    return lines if blank else [line for line in lines if line.strip()]


def stdout_console() -> Console:
    """For tables that are the command's product: on stdout, 120 columns in a pipe."""
    return Console(soft_wrap=True, width=None if sys.stdout.isatty() else 120)


def plot_path(value: Path | None) -> Path | None:
    """--plot PATH; an empty one (--plot '') draws nothing. The folder must exist, and a file
    already there must be a picture arlm drew: it is replaced, a file of the user's never."""
    if value is None or str(value) in ("", "."):
        return None
    path = Path(value)
    if not path.parent.is_dir():
        raise UsageError(f"--plot {value}: its folder does not exist")
    if path.is_dir() or path.is_symlink():
        raise UsageError(f"--plot {value}: that is a folder or a link; give the path of a new file")
    if path.exists():
        from arlm.plot import drawn_by_arlm  # matplotlib: only for a path that is taken

        if not drawn_by_arlm(path):
            raise UsageError(
                f"--plot {value}: a file that arlm did not draw is there; give another path "
                "(arlm replaces only its own pictures)"
            )
    return path


def print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False) + "\n")


def score_checkpoint(
    loaded: checkpoint.Loaded,
    data_path: Path | None,
    text: str | None,
    precision_name: str | None = None,
    per_token: Path | None = None,
) -> dict:
    """The figures of `score` for a checkpoint (checkpoint.load_for_use) on a text file, a
    dataset's validation split or a string, in the precision the model trained in unless told
    otherwise; with `per_token`, each token's log-probability written there (TSV)."""
    model, config, tokenizer, device = loaded.model, loaded.config, loaded.tokenizer, loaded.device
    if text is not None:
        scored = data.text_from_string(tokenizer, text)
    else:
        scored = data.text_from_path(tokenizer, data_path)
    name = precision_name or {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}.get(
        config.get("precision", "float32"), "fp32"
    )
    if device.type == "cpu" and name == "fp16":
        name = "fp32"
    precision = pick_precision(name, device)
    unit = config.get("train", {}).get("sequences", "stream")
    if unit != "stream" and per_token:
        raise UsageError("--per-token is for models trained on a stream, not on --sequences")
    logprobs = np.empty(len(scored.ids)) if per_token else None
    by_sequence = None if unit == "stream" else (unit, tokenizer)
    reverse = reversed_model(config)  # a backwards model scores the text right to left
    scored = dataclasses.replace(scored, ids=data.reading_order(scored.ids, reverse))
    figures = score.score(model, scored, device, precision, logprobs, by_sequence)
    if per_token:  # in reading order: each token given those after it, when reversed
        ids, logprobs = (data.reading_order(a, reverse) for a in (scored.ids, logprobs))
        score.write_per_token(per_token, tokenizer, ids, logprobs)
    if tokenizer.lemmas:  # it scored the text's lemmas; per byte: per byte of the text given
        figures["lemmas"] = tokenizer.lemmas
    return figures


def reversed_model(config: dict) -> bool:
    """Whether a checkpoint's model reads right to left (`arlm train --reverse`)."""
    return bool(config.get("train", {}).get("reverse", False))
