"""Kill a real training run with SIGKILL at random moments; after each kill the checkpoint must
load (best weights and the resume snapshot, checksums verified) and `--resume` must continue.

    python -m tests.kill_test --trials 20

The run saves at every update (--eval-every 1), each snapshot written in the background while
training goes on. Even trials kill at a random moment (start-up, training, evaluation, saving).
Odd trials kill mid-write, every time: the run gets the test hook ARLM_TEST_PAUSE_WRITE
(arlm/formats.py), which stops each write with its new file written but not yet renamed into
place (training goes on until the next save waits for it); the trial lets a random number of
writes through, then kills the run at the next one. tests/test_slow.py runs it in CI.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from arlm import checkpoint
from arlm.formats import PAUSE_WRITE

MODEL = ["--hidden-size", "384", "--embedding-dim", "64", "--batch-size", "8", "--bptt", "16"]


def check(out: Path) -> int:
    """Load everything a user would; return the step of the resume snapshot."""
    checkpoint.load(out)
    _, state = checkpoint.load_last(out)
    checkpoint.read_metrics(out)
    return state["counters"]["step"]


def wait_for(flag: Path, process: subprocess.Popen, seconds: float = 120) -> None:
    """Wait until the run pauses in a write (it creates `flag`)."""
    deadline = time.time() + seconds
    while not flag.exists():
        assert process.poll() is None, f"the run ended (exit {process.returncode}) unpaused"
        assert time.time() < deadline, f"no write paused in {seconds:.0f}s"
        time.sleep(0.001)


def trials(count: int, seed: int, folder: Path, log=print) -> dict:
    from tests.conftest import corpus_text, run_arlm  # the runs not killed: in this process

    rng = random.Random(seed)
    corpus = folder / "corpus.txt"
    corpus.write_text(corpus_text(400), encoding="utf-8")
    out = folder / "ck"
    first = run_arlm(
        "train", "--data", corpus, "--out", out, *MODEL, "--max-steps", 2, "--eval-every", 1
    )
    assert first.code == 0, first.stderr
    step, mid_write = check(out), 0
    flag = folder / "mid-write"  # the hook creates it when a write pauses, and waits
    for trial in range(count):
        paused = trial % 2 == 1
        process = subprocess.Popen(
            [sys.executable, "-m", "arlm", "train", "--resume", str(out), "--max-steps", "100000",
             "--eval-every", "1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, PAUSE_WRITE: str(flag)} if paused else None,
        )  # fmt: skip
        try:
            if paused:
                passed = rng.randrange(12)  # writes let through before the one killed
                for _ in range(passed + 1):
                    flag.unlink(missing_ok=True)
                    wait_for(flag, process)
                moment = f"at write {passed + 1}"
            else:
                wait = rng.uniform(0.5, 4.0)
                time.sleep(wait)
                moment = f"after {wait:.2f}s"
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=60)
        flag.unlink(missing_ok=True)
        leftovers = list(out.glob(".*.tmp-*"))  # a write the kill cut short
        assert leftovers or not paused, f"trial {trial}: killed mid-write, but no file was"
        mid_write += bool(leftovers)
        killed_at = check(out)
        assert killed_at >= step, (
            f"trial {trial}: the snapshot went back from {step} to {killed_at}"
        )
        resumed = run_arlm("train", "--resume", out, "--max-steps", killed_at + 1)
        assert resumed.code == 0, f"trial {trial}: resume failed: {resumed.stderr[-500:]}"
        step = check(out)
        assert step == killed_at + 1, f"trial {trial}: resumed to {step}, not {killed_at + 1}"
        assert not list(out.glob(".*.tmp-*")), "resume left a half-written file behind"
        log(
            f"trial {trial + 1}/{count}: killed {moment} at step {killed_at}"
            f"{' while writing ' + leftovers[0].name if leftovers else ''}; loads; "
            f"resumed to step {step}"
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
