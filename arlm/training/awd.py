"""The AWD-LSTM training recipe (Merity et al., 2018, "Regularizing and Optimizing LSTM Language
Models"): activation penalties, jittered windows, averaged SGD. (Its dropouts are in the model:
arlm.models.recurrent.)"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class ActivationPenalty:
    """AR and TAR (Merity et al., 2017, "Revisiting Activation Regularization for Language
    RNNs"), added to the loss that is optimised, never to the one reported:

        ar * mean(h_dropped^2)                  large outputs cost: the output layer sees them
        tar * mean((h_t - h_{t-1})^2)           abrupt changes of the raw output cost

    over the last recurrent layer's output at the counted columns of a window, (B, T, H) each.
    """

    ar: float
    tar: float

    def __call__(self, dropped: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
        penalty = self.ar * dropped.float().pow(2).mean()
        if raw.shape[1] > 1:  # one column has no change to penalise
            penalty = penalty + self.tar * (raw[:, 1:] - raw[:, :-1]).float().pow(2).mean()
        return penalty


JITTER_SD = 5.0  # tokens: AWD-LSTM's spread of window lengths
JITTER_HALF = 0.05  # how often a window is centred on k1 / 2 instead
JITTER_ABOVE = 20  # the longest window is k1 + this: AWD-LSTM notes that a rare long draw can
# run out of memory


def jitter_length(k1: int, rng: np.random.Generator) -> int:
    """A window length as AWD-LSTM draws it: normal around k1 (around k1 / 2 one time in
    twenty) with a spread of 5 tokens, cut to [min(5, k1), k1 + 20]. Varying the length moves
    the window edges, so every token is, across passes, predicted from more than one history
    length instead of the same k1 - j tokens every pass."""
    centre = k1 if rng.random() >= JITTER_HALF else k1 / 2
    return int(np.clip(rng.normal(centre, JITTER_SD), min(5, k1), k1 + JITTER_ABOVE))


class Averager:
    """NT-ASGD's average of the weights (Merity et al., 2018): SGD until validation stops
    improving, then the running mean of the weights after each update since. The mean is what
    is evaluated and kept as the best model: an average of the last part of an SGD path is
    closer to the minimum than the points of the path, which jitter around it (Polyak and
    Juditsky, 1992). torch.optim.ASGD with t0=0, lambd=0 (AWD-LSTM's) computes the same, but
    as an optimizer of its own; kept apart, the update rule and its state stay SGD's.

    Averaging starts at the first evaluation worse than the best of those before the last
    `nonmono`: a non-monotone trigger, which a few noisy evaluations do not set off.
    """

    def __init__(self, params: list[torch.Tensor], nonmono: int) -> None:
        self.params, self.nonmono = params, nonmono
        self.history: list[float] = []  # the validation losses until averaging started
        self.mean: list[torch.Tensor] = []  # empty until averaging starts
        self.count = 0  # updates averaged
        self.raw: list[torch.Tensor] = []  # the trained weights while the mean is swapped in

    @property
    def started(self) -> bool:
        return bool(self.mean)

    def observe(self, loss: float) -> None:
        """One evaluation's loss: averaging starts if it is worse than the best before the
        last `nonmono` evaluations."""
        if self.started or not self.params:
            return
        earlier = self.history[: max(0, len(self.history) - self.nonmono)]
        if earlier and loss > min(earlier):
            self.mean = [p.detach().clone() for p in self.params]
        self.history.append(loss)

    @torch.no_grad()
    def update(self) -> None:
        """After each update, once started: mean_n = mean_(n-1) + (w - mean_(n-1)) / n."""
        if self.started:
            self.count += 1
            for mean, p in zip(self.mean, self.params, strict=True):
                mean.lerp_(p, 1 / self.count)  # a weight of 1 copies w exactly

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """The mean in the model's weights inside the block, the trained ones after it."""
        if not self.started:
            yield
            return
        self.raw = [p.detach().clone() for p in self.params]
        _copy_into(self.params, self.mean)
        try:
            yield
        finally:
            _copy_into(self.params, self.raw)
            self.raw = []

    def state_dict(self) -> dict:
        """`raw` is there while the mean is swapped in: the model's weights saved beside this
        state are the mean then, and loading puts the trained ones back."""
        return {
            "history": list(self.history),
            "count": self.count,
            "mean": self.mean,
            "raw": self.raw,
        }

    def load_state_dict(self, state: dict) -> None:
        self.history, self.count = list(state["history"]), state["count"]
        self.mean = [p.detach().clone() for p in self.params] if state["mean"] else []
        _copy_into(self.mean, state["mean"])
        _copy_into(self.params, state["raw"])  # empty unless saved while swapped


@torch.no_grad()
def _copy_into(params: list[torch.Tensor], values: list[torch.Tensor]) -> None:
    for p, value in zip(params, values, strict=True):
        p.copy_(value)
