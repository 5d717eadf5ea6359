"""The AWD-LSTM regularisers (Merity et al., 2017) on the fused models: each acts in training
only, never touches the carried state or the stored weights, and keeps the fused kernels."""

import re

import pytest
import torch

from arlm import checkpoint
from arlm.errors import UsageError
from arlm.models import ModelConfig, build_model
from arlm.models.recurrent import locked_dropout
from tests.conftest import write_config

torch.set_num_threads(1)
VOCAB = 23
FUSED = ["elman", "lstm", "gru"]
ALL_ON = dict(
    dropout_input=0.3, dropout_hidden=0.4, dropout_output=0.5, dropout_embedding=0.2,
    weight_drop=0.5,
)  # fmt: skip


def ids(batch: int = 3, steps: int = 9, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, steps), generator=torch.Generator().manual_seed(seed))


def tiny(kind: str = "lstm", layers: int = 2, **overrides):
    """A small model; built under one seed, so two calls differ only in their options."""
    torch.manual_seed(0)
    options = dict(kind=kind, vocab_size=VOCAB, embedding_dim=8, hidden_size=12, dropout=0.0)
    return build_model(ModelConfig(num_layers=layers, **(options | overrides)))


def test_locked_masks_are_the_same_at_every_step_and_differ_across_rows():
    torch.manual_seed(0)
    dropped = locked_dropout(torch.ones(16, 7, 40), 0.5, training=True)
    assert set(dropped.unique().tolist()) == {0.0, 2.0}  # kept units scaled by 1 / (1 - p)
    assert torch.equal(dropped, dropped[:, :1].expand_as(dropped))
    assert len({tuple(row[0].tolist()) for row in dropped}) == 16
    assert torch.equal(
        locked_dropout(torch.ones(2, 3, 4), 0.5, training=False), torch.ones(2, 3, 4)
    )


@pytest.mark.parametrize("kind", FUSED)
def test_output_dropout_is_locked_over_time(kind):
    model = tiny(kind, dropout_output=0.5).train()
    dropped, _, raw = model.features(ids(batch=8), raw=True)
    mask = dropped / raw  # raw is never exactly 0 here
    assert torch.allclose(mask, mask[:, :1].expand_as(mask))
    assert 0 < (mask == 0).float().mean() < 1


@pytest.mark.parametrize("kind", FUSED)
def test_raw_features_are_the_last_layer_before_output_dropout(kind):
    model = tiny(kind, dropout=0.5).train()
    torch.manual_seed(3)
    dropped, state, raw = model.features(ids(), raw=True)
    kept = dropped != 0
    assert torch.allclose(dropped[kept], raw[kept] * 2)  # nn.Dropout(0.5) scales kept by 2
    torch.manual_seed(3)
    again, again_state = model.features(ids())
    assert torch.equal(again, dropped)
    assert all(torch.equal(a, b) for a, b in zip(state, again_state, strict=True))


@pytest.mark.parametrize("kind", FUSED)
def test_in_eval_the_regularised_model_is_the_plain_one(kind):
    regularised, plain = tiny(kind, layers=3, **ALL_ON).eval(), tiny(kind, layers=3).eval()
    plain.load_state_dict(regularised.state_dict())
    tokens, lengths = ids(batch=4), torch.tensor([9, 4, 1, 7])
    with torch.no_grad():
        torch.testing.assert_close(regularised(tokens), plain(tokens), rtol=0, atol=1e-6)
        packed = regularised.features(tokens, lengths=lengths)
        torch.testing.assert_close(packed, plain.features(tokens, lengths=lengths))


@pytest.mark.parametrize("kind", FUSED)
def test_layers_run_one_at_a_time_equal_the_fused_stack_in_training(kind):
    """With every dropout at 0, running the layers one by one (the path locked dropout between
    layers takes) computes what the multi-layer fused call does, gradients included."""
    one_by_one, stacked = tiny(kind, layers=3, dropout_hidden=0.0).train(), tiny(kind, layers=3)
    assert one_by_one.layers and not stacked.train().layers
    tokens = ids()
    for model in (one_by_one, stacked):
        model(tokens)[0].square().mean().backward()
    for (name, a), b in zip(one_by_one.named_parameters(), stacked.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("kind", FUSED)
def test_weight_drop_acts_in_training_and_never_changes_the_weights(kind, layers):
    model, plain = tiny(kind, layers, weight_drop=0.5), tiny(kind, layers)
    stored = {k: v.clone() for k, v in model.state_dict().items()}
    tokens = ids()
    model.train()
    first, second = model(tokens)[0], model(tokens)[0]
    assert not torch.allclose(first, second)  # a fresh mask each forward pass
    (first.sum() + second.sum()).backward()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(tokens)[0], plain.eval()(tokens)[0])
    for name, value in model.state_dict().items():
        assert torch.equal(value, stored[name]), name


@pytest.mark.parametrize("hidden", [None, 0.0])  # all layers in one call, or one at a time
def test_gradients_reach_the_recurrent_weights_through_the_dropped_connections(hidden):
    model = tiny("lstm", weight_drop=0.5, dropout_hidden=hidden).train()
    torch.manual_seed(5)
    model(ids(batch=8, steps=20))[0].sum().backward()
    for layer in range(2):
        grad = getattr(model.rnn, f"weight_hh_l{layer}").grad
        dropped = (grad == 0).float().mean()  # a dropped connection gets no gradient
        assert 0.3 < dropped < 0.7, (layer, dropped)


def test_embedding_dropout_drops_whole_words_everywhere_in_the_batch():
    model = tiny(dropout_embedding=0.5).train()
    tokens = ids(batch=6, steps=30)
    torch.manual_seed(2)
    x = model.input_vectors(tokens)  # dropout 0: only the embedding dropout acts
    weight = model.input.weight
    outcomes = set()
    for word in tokens.unique():
        seen = x[tokens == word]  # (occurrences, E)
        dropped = bool((seen == 0).all())
        assert dropped or torch.allclose(seen, 2 * weight[word].expand_as(seen))
        outcomes.add(dropped)
    assert outcomes == {True, False}


@pytest.mark.parametrize("kind", FUSED)
def test_two_windows_with_carried_state_equal_one_long_pass(kind):
    model = tiny(kind, layers=3, **ALL_ON).eval()
    tokens = ids(steps=12)
    with torch.no_grad():
        whole, end_whole = model(tokens)
        first, state = model(tokens[:, :5])
        second, end = model(tokens[:, 5:], state)
    assert [s.shape for s in state] == [s.shape for s in model.init_state(3)]
    torch.testing.assert_close(torch.cat([first, second], dim=1), whole, rtol=1e-5, atol=1e-5)
    for a, b in zip(end, end_whole, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", FUSED)
def test_save_then_load_keeps_the_options_and_the_logits(kind, tmp_path):
    model = tiny(kind, **ALL_ON).eval()
    write_config(tmp_path, model)
    checkpoint.save_weights(model, tmp_path, checkpoint.BEST)
    loaded, _ = checkpoint.load(tmp_path)
    assert loaded.config == model.config
    assert list(loaded.state_dict()) == list(tiny(kind).state_dict())  # names as before
    with torch.no_grad():
        assert torch.equal(model(ids())[0], loaded.eval()(ids())[0])


@pytest.mark.parametrize("kind", FUSED)
def test_generation_stepper_equals_the_model(kind):
    model = tiny(kind, **ALL_ON).eval()
    tokens = ids(steps=6)
    step = model.stepper(batch_size=3)
    with torch.no_grad():
        whole, _ = model(tokens)
        state, logits = model.init_state(3), []
        for t in range(tokens.shape[1]):
            out, state = step(tokens[:, t], state)
            logits.append(out)
    torch.testing.assert_close(torch.stack(logits, dim=1), whole, rtol=1e-5, atol=1e-5)


def test_an_old_config_without_the_options_builds_todays_model():
    old = {k: v for k, v in ModelConfig().to_dict().items() if "drop" not in k or k == "dropout"}
    config = ModelConfig.from_dict(old)
    assert (config.dropout_input, config.dropout_hidden, config.dropout_output) == (None,) * 3
    assert (config.dropout_embedding, config.weight_drop) == (0.0, 0.0)
    assert not build_model(config).layers


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dropout_input": 1.0}, "--dropout-input must be in [0, 1)"),
        ({"dropout_hidden": -0.1}, "--dropout-hidden must be in [0, 1)"),
        ({"dropout_output": 1.5}, "--dropout-output must be in [0, 1)"),
        ({"dropout_embedding": 1.0}, "--dropout-embedding must be in [0, 1)"),
        ({"weight_drop": -1.0}, "--weight-drop must be in [0, 1)"),
        ({"kind": "jordan", "weight_drop": 0.5}, "--weight-drop needs a fused model"),
        ({"kind": "jordan", "dropout_output": 0.0}, "--dropout-output needs a fused model"),
        ({"input": "one-hot", "dropout_embedding": 0.1}, "--dropout-embedding needs --input"),
        ({"input": "one-hot", "dropout_input": 0.1}, "--dropout-input needs --input"),
    ],
)
def test_impossible_regulariser_settings_are_refused(overrides, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        ModelConfig(vocab_size=VOCAB, **overrides).check()
    assert "\n" not in message


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_regularisers_train_and_evaluate_as_on_the_cpu():
    model = tiny("lstm", layers=3, **ALL_ON)
    tokens = ids(batch=4)
    with torch.no_grad():
        expected = model.eval()(tokens)[0]
    model.cuda().train()
    model(tokens.cuda())[0].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.rnn.parameters())
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(tokens.cuda())[0].cpu(), expected)


def test_a_config_file_sets_the_options(tmp_path):
    from arlm import settings

    path = tmp_path / "words.toml"
    path.write_text("dropout-input = 0.4\ndropout_hidden = 0.25\nweight-drop = 0.5\n")
    config = settings.model_config(settings.read_toml(path))
    assert (config.dropout_input, config.dropout_hidden, config.weight_drop) == (0.4, 0.25, 0.5)
    assert config.dropout_output is None
