"""`arlm embed`: word2vec vectors of a dataset's tokens (arlm.embed), saved, and the nearest
pieces to a piece by cosine similarity."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from arlm import data, embed
from arlm.commands._shared import stdout_console
from arlm.errors import ArlmError, UsageError
from arlm.tokenizer import SPACE, Tokenizer


def piece_id(tokenizer: Tokenizer, piece: str) -> int:
    """The id of `piece`, written as the piece (a leading space may be ' ' or U+2581) or as
    text that encodes to one id."""
    for spelling in (piece, piece.replace(" ", SPACE)):
        index = tokenizer.sp.piece_to_id(spelling)
        if tokenizer.sp.id_to_piece(index) == spelling:
            return index
    ids = tokenizer.encode(piece)
    if len(ids) == 1:
        return ids[0]
    shown = " ".join(tokenizer.sp.id_to_piece(i) for i in ids)
    raise UsageError(f"{piece!r} is not one piece (it encodes to {shown}): give one of those")


def run(
    *,
    data_path: Path,
    method: str,
    dim: int,
    window: int,
    negatives: int,
    epochs: float,
    lr: float,
    seed: int,
    out: Path,
    embeddings: Path | None,
    neighbors: list[str] | None,
    count: int,
    force: bool,
    console: Console,
) -> None:
    """`arlm embed`: vectors trained and saved (or read from --embeddings), and the nearest
    pieces of each --neighbors piece in a table on stdout."""
    folder = Path(data_path)
    meta = data.load_meta(folder)
    tokenizer = Tokenizer.load(folder)
    wanted = [piece_id(tokenizer, p) for p in neighbors or []]  # refuse typos up front
    if count < 1:
        raise UsageError(f"--count must be positive, got {count}")
    if embeddings is not None:
        vectors, facts = embed.load(embeddings)
        if facts.get("tokenizer_sha256") != meta["tokenizer"]["sha256"]:
            raise UsageError(f"{embeddings} was trained on another tokenizer than {folder}'s")
    else:
        out = Path(out)
        if (out.exists() or out.is_symlink()) and not _ours(out):
            raise UsageError(
                f"--out {out}: that is not an embeddings file arlm wrote, and --force replaces "
                "only those; choose another --out"
            )
        if out.exists() and not force:
            raise UsageError(f"{out} exists: pass --force to replace it, or choose another --out")
        if not out.parent.is_dir():
            raise UsageError(f"--out {out}: its folder does not exist")
        ids = data.open_ids(folder, "train")

        def progress(step: int, loss: float) -> None:
            if step % 500 == 0:
                console.print(f"step {step} loss {loss:.3f}", highlight=False)

        vectors, outputs, facts = embed.train(
            ids, meta["vocab_size"], method, dim, window, negatives,
            epochs, lr=lr, seed=seed, progress=progress,
        )  # fmt: skip
        embed.save(out, vectors, outputs, facts, meta["tokenizer"]["sha256"])
        console.print(
            f"{facts['method']}: {vectors.shape[0]:,} vectors of {facts['dim']} in "
            f"{facts['seconds']}s ({facts['steps']:,} steps, loss {facts['final_loss']:.3f}) "
            f"-> {out}",
            highlight=False,
        )
    for index in wanted:
        table = Table(title=f"nearest to {tokenizer.sp.id_to_piece(index)!r}", title_justify="left")
        for name in ("rank", "piece", "id", "cosine"):
            table.add_column(name, justify="left" if name == "piece" else "right")
        for rank, (other, similarity) in enumerate(embed.neighbors(vectors, index, count), 1):
            table.add_row(
                str(rank), repr(tokenizer.sp.id_to_piece(other)), str(other), f"{similarity:.3f}"
            )
        stdout_console().print(table)


def _ours(path: Path) -> bool:
    """Is `path` an embeddings file `arlm embed` wrote (a file, not a link, whole, its kind)?"""
    if not path.is_file() or path.is_symlink():
        return False
    try:
        embed.load(path)
    except ArlmError:
        return False
    return True
