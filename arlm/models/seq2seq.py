"""Sequence to sequence with a context vector (`--task seq2seq`; Sutskever et al., 2014; Cho et
al., 2014): an encoder reads the source, and its final state, the context vector, is where a
decoder starts; the decoder is a language model of the target, trained with teacher forcing
(it reads the true target, one token behind what it predicts).

    source (B, S) -> encoder -> outputs (B, S, H), final state: the context vector
    <s> target (B, T), from the context vector -> decoder -> (B, T, H) -> logits (B, T, V)

Everything the decoder learns of the source passes through the context vector, one state of
fixed size, however long the source: the bottleneck. `attention` lets each decoder step look
at all the encoder's outputs instead (Luong et al., 2015, global attention, placed after the
decoder's recurrent layers as there, so the decoder stays one fused call):

    score(h_t, s_i)   luong: h_t . W s_i         bahdanau: v . tanh(W1 h_t + W2 s_i) (additive)
    a_t = softmax over the source's tokens (pads never weigh), c_t = sum_i a_ti s_i
    h~_t = tanh(Wc [c_t; h_t]), which the output layer reads in place of h_t

(Bahdanau et al., 2015 score from the state before the step and feed c_t into the recurrent
layer; "bahdanau" here is their additive score in Luong's place, as in TensorFlow's
AttentionWrapper.) Encoder and decoder are arlm language models of one fused kind and shape;
the decoder's vocabulary is the target side's.

For decoding, `conditioned` turns the model and a batch of sources into a LanguageModel of
target texts (Conditioned), which sequences.decode steps and sample.beam_search searches.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn

from arlm.errors import UsageError
from arlm.models.base import (
    LanguageModel,
    ModelConfig,
    State,
    batch_dims,
    build_model,
    require_fused,
)

ATTENTIONS = ("none", "luong", "bahdanau")


class Attention(nn.Module):
    """Global attention over the encoder's outputs (see the module's docstring)."""

    def __init__(self, kind: str, size: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "luong":
            self.score_weight = nn.Linear(size, size, bias=False)  # W
        else:
            self.query = nn.Linear(size, size, bias=False)  # W1
            self.key = nn.Linear(size, size)  # W2 (and the bias inside the tanh)
            self.v = nn.Linear(size, 1, bias=False)
        self.combine = nn.Linear(2 * size, size)  # Wc

    def forward(self, h: Tensor, memory: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """h (B, T, H) decoder outputs, memory (B, S, H) encoder outputs, mask (B, S) True at
        the source's tokens -> (attentional outputs (B, T, H), weights (B, T, S))."""
        if self.kind == "luong":
            scores = h @ self.score_weight(memory).transpose(1, 2)
        else:
            keys = self.key(memory)[:, None]  # (B, 1, S, H)
            scores = self.v(torch.tanh(self.query(h)[:, :, None] + keys)).squeeze(-1)
        scores = scores.float().masked_fill(~mask[:, None], float("-inf"))
        weights = torch.softmax(scores, -1).to(memory.dtype)
        context = weights @ memory  # (B, T, H)
        return torch.tanh(self.combine(torch.cat([context, h], -1))), weights


class Seq2Seq(LanguageModel):
    """An encoder, a decoder started from its final state, and maybe attention between them;
    not a language model of one text, so it is in no registry, and the commands that generate
    or score a text refuse it."""

    family = "seq2seq"
    has_input_layer = True  # the encoder's: decayed or not, differentiated, initialised

    def __init__(self, config: ModelConfig, target_vocab: int, attention: str = "none") -> None:
        super().__init__(config)
        require_fused(config.kind, "seq2seq encodes and decodes")
        if attention not in ATTENTIONS:
            raise UsageError(f"--attention must be none, luong or bahdanau, got {attention!r}")
        self.encoder = build_model(config)
        self.decoder = build_model(dataclasses.replace(config, vocab_size=target_vocab))
        self.attention = Attention(attention, config.hidden_size) if attention != "none" else None
        self.last_weights: Tensor | None = None  # the attention of the last decode (B, T, S)
        # outside training, for `arlm translate --plot` to draw

    @property
    def input(self) -> nn.Module:
        return self.encoder.input

    def encode(self, sources: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, State]:
        """sources (B, S), each row's first lengths[b] ids (`lengths` on the CPU) -> encoder
        outputs (B, S, H), the mask of real tokens (B, S), and the context vector: the state
        at each source's last token."""
        batch, steps = sources.shape
        memory, context = self.encoder.features(sources, self.encoder.init_state(batch), lengths)
        mask = torch.arange(steps)[None] < lengths[:, None]
        return memory, mask.to(memory.device), context

    @property
    def output(self) -> nn.Linear:
        """The decoder's output layer: what the features below are read by."""
        return self.decoder.output

    def decode_features(
        self, ids: Tensor, state: State, memory: Tensor, mask: Tensor
    ) -> tuple[Tensor, State]:
        """What the output layer reads (B, T, H) after target ids (B, T), from decoder `state`:
        the decoder's outputs, or with attention its attentional ones (h~)."""
        h, state = self.decoder.features(ids, state)
        if self.attention is not None:
            h, weights = self.attention(h, memory, mask)
            self.last_weights = None if self.training else weights.detach()
        return h, state

    def decode(
        self, ids: Tensor, state: State, memory: Tensor, mask: Tensor
    ) -> tuple[Tensor, State]:
        """Logits (B, T, V) of the tokens after target ids (B, T), from decoder `state`."""
        h, state = self.decode_features(ids, state, memory, mask)
        return self.output(h), state

    def target_features(self, sources: Tensor, lengths: Tensor, inputs: Tensor) -> Tensor:
        """Teacher forcing: what the output layer reads (B, T, H) after each token of `inputs`
        (<s> and the target, padded), the decoder started from the context vector of
        `sources`. Training takes the loss from here through the output layer, only at the
        target's tokens (sequences.pair_loss), never whole logits."""
        memory, mask, context = self.encode(sources, lengths)
        h, _ = self.decode_features(inputs, context, memory, mask)
        return h

    def forward(self, sources: Tensor, lengths: Tensor, inputs: Tensor) -> Tensor:
        """The logits (B, T, V) of `target_features`."""
        return self.output(self.target_features(sources, lengths, inputs))

    def conditioned(self, sources: Tensor, lengths: Tensor) -> Conditioned:
        return Conditioned(self, sources, lengths)


class Conditioned(LanguageModel):
    """The decoder given a batch of sources: a language model of their target texts. Its state
    is the decoder's, then the encoder's outputs and their mask, so that choosing rows of it
    (beam search) keeps each row with its source. A batch of k x B rows is k rows a source."""

    def __init__(self, model: Seq2Seq, sources: Tensor, lengths: Tensor) -> None:
        super().__init__(model.decoder.config)
        self.model = model
        self.training = model.training  # beam_search() puts back the mode it found: the model's
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                self.memory, self.mask, self.context = model.encode(sources, lengths)
        finally:
            model.train(was_training)
        self.state_batch_dims = (*batch_dims(model.decoder, self.context), 0, 0)

    def init_state(self, batch_size: int) -> State:
        sources = self.memory.shape[0]
        if batch_size % sources:
            raise ValueError(f"{batch_size} rows for {sources} sources: give each as many")
        times = batch_size // sources
        dims = self.state_batch_dims
        parts = (*self.context, self.memory, self.mask)
        return tuple(p.repeat_interleave(times, d) for p, d in zip(parts, dims, strict=True))

    def forward(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        state = state if state is not None else self.init_state(ids.shape[0])
        *decoder, memory, mask = state
        logits, decoder = self.model.decode(ids, tuple(decoder), memory, mask)
        return logits, (*decoder, memory, mask)
