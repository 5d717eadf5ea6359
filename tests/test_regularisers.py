"""The AWD-LSTM regularisers (Merity et al., 2017) on the fused models: each acts in training
only, never touches the carried state or the stored weights, and keeps the fused kernels."""

import pytest
import torch

from arlm.models import ModelConfig, build_model

torch.set_num_threads(1)
VOCAB = 23
FUSED = ["elman", "lstm", "gru"]


def ids(batch: int = 3, steps: int = 9, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, steps), generator=torch.Generator().manual_seed(seed))


def tiny(kind: str = "lstm", **overrides):
    torch.manual_seed(0)
    options = dict(kind=kind, vocab_size=VOCAB, embedding_dim=8, hidden_size=12, num_layers=2)
    return build_model(ModelConfig(**(options | overrides)))


@pytest.mark.parametrize("kind", FUSED)
def test_raw_features_are_the_last_layer_before_output_dropout(kind):
    model = tiny(kind, dropout=0.5).train()
    torch.manual_seed(3)
    dropped, state, raw = model.features(ids(), raw=True)
    assert raw.shape == dropped.shape
    kept = dropped != 0
    assert torch.allclose(dropped[kept], raw[kept] * 2)  # nn.Dropout(0.5) scales kept by 2
    torch.manual_seed(3)
    again, again_state = model.features(ids())
    assert torch.equal(again, dropped)
    assert all(torch.equal(a, b) for a, b in zip(state, again_state, strict=True))
