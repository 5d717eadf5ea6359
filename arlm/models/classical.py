"""Classical autoregressive models on the same token ids and behind the same interface as the
recurrent ones (`logits, state = model(ids, state)`), so that train, generate, eval and compare
treat them alike:

- NGramLM: counts of n-grams with interpolated Kneser-Ney smoothing; its state is the last
  N - 1 tokens. "Training" is counting (seconds).
- HMMLM: a hidden Markov model; its state is the distribution of the hidden state given the
  text so far (the forward algorithm, rescaled at every step so it never underflows). It trains
  by gradient on the log-likelihood with the same TBPTT trainer as the neural models.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from arlm.errors import UsageError
from arlm.models.base import LanguageModel, ModelConfig, State, Stepper, register


class ClassicalLM(LanguageModel):
    """What the classical models share: the batch first in their state."""

    family = "classical"
    state_batch_dims: tuple[int, ...] = (0,)


# -- n-grams ----------------------------------------------------------------------------------


def gram_keys(seq: np.ndarray, n: int, base: int) -> np.ndarray:
    """The key of every n-gram of `seq` (int64): the n ids read as digits in `base`."""
    keys = np.zeros(len(seq) - n + 1, dtype=np.int64)
    for j in range(n):
        keys = keys * base + seq[j : len(seq) - n + 1 + j]
    return keys


BLOCK_ENTRIES = 1 << 21  # (rows x V) table entries read at once: ~100 MB of index arrays


@register("ngram")
class NGramLM(ClassicalLM):
    """Interpolated Kneser-Ney (Chen & Goodman 1998, with one discount per order):

        P_n(w | h) = max(c_n(h w) - D_n, 0) / c_n(h) + D_n N1+(h .) / c_n(h) * P_{n-1}(w | h')

    where h' is h without its first token, c_N are plain counts for the highest order and, for
    lower orders, continuation counts c_n(h w) = N1+(. h w): how many different tokens precede
    h w. A context never seen hands all its mass to the order below; below the unigram is the
    uniform distribution, so every token, seen or not, has a finite probability.

    All the counts live in buffers of sorted int64 keys (n ids as digits in base V + 1; the
    extra digit V marks "before the text"): lookups are binary searches, vectorized. numpy
    reads them, so they stay on the CPU whatever device the model is sent to (see `_apply`).
    """

    counted = True

    @classmethod
    def check_config(cls, config: ModelConfig) -> None:
        super().check_config(config)
        if config.order < 1:
            raise UsageError(f"--order must be at least 1, got {config.order}")

    @classmethod
    def describe(cls, config: ModelConfig) -> str:
        return f"ngram N={config.order}"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.base = config.vocab_size + 1
        self.bos = config.vocab_size  # the digit for "before the text"
        if self.base**config.order >= 2**62:  # known once the vocabulary is: here, not in check
            largest = int(62 / math.log2(self.base))
            raise UsageError(
                f"--order {config.order} is too long for a vocabulary of {config.vocab_size}: "
                f"use at most {largest}"
            )
        for n in range(1, config.order + 1):
            self.register_buffer(f"keys{n}", torch.zeros(0, dtype=torch.int64))
            self.register_buffer(f"counts{n}", torch.zeros(0, dtype=torch.int64))
        self.register_buffer("discounts", torch.full((config.order,), 0.5, dtype=torch.float64))
        self._tables: list[dict] | None = None

    # -- counting ----------------------------------------------------------------------------

    def fit(self, ids: np.ndarray) -> None:
        """Count the n-grams of `ids` (one stream, the text before it unknown)."""
        N = self.config.order
        seq = np.concatenate([np.full(N - 1, self.bos), np.asarray(ids, dtype=np.int64)])

        def grams(n: int) -> np.ndarray:  # the n-grams that end at a token of `ids`
            return gram_keys(seq, n, self.base)[N - n :]

        for n in range(1, N + 1):
            if n == N:  # plain counts
                keys, counts = np.unique(grams(n), return_counts=True)
            else:  # continuation counts: distinct (n+1)-grams that end in this n-gram
                keys, counts = np.unique(np.unique(grams(n + 1)) % self.base**n, return_counts=True)
            setattr(self, f"keys{n}", torch.from_numpy(keys))
            setattr(self, f"counts{n}", torch.from_numpy(counts.astype(np.int64)))
            n1, n2 = int((counts == 1).sum()), int((counts == 2).sum())
            self.discounts[n - 1] = min(0.95, max(0.05, n1 / (n1 + 2 * n2))) if n1 else 0.5
        self._tables = None

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """The count tables' sizes come from the data: take the stored ones as they are."""
        names = {name for name, _ in self.named_buffers()}
        if strict and set(state_dict) != names:
            missing, extra = names - set(state_dict), set(state_dict) - names
            raise RuntimeError(
                f"Error(s) in loading state_dict:\n  missing {missing}, extra {extra}"
            )
        for name, value in state_dict.items():
            if name in names:
                setattr(self, name, value.to("cpu", copy=True))
        self._tables = None
        return nn.modules.module._IncompatibleKeys([], [])

    def _apply(self, fn, recurse: bool = True) -> NGramLM:
        """`.to()`, `.cuda()`, `.half()` and the like leave the tables as they are, on the CPU:
        numpy reads them (on a GPU, `.numpy()` raises), and a GPU has nothing to add to binary
        searches. So `device_of` says the CPU, and `forward` takes ids from any device and
        returns its logits there."""
        return self

    def num_parameters(self) -> int:
        """Stored counts: the model's size."""
        return sum(len(getattr(self, f"keys{n}")) for n in range(1, self.config.order + 1))

    def _prepared(self) -> list[dict]:
        """Per order: numpy views of the tables and, for each context, its total and range."""
        if self._tables is None:
            tables = []
            for n in range(1, self.config.order + 1):
                keys = getattr(self, f"keys{n}").numpy()
                counts = getattr(self, f"counts{n}").numpy().astype(np.float64)
                contexts, starts = np.unique(keys // self.base, return_index=True)
                totals = np.add.reduceat(counts, starts) if len(counts) else counts
                ends = np.append(starts[1:], len(keys))
                tables.append(
                    dict(keys=keys, counts=counts, contexts=contexts, starts=starts, ends=ends,
                         totals=totals, discount=float(self.discounts[n - 1]))
                )  # fmt: skip
            self._tables = tables
        return self._tables

    # -- probabilities -----------------------------------------------------------------------

    def distributions(self, contexts: np.ndarray) -> np.ndarray:
        """P(. | context) for each row of `contexts` (R, N - 1) ids: (R, V) float64."""
        V = self.config.vocab_size
        rows = len(contexts)
        probs = np.full((rows, V), 1.0 / V)
        for n, table in enumerate(self._prepared(), start=1):
            if not len(table["contexts"]):  # nothing counted: every context unseen
                continue
            h = np.zeros(rows, dtype=np.int64)  # the last n - 1 ids of each context
            for j in range(n - 1):
                h = h * self.base + contexts[:, contexts.shape[1] - (n - 1) + j]
            at = np.minimum(np.searchsorted(table["contexts"], h), len(table["contexts"]) - 1)
            seen = table["contexts"][at] == h
            total = np.where(seen, table["totals"][at], 1.0)
            lo = np.where(seen, table["starts"][at], 0)
            hi = np.where(seen, table["ends"][at], 0)
            D = table["discount"]
            backoff = np.where(seen, D * (hi - lo) / total, 1.0)  # unseen: all to the order below
            probs *= backoff[:, None]
            lengths = hi - lo
            row = np.repeat(np.arange(rows), lengths)
            index = np.repeat(lo - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
            words = table["keys"][index] % self.base
            np.add.at(probs, (row, words), np.maximum(table["counts"][index] - D, 0) / total[row])
        return probs

    def init_state(self, batch_size: int) -> State:
        return (torch.full((batch_size, self.config.order - 1), self.bos, dtype=torch.int64),)

    def forward(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Log-probabilities of the next token after each position: (B, T, V)."""
        if state is None:
            state = self.init_state(ids.shape[0])
        history = torch.cat([state[0].cpu(), ids.cpu()], dim=1).numpy()  # ids from any device
        B, T, N = ids.shape[0], ids.shape[1], self.config.order
        # the context of position t is history[:, t + 1 : t + N]: the N - 1 ids up to ids[:, t]
        contexts = np.stack([history[:, t + 1 : t + N] for t in range(T)], axis=1)
        logits = torch.from_numpy(self._log_probs(contexts.reshape(B * T, N - 1))).view(B, T, -1)
        new_state = torch.from_numpy(history[:, history.shape[1] - (N - 1) :].copy())
        return logits.to(ids.device), (new_state.to(ids.device),)

    def initial_logits(self, batch_size: int) -> Tensor:
        return torch.from_numpy(self._log_probs(self.init_state(batch_size)[0].numpy()))

    def _log_probs(self, contexts: np.ndarray) -> np.ndarray:
        """log P(. | context) for each row, (R, V) float32, a block of rows at a time: a row
        reads up to V entries of each order's table, so a word vocabulary (V ~ 33,000) taken
        whole would need gigabytes of index arrays for a few thousand rows."""
        V = self.config.vocab_size
        out = np.empty((len(contexts), V), dtype=np.float32)
        block = max(1, BLOCK_ENTRIES // V)
        for start in range(0, len(contexts), block):
            out[start : start + block] = np.log(self.distributions(contexts[start : start + block]))
        return out


# -- hidden Markov models ---------------------------------------------------------------------


@register("hmm")
class HMMLM(ClassicalLM):
    """A hidden Markov model with K states (--states):

        P(s_1) = pi,   P(s_t | s_{t-1}) = A,   P(w_t | s_t) = B

    all three softmaxes of free parameters, trained by gradient on the log-likelihood. The state
    carried along the text is the predictive distribution p_t(s) = P(s_t = s | w_<t), updated by
    the forward algorithm with rescaling (normalized at every step, so nothing underflows):

        P(w_t | w_<t) = sum_s p_t(s) B(s, w_t)
        q(s) = p_t(s) B(s, w_t) / P(w_t | w_<t)        (what the token says about s_t)
        p_{t+1} = q A

    Generation draws from P(w_t | w_<t), like every other model, so temperature, top-k, top-p
    and greedy decoding act on the model's prediction. (At temperature 1 with no filter this
    gives texts with the same distribution as walking the hidden chain, by marginalization.)
    """

    @classmethod
    def check_config(cls, config: ModelConfig) -> None:
        super().check_config(config)
        if config.states < 1:
            raise UsageError(f"--states must be positive, got {config.states}")

    @classmethod
    def describe(cls, config: ModelConfig) -> str:
        return f"hmm K={config.states}"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        K, V = config.states, config.vocab_size
        self.start = nn.Parameter(torch.randn(K) * 0.5)
        self.transition = nn.Parameter(torch.randn(K, K) * 0.5)
        self.emission = nn.Parameter(torch.randn(K, V) * 0.5)

    def probabilities(self) -> tuple[Tensor, Tensor, Tensor]:
        """(pi (K,), A (K, K), B (K, V)), each row a distribution, in fp32."""
        return (
            torch.softmax(self.start.float(), -1),
            torch.softmax(self.transition.float(), -1),
            torch.softmax(self.emission.float(), -1),
        )

    def init_state(self, batch_size: int) -> State:
        pi = torch.softmax(self.start.float(), -1)  # differentiable: the start trains too
        return (pi.expand(batch_size, -1),)

    def forward(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        with torch.autocast(ids.device.type, enabled=False):  # probabilities need fp32
            pi, A, B = self.probabilities()
            p = pi.expand(ids.shape[0], -1) if state is None else state[0].float()
            predictive = []
            emitted = B.t()[ids]  # (B, T, K): B(s, w_t) for every t
            for t in range(ids.shape[1]):  # after reading w_t: the prediction for w_{t+1}
                p = filter_step(p, emitted[:, t], A)
                predictive.append(p)
            probs = torch.stack(predictive, dim=1) @ B  # (B, T, V)
            return torch.log(probs.clamp_min(1e-30)), (p,)

    def initial_logits(self, batch_size: int) -> Tensor:
        pi, _, B = self.probabilities()
        return torch.log(pi @ B).expand(batch_size, -1)

    def stepper(self, batch_size: int = 1, generator: torch.Generator | None = None) -> Stepper:
        return HMMStepper(self)


def filter_step(p: Tensor, emitted: Tensor, A: Tensor) -> Tensor:
    """One step of the forward filter: p_t (B, K) and B(., w_t) (B, K) -> p_{t+1} (B, K)."""
    q = p * emitted
    return (q / q.sum(-1, keepdim=True).clamp_min(1e-30)) @ A


class HMMStepper(Stepper):
    """The forward filter one token at a time, with A and B computed once instead of at every
    call: a step costs O(K^2 + K V) however long the text (3-17x faster than calling forward
    for K = 32-256, V = 100-8000)."""

    def __init__(self, model: HMMLM) -> None:
        super().__init__(model)
        _, self.A, self.B = (t.detach() for t in model.probabilities())

    def __call__(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        p = filter_step(state[0].float(), self.B.t()[tokens], self.A)
        return torch.log((p @ self.B).clamp_min(1e-30)), (p,)
