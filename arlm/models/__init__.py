"""Language models: the recurrent family behind one interface (see recurrent.py)."""

from arlm.models.recurrent import (
    KINDS,
    REGISTRY,
    ModelConfig,
    RecurrentLM,
    State,
    all_finite,
    batch_dims,
    build_model,
    detach,
    device_of,
)

__all__ = [
    "KINDS",
    "REGISTRY",
    "ModelConfig",
    "RecurrentLM",
    "State",
    "all_finite",
    "batch_dims",
    "build_model",
    "detach",
    "device_of",
]
