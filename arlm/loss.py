"""Cross-entropy through the output layer, a block of rows at a time.

With a large vocabulary the logits dominate a step: batch x bptt x vocab floats (700 x 33,278 for
word-level WikiText-2: 93 MB in fp32) written by the output layer, copied to fp32, read by
log-softmax, written again by its backward. Here the logits are made once in the compute dtype
(bf16 under autocast), then each block of rows goes through log-sum-exp and softmax in fp32 while
it is in cache and is overwritten in place with the gradient with respect to the logits; two
matrix products give the gradients of the hidden states and of the output layer. One buffer of
N x V in bf16, nothing else of that size (two for a moment in backward under fp16).

    loss = mean_i [ logsumexp_v(z_iv) - z_i,t_i ],     z = h W^T + b
    d loss / d z_iv = (softmax(z_i)_v - [v = t_i]) / N
"""

from __future__ import annotations

import torch
from torch import Tensor

BLOCK_ELEMENTS = 1 << 22  # logits per block (8 MB in fp32): small enough to stay in cache
# |softmax - one-hot| <= 1: times 2**15 it stays finite in fp16 (up to 65,504), times 2**16 not
FP16_GRAD_SCALE = 2.0**15


def compute_dtype(device: torch.device) -> torch.dtype:
    """The dtype autocast would use for matrix products here, or fp32 outside autocast."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return torch.float32


def _block_rows(vocab_size: int) -> int:
    return max(16, BLOCK_ELEMENTS // vocab_size)


class LinearCrossEntropy(torch.autograd.Function):
    """mean cross-entropy of (h W^T + b) against `targets`, with its gradients taken in the
    forward pass (the logits are never stored whole)."""

    @staticmethod
    def forward(
        ctx, hidden: Tensor, weight: Tensor, bias: Tensor, targets: Tensor, dtype: torch.dtype
    ) -> Tensor:
        rows = hidden.shape[0]
        h, w, b = hidden.to(dtype), weight.to(dtype), bias.to(dtype)
        with torch.autocast(hidden.device.type, enabled=False):
            # one product for all rows (a block of few rows runs the product at half speed);
            # the buffer is then overwritten, block by block, with the gradient
            grad_logits = torch.addmm(b, h, w.t())  # (N, V) logits, in the compute dtype
        # the buffer is to hold the gradient, (softmax - one-hot) / N; but fp16 ends at 6e-8,
        # where softmax / N of a large vocabulary would round to zero before backward brings
        # the gradient scaler's factor: fp16 holds (softmax - one-hot) * FP16_GRAD_SCALE
        fp16 = dtype == torch.float16
        per_row = 1.0 / FP16_GRAD_SCALE if fp16 else rows
        grad_bias = torch.zeros(weight.shape[0], dtype=torch.float32, device=hidden.device)
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        step = _block_rows(weight.shape[0])
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, rows, step):
                z = grad_logits[start : start + step].float()  # (n, V)
                t = targets[start : start + step, None]
                picked = z.gather(1, t)
                top = z.amax(dim=-1, keepdim=True)
                z.sub_(top).exp_()  # one pass of exp serves both the loss and the softmax
                mass = z.sum(dim=-1, keepdim=True)
                total += (top + mass.log() - picked).sum()  # logsumexp - z_target
                # d(mean loss)/dz = (softmax - one-hot) / N (or scaled), while in cache
                z.div_(mass * per_row).scatter_add_(1, t, torch.full_like(picked, -1.0 / per_row))
                grad_bias += z.sum(0)
                grad_logits[start : start + step] = z
        ctx.stored_scale = rows * FP16_GRAD_SCALE if fp16 else None  # stored / gradient
        if fp16:
            grad_bias /= ctx.stored_scale  # fp32: it can take the gradient itself
        ctx.save_for_backward(grad_logits, h, w, grad_bias)
        ctx.dtypes = (hidden.dtype, weight.dtype)
        return total / rows

    @staticmethod
    def backward(ctx, grad_output: Tensor):
        grad_logits, h, w, grad_bias = ctx.saved_tensors
        if ctx.stored_scale is not None:
            # fp16: the products get what autograd's own path gives them, the gradient times
            # grad_output (the scaler's factor) rounded once to fp16; no .item(), no sync
            grad_logits = _times(grad_logits, grad_output / ctx.stored_scale)
            grad_bias = grad_bias * grad_output
        with torch.autocast(h.device.type, enabled=False):
            grads = [
                (grad_logits @ w).to(ctx.dtypes[0]),
                (grad_logits.t() @ h).to(ctx.dtypes[1]),
                grad_bias.to(ctx.dtypes[1]),
            ]
        if ctx.stored_scale is None and grad_output.item() != 1.0:  # loss.backward() is 1.0
            grads = [g * grad_output for g in grads]
        return *grads, None, None


def _times(values: Tensor, factor: Tensor) -> Tensor:
    """values * factor (a 0-d tensor) in fp32, rounded once to values' dtype."""
    # on CUDA a 0-d factor is cast to fp16 before the product, and grad_output / (N * 2**15)
    # is below fp16's range when no scaler multiplies it; a (1, 1) one makes the product fp32
    return torch.mul(values, factor.float().view(1, 1), out=torch.empty_like(values))


def linear_cross_entropy(hidden: Tensor, weight: Tensor, bias: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of the output layer on `hidden` (N, H) against `targets` (N,)."""
    return LinearCrossEntropy.apply(hidden, weight, bias, targets, compute_dtype(hidden.device))


@torch.no_grad()
def token_losses(hidden: Tensor, weight: Tensor, bias: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy of each row, in nats (N,), block by block: for evaluation."""
    dtype = compute_dtype(hidden.device)
    h, w, b = hidden.to(dtype), weight.to(dtype), bias.to(dtype)
    out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    step = _block_rows(weight.shape[0])
    for start in range(0, hidden.shape[0], step):
        z = torch.addmm(b, h[start : start + step], w.t()).float()
        t = targets[start : start + step, None]
        out[start : start + step] = (torch.logsumexp(z, -1, keepdim=True) - z.gather(1, t))[:, 0]
    return out
