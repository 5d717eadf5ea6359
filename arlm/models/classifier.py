"""Sequence classification, many-to-one (`--task classify`): the recurrent layers of a language
model read a whole text, and what they hold at its end goes to one score per label.

    ids (B, T), lengths (B,) -> encoder features (B, T, H), packed: pads are never read
                             -> pooled (B, H): the output at each text's last token (its final
                                hidden state), or the mean over the text (pooling "mean")
                             -> head: (B, labels) scores, a softmax away from probabilities

The encoder is an arlm language model of a fused kind (elman, lstm, gru), built from the same
ModelConfig, so a classifier can start from a language model trained on the same tokenizer.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from arlm.errors import UsageError
from arlm.models.base import LanguageModel, ModelConfig, build_model, require_fused

POOLINGS = ("last", "mean")


class Classifier(LanguageModel):
    """Scores (B, labels) for texts; not a language model, so it is in no registry, and the
    commands that generate or score text refuse it."""

    family = "classifier"
    has_input_layer = True  # the encoder's: decayed or not, differentiated, initialised

    def __init__(self, config: ModelConfig, labels: int, pooling: str = "last") -> None:
        super().__init__(config)
        require_fused(config.kind, "a classifier reads its texts")
        if pooling not in POOLINGS:
            raise UsageError(f"--pooling must be last or mean, got {pooling!r}")
        if labels < 2:
            raise UsageError(f"a classifier needs two labels or more, got {labels}")
        self.encoder = build_model(config)
        self.head = nn.Linear(config.hidden_size, labels)
        self.pooling = pooling

    @property
    def input(self) -> nn.Module:
        return self.encoder.input

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """Scores (B, labels) of texts `ids` (B, T), row b's first lengths[b] ids (the rest
        padding); `lengths` stays on the CPU, where packing reads it."""
        batch = ids.shape[0]
        features, _ = self.encoder.features(ids, self.encoder.init_state(batch), lengths)
        counts = lengths.to(features.device)
        if self.pooling == "last":
            pooled = features[torch.arange(batch, device=features.device), counts - 1]
        else:  # pads hold zeros: the sum over time is the sum over the text
            pooled = features.sum(1) / counts[:, None].to(features.dtype)
        return self.head(pooled)
