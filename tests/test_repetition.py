"""Sampling that avoids loops (sample.Repetition): CTRL's repetition penalty and the ban on
repeated n-grams, in sampling and in beam search, on a tiny model that loops without them."""

import pytest
import torch

from arlm.errors import UsageError
from arlm.models import LanguageModel, ModelConfig
from arlm.sample import Repetition, beam_search, generate
from tests.conftest import make_char_dataset, run_arlm

VOCAB = 8


class Cycle(LanguageModel):
    """A model that loops: after token t of 0 -> 1 -> 2 -> 0 it scores t's successor 3, the
    tokens 3 to 7 2 each, the rest 0; after 3 to 7, token 0 comes first. Greedy, it writes
    0 1 2 0 1 2 ... forever."""

    def __init__(self) -> None:
        super().__init__(ModelConfig(kind="ngram", vocab_size=VOCAB))

    def init_state(self, batch_size: int) -> tuple:
        return ()

    def forward(self, ids, state=None):
        logits = torch.zeros(*ids.shape, VOCAB)
        logits[..., 3:] = 2.0
        after = torch.where(ids < 3, (ids + 1) % 3, 0)
        return logits.scatter(-1, after[..., None], 3.0), ()


def looping_model() -> Cycle:
    return Cycle().eval()


def bigrams(ids: list[int]) -> list[tuple[int, int]]:
    return list(zip(ids, ids[1:], strict=False))


def test_the_penalty_divides_positive_scores_and_multiplies_negative_ones_of_seen_tokens():
    scores = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    history = torch.tensor([[0, 1, 1]])  # a token seen twice is penalised once
    out = Repetition(penalty=2.0).apply(scores, history)
    assert out.tolist() == [[1.0, -2.0, 0.5, 3.0]]
    assert Repetition().apply(scores, history) is scores  # off: untouched


def test_a_repeated_ngram_is_banned_and_nothing_else():
    scores = torch.zeros(2, 5)
    history = torch.tensor([[0, 1, 2, 0], [3, 3, 3, 4]])
    out = Repetition(ngram=2).apply(scores, history)
    # row 0 ends with 0, and "0 1" was written: 1 is banned; row 1 ends with 4, never seen before
    assert torch.isinf(out[0]).tolist() == [False, True, False, False, False]
    assert torch.isfinite(out[1]).all()
    single = Repetition(ngram=1).apply(scores, history)
    assert torch.isinf(single[1]).tolist() == [False, False, False, True, True]


def test_a_row_with_every_token_banned_keeps_its_scores():
    scores = torch.tensor([[0.3, -0.2]])
    assert torch.equal(Repetition(ngram=1).apply(scores, torch.tensor([[0, 1]])), scores)


@pytest.mark.parametrize(("penalty", "ngram", "message"), [
    (0.0, 0, "--repetition-penalty must be"), (float("nan"), 0, "--repetition-penalty"),
    (1.0, -1, "--no-repeat-ngram must be >= 0"),
])  # fmt: skip
def test_bad_settings_are_refused(penalty, ngram, message):
    with pytest.raises(UsageError, match=message):
        Repetition(penalty, ngram)


def test_greedy_sampling_loops_without_the_rules_and_not_with_them():
    model = looping_model()

    def greedy(repetition: Repetition) -> list[int]:
        steps = generate(model, [0], 12, temperature=0, repetition=repetition)
        return [0] + [int(step.ids[0]) for step in steps]

    plain = greedy(Repetition())
    assert plain[:7] == [0, 1, 2, 0, 1, 2, 0]
    for n in (2, 3):
        text = greedy(Repetition(ngram=n))
        grams = [tuple(text[i : i + n]) for i in range(len(text) - n + 1)]
        assert len(grams) == len(set(grams)), (n, text)
    # a seen successor scores 3 / 2 = 1.5 < 2: each unseen token comes before it
    assert greedy(Repetition(penalty=2.0))[:VOCAB] == list(range(VOCAB))


def test_beam_search_loops_without_the_ban_and_not_with_it():
    model = looping_model()
    plain, _ = beam_search(model, [0], 12, beam=3)
    assert len(set(bigrams([0] + plain))) < len(plain)  # a bigram comes back
    banned, _ = beam_search(model, [0], 12, beam=3, repetition=Repetition(ngram=2))
    assert len(set(bigrams([0] + banned))) == len(banned)


def test_the_rules_on_the_command_line(tmp_path):
    folder = make_char_dataset(tmp_path)
    out = tmp_path / "ck"
    made = run_arlm("train", "--data", folder, "--out", out, "--model", "gru",
                    "--hidden-size", 16, "--embedding-dim", 8, "--num-layers", 1,
                    "--max-steps", 3)  # fmt: skip
    assert made.code == 0, made.stderr
    for extra in (["--temperature", 0], ["--beam", 3]):
        found = run_arlm("generate", out, "--prompt", "ab", "--max-tokens", 30,
                         "--no-repeat-ngram", 2, "--repetition-penalty", 1.3, *extra)  # fmt: skip
        assert found.code == 0, found.stderr
    refused = run_arlm("generate", out, "--repetition-penalty", 0)
    assert refused.code == 2 and "--repetition-penalty must be" in refused.stderr
