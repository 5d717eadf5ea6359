"""Kill a real training run with SIGKILL at random moments; after each kill the checkpoint must
load (best weights and the resume snapshot, checksums verified) and `--resume` must continue.

    python -m tests.kill_test --trials 20

The run saves at every update (--eval-every 1). Kills land at a random moment (start-up,
training, evaluation, saving); every other trial waits, after its random delay, for a file
being written beside the checkpoint and kills the run right then. tests/test_slow.py runs it
in CI.
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from arlm import checkpoint

MODEL = ["--hidden-size", "384", "--embedding-dim", "64", "--batch-size", "8", "--bptt", "16"]


def arlm(*args: object, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "arlm", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def check(out: Path) -> int:
    """Load everything a user would; return the step of the resume snapshot."""
    checkpoint.load(out)
    _, state = checkpoint.load_last(out)
    checkpoint.read_metrics(out)
    return state["counters"]["step"]


def trials(count: int, seed: int, folder: Path, log=print) -> dict:
    from tests.conftest import corpus_text

    rng = random.Random(seed)
    corpus = folder / "corpus.txt"
    corpus.write_text(corpus_text(400), encoding="utf-8")
    out = folder / "ck"
    first = arlm(
        "train", "--data", corpus, "--out", out, *MODEL, "--max-steps", 2, "--eval-every", 1
    )
    assert first.returncode == 0, first.stderr
    step, mid_write = check(out), 0
    for trial in range(count):
        process = subprocess.Popen(
            [sys.executable, "-m", "arlm", "train", "--resume", str(out), "--max-steps", "100000",
             "--eval-every", "1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait = rng.uniform(0.5, 4.0)
        time.sleep(wait)
        if trial % 2:  # every other trial: kill while a file is being written
            deadline = time.time() + 10
            while not list(out.glob(".*.tmp-*")) and time.time() < deadline:
                time.sleep(0.0005)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        leftovers = list(out.glob(".*.tmp-*"))  # a write the kill cut short
        mid_write += bool(leftovers)
        killed_at = check(out)
        assert killed_at >= step, (
            f"trial {trial}: the snapshot went back from {step} to {killed_at}"
        )
        resumed = arlm("train", "--resume", out, "--max-steps", killed_at + 1)
        assert resumed.returncode == 0, f"trial {trial}: resume failed: {resumed.stderr[-500:]}"
        step = check(out)
        assert step == killed_at + 1, f"trial {trial}: resumed to {step}, not {killed_at + 1}"
        assert not list(out.glob(".*.tmp-*")), "resume left a half-written file behind"
        log(
            f"trial {trial + 1}/{count}: killed after {wait:.2f}s at step {killed_at}"
            f"{' during a write' if leftovers else ''}; loads; resumed to step {step}"
        )
    return {"trials": count, "killed_during_a_write": mid_write, "final_step": step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="arlm-kill-") as tmp:
        summary = trials(args.trials, args.seed, Path(tmp))
    print(summary)


if __name__ == "__main__":
    main()
