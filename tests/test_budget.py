"""--time-budget is wall time, evaluation and checkpoints cost little, and snapshots written in
the background are always whole: fake clocks where the property is arithmetic, real ones where
it is the console command."""

import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from arlm import checkpoint, formats
from arlm.cli import app
from arlm.errors import ArlmError
from arlm.models import ModelConfig, build_model
from arlm.training import EvalRecord, StepRecord, TrainConfig, Trainer
from arlm.training import schedule as train_module
from tests.conftest import make_char_dataset, write_config

torch.set_num_threads(1)
runner = CliRunner()
SMALL = ["--hidden-size", "16", "--embedding-dim", "8", "--batch-size", "4", "--precision", "fp32"]


class Clock:
    """A clock that moves only when the test says what something cost."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def costing(clock: Clock, update: float, evaluation: float, val: int = 300, **config) -> Trainer:
    """A tiny trainer on `clock`, where each update takes `update` seconds and each
    evaluation `evaluation`; `val` validation tokens."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="gru", vocab_size=13, embedding_dim=8, hidden_size=8))
    ids = np.random.default_rng(0).integers(0, 13, 3000).astype(np.uint16)
    options = dict(batch_size=2, k1=8, warmup_steps=0, epochs=None, precision="fp32")
    trainer = Trainer(model, ids, ids[:val], TrainConfig(device="cpu", **options | config))
    trainer.clock = clock
    forward, evaluate = trainer.forward, trainer.evaluate

    def slow_forward(inputs, state):
        clock.now += update
        return forward(inputs, state)

    def slow_evaluate():
        clock.now += evaluation
        return evaluate()

    trainer.forward, trainer.evaluate = slow_forward, slow_evaluate
    return trainer


def run(trainer: Trainer, clock: Clock, write: float) -> list:
    """Run as a caller that spends `write` seconds saving after each evaluation."""
    records = []
    for record in trainer.run():
        records.append(record)
        if isinstance(record, EvalRecord):
            clock.now += write
    return records


def test_the_last_evaluation_and_write_finish_inside_the_budget():
    """Updates of 0.5 s, evaluations of 1 s, writes of 1.5 s: the run stops early enough that
    its last evaluation and write end inside the 30 s, and no more than one update early."""
    clock = Clock()
    trainer = costing(clock, 0.5, 1.0, time_budget=30.0, max_steps=1000, eval_every=20)
    records = run(trainer, clock, write=1.5)
    assert records[-1].reason == "time budget"
    assert isinstance(records[-2], EvalRecord)  # the last evaluation, then the stop
    assert 30.0 - 0.5 <= clock.now < 30.0
    updates = [r for r in records if isinstance(r, StepRecord)]
    assert updates[-1].progress < 1  # the cosine follows the wall clock, reserve included
    assert trainer.elapsed == pytest.approx(clock.now)  # the caller's handling counts too


def test_a_slow_first_update_does_not_make_the_first_evaluation_look_dear():
    """The first update of a run (allocations, kernel choices) took 20 s, the others 0.1 s:
    the estimate of the last evaluation follows the best pace after it, and the run goes on."""
    clock = Clock()
    trainer = costing(clock, 0.1, 0.5, time_budget=60.0, max_steps=300, eval_every=10_000)
    forward, calls = trainer.forward, [0]

    def warming_up(inputs, state):
        calls[0] += 1
        clock.now += 19.9 if calls[0] == 1 else 0.0
        return forward(inputs, state)

    trainer.forward = warming_up
    records = run(trainer, clock, write=0.0)
    assert records[-1].reason == "max steps"  # 20 s + 299 * 0.1 s + 0.5 s: inside the budget


def test_a_resumed_run_has_what_is_left_of_the_budget():
    """--time-budget counts the runs of one checkpoint together (as the schedule does)."""
    clock = Clock()
    first = costing(clock, 0.5, 1.0, time_budget=20.0, max_steps=1000, eval_every=20)
    run(first, clock, write=0.0)
    state = first.state_dict()
    assert 19.5 <= first.elapsed < 20.0
    for budget, more in [(20.0, False), (30.0, True)]:
        again = costing(Clock(), 0.5, 1.0, time_budget=budget, max_steps=1000, eval_every=20)
        again.model.load_state_dict(first.model.state_dict())
        again.load_state_dict(state)
        records = run(again, again.clock, write=0.0)
        steps = [r for r in records if isinstance(r, StepRecord)]
        assert bool(steps) == more, budget
        assert again.elapsed <= budget


def test_by_default_evaluating_and_writing_take_a_small_share_of_the_time(monkeypatch):
    """Without --eval-every, an evaluation may happen every AUTO_EVAL_STEPS (10 here), and
    waits until the time since the last one is 19 times what one costs (EVAL_SHARE 5%)."""
    monkeypatch.setattr(train_module, "AUTO_EVAL_STEPS", 10)
    clock = Clock()
    cheap = costing(clock, 0.1, 0.001, val=10, max_steps=100)
    evaluations = [r.step for r in run(cheap, clock, 0.001) if isinstance(r, EvalRecord)]
    assert evaluations == list(range(10, 101, 10))  # cheap: every time
    clock = Clock()
    dear = costing(clock, 0.1, 0.5, val=10, max_steps=300)  # 10 steps: 1 s; an evaluation 0.5 s
    evaluations = [r.step for r in run(dear, clock, write=0.25) if isinstance(r, EvalRecord)]
    # the first when 10 validation tokens at twice the training pace are cheap; then after
    # 19 * 0.75 s = 14.25 s of training; then the last one at the end
    assert evaluations == [10, 160, 300]
    assert dear.evaluations == 3 and dear.eval_seconds == pytest.approx(1.5)
    assert 0.75 * 3 / clock.now <= 0.10
    clock = Clock()
    exact = costing(clock, 0.1, 0.5, val=10, max_steps=100, eval_every=10)  # asked for
    evaluations = [r.step for r in run(exact, clock, 0.25) if isinstance(r, EvalRecord)]
    assert evaluations == list(range(10, 101, 10))


def test_a_rollback_does_not_turn_the_clock_back():
    clock = Clock()
    trainer = costing(clock, 0.5, 1.0, max_steps=30, eval_every=4)
    records = trainer.run()
    for _ in range(6):
        next(records)
    before = trainer.elapsed
    trainer._go_back()  # to the state of the evaluation at step 4
    assert trainer.step == 4 and trainer.elapsed == before


# -- the background writer ------------------------------------------------------------------


def test_a_snapshot_is_copied_when_asked_and_written_whole_in_the_background(tmp_path, monkeypatch):
    """While a write is paused mid-way (the kill test's hook), training goes on and changes
    the weights: the file on disk is the old snapshot, then the new one as it was asked for."""
    model = build_model(ModelConfig(kind="lstm", vocab_size=11, embedding_dim=4, hidden_size=8))
    write_config(tmp_path, model)
    checkpoint.save_last(model, {"step": 1}, tmp_path)
    for p in model.parameters():
        p.data.add_(1.0)
    asked = {k: v.clone() for k, v in model.state_dict().items()}
    flag = tmp_path / "mid-write"
    monkeypatch.setenv(formats.PAUSE_WRITE, str(flag))
    writer = checkpoint.Writer()
    writer.submit(checkpoint.snapshot(model, {"step": 2}, tmp_path))
    for _ in range(5000):
        if flag.exists():
            break
        time.sleep(0.001)
    assert flag.exists()  # paused mid-write, in the background: this thread goes on
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.0)  # training changes the weights in place meanwhile
    assert checkpoint.load_last(tmp_path)[1] == {"step": 1}  # the old snapshot, whole
    flag.unlink()
    writer.wait()
    loaded, state = checkpoint.load_last(tmp_path)
    assert state == {"step": 2}
    for name, value in loaded.state_dict().items():
        assert torch.equal(value, asked[name]), name  # the weights when it was asked for
    assert not list(tmp_path.glob(".*.tmp-*"))
    assert writer.seconds > 0


def test_one_write_at_a_time_and_the_last_one_is_waited_for():
    writer, order, release = checkpoint.Writer(), [], threading.Event()

    def first():
        release.wait(10)
        order.append("first")

    writer.submit(first)
    second = threading.Thread(target=writer.submit, args=(lambda: order.append("second"),))
    second.start()
    second.join(0.05)
    assert second.is_alive() and order == []  # waits for the write in flight
    release.set()
    second.join(10)
    writer.wait()
    assert order == ["first", "second"]


def test_an_error_in_the_background_is_raised_at_the_next_point_then_cleared():
    writer = checkpoint.Writer()

    def failing():
        raise ArlmError("cannot write x: No space left on device (any previous x is intact)")

    writer.submit(failing)
    with pytest.raises(ArlmError, match="No space left"):
        for _ in range(10_000):  # the next point: the next record after the write failed
            writer.check()
            time.sleep(0.001)
    writer.submit(failing)
    with pytest.raises(ArlmError, match="No space left"):
        writer.submit(lambda: None)  # or the next save
    writer.submit(failing)
    with pytest.raises(ArlmError, match="No space left"):
        writer.wait()  # or the end of the run
    writer.wait()  # reported once


# -- the console command --------------------------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return make_char_dataset(tmp_path_factory.mktemp("budget"), 120)


def test_arlm_train_ends_within_its_budget_with_slow_writes_and_reports_them(
    dataset, tmp_path, monkeypatch
):
    """Every file write takes 0.05 s and every evaluation 0.05 s more than it would: the run
    still ends, its last file written, within 5% of --time-budget 1.5s from the start of
    training (the start-up before it, importing torch and opening the data, is not counted),
    and the summary says where the time went."""
    pause = formats._pause_for_tests

    def slow_write():
        time.sleep(0.05)
        pause()

    monkeypatch.setattr(formats, "_pause_for_tests", slow_write)
    evaluate = Trainer.evaluate

    def slow_evaluate(self):
        time.sleep(0.05)
        return evaluate(self)

    monkeypatch.setattr(Trainer, "evaluate", slow_evaluate)
    run, started = Trainer.run, []

    def timed_run(self):
        started.append(time.time())
        return run(self)

    monkeypatch.setattr(Trainer, "run", timed_run)
    out = tmp_path / "ck"
    result = runner.invoke(
        app,
        ["train", "--data", str(dataset), "--out", str(out), *SMALL, "--eval-every", "20",
         "--time-budget", "1.5s"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    last_write = max(p.stat().st_mtime for p in out.iterdir())
    # at least 70%: what it keeps for the last evaluation and write is estimated from the
    # previous ones, here much dearer than a run's (a write is half the budget)
    assert 1.5 * 0.7 <= last_write - started[0] <= 1.5 * 1.05, result.stderr
    row = lambda name: next(  # noqa: E731
        line for line in result.stderr.splitlines() if line.strip("│ ").startswith(name)
    )
    evaluations = [m for m in checkpoint.read_metrics(out) if "val_loss" in m]
    seconds, share = re.search(r"([\d.]+)s, (\d+)% of the time", row("evaluation")).groups()
    shown = 0.05  # the summary prints tenths of a second: 0.30 s of sleeps can read "0.3"
    assert float(seconds) + shown >= 0.05 * len(evaluations) and 0 < int(share) < 100
    seconds = re.search(r"([\d.]+)s writing", row("checkpoints")).group(1)
    assert float(seconds) + shown >= 0.05 * 2 * len(evaluations)  # last.safetensors, curve
