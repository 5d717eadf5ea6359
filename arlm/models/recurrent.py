"""Recurrent language models: an input layer, recurrent layers, and an output layer of logits,
behind the interface of arlm.models.base (their state starts as zeros).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from arlm.errors import UsageError
from arlm.models.base import LanguageModel, ModelConfig, State, Stepper, register


def locked_dropout(x: Tensor, p: float | None, training: bool) -> Tensor:
    """Variational dropout (Gal & Ghahramani, 2016): one mask per row, the same at every step,
    so a unit dropped for a sequence stays dropped for all of it. (B, T, D) -> (B, T, D)"""
    if not training or not p:
        return x
    mask = x.new_empty(x.shape[0], 1, x.shape[2]).bernoulli_(1 - p)
    return x * mask / (1 - p)


def embedding_dropout(weight: Tensor, p: float) -> Tensor:
    """Whole words dropped: rows of the (V, E) matrix zeroed, so a dropped word reads as zeros
    wherever it occurs in the batch; the kept rows are scaled by 1 / (1 - p) (AWD-LSTM)."""
    mask = weight.new_empty(weight.shape[0], 1).bernoulli_(1 - p)
    return weight * mask / (1 - p)


class OneHot(nn.Module):
    """ids -> one-hot vectors, as char-rnn feeds its LSTM. Multiplying a one-hot vector by a
    weight matrix picks one column: an embedding lookup does the same with less work, which is
    why embeddings replaced one-hot inputs; this layer is here to show it."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, ids: Tensor) -> Tensor:
        return F.one_hot(ids, self.vocab_size).float()  # (B, T, V)


class RecurrentLM(LanguageModel):
    """Input layer -> recurrent core -> output layer. Subclasses provide the core."""

    has_input_layer = True
    starts_at_unigram = True

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        if config.input == "one-hot":
            self.input = OneHot(config.vocab_size)
            self.input_size = config.vocab_size
        else:
            self.input = nn.Embedding(config.vocab_size, config.embedding_dim)
            self.input_size = config.embedding_dim
        self.drop = nn.Dropout(config.dropout)
        self.output = nn.Linear(config.hidden_size, config.vocab_size)
        if config.tie_weights:  # one matrix (V, H), two roles
            # It takes the output layer's initialisation (uniform +-1/sqrt(H), nn.Linear's), not
            # the embedding's N(0, 1), which would make the first logits sqrt(H) times too large.
            self.input.weight = self.output.weight

    def input_vectors(self, ids: Tensor) -> Tensor:
        """What the first layer reads: embeddings with dropout, or one-hot vectors as they are
        (dropping the one entry of a one-hot vector would drop the whole token; the textbook
        Elman network has no input dropout). (B, T, input_size)"""
        x = self.input(ids)
        return x if self.config.input == "one-hot" else self.drop(x)

    def initial_logits(self, batch_size: int) -> Tensor:
        """Logits before any input: the output layer on an all-zero hidden state (its bias),
        the model's guess for the first token of a text. (B, V)"""
        return self.output(self._zeros(batch_size, self.config.hidden_size))

    @torch.no_grad()
    def start_at_unigram(self, counts: Tensor) -> None:
        """Set the output bias to the log frequencies of the training tokens (V,), so that the
        first prediction is the unigram distribution. From a zero bias, Adam moves each entry
        by about lr per update: reaching log p ~ -8 takes hundreds of updates, and the loss
        sits above the unigram level all that time. Smoothed by half a count: no -inf."""
        counts = counts.to(self.output.bias.device, torch.float64) + 0.5
        self.output.bias.copy_(torch.log(counts / counts.sum()))

    def _zeros(self, *shape: int) -> Tensor:
        weight = self.output.weight
        return torch.zeros(*shape, device=weight.device, dtype=weight.dtype)


class FusedLM(RecurrentLM):
    """A model whose core is one of PyTorch's fused recurrent layers (oneDNN on the CPU, cuDNN
    on GPUs): 5-20x faster than a Python loop over time steps.

    The AWD-LSTM regularisers keep the fused kernels: the dropped hidden-to-hidden weights are
    handed to the fused layer in place of its own (torch.func.functional_call), and locked
    dropout between layers runs the layers one at a time, each still one fused call.
    """

    fused = True
    layer: type[nn.RNNBase]

    @classmethod
    def check_config(cls, config: ModelConfig) -> None:
        super().check_config(config)
        for name in ("dropout_input", "dropout_embedding"):
            if config.input == "one-hot" and name in config.regularisers():
                raise UsageError(
                    f"--{name.replace('_', '-')} needs --input embedding "
                    "(one-hot inputs are never dropped)"
                )

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.rnn = self.layer(
            self.input_size,
            config.hidden_size,
            config.num_layers,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,  # between layers only
            **self.layer_options(),
        )
        self.layers = []  # one-layer views of self.rnn: a plain list, so no parameters of its own
        if config.dropout_hidden is not None and config.num_layers > 1:
            sizes = [self.input_size] + [config.hidden_size] * (config.num_layers - 1)
            options = dict(batch_first=True, device="meta", **self.layer_options())
            self.layers = [self.layer(size, config.hidden_size, 1, **options) for size in sizes]

    def layer_options(self) -> dict:
        return {}

    def init_state(self, batch_size: int) -> State:
        return (self._zeros(self.config.num_layers, batch_size, self.config.hidden_size),)

    def forward(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        h, state = self.features(ids, state)
        return self.output(h), state  # (B, T, V)

    def features(
        self,
        ids: Tensor,
        state: State | None = None,
        lengths: Tensor | None = None,
        raw: bool = False,
    ) -> tuple[Tensor, State] | tuple[Tensor, State, Tensor]:
        """What the output layer reads: (B, T, H), dropout applied. Training takes the loss
        from here through the output layer block by block (arlm.loss), never whole logits.

        With `lengths` (B,), row b holds a sequence of lengths[b] ids followed by padding: the
        rows are packed, so the recurrent layer never reads a pad (features there are zero),
        and the state returned is each row's state at its own last id.

        With `raw`, also the last layer's output before the output dropout (B, T, H): what
        activation regularisation (AR, TAR; Merity et al., 2017) penalises.
        """
        if state is None:
            state = self.init_state(ids.shape[0])
        x = self.input_vectors(ids)  # (B, T, E)
        h, new = self.recurrent(x, state, lengths)  # (B, T, H)
        dropped = self.dropout(h, self.config.dropout_output)
        return (dropped, new, h) if raw else (dropped, new)

    def input_vectors(self, ids: Tensor) -> Tensor:
        """Embeddings, dropped as the config says (whole words, then plain or locked dropout);
        one-hot vectors as they are. (B, T, input_size)"""
        config = self.config
        if config.input == "one-hot":
            return self.input(ids)
        if self.training and config.dropout_embedding:
            x = F.embedding(ids, embedding_dropout(self.input.weight, config.dropout_embedding))
        else:
            x = self.input(ids)
        return self.dropout(x, config.dropout_input)

    def dropout(self, x: Tensor, p: float | None) -> Tensor:
        """--dropout's plain dropout where `p` is None, else locked dropout with `p`."""
        return self.drop(x) if p is None else locked_dropout(x, p, self.training)

    def recurrent(self, x: Tensor, state: State, lengths: Tensor | None) -> tuple[Tensor, State]:
        """The recurrent layers: x (B, T, E) -> (B, T, H) and the new state ((L, B, H) each)."""
        weights = self.recurrent_weights()
        if not self.layers:  # all layers in one call; between them nn.RNNBase's own dropout
            return run_fused(self.rnn, weights, x, state, lengths)
        news = []
        for i, layer in enumerate(self.layers):
            if i:
                x = locked_dropout(x, self.config.dropout_hidden, self.training)
            own = {f"{name}_l0": weights[f"{name}_l{i}"] for name in WEIGHT_NAMES}
            x, new = run_fused(layer, own, x, tuple(s[i : i + 1] for s in state), lengths)
            news.append(new)
        return x, tuple(torch.cat(parts) for parts in zip(*news, strict=True))

    def recurrent_weights(self) -> dict[str, Tensor]:
        """The weights to hand the fused layer in place of its own, by parameter name: none
        when nothing changes them; in training with --weight-drop, each hidden-to-hidden
        matrix with a fresh DropConnect mask (Wan et al., 2013): the same dropped connections
        at every step and in every row, so the recurrence itself is regularised."""
        rnn, p = self.rnn, self.config.weight_drop
        weights = {}
        if self.layers:
            weights = {
                f"{n}_l{i}": getattr(rnn, f"{n}_l{i}")
                for n in WEIGHT_NAMES
                for i in range(rnn.num_layers)
            }
        if self.training and p:
            for i in range(rnn.num_layers):
                weights[f"weight_hh_l{i}"] = F.dropout(getattr(rnn, f"weight_hh_l{i}"), p)
        return weights

    def stepper(self, batch_size: int = 1, generator: torch.Generator | None = None) -> Stepper:
        return FusedStepper(self, batch_size)

    def cell(self, gi: Tensor, gh: Tensor, state: State) -> State:
        """One step of one layer from its input and hidden projections (B, G) each."""
        raise NotImplementedError


WEIGHT_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def run_fused(
    rnn: nn.RNNBase, weights: dict[str, Tensor], x: Tensor, state: State, lengths: Tensor | None
) -> tuple[Tensor, State]:
    """One call of a fused layer, with `weights` in place of its own parameters of those names
    (the call still goes to the fused kernel). x (B, T, E) -> (B, T, H), state (L, B, H) each.
    With `lengths`, the rows are packed so the layer never reads a pad (see features)."""
    steps = x.shape[1]
    if lengths is not None:
        x = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    hx = state if len(state) > 1 else state[0]
    h, new = torch.func.functional_call(rnn, weights, (x, hx)) if weights else rnn(x, hx)
    if lengths is not None:
        h, _ = pad_packed_sequence(h, batch_first=True, total_length=steps)
    return h, (tuple(new) if isinstance(new, tuple) else (new,))


@register("elman")
class ElmanLM(FusedLM):
    """Elman (1990): h_t = tanh(W x_t + U h_{t-1} + b): the hidden state is fed back."""

    layer = nn.RNN

    def layer_options(self) -> dict:
        return {"nonlinearity": self.config.nonlinearity}

    def cell(self, gi: Tensor, gh: Tensor, state: State) -> State:
        activation = torch.relu if self.config.nonlinearity == "relu" else torch.tanh
        return (activation(gi + gh),)


@register("lstm")
class LSTMLM(FusedLM):
    """LSTM (Hochreiter & Schmidhuber, 1997): a gated cell c_t carries information, and its
    gradient, across many steps. The state is (h, c)."""

    layer = nn.LSTM

    def init_state(self, batch_size: int) -> State:
        (h,) = super().init_state(batch_size)
        return (h, h.clone())

    def cell(self, gi: Tensor, gh: Tensor, state: State) -> State:
        gates = gi + gh
        hidden = gates.shape[1] // 4
        ifo = torch.sigmoid(gates[:, : 2 * hidden]), torch.sigmoid(gates[:, 3 * hidden :])
        c = ifo[0][:, hidden:] * state[1] + ifo[0][:, :hidden] * torch.tanh(
            gates[:, 2 * hidden : 3 * hidden]
        )
        return (ifo[1] * torch.tanh(c), c)


@register("gru")
class GRULM(FusedLM):
    """GRU (Cho et al., 2014): update and reset gates, no separate cell."""

    layer = nn.GRU

    def cell(self, gi: Tensor, gh: Tensor, state: State) -> State:
        i_r, i_z, i_n = gi.chunk(3, dim=1)
        h_r, h_z, h_n = gh.chunk(3, dim=1)
        reset, update = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
        candidate = torch.tanh(i_n + reset * h_n)
        return (candidate + update * (state[0] - candidate),)


@register("jordan")
class JordanLM(RecurrentLM):
    """Jordan (1986): the recurrence goes through the output, not the hidden layer.

        c_t = a * c_{t-1} + y_{t-1}          context units: a decaying trace of past outputs
        h_t = tanh(W x_t + U c_t + b)        (layers above the first are Elman layers)
        y_t = softmax(V h_t)                 the network's output distribution

    The decay `a` (--jordan-decay, default 0.5) sets how long the trace lasts: an output from
    k steps ago weighs a^(k-1). The state is (c_t, hidden states of the Elman layers above).

    Cost: the feedback of y_t needs the output layer and a softmax inside the loop over time,
    so no fused kernel applies: a Python loop of T steps, each an extra (B, V) x (V, H) product
    for U c_t on top of the output layer that every model pays. Training with dropout takes the
    output layer twice (~1.5x the arithmetic): the prediction fed back is the one without dropout,
    which never touches a recurrent connection. The input products W x_t for all t are taken in
    one matrix product before the loop; only the feedback is stepped.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        hidden, vocab = config.hidden_size, config.vocab_size
        self.input_proj = nn.Linear(self.input_size, hidden)  # W, b
        self.context_proj = nn.Linear(vocab, hidden, bias=False)  # U
        self.upper_input = nn.ModuleList(
            nn.Linear(hidden, hidden) for _ in range(config.num_layers - 1)
        )
        self.upper_recurrent = nn.ModuleList(
            nn.Linear(hidden, hidden, bias=False) for _ in range(config.num_layers - 1)
        )
        bound = 1 / math.sqrt(hidden)  # the same uniform init as nn.RNN
        for layer in [self.input_proj, self.context_proj, *self.upper_input, *self.upper_recurrent]:
            for p in layer.parameters():
                nn.init.uniform_(p, -bound, bound)

    state_batch_dims = (0, 1)  # context (B, V), upper layers (L - 1, B, H)

    def init_state(self, batch_size: int) -> State:
        upper = self._zeros(self.config.num_layers - 1, batch_size, self.config.hidden_size)
        return (self._zeros(batch_size, self.config.vocab_size), upper)

    def forward(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        if state is None:
            state = self.init_state(ids.shape[0])
        context, upper = state
        a = self.config.jordan_decay
        x = self.input_vectors(ids)
        driven = self.input_proj(x)  # (B, T, H): W x_t + b for every t at once
        uppers = list(upper.unbind(0))
        steps = []
        for t in range(ids.shape[1]):
            h = torch.tanh(driven[:, t] + self.context_proj(context))  # (B, H)
            for i, (w, u) in enumerate(zip(self.upper_input, self.upper_recurrent, strict=True)):
                h = uppers[i] = torch.tanh(w(self.drop(h)) + u(uppers[i]))
            logits = self.output(self.drop(h))  # (B, V)
            # the prediction fed back is the one without dropout: no noise on the recurrence
            fed_back = self.output(h) if self.training and self.drop.p > 0 else logits
            context = a * context + torch.softmax(fed_back.float(), dim=-1).to(context.dtype)
            steps.append(logits)
        upper = torch.stack(uppers) if uppers else upper
        return torch.stack(steps, dim=1), (context, upper)


class FusedStepper(Stepper):
    """The fused layer's step written out with its own weights: matrix products and gate math.

    Calling nn.LSTM on one token costs ~1.5 ms of fixed overhead here; this runs several times
    faster (docs/ARCHITECTURE.md, "Recurrent layers and generation"). Three things make it fast:
    - the first layer's input projection of every token is precomputed into a (V, G) table,
      so a step starts with a row lookup instead of a product;
    - the recurrent products of all layers depend only on the previous state, so for one
      stream they run as one batched product (L, B, H) x (L, H, G), spread over the cores;
    - for batches of 16 and more the products run in bf16 where the hardware has it (4x the
      fp32 speed on this CPU); the state and the gate math stay fp32.
    For inference only: no dropout.
    """

    TABLE_LIMIT = 1 << 24  # elements: skip the table for very large vocabularies

    @torch.no_grad()
    def __init__(self, model: FusedLM, batch_size: int = 1) -> None:
        super().__init__(model)
        rnn = model.rnn
        self.dtype = _fast_dtype(model.output.weight.device) if batch_size >= 16 else torch.float32
        weights = [
            [getattr(rnn, f"{name}_l{layer}") for layer in range(rnn.num_layers)]
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        ]
        w_ih, w_hh, b_ih, b_hh = weights
        self.w_hh = torch.stack([w.t() for w in w_hh]).to(self.dtype)  # (L, H, G)
        self.b_hh = torch.stack(b_hh)[:, None, :].to(self.dtype)  # (L, 1, G)
        self.w_ih = [w.t().contiguous().to(self.dtype) for w in w_ih]
        self.b_ih = [b.to(self.dtype) for b in b_ih]
        if self.dtype == torch.float32:  # small batches: each product in two halves, one a core
            self.w_ih = [torch.stack(w.chunk(2, dim=1)) for w in self.w_ih]  # (2, H_in, G/2)
            self.b_ih = [torch.stack(b.chunk(2))[:, None, :] for b in self.b_ih]  # (2, 1, G/2)
        self.table = None
        if model.config.vocab_size * w_ih[0].shape[0] <= self.TABLE_LIMIT:
            everything = torch.arange(model.config.vocab_size, device=w_ih[0].device)
            self.table = torch.addmm(b_ih[0], model.input(everything), w_ih[0].t())  # (V, G)
        self.output = (
            model.output.weight.t().contiguous().to(self.dtype),
            model.output.bias.to(self.dtype),
        )

    def _project(self, x: Tensor, layer: int) -> Tensor:
        """x W_ih + b_ih for one layer: (B, H_in) -> (B, G)."""
        if self.dtype == torch.float32:
            halves = torch.baddbmm(self.b_ih[layer], x.expand(2, -1, -1), self.w_ih[layer])
            return halves.transpose(0, 1).reshape(x.shape[0], -1)
        return torch.addmm(self.b_ih[layer], x.to(self.dtype), self.w_ih[layer]).float()

    @torch.no_grad()
    def __call__(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        if self.dtype == torch.float32:  # one product for all layers, spread over the cores
            recurrent = torch.baddbmm(self.b_hh, state[0], self.w_hh)
        else:  # large batches: bf16 matrix products are fastest one at a time
            h = state[0].to(self.dtype)
            recurrent = [
                torch.addmm(self.b_hh[i, 0], h[i], self.w_hh[i]).float() for i in range(h.shape[0])
            ]
        x, new = None, []
        for layer in range(len(self.w_ih)):
            if layer == 0 and self.table is not None:
                gi = self.table[tokens]
            else:
                gi = self._project(x if layer else self.model.input(tokens), layer)
            new.append(self.model.cell(gi, recurrent[layer], tuple(s[layer] for s in state)))
            x = new[-1][0]
        logits = torch.addmm(self.output[1], x.to(self.dtype), self.output[0]).float()
        return logits, tuple(torch.stack(parts) for parts in zip(*new, strict=True))


def _fast_dtype(device: torch.device) -> torch.dtype:
    """bf16 where matrix products are fast in it (oneDNN with AVX-512 bf16, recent GPUs)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and torch.backends.mkldnn.is_available():
        return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32
    return torch.float32
