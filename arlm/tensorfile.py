"""Checksummed tensor files: safetensors with a JSON `meta` beside the tensors and a SHA-256 of
both, checked on every read (safetensors itself would load a flipped byte silently), written
all at once or not at all (formats.atomic_write). Checkpoints and embeddings are such files;
nothing is ever unpickled."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from arlm.errors import ArlmError
from arlm.formats import atomic_write


def digest(tensors: dict[str, torch.Tensor], meta: str) -> str:
    """SHA-256 of `meta` and of every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(meta.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Tensors (copied to the CPU, each its own storage) and a JSON `meta`, checksummed."""
    write_cpu_tensors(path, on_cpu(tensors), meta)


def on_cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Copies on the CPU, each its own storage (safetensors refuses shared ones)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}


def write_cpu_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """CPU tensors that nothing else holds, and a JSON `meta`, checksummed."""
    text = json.dumps(meta)
    metadata = {"arlm": text, "sha256": digest(tensors, text)}
    # serialized here and written by Python, whose writes report a full disk: safetensors'
    # own save_file does not (it "succeeds" on /dev/full)
    blob = save(tensors, metadata=metadata)
    atomic_write(Path(path), lambda p: p.write_bytes(blob))


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and meta of a file `write_tensors` wrote; anything else, damaged in any
    way, is refused with one message."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as file:
            metadata = file.metadata() or {}
            tensors = {name: file.get_tensor(name) for name in file.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        reason = str(error).splitlines()[0][:120] if str(error) else error.__class__.__name__
        raise ArlmError(
            f"{path} is damaged or not a weights file ({reason}): restore or retrain"
        ) from None
    if "sha256" not in metadata or "arlm" not in metadata:
        raise ArlmError(f"{path} was not written by arlm (no checksum): give an arlm checkpoint")
    if digest(tensors, metadata["arlm"]) != metadata["sha256"]:
        raise ArlmError(f"{path} is corrupt (its checksum does not match): restore or retrain")
    return tensors, json.loads(metadata["arlm"])
