"""Pictures: the learning curve, a classifier's confusion matrix, a seq2seq model's attention.
Each PNG carries a text chunk MARK, so that --plot replaces a picture arlm drew and never a file
of the user's (commands/_shared.plot_path)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no screen needed, safe in threads and on servers
import matplotlib.pyplot as plt  # noqa: E402

MARK = "arlm"  # a text chunk of every PNG drawn here


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
    axes.grid(alpha=0.3)
    axes.legend()
    finish(figure, axes, path, title, ("tokens seen", "loss (nats per token)"))


def confusion_matrix(confusion: list[list[int]], labels: list[str], path: Path, title: str) -> None:
    """A classifier's confusion matrix as a PNG: rows the true labels, columns the predicted
    ones, each cell its count, shaded by its share of its row (the recall on the diagonal)."""
    counts = [[int(n) for n in row] for row in confusion]
    shares = [[n / max(1, sum(row)) for n in row] for row in counts]
    size = 1.2 + 0.6 * len(labels)
    figure, axes = plt.subplots(figsize=(size + 1.5, size), dpi=110)
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i, row in enumerate(counts):
        for j, n in enumerate(row):
            color = "white" if shares[i][j] > 0.6 else "black"
            axes.text(j, i, f"{n:,}", ha="center", va="center", fontsize=8, color=color)
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    axes.set_yticks(range(len(labels)), labels, fontsize=8)
    names = ("predicted label", "true label", "share of the true label's texts")
    finish(figure, axes, path, title, names, image)


def attention_map(
    weights: list[list[float]], sources: list[str], outputs: list[str], path: Path, title: str
) -> None:
    """A seq2seq model's attention as a PNG: a row per output token, a column per source
    token, each cell the weight that output's step gave that source token (rows sum to 1)."""
    width, height = 1.5 + 0.35 * len(sources), 1.2 + 0.35 * len(outputs)
    figure, axes = plt.subplots(figsize=(max(width, 4), max(height, 3)), dpi=110)
    image = axes.imshow(weights, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    axes.set_xticks(range(len(sources)), [repr(p)[1:-1] for p in sources], fontsize=8)
    axes.set_yticks(range(len(outputs)), [repr(p)[1:-1] for p in outputs], fontsize=8)
    finish(figure, axes, path, title, ("source token", "output token", "attention weight"), image)


def finish(figure, axes, path: Path, title: str, names: tuple, image=None) -> None:
    """Name the axes (x, y, and the colour bar of `image` if there is one), title the
    figure, and write it to `path` as a PNG with arlm's mark."""
    axes.set_xlabel(names[0])
    axes.set_ylabel(names[1])
    axes.set_title(title, fontsize=10)
    if image is not None:
        figure.colorbar(image, ax=axes, label=names[2])
    figure.tight_layout()
    figure.savefig(path, format="png", metadata={MARK: "plot"})
    plt.close(figure)


def drawn_by_arlm(path: Path) -> bool:
    """Is `path` a PNG that carries arlm's mark?"""
    import warnings

    from PIL import Image  # matplotlib's own dependency

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's warning of a huge picture
        try:
            with Image.open(path) as image:  # its text chunks are read, no pixel decoded
                return image.format == "PNG" and image.info.get(MARK) == "plot"
        except Exception:  # not a PNG, not a whole one, or one too big to open: not arlm's
            return False
