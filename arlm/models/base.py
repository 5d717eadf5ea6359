"""What every language model shares: its interface, what it declares it can do, and the one
registry of kinds, and the config every model is built from.

    logits, state = model(ids, state)     # ids (B, T) int64 -> logits (B, T, V)
    state = model.init_state(batch_size)  # a tuple of tensors

The state is always a tuple of tensors, so training can detach it and checkpoints can store it
without knowing the kind. What a kind can do beyond that is declared on its class (the flags of
LanguageModel below) and never found out with `hasattr`: a new kind that leaves a flag as it is
takes the general path, never the wrong one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from arlm.errors import UsageError

State = tuple[Tensor, ...]


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model; stored in every checkpoint."""

    kind: str = "lstm"  # a key of REGISTRY: elman | lstm | gru | jordan | ngram | hmm
    vocab_size: int = 256
    embedding_dim: int = 128
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.1  # on embeddings, between layers, before the output; never recurrent
    tie_weights: bool = False  # share the input embedding with the output layer
    input: str = "embedding"  # embedding | one-hot
    nonlinearity: str = "tanh"  # elman only: tanh | relu
    jordan_decay: float = 0.5  # jordan only: a in c_t = a * c_{t-1} + y_{t-1}
    # The AWD-LSTM regularisers (Merity et al., 2017), fused kinds only. A locked dropout left
    # at None keeps --dropout's plain dropout in its place; 0 turns that place's dropout off.
    dropout_input: float | None = None  # locked dropout on the embeddings
    dropout_hidden: float | None = None  # locked dropout between recurrent layers
    dropout_output: float | None = None  # locked dropout on the last layer's output
    dropout_embedding: float = 0.0  # drop whole words: rows of the embedding matrix
    weight_drop: float = 0.0  # DropConnect on the hidden-to-hidden weights
    order: int = 3  # ngram only: N, the tokens of each n-gram
    states: int = 32  # hmm only: K hidden states
    context: int = 5  # ffnn only: N, the tokens its window reads
    direct: bool = False  # ffnn only: connections from the input vectors to the output too

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def describe(self) -> str:
        """'lstm 2x256', 'ngram N=3', 'hmm K=32': the model in a few characters."""
        return model_class(self.kind).describe(self)

    def check(self) -> None:
        """Refuse impossible settings with a message that says what to change: those of every
        kind here, then those of the kind (LanguageModel.check_config)."""
        cls = model_class(self.kind)
        for name in ("vocab_size", "hidden_size", "embedding_dim"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be positive")
        if self.num_layers < cls.min_layers:
            least = "positive" if cls.min_layers == 1 else f"at least {cls.min_layers}"
            raise UsageError(f"--num-layers must be {least} for {self.kind}")
        if not 0 <= self.dropout < 1:
            raise UsageError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.input not in ("embedding", "one-hot"):
            raise UsageError(f"--input must be embedding or one-hot, got {self.input!r}")
        if self.nonlinearity not in ("tanh", "relu"):
            raise UsageError(f"--nonlinearity must be tanh or relu, got {self.nonlinearity!r}")
        if not 0 <= self.jordan_decay < 1:
            raise UsageError(f"--jordan-decay must be in [0, 1), got {self.jordan_decay}")
        for name in REGULARISERS:
            value = getattr(self, name)
            if value is not None and not 0 <= value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be in [0, 1), got {value}")
        if self.tie_weights and self.input == "one-hot":
            raise UsageError("--tie-weights needs --input embedding (one-hot has no weights)")
        if self.tie_weights and self.embedding_dim != self.hidden_size:
            raise UsageError(
                "--tie-weights needs --embedding-dim equal to --hidden-size "
                f"(got {self.embedding_dim} and {self.hidden_size})"
            )
        cls.check_config(self)

    def regularisers(self) -> list[str]:
        """The AWD-LSTM regularisers set away from their defaults."""
        fields = self.__dataclass_fields__
        return [name for name in REGULARISERS if getattr(self, name) != fields[name].default]


REGULARISERS = (
    "dropout_input",
    "dropout_hidden",
    "dropout_output",
    "dropout_embedding",
    "weight_drop",
)


class LanguageModel(nn.Module):
    """The interface every kind implements, and the flags that say what else it can do.

    Subclasses implement `init_state`, `forward` and `initial_logits`; `stepper` when one token
    at a time can be done faster than by `forward` on a (B, 1) batch.
    """

    # -- capabilities: what the trainer, the scorer and the commands may rely on ----------------
    family = "recurrent"  # recurrent | classical: the family `arlm compare` groups a kind in
    fused = False  # a fused recurrent layer: `features()` for the block-wise loss, packed
    # sequences and raw outputs for AR/TAR, and the AWD-LSTM regularisers
    counted = False  # trained by counting: `fit(ids)` once, with no optimizer
    has_input_layer = False  # `self.input`: vectors (embedding or one-hot) to differentiate
    # or initialise from word vectors (`self.input.weight` when it is an embedding)
    starts_at_unigram = False  # `start_at_unigram(counts)` before training (no plateau)
    state_batch_dims: tuple[int, ...] = (1,)  # where the batch is in each state tensor
    min_layers = 1  # the fewest --num-layers it can be built with

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.check()
        self.config = config

    @classmethod
    def check_config(cls, config: ModelConfig) -> None:
        """Refuse the settings this kind cannot take (after ModelConfig.check's shared ones).
        Here: the AWD-LSTM regularisers, which only the fused kinds have."""
        if not cls.fused and (names := config.regularisers()):
            flag = "--" + names[0].replace("_", "-")
            fused = ", ".join(kinds(fused=True))
            raise UsageError(f"{flag} needs a fused model ({fused}), not {config.kind}")

    @classmethod
    def describe(cls, config: ModelConfig) -> str:
        """The model in a few characters, e.g. 'lstm 2x256'."""
        return f"{config.kind} {config.num_layers}x{config.hidden_size}"

    def init_state(self, batch_size: int) -> State:
        raise NotImplementedError

    def forward(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        raise NotImplementedError

    def initial_logits(self, batch_size: int) -> Tensor:
        """The model's guess for the first token of a text, before any input. (B, V)"""
        raise NotImplementedError

    def stepper(self, batch_size: int = 1, generator: torch.Generator | None = None) -> Stepper:
        """What generation calls once per token (see Stepper); `generator` for models that
        draw random numbers of their own."""
        return Stepper(self)

    def select_state(self, state: State, index: Tensor) -> State:
        """The state of the batch rows `index` (in that order): for beam search and batches."""
        dims = batch_dims(self, state)
        return tuple(s.index_select(d, index) for s, d in zip(state, dims, strict=True))

    def concat_state(self, first: State, then: State) -> State:
        """The rows of `first`, then those of `then`, as one batch (on `then`'s device and in
        its dtype): for a stream joining a batch, or a burn-in before a state."""
        dims = batch_dims(self, then)
        return tuple(
            torch.cat([a.to(b.device, b.dtype), b], dim=d)
            for a, b, d in zip(first, then, dims, strict=True)
        )

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class Stepper:
    """One token at a time, for generation: step(tokens (B,), state) -> (logits (B, V), state).

    This default calls the model on a (B, 1) batch.
    """

    def __init__(self, model: LanguageModel) -> None:
        self.model = model

    def __call__(self, tokens: Tensor, state) -> tuple[Tensor, State]:
        logits, state = self.model(tokens[:, None], state)
        return logits[:, 0], state


# -- the registry -------------------------------------------------------------------------------

REGISTRY: dict[str, type[LanguageModel]] = {}  # kind -> class, filled by @register


def register(kind: str):
    """Class decorator: the class is what `--model kind` builds. The registry is filled when
    arlm.models is imported, which importing any module of the package does first."""

    def add(cls: type[LanguageModel]) -> type[LanguageModel]:
        REGISTRY[kind] = cls
        return cls

    return add


def model_class(kind: str) -> type[LanguageModel]:
    if kind not in REGISTRY:
        raise UsageError(f"unknown model {kind!r}: pick one of {', '.join(REGISTRY)}")
    return REGISTRY[kind]


def kinds(**flags: object) -> tuple[str, ...]:
    """The kinds whose classes declare `flags`, in registry order: kinds(fused=True)."""
    return tuple(
        kind
        for kind, cls in REGISTRY.items()
        if all(getattr(cls, name) == value for name, value in flags.items())
    )


def require_fused(kind: str, use: str) -> None:
    """Refuse a kind without a fused recurrent layer for `use` ("a classifier reads its texts"),
    naming the kinds that have one."""
    if not model_class(kind).fused:
        raise UsageError(f"{use} with {', '.join(kinds(fused=True))}, not {kind}")


def build_model(config: ModelConfig) -> LanguageModel:
    return model_class(config.kind)(config)


# -- helpers on any model or state ----------------------------------------------------------------


def batch_dims(model: nn.Module, state: State) -> tuple[int, ...]:
    """Where the batch is in each tensor of `state` (one entry in state_batch_dims: all)."""
    dims = model.state_batch_dims
    if not state:
        return ()
    return dims * len(state) if len(dims) == 1 else dims


def all_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def device_of(model: nn.Module) -> torch.device:
    """Where a model's tensors are (a counting model has buffers, no parameters)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def detach(state: State) -> State:
    """Keep the values, cut the history: backprop stops at the window edge."""
    return tuple(s.detach() for s in state)
