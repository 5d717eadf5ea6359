"""The bottleneck of a context vector, measured: the same seq2seq model trained for the same
wall time with no attention (the decoder sees the source only through the encoder's final
state), with Luong's and with Bahdanau's attention, then scored by `arlm eval`: exact match
overall and by source length, chrF, and the loss per target token.

Two tasks: the built-in dates (many human forms -> ISO 8601), and copying strings of 5 to 60
random letters, where everything in the source must come through to the target.

    python -m bench.bottleneck [--budget 60s] [--work bench/work/bottleneck]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path

ATTENTIONS = ("none", "luong", "bahdanau")
MODEL = ("--model", "lstm", "--num-layers", "1", "--hidden-size", "128", "--embedding-dim", "32",
         "--batch-size", "64")  # fmt: skip


def arlm(*args: object) -> str:
    done = subprocess.run([sys.executable, "-m", "arlm", *map(str, args)], capture_output=True,
                          text=True)  # fmt: skip
    if done.returncode:
        raise SystemExit(f"arlm {' '.join(map(str, args))} failed:\n{done.stderr}")
    return done.stdout


def copies(path: Path, count: int = 20_000, seed: int = 0) -> None:
    """`count` strings of 5 to 60 letters, each mapped to itself."""
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    rows = ["".join(rng.choice(letters) for _ in range(rng.randint(5, 60))) for _ in range(count)]
    path.write_text("".join(f"{r}\t{r}\n" for r in rows), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="60s")
    parser.add_argument("--work", type=Path, default=Path("bench/work/bottleneck"))
    parser.add_argument("--tasks", default="dates,copy")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    for task in args.tasks.split(","):
        data = args.work / task
        if task == "dates":
            source = ("--builtin", "dates")
        else:
            copies(args.work / "copy.tsv")
            source = (args.work / "copy.tsv",)
        arlm("tokenize", *source, "--task", "seq2seq", "--model-type", "char", "--out", data,
             "--force")  # fmt: skip
        print(f"{task}: {args.budget} of training each, {' '.join(MODEL)}", flush=True)
        for attention in ATTENTIONS:
            out = args.work / f"{task}-{attention}"
            arlm("train", "--task", "seq2seq", "--data", data, "--attention", attention, *MODEL,
                 "--time-budget", args.budget, "--out", out, "--force")  # fmt: skip
            figures = json.loads(arlm("eval", out, "--data", data, "--json"))
            thirds = "  ".join(
                f"{p['chars'][0]}-{p['chars'][1]} chars {p['exact_match']:6.1%}"
                for p in figures["by_source_length"]
            )
            records = [json.loads(line) for line in (out / "metrics.jsonl").open()]
            steps = max(r.get("step", 0) for r in records)
            print(
                f"  {attention:9} exact match {figures['exact_match']:6.1%}  chrF "
                f"{figures['chrf']:5.1f}  loss {figures['loss']:.4f}  | {thirds}  "
                f"({steps} updates)",
                flush=True,
            )


if __name__ == "__main__":
    main()
