"""Lemmatisation (`arlm tokenize --lemmatize`): words replaced by their lemmas before the
tokenizer learns the text, and in every text it encodes after, the rest of the text unchanged."""

import json
from pathlib import Path

import pytest

from arlm import data
from arlm.lemmas import WORD, lemmatizer
from arlm.tokenizer import Tokenizer
from tests.conftest import corpus_text, run_arlm

RAW = (
    "The mice went home; dogs ran after 3 red balls <unk> and don't stop.\n  Children were better."
)


def test_only_the_words_change():
    lemmas = lemmatizer("en")(RAW)
    assert lemmas == (
        "The mouse go home; dog run after 3 red ball <unk> and do stop.\n  Child be good."
    )
    assert lemmatizer("en")("N IT The") == "N IT The"  # never a change of case alone
    assert WORD.sub("", lemmas) == WORD.sub("", RAW)  # the rest, byte for byte


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("lemmas")
    corpus = folder / "corpus.txt"
    corpus.write_text(corpus_text(400), encoding="utf-8")
    made = {}
    for name, flags in {"plain": [], "lemmas": ["--lemmatize", "--language", "en"]}.items():
        result = run_arlm(
            "tokenize", corpus, "--model-type", "word", "--out", folder / name, *flags
        )
        assert result.code == 0, result.stderr
        made[name] = folder / name
    return made


def test_a_lemmatised_dataset_has_a_smaller_vocabulary_and_says_so(datasets):
    plain, lemmas = (data.load_meta(datasets[k]) for k in ("plain", "lemmas"))
    assert plain["tokenizer"]["lemmas"] is None and lemmas["tokenizer"]["lemmas"] == "en"
    assert lemmas["vocab_used"] < plain["vocab_used"]  # dogs/dog, ran/run, balls/ball, ...
    assert lemmas["train"]["words"] == plain["train"]["words"]  # a lemma for each word
    tokenizer = Tokenizer.load(datasets["lemmas"])
    assert tokenizer.lemmas == "en" and Tokenizer.load(datasets["plain"]).lemmas is None
    decoded = tokenizer.decode(data.open_ids(datasets["lemmas"], "train"))
    assert " dog " in decoded and " dogs " not in decoded


def test_the_tokenizer_lemmatises_every_text_it_encodes(datasets):
    tokenizer = Tokenizer.load(datasets["lemmas"])
    text = "the dogs ran after balls in parks\n"
    assert tokenizer.encode(text) == tokenizer.encode(lemmatizer("en")(text))
    assert tokenizer.decode(tokenizer.encode(text)) == "the dog run after ball in park\n"
    result = run_arlm("tokenize", "--tokenizer", datasets["lemmas"], "--decode", "5 6 7")
    assert "lemmas (en)" in result.stderr


def test_eval_of_raw_text_scores_its_lemmas_and_the_checkpoint_keeps_the_step(datasets, tmp_path):
    out = tmp_path / "ngram"
    trained = run_arlm("train", "--data", datasets["lemmas"], "--out", out, "--model", "ngram")
    assert trained.code == 0, trained.stderr
    raw = "the dogs ran after red balls in green parks.\n"
    scores = [
        json.loads(run_arlm("eval", out, "--text", text, "--json").stdout)
        for text in (raw, lemmatizer("en")(raw))
    ]
    same = ("tokens", "loss", "perplexity", "perplexity_per_word")  # the same ids scored; the
    assert [scores[0][k] for k in same] == [scores[1][k] for k in same]  # bytes are each text's
    result = run_arlm("generate", out, "--prompt", "the dogs", "--max-tokens", 5, "--seed", 0)
    assert result.code == 0 and "lemmas (en)" in result.stderr
    assert result.stdout.startswith("the dogs")  # the prompt as given, then the model's lemmas


def test_a_reused_lemmatising_tokenizer_lemmatises_the_new_corpus(datasets, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("the dogs ran after balls\n" * 30, encoding="utf-8")
    result = run_arlm(
        "tokenize", other, "--tokenizer", datasets["lemmas"], "--out", tmp_path / "ds"
    )
    assert result.code == 0, result.stderr
    assert data.load_meta(tmp_path / "ds")["tokenizer"]["lemmas"] == "en"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model-type", "char", "--lemmatize"], "--model-type char"),
        (["--tokenizer", "{plain}", "--lemmatize"], "not with --tokenizer"),
        (["--model-type", "word", "--lemmatize", "--language", "xx"], "no dictionary"),
    ],
)
def test_lemmatising_is_refused_where_it_cannot_work(datasets, tmp_path, flags, message):
    corpus = tmp_path / "c.txt"
    corpus.write_text(corpus_text(50), encoding="utf-8")
    flags = [f.format(plain=datasets["plain"]) for f in flags]
    result = run_arlm("tokenize", corpus, "--out", tmp_path / "ds", *flags)
    assert result.code == 2 and message in result.stderr
    assert not (tmp_path / "ds").exists()
