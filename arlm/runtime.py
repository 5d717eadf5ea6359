"""Where and how a model runs: the device, the number format (autocast), and the process's
memory settings. Training, scoring and generation all ask here, so `--device` and
`--precision` mean the same in every command.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util

import torch

from arlm.errors import UsageError

# -- devices and precision --------------------------------------------------------------------


def pick_device(name: str) -> torch.device:
    """auto: CUDA, then Apple's MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available here; use --device cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UsageError("--device mps: no Apple GPU is available here; use --device cpu")
    if name not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device must be auto, cpu, cuda or mps, got {name!r}")
    return torch.device(name)


def pick_precision(name: str, device: torch.device) -> torch.dtype:
    """auto: bf16 autocast where the hardware has it (fp32 master weights), else fp32 or fp16."""
    if name == "auto":
        if device.type == "cpu":
            fast = (
                torch.backends.mkldnn.is_available()
                and torch.ops.mkldnn._is_mkldnn_bf16_supported()
            )
            return torch.bfloat16 if fast else torch.float32
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if name == "fp16" and device.type == "cpu":
        raise UsageError("--precision fp16 has no fast path on a CPU: use bf16 or fp32")
    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if name not in table:
        raise UsageError(f"--precision must be auto, fp32, bf16 or fp16, got {name!r}")
    return table[name]


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


# -- memory ----------------------------------------------------------------------------------
# Keep freed memory in the process instead of handing it back to the OS.
#
# A training step allocates and frees the same large buffers every time (activations, logits
# blocks, gradients). glibc serves big requests with mmap and unmaps them on free, so the next
# step page-faults all of it back in: a textbook word-level trainer spent ~27% of its time in the
# kernel here, and the same step ran 1.5x faster with memory kept (docs/ARCHITECTURE.md,
# "Memory"). Telling malloc never to use mmap and never to trim the heap does that, for this
# process only.

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_MAX = -4

_done = False


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse. Returns whether it took effect
    (False on other C libraries and systems, where nothing changes)."""
    global _done
    if _done:
        return True
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 2**30) == 1
    except (OSError, AttributeError):
        return False
    _done = ok
    return ok
