"""arlm: train and sample autoregressive language models with PyTorch."""

__version__ = "0.1.0"
