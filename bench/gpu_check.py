"""CUDA checks, run by bench/gpu_check.sh on a machine with an NVIDIA GPU.

    python3 bench/gpu_check.py DATASET_DIR

1. the same seed trains the same first losses on the CPU and the GPU (fp32; small differences
   from different kernels are expected, large ones are bugs);
2. the block-wise output layer + cross-entropy equals the plain one on the GPU, in bf16 too;
3. the generation step written out equals the model on the GPU;
4. training tokens/s of an LSTM 2x1024 (char level, bptt 128, batch 64) in bf16 and fp32;
5. generation tokens/s, one stream and 64.
Prints one JSON object.
"""

import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from arlm import data
from arlm.loss import linear_cross_entropy
from arlm.models import ModelConfig, build_model
from arlm.sample import generate
from arlm.train import StepRecord, TrainConfig, Trainer


def first_losses(dataset: Path, device: str, steps: int = 5) -> list[float]:
    meta = data.load_meta(dataset)
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="lstm", vocab_size=meta["vocab_size"], dropout=0.0))
    config = TrainConfig(
        batch_size=16,
        k1=64,
        max_steps=steps,
        epochs=None,
        eval_every=10**9,
        device=device,
        precision="fp32",
    )
    trainer = Trainer(model, data.open_ids(dataset, "train"), data.open_ids(dataset, "val"), config)
    return [r.loss for r in trainer.run() if isinstance(r, StepRecord)]


def training_rate(dataset: Path, precision: str, steps: int = 20) -> float:
    meta = data.load_meta(dataset)
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(
            kind="lstm",
            vocab_size=meta["vocab_size"],
            hidden_size=1024,
            embedding_dim=256,
            dropout=0.2,
        )
    )
    config = TrainConfig(
        batch_size=64,
        k1=128,
        max_steps=steps + 5,
        epochs=None,
        eval_every=10**9,
        device="cuda",
        precision=precision,
    )
    trainer = Trainer(model, data.open_ids(dataset, "train"), data.open_ids(dataset, "val"), config)
    started = seen = None
    for record in trainer.run():
        if isinstance(record, StepRecord) and record.step == 5:
            torch.cuda.synchronize()
            started, seen = time.perf_counter(), record.tokens
    torch.cuda.synchronize()
    return (trainer.tokens - seen) / (time.perf_counter() - started)


def loss_check() -> dict:
    torch.manual_seed(0)
    h = torch.randn(300, 64, device="cuda", requires_grad=True)
    layer = torch.nn.Linear(64, 5000).cuda()
    targets = torch.randint(0, 5000, (300,), device="cuda")
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            got = linear_cross_entropy(h, layer.weight, layer.bias, targets)
            expected = F.cross_entropy(layer(h).float(), targets)
        out[name] = abs(got.item() - expected.item())
    return out


def step_check() -> float:
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="gru", vocab_size=300, hidden_size=128)).cuda().eval()
    tokens = torch.randint(0, 300, (4, 12), device="cuda")
    with torch.no_grad():
        whole, _ = model(tokens)
        step, state = model.stepper(4), model.init_state(4)
        for t in range(12):
            logits, state = step(tokens[:, t], state)
    return (logits - whole[:, -1]).abs().max().item()


def generation_rate(streams: int, tokens: int) -> float:
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="lstm", vocab_size=324, hidden_size=512)).cuda().eval()
    g = torch.Generator(device="cuda").manual_seed(0)
    for _ in generate(model, [1], 20, streams, 0.8, 40, 1.0, g):
        pass
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in generate(model, [1], tokens, streams, 0.8, 40, 1.0, g):
        pass
    torch.cuda.synchronize()
    return tokens * streams / (time.perf_counter() - started)


def main() -> None:
    dataset = Path(sys.argv[1])
    cpu, gpu = first_losses(dataset, "cpu"), first_losses(dataset, "cuda")
    report = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "first_losses_cpu": cpu,
        "first_losses_cuda": gpu,
        "largest_loss_difference": max(abs(a - b) for a, b in zip(cpu, gpu, strict=True)),
        "blockwise_loss_error": loss_check(),
        "stepper_error": step_check(),
        "train_lstm_2x1024_bf16_tokens_per_second": training_rate(dataset, "bf16"),
        "train_lstm_2x1024_fp32_tokens_per_second": training_rate(dataset, "fp32"),
        "generate_2x512_one_stream_tokens_per_second": generation_rate(1, 500),
        "generate_2x512_64_streams_tokens_per_second": generation_rate(64, 300),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
