"""Slow checks on real and large corpora (CI runs them too)."""

import json
import resource
import subprocess
import sys

import numpy as np
import pytest

from arlm import data
from arlm.tokenizer import Tokenizer
from tests.conftest import needs_shared_data

pytestmark = pytest.mark.slow


def test_wikitext2_decodes_back_to_the_training_file_exactly(tmp_path):
    train = needs_shared_data("wikitext-2", "train.txt")
    valid = needs_shared_data("wikitext-2", "valid.txt")
    out = tmp_path / "wt2"
    command = [
        sys.executable,
        "-m",
        "arlm",
        "tokenize",
        str(train),
        "--val",
        str(valid),
        "--vocab-size",
        "8000",
        "--out",
        str(out),
        "--json",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    meta = json.loads(result.stdout)
    tok = Tokenizer.load(out)
    assert tok.decode(data.open_ids(out, "train")).encode() == train.read_bytes()
    assert tok.decode(data.open_ids(out, "val")).encode() == valid.read_bytes()
    assert meta["vocab_size"] == 8000 and meta["dtype"] == "uint16"


def test_encoding_memory_does_not_grow_with_the_corpus(tmp_path):
    """64 MB of text encodes in a few hundred MB: chunks, not the whole corpus, are in memory
    (bench/tokenize_big.py measured a 1 GB corpus at ~230 MB peak)."""
    corpus = tmp_path / "big.txt"
    rng = np.random.default_rng(0)
    words = np.array("the of and to in a is that for it as was with be by on not he".split())
    with open(corpus, "w") as out:
        for _ in range(64):
            lines = rng.choice(words, size=(20_000, 10))
            out.write("\n".join(" ".join(line) for line in lines) + "\n")
    size = corpus.stat().st_size
    command = [
        sys.executable,
        "-m",
        "arlm",
        "tokenize",
        str(corpus),
        "--out",
        str(tmp_path / "ds"),
        "--vocab-size",
        "300",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    assert size > 40e6
    assert peak < 500e6, f"peak {peak / 1e6:.0f} MB for a {size / 1e6:.0f} MB corpus"
