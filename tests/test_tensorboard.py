"""`arlm train --tensorboard DIR`: the scalars of metrics.jsonl, the same values at the same
steps, as TensorBoard events."""

import json

import pytest

from tests.conftest import make_char_dataset, run_arlm

pytest.importorskip("tensorboard", reason="--tensorboard needs the tensorboard package")


def test_tensorboard_gets_the_scalars_of_metrics_jsonl(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    dataset = make_char_dataset(tmp_path)
    out, board = tmp_path / "ck", tmp_path / "board"
    made = run_arlm("train", "--data", dataset, "--out", out, "--model", "gru", "--hidden-size",
                    16, "--embedding-dim", 8, "--num-layers", 1, "--max-steps", 6,
                    "--eval-every", 3, "--log-every", 2, "--tensorboard", board)  # fmt: skip
    assert made.code == 0, made.stderr
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(board))
    events.Reload()
    for field, tag in (("loss", "train/loss"), ("val_loss", "validation/loss"),
                       ("lr", "train/learning_rate"), ("clipped", "train/clip_rate"),
                       ("tokens_per_second", "train/tokens_per_second")):  # fmt: skip
        expected = [(r["step"], r[field]) for r in records if field in r]
        found = [(e.step, e.value) for e in events.Scalars(tag)]
        assert len(expected) >= 2 and [s for s, _ in found] == [s for s, _ in expected], tag
        assert [v for _, v in found] == pytest.approx([v for _, v in expected], rel=1e-6), tag
    resumed = run_arlm("train", "--resume", out, "--max-steps", 8, "--tensorboard", board)
    assert resumed.code == 0, resumed.stderr
    events = EventAccumulator(str(board))
    events.Reload()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    expected = [(r["step"], r["loss"]) for r in records if "loss" in r]
    found = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert [s for s, _ in found] == [s for s, _ in expected] and found[-1][0] == 8


def test_a_tensorboard_path_that_is_a_file_is_refused(tmp_path):
    dataset = make_char_dataset(tmp_path)
    (tmp_path / "file").write_text("x")
    refused = run_arlm("train", "--data", dataset, "--out", tmp_path / "ck", "--max-steps", 1,
                       "--tensorboard", tmp_path / "file")  # fmt: skip
    assert refused.code == 2 and "--tensorboard" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "ck").exists()
