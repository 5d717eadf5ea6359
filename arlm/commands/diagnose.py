"""`arlm diagnose`: the vanishing-gradient probe (arlm.probe) on checkpoints, as a table of
gradient norms by distance on stdout, and overlaid curves with --plot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from arlm.commands._shared import load, plot_path, reversed_model, stdout_console
from arlm.data import reading_order, text_from_path
from arlm.errors import UsageError
from arlm.formats import atomic_write
from arlm.probe import gradient_by_distance


def run(
    *,
    checkpoints: list[Path],
    data: Path,
    max_distance: int,
    windows: int,
    plot: Path | None,
    json_output: bool,
    console: Console,
) -> None:
    """The probe for each checkpoint: a table on stdout (and one log-scale plot with --plot)."""
    if max_distance < 1 or windows < 1:
        raise UsageError("--max-distance and --windows must be positive")
    plot = plot_path(plot)
    curves = {}
    for folder in map(Path, checkpoints):
        model, config, tokenizer, _ = load(folder, "cpu")  # its tokenizer checked, as for eval
        ids = reading_order(np.asarray(text_from_path(tokenizer, data).ids), reversed_model(config))
        name = f"{folder.name} ({model.config.describe()})"
        curves[name] = gradient_by_distance(model, ids, max_distance, windows)
        console.print(f"probed {name}", highlight=False)
    if plot:
        atomic_write(plot, lambda p: plot_curves(curves, p))
    if json_output:
        sys.stdout.write(json.dumps({k: v.tolist() for k, v in curves.items()}) + "\n")
        return
    table = Table(title="mean |d loss / d input| at k steps back", title_justify="left")
    table.add_column("k", justify="right")
    for name in curves:
        table.add_column(name, justify="right")
    K = max_distance
    for k in sorted({*range(min(K, 5) + 1), *range(10, K + 1, 10), K}):
        table.add_row(str(k), *(f"{curve[k]:.2e}" for curve in curves.values()))
    stdout_console().print(table)
    if plot:
        console.print(f"plot: {plot}", highlight=False)


def plot_curves(curves: dict[str, np.ndarray], path) -> None:
    from arlm.plot import finish, plt

    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    for name, curve in curves.items():
        axes.semilogy(np.arange(len(curve)), np.maximum(curve, 1e-30), lw=1.5, label=name)
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8)
    names = ("k: steps between the input and the predicted token", "mean gradient norm (log scale)")
    finish(figure, axes, path, "how far back the gradient reaches", names)
