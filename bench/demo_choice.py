"""What `make demo` should train, measured: candidates (tokenizer, model, budget) on the built-in
python-docs corpus, each scored by validation bits per byte and by how much of its sample is
spelled right (the share of a sample's words, runs of letters, that the corpus holds too).

    python -m bench.demo_choice [--work bench/work/demo] [--budget 60s] [--samples 4]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

from arlm.corpus import python_docs

CANDIDATES = {  # name -> (tokenize options, train options)
    "bpe2000-lstm2x256": (["--vocab-size", "2000"], ["--model", "lstm"]),
    "bpe500-lstm2x256": (["--vocab-size", "500"], ["--model", "lstm"]),
    "char-lstm2x256": (["--model-type", "char"], ["--model", "lstm"]),
    "char-gru2x256": (["--model-type", "char"], ["--model", "gru"]),
    "char-lstm1x512": (["--model-type", "char"],
                       ["--model", "lstm", "--num-layers", "1", "--hidden-size", "512"]),
}  # fmt: skip
WORD = re.compile(r"[A-Za-z]{2,}")


def arlm(*args: object) -> str:
    done = subprocess.run([sys.executable, "-m", "arlm", *map(str, args)], capture_output=True,
                          text=True)  # fmt: skip
    if done.returncode:
        raise SystemExit(f"arlm {' '.join(map(str, args))} failed:\n{done.stderr}")
    return done.stdout + done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("bench/work/demo"))
    parser.add_argument("--budget", default="60s")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--only", default=",".join(CANDIDATES))
    args = parser.parse_args()
    known = {w.lower() for w in WORD.findall(python_docs())}
    for name in args.only.split(","):
        tokenize, train = CANDIDATES[name]
        data, out = args.work / f"data-{name}", args.work / name
        arlm("tokenize", "--builtin", "python-docs", *tokenize, "--out", data, "--force")
        arlm("train", "--data", data, *train, "--time-budget", args.budget, "--out", out,
             "--force")  # fmt: skip
        best = min(
            (json.loads(line) for line in (out / "metrics.jsonl").open()),
            key=lambda r: r.get("val_loss", float("inf")),
        )
        texts = [
            json.loads(line)["text"]
            for line in arlm("generate", out, "--prompt", "The ", "--max-tokens",
                             400 if "char" in name else 120, "--top-k", 40, "--temperature",
                             0.7, "--seed", 1, "--num-samples", args.samples,
                             "--json").splitlines()
            if line.startswith("{")
        ]  # fmt: skip
        words = [w.lower() for text in texts for w in WORD.findall(text)]
        spelled = sum(w in known for w in words) / max(1, len(words))
        print(
            f"{name:20} {best['bits_per_byte']:.3f} bits/byte at step {best['step']}; "
            f"{spelled:.0%} of {len(words)} sampled words spelled right",
            flush=True,
        )
        print("   ", repr(texts[0][:200]), flush=True)


if __name__ == "__main__":
    main()
