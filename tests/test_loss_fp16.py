"""fp16 through the block-wise loss: the gradient scaler's protection holds (issue 13, part 5)."""

import pytest
import torch
import torch.nn.functional as F

from arlm.loss import linear_cross_entropy

torch.set_num_threads(1)

EPS = torch.finfo(torch.float16).eps  # 2**-10


def zipf_problem(rows: int, vocab: int, hidden: int, alpha: float = 2.0):
    """An output layer whose unigram tail is Zipf's, like a word-level model's: most
    probabilities are below 6e-5, so softmax / 2048 rows is below fp16's smallest number."""
    g = torch.Generator().manual_seed(0)
    rank = torch.arange(1, vocab + 1, dtype=torch.float64)
    unigram = rank**-alpha / (rank**-alpha).sum()
    # values that fp16 holds exactly, so that only the loss's own rounding is measured
    h = torch.randn(rows, hidden, generator=g).tanh().half().float().requires_grad_()
    w = (torch.randn(vocab, hidden, generator=g) / hidden**0.5).half().float().requires_grad_()
    b = unigram.log().half().float().requires_grad_()
    targets = torch.multinomial(unigram, rows, replacement=True, generator=g)
    return [h, w, b], targets


def test_fp16_gradients_under_a_grad_scaler_match_fp32():
    """Before the fix 86% of the weight gradient's entries were exactly 0 (whole rows: rare
    tokens); kept unscaled, without the / N, its worst row was off by 2.7e-2 (fp16's 6e-8
    floor cuts the tail). Now it is as good as autograd's own fp16 path: 1.3e-3."""
    params, targets = zipf_problem(rows=2048, vocab=2048, hidden=32)
    logits = torch.addmm(params[2].double(), params[0].double(), params[1].double().t())
    expected = torch.autograd.grad(F.cross_entropy(logits, targets), params)
    with torch.autocast("cpu", dtype=torch.float16):
        loss = linear_cross_entropy(*params, targets)
    scale = torch.amp.GradScaler("cpu").get_scale()  # 2**16: as the Trainer's fp16 does,
    scaled = torch.autograd.grad(loss * scale, params)  # scale the loss, unscale the gradients
    faults = []
    for name, grad, want in zip(["hidden", "weight", "bias"], scaled, expected, strict=True):
        got, want = grad.double() / scale, want.double()
        lost = ((got == 0) & (want != 0)).double().mean().item()
        error = ((got - want).norm() / want.norm()).item()
        # each row: a position's hidden state, a token's weights (a rare token's went to 0)
        rows = (got - want).norm(dim=-1, keepdim=True) / want.norm(dim=-1, keepdim=True)
        if lost > 1e-3 or error > EPS or rows.max() > 3 * EPS:
            faults.append(f"{name}: {lost:.1%} lost to 0, error {error:.1e}, {rows.max():.1e}")
    assert not faults, f"fp16 eps = {EPS:.1e}; " + "; ".join(faults)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_a_scaled_backward_scales_every_gradient_in_bf16_and_fp32(dtype):
    """loss * s backward gives s times the gradients of loss backward (fp16 differs by design:
    it rounds after scaling)."""
    params, targets = zipf_problem(rows=300, vocab=500, hidden=16)
    grads = []
    for factor in [1.0, 1024.0]:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            loss = linear_cross_entropy(*params, targets)
        grads.append(torch.autograd.grad(loss * factor, params))
    for plain, scaled in zip(*grads, strict=True):
        torch.testing.assert_close(scaled, plain * 1024.0, rtol=0, atol=0)
