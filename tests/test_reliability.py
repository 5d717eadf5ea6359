"""No lost training, no unsafe loading: damaged files, planted pickles, full disks, NaNs."""

import errno
import json
import math
import os
import pathlib
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from arlm import checkpoint, data
from arlm.cli import app
from arlm.commands import train as train_command
from arlm.errors import ArlmError
from arlm.models import ModelConfig, build_model
from arlm.training import RollbackRecord, StepRecord, TrainConfig, Trainer
from arlm.training.trainer import MAX_BAD_STEPS, MAX_ROLLBACKS
from tests.conftest import make_char_dataset

torch.set_num_threads(1)
runner = CliRunner()
SMALL = ["--hidden-size", "16", "--embedding-dim", "8", "--batch-size", "4", "--precision", "fp32"]


def arlm(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, code: int = 1, alone: bool = True) -> str:
    """The error line; `alone`: nothing else was printed (else: it was the last line)."""
    assert result.exit_code == code, result.output
    # an uncaught exception lands here, not in the output: it must be our clean exit
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.strip().splitlines()
    assert [line for line in lines if line.startswith("error:")] == lines[-1:], result.stderr
    assert len(lines) == 1 or not alone, result.stderr
    return lines[-1]


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A dataset and a checkpoint trained 10 steps (evaluations at 5 and 10)."""
    folder = tmp_path_factory.mktemp("reliability")
    make_char_dataset(folder, 120)
    result = arlm(
        "train", "--data", folder / "ds", "--out", folder / "ck", *SMALL,
        "--max-steps", 10, "--eval-every", 5,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture
def ck(trained, tmp_path) -> Path:
    """A private copy of the trained checkpoint, free to damage."""
    return Path(shutil.copytree(trained / "ck", tmp_path / "ck"))


def uses(folder: Path, name: str) -> list[list[str]]:
    """Commands that read `name` of the checkpoint `folder`."""
    if name == checkpoint.LAST:
        return [["train", "--resume", str(folder), "--max-steps", "12"]]
    return [
        ["generate", str(folder), "--max-tokens", "5"],
        ["eval", str(folder), "--text", "the cat sat"],
    ]


# -- damaged, truncated, foreign and malicious files ------------------------------------------


@pytest.mark.parametrize("name", [checkpoint.BEST, checkpoint.LAST])
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(where=st.floats(0, 1, exclude_max=True))
def test_a_flipped_byte_anywhere_is_refused(trained, name, where):
    path = trained / "ck" / name
    blob = path.read_bytes()
    at = int(where * len(blob))
    damaged = blob[:at] + bytes([blob[at] ^ 0xFF]) + blob[at + 1 :]
    copy = trained / f"damaged-{name}"
    copy.write_bytes(damaged)
    with pytest.raises(ArlmError) as caught:
        checkpoint.read_tensors(copy)
    assert str(caught.value).count("\n") == 0


@pytest.mark.parametrize("name", [checkpoint.BEST, checkpoint.LAST])
@pytest.mark.parametrize("keep", ["nothing", "5 bytes", "the header length", "half", "all but 1"])
def test_truncated_files_are_refused_by_every_command(ck, name, keep):
    path = ck / name
    blob = path.read_bytes()
    cut = {"nothing": 0, "5 bytes": 5, "the header length": 8, "half": len(blob) // 2}
    path.write_bytes(blob[: cut.get(keep, len(blob) - 1)])
    before = files(ck)
    for command in uses(ck, name):
        message = one_line_error(arlm(*command))
        assert str(path) in message
    assert files(ck) == before


def test_weights_of_another_tool_are_refused(ck):
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(3)}, str(ck / checkpoint.BEST))  # no arlm checksum
    message = one_line_error(arlm("generate", ck, "--max-tokens", "3"))
    assert "not written by arlm" in message


def test_a_checksum_that_does_not_match_is_refused(ck):
    from safetensors import safe_open
    from safetensors.torch import save_file

    path = ck / checkpoint.BEST
    with safe_open(str(path), "pt") as file:
        metadata = file.metadata()
    tensors, _ = checkpoint.read_tensors(path)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1e-3  # a silent change that safetensors alone accepts
    save_file(tensors, str(path), metadata=metadata)
    assert "checksum" in one_line_error(arlm("eval", ck, "--text", "a cat"))


class Payload:
    """Unpickling this makes a folder: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_planted_malicious_pickle_is_refused_and_never_run(ck, tmp_path):
    marker = tmp_path / "pwned"
    blob = pickle.dumps(Payload(marker))
    for name in (checkpoint.BEST, checkpoint.LAST, "trainer_state.pt"):
        (ck / name).write_bytes(blob)
    torch.save({"x": Payload(marker)}, ck / checkpoint.BEST)  # torch's zip format too
    before = files(ck)
    for command in uses(ck, checkpoint.BEST) + uses(ck, checkpoint.LAST):
        one_line_error(arlm(*command))
        assert not marker.exists(), f"{command} ran code from the checkpoint"
    (ck / checkpoint.BEST).write_bytes(blob)
    one_line_error(arlm("generate", ck))
    assert not marker.exists()
    assert files(ck) == before | {checkpoint.BEST: blob}
    pickle.loads(blob)  # the payload is live: unpickling it does run code
    assert marker.exists()


def test_newer_checkpoint_and_dataset_versions_are_refused(trained, ck, tmp_path):
    config = json.loads((ck / checkpoint.CONFIG).read_text())
    config["format_version"] = checkpoint.FORMAT_VERSION + 1
    (ck / checkpoint.CONFIG).write_text(json.dumps(config))
    message = one_line_error(arlm("generate", ck))
    assert "upgrade arlm" in message
    ds = Path(shutil.copytree(trained / "ds", tmp_path / "ds"))
    meta = json.loads((ds / "meta.json").read_text())
    meta["format_version"] = 99
    (ds / "meta.json").write_text(json.dumps(meta))
    message = one_line_error(arlm("train", "--data", ds, "--out", tmp_path / "new", *SMALL))
    assert "format version 99" in message and not (tmp_path / "new").exists()


def test_a_tokenizer_that_does_not_match_the_config_is_refused(ck, trained, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("completely different letters: xyzzy qwerty\n" * 50)
    data.build(tmp_path / "ds2", [data.scan(other)], model_type="char")
    shutil.copyfile(tmp_path / "ds2" / "tokenizer.model", ck / checkpoint.TOKENIZER)
    message = one_line_error(arlm("generate", ck, "--max-tokens", "3"))
    assert "tokenizer.model" in message


# -- crashes while writing --------------------------------------------------------------------


def failing_writes(monkeypatch, fail_from: int, error: int, name: str = checkpoint.LAST):
    """From the `fail_from`-th write of `name` on, write half the bytes, then fail."""
    real, count = pathlib.Path.write_bytes, [0]

    def write_bytes(self, blob):
        if name in self.name:
            count[0] += 1
            if count[0] >= fail_from:
                real(self, blob[: len(blob) // 2])
                raise OSError(error, os.strerror(error))
        return real(self, blob)

    monkeypatch.setattr(pathlib.Path, "write_bytes", write_bytes)


def test_a_full_disk_keeps_the_last_good_checkpoint(trained, tmp_path, monkeypatch):
    out = tmp_path / "ck"
    failing_writes(monkeypatch, fail_from=2, error=errno.ENOSPC)
    result = arlm(
        "train", "--data", trained / "ds", "--out", out, *SMALL, "--max-steps", 10,
        "--eval-every", 5,
    )  # fmt: skip
    message = one_line_error(result, alone=False)  # after the progress lines
    assert "No space left on device" in message and "intact" in message
    monkeypatch.undo()
    _, state = checkpoint.load_last(out)  # the snapshot of step 5, whole
    assert state["counters"]["step"] == 5
    assert not list(out.glob(".*tmp*"))
    again = arlm("train", "--resume", out, "--max-steps", 10)
    assert again.exit_code == 0, again.output
    assert checkpoint.load_last(out)[1]["counters"]["step"] == 10


def test_a_read_only_output_folder_fails_at_once_and_changes_nothing(ck, monkeypatch):
    real = pathlib.Path.write_text

    def read_only(self, *args, **kwargs):
        if str(self).startswith(str(ck)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", read_only)
    failing_writes(monkeypatch, fail_from=1, error=errno.EROFS)
    before = files(ck)
    message = one_line_error(arlm("train", "--resume", ck, "--max-steps", 20))
    assert "Read-only file system" in message
    assert files(ck) == before


def test_the_mid_write_hook_pauses_with_the_new_file_aside_and_is_inert_unset(
    tmp_path, monkeypatch
):
    """tests/kill_test.py kills runs inside this pause: the old file in place, the new aside."""
    import threading

    from arlm.formats import PAUSE_WRITE, atomic_write

    target, flag = tmp_path / "file", tmp_path / "mid-write"
    target.write_text("old")
    monkeypatch.delenv(PAUSE_WRITE, raising=False)
    atomic_write(target, lambda p: p.write_text("new"))  # unset: straight through
    assert target.read_text() == "new" and not flag.exists()
    monkeypatch.setenv(PAUSE_WRITE, str(flag))
    writer = threading.Thread(target=atomic_write, args=(target, lambda p: p.write_text("newer")))
    writer.start()
    try:
        for _ in range(5000):
            if flag.exists():
                break
            writer.join(0.001)
        assert flag.exists() and writer.is_alive()  # paused mid-write:
        assert target.read_text() == "new"  # the old file in place
        assert [p.read_text() for p in tmp_path.glob(".file.tmp-*")] == ["newer"]  # the new aside
    finally:
        flag.unlink(missing_ok=True)  # go on
        writer.join(10)
    assert not writer.is_alive() and target.read_text() == "newer"
    assert not list(tmp_path.glob(".file.tmp-*"))


def test_a_line_cut_short_in_metrics_is_skipped_and_resume_rewinds(ck):
    before = checkpoint.read_metrics(ck)
    assert max(r["step"] for r in before) == 10  # the snapshot's step
    later = {**next(r for r in before if "loss" in r), "step": 11, "loss": 99.0}
    with open(ck / checkpoint.METRICS, "a") as file:  # logged after the snapshot, then a crash
        file.write(json.dumps(later) + '\n{"step": 12, "lo')
    assert checkpoint.read_metrics(ck) == [*before, later]
    result = arlm("train", "--resume", ck, "--max-steps", 12)
    assert result.exit_code == 0, result.output
    lines = (ck / checkpoint.METRICS).read_text().splitlines()
    after = [json.loads(line) for line in lines]  # no cut line left for the new ones to join
    assert after[: len(before)] == before  # the records up to the snapshot, as they were
    # then the resumed run's own: its log line and evaluation at step 12, and nothing of step 11
    assert [(r["step"], "val_loss" in r) for r in after[len(before) :]] == [(12, False), (12, True)]


# -- numerical faults -------------------------------------------------------------------------


def nan_trainer(bad_calls: set[int], eval_every: int = 4):
    """A tiny trainer whose training forward pass gives NaNs at the calls numbered in
    `bad_calls` (counted from 1; a rollback does not reset the count)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="lstm", vocab_size=11, embedding_dim=8, hidden_size=8))
    ids = np.random.default_rng(0).integers(0, 11, 2000).astype(np.uint16)
    config = TrainConfig(
        batch_size=2, k1=8, max_steps=40, eval_every=eval_every, warmup_steps=0,
        schedule="constant", lr=1e-2, precision="fp32", device="cpu",
    )  # fmt: skip
    trainer = Trainer(model, ids, ids[:200], config)
    real, calls = trainer.forward, [0]

    def forward(inputs, state):
        out, carried = real(inputs, state)
        calls[0] += 1
        if calls[0] in bad_calls:
            out = out * math.nan
        return out, carried

    trainer.forward = forward
    return trainer


def weights_of(trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.model.parameters()]


def test_a_non_finite_loss_skips_the_update_and_is_reported():
    trainer = nan_trainer({3})
    records = trainer.run()
    for _ in range(2):
        next(records)
    before = weights_of(trainer)
    record = next(records)
    assert isinstance(record, StepRecord) and record.skipped and record.step == 3
    assert not math.isfinite(record.loss)
    assert all(torch.equal(a, b) for a, b in zip(before, weights_of(trainer), strict=True))
    assert trainer.carried is None  # a fresh state, not NaNs, for the next window
    good = next(records)
    assert isinstance(good, StepRecord) and not good.skipped and math.isfinite(good.loss)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_non_finite_updates_in_a_row_go_back_to_the_last_good_state_at_half_the_lr():
    trainer = nan_trainer(set(range(6, 6 + MAX_BAD_STEPS)))
    seen = []
    for record in trainer.run():
        seen.append(record)
        if isinstance(record, RollbackRecord):
            break
    evals = [r for r in seen if r.__class__.__name__ == "EvalRecord"]
    assert evals[-1].step == 4  # the last good state: remembered at the evaluation of step 4
    assert seen[-1].step == 5 + MAX_BAD_STEPS and seen[-1].to_step == 4
    assert trainer.step == 4 and trainer.lr_scale == 0.5
    assert trainer.learning_rate() == pytest.approx(0.5e-2)
    reference = nan_trainer(set())
    for record in reference.run():
        if record.step == 4 and record.__class__.__name__ == "EvalRecord":
            break
    assert all(
        torch.equal(a, b) for a, b in zip(weights_of(reference), weights_of(trainer), strict=True)
    )
    # the same windows again, finite this time: training goes on to the end
    rest = [r for r in trainer.run() if isinstance(r, StepRecord)]
    assert rest[-1].step == 40 and not any(r.skipped for r in rest)


def test_a_loss_that_never_recovers_stops_with_a_clear_error():
    trainer = nan_trainer(set(range(3, 10_000)))
    rollbacks = 0
    with pytest.raises(ArlmError, match="non-finite"):
        for record in trainer.run():
            rollbacks += isinstance(record, RollbackRecord)
    assert rollbacks == MAX_ROLLBACKS


def test_non_finite_weights_are_never_saved_over_good_ones(ck, capsys):
    model, state = checkpoint.load_last(ck)
    before = files(ck)
    with torch.no_grad():
        next(model.parameters())[0] = math.nan
    with pytest.raises(ArlmError, match="not finite"):
        checkpoint.save_weights(model, ck)
    with pytest.raises(ArlmError, match="not finite"):
        checkpoint.save_last(model, state, ck)

    class Stub:
        step, best_loss = 7, 1.0

    Stub.model = model
    from rich.console import Console

    console, writer = Console(stderr=True), checkpoint.Writer()
    train_command._save(Stub, ck, best=True, console=console, writer=writer)
    writer.wait()
    assert "not saved" in capsys.readouterr().err
    assert files(ck) == before


def test_running_out_of_memory_says_what_to_lower(trained, tmp_path, monkeypatch):
    def exhausted(self):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        yield

    monkeypatch.setattr(Trainer, "run", exhausted)
    result = arlm("train", "--data", trained / "ds", "--out", tmp_path / "ck", *SMALL)
    message = one_line_error(result, alone=False)
    assert "out of memory: lower --batch-size" in message
