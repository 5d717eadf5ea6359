"""The trainer: a generator of records. It takes a model with the LanguageModel interface and
token ids, and yields what happened (training.records); the caller prints, plots and saves.

Nothing here knows the model family except through the flags the model class declares
(`fused`: the block-wise loss through the output layer, AR/TAR; `counted`: trained by counting),
nor the console or the file system. What it reads comes from a source chosen once from the
config (training.sources: TBPTT windows of one stream, or padded batches of independent
sequences); a counting model reads the whole text at once.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator

import numpy as np

from arlm import sequences as seqs
from arlm.distributed import World, check_split, share
from arlm.errors import ArlmError, UsageError
from arlm.models.base import LanguageModel, all_finite
from arlm.runtime import keep_freed_memory, pick_device, pick_precision
from arlm.settings import TrainConfig
from arlm.streams import Window
from arlm.training.clock import Clock
from arlm.training.records import EvalRecord, RollbackRecord, StepRecord, StopRecord
from arlm.training.schedule import COUNTERS, Schedule
from arlm.training.sources import make_source
from arlm.training.tbptt import counted_columns
from arlm.training.update import Update

LN2 = math.log(2)
MAX_BAD_STEPS = 3  # non-finite updates in a row before going back to the last good state
MAX_ROLLBACKS = 5


class LastGood:
    """The last state whose weights were all finite: weights and the trainer's state, to go
    back to when the loss stops being finite. Gives up after MAX_ROLLBACKS."""

    def __init__(self) -> None:
        self.saved: tuple[dict, dict] | None = None

    def remember(self, model: LanguageModel, state: Callable[[], dict]) -> None:
        if all_finite(model):
            weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.saved = (weights, copy.deepcopy(state()))

    def restore(self, model: LanguageModel, rollbacks: int) -> dict:
        """Put the weights back; returns the trainer's state to load."""
        if rollbacks >= MAX_ROLLBACKS or self.saved is None:
            raise ArlmError(
                f"the loss stayed non-finite after {rollbacks} restarts from the last good "
                "state at lower learning rates: lower --lr or --clip, or check the data"
            )
        weights, state = self.saved
        model.load_state_dict(weights)
        return copy.deepcopy(state)  # the optimizer would alias the copy


def _delegated(part: str, name: str) -> property:
    """`name` of the trainer's `part`, read and set through the trainer."""
    return property(
        lambda self: getattr(getattr(self, part), name),
        lambda self, value: setattr(getattr(self, part), name, value),
    )


class Trainer:
    """Trains `model` on `train_ids`; `run()` yields a record after each update.

    On a stream the B rows are read in parallel; the hidden state is carried from one window
    to the next and detached at the window edge, and reset at the start of each pass. All that
    a resumed run needs is in `state_dict()`. Time is wall time (training.clock): a time budget
    ends with the last evaluation and what the caller does with it inside the budget.

    Its parts: `source`, what a pass reads (training.sources); `update`, one update of the
    weights (training.update); `schedule`, the counters, the learning rate and the stopping
    rules (training.schedule); `time`, the wall time (training.clock).
    """

    def __init__(
        self,
        model: LanguageModel,
        train_ids: np.ndarray,
        val_ids: np.ndarray,
        config: TrainConfig,
        val_bytes_per_token: float = 1.0,
        specials: dict | None = None,
        world: World | None = None,
    ) -> None:
        """`specials`: the "line_ends" (Tokenizer.line_ends), "bos" and "eos" ids, for
        --sequences lines|documents.
        `world`: this process's rank among data-parallel processes (arlm.distributed)."""
        config.check()
        self.config, self.world = config, world or World()
        if self.world.active and (config.sequences != "stream" or model.counted or
                                  config.task != "lm"):  # fmt: skip
            raise UsageError("several processes train a language model on a stream: drop --nproc")
        check_split(config.batch_size, self.world.size)
        self.device = pick_device(config.device)
        self.model = model.to(self.device)
        if self.device.type == "cpu" and not model.counted:
            # no page faults on the big per-step buffers (arlm.runtime); not for a counting
            # model, whose scoring makes temporaries of every size, which the heap then keeps
            # (WikiText-2 words: past 20 GB)
            keep_freed_memory()
        self.by_sequence = config.sequences != "stream"
        self.source = make_source(train_ids, val_ids, config, specials, self.world)
        self.warnings = self.source.warnings()  # for the caller to show; the trainer never prints
        self.train_ids, self.val_ids = train_ids, val_ids
        self.val_bytes_per_token = val_bytes_per_token
        self.counting = model.counted  # an n-gram model: trained by counting, at once
        precision = pick_precision(config.precision, self.device)
        self.update = Update(
            self.model, config, self.source, self.device, precision, self.world, self.warnings
        )
        self.time = Clock()
        self.schedule = Schedule(config, self.source, self.time, self.world, len(val_ids))
        self._good = LastGood()  # the state a rollback returns to

    def progress(self) -> float:
        return self.schedule.progress()

    def learning_rate(self) -> float:
        return self.schedule.learning_rate()

    def request_stop(self, reason: str = "interrupted") -> None:
        """Finish the current update, then stop (used for Ctrl-C): the state stays exact."""
        self.schedule.stop_reason = reason

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> Iterator[StepRecord | EvalRecord | RollbackRecord | StopRecord]:
        self.model.train()
        self.time.start()
        if self.counting:
            yield from self._count()
            return
        self._remember()
        while (reason := self.schedule.why_stop()) is None:
            for work in self._work():
                yield self._update(work)
                if self.bad_steps >= MAX_BAD_STEPS:
                    yield self._go_back()
                    break  # start again from the restored position
                stop = self.schedule.why_stop()
                if stop is None and self.schedule.evaluation_due():
                    yield from self._evaluation()
                    stop = self.schedule.why_stop()  # patience
                if stop is not None:
                    break
            else:  # a full pass: start the next one from a fresh state
                self.epoch, self.position, self.carried = self.epoch + 1, 0, None
        if self.evaluated_at != self.step:
            yield from self._evaluation()
        yield StopRecord(self.step, reason)

    def _work(self) -> Iterator[Window | seqs.Batch]:
        """What the rest of this pass updates on: TBPTT windows, or padded batches."""
        return self.source.work(self.epoch, self.position, self.step)

    def _update(self, work: Window | seqs.Batch) -> StepRecord:
        """One update (training.update), at the schedule's learning rate, counted."""
        started = self.time.tick()
        lr = self.learning_rate()
        if self.config.bptt_jitter:  # a shorter window, a smaller step (AWD-LSTM)
            lr *= counted_columns(work) / self.config.k1
        done = self.update(work, self.position, lr)
        clipped = done.grad_norm > (self.config.clip or math.inf)
        self.step, self.position = self.step + 1, done.position
        self.tokens, self.clip_count = self.tokens + done.counted, self.clip_count + clipped
        seconds = self.time.updated(started, done.seen)  # this process's targets: its pace
        return StepRecord(
            self.step, self.epoch, self.tokens, done.loss, lr, done.grad_norm, clipped,
            tokens_per_second=done.counted / max(seconds, 1e-9),  # a fake clock may stand still
            elapsed=self.elapsed, progress=self.schedule.progress(), skipped=done.skipped,
        )  # fmt: skip

    def _loss(self, work: Window | seqs.Batch, carried):
        """What one update optimises (Update.loss), from the current position."""
        return self.update.loss(work, carried, self.position)

    def _count(self) -> Iterator[EvalRecord | StopRecord]:
        self.model.fit(np.asarray(self.train_ids))
        self.step, self.epoch, self.tokens = 1, 1, len(self.train_ids)
        yield from self._evaluation()
        yield StopRecord(self.step, "counted")

    def _evaluation(self) -> Iterator[EvalRecord]:
        """Evaluate, timing it with what the caller does with the record (it saves). With
        nt-asgd, once averaging has started, both see the averaged weights in the model (and
        `state_dict()` holds the trained ones, which a resume puts back)."""
        started = self.time.tick()
        with self.averager.swapped() if self.averager else contextlib.nullcontext():
            record = self.evaluate()
            self.time.evaluated(started)
            yield record
        self.time.handled(started)

    def evaluate(self) -> EvalRecord:
        """The validation figures, computed as `arlm eval` computes them (arlm.score)."""
        loss, count, unscored = self.source.validation_loss(
            self.model, self.val_ids, self.device, self.precision
        )
        loss = share(self.world, loss)  # with several processes, rank 0's
        val_bytes = round(self.val_bytes_per_token * len(self.val_ids)) - unscored
        self.time.tick()
        best = self.schedule.judge(loss)
        if self.averager:
            self.averager.observe(loss)
        if math.isfinite(loss):
            self._remember()
        per_byte, perplexity = loss * count / LN2 / val_bytes, math.exp(min(loss, 50))
        figures = (loss, perplexity, per_byte, best, self.elapsed, self.source.accuracy)
        return EvalRecord(self.step, self.tokens, *figures)

    # -- numerical faults (LastGood) ---------------------------------------------------------

    def _remember(self) -> None:
        self._good.remember(self.model, self.state_dict)

    def _go_back(self) -> RollbackRecord:
        """After MAX_BAD_STEPS non-finite updates in a row: back to the last good state, with
        half the learning rate; the time spent stays spent (the budget is wall time)."""
        failed_at, elapsed = self.step, self.elapsed
        scale, rollbacks = self.lr_scale / 2, self.rollbacks + 1
        self.load_state_dict(self._good.restore(self.model, self.rollbacks))
        self.lr_scale, self.rollbacks, self.bad_steps, self.elapsed = scale, rollbacks, 0, elapsed
        return RollbackRecord(failed_at, self.step, scale)

    # -- resume ------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything but the weights that an exact resume needs: plain values and tensors
        only (arlm.checkpoint stores them as safetensors and JSON)."""
        return {
            **self.update.state_dict(),
            "counters": self.schedule.state_dict(),
            # what finishing took: a resumed run keeps that long of its time budget at once
            "timing": self.time.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.update.load_state_dict(state)
        self.schedule.load_state_dict(state["counters"])
        self.time.load_state_dict(state.get("timing", {}))


# What the parts hold, read and set through the trainer as its own attributes: the wall time
# (`clock`: what it is read from; tests give a fake one), the source's shape, the update's
# optimizer, scaler, average, compiled forward and carried state, and the counters.
REACHED = {
    "time": ("elapsed", "write_seconds", "evaluations", "eval_seconds"),
    "source": ("rows", "lengths", "steps_per_epoch"),
    "update": ("forward", "penalty", "carried", "optimizer", "scaler", "averager", "precision"),
    "schedule": COUNTERS,
}
Trainer.clock = _delegated("time", "read")
Trainer.bad_steps = _delegated("update", "bad_steps")  # non-finite updates in a row
for _part, _names in REACHED.items():
    for _name in _names:
        setattr(Trainer, _name, _delegated(_part, _name))
