"""One long token stream as B parallel rows, and the TBPTT windows training reads from them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from arlm.errors import UsageError


def batchify(ids: np.ndarray, batch_size: int) -> np.ndarray:
    """Cut a 1-D stream into `batch_size` contiguous rows, dropping the ragged tail.

        a b c d e f g          each row is read left to right, and the hidden
        g h i j k l m          state of row b carries on from one window to the
        m n o p q r s          next, so row b must stay row b in every batch.

    Rows overlap by one token (the last id of a row is the first of the next), so every id
    but the very first is a target exactly once. Returns a (batch_size, L + 1) view of `ids`:
    nothing is copied, and a memory map stays on disk.
    """
    length = (len(ids) - 1) // batch_size
    if length < 1:
        raise UsageError(
            f"{len(ids)} tokens are too few for {batch_size} streams: lower --batch-size"
        )
    step = ids.strides[0]
    return np.lib.stride_tricks.as_strided(
        ids, shape=(batch_size, length + 1), strides=(length * step, step), writeable=False
    )


@dataclass
class Window:
    """One TBPTT update: `inputs` and `targets` are (B, T) int64, targets shifted by one.

    Only targets from column `loss_start` on count in the loss (with k2 > k1 the window reaches
    back k2 - k1 tokens before them). The next window starts at column `carry` of this one: the
    state there is the one to carry on.
    """

    inputs: np.ndarray
    targets: np.ndarray
    loss_start: int
    carry: int
    position: int  # column of `rows` where the counted targets start


def windows(rows: np.ndarray, k1: int, k2: int | None = None, start: int = 0) -> Iterator[Window]:
    """TBPTT windows over `rows` from column `start`: every k1 tokens, an update that reads the
    last k2 (>= k1) tokens and counts the loss of the last k1 targets only, so each target is
    trained on once per pass. Each window is a small copy; the corpus never is."""
    k2 = k2 or k1
    if not 1 <= k1 <= k2:
        raise UsageError(f"need 1 <= k1 <= k2, got k1={k1}, k2={k2}")
    length = rows.shape[1] - 1
    for position in range(start, length, k1):
        begin = max(0, position - (k2 - k1))
        end = min(position + k1, length)
        next_begin = max(0, position + k1 - (k2 - k1))
        block = np.array(rows[:, begin : end + 1], dtype=np.int64)  # a copy, always writable
        carry = min(next_begin - begin, end - begin)
        yield Window(block[:, :-1], block[:, 1:], position - begin, carry, position)
