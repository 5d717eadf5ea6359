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
import functools
import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from arlm import sequences as seqs
from arlm.distributed import World, check_split, gather, highest, share, total
from arlm.errors import ArlmError, UsageError
from arlm.models import LanguageModel, State, all_finite, batch_dims, detach
from arlm.runtime import autocast, keep_freed_memory, pick_device, pick_precision
from arlm.settings import TrainConfig
from arlm.streams import Window
from arlm.training.awd import ActivationPenalty, Averager
from arlm.training.clock import Clock
from arlm.training.records import (
    STOP_REASONS,
    EvalRecord,
    RollbackRecord,
    StepRecord,
    StopRecord,
)
from arlm.training.sources import Sequences, Stream, my_share
from arlm.training.tbptt import (
    clip_gradients,
    counted_columns,
    counted_loss,
    run_window,
    to_device,
)

LN2 = math.log(2)
MAX_BAD_STEPS = 3  # non-finite updates in a row before going back to the last good state
MAX_ROLLBACKS = 5
# Without --eval-every, an evaluation may come every AUTO_EVAL_STEPS steps, and does once the
# time since the last one is (1 - EVAL_SHARE) / EVAL_SHARE times what that one took with the
# caller's save: evaluating and saving then take EVAL_SHARE of the wall time on a fast device or
# a slow one, with a small validation text or a large one. The last evaluation comes on top.
AUTO_EVAL_STEPS = 200
EVAL_SHARE = 0.05


def _embeddings(model: LanguageModel) -> list[torch.Tensor]:
    """The input embedding matrix, if the model has one (one-hot inputs and the HMM do not)."""
    if model.has_input_layer and isinstance(model.input, torch.nn.Embedding):
        return [model.input.weight]
    return []


def make_optimizer(model: LanguageModel, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, or SGD (nt-asgd: SGD, then averaged by the Averager), fused: one kernel for the
    whole update instead of a dozen passes over each tensor."""
    # weight decay on matrices only: decaying biases and norms just hurts; and, with
    # embedding_decay off, not on the embedding, whose rare words' rows it would wear away
    # between the updates that reach them (a tied output matrix is the same tensor)
    spared = set() if config.embedding_decay else {id(p) for p in _embeddings(model)}
    decay, rest = [], []
    for p in model.parameters():
        (decay if p.dim() >= 2 and id(p) not in spared else rest).append(p)
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    if config.optimizer in ("sgd", "nt-asgd"):  # nt-asgd: SGD, averaged (Averager)
        return torch.optim.SGD(groups, lr=config.lr, fused=True)
    # fused: one kernel for the whole update instead of a dozen passes over each tensor
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.99), fused=True)


# -- schedule and stopping ---------------------------------------------------------------


class _Loss(torch.nn.Module):
    """One update's loss as a module whose parameters are the model's: what DDP wraps, so
    that its gradient hooks fire on every backward."""

    def __init__(self, model: torch.nn.Module, compute: Callable) -> None:
        super().__init__()
        self.model = model
        self.compute = compute

    def forward(self, work, carried):
        return self.compute(work, carried)


class Trainer:
    """Trains `model` on `train_ids`; `run()` yields a record after each update.

    On a stream the B rows are read in parallel; the hidden state is carried from one window
    to the next and detached at the window edge, and reset at the start of each pass. All that
    a resumed run needs is in `state_dict()`. Time is wall time (training.clock): a time budget
    ends with the last evaluation and what the caller does with it inside the budget.
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
        self.config = config
        self.world = world or World()
        if self.world.active and (config.sequences != "stream" or model.counted):
            raise UsageError("several processes train on a stream: drop --sequences or --nproc")
        check_split(config.batch_size, self.world.size)
        self.device = pick_device(config.device)
        self.precision = pick_precision(config.precision, self.device)
        self.model = model.to(self.device)
        if self.device.type == "cpu":
            keep_freed_memory()  # no page faults on the big per-step buffers (arlm.runtime)
        self.warnings: list[str] = []  # for the caller to show; the trainer never prints
        self.by_sequence = config.sequences != "stream"
        self.source = (
            Sequences(train_ids, val_ids, config, specials)
            if self.by_sequence
            else Stream(train_ids, config, self.world)
        )
        if self.by_sequence:
            self.warnings += self.source.warnings()
        self.train_ids, self.val_ids = train_ids, val_ids
        self.val_bytes_per_token = val_bytes_per_token
        self.counting = model.counted  # an n-gram model: trained by counting, at once
        self.optimizer = None if self.counting else make_optimizer(self.model, config)
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.precision == torch.float16
        )
        self._prepare_forward(model, config)
        self.step = self.epoch = self.position = self.tokens = self.clip_count = 0
        self.bad_steps = self.rollbacks = 0
        self.lr_scale = 1.0  # halved at each rollback after non-finite losses
        self.lr_cuts = 0  # --schedule plateau: evaluations that did not improve, each a cut
        # nt-asgd: the average of the weights, once validation stops improving
        self.averager = (
            Averager(list(model.parameters()), config.nonmono)
            if config.optimizer == "nt-asgd"
            else None
        )
        self._good: tuple[dict, dict] | None = None  # the state a rollback returns to
        self.time = Clock()  # wall time and the time budget (training.clock)
        self.best_loss = math.inf
        self.evals_since_best = 0
        self.evaluated_at = -1
        self.carried: State | None = None
        self._stop_reason: str | None = None

    def _prepare_forward(self, model: LanguageModel, config: TrainConfig) -> None:
        """What a window runs through and how one update's loss is taken:

        forward        the model, or its features (fused kinds: the loss then goes through
                       `output_layer` block by block, arlm.loss), compiled with --compile
        eager          the same, never compiled: the fallback when compiling fails
        penalty        AR/TAR, on the features (and the raw ones, before dropout)
        update_loss    `_loss` as a module of the model's parameters, which DDP wraps
        """
        self.output_layer = model.output if model.fused else None
        self.eager = model.features if model.fused else model
        self.penalty = ActivationPenalty(config.ar, config.tar) if config.ar or config.tar else None
        if self.penalty and not model.fused:
            raise UsageError(
                f"--ar and --tar penalise a recurrent layer's output, which --model "
                f"{model.config.kind} does not expose: drop them or pick lstm, gru or elman"
            )
        if self.penalty:  # the output before dropout too, for TAR
            self.eager = functools.partial(model.features, raw=True)
        self.forward = torch.compile(self.eager) if config.compile else self.eager
        self.update_loss = _Loss(self.model, self._loss)
        if self.world.active:  # gradients averaged over the processes by DDP
            self.update_loss = DistributedDataParallel(self.update_loss)

    # -- wall time (training.clock) -----------------------------------------------------------

    @property
    def clock(self) -> Callable[[], float]:
        """What wall time is read from (tests give a fake one)."""
        return self.time.read

    @clock.setter
    def clock(self, read: Callable[[], float]) -> None:
        self.time.read = read

    @property
    def elapsed(self) -> float:
        """Wall time, this run's and the runs' before it."""
        return self.time.elapsed

    @elapsed.setter
    def elapsed(self, seconds: float) -> None:
        self.time.elapsed = seconds

    @property
    def write_seconds(self) -> float:
        """The caller's last write in the background: the time budget keeps that long."""
        return self.time.write_seconds

    @write_seconds.setter
    def write_seconds(self, seconds: float) -> None:
        self.time.write_seconds = seconds

    @property
    def evaluations(self) -> int:
        return self.time.evaluations

    @property
    def eval_seconds(self) -> float:
        return self.time.eval_seconds

    def _finish_seconds(self) -> float:
        return self.time.finish_seconds(len(self.val_ids) if self.world.main else 0)

    # -- the work, the schedule and stopping ------------------------------------------------

    @property
    def rows(self) -> np.ndarray:
        """The training stream's rows (B, L + 1), this process's share: stream sources only."""
        return self.source.rows

    @property
    def lengths(self) -> np.ndarray:
        """The training sequences' lengths: sequence sources only."""
        return self.source.lengths

    @property
    def steps_per_epoch(self) -> int:
        return self.source.steps_per_epoch

    def _passes(self) -> float:
        """Passes over the training data so far, with the current one's fraction."""
        return self.source.passes(self.epoch, self.position)

    def progress(self) -> float:
        """How far along the first stopping rule is, from 0 to 1: the cosine follows it."""
        c = self.config
        fractions = [0.0]
        if c.max_steps:
            fractions.append(self.step / c.max_steps)
        if c.epochs:
            fractions.append(self._passes() / c.epochs)
        if c.time_budget:
            fractions.append(self.elapsed / c.time_budget)
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

    def request_stop(self, reason: str = "interrupted") -> None:
        """Finish the current update, then stop (used for Ctrl-C): the state stays exact."""
        self._stop_reason = reason

    def _should_stop(self) -> str | None:
        """Why to stop now, if at all; with several processes, decided together."""
        reason = self._why_stop()
        return STOP_REASONS[highest(self.world, STOP_REASONS.index(reason))]

    def _why_stop(self) -> str | None:
        c = self.config
        if self._stop_reason:
            return self._stop_reason
        if c.max_steps and self.step >= c.max_steps:
            return "max steps"
        if c.epochs and self._passes() >= c.epochs:
            return "epochs"
        if c.time_budget:
            finish = self.time.tick() + self.time.update_seconds + self._finish_seconds()
            if finish >= c.time_budget:
                return "time budget"  # one more update would leave too little to finish
        if c.patience and self.evals_since_best >= c.patience:
            return "patience"
        return None

    def _evaluation_due(self) -> bool:
        """--eval-every N: every N steps. Without it: every AUTO_EVAL_STEPS steps once the time
        since the last evaluation pays for this one (EVAL_SHARE). With a time budget, not when
        training could not go on after it: the last evaluation comes soon instead."""
        c = self.config
        if self.step % (c.eval_every or AUTO_EVAL_STEPS):
            return False
        now = self.time.tick()
        cost = self._finish_seconds() - self.write_seconds  # what stops the training
        due = c.eval_every is not None or (
            now - self.time.eval_ended >= cost * (1 - EVAL_SHARE) / EVAL_SHARE
        )
        if c.time_budget:
            finish = now + cost + self.time.update_seconds + self._finish_seconds()
            due = due and finish <= c.time_budget
        return bool(share(self.world, float(due)))  # rank 0's clock decides for all

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> Iterator[StepRecord | EvalRecord | RollbackRecord | StopRecord]:
        self.model.train()
        self.time.start()
        if self.counting:
            yield from self._count()
            return
        self._remember()
        while (reason := self._should_stop()) is None:
            for work in self._work():
                yield self._update(work)
                if self.bad_steps >= MAX_BAD_STEPS:
                    yield self._go_back()
                    break  # start again from the restored position
                stop = self._should_stop()
                if stop is None and self._evaluation_due():
                    yield from self._evaluation()
                    stop = self._should_stop()  # patience
                if stop is not None:
                    break
            else:  # a full pass: start the next one from a fresh state
                self.epoch, self.position, self.carried = self.epoch + 1, 0, None
        if self.evaluated_at != self.step:
            yield from self._evaluation()
        yield StopRecord(self.step, reason)

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

    def _work(self) -> Iterator[Window | seqs.Batch]:
        """What the rest of this pass updates on: TBPTT windows, or padded batches."""
        return self.source.work(self.epoch, self.position, self.step)

    def _update(self, work: Window | seqs.Batch) -> StepRecord:
        """One update: the loss of `work` from the carried state, its gradient, clipped, then
        the optimizer's step, or no step at all when the loss or the gradient is not finite."""
        started = self.time.tick()
        lr = self._set_learning_rate(work)
        with autocast(self.device, self.precision):
            # the loss reported is the cross-entropy; the one optimised adds AR and TAR
            objective, loss, carried, seen, position = self.update_loss(work, self.carried)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(objective).backward()
        self.scaler.unscale_(self.optimizer)
        clip = self.config.clip or math.inf
        grad_norm = float(clip_gradients(self.model, clip))
        loss_value, skipped, counted = self._agree(loss.item(), grad_norm, seen)
        self._step_or_skip(skipped, carried)
        self.step, self.position, self.tokens = self.step + 1, position, self.tokens + counted
        self.clip_count += grad_norm > clip
        seconds = self.time.updated(started, seen)  # this process's targets: its pace
        return StepRecord(
            self.step,
            self.epoch,
            self.tokens,
            loss_value,
            lr,
            grad_norm,
            grad_norm > clip,
            counted / max(seconds, 1e-9),  # a fake clock may stand still
            self.elapsed,
            self.progress(),
            skipped,
        )

    def _set_learning_rate(self, work: Window | seqs.Batch) -> float:
        lr = self.learning_rate()
        if self.config.bptt_jitter:  # a shorter window, a smaller step (AWD-LSTM)
            lr *= counted_columns(work) / self.config.k1
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def _agree(self, loss: float, grad_norm: float, seen: int) -> tuple[float, bool, int]:
        """The loss to report, whether to skip the update, and the targets counted, over all
        processes. Skipped: a non-finite loss, or non-finite gradients that the fp16 scaler
        would not skip by itself; with several processes, if any process must."""
        skipped = not math.isfinite(loss) or (
            not math.isfinite(grad_norm) and not self.scaler.is_enabled()
        )
        if not self.world.active:
            return loss, skipped, seen
        loss_sum, skips = total(self.world, [loss, float(skipped)])
        return loss_sum / self.world.size, skips > 0, seen * self.world.size

    def _step_or_skip(self, skipped: bool, carried: State | None) -> None:
        """The optimizer's step and the state carried on; or, skipped, no step and a fresh
        state for the next window (this one may hold NaNs)."""
        if skipped:
            self.optimizer.zero_grad(set_to_none=True)
            self.bad_steps += 1
            self.carried = None
            return
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.averager:
            self.averager.update()
        self.bad_steps = 0
        self.carried = detach(carried) if carried else None  # keep values, cut history

    def _count(self) -> Iterator[EvalRecord | StopRecord]:
        self.model.fit(np.asarray(self.train_ids))
        self.step, self.epoch, self.tokens = 1, 1, len(self.train_ids)
        yield from self._evaluation()
        yield StopRecord(self.step, "counted")

    # -- numerical faults --------------------------------------------------------------------

    def _remember(self) -> None:
        """Keep a copy of this state to go back to if the loss stops being finite."""
        if all_finite(self.model):
            weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self._good = (weights, copy.deepcopy(self.state_dict()))

    def _go_back(self) -> RollbackRecord:
        """After MAX_BAD_STEPS non-finite updates in a row: back to the last good state, with
        half the learning rate. Gives up after MAX_ROLLBACKS."""
        if self.rollbacks >= MAX_ROLLBACKS or self._good is None:
            raise ArlmError(
                f"the loss stayed non-finite after {self.rollbacks} restarts from the last good "
                "state at lower learning rates: lower --lr or --clip, or check the data"
            )
        failed_at, scale, rollbacks = self.step, self.lr_scale / 2, self.rollbacks + 1
        weights, state = self._good
        self.model.load_state_dict(weights)
        elapsed = self.elapsed  # the time spent stays spent: the budget is wall time
        self.load_state_dict(copy.deepcopy(state))  # the optimizer would alias the copy
        self.elapsed = elapsed
        self.lr_scale, self.rollbacks, self.bad_steps = scale, rollbacks, 0
        return RollbackRecord(failed_at, self.step, scale)

    def _loss(self, work: Window | seqs.Batch, carried: State | None):
        """What one update optimises, its cross-entropy, the state to carry, the targets
        counted, and where the next update starts (what `_Loss`, and so DDP, runs)."""
        if isinstance(work, seqs.Batch):  # full BPTT through each sequence, fresh state
            loss, seen = seqs.loss(self.model, work, self.device)
            return loss, loss, None, seen, self.position + 1
        inputs, targets = to_device(work, self.device)
        state = carried or self.model.init_state(inputs.shape[0])
        outputs, carried = run_window(self._run_forward, inputs, state, work.carry)
        counted = [out[:, work.loss_start :] for out in outputs]  # features (and raw ones)
        loss = counted_loss(counted[0], targets[:, work.loss_start :], self.output_layer)
        objective = loss + self.penalty(*counted) if self.penalty else loss
        seen = targets[:, work.loss_start :].numel()
        return objective, loss, carried, seen, self.source.next_position(work)

    def _run_forward(self, inputs: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        try:
            return self.forward(inputs, state)
        except Exception as error:  # torch.compile fails at the first call, not at compile()
            if self.forward is self.eager:
                raise
            self.forward = self.eager
            self.warnings.append(f"torch.compile failed ({error.__class__.__name__}): eager mode")
            return self.eager(inputs, state)

    def evaluate(self) -> EvalRecord:
        """The validation figures, computed as `arlm eval` computes them (arlm.score)."""
        loss, count, unscored = self.source.validation_loss(
            self.model, self.val_ids, self.device, self.precision
        )
        loss = share(self.world, loss)  # with several processes, rank 0's
        val_bytes = round(self.val_bytes_per_token * len(self.val_ids)) - unscored
        self.time.tick()
        self.evaluated_at = self.step
        best = loss < self.best_loss
        if best:
            self.best_loss, self.evals_since_best = loss, 0
        else:
            self.evals_since_best += 1
            self.lr_cuts += self.config.schedule == "plateau"
        if self.averager:
            self.averager.observe(loss)
        if math.isfinite(loss):
            self._remember()
        return EvalRecord(
            self.step,
            self.tokens,
            loss,
            math.exp(min(loss, 50)),
            loss * count / LN2 / val_bytes,
            best,
            self.elapsed,
        )

    # -- resume ------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything but the weights that an exact resume needs: plain values and tensors
        only (arlm.checkpoint stores them as safetensors and JSON)."""
        carried = self.carried or ()
        return {
            "optimizer": self.optimizer.state_dict() if self.optimizer else {},
            "scaler": self.scaler.state_dict(),
            "counters": {
                "step": self.step,
                "epoch": self.epoch,
                "position": self.position,
                "tokens": self.tokens,
                "clip_count": self.clip_count,
                "elapsed": self.elapsed,
                "best_loss": self.best_loss,
                "evals_since_best": self.evals_since_best,
                "evaluated_at": self.evaluated_at,
                "lr_scale": self.lr_scale,
                "lr_cuts": self.lr_cuts,
                "rollbacks": self.rollbacks,
            },
            "averager": self.averager.state_dict() if self.averager else {},
            # what finishing took: a resumed run keeps that long of its time budget at once
            "timing": self.time.state_dict(),
            # with several processes: every rank's streams and random state, in rank order
            "carried": [
                gather(self.world, s, d)
                for s, d in zip(carried, batch_dims(self.model, carried), strict=True)
            ],
            "rng": gather(self.world, torch.get_rng_state()[None], 0),
            "cuda_rng": gather(self.world, torch.cuda.get_rng_state()[None], 0)
            if torch.cuda.is_available()
            else [],
        }

    def load_state_dict(self, state: dict) -> None:
        if self.optimizer:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        for name, value in state["counters"].items():
            setattr(self, name, value)
        if self.averager and state.get("averager"):  # none before nt-asgd, or without it
            self.averager.load_state_dict(state["averager"])
        self.time.load_state_dict(state.get("timing", {}))
        carried = tuple(t.to(self.device) for t in state["carried"])
        dims = batch_dims(self.model, carried)
        mine = (my_share(self.world, s, d) for s, d in zip(carried, dims, strict=True))
        self.carried = tuple(mine) or None
        # each rank its own random state (one saved by fewer processes is reused in turn)
        rng = state["rng"]
        torch.set_rng_state(rng[self.world.rank % len(rng)].contiguous())
        cuda_rng = state["cuda_rng"]
        if len(cuda_rng) and torch.cuda.is_available():
            torch.cuda.set_rng_state(cuda_rng[self.world.rank % len(cuda_rng)].contiguous())
