"""`arlm classify`: labels for texts (--text, a file's lines, or stdin's lines) from a classifier
checkpoint, each with its probability; the `--top N` most likely labels."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from rich.console import Console

from arlm import classify
from arlm.commands._shared import input_lines, load, print_json
from arlm.errors import UsageError


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
    texts = input_lines(text, file, "label")
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
