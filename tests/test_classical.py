"""The n-gram and HMM language models against independent computations: Kneser-Ney by plain
dictionaries, the forward algorithm by enumerating every hidden path."""

import itertools
import json
import math
from collections import Counter, defaultdict

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from arlm import checkpoint, data, score
from arlm.cli import app
from arlm.commands._shared import load
from arlm.errors import UsageError
from arlm.models import ModelConfig, build_model, device_of
from arlm.sample import beam_search, generate
from tests.conftest import make_char_dataset, write_config

runner = CliRunner()


def ngram(ids, order: int, vocab: int):
    model = build_model(ModelConfig(kind="ngram", vocab_size=vocab, order=order))
    model.fit(np.array(ids))
    return model


def kneser_ney_by_hand(ids: list[int], order: int, vocab: int, context: tuple) -> list[float]:
    """P(w | context) for every w, from dictionaries of counts, straight from the formula."""
    bos = vocab
    seq = [bos] * (order - 1) + list(ids)
    ends = range(order - 1, len(seq))  # n-grams end at a real token
    tables = {}
    for n in range(1, order + 1):
        if n == order:
            counts = Counter(tuple(seq[i - n + 1 : i + 1]) for i in ends)
        else:
            longer = {tuple(seq[i - n : i + 1]) for i in ends if i - n >= 0}
            counts = Counter(g[1:] for g in longer)
        ones = sum(1 for c in counts.values() if c == 1)
        twos = sum(1 for c in counts.values() if c == 2)
        discount = min(0.95, max(0.05, ones / (ones + 2 * twos))) if ones else 0.5
        by_context = defaultdict(dict)
        for gram, c in counts.items():
            by_context[gram[:-1]][gram[-1]] = c
        tables[n] = (by_context, discount)

    def p(w: int, n: int) -> float:
        if n == 0:
            return 1 / vocab
        by_context, D = tables[n]
        h = tuple(context[len(context) - (n - 1) :]) if n > 1 else ()
        seen = by_context.get(h)
        if not seen:
            return p(w, n - 1)
        total = sum(seen.values())
        return max(seen.get(w, 0) - D, 0) / total + D * len(seen) / total * p(w, n - 1)

    return [p(w, order) for w in range(vocab)]


@settings(max_examples=40, deadline=None)
@given(
    ids=st.lists(st.integers(0, 4), min_size=1, max_size=40),
    order=st.integers(1, 4),
    context=st.lists(st.integers(0, 5), min_size=3, max_size=3),
)
def test_kneser_ney_equals_the_formula_by_hand(ids, order, context):
    vocab = 5
    model = ngram(ids, order, vocab)
    ctx = np.array([context[3 - (order - 1) :] if order > 1 else []], dtype=np.int64)
    got = model.distributions(ctx.reshape(1, order - 1))[0]
    expected = kneser_ney_by_hand(ids, order, vocab, tuple(ctx[0]))
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert got.sum() == pytest.approx(1.0) and (got > 0).all()  # finite on any token


def test_counts_of_a_tiny_text_by_hand():
    # "a b a b c" as ids 0 1 0 1 2, bigrams: (bos a) (a b) (b a) (a b) (b c)
    model = ngram([0, 1, 0, 1, 2], 2, 3)
    base = 4
    keys2 = model.keys2.tolist()
    counts2 = dict(zip(keys2, model.counts2.tolist(), strict=True))
    assert counts2 == {3 * base + 0: 1, 0 * base + 1: 2, 1 * base + 0: 1, 1 * base + 2: 1}
    # continuation counts of unigrams: a after {bos, b}, b after {a}, c after {b}
    assert dict(zip(model.keys1.tolist(), model.counts1.tolist(), strict=True)) == {
        0: 2,
        1: 1,
        2: 1,
    }
    # P(b | a): c(a b) = 2 of c(a .) = 2, one distinct follower; D from counts of counts
    D = model.discounts[1].item()
    assert D == pytest.approx(3 / (3 + 2 * 1))  # three bigrams seen once, one twice
    # unigram: continuation counts a 2, b 1, c 1 (total 4), D1 = 2 / (2 + 2 * 1) = 0.5, so
    # P1(b) = (1 - 0.5) / 4 + 0.5 * 3 / 4 * 1 / 3 = 0.25
    assert model.discounts[0].item() == pytest.approx(0.5)
    p = model.distributions(np.array([[0]]))[0]
    assert p[1] == pytest.approx((2 - D) / 2 + D * 1 / 2 * 0.25)
    assert p.sum() == pytest.approx(1.0)


def test_ngram_state_carries_across_calls_and_survives_a_checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 7, 500)
    model = ngram(ids, 3, 7)
    text = torch.from_numpy(rng.integers(0, 7, (2, 20)))
    whole, _ = model(text)
    head, state = model(text[:, :8])
    tail, _ = model(text[:, 8:], state)
    torch.testing.assert_close(torch.cat([head, tail], 1), whole)
    write_config(tmp_path, model)
    checkpoint.save_weights(model, tmp_path)
    loaded, _ = checkpoint.load(tmp_path)
    assert torch.equal(loaded(text)[0], whole)


def test_moving_an_ngram_to_another_device_leaves_its_tables_on_the_cpu():
    """numpy reads the counts: `.to()` a device (meta here, where `.numpy()` raises as it does
    on CUDA) or a dtype leaves every table where it is, as it is."""
    model = ngram(np.random.default_rng(0).integers(0, 7, 500), 3, 7)
    tables = {name: table.clone() for name, table in model.state_dict().items()}
    assert model.to("meta").half() is model
    assert device_of(model) == torch.device("cpu")
    for name, table in model.state_dict().items():
        assert table.device.type == "cpu" and table.dtype == tables[name].dtype
        assert torch.equal(table, tables[name])


def test_an_ngram_loaded_onto_another_device_scores_and_generates_as_on_the_cpu(tmp_path):
    """What `arlm eval` and `arlm generate --device cuda` did to an n-gram checkpoint, with the
    meta device standing in for CUDA: the figures, the samples and the beam are the CPU's."""
    rng = np.random.default_rng(0)
    model = ngram(rng.integers(0, 7, 500), 3, 7)
    write_config(tmp_path, model)
    checkpoint.save_weights(model, tmp_path)
    text = data.Text(rng.integers(0, 7, 300), bytes=300, chars=300)

    def outputs(device: str) -> tuple:
        model, _ = checkpoint.load(tmp_path, device)
        figures = score.score(model, text, device_of(model), torch.float32)
        g = torch.Generator(device_of(model)).manual_seed(0)
        sampled = [step.ids.tolist() for step in generate(model, [1, 2], 20, 3, generator=g)]
        sampled += [step.ids.tolist() for step in generate(model, [], 5, 2, generator=g)]
        beams = [beam_search(model, prompt, 10, 3) for prompt in ([1, 2], [])]
        return figures, sampled, beams

    assert outputs("meta") == outputs("cpu")


def test_an_order_too_long_for_the_vocabulary_is_refused():
    with pytest.raises(UsageError, match="--order 6 is too long"):
        build_model(ModelConfig(kind="ngram", vocab_size=33_000, order=6))


# -- HMM ---------------------------------------------------------------------------------------


def hmm(states: int, vocab: int, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(kind="hmm", vocab_size=vocab, states=states)).eval()


def sequence_logprob(model, ids: list[int]) -> float:
    """log P(w_1..w_T) from the model's own next-token log-probabilities."""
    first = torch.log_softmax(model.initial_logits(1), -1)[0, ids[0]]
    if len(ids) == 1:
        return first.item()
    logits, _ = model(torch.tensor([ids[:-1]]))
    rest = torch.log_softmax(logits, -1)[0].gather(-1, torch.tensor(ids[1:])[:, None]).sum()
    return (first + rest).item()


@pytest.mark.parametrize("ids", [[0], [2, 1], [0, 1, 2, 1], [2, 2, 0, 1, 1]])
def test_forward_algorithm_equals_the_sum_over_every_hidden_path(ids):
    model = hmm(states=3, vocab=3)
    pi, A, B = (t.double() for t in model.probabilities())
    total = 0.0
    for path in itertools.product(range(3), repeat=len(ids)):
        p = pi[path[0]] * B[path[0], ids[0]]
        for t in range(1, len(ids)):
            p = p * A[path[t - 1], path[t]] * B[path[t], ids[t]]
        total += p.item()
    assert sequence_logprob(model, ids) == pytest.approx(math.log(total), rel=1e-5)


def test_a_long_text_never_underflows():
    model = hmm(states=8, vocab=50)
    ids = torch.randint(0, 50, (1, 5000))
    logits, (p,) = model(ids)
    assert torch.isfinite(logits).all() and torch.isfinite(p).all()
    assert p.sum().item() == pytest.approx(1.0, abs=1e-5)


def logprobs_one_at_a_time(model, ids: list[int]) -> list[float]:
    """log P(w_t | w_<t) for every token, reading one token at a time from the initial state."""
    logits, state, out = model.initial_logits(1), model.init_state(1), []
    with torch.no_grad():
        for token in ids:
            out.append(torch.log_softmax(logits[0].double(), -1)[token].item())
            step, state = model(torch.tensor([[token]]), state)
            logits = step[:, -1]
    return out


def hmm_generate(model, prompt: list[int], n: int, seed: int, **kw) -> tuple[list, list]:
    g = torch.Generator().manual_seed(seed)
    steps = list(generate(model, prompt, n, generator=g, **kw))
    return [int(s.ids[0]) for s in steps], [float(s.logprobs[0]) for s in steps]


def test_greedy_hmm_generation_is_the_same_for_every_seed_and_follows_the_prediction():
    model = hmm(states=4, vocab=6, seed=1)
    texts = {tuple(hmm_generate(model, [2, 5], 30, seed, temperature=0)[0]) for seed in range(8)}
    assert len(texts) == 1
    ids = [2, 5, *texts.pop()]
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids[:-1]]))
    assert ids[2:] == logits[0, 1:].argmax(-1).tolist()  # each token: the most likely next one


@pytest.mark.parametrize("prompt", [[], [1, 4, 4]])
@pytest.mark.parametrize(("temperature", "top_k", "top_p"), [(1.0, None, 1.0), (0.7, 3, 0.9)])
def test_hmm_generation_reports_the_models_log_probabilities(prompt, temperature, top_k, top_p):
    """What `generate` (and so `--json`) reports is P(w | text so far), whatever the filters."""
    model = hmm(states=5, vocab=7, seed=2)
    ids, logprobs = hmm_generate(model, prompt, 25, 0, temperature=temperature, top_k=top_k,
                                 top_p=top_p)  # fmt: skip
    expected = logprobs_one_at_a_time(model, prompt + ids)[len(prompt) :]
    np.testing.assert_allclose(logprobs, expected, rtol=1e-5, atol=1e-6)


def test_generation_follows_a_deterministic_hidden_chain():
    """A chain 0 -> 1 -> 2 -> 0 whose state s emits token s: the prediction, and so generation
    at any temperature, must follow it."""
    model = hmm(states=3, vocab=3)
    with torch.no_grad():
        model.transition.copy_(torch.eye(3).roll(1, dims=1) * 50)
        model.emission.copy_(torch.eye(3) * 50)
    g = torch.Generator().manual_seed(0)
    tokens = [int(s.ids[0]) for s in generate(model, [0], 9, temperature=1.0, generator=g)]
    assert tokens == [1, 2, 0, 1, 2, 0, 1, 2, 0]


# -- through the command line ----------------------------------------------------------------


@pytest.fixture(scope="module")
def char_dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("classical")
    make_char_dataset(folder, 200)
    return folder


@pytest.mark.parametrize(
    "args",
    [
        ["--model", "ngram", "--order", "4"],
        [
            "--model",
            "hmm",
            "--states",
            "8",
            "--max-steps",
            "30",
            "--lr",
            "0.05",
            "--batch-size",
            "4",
        ],
    ],
)
def test_train_generate_and_eval_work_for_the_classical_models(char_dataset, tmp_path, args):
    out = tmp_path / "ck"
    result = runner.invoke(
        app, ["train", "--data", str(char_dataset / "ds"), "--out", str(out), *args]
    )
    assert result.exit_code == 0, result.output
    args = ["generate", str(out), "--prompt", "the ", "--max-tokens", "40", "--top-k", "5",
            "--temperature", "0.7", "--seed", "3"]  # fmt: skip
    sample, again, as_json = (runner.invoke(app, a) for a in (args, args, [*args, "--json"]))
    assert sample.exit_code == 0 and as_json.exit_code == 0, sample.output
    assert again.stdout == sample.stdout  # same seed, same text
    record = json.loads(as_json.stdout)
    assert sample.stdout == "the " + record["text"] + "\n"  # the prompt, then the sample, only
    model, _, tokenizer, _ = load(out, "cpu")
    prompt = tokenizer.encode("the ")
    assert len(record["ids"]) == 40
    assert record["text"] == tokenizer.decode(prompt + record["ids"])[len("the ") :]
    # the reported log-probability is the model's, not that of a filtered distribution
    expected = logprobs_one_at_a_time(model, prompt + record["ids"])[len(prompt) :]
    assert record["logprob"] == pytest.approx(sum(expected), rel=1e-5)
    scored = runner.invoke(
        app, ["eval", str(out), "--text", "unseen: QXZ \u2603 and the cat", "--json"]
    )
    assert scored.exit_code == 0, scored.output
    figures = json.loads(scored.stdout)
    assert math.isfinite(figures["perplexity"]) and figures["perplexity"] > 1


def test_an_ngram_scores_a_block_of_rows_at_a_time_with_the_same_result(monkeypatch):
    """A word vocabulary makes each row read up to V table entries per order: rows go through
    in blocks (BLOCK_ENTRIES), which changes nothing but the memory it takes."""
    from arlm.models import classical

    model = ngram(np.random.default_rng(3).integers(0, 9, 400).tolist(), order=3, vocab=9)
    ids = torch.from_numpy(np.random.default_rng(4).integers(0, 9, (3, 17)))
    whole, _ = model(ids)
    monkeypatch.setattr(classical, "BLOCK_ENTRIES", 9 * 2)  # two rows a block
    blocked, _ = model(ids)
    assert torch.equal(whole, blocked)
    assert torch.equal(model.initial_logits(5)[0], model.initial_logits(1)[0])


def test_a_counting_model_leaves_the_allocator_as_it_is(monkeypatch):
    """keep_freed_memory makes glibc keep every freed block for the next training step; an
    n-gram's scoring makes temporaries of every size, which the heap would then hold on to
    (a word-level trigram went past 20 GB). Only models trained by gradient ask for it."""
    from arlm.settings import TrainConfig
    from arlm.training import trainer as trainer_module

    calls = []
    monkeypatch.setattr(trainer_module, "keep_freed_memory", lambda: calls.append(1))
    ids = np.random.default_rng(0).integers(0, 9, 300)
    config = TrainConfig(device="cpu", max_steps=1, epochs=None)
    trainer_module.Trainer(ngram(ids.tolist(), 2, 9), ids, ids[:50], config)
    assert calls == []
    model = build_model(ModelConfig(kind="gru", vocab_size=9, hidden_size=8, embedding_dim=8))
    trainer_module.Trainer(model, ids, ids[:50], config)
    assert calls == [1]
