"""The bench's own arithmetic (the bench itself needs ../shared/data and ~27 minutes)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from arlm import data
from arlm.score import evaluate
from bench.gpu_check import Part, check, run_parts
from bench.reference import ReferenceTrainer
from bench.run import ReferenceAsModel, lstm_training_flops_per_token, table
from tests.conftest import corpus_text, make_char_dataset

ROOT = Path(__file__).resolve().parents[1]


def test_flops_per_token_of_an_lstm():
    config = {"embedding_dim": 2, "hidden_size": 3, "num_layers": 2}
    forward = 2 * 4 * 3 * (2 + 3) + 2 * 4 * 3 * (3 + 3) + 2 * 3 * 10
    assert lstm_training_flops_per_token(config, vocab=10) == 3 * forward


def test_reference_trains_and_is_scored_through_arlms_interface():
    ids = np.tile(np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5], dtype=np.uint16), 200)
    trainer = ReferenceTrainer(ids, 11, 8, 16, 2, 0.0, batch_size=4, bptt=10, lr=1.0)
    before, _ = evaluate(ReferenceAsModel(trainer), ids[:500])
    seen, seconds = trainer.train_tokens(1500)
    after, _ = evaluate(ReferenceAsModel(trainer), ids[:500])
    assert seen >= 1500 and seconds > 0
    assert after < before - 0.5  # it learns the repeating pattern
    assert before > 2.0 and torch.get_num_threads() >= 1


def test_summary_table_marks_misses():
    results = {
        2: {
            "arlm_tokens_per_second": 30000.0,
            "reference_tokens_per_second": 12000.0,
            "ratio": 2.5,
            "met": True,
        },
        6: {
            "seconds": {"arlm": 2.0, "sentencepiece": 1.0},
            "peak_megabytes": {"arlm": 200.0, "sentencepiece": 150.0},
            "ratio": 2.0,
            "met": False,
        },
    }
    text = table(results)
    assert "| 2. char-level" in text and "2.50x" in text and "| yes |" in text
    assert "**no**" in text and "threads" in text


def test_reference_trains_on_the_device_it_is_given():
    # the meta device runs the shapes without the arithmetic: a stand-in for CUDA on the CPU
    ids = np.arange(400, dtype=np.uint16) % 11
    trainer = ReferenceTrainer(ids, 11, 8, 16, 2, 0.0, batch_size=4, bptt=10, device="meta")
    assert trainer.step() == 40
    tensors = [*trainer.model.parameters(), trainer.data, *trainer.hidden]
    assert {t.device.type for t in tensors} == {"meta"}


def rows_of(table: str) -> dict[str, list[str]]:
    """A markdown table's rows by their first cell: [measured, target, met]."""
    cells = [line.strip("| ").split(" | ") for line in table.splitlines() if line.startswith("| ")]
    return {row[0]: row[1:] for row in cells[2:]}


def test_a_failing_part_stops_nothing_and_fails_the_check(tmp_path):
    work, python = tmp_path / "work", sys.executable
    figures = {"one_stream": [2e4], "64_streams": [6e5], "device": "a GPU", "torch": "2.x"}
    write = f"import sys; open(sys.argv[1], 'w').write({json.dumps(figures)!r})"
    parts = [
        Part("tests", [python, "-c", "print('1 failed, 2 passed in 0.1s'); exit(1)"], 10),
        Part("startup", [python, "-c", "import time; time.sleep(30)"], 0.5),
        Part("generation", [python, "-c", write, str(work / "figures" / "generation.json")], 10),
    ]
    started = time.perf_counter()
    code = check(work, tmp_path / "results", parts, deadline=60)
    assert code == 1 and time.perf_counter() - started < 10  # the sleeper was stopped
    rows = rows_of((tmp_path / "results" / "gpu_check.md").read_text())
    assert rows["tests that need CUDA (tests/test_cuda.py, ...)"] == [
        "tests failed: exit 1: 1 failed, 2 passed in 0.1s",
        "all pass",
        "**failed**",
    ]
    budget = next(v for k, v in rows.items() if k.startswith("--time-budget"))
    assert (
        budget[0] == "startup failed: stopped at its limit of 0.5 s" and budget[2] == "**failed**"
    )
    generation = next(v for k, v in rows.items() if k.startswith("generation"))
    assert generation == ["20,000 / 600,000", ">= 10,000 / >= 500,000", "yes"]
    assert (
        sum(v == ["not run", v[1], "-"] for v in rows.values()) == len(rows) - 4
    )  # and the defaults


def test_the_check_passes_when_every_part_ran_and_a_target_was_missed(tmp_path):
    work = tmp_path / "work"
    figures = {"one_stream": [9e3], "64_streams": [6e5]}
    write = f"import sys; open(sys.argv[1], 'w').write({json.dumps(figures)!r})"
    generation = [sys.executable, "-c", write, str(work / "figures" / "generation.json")]
    assert check(work, tmp_path / "results", [Part("generation", generation, 10)], 60) == 0
    rows = rows_of((tmp_path / "results" / "gpu_check.md").read_text())
    assert next(v for k, v in rows.items() if k.startswith("generation"))[2] == "**missed**"


def test_parts_past_the_deadline_are_not_run_and_count_as_failed(tmp_path):
    parts = [Part("tests", [sys.executable, "-c", "pass"], 10)]
    (result,) = run_parts(parts, tmp_path, deadline=0)
    assert not result["ok"] and result["error"].startswith("not run: the 0 s deadline")


@pytest.mark.slow
def test_the_gpu_check_measures_every_figure_on_the_cpu(tmp_path):
    # every part that measures, at toy sizes (~60 s: each part is a fresh process); the test and
    # command-line parts are left out, and so are the tokenize parts: their datasets are made here
    work = tmp_path / "work"
    work.mkdir()
    make_char_dataset(work, 120).rename(work / "char")
    (tmp_path / "words.txt").write_text(corpus_text(1200), encoding="utf-8")
    data.build(work / "word", [data.scan(tmp_path / "words.txt")], model_type="word")
    parts = "word,char,generation,startup,budget,defaults"
    env = os.environ | {"ARLM_CHECK_DEVICE": "cpu", "ARLM_CHECK_PARTS": parts}
    command = [sys.executable, "-m", "bench.gpu_check", "all", work, tmp_path / "results"]
    run = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = rows_of((tmp_path / "results" / "gpu_check.md").read_text())
    figures = {k: v for k, v in rows.items() if not k.startswith(("tests ", "arlm train"))}
    assert len(figures) == 6 and len(rows) == 8
    for figure, (measured, target, met) in figures.items():
        assert any(c.isdigit() for c in measured) and any(c.isdigit() for c in target), figure
        assert met in ("yes", "**missed**"), figure


def test_reference_divides_its_rate_by_four_when_a_pass_does_not_improve():
    ids = np.arange(90, dtype=np.uint16) % 7
    trainer = ReferenceTrainer(ids, 7, 4, 8, 1, 0.0, batch_size=2, bptt=10, lr=20.0)
    passes = 0
    for _ in range(12):  # 44 targets a row: a pass is 5 steps
        if trainer.pass_done:
            passes += 1
        trainer.step()
    assert passes == 2 and trainer.epoch == 2
    for loss, lr in ((5.0, 20.0), (4.0, 20.0), (4.5, 5.0), (4.0, 1.25), (3.9, 1.25)):
        trainer.end_of_epoch(loss)
        assert trainer.lr == lr


def test_summary_table_has_the_word_level_figure():
    result = {
        "minutes": 10.0,
        "arlm_recipe": "words",
        "arlm_tokens": 9_000_000,
        "reference_tokens": 2_000_000,
        "arlm_val_perplexity_per_word": 120.0,
        "reference_val_perplexity_per_word": 200.0,
        "ratio": 0.6,
        "met": True,
    }
    row = rows_of(table({8: result}))
    (name,) = row
    assert name.startswith("8. word-level") and "120.0 (recipe words" in row[name][0]
    assert row[name][1:] == ["<= 0.70x", "yes"]
