"""Sampling and scoring: filters, exact distributions, carried state, streaming, beam, eval."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from arlm import data, score
from arlm.cli import app
from arlm.errors import UsageError
from arlm.models import REGISTRY, ModelConfig, build_model
from arlm.sample import Detokenizer, beam_search, filtered_probs, generate, pick
from tests.conftest import corpus_text, make_char_dataset

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
    return build_model(config)


def run(model, prompt, n, samples=1, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    steps = list(generate(model, prompt, n, samples, generator=g, **kw))
    return torch.stack([s.ids for s in steps], 1), torch.stack([s.logprobs for s in steps], 1)


@pytest.mark.parametrize("kind", list(REGISTRY))
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


@pytest.mark.parametrize("kind", list(REGISTRY))
def test_beam_of_width_one_is_greedy(kind):
    model = tiny(kind)
    greedy, logprobs = run(model, [2, 7], 15, temperature=0)
    ids, total = beam_search(model, [2, 7], 15, beam=1)
    assert ids == greedy[0].tolist()
    assert total == pytest.approx(logprobs.sum().item(), rel=1e-5)


def test_wider_beams_find_texts_at_least_as_likely():
    model = tiny("lstm")
    scores = [beam_search(model, [5], 8, beam=b)[1] for b in (1, 4, 16)]
    assert scores[0] <= scores[1] + 1e-6 and scores[1] <= scores[2] + 1e-6


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
    text = score.Text(np.arange(10) % 40, bytes=25, chars=20)
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
    first, second = generate_cli(*args), generate_cli(*args)
    assert first.exit_code == 0, first.output
    assert first.stdout == second.stdout
    assert first.stdout.startswith("the cat") and first.stderr == ""


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


def test_beam_search_from_the_command_line(trained):
    result = generate_cli(trained / "ck", "--prompt", "the", "--beam", "4", "--max-tokens", "20")
    greedy = generate_cli(trained / "ck", "--prompt", "the", "--beam", "4", "--max-tokens", "20")
    assert result.exit_code == 0 and result.stdout == greedy.stdout


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
    assert result.exit_code == 2 and "another tokenizer" in result.stderr


def test_a_tokenizer_without_byte_fallback_says_which_characters_it_replaced(capsys):
    import io

    import sentencepiece as spm
    from rich.console import Console

    from arlm.generate_cli import warn_unknown
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
