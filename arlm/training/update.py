"""One update of the weights: the loss of one piece of work (a TBPTT window, or a padded batch
of sequences) from the state carried to it, its gradient, clipped, then the optimizer's step, or
no step at all when the loss or the gradient is not finite.

`Update` holds what changes from one update to the next: the optimizer, the fp16 scaler, the
nt-asgd average and the state carried from window to window. The Trainer (trainer.py) decides
when to update, at which learning rate, and what to do with the outcome.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from arlm import sequences as seqs
from arlm.distributed import World, gather, my_share, total
from arlm.errors import UsageError
from arlm.models.base import LanguageModel, State, batch_dims, detach
from arlm.runtime import autocast
from arlm.settings import TrainConfig
from arlm.streams import Window
from arlm.training.awd import ActivationPenalty, Averager
from arlm.training.sources import LabelledBatch
from arlm.training.tbptt import clip_gradients, counted_loss, run_window, to_device


def _embeddings(model: LanguageModel) -> list[torch.Tensor]:
    """The embedding matrices of the model's input layers: none with one-hot inputs or for
    the HMM; a seq2seq model's encoder and decoder have one each."""
    return [m.weight for m in model.modules() if isinstance(m, torch.nn.Embedding)]


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
    if config.optimizer in ("sgd", "nt-asgd"):
        return torch.optim.SGD(groups, lr=config.lr, fused=True)
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.99), fused=True)


class _Loss(torch.nn.Module):
    """One update's loss as a module whose parameters are the model's: what DDP wraps, so
    that its gradient hooks fire on every backward."""

    def __init__(self, model: torch.nn.Module, compute) -> None:
        super().__init__()
        self.model = model
        self.compute = compute

    def forward(self, work, carried, position):
        return self.compute(work, carried, position)


class Outcome(NamedTuple):
    """What one update did: its cross-entropy (averaged over the processes), the gradient's
    norm before clipping, whether it was skipped, the targets counted (over all processes) and
    seen (by this one), and where the next update starts."""

    loss: float
    grad_norm: float
    skipped: bool
    counted: int
    seen: int
    position: int


class Update:
    """The update of `model`'s weights on one piece of work (see the module's docstring).

    What a window runs through and how its loss is taken:

        forward       the model, or its features (fused kinds: the loss then goes through
                      `output_layer` block by block, arlm.loss), compiled with --compile
        eager         the same, never compiled: the fallback when compiling fails
        penalty       AR/TAR, on the features (and the raw ones, before dropout)
        loss_module   `loss` as a module of the model's parameters, which DDP wraps
    """

    def __init__(
        self,
        model: LanguageModel,
        config: TrainConfig,
        source,
        device: torch.device,
        precision: torch.dtype,
        world: World,
        warnings: list[str],
    ) -> None:
        self.model, self.config, self.source, self.world = model, config, source, world
        self.device, self.precision, self.warnings = device, precision, warnings
        self.optimizer = None if model.counted else make_optimizer(model, config)
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == torch.float16)
        # nt-asgd: the average of the weights, once validation stops improving
        self.averager = (
            Averager(list(model.parameters()), config.nonmono)
            if config.optimizer == "nt-asgd"
            else None
        )
        self.carried: State | None = None  # the state the next window starts from
        self.weights = None  # --class-weights: each label's weight in the loss
        if config.task == "classify" and config.class_weights:
            self.weights = source.class_weights(model.head.out_features).to(device)
        self.bad_steps = 0  # non-finite updates in a row
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
        self.loss_module = _Loss(model, self.loss)
        if world.active:  # gradients averaged over the processes by DDP
            self.loss_module = DistributedDataParallel(self.loss_module)

    def __call__(self, work: Window | seqs.Batch, position: int, lr: float) -> Outcome:
        """Update the weights on `work` at learning rate `lr`; `position`: where it starts."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with autocast(self.device, self.precision):
            # the loss reported is the cross-entropy; the one optimised adds AR and TAR
            objective, loss, carried, seen, position = self.loss_module(
                work, self.carried, position
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(objective).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = float(clip_gradients(self.model, self.config.clip or math.inf))
        loss_value, skipped, counted = self._agree(loss.item(), grad_norm, seen)
        self._step_or_skip(skipped, carried)
        return Outcome(loss_value, grad_norm, skipped, counted, seen, position)

    def loss(
        self,
        work: Window | seqs.Batch | LabelledBatch | seqs.PairBatch,
        carried: State | None,
        position: int,
    ):
        """What one update optimises, its cross-entropy, the state to carry, the targets
        counted, and where the next update starts (what `_Loss`, and so DDP, runs)."""
        if isinstance(
            work, seqs.PairBatch
        ):  # teacher forcing: each target token after those before
            loss, seen = seqs.pair_loss(self.model, work, self.device)
            return loss, loss, None, seen, position + 1
        if isinstance(work, LabelledBatch):  # a score per label for each text
            scores = self.model(work.inputs.to(self.device), work.lengths).float()
            loss = F.cross_entropy(scores, work.labels.to(self.device), weight=self.weights)
            return loss, loss, None, len(work.labels), position + 1
        if isinstance(work, seqs.Batch):  # full BPTT through each sequence, fresh state
            loss, seen = seqs.loss(self.model, work, self.device)
            return loss, loss, None, seen, position + 1
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

    def state_dict(self) -> dict:
        """The optimizer's, the scaler's and the average's state, the carried state and the
        random state: with several processes, every rank's streams and random state, in rank
        order."""
        carried = self.carried or ()
        return {
            "optimizer": self.optimizer.state_dict() if self.optimizer else {},
            "scaler": self.scaler.state_dict(),
            "averager": self.averager.state_dict() if self.averager else {},
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
        if self.averager and state.get("averager"):  # none before nt-asgd, or without it
            self.averager.load_state_dict(state["averager"])
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
