"""The search behind arlm.recipes: `arlm train` runs side by side, one row each.

    python -m bench.recipe_search DATASET NAME=FLAGS... [--tokens N | --minutes M]

Each NAME=FLAGS is one run ("sgd20=--optimizer sgd --lr 20"), trained for about N tokens (the
same data seen: quality per token) or M minutes of wall time (quality per second, the figure a
user gets; run it on a quiet machine). Every row (flags, tokens, seconds, best validation loss,
perplexity per word for word datasets) is appended to bench/results/recipes.jsonl and printed.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from arlm import data

RESULTS = Path(__file__).resolve().parent / "results" / "recipes.jsonl"


def run(dataset: Path, flags: list[str], tokens: int | None, minutes: float | None) -> dict:
    """One `arlm train` on `dataset` with `flags`; its figures from metrics.jsonl."""
    with tempfile.TemporaryDirectory(prefix="arlm-recipe-") as tmp:
        out = Path(tmp) / "ck"
        limit = ["--time-budget", f"{minutes * 60:.0f}s"] if minutes else []
        if tokens:
            batch = int(_flag(flags, "--batch-size", 0) or 0)
            k1 = int(_flag(flags, "--bptt", 0) or _flag(flags, "--k1", 0) or 0)
            if not batch or not k1:
                sys.exit("--tokens needs --batch-size and --bptt (or --k1) in each run's flags")
            steps = math.ceil(tokens / (batch * k1))
            limit = ["--max-steps", str(steps), "--eval-every", str(max(1, steps // 4))]
        command = ["train", "--data", str(dataset), "--out", str(out), *flags, *limit]
        done = subprocess.run(
            [sys.executable, "-m", "arlm", *command], capture_output=True, text=True
        )
        if done.returncode:
            return {"error": done.stderr.strip().splitlines()[-1:]}
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    evals = [m for m in metrics if "val_loss" in m]
    steps = [m for m in metrics if "loss" in m and "val_loss" not in m]
    best = min(m["val_loss"] for m in evals)
    meta = data.load_meta(dataset)
    row = {
        "tokens": metrics[-1].get("tokens"),
        "seconds": metrics[-1].get("elapsed"),
        "tokens_per_second": steps[-1].get("tokens_per_second") if steps else None,
        "val_loss": best,
        "val_losses": [round(m["val_loss"], 4) for m in evals],
    }
    words = meta["val"].get("words")
    if words:
        row["perplexity_per_word"] = math.exp(best * meta["val"]["tokens"] / words)
    return row


def _flag(flags: list[str], name: str, default: object) -> object:
    return flags[flags.index(name) + 1] if name in flags else default


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("runs", nargs="+", help="NAME=FLAGS")
    limit = parser.add_mutually_exclusive_group(required=True)
    limit.add_argument("--tokens", type=int)
    limit.add_argument("--minutes", type=float)
    parser.add_argument("--note", default="", help="what the runs compare (kept in each row)")
    args = parser.parse_args()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    for spec in args.runs:
        name, _, flags = spec.partition("=")
        row = {"name": name, "dataset": args.dataset.name, "flags": flags, "note": args.note}
        row |= {"limit": {"tokens": args.tokens} if args.tokens else {"minutes": args.minutes}}
        row |= run(args.dataset, shlex.split(flags), args.tokens, args.minutes)
        with RESULTS.open("a") as file:
            file.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
