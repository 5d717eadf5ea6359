"""Truncated backpropagation through time (Williams & Peng, 1990): the loss of one window of a
stream, from the state carried from the window before it.

    k1: targets counted per window (the window moves on by k1)
    k2: steps backpropagated (>= k1): a window reads k2 - k1 columns before its counted ones

With k1 == k2 every column is counted once and the state at the window's end carries on; with
k2 > k1 the state carried is the one at column `carry`, where the next window starts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from arlm.loss import linear_cross_entropy
from arlm.models import State
from arlm.streams import Window


def clip_gradients(model: torch.nn.Module, clip: float) -> torch.Tensor:
    """Scale the gradients down to norm `clip` if they are longer; return their norm. Unlike
    clip_grad_norm_, touches the gradients only when clipping fires."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads)
    if norm > clip:
        torch.nn.utils.clip_grads_with_norm_(model.parameters(), clip, norm)
    return norm


def to_device(window: Window, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A window's ids on `device`; to a GPU from pinned memory, without waiting for the copy."""
    inputs, targets = torch.from_numpy(window.inputs), torch.from_numpy(window.targets)
    if device.type == "cuda":
        inputs, targets = inputs.pin_memory(), targets.pin_memory()
    return inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)


def tbptt_loss(
    forward: Callable[[torch.Tensor, State], tuple[torch.Tensor, State]],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    state: State,
    window: Window,
    output: torch.nn.Linear | None = None,
) -> tuple[torch.Tensor, State]:
    """The loss of one TBPTT window and the state to carry to the next one.

    The forward pass starts from `state` at the window's first column and runs through all of
    it (up to k2 steps), so the gradient of each counted target reaches back up to k2 steps;
    only the targets from `loss_start` on (the last k1) count, since the earlier ones were
    counted by the previous window. The next window starts at column `carry`: the state there
    is the one returned (the end state when k1 == k2).

    `forward` returns logits, or, when `output` is given, the features that `output` turns
    into logits: then the loss goes through it block by block (arlm.loss).
    """
    outputs, carried = run_window(forward, inputs, state, window.carry)
    start = window.loss_start
    return counted_loss(outputs[0][:, start:], targets[:, start:], output), carried


def run_window(
    forward: Callable[..., tuple], inputs: torch.Tensor, state: State, carry: int
) -> tuple[list[torch.Tensor], State]:
    """Run a window from `state`: what `forward` returns along time (its first value and any
    after the state: (B, T, .) each), and the state at column `carry`, to carry on."""

    def run(x: torch.Tensor, s: State) -> tuple[list[torch.Tensor], State]:
        out, new, *more = forward(x, s)
        return [out, *more], new

    if carry == 0:
        return run(inputs, state)[0], state
    if carry >= inputs.shape[1]:
        return run(inputs, state)
    head, carried = run(inputs[:, :carry], state)
    tail, _ = run(inputs[:, carry:], carried)
    return [torch.cat(pair, dim=1) for pair in zip(head, tail, strict=True)], carried


def counted_loss(
    out: torch.Tensor, targets: torch.Tensor, output: torch.nn.Linear | None
) -> torch.Tensor:
    """Mean cross-entropy of logits (B, T, V), or of features (B, T, H) through `output`."""
    out, targets = out.flatten(0, 1), targets.flatten()
    if output is not None:
        return linear_cross_entropy(out, output.weight, output.bias, targets)
    return F.cross_entropy(out.float(), targets)


def counted_columns(window: Window) -> int:
    """The targets of each row that count in this window's loss: the columns it moves on."""
    return window.targets.shape[1] - window.loss_start
