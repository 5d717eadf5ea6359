"""Shared fixtures: tiny corpora and tokenizers made on the spot (milliseconds each)."""

import contextlib
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from arlm import tokenizer as tk

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# A small text with the things that break naive tokenizers: runs of spaces, tabs, CRLF, blank
# lines, non-Latin scripts, emoji, and SentencePiece's own space mark used literally.
ODD_TEXT = (
    "The quick brown fox jumps over the lazy dog.\n"
    "  Indented line\twith a tab, and trailing spaces   \n"
    "\n\n"
    "def f(x):\r\n    return x ** 2  # squares\n"
    "Ünïcödé: 漢字, Ελληνικά, русский, emoji 🐍🚀 and a literal \u2581 mark.\n"
)


def corpus_text(lines: int = 300) -> str:
    """A deterministic English-like corpus, big enough to train a few hundred pieces."""
    words = "the cat sat on a mat while dogs ran after red balls in green parks".split()
    out = []
    for i in range(lines):
        n = 4 + (i * 7) % 9
        out.append(" ".join(words[(i * 3 + j * 5) % len(words)] for j in range(n)) + ".")
    return "\n".join(out) + "\n" + ODD_TEXT


@pytest.fixture(scope="session")
def tokenizers() -> dict[str, tk.Tokenizer]:
    """One tokenizer of each model type, trained on `corpus_text()`."""
    text = corpus_text()
    sizes = {"bpe": 320, "unigram": 340, "char": None, "word": None}
    return {
        kind: tk.train(tk.training_sentences(text.split("\n")), kind, size)
        for kind, size in sizes.items()
    }


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(corpus_text(), encoding="utf-8")
    return path


def needs_shared_data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: benchmark corpora live in ../shared/data beside the repo")
    return path


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str


def run_arlm(*args: object) -> Run:
    """`arlm ARGS` as the console script runs it (usage errors on one line), in this process."""
    from arlm.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv, stdin = sys.argv, sys.stdin
    sys.argv, sys.stdin = ["arlm", *map(str, args)], io.StringIO("")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    finally:
        sys.argv, sys.stdin = argv, stdin
    return Run(code, out.getvalue(), err.getvalue())


def write_config(folder: Path, model) -> None:
    """The least config.json that checkpoint.load reads."""
    from arlm import checkpoint

    config = {
        "format": checkpoint.FORMAT,
        "format_version": checkpoint.FORMAT_VERSION,
        "model": model.config.to_dict(),
    }
    (folder / checkpoint.CONFIG).write_text(json.dumps(config))


def make_char_dataset(folder: Path, lines: int = 120) -> Path:
    """`corpus_text(lines)` in folder/corpus.txt, tokenized by characters into folder/ds."""
    from arlm import data

    corpus = folder / "corpus.txt"
    corpus.write_text(corpus_text(lines), encoding="utf-8")
    data.build(folder / "ds", [data.scan(corpus)], model_type="char")
    return folder / "ds"
