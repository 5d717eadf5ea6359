"""CUDA speed figures, run by bench/gpu_check.sh on a machine with an NVIDIA GPU (the CUDA
equivalence checks are tests/test_cuda.py, which the script runs first).

    python3 bench/gpu_check.py CHAR_DATASET [WORD_DATASET]

1. the same seed's first losses on the CPU and the GPU (fp32), side by side;
2. training tokens/s of an LSTM 2x1024 at the character level (bptt 128, batch 64) in bf16 and
   fp32, and, given a word-level WikiText-2 dataset, of the same LSTM on it (bptt 35, batch 64)
   and of figure 1's LSTM 2x200 (bptt 35, batch 20) in bf16;
3. generation tokens/s of an LSTM 2x512, one stream and 64.
Prints one JSON object. ARLM_CHECK_DEVICE=cpu runs the same code on the CPU (a smoke test).
"""

import json
import os
import sys
import time
from pathlib import Path

import torch

from arlm import data
from arlm.models import ModelConfig, build_model
from arlm.sample import generate
from arlm.train import StepRecord, TrainConfig, Trainer

DEVICE = os.environ.get("ARLM_CHECK_DEVICE", "cuda")
STEPS = int(os.environ.get("ARLM_CHECK_STEPS", "20"))


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def trainer(dataset: Path, model: dict, device: str, **train) -> Trainer:
    meta = data.load_meta(dataset)
    torch.manual_seed(0)
    net = build_model(ModelConfig(vocab_size=meta["vocab_size"], **model))
    config = TrainConfig(epochs=None, eval_every=10**9, device=device, **train)
    return Trainer(net, data.open_ids(dataset, "train"), data.open_ids(dataset, "val"), config)


def first_losses(dataset: Path, device: str, steps: int = 5) -> list[float]:
    run = trainer(dataset, {"kind": "lstm", "dropout": 0.0}, device, batch_size=16, k1=64,
                  max_steps=steps, precision="fp32")  # fmt: skip
    return [r.loss for r in run.run() if isinstance(r, StepRecord)]


def training_rate(dataset: Path, precision: str, hidden: int, embedding: int, batch: int,
                  bptt: int) -> float:  # fmt: skip
    """Tokens/s over STEPS updates, after 5 to warm up."""
    model = {"kind": "lstm", "hidden_size": hidden, "embedding_dim": embedding, "dropout": 0.2}
    run = trainer(dataset, model, DEVICE, batch_size=batch, k1=bptt, max_steps=STEPS + 5,
                  precision=precision)  # fmt: skip
    started = seen = None
    for record in run.run():
        if isinstance(record, StepRecord) and record.step == 5:
            sync()
            started, seen = time.perf_counter(), record.tokens
    sync()
    return (run.tokens - seen) / (time.perf_counter() - started)


def generation_rate(streams: int, tokens: int) -> float:
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="lstm", vocab_size=324, hidden_size=512))
    model = model.to(DEVICE).eval()
    g = torch.Generator(device=DEVICE).manual_seed(0)
    for _ in generate(model, [1], 20, streams, 0.8, 40, 1.0, g):
        pass
    sync()
    started = time.perf_counter()
    for _ in generate(model, [1], tokens, streams, 0.8, 40, 1.0, g):
        pass
    sync()
    return tokens * streams / (time.perf_counter() - started)


def main() -> None:
    char = Path(sys.argv[1])
    word = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    cpu, gpu = first_losses(char, "cpu"), first_losses(char, DEVICE)
    report = {
        "device": torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu",
        "torch": torch.__version__,
        "first_losses_cpu": cpu,
        "first_losses_device": gpu,
        "largest_loss_difference": max(abs(a - b) for a, b in zip(cpu, gpu, strict=True)),
    }
    for precision in ("bf16", "fp32"):
        rate = training_rate(char, precision, 1024, 256, 64, 128)
        report[f"train_char_lstm_2x1024_{precision}_tokens_per_second"] = rate
    if word is not None:
        report["word_vocabulary"] = data.load_meta(word)["vocab_size"]
        rate = training_rate(word, "bf16", 1024, 256, 64, 35)
        report["train_wikitext2_lstm_2x1024_bf16_tokens_per_second"] = rate
        rate = training_rate(word, "bf16", 200, 200, 20, 35)
        report["train_wikitext2_lstm_2x200_bf16_tokens_per_second"] = rate
    report["generate_2x512_one_stream_tokens_per_second"] = generation_rate(1, 500)
    report["generate_2x512_64_streams_tokens_per_second"] = generation_rate(64, 300)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
