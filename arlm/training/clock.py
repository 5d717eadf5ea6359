"""Wall time: how long a run has taken, and what finishing it will take, so that a time budget
ends on time and evaluations cost a bounded share of it.

Time is wall time on `read`, from the start of a run, added to the runs before (saved in the
trainer's state): what the caller does with each record counts too. A time budget keeps enough
for one more update, the last evaluation and what the caller does after it, timed on the
previous evaluation; the caller adds `write_seconds` for a write it finishes later in the
background.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# Before an evaluation is timed, it is expected to read the validation tokens at twice the
# training pace: a forward pass without the backward one. Measured on the CPU, at the defaults:
# 3.1 times on tinyshakespeare (char), 2.3 on python-docs (BPE 2000); the lower guess errs on
# the side of finishing inside the time budget.
FORWARD_SPEEDUP = 2.0
# Without --eval-every, an evaluation comes once the time since the last one is
# (1 - EVAL_SHARE) / EVAL_SHARE times what that one took with the caller's save: evaluating and
# saving then take EVAL_SHARE of the wall time on a fast device or a slow one, with a small
# validation text or a large one. The last evaluation comes on top.
EVAL_SHARE = 0.05


class Clock:
    def __init__(self) -> None:
        self.read: Callable[[], float] = time.perf_counter  # tests give a fake one
        self.elapsed = 0.0  # wall time, this run's and the runs' before it
        self.write_seconds = 0.0  # the caller's last write in the background: the budget keeps it
        self.eval_seconds, self.evaluations = 0.0, 0  # this run's evaluations
        self.eval_cost: float | None = None  # the last evaluation with the caller's handling
        self.eval_ended = 0.0  # `elapsed` when it ended
        self.update_seconds = 0.0  # the last update's time
        self.token_seconds = 0.0  # the best time per training token so far
        self._ticked: float | None = None  # the last reading, from start() on
        self._updates = 0  # this run's

    def start(self) -> None:
        """This run's wall time starts."""
        self._ticked = self.read()
        self.eval_ended = self.elapsed

    def tick(self) -> float:
        """Add the wall time since the last reading to `elapsed` (once started); returns it."""
        if self._ticked is not None:
            now = self.read()
            self.elapsed += now - self._ticked
            self._ticked = now
        return self.elapsed

    def finish_seconds(self, val_tokens: int) -> float:
        """What finishing takes: the last evaluation, the caller's handling of it and its write
        in the background. Before an evaluation is timed, it is estimated from the training
        pace (FORWARD_SPEEDUP)."""
        if self.eval_cost is None:
            return val_tokens * self.token_seconds / FORWARD_SPEEDUP + self.write_seconds
        return self.eval_cost + self.write_seconds

    def overruns(self, budget: float, val_tokens: int) -> bool:
        """Whether one more update would leave too little of `budget` to finish."""
        return self.tick() + self.update_seconds + self.finish_seconds(val_tokens) >= budget

    def evaluation_due(self, every: int | None, budget: float | None, val_tokens: int) -> bool:
        """Whether to evaluate now, at a step where an evaluation may come: with --eval-every
        (`every`), yes; without, once the time since the last one pays for this one
        (EVAL_SHARE). With a time budget, not when training could not go on after it: the
        last evaluation comes soon instead."""
        now = self.tick()
        cost = self.finish_seconds(val_tokens) - self.write_seconds  # what stops the training
        due = every is not None or now - self.eval_ended >= cost * (1 - EVAL_SHARE) / EVAL_SHARE
        if budget:
            finish = now + cost + self.update_seconds + self.finish_seconds(val_tokens)
            due = due and finish <= budget
        return due

    def updated(self, started: float, tokens: int) -> float:
        """An update that started at `started` (elapsed) is done: its wall time. Keeps the best
        pace per token so far, after a run's first update: that one (allocations, kernel
        choices) and updates slowed by other programs would make an evaluation look far
        dearer."""
        seconds = self.update_seconds = self.tick() - started
        pace = seconds / max(1, tokens)
        if self._updates:
            self.token_seconds = min(pace, self.token_seconds or pace)
        self._updates += 1
        return seconds

    def evaluated(self, started: float) -> None:
        """An evaluation that started at `started` has its figures (the caller's handling of
        them still to come)."""
        self.eval_seconds += self.tick() - started
        self.evaluations += 1

    def handled(self, started: float) -> None:
        """The caller is done with the evaluation that started at `started`: its whole cost."""
        self.eval_cost, self.eval_ended = self.tick() - started, self.elapsed

    def state_dict(self) -> dict:
        """What finishing took: a resumed run keeps that long of its time budget at once."""
        return {
            "update": self.update_seconds,
            "evaluation": self.eval_cost,
            "write": self.write_seconds,
            "token": self.token_seconds,
        }

    def load_state_dict(self, timing: dict) -> None:
        """Older snapshots have none: then it is estimated anew."""
        self.update_seconds = timing.get("update", 0.0)
        self.eval_cost = timing.get("evaluation")
        self.write_seconds = timing.get("write", 0.0)
        self.token_seconds = timing.get("token", 0.0)
