"""Labels for texts from a classifier (models.classifier), and how well they match the truth:
accuracy, macro-F1, precision and recall per label, and the confusion matrix."""

from __future__ import annotations

import numpy as np
import torch

from arlm.models.classifier import Classifier
from arlm.sequences import padded
from arlm.tokenizer import Tokenizer

BATCH = 64  # texts scored at once


@torch.no_grad()
def probabilities(model: Classifier, texts: list[np.ndarray], device: torch.device) -> np.ndarray:
    """P(label | text) for each text's ids: (texts, labels). Texts of similar length go
    together; an empty text reads as nothing but the scores of an empty state."""
    model.eval()
    out = np.zeros((len(texts), model.head.out_features))
    order = np.argsort([len(t) for t in texts], kind="stable")
    for start in range(0, len(order), BATCH):
        rows = order[start : start + BATCH]
        ids, lengths = padded([texts[i] for i in rows])
        scores = model(torch.from_numpy(ids).to(device), torch.from_numpy(lengths))
        out[rows] = torch.softmax(scores.float(), -1).cpu().numpy()
    return out


def encode(tokenizer: Tokenizer, texts: list[str]) -> list[np.ndarray]:
    return [np.asarray(tokenizer.encode(text), dtype=np.int64) for text in texts]


def metrics(truth: np.ndarray, predicted: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, macro-F1 (the mean of the labels' F1, each label counting the same), each
    label's precision, recall, F1 and support, and the confusion matrix (rows: the true label,
    columns: the predicted one)."""
    k = len(labels)
    confusion = np.bincount(truth * k + predicted, minlength=k * k).reshape(k, k)
    hits = np.diag(confusion).astype(np.float64)
    predicted_as = confusion.sum(0)
    support = confusion.sum(1)
    precision = np.divide(hits, predicted_as, out=np.zeros(k), where=predicted_as > 0)
    recall = np.divide(hits, support, out=np.zeros(k), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros(k), where=both > 0)
    return {
        "texts": int(len(truth)),
        "accuracy": float(hits.sum() / max(1, len(truth))),
        "macro_f1": float(f1.mean()),
        "per_label": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(n)}
            for label, p, r, f, n in zip(labels, precision, recall, f1, support, strict=True)
        },
        "labels": labels,
        "confusion": confusion.tolist(),
    }
