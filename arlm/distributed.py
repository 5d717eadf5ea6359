"""Data-parallel training on PyTorch's own engine (torch.distributed, DistributedDataParallel).

`torchrun --nproc_per_node=N -m arlm train ...` (or `arlm train --nproc N`, which runs it)
starts N processes. Each owns a disjoint slice of the B parallel streams (B/N rows of the
training text), DDP averages the gradients, so N processes take the same updates as one with
all B streams. Rank 0 alone evaluates (and tells the others the result), writes checkpoints,
metrics and plots. Every stopping decision is taken together, so no rank waits forever.
gloo on CPUs, nccl on GPUs.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from arlm.errors import UsageError


@dataclass
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def from_environment(device: torch.device) -> World:
    """Join the process group torchrun set up (WORLD_SIZE > 1), or run alone."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return World(dist.get_rank(), dist.get_world_size())


def check_split(batch_size: int, processes: int) -> None:
    """The streams must share out evenly over the processes."""
    if processes < 1:
        raise UsageError(f"--nproc must be positive, got {processes}")
    if batch_size % processes:
        raise UsageError(
            f"--batch-size {batch_size} does not split over {processes} processes: give a "
            "multiple of the process count"
        )


def check_dataset(path: Path) -> None:
    """The processes read one dataset folder (a text file would be tokenized by each)."""
    if not Path(path).is_dir():
        raise UsageError("several processes train on a dataset folder: run `arlm tokenize` first")


def _wire(tensor: torch.Tensor) -> torch.Tensor:
    """Where the backend can send `tensor` from: nccl sends GPU memory only."""
    return tensor.cuda() if dist.get_backend() == "nccl" else tensor


def total(world: World, values: list[float]) -> list[float]:
    """The sums of `values` over the ranks (on every rank)."""
    if not world.active:
        return values
    tensor = _wire(torch.tensor(values, dtype=torch.float64))
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def highest(world: World, value: int) -> int:
    """The largest `value` of any rank (on every rank)."""
    if not world.active:
        return value
    tensor = _wire(torch.tensor([value]))
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return int(tensor.item())


def share(world: World, value: float) -> float:
    """Rank 0's `value`, on every rank."""
    if not world.active:
        return value
    tensor = _wire(torch.tensor([value], dtype=torch.float64))
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


def gather(world: World, tensor: torch.Tensor, dim: int) -> torch.Tensor:
    """Every rank's `tensor`, joined along `dim` in rank order (on every rank)."""
    if not world.active:
        return tensor
    wired = _wire(tensor.contiguous())
    parts = [torch.empty_like(wired) for _ in range(world.size)]
    dist.all_gather(parts, wired)
    return torch.cat(parts, dim=dim).to(tensor.device)


def finish(world: World) -> None:
    """Wait for every rank, then leave the process group: after the DDP wrapper, which holds
    the group and sits in a reference cycle with its trainer, has been collected."""
    if world.active and dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def launch(nproc: int, argv: list[str], echo: Callable[[str], None]) -> int:
    """Run `arlm ARGV` as `nproc` processes under torchrun; return its exit code. What they
    write to stderr goes to `echo`, line by line, except what torchrun adds after an error
    line (its own traceback of the failed ranks); each rank's error line goes once: an error
    stays one line."""
    import subprocess
    import tempfile

    threads = str(max(1, (os.cpu_count() or 1) // nproc))  # the cores, shared out
    environment = {"OMP_NUM_THREADS": threads, **os.environ}
    # torchrun's own folder of logs (without --log-dir, one more torchelastic_* left in /tmp)
    with tempfile.TemporaryDirectory(prefix="arlm-torchrun-", ignore_cleanup_errors=True) as logs:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   f"--nproc_per_node={nproc}", "--log-dir", logs, "-m", "arlm", *argv]  # fmt: skip
        process = subprocess.Popen(command, env=environment, stderr=subprocess.PIPE, text=True,
                                   errors="replace")  # fmt: skip
        said: set[str] = set()
        for line in process.stderr:
            if line.startswith("error:") and line not in said:
                said.add(line)
                echo(line)
            elif not said:
                echo(line)
        return process.wait()


def my_share(world: World, rows, dim: int):
    """This process's share of the streams along `dim` (a view: nothing is copied)."""
    if not world.active:
        return rows
    share = rows.shape[dim] // world.size
    index = [slice(None)] * rows.ndim
    index[dim] = slice(world.rank * share, (world.rank + 1) * share)
    return rows[tuple(index)]
