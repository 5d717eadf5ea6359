"""The bench's own arithmetic (the bench itself needs ../shared/data and ~27 minutes)."""

import numpy as np
import torch

from arlm.train import evaluate
from bench.reference import ReferenceTrainer
from bench.run import ReferenceAsModel, lstm_training_flops_per_token, table


def test_flops_per_token_of_an_lstm():
    config = {"embedding_dim": 2, "hidden_size": 3, "num_layers": 2}
    forward = 2 * 4 * 3 * (2 + 3) + 2 * 4 * 3 * (3 + 3) + 2 * 3 * 10
    assert lstm_training_flops_per_token(config, vocab=10) == 3 * forward


def test_reference_trains_and_is_scored_through_arlms_interface():
    ids = np.tile(np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5], dtype=np.uint16), 200)
    trainer = ReferenceTrainer(ids, 11, 8, 16, 2, 0.0, batch_size=4, bptt=10, lr=1.0)
    before, _ = evaluate(ReferenceAsModel(trainer), ids[:500])
    seen, seconds = trainer.train_tokens(1500)
    after, _ = evaluate(ReferenceAsModel(trainer), ids[:500])
    assert seen >= 1500 and seconds > 0
    assert after < before - 0.5  # it learns the repeating pattern
    assert before > 2.0 and torch.get_num_threads() >= 1


def test_summary_table_marks_misses():
    results = {
        2: {
            "arlm_tokens_per_second": 30000.0,
            "reference_tokens_per_second": 12000.0,
            "ratio": 2.5,
            "met": True,
        },
        6: {
            "seconds": {"arlm": 2.0, "sentencepiece": 1.0},
            "peak_megabytes": {"arlm": 200.0, "sentencepiece": 150.0},
            "ratio": 2.0,
            "met": False,
        },
    }
    text = table(results)
    assert "| 2. char-level" in text and "2.50x" in text and "| yes |" in text
    assert "**no**" in text and "threads" in text
