"""`arlm export`: a checkpoint's language model as an ONNX graph of one generation step
(arlm.export), written atomically beside the checkpoint or to --out."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from arlm.commands._shared import load
from arlm.errors import UsageError
from arlm.export import state_names, to_onnx, written_by_arlm
from arlm.formats import atomic_write


def run(
    *, checkpoint: Path, out: Path | None, format: str, console: Console, force: bool = False
) -> None:
    if format != "onnx":
        raise UsageError(f"--format must be onnx, got {format!r}")
    folder = Path(checkpoint)
    out = Path(out) if out is not None else folder.parent / f"{folder.resolve().name}.onnx"
    if out.is_dir() or not out.parent.is_dir():
        raise UsageError(f"--out {out}: give a file's path, in a folder that exists")
    if Path(checkpoint).resolve() in out.resolve().parents:
        raise UsageError(f"--out {out} is in the checkpoint folder: write it elsewhere")
    if out.exists() and not written_by_arlm(out):
        raise UsageError(
            f"{out} exists and arlm export did not write it, which it never replaces (even with "
            "--force): choose another --out"
        )
    if out.exists() and not force:
        raise UsageError(f"{out} exists: pass --force to replace it, or choose another --out")
    loaded = load(checkpoint, "cpu")
    atomic_write(out, lambda path: to_onnx(loaded.model, path))
    names = ", ".join(state_names(loaded.model))
    console.print(
        f"{out}: token (B,) and {names} in; logits (B, {loaded.model.config.vocab_size}) and the "
        f"state after the token out; tokenizer: {Path(checkpoint) / 'tokenizer.model'}",
        highlight=False,
    )
