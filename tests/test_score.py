"""Scoring is exact: every token of a text is scored once, with all the text before it (the
first from the initial state), as one token at a time with the state carried would score it;
bits per byte count only the bytes that the scored tokens stand for; training's validation
figure is the figure `arlm eval` gives."""

import json
import math

import numpy as np
import pytest
import torch

from arlm import checkpoint, data, score
from arlm import sequences as seqs
from arlm.models import KINDS, ModelConfig, build_model
from arlm.score import evaluate
from arlm.tokenizer import Tokenizer
from tests.conftest import make_char_dataset, run_arlm

VOCAB = 12
CPU = torch.device("cpu")
torch.set_num_threads(1)


def tiny(kind: str):
    torch.manual_seed(0)
    config = ModelConfig(
        kind=kind, vocab_size=VOCAB, embedding_dim=6, hidden_size=8, dropout=0.0, states=5
    )
    model = build_model(config)
    if kind == "ngram":
        model.fit(np.random.default_rng(1).integers(0, VOCAB, 300))
    return model.eval()


def text_of(length: int) -> np.ndarray:
    return np.random.default_rng(length).integers(0, VOCAB, length)


@torch.no_grad()
def one_at_a_time(model, ids: np.ndarray) -> np.ndarray:
    """log P(ids[t] | ids[:t]) for each t, reading one token per call from the initial state."""
    logits, state, out = model.initial_logits(1), model.init_state(1), []
    for token in ids.tolist():
        out.append(torch.log_softmax(logits.float(), -1)[0, token].item())
        logits, state = model(torch.tensor([[token]]), state)
        logits = logits[:, -1]
    return np.array(out)


@torch.no_grad()
def one_pass(model, ids: np.ndarray) -> np.ndarray:
    """The same from one forward call over the whole text (fast for long texts)."""
    logits, _ = model(torch.from_numpy(ids[None, :-1]), model.init_state(1))
    logits = torch.cat([model.initial_logits(1)[:, None], logits], dim=1).float()
    picked = torch.log_softmax(logits, -1)[0].gather(1, torch.from_numpy(ids)[:, None])
    return picked[:, 0].numpy()


@pytest.mark.parametrize("kind", KINDS)
# 5,000 tokens one at a time take seconds per model: the slow suite reads them
@pytest.mark.parametrize("length", [1, 2, 9, 120, pytest.param(5000, marks=pytest.mark.slow)])
def test_scoring_equals_one_token_at_a_time(kind, length):
    model, ids = tiny(kind), text_of(length)
    expected = one_at_a_time(model, ids)
    logprobs = np.full(length, np.nan)
    text = data.Text(ids, bytes=3 * length, chars=2 * length)
    figures = score.score(model, text, CPU, torch.float32, logprobs)
    assert figures["tokens"] == length
    total = -figures["loss"] * figures["tokens"]
    assert total == pytest.approx(expected.sum(), rel=1e-4)
    np.testing.assert_allclose(logprobs, expected, rtol=1e-4, atol=1e-5)
    assert figures["bits_per_byte"] == pytest.approx(-total / math.log(2) / (3 * length))


SLOW_KINDS = [pytest.param(k, marks=pytest.mark.slow) for k in ("elman", "jordan", "gru", "hmm")]


@pytest.mark.parametrize("kind", ["ngram", "lstm", *SLOW_KINDS])
def test_a_long_text_read_in_rows_scores_every_token_with_its_context(kind):
    """20,000 tokens: 4 rows, each after the first read on from the tokens before it, and a
    3-token tail that continues the last row. Exact for the n-gram (the burn-in holds its
    context); for the others the burn-in stands for the text before it."""
    model, ids = tiny(kind), text_of(20_000)
    logprobs = np.full(len(ids), np.nan)
    loss, count = evaluate(model, ids, logprobs=logprobs)
    expected = one_pass(model, ids)
    assert count == len(ids) and loss == pytest.approx(-expected.mean(), rel=1e-5)
    np.testing.assert_allclose(logprobs, expected, rtol=1e-5, atol=1e-5)


def test_an_empty_text_is_refused():
    with pytest.raises(Exception, match="empty"):
        score.score(tiny("gru"), data.Text(np.zeros(0, np.int64), 0, 0), CPU, torch.float32)


# -- bits per byte under --sequences -----------------------------------------------------------


def uniform_gru(vocab_size: int):
    """A model whose logits are all zero: each target costs ln V nats."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="gru", vocab_size=vocab_size, hidden_size=8, dropout=0))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model.eval()


def scored(tok: Tokenizer, string: str, unit: str) -> dict:
    text = data.text_from_string(tok, string)
    model = uniform_gru(tok.vocab_size)
    return score.score(model, text, CPU, torch.float32, by_sequence=(unit, tok))


@pytest.mark.parametrize(
    ("unit", "string", "targets", "predicted_bytes"),
    [
        # a b </s> c d </s>: the blank line's newline is predicted by nothing
        ("lines", "ab\n\ncd\n", 6, 6),
        # a b \n c d </s> e f </s>: </s> stands for a blank line (two newlines), not three
        ("documents", "ab\ncd\n\n\nef", 9, 9),
    ],
)
def test_bits_per_byte_by_sequence_by_hand(tokenizers, unit, string, targets, predicted_bytes):
    tok = tokenizers["char"]
    figures = scored(tok, string, unit)
    bits = targets * math.log2(tok.vocab_size)
    assert figures["tokens"] == targets
    assert figures["bits_per_byte"] == pytest.approx(bits / predicted_bytes, rel=1e-6)
    assert figures["bits_per_char"] == pytest.approx(bits / predicted_bytes, rel=1e-6)


def test_extra_blank_lines_change_no_figure(tokenizers):
    """Blank lines are never predicted by sequence models (lines), nor newlines past the two of
    a blank line (documents): adding them changes nothing, bytes and characters included."""
    tok = tokenizers["char"]
    lines = ["the cat sat.", "on a mat", "", "while dogs ran.", "in green parks"]
    text = "\n".join(lines) + "\n"
    more = "\n\n" + "\n\n\n".join(lines) + "\n\n\n"  # blank lines before, between and after
    assert scored(tok, more, "lines") == scored(tok, text, "lines")
    text += "\n"  # a document that ends with a newline of its own would lose it to a cut
    longer_gaps = "\n\n\n" + text.replace("\n\n", "\n\n\n\n")
    assert scored(tok, longer_gaps, "documents") == scored(tok, text, "documents")


def test_unscored_newlines_by_hand():
    NL = 9
    ids = np.array([NL, 5, 6, NL, NL, 7, NL, NL, NL, 8, NL])
    # lines: 5 6 | 7 | 8 each end at a newline their </s> stands for; the other 4 end nothing
    assert seqs.unscored_newlines(ids, NL, "lines") == 4
    # documents: NL 5 6 | 7 | 8 NL; the runs of 2 and 3 newlines stand for 2 each
    assert seqs.unscored_newlines(ids, NL, "documents") == 1
    assert seqs.unscored_newlines(np.array([NL]), NL, "documents") == 1  # no document at all


# -- through the command line ------------------------------------------------------------------

TINY = ["--hidden-size", "16", "--embedding-dim", "8", "--batch-size", "4", "--precision", "fp32",
        "--max-steps", "3", "--eval-every", "1000", "--dropout", "0"]  # fmt: skip


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return make_char_dataset(tmp_path_factory.mktemp("score"), 150)


def trained(dataset, out, *args) -> dict:
    """Train with one evaluation, at the end (so the saved best weights are the last ones);
    return that evaluation's record."""
    result = run_arlm("train", "--data", dataset, "--out", out, *TINY, *args)
    assert result.code == 0, result.stderr
    evals = [m for m in checkpoint.read_metrics(out) if "val_loss" in m]
    assert len(evals) == 1
    return evals[0]


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--model", "ngram"],
        ["--sequences", "lines", "--max-length", "5"],  # --max-length cuts training only
        ["--sequences", "documents"],
    ],
)
def test_validation_during_training_is_what_eval_reports(dataset, tmp_path, args):
    record = trained(dataset, tmp_path / "ck", *args)
    result = run_arlm("eval", tmp_path / "ck", "--data", dataset, "--json")
    assert result.code == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["loss"] == pytest.approx(record["val_loss"], rel=1e-9)
    assert figures["bits_per_byte"] == pytest.approx(record["bits_per_byte"], rel=1e-9)


def test_eval_of_a_string_scores_and_lists_every_token(dataset, tmp_path):
    trained(dataset, tmp_path / "ck")
    tok = Tokenizer.load(tmp_path / "ck")
    ids = tok.encode("ROMEO: hello")
    tsv = tmp_path / "tokens.tsv"
    result = run_arlm(
        "eval", tmp_path / "ck", "--text", "ROMEO: hello", "--json", "--per-token", tsv
    )
    assert result.code == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["tokens"] == len(ids) == 12
    rows = [line.split("\t") for line in tsv.read_text(encoding="utf-8").splitlines()]
    assert rows[0] == ["position", "id", "piece", "logprob"]
    assert [int(r[0]) for r in rows[1:]] == list(range(len(ids)))
    assert [int(r[1]) for r in rows[1:]] == ids
    logprobs = np.array([float(r[3]) for r in rows[1:]])
    assert logprobs.sum() == pytest.approx(-figures["loss"] * figures["tokens"], rel=1e-5)
    model, _ = checkpoint.load(tmp_path / "ck")  # each row is that token's own figure
    np.testing.assert_allclose(logprobs, one_at_a_time(model.eval(), np.array(ids)), atol=1e-5)
    plain = run_arlm("eval", tmp_path / "ck", "--text", "ROMEO: hello")
    assert plain.code == 0 and plain.stderr.startswith("12 tokens: loss")
    one = run_arlm("eval", tmp_path / "ck", "--text", "R", "--json")
    assert one.code == 0 and json.loads(one.stdout)["tokens"] == 1
    empty = run_arlm("eval", tmp_path / "ck", "--text", "")
    assert empty.code == 1 and empty.stderr.startswith("error:") and "empty" in empty.stderr
