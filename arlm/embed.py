"""word2vec (Mikolov et al. 2013) on a dataset's token stream, with negative sampling.

Two vectors per token: v (input, "as a centre") and u (output, "as a context"). For a centre
c and a true context o, and k tokens n_1..n_k drawn from the unigram distribution raised to
3/4, the loss is

    -log sigmoid(u_o . h) - sum_i log sigmoid(-u_{n_i} . h)

where h = v_c for skip-gram (the centre predicts each context token) and h = the mean of the
context tokens' v for CBOW (the context predicts the centre, o = c). Frequent tokens are
subsampled, and the window is drawn from 1..W for each centre, both as in the original.

The input vectors v are the embeddings: `arlm embed --neighbors` ranks them by cosine
similarity, and `arlm train --init-embeddings` starts a model's input layer from them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from arlm.errors import ArlmError, UsageError
from arlm.tensorfile import read_tensors, write_tensors

METHODS = ("skipgram", "cbow")


def negative_sampling_loss(
    h: torch.Tensor,
    positive: torch.Tensor,
    negatives: torch.Tensor,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over rows of -log s(u_o . h) - sum_i log s(-u_n_i . h): h (N, D), positive
    (N, D), negatives (N, k, D); where `keep` (N, k) is false, that negative's term is left out."""
    true = F.logsigmoid((h * positive).sum(-1))
    false = F.logsigmoid(-(negatives @ h[:, :, None])[..., 0])  # (N, k)
    if keep is not None:
        false = torch.where(keep, false, 0.0)
    return -(true + false.sum(-1)).mean()


def keep_mask(ids: np.ndarray, vocab: int, threshold: float, rng) -> np.ndarray:
    """Subsampling: keep a token of frequency f with probability min(1, sqrt(t / f) + t / f)."""
    freq = np.bincount(ids, minlength=vocab) / max(1, len(ids))
    ratio = threshold / np.maximum(freq[ids], 1e-12)
    return rng.random(len(ids)) < np.minimum(1.0, np.sqrt(ratio) + ratio)


def context_table(ids: np.ndarray, window: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """For each position: the ids within a window drawn from 1..`window` on each side
    (N, 2 * window), and a mask of which of them count."""
    n = len(ids)
    reach = rng.integers(1, window + 1, size=n)
    offsets = np.concatenate([np.arange(-window, 0), np.arange(1, window + 1)])
    where = np.arange(n)[:, None] + offsets[None, :]
    mask = (np.abs(offsets)[None, :] <= reach[:, None]) & (where >= 0) & (where < n)
    return ids[np.clip(where, 0, n - 1)], mask


class Word2Vec(torch.nn.Module):
    def __init__(self, vocab: int, dim: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.v = torch.nn.Embedding(vocab, dim, sparse=True)
        self.u = torch.nn.Embedding(vocab, dim, sparse=True)
        with torch.no_grad():
            self.v.weight.uniform_(-0.5 / dim, 0.5 / dim, generator=g)
            self.u.weight.zero_()

    def loss(
        self,
        contexts: torch.Tensor,
        mask: torch.Tensor,
        targets: torch.Tensor,
        negatives: torch.Tensor,
    ) -> torch.Tensor:
        """The loss of N examples: h is the mean of v over the ids of contexts (N, C) where
        mask (N, C) is true (one id for skip-gram), the positive is u of targets (N,), the
        negatives u of negatives (N, k), and a negative equal to its positive is skipped, as
        word2vec.c does (`if (target == word) continue;`)."""
        # Only the ids that count are looked up: SparseAdam moves every row that has a gradient,
        # a zero one too (by its momentum), so masked-out slots must not reach it.
        counts = mask.sum(1)
        offsets = torch.cumsum(counts, 0) - counts
        h = F.embedding_bag(contexts[mask], self.v.weight, offsets, mode="mean", sparse=True)
        keep = negatives != targets[:, None]
        return negative_sampling_loss(h, self.u(targets), self.u(negatives), keep)


def train(
    ids: np.ndarray,
    vocab: int,
    method: str = "skipgram",
    dim: int = 100,
    window: int = 5,
    negatives: int = 5,
    epochs: float = 1.0,
    batch_size: int = 1024,
    lr: float = 0.01,
    subsample: float = 1e-3,
    seed: int = 0,
    progress: Callable[[int, float], None] = lambda step, loss: None,
) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Train word2vec on a token stream; returns (input vectors, output vectors, facts)."""
    if method not in METHODS:
        raise UsageError(f"--method must be skipgram or cbow, got {method!r}")
    for name, value in (("dim", dim), ("window", window), ("negatives", negatives)):
        if value < 1:
            raise UsageError(f"--{name} must be positive, got {value}")
    if not 0 < epochs < math.inf:  # nan fails both comparisons
        raise UsageError(f"--epochs must be a finite positive number, got {epochs}")
    if not 0 < lr < math.inf:
        raise UsageError(f"--lr must be a finite positive number, got {lr}")
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) < 2 * window + 2:
        raise UsageError(f"the training text has {len(ids)} tokens: too few for --window {window}")
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    model = Word2Vec(vocab, dim, seed)
    optimizer = torch.optim.SparseAdam(list(model.parameters()), lr=lr)
    noise = torch.from_numpy(np.bincount(ids, minlength=vocab).astype(np.float64) ** 0.75)
    started, step, losses = time.perf_counter(), 0, []
    passes = int(np.ceil(epochs))
    for epoch in range(passes):
        kept = ids[keep_mask(ids, vocab, subsample, rng)] if subsample else ids
        contexts, mask = context_table(kept, window, rng)
        if method == "skipgram":  # one example per (centre, context) pair
            rows, cols = np.nonzero(mask)
            inputs, valid = kept[rows, None], np.ones((len(rows), 1), dtype=bool)
            targets = contexts[rows, cols]
        else:  # one example per centre with a context (subsampling may leave one alone)
            rows = np.flatnonzero(mask.any(1))
            inputs, valid, targets = contexts[rows], mask[rows], kept[rows]  # (N, 2W) twice
        order = rng.permutation(len(targets))
        if epoch == passes - 1 and epochs % 1:
            order = order[: int(len(order) * (epochs % 1))]
        for start in range(0, len(order), batch_size):
            pick = order[start : start + batch_size]
            drawn = torch.multinomial(noise, len(pick) * negatives, replacement=True)
            batch = (torch.from_numpy(a[pick]) for a in (inputs, valid, targets))
            loss = model.loss(*batch, drawn.view(len(pick), negatives))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            losses.append(loss.item())
            if step % 100 == 0:
                progress(step, float(np.mean(losses[-100:])))
    facts = {
        "method": method,
        "dim": dim,
        "window": window,
        "negatives": negatives,
        "epochs": epochs,
        "steps": step,
        "final_loss": float(np.mean(losses[-100:])) if losses else None,
        "seconds": round(time.perf_counter() - started, 2),
    }
    return model.v.weight.detach().clone(), model.u.weight.detach().clone(), facts


def save(path: Path, vectors: torch.Tensor, outputs: torch.Tensor, facts: dict, sha: str) -> None:
    meta = {"kind": "embeddings", "tokenizer_sha256": sha, **facts}
    write_tensors(path, {"input": vectors, "output": outputs}, meta)


def load(path: Path) -> tuple[torch.Tensor, dict]:
    """The input vectors of an embeddings file and its facts."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path} does not exist: make it with `arlm embed --data DIR --out FILE`")
    tensors, meta = read_tensors(path)
    if meta.get("kind") != "embeddings" or "input" not in tensors:
        raise ArlmError(f"{path} is not an arlm embeddings file: make one with `arlm embed`")
    return tensors["input"], meta


def neighbors(vectors: torch.Tensor, index: int, count: int = 10) -> list[tuple[int, float]]:
    """The `count` tokens nearest to `index` by cosine similarity, nearest first."""
    unit = F.normalize(vectors.float(), dim=-1)
    similarity = unit @ unit[index]
    similarity[index] = -2.0  # not itself
    best = torch.topk(similarity, min(count, len(similarity) - 1))
    return list(zip(best.indices.tolist(), best.values.tolist(), strict=True))


def init_embeddings(model, path: Path, tokenizer_sha: str) -> None:
    """Copy an embeddings file into the model's input layer (same tokenizer, same sizes)."""
    vectors, meta = load(path)
    if not model.has_input_layer or model.config.input != "embedding":
        raise UsageError(
            "--init-embeddings needs a model with an embedding input layer "
            "(not --input one-hot, ngram or hmm)"
        )
    weight = model.input.weight
    if meta.get("tokenizer_sha256") != tokenizer_sha:
        raise UsageError(f"{path} was trained on another tokenizer than this dataset's")
    if tuple(vectors.shape) != tuple(weight.shape):
        raise UsageError(
            f"{path} holds {vectors.shape[0]} vectors of {vectors.shape[1]} dimensions; the "
            f"model needs {weight.shape[0]} of {weight.shape[1]}: pass --embedding-dim "
            f"{vectors.shape[1]}"
        )
    with torch.no_grad():
        weight.copy_(vectors)
