"""Defaults that fit the data: `arlm train` picks a recipe from the dataset's metadata.

The built-in defaults (TrainConfig, ModelConfig) were tuned on characters and small subword
vocabularies. On words they lose to the textbook recipe: a vocabulary of tens of thousands of
words wants another optimizer and more regularisation (issue 14; the measurements behind each
value are in the README, "Word-level models"). A recipe only fills in what neither a flag nor the
--config file sets: precedence is flags, then TOML, then the recipe, then the built-in defaults.
`presets/<name>.toml` holds the same values, to read or to copy.
"""

from __future__ import annotations

import math

from arlm.models import ModelConfig, kinds

# Beyond this many pieces a vocabulary is treated as words, whatever made it.
WORD_VOCABULARY = 10_000

RECIPES: dict[str, dict[str, object]] = {
    "characters": {},  # the built-in defaults
    "words": {  # measured on WikiText-2, 5 minutes each (README, "Word-level models")
        "optimizer": "adamw",
        "lr": 1e-2,
        "schedule": "cosine",
        "warmup": 50,
        "weight_decay": 0.01,
        "embedding_decay": False,
        "clip": 1.0,
        "dropout": 0.2,
        "batch_size": 32,
        "k1": 35,
        "tie_weights": True,
    },
    # --task seq2seq, measured on the built-in dates, 60 s each with Luong attention: exact
    # match 3.0% with the built-in 2x256 LSTM and 128-wide embeddings, 100% with this
    "pairs": {"num_layers": 1, "hidden_size": 128, "embedding_dim": 32, "batch_size": 64},
}


def pick(meta: dict | None, kind: str) -> str | None:
    """'words' for a word tokenizer or a large vocabulary, else 'characters'; None for a
    classical model. `meta` is the dataset's meta.json (None: a text file, which `arlm train`
    tokenizes as characters)."""
    if kind not in kinds(family="recurrent"):  # the n-gram counts; the HMM keeps its defaults
        return None
    if meta is None:
        return "characters"
    words = meta["tokenizer"].get("model_type") == "word"
    return "words" if words or meta["vocab_size"] > WORD_VOCABULARY else "characters"


# The shape that did best in a time budget on the 2-core CPU of issue 14 (README, "Model
# size"): (up to this many seconds of --time-budget, the shape). Measured on that CPU only: on
# another device the budget buys other token counts, and the built-in shape stays.
# A row's limit sits between two budgets measured, at their geometric mean: 4.5 minutes between
# 2 and 10, 17 between 10 and 30. Nothing longer than 30 minutes was measured: the last row
# holds for any longer budget (its size did best at the longest budget tried).
SIZES: dict[str, tuple[tuple[float, dict[str, int]], ...]] = {
    # 2x256 did best at 2 minutes (against 2x512 and 2x1024), 2x512 at 10 (against 2x256),
    # 2x1024 at 30 (against 2x512, which overfit the 1 MB corpus by then)
    "characters": (
        (4.5 * 60, {"num_layers": 2, "hidden_size": 256}),
        (17 * 60, {"num_layers": 2, "hidden_size": 512}),
        (math.inf, {"num_layers": 2, "hidden_size": 1024}),
    ),
    # 2x128 did best at 2, 10 and 30 minutes, against 2x256 and (at 2 minutes) 2x512
    "words": ((math.inf, {"num_layers": 2, "hidden_size": 128}),),
    "pairs": (),  # the recipe's one shape
}
SHAPE = ("hidden_size", "num_layers", "embedding_dim")


def apply(name: str | None, values: dict, *, cpu: bool = True) -> dict:
    """`values` (flags merged with TOML) with the recipe's settings under them, and, for a
    --time-budget on the CPU with no shape given, the size that does best in that budget."""
    if not name:
        return values
    merged = RECIPES[name] | values
    budget = values.get("time_budget")
    if budget and cpu and not any(key in values for key in SHAPE):
        merged |= next((shape for upto, shape in SIZES[name] if budget <= upto), {})
    if merged.get("tie_weights") and "tie_weights" not in values:
        # the recipe ties the output layer to the embedding: one size for both, unless the
        # user chose an embedding of another size or one-hot inputs
        hidden = merged.get("hidden_size", ModelConfig.hidden_size)
        if merged.get("input") == "one-hot" or merged.get("embedding_dim", hidden) != hidden:
            merged["tie_weights"] = False
        else:
            merged["embedding_dim"] = hidden
    return merged
