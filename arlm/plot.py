"""The learning curve: train and validation loss against tokens seen."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no screen needed, safe in threads and on servers
import matplotlib.pyplot as plt  # noqa: E402


def learning_curve(metrics: list[dict], path: Path, title: str = "") -> None:
    """Draw `metrics` (records with "tokens" and "loss" or "val_loss") into a PNG at `path`."""
    steps = [m for m in metrics if "loss" in m]
    evals = [m for m in metrics if "val_loss" in m]
    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=110)
    if steps:
        axes.plot(
            [m["tokens"] for m in steps], [m["loss"] for m in steps], lw=1, alpha=0.8, label="train"
        )
    if evals:
        axes.plot(
            [m["tokens"] for m in evals],
            [m["val_loss"] for m in evals],
            "o-",
            lw=1.5,
            ms=3,
            label="validation",
        )
    axes.set_xlabel("tokens seen")
    axes.set_ylabel("loss (nats per token)")
    axes.set_title(title, fontsize=10)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)
