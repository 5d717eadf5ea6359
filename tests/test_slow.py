"""Slow checks on real and large corpora (CI runs them too)."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from arlm import data
from arlm.tokenizer import Tokenizer
from bench.tokenize_big import run_measured
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


def test_encoding_and_training_memory_do_not_grow_with_the_corpus(tmp_path):
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
        "--val-fraction",
        "0.002",
    ]
    returncode, peak = run_measured(command, subprocess.DEVNULL, subprocess.DEVNULL)
    assert returncode == 0
    assert size > 40e6
    # a Python with torch loaded holds well over 50 MB: 0 would mean nothing was measured
    assert 50e6 < peak < 500e6, f"peak {peak / 1e6:.0f} MB for a {size / 1e6:.0f} MB corpus"
    # training streams from the memory map too: a 60x smaller dataset, the same peak
    small = tmp_path / "small.txt"
    with open(corpus) as text:
        small.write_text("".join(text.readline() for _ in range(20_000)))
    tokenize = [sys.executable, "-m", "arlm", "tokenize", str(small), "--out",
                str(tmp_path / "small-ds"), "--tokenizer", str(tmp_path / "ds"),
                "--val-fraction", "0.02"]  # fmt: skip
    assert subprocess.run(tokenize, capture_output=True).returncode == 0
    peaks = {}
    for name in ("ds", "small-ds"):
        train = [sys.executable, "-m", "arlm", "train", "--data", str(tmp_path / name),
                 "--out", str(tmp_path / f"ck-{name}"), "--hidden-size", "64",
                 "--max-steps", "40", "--eval-every", "1000"]  # fmt: skip
        returncode, peaks[name] = run_measured(train, subprocess.DEVNULL, subprocess.DEVNULL)
        assert returncode == 0
    assert min(peaks.values()) > 50e6, {k: v / 1e6 for k, v in peaks.items()}  # measured
    assert peaks["ds"] < peaks["small-ds"] + 60e6, {k: v / 1e6 for k, v in peaks.items()}


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_saves_and_prints_the_resume_command(tmp_path, signum):
    import signal

    from arlm import checkpoint
    from tests.conftest import corpus_text

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(corpus_text(200), encoding="utf-8")
    out = tmp_path / "ck"
    command = [
        sys.executable,
        "-m",
        "arlm",
        "train",
        "--data",
        str(corpus),
        "--out",
        str(out),
        "--hidden-size",
        "32",
        "--max-steps",
        "100000",
        "--log-every",
        "1",
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not checkpoint.read_metrics(out):
        time.sleep(0.2)
    process.send_signal(getattr(signal, signum))
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert f"resume with: arlm train --resume {out}" in stderr
    assert stdout == ""
    _, state = checkpoint.load_last(out)
    steps = state["counters"]["step"]
    assert steps >= 1
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "arlm",
            "train",
            "--resume",
            str(out),
            "--max-steps",
            str(steps + 2),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert checkpoint.load_last(out)[1]["counters"]["step"] == steps + 2


def test_sigkill_at_20_moments_never_loses_the_checkpoint(tmp_path):
    """tests/kill_test.py: each kill leaves a loadable checkpoint that --resume continues."""
    from tests import kill_test

    summary = kill_test.trials(20, seed=0, folder=tmp_path, log=lambda line: None)
    assert summary["trials"] == 20
    # the 10 odd trials kill inside a write through arlm.formats' test hook: each one counts
    assert summary["killed_during_a_write"] >= 10
