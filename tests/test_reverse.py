"""Backwards models (`arlm train --reverse`): the same data read right to left. `generate`
writes the text that ends with the prompt; `eval` scores a text right to left."""

import json
from pathlib import Path

import pytest

from arlm import data
from tests.conftest import run_arlm


@pytest.fixture(scope="module")
def abcd(tmp_path_factory) -> Path:
    """Lines of "abcd" repeated, tokenized by characters."""
    folder = tmp_path_factory.mktemp("abcd")
    corpus = folder / "corpus.txt"
    corpus.write_text("abcd" * 20 + "\n" * 1 + ("abcd" * 20 + "\n") * 49, encoding="utf-8")
    data.build(folder / "ds", [data.scan(corpus)], model_type="char")
    return folder / "ds"


def train(dataset: Path, out: Path, *flags: object) -> Path:
    result = run_arlm("train", "--data", dataset, "--out", out, "--max-steps", 30, *flags)
    assert result.code == 0, result.stderr
    return out


def figures(checkpoint: Path, *flags: object) -> dict:
    result = run_arlm("eval", checkpoint, "--json", *flags)
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def test_a_backwards_model_writes_the_text_that_ends_with_the_prompt(abcd, tmp_path):
    model = train(abcd, tmp_path / "back", "--model", "ngram", "--order", 3, "--reverse")
    result = run_arlm("generate", model, "--prompt", "ab", "--max-tokens", 7, "--top-k", 1)
    assert result.code == 0, result.stderr
    assert result.stdout == "bcdabcdab\n"  # leftwards from "ab": d, c, b, a, d, c, b
    result = run_arlm("generate", model, "--prompt", "cd", "--max-tokens", 3, "--beam", 2, "--json")
    record = json.loads(result.stdout)
    assert record["text"] == "dab" and record["prompt"] == "cd" and len(record["ids"]) == 3


def test_a_stop_string_cuts_the_text_where_the_model_wrote_it_first(abcd, tmp_path):
    model = train(abcd, tmp_path / "back", "--model", "ngram", "--order", 3, "--reverse")
    result = run_arlm(
        "generate", model, "--prompt", "ab", "--max-tokens", 9, "--top-k", 1, "--stop", "b"
    )
    assert result.stdout == "cdab\n"  # "dabcdabcd" + "ab": after the "b" nearest the prompt
    result = run_arlm("generate", model, "--prompt", "ab", "--max-tokens", 9, "--top-k", 1,
                      "--stop", "b", "--json")  # fmt: skip
    record = json.loads(result.stdout)  # it stopped at the token that wrote the "b": d, c, b
    assert record["text"] == "cd" and len(record["ids"]) == 3


def test_forwards_and_backwards_a_unigram_model_scores_a_text_the_same(abcd, tmp_path):
    """A unigram model's probability of a text does not depend on the order it is read in:
    the backwards score is the forward one. (For richer models both directions estimate the
    same joint probability, and come out close: the README's pair.)"""
    ahead = train(abcd, tmp_path / "ahead", "--model", "ngram", "--order", 1)
    back = train(abcd, tmp_path / "back", "--model", "ngram", "--order", 1, "--reverse")
    text = "abcdabca\nddcba\n"
    a, b = figures(ahead, "--text", text), figures(back, "--text", text)
    assert b["bits_per_byte"] == pytest.approx(a["bits_per_byte"], rel=1e-12)
    assert b["tokens"] == a["tokens"]


def test_backwards_eval_reads_right_to_left_and_lists_tokens_in_reading_order(abcd, tmp_path):
    back = train(abcd, tmp_path / "back", "--model", "ngram", "--order", 3, "--reverse")
    # it learned "dcba...": a text that reads so right to left is likely, one written so is not
    likely, unlikely = figures(back, "--text", "abcdabcd"), figures(back, "--text", "dcbadcba")
    assert likely["loss"] * 5 < unlikely["loss"]  # here 0.31 and 2.92 nats per token
    table = tmp_path / "tokens.tsv"
    figures(back, "--text", "abcd", "--per-token", table)
    pieces = [line.split("\t")[2] for line in table.read_text().splitlines()[1:]]
    assert pieces == ["a", "b", "c", "d"]


def test_reverse_is_refused_where_it_cannot_hold(abcd, tmp_path):
    refused = run_arlm("train", "--data", abcd, "--out", tmp_path / "s", "--reverse",
                       "--sequences", "lines", "--max-steps", 1)  # fmt: skip
    assert refused.code == 2 and "--reverse trains on a stream" in refused.stderr
    model = train(abcd, tmp_path / "m", "--model", "ngram", "--order", 2)
    refused = run_arlm("train", "--resume", model, "--reverse", "--max-steps", 40)
    assert refused.code == 2 and "drop --reverse" in refused.stderr
