"""`arlm eval`: a text scored with a checkpoint: loss, perplexity, bits per byte and per
character, and per word for a word tokenizer (arlm.score)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console

from arlm.commands._shared import load, score_checkpoint
from arlm.errors import UsageError


def run(
    *,
    checkpoint: Path,
    data: Path | None,
    text: str | None,
    per_token: Path | None,
    device: str,
    precision: str | None,
    json_output: bool,
    console: Console,
) -> None:
    """`arlm eval`: the figures on stderr, or as one JSON object on stdout."""
    if (data is None) == (text is None):
        raise UsageError("give what to score: --data PATH or --text STRING (one of them)")
    if per_token is not None and (Path(per_token).is_dir() or not Path(per_token).parent.is_dir()):
        raise UsageError(f"--per-token {per_token}: give a file's path, in a folder that exists")
    loaded = load(checkpoint, device)
    figures = score_checkpoint(loaded, data, text, precision, per_token)
    if loaded.tokenizer.lemmas and not json_output:  # its tokenizer lemmatised the text first
        console.print(f"the text was scored as lemmas ({loaded.tokenizer.lemmas}), as trained")
    if json_output:
        sys.stdout.write(json.dumps(figures) + "\n")
        return
    per_word = ""
    if "perplexity_per_word" in figures:
        per_word = (
            f"; {figures['words']:,} words: perplexity {figures['perplexity_per_word']:.2f} "
            "per word"
        )
    console.print(
        f"{figures['tokens']:,} tokens: loss {figures['loss']:.4f} nats/token, perplexity "
        f"{figures['perplexity']:.2f}, {figures['bits_per_byte']:.4f} bits/byte, "
        f"{figures['bits_per_char']:.4f} bits/char{per_word}",
        highlight=False,
    )
