"""Who speaks this speech? A labelled corpus made from tinyshakespeare for `--task classify`:
each speech ("NAME:" and the lines after it, up to a blank line) of its training text labelled
with its speaker, for the speakers with the most speeches. (Its validation text is other plays,
with other characters: `arlm tokenize --task classify` holds out a random tenth instead.)

    python -m bench.speakers FILE.tsv [--speakers 6]
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

SHAKESPEARE = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare"


def speeches(path: Path) -> list[tuple[str, str]]:
    """(speaker, speech) for each block of the text, its lines joined by spaces."""
    found = []
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        head, _, body = block.strip("\n").partition("\n")
        if head.endswith(":") and body.strip():
            found.append((head[:-1].strip(), " ".join(body.split())))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--speakers", type=int, default=6)
    args = parser.parse_args()
    if not SHAKESPEARE.is_dir():
        raise SystemExit(f"{SHAKESPEARE} is absent: the corpus lives in ../shared/data")
    train = speeches(SHAKESPEARE / "train.txt")
    kept = {name for name, _ in collections.Counter(s for s, _ in train).most_common(args.speakers)}
    rows = [(s, text) for s, text in train if s in kept]
    args.out.write_text("".join(f"{s}\t{text}\n" for s, text in rows), encoding="utf-8")
    counts = collections.Counter(s for s, _ in rows)
    print(len(rows), "speeches:", ", ".join(f"{k} {v}" for k, v in counts.most_common()))


if __name__ == "__main__":
    main()
