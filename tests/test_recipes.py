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


def test_a_tied_recipe_sizes_the_embedding_as_the_hidden_layer():
    assert recipes.RECIPES["words"]["tie_weights"]
    merged = recipes.apply("words", {"hidden_size": 96})
    assert merged["tie_weights"] and merged["embedding_dim"] == 96
    settings.model_config(merged)  # accepted: a tie needs one size
    # an embedding of another size, or one-hot inputs, given by the user: no tie, no error
    for given in ({"hidden_size": 96, "embedding_dim": 32}, {"input": "one-hot"}):
        merged = recipes.apply("words", given)
        assert not merged["tie_weights"]
        settings.model_config(merged)
    assert not recipes.apply("words", {"tie_weights": False})["tie_weights"]


@pytest.mark.parametrize("name", sorted(recipes.RECIPES))
def test_a_time_budget_on_the_cpu_picks_the_measured_size(name):
    rows = recipes.SIZES[name]
    lower = 0.0
    for upto, shape in rows:
        for budget in (lower + 1, upto):
            merged = recipes.apply(name, {"time_budget": budget})
            assert all(merged[key] == value for key, value in shape.items()), budget
            settings.model_config(merged)  # a shape the model accepts
        lower = upto
    if not rows:
        # no measured sizes: a budget changes nothing but itself
        assert recipes.apply(name, {"time_budget": 600}) == recipes.apply(name, {}) | {
            "time_budget": 600
        }
        return
    budget, shape = rows[0]
    # a shape given by the user, no budget, or another device: the rule stays out of the way
    given = recipes.apply(name, {"time_budget": budget, "num_layers": 1})
    assert given["num_layers"] == 1 and "hidden_size" not in given
    for merged in (
        recipes.apply(name, {}),
        recipes.apply(name, {"time_budget": budget}, cpu=False),
    ):
        assert "hidden_size" not in merged and "num_layers" not in merged


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


def train(tmp_path: Path, dataset: Path, *flags: str) -> tuple[object, dict]:
    """`arlm train` for 2 steps on `dataset`: the run and its config.json."""
    out = tmp_path / "ck"
    run = run_arlm("train", "--data", dataset, "--out", out, "--max-steps", "2", *flags)
    assert run.code == 0, run.stderr
    return run, json.loads((out / "config.json").read_text())


def test_train_on_words_says_and_records_its_recipe(tmp_path):
    small = ("--hidden-size", "8", "--embedding-dim", "8")
    run, config = train(tmp_path, word_dataset(tmp_path), *small, "--lr", "1")
    assert "recipe: words" in run.stderr
    assert config["recipe"] == "words"
    words = recipes.RECIPES["words"]
    assert config["train"]["optimizer"] == words["optimizer"] and config["train"]["lr"] == 1
    assert config["model"]["dropout"] == words["dropout"]


def test_train_on_characters_keeps_the_built_in_defaults(tmp_path):
    small = ("--hidden-size", "8", "--embedding-dim", "8")
    run, config = train(tmp_path, make_char_dataset(tmp_path), *small)
    assert "recipe: characters" in run.stderr
    assert config["recipe"] == "characters" and config["train"]["optimizer"] == "adamw"


def test_train_with_a_time_budget_takes_the_size_of_its_recipe(tmp_path):
    budget = ("--time-budget", "2s", "--device", "cpu")
    _, config = train(tmp_path, word_dataset(tmp_path), *budget)
    model, shape = config["model"], recipes.SIZES["words"][0][1]
    assert {key: model[key] for key in shape} == shape
    assert model["tie_weights"] and model["embedding_dim"] == model["hidden_size"]
