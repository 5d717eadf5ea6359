"""Defaults that fit the data: `arlm train` picks a recipe from the dataset's metadata.

The built-in defaults (TrainConfig, ModelConfig) were tuned on characters and small subword
vocabularies. On words they lose to the textbook recipe: a vocabulary of tens of thousands of
words wants another optimizer and more regularisation (issue 14; the measurements behind each
value are in bench/results/recipes.md). A recipe only fills in what neither a flag nor the
--config file sets: precedence is flags, then TOML, then the recipe, then the built-in defaults.
`presets/<name>.toml` holds the same values, to read or to copy.
"""

from __future__ import annotations

# Beyond this many pieces a vocabulary is treated as words, whatever made it.
WORD_VOCABULARY = 10_000

RECIPES: dict[str, dict[str, object]] = {
    "characters": {},  # the built-in defaults
    "words": {
        "optimizer": "sgd",
        "lr": 20.0,
        "schedule": "plateau",
        "warmup": 0,
        "weight_decay": 0.0,
        "clip": 0.25,
        "dropout": 0.2,
        "batch_size": 20,
        "k1": 35,
    },
}


# The classical models take no recipe: the n-gram counts, the HMM keeps its own defaults.
NEURAL = ("elman", "jordan", "lstm", "gru")


def pick(meta: dict | None, kind: str) -> str | None:
    """'words' for a word tokenizer or a large vocabulary, else 'characters'; None for a
    classical model. `meta` is the dataset's meta.json (None: a text file, which `arlm train`
    tokenizes as characters)."""
    if kind not in NEURAL:
        return None
    if meta is None:
        return "characters"
    words = meta["tokenizer"].get("model_type") == "word"
    return "words" if words or meta["vocab_size"] > WORD_VOCABULARY else "characters"


def apply(name: str | None, values: dict) -> dict:
    """`values` (flags merged with TOML) with the recipe's settings under them."""
    return RECIPES[name] | values if name else values
