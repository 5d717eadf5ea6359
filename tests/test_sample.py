"""Sampling and scoring: filters, exact distributions, carried state, streaming, beam, eval."""

import itertools
import json
import math
import shutil
from pathlib import Path

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
from arlm.models import KINDS, ModelConfig, RecurrentLM, build_model
from arlm.sample import Detokenizer, Sample, beam_search, filtered_probs, generate, pick
from arlm.tokenizer import Tokenizer
from tests.conftest import corpus_text, make_char_dataset, write_config

torch.set_num_threads(1)
runner = CliRunner()
LOGITS = torch.tensor([[2.0, 1.0, 0.5, 0.5, 0.0, -1.0, -3.0, 1.5]])


def test_top_k_one_and_temperature_zero_are_argmax():
    logits = torch.randn(50, 30)
    assert torch.equal(pick(logits, temperature=0), logits.argmax(-1))
    assert torch.equal(pick(logits, temperature=1.3, top_k=1), logits.argmax(-1))


def test_samples_stay_in_the_top_k_even_with_ties():
    logits = torch.tensor([[1.0, 3.0, 3.0, 3.0, 0.0, 3.0]])
    probs = filtered_probs(logits, top_k=2)
    assert (probs > 0).sum().item() == 2  # four tied at the top, exactly two survive
    g = torch.Generator().manual_seed(0)
    draws = pick(logits.expand(2000, -1), 1.0, 3, generator=g)
    assert set(draws.tolist()) <= set(logits[0].topk(3).indices.tolist())


def test_samples_stay_in_the_nucleus():
    probs = torch.softmax(LOGITS, -1)[0]
    order = probs.argsort(descending=True)
    cumulative = probs[order].cumsum(0)
    nucleus = set(order[: int((cumulative < 0.7).sum()) + 1].tolist())  # reaches 0.7
    g = torch.Generator().manual_seed(1)
    draws = pick(LOGITS.expand(5000, -1), 1.0, None, 0.7, generator=g)
    assert set(draws.tolist()) == nucleus


def test_top_k_larger_than_the_vocabulary_is_no_filter():
    assert torch.allclose(filtered_probs(LOGITS, top_k=1000), torch.softmax(LOGITS, -1))


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"),
    [(1.0, None, 1.0), (0.7, 5, 1.0), (1.5, None, 0.8), (0.9, 6, 0.9)],
)
def test_empirical_frequencies_match_the_filtered_tempered_softmax(temperature, top_k, top_p):
    """Chi-square over 20,000 draws; the seed is fixed, so the test cannot flake."""
    expected = filtered_probs(LOGITS, temperature, top_k, top_p)[0]
    g = torch.Generator().manual_seed(1234)
    draws = pick(LOGITS.expand(20_000, -1), temperature, top_k, top_p, generator=g)
    counts = torch.bincount(draws, minlength=LOGITS.shape[1]).double()
    support = expected > 0
    assert (counts[~support] == 0).all()
    e = expected[support].double() * 20_000
    chi2 = (((counts[support] - e) ** 2) / e).sum().item()
    critical = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46, 7: 24.32}
    assert chi2 < critical[int(support.sum()) - 1], chi2  # p = 0.001


def test_tempered_softmax_by_hand():
    probs = filtered_probs(torch.tensor([[0.0, math.log(3.0)]]), temperature=0.5)
    assert probs[0].tolist() == pytest.approx([0.1, 0.9])  # 3^(1/0.5) = 9 : 1


@pytest.mark.parametrize(
    ("t", "k", "p"), [(-0.1, None, 1.0), (1.0, -1, 1.0), (1.0, None, 0.0), (1.0, None, 1.2)]
)
def test_invalid_sampling_values_are_usage_errors(t, k, p):
    with pytest.raises(UsageError):
        filtered_probs(LOGITS, t, k, p)


def tiny(kind: str = "lstm") -> torch.nn.Module:
    torch.manual_seed(0)
    config = ModelConfig(kind=kind, vocab_size=40, embedding_dim=8, hidden_size=16, dropout=0.2)
    model = build_model(config)
    if kind == "ngram":  # counting is its training: without a text every prediction is uniform
        rng = np.random.default_rng(0)
        model.fit((np.arange(3000) * 7 + rng.integers(0, 5, 3000)) % 40)
    return model


def run(model, prompt, n, samples=1, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    steps = list(generate(model, prompt, n, samples, generator=g, **kw))
    return torch.stack([s.ids for s in steps], 1), torch.stack([s.logprobs for s in steps], 1)


def continuation_logprob(model, prompt: list[int], ids: list[int]) -> float:
    """log P(ids | prompt) from one pass of the model over the whole text."""
    model.eval()
    with torch.no_grad():
        first = model.initial_logits(1)[:, None]  # (1, 1, V): the prediction before any token
        logits, _ = model(torch.tensor([prompt + ids]))  # (1, T, V), T - 1 of them needed
    rows = torch.cat([first, logits], 1)[0, len(prompt) : len(prompt) + len(ids)]
    return torch.log_softmax(rows.double(), -1).gather(-1, torch.tensor(ids)[:, None]).sum().item()


@pytest.mark.parametrize("kind", KINDS)
def test_one_token_at_a_time_equals_reading_the_tokens_in_one_pass(kind):
    model = tiny(kind)
    prompt = [3, 1, 4, 1, 5]
    ids, logprobs = run(model, prompt, 12, samples=3, top_k=10)
    model.eval()
    full = torch.cat([torch.tensor([prompt] * 3), ids], dim=1)
    with torch.no_grad():
        logits, _ = model(full[:, :-1])
    expected = torch.log_softmax(logits[:, len(prompt) - 1 :], -1).gather(-1, ids[..., None])
    torch.testing.assert_close(logprobs, expected[..., 0], rtol=1e-5, atol=1e-5)


def test_same_seed_same_tokens_and_mode_is_restored():
    model = tiny("gru")
    model.train()
    a, _ = run(model, [1, 2], 30, seed=7)
    b, _ = run(model, [1, 2], 30, seed=7)
    c, _ = run(model, [1, 2], 30, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert model.training
    model.eval()
    run(model, [1], 3)
    assert not model.training


def test_empty_prompt_starts_from_the_zero_state():
    model = tiny("elman")
    ids, logprobs = run(model, [], 5, temperature=0)
    first = torch.log_softmax(model.output.bias.detach(), -1)
    assert ids[0, 0].item() == first.argmax().item()
    assert logprobs[0, 0].item() == pytest.approx(first.max().item(), rel=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_beam_of_width_one_is_greedy(kind):
    model = tiny(kind)
    greedy, logprobs = run(model, [2, 7], 15, temperature=0)
    ids, total = beam_search(model, [2, 7], 15, beam=1)
    assert ids == greedy[0].tolist()
    assert total == pytest.approx(logprobs.sum().item(), rel=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("prompt", [[], [2, 7]])
def test_beam_returns_the_models_log_probability_of_its_text(kind, prompt):
    model = tiny(kind)
    for stop_ids in (set(), {0, 1, 2, 3}):  # with stops, some hypotheses finish early
        ids, total = beam_search(model, prompt, 10, beam=4, stop_ids=stop_ids)
        assert total == pytest.approx(continuation_logprob(model, prompt, ids), rel=1e-5)
        assert len(ids) == 10 or ids[-1] in stop_ids


def test_wider_beams_find_texts_at_least_as_likely():
    model = tiny("lstm")
    scores = [beam_search(model, [5], 8, beam=b)[1] for b in (1, 4, 16)]
    assert scores[0] <= scores[1] + 1e-6 and scores[1] <= scores[2] + 1e-6


class TableLM(torch.nn.Module):
    """A bigram model given by its table: row v is P(next | v), the last row P(first token)."""

    state_batch_dims = (0,)

    def __init__(self, table: list[list[float]]) -> None:
        super().__init__()
        self.register_buffer("table", torch.log(torch.tensor(table, dtype=torch.float64)))
        self.calls = 0  # steps read, to see where a search stopped

    def init_state(self, batch_size: int) -> tuple[torch.Tensor]:
        return (torch.full((batch_size,), len(self.table) - 1),)

    def initial_logits(self, batch_size: int) -> torch.Tensor:
        return self.table[-1].expand(batch_size, -1)

    def forward(self, ids: torch.Tensor, state=None) -> tuple[torch.Tensor, tuple]:
        self.calls += 1
        return self.table[ids], (ids[:, -1],)

    select_state = RecurrentLM.select_state


STOP, A, B = 0, 1, 2


def test_length_normalisation_prefers_a_longer_text_that_is_likelier_per_token():
    model = TableLM(
        [
            [1 / 3, 1 / 3, 1 / 3],  # after the stop: never read
            [0.04, 0.06, 0.90],  # after a: b
            [0.90, 0.05, 0.05],  # after b: the stop
            [0.50, 0.40, 0.10],  # first: the stop is the likeliest token
        ]
    )
    short, long = [STOP], [A, B, STOP]  # totals log 0.5 = -0.69 > log(0.4 * 0.9 * 0.9) = -1.13
    assert beam_search(model, [], 8, beam=2, stop_ids={STOP}, length_penalty=0) == (
        short,
        pytest.approx(math.log(0.5)),
    )
    model.calls = 0
    ids, total = beam_search(model, [], 8, beam=2, stop_ids={STOP})  # -0.38 per token
    assert (ids, total) == (long, pytest.approx(math.log(0.4 * 0.9 * 0.9)))
    # after 3 tokens the best running text, a a b (total -3.84), can at best reach -3.84 / 8:
    # below -0.38, so the search stops there (2 steps read) instead of going on to 8 tokens
    assert model.calls == 2


def best_by_enumeration(model: TableLM, max_tokens: int, alpha: float) -> list[int]:
    """The text of at most `max_tokens` tokens, ended by STOP or by the limit, with the best
    total / length**alpha: every such text scored."""
    texts = []
    for n in range(1, max_tokens + 1):
        for ids in itertools.product(range(3), repeat=n):
            if STOP not in ids[:-1] and (ids[-1] == STOP or n == max_tokens):
                texts.append(list(ids))
    scores = [continuation_logprob(model, [], ids) / len(ids) ** alpha for ids in texts]
    return texts[int(np.argmax(scores))]


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0, 2.0])
def test_a_beam_wide_enough_for_every_text_finds_the_best_one(alpha):
    """Nothing is pruned by width here, so only stopping early could lose the best text."""
    rng = np.random.default_rng(int(alpha * 10))
    for _ in range(20):
        model = TableLM(rng.dirichlet(np.ones(3) * 0.7, size=4).tolist())
        ids, _ = beam_search(model, [], 5, beam=3**5, stop_ids={STOP}, length_penalty=alpha)
        assert ids == best_by_enumeration(model, 5, alpha)


@pytest.mark.parametrize("alpha", [-0.5, math.nan, math.inf])
def test_a_length_penalty_that_is_not_a_finite_non_negative_number_is_refused(alpha):
    with pytest.raises(UsageError, match="--length-penalty"):
        beam_search(TableLM([[0.5, 0.5]] * 3), [], 4, beam=2, length_penalty=alpha)


@settings(max_examples=80, deadline=None)
@given(data_=st.data())
def test_streamed_text_equals_the_final_decode(tokenizers, data_):
    tok = tokenizers[data_.draw(st.sampled_from(["bpe", "char", "word"]))]
    prompt = tok.encode(data_.draw(st.text(max_size=10)))
    ids = data_.draw(st.lists(st.integers(0, tok.vocab_size - 1), max_size=40))
    stream = Detokenizer(tok, prompt)
    pieces = [stream.add(i) for i in ids] + [stream.finish()]
    assert "".join(pieces) == tok.decode(prompt + ids)[len(tok.decode(prompt)) :]
    for piece in pieces[:-1]:
        assert "\ufffd" not in piece[-1:]  # never half a character on screen


def test_bits_per_byte_by_hand():
    """A model whose logits are all zero predicts uniformly: each token costs ln V nats."""
    model = tiny("gru").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    text = data.Text(np.arange(10) % 40, bytes=25, chars=20)
    figures = score.score(model, text, torch.device("cpu"), torch.float32)
    assert figures["loss"] == pytest.approx(math.log(40))
    assert figures["perplexity"] == pytest.approx(40)
    assert figures["bits_per_byte"] == pytest.approx(10 * math.log2(40) / 25)
    assert figures["bits_per_char"] == pytest.approx(10 * math.log2(40) / 20)


# -- the commands -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gen")
    make_char_dataset(folder, 150)
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(folder / "ds"),
            "--out",
            str(folder / "ck"),
            "--hidden-size",
            "32",
            "--max-steps",
            "40",
            "--eval-every",
            "20",
            "--batch-size",
            "8",
        ],
    )
    assert result.exit_code == 0, result.output
    return folder


def generate_cli(*args):
    return runner.invoke(app, ["generate", *map(str, args)])


def test_generate_is_reproducible_and_streams_only_text(trained):
    args = [
        trained / "ck",
        "--prompt",
        "the cat",
        "--max-tokens",
        "60",
        "--top-k",
        "5",
        "--temperature",
        "0.8",
        "--seed",
        "1",
    ]
    first, second, as_json = generate_cli(*args), generate_cli(*args), generate_cli(*args, "--json")
    assert first.exit_code == 0 and as_json.exit_code == 0, first.output
    assert first.stdout == second.stdout
    record = json.loads(as_json.stdout)
    assert len(record["ids"]) == 60
    # stdout holds the prompt, the 60 tokens' text and a newline: nothing else
    assert first.stdout == "the cat" + record["text"] + "\n" and first.stderr == ""


def test_generate_json_batch_and_stop_strings(trained):
    result = generate_cli(
        trained / "ck",
        "--prompt",
        "the",
        "--num-samples",
        "3",
        "--json",
        "--seed",
        "3",
        "--max-tokens",
        "80",
        "--stop",
        ".",
    )
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(records) == 3
    for record in records:
        assert record["prompt"] == "the" and "." not in record["text"]
        assert record["logprob"] < 0 and record["ids"]


def test_a_stop_string_split_across_tokens_is_never_printed(tokenizers):
    """Each stop string straddles a token boundary, so its first part arrives a token before
    its end: that part must be held back, then dropped, never printed."""
    tok = tokenizers["unigram"]
    text = "the cat sat on a mat while dogs ran after red balls"
    ids = tok.encode(text)
    assert tok.decode(ids) == text and len(ids) < len(text) / 2  # pieces of several characters
    for i in range(1, len(ids) - 1):
        boundary = len(tok.decode(ids[:i]))  # where token i starts in the text
        stop = text[boundary - 2 : boundary + 2]
        expected = text[: text.find(stop)]
        sample, shown = Sample(tok, [], [stop]), ""
        for token in ids:
            shown += sample.add(token, 0.0)
            assert expected.startswith(shown), (stop, shown)  # never past the stop's start
        assert sample.stopped and shown + sample.finish() == expected


def test_a_stop_string_across_tokens_ends_the_streamed_and_the_json_text(counted):
    args = [counted, "--prompt", "the", "--max-tokens", "40", "--temperature", "0"]
    text = json.loads(generate_cli(*args, "--json").stdout)["text"]
    stop = text[6:9]  # three characters: three tokens of this character tokenizer
    expected = text[: text.find(stop)]
    assert expected and len(expected) < len(text) - 3  # the text goes on past the stop
    streamed = generate_cli(*args, "--stop", stop)
    assert streamed.exit_code == 0 and streamed.stdout == "the" + expected + "\n"
    assert json.loads(generate_cli(*args, "--stop", stop, "--json").stdout)["text"] == expected


def test_generate_reads_a_prompt_file_or_stdin_and_any_characters(trained, tmp_path):
    path = tmp_path / "prompt.txt"
    path.write_text("ünseen ✨ ", encoding="utf-8")
    from_file = generate_cli(
        trained / "ck", "--prompt-file", path, "--max-tokens", "5", "--seed", "0"
    )
    assert from_file.exit_code == 0 and from_file.stdout.startswith("ünseen ✨ ")
    piped = runner.invoke(
        app,
        ["generate", str(trained / "ck"), "--max-tokens", "5", "--seed", "0"],
        input="ünseen ✨ ",
    )
    assert piped.stdout == from_file.stdout


@pytest.fixture(scope="module")
def counted(tmp_path_factory) -> Path:
    """A 4-gram checkpoint: counted in milliseconds, and it writes words, so beam search finds
    likelier texts than greedy decoding (the tiny LSTM of `trained` only writes spaces)."""
    root = tmp_path_factory.mktemp("counted")
    make_char_dataset(root, 150)
    folder = root / "ck"
    folder.mkdir()
    shutil.copy(root / "ds" / checkpoint.TOKENIZER, folder / checkpoint.TOKENIZER)
    tokenizer = Tokenizer.load(folder / checkpoint.TOKENIZER)
    model = build_model(ModelConfig(kind="ngram", vocab_size=tokenizer.vocab_size, order=4))
    model.fit(np.array(tokenizer.encode((root / "corpus.txt").read_text(encoding="utf-8"))))
    write_config(folder, model)
    checkpoint.save_weights(model, folder)
    return folder


def test_beam_search_from_the_command_line(counted):
    args = [counted, "--prompt", "the", "--max-tokens", "20", "--json"]
    beam, greedy = generate_cli(*args, "--beam", "4"), generate_cli(*args, "--temperature", "0")
    assert beam.exit_code == 0 and greedy.exit_code == 0, beam.output
    found, first = json.loads(beam.stdout), json.loads(greedy.stdout)
    model, _, tokenizer, _ = load(counted, "cpu")
    prompt = tokenizer.encode("the")
    stop_ids = {tokenizer.eos_id} if tokenizer.eos_id >= 0 else set()
    ids, total = beam_search(model, prompt, 20, 4, stop_ids)
    assert found["ids"] == ids and found["logprob"] == pytest.approx(total, rel=1e-6)
    assert total == pytest.approx(continuation_logprob(model, prompt, ids), rel=1e-5)
    assert found["logprob"] > first["logprob"]  # here beam search finds a likelier text
    assert found["text"] == tokenizer.decode(prompt + ids)[len("the") :]
    printed = generate_cli(*args[:-1], "--beam", "4")
    assert printed.stdout == "the" + found["text"] + "\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--temperature", "-1"], "--temperature"),
        (["--top-k", "-2"], "--top-k"),
        (["--top-p", "0"], "--top-p"),
        (["--top-p", "1.5"], "--top-p"),
        (["--num-samples", "0"], "--num-samples"),
        (["--beam", "3", "--num-samples", "2"], "drop --num-samples"),
        (["--prompt", "a", "--prompt-file", "x.txt"], "use one"),
    ],
)
def test_bad_generate_flags_are_usage_errors(trained, args, message):
    result = generate_cli(trained / "ck", *args)
    assert result.exit_code == 2 and message in result.stderr and result.stdout == ""


def test_eval_on_the_dataset_equals_the_trainers_validation_figure(trained):
    result = runner.invoke(
        app, ["eval", str(trained / "ck"), "--data", str(trained / "ds"), "--json"]
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert set(figures) == {"tokens", "loss", "perplexity", "bits_per_byte", "bits_per_char"}
    metrics = [json.loads(line) for line in (trained / "ck" / "metrics.jsonl").open()]
    best = min(m["val_loss"] for m in metrics if "val_loss" in m)
    assert figures["loss"] == pytest.approx(best, rel=1e-9)
    assert figures["perplexity"] == pytest.approx(math.exp(best))


def test_eval_of_a_text_file_a_string_and_per_token_output(trained, tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("the cat sat on a mat.\n" * 20, encoding="utf-8")
    tsv = tmp_path / "tokens.tsv"
    result = runner.invoke(
        app, ["eval", str(trained / "ck"), "--data", str(path), "--json", "--per-token", str(tsv)]
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["tokens"] == 440 and figures["bits_per_byte"] == figures["bits_per_char"]
    rows = tsv.read_text().splitlines()
    assert rows[0] == "position\tid\tpiece\tlogprob"
    logprobs = [float(r.split("\t")[3]) for r in rows[1:]]
    assert -sum(logprobs) / len(logprobs) == pytest.approx(figures["loss"], rel=1e-5)
    same = runner.invoke(app, ["eval", str(trained / "ck"), "--text", path.read_text(), "--json"])
    assert json.loads(same.stdout) == figures


def test_eval_refuses_a_dataset_from_another_tokenizer(trained, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text(corpus_text(30), encoding="utf-8")
    data.build(tmp_path / "ds", [data.scan(other)], vocab_size=300)
    result = runner.invoke(app, ["eval", str(trained / "ck"), "--data", str(tmp_path / "ds")])
    assert result.exit_code == 1 and "another tokenizer" in result.stderr


def test_a_tokenizer_without_byte_fallback_says_which_characters_it_replaced(capsys):
    import io

    import sentencepiece as spm
    from rich.console import Console

    from arlm.commands.generate import warn_unknown
    from arlm.tokenizer import Tokenizer

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus_text(50).split("\n")),
        model_writer=model,
        vocab_size=60,
        model_type="char",
        character_coverage=1.0,
        minloglevel=2,
    )
    tok = Tokenizer(model.getvalue())
    assert not tok.byte_fallback
    console = Console(stderr=True, soft_wrap=True)
    warn_unknown(tok, "the cat ✨ and ж", console)
    err = capsys.readouterr().err
    assert "replaced by <unk>" in err and "'✨'" in err and "'ж'" in err
