"""Tokenize a large generated corpus, then train on it briefly; report time, throughput and
peak memory of each.

    python bench/tokenize_big.py --gigabytes 2 --train-seconds 60

The corpus is WikiText-2's training text repeated (or generated words when ../shared/data is
absent), written to a temporary folder. `arlm tokenize` (BPE 8000, 0.1% held out) and then
`arlm train` (LSTM 2x512) run as child processes whose peak resident memory (VmHWM, mapped
file pages included) is read from /proc while they run: neither may grow with the corpus.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from arlm.checkpoint import read_metrics

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "wikitext-2" / "train.txt"


def make_corpus(path: Path, size: int) -> None:
    if SHARED.exists():
        block = SHARED.read_bytes()
    else:
        words = b"the of and to in a is that for it as was with be by on not he".split()
        block = (
            b"\n".join(
                b" ".join(words[(i * 7 + j) % len(words)] for j in range(12))
                for i in range(200_000)
            )
            + b"\n"
        )
    with open(path, "wb") as out:
        written = 0
        while written < size:
            out.write(block[: size - written])
            written += min(len(block), size - written)


def high_water_mark(pid: int) -> int:
    """Peak resident memory (VmHWM) of a running process since its exec, in bytes."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def run_measured(command: list[str], stdout, stderr) -> tuple[int, int]:
    """Run `command`; return its exit code and peak resident memory in bytes (polled)."""
    process = subprocess.Popen(command, stdout=stdout, stderr=stderr)
    peak = 0
    while process.poll() is None:  # VmHWM: the peak of the child's own memory since its exec
        peak = max(peak, high_water_mark(process.pid))
        time.sleep(0.05)
    return process.returncode, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gigabytes", type=float, default=1.0)
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--train-seconds", type=float, default=0, help="then train this long")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="arlm-big-") as tmp:
        corpus = Path(tmp) / "big.txt"
        make_corpus(corpus, int(args.gigabytes * 1e9))
        started = time.perf_counter()
        command = [
            sys.executable,
            "-m",
            "arlm",
            "tokenize",
            str(corpus),
            "--out",
            str(Path(tmp) / "ds"),
            "--vocab-size",
            str(args.vocab_size),
            "--val-fraction",
            "0.001",
            "--json",
        ]
        out, err = Path(tmp) / "stdout", Path(tmp) / "stderr"
        with open(out, "w") as stdout, open(err, "w") as stderr:
            returncode, peak = run_measured(command, stdout, stderr)
        seconds = time.perf_counter() - started
        if returncode:
            sys.exit(err.read_text())
        meta = json.loads(out.read_text())
        tokens = meta["train"]["tokens"] + meta["val"]["tokens"]
        report = {
            "corpus_bytes": corpus.stat().st_size,
            "seconds": round(seconds, 1),
            "megabytes_per_second": round(corpus.stat().st_size / seconds / 1e6, 2),
            "tokens": tokens,
            "peak_rss_megabytes": round(peak / 1e6, 1),
            "tokenizer_trained_on_bytes": meta["tokenizer"]["trained_on_bytes"],
            "cpu_count": os.cpu_count(),
        }
        corpus.unlink()  # the dataset stays; the text is not needed any more
        if args.train_seconds:
            report["train"] = train(Path(tmp), args.train_seconds)
        print(json.dumps(report, indent=2))


def train(tmp: Path, seconds: float) -> dict:
    """`arlm train` on the big dataset, LSTM 2x512: peak memory and tokens/s."""
    command = [sys.executable, "-m", "arlm", "train", "--data", str(tmp / "ds"), "--out",
               str(tmp / "ck"), "--model", "lstm", "--hidden-size", "512", "--embedding-dim",
               "256", "--time-budget", f"{seconds}s", "--eval-every", "1000000"]  # fmt: skip
    with open(tmp / "train.out", "w") as stdout, open(tmp / "train.err", "w") as stderr:
        returncode, peak = run_measured(command, stdout, stderr)
    if returncode:
        sys.exit((tmp / "train.err").read_text())
    steps = [m for m in read_metrics(tmp / "ck") if "tokens_per_second" in m]
    train_tokens = json.loads((tmp / "ds" / "meta.json").read_text())["train"]["tokens"]
    return {
        "model": "lstm 2x512, embedding 256, batch 32, bptt 64",
        "train_tokens_in_dataset": train_tokens,
        "train_bin_megabytes": round((tmp / "ds" / "train.bin").stat().st_size / 1e6, 1),
        "steps": steps[-1]["step"] if steps else 0,
        "tokens_per_second": round(sum(m["tokens_per_second"] for m in steps) / len(steps))
        if steps
        else 0,
        "peak_rss_megabytes": round(peak / 1e6, 1),
    }


if __name__ == "__main__":
    main()
