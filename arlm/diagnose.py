"""`arlm diagnose`: how far back the gradient reaches (the vanishing-gradient probe).

For many windows of K + 1 tokens, the loss of predicting the token after the window is
differentiated with respect to the input vectors (embeddings, or one-hot vectors) at each
earlier position. The mean norm of that gradient at distance k says how much the prediction
depends on the input k steps back. An Elman network's curve falls geometrically (its gradient
is a product of k Jacobians whose norm is below one); an LSTM's falls much more slowly: that is
what its additive cell state is for.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from arlm.errors import UsageError
from arlm.models import LanguageModel, describe


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
    norms = captured[0].grad.norm(dim=-1)  # (windows, length): per window, per position
    return norms.mean(0).flip(0).numpy()  # index k: k steps before the last input


def run_diagnose(options: dict, console) -> None:
    """The probe for each checkpoint: a table on stdout (and one log-scale plot with --plot)."""
    import json
    import sys
    from pathlib import Path

    from rich.table import Table

    from arlm import score
    from arlm.compare_cli import plot_path, stdout_console
    from arlm.formats import atomic_write
    from arlm.generate_cli import load

    if options["max_distance"] < 1 or options["windows"] < 1:
        raise UsageError("--max-distance and --windows must be positive")
    plot = plot_path(options["plot"])
    curves = {}
    for folder in map(Path, options["checkpoints"]):
        model, _, tokenizer, _ = load(folder, "cpu")  # its tokenizer checked, as for eval
        text = score.text_from_path(tokenizer, options["data"])
        name = f"{folder.name} ({describe(model.config)})"
        curves[name] = gradient_by_distance(
            model, np.asarray(text.ids), options["max_distance"], options["windows"]
        )
        console.print(f"probed {name}", highlight=False)
    if plot:
        atomic_write(plot, lambda p: plot_curves(curves, p))
    if options["json"]:
        sys.stdout.write(json.dumps({k: v.tolist() for k, v in curves.items()}) + "\n")
        return
    table = Table(title="mean |d loss / d input| at k steps back", title_justify="left")
    table.add_column("k", justify="right")
    for name in curves:
        table.add_column(name, justify="right")
    K = options["max_distance"]
    for k in sorted({*range(min(K, 5) + 1), *range(10, K + 1, 10), K}):
        table.add_row(str(k), *(f"{curve[k]:.2e}" for curve in curves.values()))
    stdout_console().print(table)
    if plot:
        console.print(f"plot: {plot}", highlight=False)


def plot_curves(curves: dict[str, np.ndarray], path) -> None:
    from arlm.plot import plt

    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    for name, curve in curves.items():
        axes.semilogy(np.arange(len(curve)), np.maximum(curve, 1e-30), lw=1.5, label=name)
    axes.set_xlabel("k: steps between the input and the predicted token")
    axes.set_ylabel("mean gradient norm (log scale)")
    axes.set_title("how far back the gradient reaches", fontsize=10)
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)
