"""The neural probabilistic language model (Bengio, Ducharme, Vincent & Jauvin, 2003): a
feed-forward network that reads a fixed window, the N tokens before each target (`--context N`).

    x = [C(w_t-N+1); ...; C(w_t)]     the N input vectors, concatenated (N x E)
    h = tanh(d + H x)                  hidden layers (--num-layers of them; 0: none)
    y = b + U h  (+ W x, --direct)     logits over the vocabulary

With no hidden layer the output reads x itself (y = b + W x). Unlike a recurrent network it
remembers nothing beyond its window: its state is the last N token ids, so a token costs the
same to generate at any position, and the gradient of a prediction reaches back exactly N
tokens (`arlm diagnose` shows it). Before the text the window holds a token of its own (id V),
whose input vector is zero.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import Tensor, nn

from arlm.errors import UsageError
from arlm.models.base import LanguageModel, ModelConfig, State, register
from arlm.models.recurrent import OneHot, RecurrentLM

# The longest window: arlm.score reads a long text's rows in parallel, each after a burn-in of
# EVAL_BURN_IN (512) tokens, which must fill the window for the score to be exact.
MAX_CONTEXT = 512


@register("ffnn")
class FeedForwardLM(LanguageModel):
    family = "feed-forward"
    has_input_layer = True
    starts_at_unigram = True
    state_batch_dims = (0,)
    min_layers = 0  # no hidden layer: the output reads the input vectors

    @classmethod
    def check_config(cls, config: ModelConfig) -> None:
        super().check_config(config)
        if not 1 <= config.context <= MAX_CONTEXT:
            raise UsageError(
                f"--context must be in 1..{MAX_CONTEXT}, got {config.context} (a longer memory "
                "is what the recurrent models are for)"
            )
        if config.tie_weights and not config.num_layers:
            raise UsageError("--tie-weights needs a hidden layer: --num-layers 1 or more")

    @classmethod
    def describe(cls, config: ModelConfig) -> str:
        direct = " +direct" if config.direct and config.num_layers else ""
        return f"ffnn N={config.context} {config.num_layers}x{config.hidden_size}{direct}"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        V, N = config.vocab_size, config.context
        if config.input == "one-hot":
            self.input, width = OneHot(V), V
        else:
            self.input, width = nn.Embedding(V, config.embedding_dim), config.embedding_dim
        sizes = [N * width] + [config.hidden_size] * config.num_layers
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(sizes))
        self.output = nn.Linear(sizes[-1], V)
        has_direct = config.direct and config.num_layers > 0
        self.direct = nn.Linear(N * width, V, bias=False) if has_direct else None
        self.drop = nn.Dropout(config.dropout)
        if config.tie_weights:  # as in RecurrentLM: one (V, H) matrix, the output's init
            self.input.weight = self.output.weight

    start_at_unigram = RecurrentLM.start_at_unigram  # the output bias at the unigram's logs

    def init_state(self, batch_size: int) -> State:
        """N times the token "before the text" (id V)."""
        shape = (batch_size, self.config.context)
        before = torch.full(shape, self.config.vocab_size, dtype=torch.long)
        return (before.to(self.output.weight.device),)

    def forward(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Logits (B, T, V) for the token after each of `ids` (B, T), each from the N ids up to
        it; the state: the last N ids."""
        (before,) = state if state is not None else self.init_state(ids.shape[0])
        tokens = torch.cat([before, ids], dim=1)  # (B, N + T)
        return self._logits(self._windows(tokens)[:, 1:]), (tokens[:, -self.config.context :],)

    def initial_logits(self, batch_size: int) -> Tensor:
        """The guess for a text's first token: the window before the text. (B, V)"""
        (before,) = self.init_state(batch_size)
        return self._logits(self._windows(before))[:, 0]

    def _windows(self, tokens: Tensor) -> Tensor:
        """The input vectors of every window of N consecutive tokens, concatenated: (B, L - N
        + 1, N x width) for (B, L) tokens. The token before the text reads as zeros."""
        V = self.config.vocab_size
        x = self.input(tokens.clamp(max=V - 1)) * (tokens < V).unsqueeze(-1)  # (B, L, width)
        if self.config.input != "one-hot":  # one-hot vectors are never dropped (RecurrentLM)
            x = self.drop(x)
        windows = x.unfold(1, self.config.context, 1)  # (B, L - N + 1, width, N)
        return windows.transpose(2, 3).flatten(2)  # oldest token first

    def _logits(self, x: Tensor) -> Tensor:
        h = x
        for layer in self.hidden:
            h = self.drop(torch.tanh(layer(h)))
        logits = self.output(h)
        return logits + self.direct(x) if self.direct is not None else logits
