"""`arlm compare`: several checkpoints scored on the same text, as a table (and a bar chart with
--plot): model, size, training cost, perplexity and bits per byte."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from arlm import checkpoint
from arlm.commands._shared import load, plot_path, score_checkpoint, stdout_console
from arlm.errors import UsageError
from arlm.formats import atomic_write
from arlm.models import ModelConfig


def describe(folder: Path, model, config: dict) -> dict:
    """What a checkpoint is and what its training cost (from config.json and metrics.jsonl)."""
    model_config = ModelConfig.from_dict(config["model"])
    metrics = checkpoint.read_metrics(folder)
    return {
        "checkpoint": str(folder),
        "model": model_config.describe(),
        "kind": model_config.kind,
        "parameters": model.num_parameters(),
        "training_seconds": max((m.get("elapsed", 0.0) for m in metrics), default=0.0),
        "training_tokens": max((m.get("tokens", 0) for m in metrics), default=0),
        "tokenizer": config.get("data", {}).get("model_type", "?"),
    }


def run(
    *,
    checkpoints: list[Path],
    data: Path,
    plot: Path | None,
    device: str,
    json_output: bool,
    console: Console,
) -> None:
    """`arlm compare`: one row per checkpoint, in a table on stdout or as JSON."""
    folders = [Path(p) for p in checkpoints]
    if not folders:
        raise UsageError("give one or more checkpoint folders to compare")
    for folder in folders:  # refuse a wrong folder before scoring the others
        checkpoint.read_config(folder)
    plot = plot_path(plot)
    rows = []
    for folder in folders:
        loaded = load(folder, device)
        row = describe(folder, loaded.model, loaded.config) | score_checkpoint(loaded, data, None)
        if loaded.tokenizer.lemmas:  # not the same text predicted as the others': say so
            row["model"] += f" (lemmas: {loaded.tokenizer.lemmas})"
        rows.append(row)
        console.print(f"scored {folder}: {row['bits_per_byte']:.3f} bits/byte", highlight=False)
    if plot:
        atomic_write(plot, lambda p: bar_chart(rows, p, f"on {Path(data).name}"))
    if json_output:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    table = Table(title=f"scored on {data}", title_justify="left")
    for name in (
        "checkpoint",
        "model",
        "parameters",
        "training",
        "tokens",
        "perplexity",
        "bits/byte",
    ):
        table.add_column(name, justify="left" if name in ("checkpoint", "model") else "right")
    for r in rows:
        table.add_row(
            Path(r["checkpoint"]).name,
            r["model"],
            f"{r['parameters']:,}",
            f"{r['training_seconds']:.0f}s",
            f"{r['training_tokens']:,}",
            f"{r['perplexity']:.2f}",
            f"{r['bits_per_byte']:.3f}",
        )
    stdout_console().print(table)
    if plot:
        console.print(f"bar chart: {plot}", highlight=False)


def bar_chart(rows: list[dict], path: Path, title: str) -> None:
    from arlm.plot import finish, plt

    figure, axes = plt.subplots(figsize=(7, 0.5 * len(rows) + 1.5), dpi=110)
    names = [f"{Path(r['checkpoint']).name} ({r['model']})" for r in rows]
    values = [r["bits_per_byte"] for r in rows]
    bars = axes.barh(names[::-1], values[::-1], color="#4c72b0")
    axes.bar_label(bars, fmt="%.3f", padding=3, fontsize=8)
    axes.set_xlim(0, max(values) * 1.15)
    finish(figure, axes, path, title, ("bits per byte (lower is better)", ""))
