"""Mapping sources to targets with a sequence-to-sequence model (models.seq2seq): greedy or
sampled decoding (sequences.decode, each token chosen by the shared sampler's `pick`), beam
search (sample.beam_search), and how well outputs match references: exact match, chrF and
BLEU (sacrebleu)."""

from __future__ import annotations

import functools

import numpy as np
import torch

from arlm import sequences as seqs
from arlm.errors import ArlmError
from arlm.models import device_of
from arlm.models.seq2seq import Seq2Seq
from arlm.sample import beam_search, check_sampling, pick


def encode(tokenizer, texts: list[str], where: list[str] | None = None) -> list[np.ndarray]:
    """Each text's ids; one that encodes to no token is refused, with its place if known."""
    ids = [np.asarray(tokenizer.encode(text), dtype=np.int64) for text in texts]
    for i, row in enumerate(ids):
        if not len(row):
            place = f"{where[i]}: " if where else ""
            raise ArlmError(f"{place}{texts[i]!r} encodes to no token: give some text")
    return ids


def longest_output(config: dict) -> int:
    """How many tokens a decoding may take: twice the longest training target, and 8 more."""
    return 2 * config["data"]["longest_target"] + 8


def decode(
    model: Seq2Seq,
    sources: list,
    bos: int,
    eos: int,
    max_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """Each source's output ids (</s> left out), at most `max_tokens`: greedy at temperature
    0, else each token drawn as `arlm generate` draws it."""
    check_sampling(temperature, top_k, top_p)
    chooser = functools.partial(
        pick, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
    )
    return seqs.decode(model, sources, bos, eos, max_tokens, chooser)


def beam(
    model: Seq2Seq, source, bos: int, eos: int, max_tokens: int, width: int, penalty: float = 1.0
) -> list[int]:
    """The output of one source that beam search of `width` finds (</s> left out)."""
    ids = torch.as_tensor(np.asarray(source, dtype=np.int64))[None].to(device_of(model))
    conditioned = model.conditioned(ids, torch.tensor([len(source)]))
    found, _ = beam_search(conditioned, [bos], max_tokens, width, {eos}, penalty)
    return found[:-1] if found and found[-1] == eos else found


def metrics(outputs: list[str], references: list[str], sources: list[str]) -> dict:
    """Exact match (the share of outputs equal to their reference), chrF and BLEU (sacrebleu's
    corpus scores, 0 to 100), and exact match by source length, in thirds of the pairs: where
    a context vector of fixed size runs short, the long thirds fall behind."""
    import sacrebleu  # only where scores are computed: it takes a while to import

    exact = np.array([o == r for o, r in zip(outputs, references, strict=True)])
    lengths = np.array([len(s) for s in sources])
    order = np.argsort(lengths, kind="stable")
    thirds = [part for part in np.array_split(order, 3) if len(part)]
    return {
        "pairs": len(outputs),
        "exact_match": float(exact.mean()) if len(exact) else 0.0,
        "chrf": float(sacrebleu.corpus_chrf(outputs, [references]).score),
        "bleu": float(sacrebleu.corpus_bleu(outputs, [references]).score),
        "by_source_length": [
            {
                "chars": [int(lengths[part].min()), int(lengths[part].max())],
                "pairs": len(part),
                "exact_match": float(exact[part].mean()),
            }
            for part in thirds
        ],
    }
