"""Generation speed of a checkpoint: tokens/s for one stream and for a batch of streams, and
the time per token at the start and after many tokens (it must not grow: the state is carried).

    python bench/generate_speed.py CHECKPOINT [--tokens 2000] [--streams 64]
"""

import argparse
import json
import time

import torch

from arlm import checkpoint
from arlm.sample import generate


def rate(model, tokens: int, streams: int) -> float:
    g = torch.Generator().manual_seed(0)
    steps = generate(model, [1], tokens, streams, temperature=0.8, top_k=40, generator=g)
    started = time.perf_counter()
    for _ in steps:
        pass
    return tokens * streams / (time.perf_counter() - started)


def per_token_times(model, tokens: int, sample: int = 200) -> tuple[float, float]:
    """Mean seconds per token over the first `sample` tokens and the last `sample`."""
    g = torch.Generator().manual_seed(0)
    stamps = []
    for _ in generate(model, [1], tokens, 1, temperature=0.8, top_k=40, generator=g):
        stamps.append(time.perf_counter())
    return ((stamps[sample] - stamps[0]) / sample, (stamps[-1] - stamps[-sample - 1]) / sample)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--tokens", type=int, default=2000)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--long", type=int, default=10_000)
    args = parser.parse_args()
    model, config = checkpoint.load(args.checkpoint)
    model.eval()
    start, late = per_token_times(model, args.long)
    report = {
        "model": f"{config['model']['kind']} {config['model']['num_layers']}x"
        f"{config['model']['hidden_size']}, vocab {config['model']['vocab_size']}",
        "threads": torch.get_num_threads(),
        "one_stream_tokens_per_second": round(rate(model, args.tokens, 1)),
        f"{args.streams}_streams_tokens_per_second": round(
            rate(model, args.tokens // 4, args.streams)
        ),
        "ms_per_token_first_200": round(start * 1e3, 3),
        f"ms_per_token_after_{args.long}": round(late * 1e3, 3),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
