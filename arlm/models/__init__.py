"""Language models: every kind behind one interface (base.py), in one registry.

    elman, lstm, gru, jordan   recurrent.py    an input layer, recurrent layers, an output layer
    ngram, hmm                 classical.py    Kneser-Ney n-gram counts; a hidden Markov model
    ffnn                       feedforward.py  a window of N tokens through a feed-forward net

Importing this package registers every kind (each class carries @register), so REGISTRY,
KINDS and the CLI's choices are complete wherever a model is built.
"""

# the order of registration is the order of the lists: the recurrent kinds first
from arlm.models import recurrent  # isort: split

from arlm.models import classical, feedforward
from arlm.models.base import (
    REGISTRY,
    LanguageModel,
    ModelConfig,
    State,
    Stepper,
    all_finite,
    batch_dims,
    build_model,
    detach,
    device_of,
    kinds,
    model_class,
)
from arlm.models.recurrent import RecurrentLM

KINDS = tuple(REGISTRY)  # every kind, in the order the help lists them

__all__ = [
    "KINDS",
    "REGISTRY",
    "LanguageModel",
    "ModelConfig",
    "RecurrentLM",
    "State",
    "Stepper",
    "all_finite",
    "batch_dims",
    "build_model",
    "classical",
    "detach",
    "feedforward",
    "device_of",
    "kinds",
    "model_class",
    "recurrent",
]
