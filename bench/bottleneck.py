"""The bottleneck of a context vector, measured: the same seq2seq model trained for the same
wall time on the built-in dates (many human forms -> ISO 8601) with no attention (the decoder
sees the source only through the encoder's final state), with Luong's and with Bahdanau's
attention, then scored by `arlm eval`: exact match overall and by source length, chrF, and the
loss per target token. The smaller the state (--hidden), the tighter the bottleneck.

    python -m bench.bottleneck [--budget 60s] [--hidden 128] [--work bench/work/bottleneck]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ATTENTIONS = ("none", "luong", "bahdanau")
MODEL = ("--model", "lstm", "--num-layers", "1", "--embedding-dim", "32", "--batch-size", "64")


def arlm(*args: object) -> str:
    done = subprocess.run([sys.executable, "-m", "arlm", *map(str, args)], capture_output=True,
                          text=True)  # fmt: skip
    if done.returncode:
        raise SystemExit(f"arlm {' '.join(map(str, args))} failed:\n{done.stderr}")
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="60s")
    parser.add_argument("--work", type=Path, default=Path("bench/work/bottleneck"))
    parser.add_argument("--hidden", type=int, default=128, help="the state's size")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    data = args.work / "dates"
    if not (data / "meta.json").is_file():
        arlm("tokenize", "--builtin", "dates", "--task", "seq2seq", "--model-type", "char",
             "--out", data)  # fmt: skip
    model = (*MODEL, "--hidden-size", args.hidden)
    print(f"dates: {args.budget} of training each, {' '.join(map(str, model))}", flush=True)
    for attention in ATTENTIONS:
        out = args.work / f"dates-{args.hidden}-{attention}"
        arlm("train", "--task", "seq2seq", "--data", data, "--attention", attention, *model,
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
