"""Data parallel on PyTorch's engine: 2 processes (gloo, CPU) with B/2 streams each take the
same updates as 1 process with B streams, only rank 0 writes, and resume works across world
sizes. Each test starts real processes through torchrun."""

import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from arlm import checkpoint
from tests.conftest import make_char_dataset

pytestmark = pytest.mark.slow

COMMON = ["--hidden-size", "16", "--embedding-dim", "8", "--batch-size", "4", "--dropout", "0",
          "--precision", "fp32", "--eval-every", "6", "--k1", "8", "--k2", "12"]  # fmt: skip


def arlm(*args) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "arlm", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result


def weights(folder) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(str(folder / checkpoint.LAST)).items()}


def close(a: dict, b: dict, prefix: str = "model.") -> None:
    names = sorted(name for name in a if name.startswith(prefix))
    assert names and names == sorted(name for name in b if name.startswith(prefix)), prefix
    for name in names:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-5, msg=name)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_char_dataset(tmp_path_factory.mktemp("ddp"), 300)


def test_two_processes_equal_one_and_resume_across_world_sizes(dataset, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    arlm("train", "--data", dataset, "--out", one, *COMMON, "--max-steps", 12)
    run = arlm("train", "--data", dataset, "--out", two, *COMMON, "--max-steps", 12, "--nproc", 2)
    assert "Traceback" not in run.stderr and "destroy_process_group" not in run.stderr
    a, b = weights(one), weights(two)
    close(a, b)  # the same updates
    close(a, b, prefix="trainer.carried")  # the streams' states, gathered in rank order
    assert sorted(p.name for p in one.iterdir()) == sorted(p.name for p in two.iterdir())
    losses = [
        [m["val_loss"] for m in checkpoint.read_metrics(f) if "val_loss" in m] for f in (one, two)
    ]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    # go on: the 2-process run in 1 process, the 1-process run in 2
    arlm("train", "--resume", two, "--max-steps", 18)
    arlm("train", "--resume", one, "--max-steps", 18, "--nproc", 2)
    straight = tmp_path / "straight"
    arlm("train", "--data", dataset, "--out", straight, *COMMON, "--max-steps", 18)
    close(weights(straight), weights(one))
    close(weights(straight), weights(two))


def test_a_batch_that_does_not_split_is_refused_before_starting(dataset, tmp_path):
    command = [sys.executable, "-m", "arlm", "train", "--data", str(dataset), "--out",
               str(tmp_path / "x"), "--batch-size", "5", "--nproc", "2"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "does not split over 2 processes" in result.stderr
    assert result.stderr.count("\n") == 1 and not (tmp_path / "x").exists()


def test_an_error_in_the_ranks_is_one_line_not_torchruns_traceback(dataset, tmp_path):
    """Each rank refuses (here: --out holds a checkpoint) with arlm's line; `--nproc` passes it
    on once and leaves out the traceback torchrun prints of the ranks that failed."""
    out = tmp_path / "held"
    arlm("train", "--data", dataset, "--out", out, *COMMON, "--max-steps", 2)
    command = [sys.executable, "-m", "arlm", "train", "--data", str(dataset), "--out", str(out),
               *COMMON, "--max-steps", "2", "--nproc", "2"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "holds a checkpoint" in lines[0], result.stderr[-2000:]
