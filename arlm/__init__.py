"""arlm: train and sample autoregressive language models with PyTorch.

The Python API, for notebooks (the CLI is a thin layer over it):

    import arlm
    ids = arlm.open_ids("data/shakespeare-char", "train")        # a numpy memmap
    model = arlm.build_model(arlm.ModelConfig(kind="gru", vocab_size=324))
    trainer = arlm.Trainer(model, ids, arlm.open_ids("data/shakespeare-char", "val"),
                           arlm.TrainConfig(max_steps=100))
    for record in trainer.run():
        print(record)
    model, config = arlm.load_checkpoint("checkpoints/lstm")

Names are imported on first use, so `arlm tokenize` starts without loading torch.
"""

__version__ = "0.1.0"

_API = {
    "Tokenizer": "arlm.tokenizer",
    "open_ids": "arlm.data",
    "load_meta": "arlm.data",
    "batchify": "arlm.data",
    "windows": "arlm.data",
    "ModelConfig": "arlm.models",
    "build_model": "arlm.models",
    "TrainConfig": "arlm.settings",
    "Trainer": "arlm.training",
    "evaluate": "arlm.score",
    "load_checkpoint": "arlm.checkpoint",
}
__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'arlm' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(_API[name])
    return getattr(module, "load" if name == "load_checkpoint" else name)
