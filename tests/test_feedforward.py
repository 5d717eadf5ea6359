"""The feed-forward neural language model (Bengio et al., 2003): a window of N tokens, no
memory beyond it."""

import numpy as np
import pytest
import torch

from arlm.errors import UsageError
from arlm.models import ModelConfig, build_model
from arlm.probe import gradient_by_distance

torch.set_num_threads(1)


def ffnn(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    options = dict(kind="ffnn", vocab_size=11, embedding_dim=6, hidden_size=10, num_layers=1,
                   context=3, dropout=0.0)  # fmt: skip
    return build_model(ModelConfig(**(options | overrides))).eval()


def test_with_one_token_of_context_and_no_hidden_layer_it_learns_the_bigram_model():
    """Inputs one-hot, N = 1, no hidden layer: logits = b + W[:, previous token], any table of
    bigram probabilities. Trained on a text, it reaches the counted (maximum-likelihood) bigram
    probabilities, as the classical model does by counting."""
    rng = np.random.default_rng(0)
    V = 5
    transitions = rng.dirichlet(np.ones(V) * 2, size=V) * 0.9 + 0.1 / V  # every pair occurs
    text = [0]
    for _ in range(3000):
        text.append(int(rng.choice(V, p=transitions[text[-1]])))
    text = np.array(text)
    counts = np.zeros((V, V))
    np.add.at(counts, (text[:-1], text[1:]), 1)
    bigram = counts / counts.sum(1, keepdims=True)

    model = ffnn(vocab_size=V, context=1, num_layers=0, input="one-hot").train()
    ids = torch.from_numpy(text)[None]
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    for _ in range(300):
        logits, _ = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits[0], ids[0, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():  # P(. | w) for each w, from a window holding w alone
        learned = torch.softmax(model(torch.arange(V)[:, None])[0][:, 0], -1).double().numpy()
    assert np.abs(learned - bigram).max() < 2e-3
    assert model.num_parameters() == V * V + V  # W and b: a bigram table's worth


def test_a_prediction_reads_the_last_n_tokens_and_nothing_before():
    model = ffnn(context=3)
    ids = torch.randint(0, 11, (2, 12), generator=torch.Generator().manual_seed(1))
    logits, _ = model(ids)
    changed = ids.clone()
    changed[:, 7] = (changed[:, 7] + 1) % 11  # inside the windows of positions 7, 8 and 9
    after, _ = model(changed)
    moved = (after - logits).abs().amax(dim=(0, 2)) > 0
    assert moved.tolist() == [t in (7, 8, 9) for t in range(12)]


def test_the_gradient_stops_dead_at_the_window():
    """`arlm diagnose`: a recurrent network's gradient fades with distance; a feed-forward
    network's is exactly zero beyond its N tokens."""
    model = ffnn(context=4, num_layers=2)
    ids = np.random.default_rng(0).integers(0, 11, 400)
    norms = gradient_by_distance(model, ids, distance=9, windows=16)
    assert (norms[:4] > 0).all() and (norms[4:] == 0).all()


def test_generation_keeps_n_tokens_of_state_and_each_step_reads_only_them():
    """The cost of a token is the same at any position: the state never grows, and a step
    after a long text equals the model run on the last N tokens alone."""
    model = ffnn(context=3)
    stepper = model.stepper(batch_size=2)
    tokens = torch.randint(0, 11, (2, 40), generator=torch.Generator().manual_seed(2))
    state = model.init_state(2)
    for t in range(40):
        logits, state = stepper(tokens[:, t], state)
        assert [s.shape for s in state] == [(2, 3)]
    alone, _ = model(tokens[:, -3:])
    torch.testing.assert_close(logits, alone[:, -1])


def test_the_first_token_is_guessed_from_a_window_before_the_text():
    model = ffnn()
    (before,) = model.init_state(2)
    assert (before == 11).all()  # the token "before the text": id V, zero input vectors
    first = model.initial_logits(2)
    assert first.shape == (2, 11)
    torch.testing.assert_close(first[0], first[1])


def test_direct_connections_add_a_matrix_from_the_window_to_the_output():
    plain, direct = ffnn(), ffnn(direct=True)
    extra = direct.num_parameters() - plain.num_parameters()
    assert extra == 11 * 3 * 6  # V x (N x E)
    assert ModelConfig(kind="ffnn", direct=True, context=3).describe() == "ffnn N=3 2x256 +direct"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"context": 0}, "--context must be in 1..512"),
        ({"context": 513}, "--context must be in 1..512"),
        ({"num_layers": -1}, "--num-layers must be at least 0"),
        ({"num_layers": 0, "tie_weights": True, "embedding_dim": 10}, "needs a hidden layer"),
        ({"dropout_input": 0.2}, "needs a fused model"),
    ],
)
def test_impossible_settings_are_refused(overrides, message):
    with pytest.raises(UsageError, match=message):
        ffnn(**overrides)


def test_tied_weights_share_the_embedding_with_the_output():
    model = ffnn(embedding_dim=10, hidden_size=10, tie_weights=True)
    assert model.input.weight is model.output.weight


def test_the_longest_window_is_filled_by_the_scorers_burn_in():
    """A long text is scored in parallel rows, each after EVAL_BURN_IN tokens: enough to fill
    any ffnn window, so the score is exact (test_score checks it for every kind)."""
    from arlm.models.feedforward import MAX_CONTEXT
    from arlm.score import EVAL_BURN_IN

    assert MAX_CONTEXT <= EVAL_BURN_IN
