"""No plateau at the start: a new model's first prediction is the unigram distribution, and at
the default settings the loss leaves the unigram level within the first 100 updates."""

import numpy as np
import pytest
import torch

from arlm import checkpoint, data
from arlm.models import ModelConfig, build_model
from arlm.training import TrainConfig, Trainer
from tests.conftest import run_arlm

torch.set_num_threads(1)


def grammar_ids(sentences: int = 1500, seed: int = 0) -> np.ndarray:
    """Sentences of a tiny grammar (det [adj] noun verb det [adj] noun .) over large word
    classes drawn Zipf-like, as ids: ~600 words, so the unigram entropy is high (~5 nats) and
    the next word's class is easy to predict from context."""
    rng = np.random.default_rng(seed)
    sizes = {"det": 4, "adj": 100, "noun": 300, "verb": 150}
    start = np.cumsum([2, *sizes.values()])[:-1]  # ids 0, 1: "." and newline
    offsets = dict(zip(sizes, start, strict=True))

    def word(kind: str) -> int:
        rank = min(int(rng.zipf(1.3)), sizes[kind]) - 1
        return int(offsets[kind]) + rank

    def phrase() -> list[int]:
        return [word("det"), *([word("adj")] if rng.random() < 0.5 else []), word("noun")]

    ids = []
    for _ in range(sentences):
        ids += [*phrase(), word("verb"), *phrase(), 0, 1]
    return np.array(ids, dtype=np.uint16)


def unigram_entropy(ids: np.ndarray) -> float:
    p = np.bincount(ids) / len(ids)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def first_losses(ids: np.ndarray, steps: int, at_unigram: bool = True) -> list[float]:
    """Training losses at the default settings (a smaller model and batch, to stay fast)."""
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(vocab_size=int(ids.max()) + 1, embedding_dim=64, hidden_size=128)
    )
    if at_unigram:
        model.start_at_unigram(
            torch.from_numpy(np.bincount(ids, minlength=model.config.vocab_size))
        )
    config = TrainConfig(device="cpu", batch_size=16, k1=32, max_steps=steps, epochs=None)
    trainer = Trainer(model, ids, ids[:2000], config)
    return [record.loss for record in trainer.run() if hasattr(record, "loss")]


def test_the_first_prediction_is_the_unigram_distribution():
    ids = grammar_ids(300)
    first = first_losses(ids, steps=1)[0]
    assert abs(first - unigram_entropy(ids)) < 0.1, (first, unigram_entropy(ids))


def test_the_loss_leaves_the_unigram_level_within_100_updates():
    """Measured: 0.5 nats below at update 30, 1.0 below at 41; from a zero output bias
    (no start_at_unigram) the loss is still above unigram - 0.3 at update 60."""
    ids = grammar_ids()
    unigram = unigram_entropy(ids)
    losses = first_losses(ids, steps=100)
    assert min(losses[50:60]) < unigram - 0.5, (unigram, losses[::10])


@pytest.mark.parametrize("kind", ["word", "bpe", "char"])
def test_arlm_train_starts_at_the_unigram_level_and_leaves_it(tmp_path, kind):
    """The same through the command line, for each tokenizer type: the defaults (the recipe
    the dataset picks; only the model and batch made smaller), a new model's first loss at the
    unigram level of its training tokens, and 0.5 nats below it within 100 updates."""
    ids = grammar_ids()
    words = " ".join(f"w{i}" if i > 1 else ".\n"[i] for i in ids)
    corpus = tmp_path / "grammar.txt"
    corpus.write_text(words.replace(" \n ", "\n"), encoding="utf-8")
    dataset = tmp_path / "ds"
    data.build(
        dataset, [data.scan(corpus)], model_type=kind, vocab_size=300 if kind == "bpe" else None
    )
    out = tmp_path / "run"
    run = run_arlm(
        "train", "--data", dataset, "--out", out, "--device", "cpu", "--max-steps", 100,
        "--embedding-dim", 64, "--hidden-size", 128, "--batch-size", 16, "--k1", 32,
    )  # fmt: skip
    assert run.code == 0, run.stderr
    unigram = unigram_entropy(np.asarray(data.open_ids(dataset, "train")))
    losses = [m["loss"] for m in checkpoint.read_metrics(out) if "loss" in m]
    assert abs(losses[0] - unigram) < 0.15, (losses[0], unigram)
    assert min(losses) < unigram - 0.5, (unigram, losses[::10])
