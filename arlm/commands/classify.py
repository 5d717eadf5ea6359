"""`arlm classify`: labels for texts (--text, a file's lines, or stdin's lines) from a classifier
checkpoint, each with its probability; the `--top N` most likely labels."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from rich.console import Console

from arlm import classify
from arlm.commands._shared import load, print_json
from arlm.errors import ArlmError, UsageError


def run(
    *,
    checkpoint: Path,
    text: str | None,
    file: Path | None,
    top: int,
    device: str,
    json_output: bool,
    console: Console,
) -> None:
    """One line (or JSON object) per text: the most likely labels and their probabilities."""
    if top < 1:
        raise UsageError(f"--top must be at least 1, got {top}")
    texts = _texts(text, file)
    model, config, tokenizer, where = load(checkpoint, device, task="classify")
    names = config["data"]["labels"]
    probabilities = classify.probabilities(model, classify.encode(tokenizer, texts), where)
    for line, row in zip(texts, probabilities, strict=True):
        best = np.argsort(-row, kind="stable")[:top]
        found = [(names[i], float(row[i])) for i in best]
        if json_output:
            print_json({"text": line, "labels": [{"label": n, "p": p} for n, p in found]})
        else:
            sys.stdout.write(", ".join(f"{n} {p:.3f}" for n, p in found) + "\t" + line + "\n")


def _texts(text: str | None, file: Path | None) -> list[str]:
    """--text, else a file's non-empty lines, else stdin's."""
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
        raise UsageError("give texts to label: --text TEXT, a FILE of lines, or lines on stdin")
    lines = [line for line in lines if line.strip()]
    if not lines:
        raise ArlmError("no text to label: every line is empty")
    return lines
