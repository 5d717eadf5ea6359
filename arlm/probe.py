"""How far back the gradient reaches: the vanishing-gradient probe behind `arlm diagnose`.

For many windows of K + 1 tokens, the loss of predicting the token after the window is
differentiated with respect to the input vectors (embeddings, or one-hot vectors) at each
earlier position. The mean norm of that gradient at distance k says how much the prediction
depends on the input k steps back. An Elman network's curve falls geometrically (its gradient
is a product of k Jacobians whose norm is below one); an LSTM's falls much more slowly: that is
what its additive cell state is for. A feed-forward network's (ffnn) stops dead at its window:
nothing further back reaches it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from arlm.errors import UsageError
from arlm.models import LanguageModel


def gradient_by_distance(
    model: LanguageModel, ids: np.ndarray, distance: int, windows: int = 64, seed: int = 0
) -> np.ndarray:
    """Mean norm of d loss(next token) / d input(t - k) for k = 0..distance: (distance + 1,)."""
    if not model.has_input_layer:
        raise UsageError(
            f"{model.config.kind} has no input layer to differentiate: diagnose neural models"
        )
    length = distance + 1
    if len(ids) < length + 1:
        raise UsageError(f"the text has {len(ids)} tokens: --max-distance needs {length + 1}")
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(ids) - length, size=windows)
    rows = np.stack([ids[s : s + length + 1] for s in starts]).astype(np.int64)
    inputs, targets = torch.from_numpy(rows[:, :-1]), torch.from_numpy(rows[:, -1])
    captured: list[torch.Tensor] = []

    def as_leaf(module, args, output):  # the input vectors, made something to differentiate
        leaf = output.detach().float().requires_grad_(True)
        captured.append(leaf)
        return leaf

    was_training = model.training
    model.eval()
    handle = model.input.register_forward_hook(as_leaf)
    try:
        logits, _ = model(inputs, model.init_state(windows))
        F.cross_entropy(logits[:, -1].float(), targets, reduction="sum").backward()
    finally:
        handle.remove()
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    # (windows, length): per window, per position; a model whose state holds tokens (ffnn's
    # window) reads them through its input layer too, before the window's own
    norms = captured[0].grad[:, -length:].norm(dim=-1)
    return norms.mean(0).flip(0).numpy()  # index k: k steps before the last input
