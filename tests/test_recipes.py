"""arlm.recipes: the defaults `arlm train` picks from the dataset, under flags and TOML."""

import json
import tomllib
from pathlib import Path

import pytest

from arlm import data, recipes, settings
from tests.conftest import corpus_text, make_char_dataset, run_arlm

ROOT = Path(__file__).resolve().parents[1]


def meta(model_type: str, vocab_size: int) -> dict:
    return {"vocab_size": vocab_size, "tokenizer": {"model_type": model_type}}


@pytest.mark.parametrize(
    ("model_type", "vocab", "kind", "recipe"),
    [
        ("word", 5_000, "lstm", "words"),
        ("bpe", 32_000, "gru", "words"),  # a large vocabulary is words, whatever made it
        ("bpe", 4_000, "lstm", "characters"),
        ("char", 300, "elman", "characters"),
        ("word", 5_000, "ngram", None),  # the classical models keep their own defaults
        ("word", 5_000, "hmm", None),
    ],
)
def test_the_recipe_follows_the_tokenizer_and_the_vocabulary(model_type, vocab, kind, recipe):
    assert recipes.pick(meta(model_type, vocab), kind) == recipe


def test_a_text_file_is_characters():
    assert recipes.pick(None, "lstm") == "characters"


def test_flags_and_toml_win_over_the_recipe():
    values = settings.merge({"lr": 0.5}, {"optimizer": "adamw", "bptt": 100})
    merged = recipes.apply("words", values)
    assert merged["lr"] == 0.5 and merged["optimizer"] == "adamw"
    assert merged["k1"] == 100 and merged["k2"] == 100  # --bptt beats the recipe's k1
    assert merged["clip"] == recipes.RECIPES["words"]["clip"]
    assert recipes.apply(None, values) == values


@pytest.mark.parametrize("name", sorted(recipes.RECIPES))
def test_each_recipe_has_its_preset_file(name):
    path = ROOT / "presets" / f"{name}.toml"
    assert tomllib.loads(path.read_text()) == recipes.RECIPES[name]
    settings.read_toml(path)  # every key a setting arlm train knows, with the right type


def word_dataset(tmp_path: Path) -> Path:
    corpus = tmp_path / "words.txt"
    corpus.write_text(corpus_text(200), encoding="utf-8")
    data.build(tmp_path / "ds", [data.scan(corpus)], model_type="word")
    return tmp_path / "ds"


def test_train_on_words_says_and_records_its_recipe(tmp_path):
    out = tmp_path / "ck"
    run = run_arlm(
        "train",
        "--data",
        word_dataset(tmp_path),
        "--out",
        out,
        "--max-steps",
        "2",
        "--hidden-size",
        "8",
        "--embedding-dim",
        "8",
        "--lr",
        "1",
    )
    assert run.code == 0, run.stderr
    assert "recipe: words" in run.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"] == "words"
    words = recipes.RECIPES["words"]
    assert config["train"]["optimizer"] == words["optimizer"] and config["train"]["lr"] == 1
    assert config["model"]["dropout"] == words["dropout"]


def test_train_on_characters_keeps_the_built_in_defaults(tmp_path):
    out = tmp_path / "ck"
    run = run_arlm(
        "train",
        "--data",
        make_char_dataset(tmp_path),
        "--out",
        out,
        "--max-steps",
        "2",
        "--hidden-size",
        "8",
        "--embedding-dim",
        "8",
    )
    assert run.code == 0, run.stderr
    assert "recipe: characters" in run.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["recipe"] == "characters" and config["train"]["optimizer"] == "adamw"
