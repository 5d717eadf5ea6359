"""A load test of `arlm serve`: N clients, each sending streamed completions one after another
for a fixed time, against a real server on this machine. For each N: requests and tokens per
second, and the 50th and 99th percentiles of the time to the first token and of the time
between tokens. With continuous batching, N clients should get far more than 1/N of one
client's tokens per second each.

    python -m bench.serve_load CHECKPOINT [--clients 1,8,32] [--seconds 20] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np


async def client(url: str, stop_at: float, max_tokens: int, seed: int, figures: dict) -> None:
    body = {"prompt": "The ", "max_tokens": max_tokens, "temperature": 0.8, "top_k": 40,
            "stream": True, "seed": seed}  # fmt: skip
    async with httpx.AsyncClient(timeout=120) as http:
        while time.perf_counter() < stop_at:
            sent = last = time.perf_counter()
            first = None
            async with http.stream("POST", url + "/v1/completions", json=body) as reply:
                if reply.status_code != 200:
                    figures["refused"] += 1
                    await asyncio.sleep(0.05)
                    continue
                async for line in reply.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    event = json.loads(line[6:])
                    now = time.perf_counter()
                    if "usage" in event:
                        figures["tokens"] += event["usage"]["completion_tokens"]
                        continue
                    if first is None:
                        first = now - sent
                        figures["first"].append(first)
                    else:
                        figures["between"].append(now - last)
                    last = now
            figures["requests"] += 1
            body["seed"] += 1000


async def load(url: str, clients: int, seconds: float, max_tokens: int) -> dict:
    figures = {"requests": 0, "tokens": 0, "refused": 0, "first": [], "between": []}
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(client(url, stop_at, max_tokens, i, figures) for i in range(clients)))
    figures["seconds"] = time.perf_counter() - started
    return figures


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--clients", default="1,8,32")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "arlm", "serve", str(args.checkpoint),
                               "--port", str(port), "--max-streams", "64"])  # fmt: skip
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        print("| clients | requests/s | tokens/s | first token p50 / p99 | between tokens "
              "p50 / p99 | refused |\n| --- | --- | --- | --- | --- | --- |")  # fmt: skip
        for clients in map(int, args.clients.split(",")):
            f = asyncio.run(load(url, clients, args.seconds, args.max_tokens))
            first = np.percentile(f["first"], [50, 99]) * 1000 if f["first"] else [0, 0]
            between = np.percentile(f["between"], [50, 99]) * 1000 if f["between"] else [0, 0]
            print(
                f"| {clients} | {f['requests'] / f['seconds']:.1f} | "
                f"{f['tokens'] / f['seconds']:,.0f} | {first[0]:.0f} / {first[1]:.0f} ms | "
                f"{between[0]:.1f} / {between[1]:.1f} ms | {f['refused']} |",
                flush=True,
            )
    finally:
        server.terminate()
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
