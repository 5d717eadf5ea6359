"""Where training stands, and what follows from it: the counters an exact resume restores (step,
pass, position, tokens, the best validation loss, ...), the learning rate, whether to evaluate
now and whether to stop. The Trainer (trainer.py) moves the counters on; its clock
(training.clock) says what the time budget allows."""

from __future__ import annotations

import math

from arlm.distributed import World, highest, share
from arlm.settings import TrainConfig
from arlm.training.clock import Clock
from arlm.training.records import STOP_REASONS

# Without --eval-every, an evaluation may come every AUTO_EVAL_STEPS steps, and does once the
# time since the last one pays for it (training.clock.EVAL_SHARE).
AUTO_EVAL_STEPS = 200
COUNTERS = (
    *("step", "epoch", "position", "tokens", "clip_count", "best_loss", "evals_since_best"),
    *("evaluated_at", "lr_scale", "lr_cuts", "rollbacks"),
)


class Schedule:
    """The counters of a run, and its learning rate, evaluations and stopping rules. `source`
    says how far a pass is (training.sources); `val_tokens`: what an evaluation reads."""

    def __init__(self, config: TrainConfig, source, time: Clock, world: World, val_tokens: int):
        self.config, self.source, self.time, self.world = config, source, time, world
        self.val_tokens = val_tokens if world.main else 0  # rank 0 evaluates for all
        self.step = self.epoch = self.position = self.tokens = self.clip_count = 0
        self.best_loss = math.inf
        self.evals_since_best = 0
        self.evaluated_at = -1  # the step of the last evaluation
        self.lr_scale = 1.0  # halved at each rollback after non-finite losses
        self.lr_cuts = 0  # --schedule plateau: evaluations that did not improve, each a cut
        self.rollbacks = 0
        self.stop_reason: str | None = None  # asked for from outside (Ctrl-C)

    def passes(self) -> float:
        """Passes over the training data so far, with the current one's fraction."""
        return self.source.passes(self.epoch, self.position)

    def progress(self) -> float:
        """How far along the first stopping rule is, from 0 to 1: the cosine follows it."""
        c = self.config
        fractions = [0.0]
        if c.max_steps:
            fractions.append(self.step / c.max_steps)
        if c.epochs:
            fractions.append(self.passes() / c.epochs)
        if c.time_budget:
            fractions.append(self.time.elapsed / c.time_budget)
        return min(1.0, max(fractions))

    def learning_rate(self) -> float:
        """Linear warmup, then cosine down to lr * min_lr_ratio along `progress()`, constant,
        or plateau: lr divided by plateau_factor at each evaluation that is not the best yet
        (pytorch/examples' word_language_model; the cuts apply during warmup too)."""
        c = self.config
        lr = c.lr * self.lr_scale / c.plateau_factor**self.lr_cuts  # no cuts: / 1.0, exact
        if self.step < c.warmup_steps:
            return lr * (self.step + 1) / c.warmup_steps
        if c.schedule in ("constant", "plateau"):
            return lr
        cosine = 0.5 * (1 + math.cos(math.pi * self.progress()))
        return lr * (c.min_lr_ratio + (1 - c.min_lr_ratio) * cosine)

    def why_stop(self) -> str | None:
        """Why to stop now, if at all; with several processes, decided together."""
        reason = self.stop_reason or self._why_stop()
        return STOP_REASONS[highest(self.world, STOP_REASONS.index(reason))]

    def _why_stop(self) -> str | None:
        c = self.config
        if c.max_steps and self.step >= c.max_steps:
            return "max steps"
        if c.epochs and self.passes() >= c.epochs:
            return "epochs"
        if c.time_budget and self.time.overruns(c.time_budget, self.val_tokens):
            return "time budget"  # one more update would leave too little to finish
        if c.patience and self.evals_since_best >= c.patience:
            return "patience"
        return None

    def evaluation_due(self) -> bool:
        """Every --eval-every N steps; without it, every AUTO_EVAL_STEPS steps when the clock
        says the time since the last evaluation pays for this one. Rank 0's clock decides."""
        c = self.config
        if self.step % (c.eval_every or AUTO_EVAL_STEPS):
            return False
        due = self.time.evaluation_due(c.eval_every, c.time_budget, self.val_tokens)
        return bool(share(self.world, float(due)))

    def judge(self, loss: float) -> bool:
        """An evaluation at this step found `loss`: whether it is the best yet (else it counts
        towards --patience and, with --schedule plateau, cuts the learning rate)."""
        self.evaluated_at = self.step
        if loss < self.best_loss:
            self.best_loss, self.evals_since_best = loss, 0
            return True
        self.evals_since_best += 1
        self.lr_cuts += self.config.schedule == "plateau"
        return False

    def state_dict(self) -> dict:
        """The counters, and the wall time so far."""
        return {name: getattr(self, name) for name in COUNTERS} | {"elapsed": self.time.elapsed}

    def load_state_dict(self, counters: dict) -> None:
        for name, value in counters.items():
            setattr(self.time if name == "elapsed" else self, name, value)
