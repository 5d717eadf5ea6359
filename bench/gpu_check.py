"""The GPU check of issue 13: the CUDA tests, then each figure of its targets table, arlm beside
the textbook trainer (bench/reference.py) on the same device with the same ids and shapes, in
one table. bench/gpu_check.sh runs it on a machine with an NVIDIA GPU:

    python3 -m bench.gpu_check all WORK RESULTS    every part, then the table
    python3 -m bench.gpu_check part NAME WORK      one part (what `all` runs, each in a process)
    python3 -m bench.gpu_check table WORK          the table again, from what WORK holds

WORK receives the datasets, the checkpoints (a gigabyte at 2x1024 words), each part's log and
figures; RESULTS only gpu_check.md (the table), gpu_check.json and gpu_check.log. Each part
runs in a fresh process, so that nothing one trainer sets up helps or hinders the next, under
its own time limit, and all of them within ARLM_CHECK_DEADLINE seconds: a part that fails or
overruns is marked so and the others still run. The exit code is 1 when a part failed (a missed
target is no failure: the table says it).

ARLM_CHECK_DEVICE=cpu runs every part on the CPU at toy sizes: a smoke test of the script and
its table, whose figures mean nothing. ARLM_CHECK_PARTS=tokenize,word-2x1024 runs only the parts
whose names start so. WikiText-2 is looked for in $WIKITEXT, ../shared/data/wikitext-2 and
shared/data/wikitext-2 (bench/prepare_gpu_data.sh puts it there for the GPU machine).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from arlm import checkpoint, data
from arlm.models import ModelConfig, build_model
from arlm.sample import generate
from arlm.score import evaluate
from arlm.training import StepRecord, TrainConfig, Trainer
from bench.reference import ReferenceTrainer
from bench.run import WORD_TRAIN, ReferenceAsModel

ROOT = Path(__file__).resolve().parents[1]
DEVICE = os.environ.get("ARLM_CHECK_DEVICE", "cuda")
SMOKE = DEVICE == "cpu"
# the first steps of a CUDA run are slow (cuDNN picks its algorithms, the caching allocator
# grows, ~50 ms a step for ~25 steps): WARMUP updates are not timed, and a figure is the median
# of WINDOWS windows of STEPS updates, each ended by a synchronisation
WARMUP, STEPS, WINDOWS = (2, 3, 3) if SMOKE else (30, 20, 3)
BUDGET = 2 if SMOKE else 60  # seconds of --time-budget in the wall-time figures
# arlm's own choice on a GPU; on the CPU, bf16 without the hardware for it is slow to no purpose
PRECISION = "fp32" if SMOKE else "auto"
QUALITY_STEPS = 10 if SMOKE else 215  # ~150k tokens at 2x200 b20 bptt 35, as `make bench`
VAL_TOKENS = 60_000


@dataclass(frozen=True)
class Shape:
    hidden_size: int
    embedding_dim: int
    batch_size: int
    bptt: int

    def __str__(self) -> str:
        return f"2x{self.hidden_size} emb {self.embedding_dim} b{self.batch_size} bptt {self.bptt}"


TOY = Shape(32, 16, 4, 16)


@dataclass(frozen=True)
class Training:
    """A training-speed figure: arlm's tokens/s over the reference's, at least `target`."""

    dataset: str  # "word" (WikiText-2) or "char" (the builtin python-docs)
    shape: Shape
    target: float
    recipe: dict = field(default_factory=dict)  # arlm's TrainConfig beyond the shape
    quality: bool = False  # also the validation perplexity after equal tokens


TRAINING = {
    # word level: the textbook's own update rule (SGD 20, clip 0.25), as `make bench` figure 1
    "word-2x200": Training("word", Shape(200, 200, 20, 35), 2.0, WORD_TRAIN, quality=True),
    "word-2x1024": Training("word", Shape(1024, 256, 64, 35), 2.0, WORD_TRAIN),
    "char-2x1024": Training("char", Shape(1024, 256, 64, 128), 1.3),  # arlm's defaults
}


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()  # CUDA work is queued: a clock read means nothing before this


def about() -> dict:
    name = torch.cuda.get_device_name(0) if DEVICE == "cuda" else "cpu (smoke test)"
    return {"device": name, "torch": torch.__version__}


def window_rates(marks: list[tuple[float, int]]) -> list[float]:
    """Tokens/s between consecutive (seconds, tokens) marks."""
    return [(n1 - n0) / (t1 - t0) for (t0, n0), (t1, n1) in zip(marks, marks[1:], strict=False)]


def words(text: str, **paths: Path) -> list[str]:
    """A command line: `text` split at spaces, each {name} then replaced by its path."""
    return [str(paths[w[1:-1]]) if w.startswith("{") else w for w in text.split()]


# -- the parts that measure -------------------------------------------------------------------


def arlm_trainer(figure: Training, dataset: Path, steps: int) -> Trainer:
    shape = TOY if SMOKE else figure.shape
    meta = data.load_meta(dataset)
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(
            kind="lstm",
            vocab_size=meta["vocab_size"],
            hidden_size=shape.hidden_size,
            embedding_dim=shape.embedding_dim,
            num_layers=2,
            dropout=0.2,
        )
    )
    config = TrainConfig(
        batch_size=shape.batch_size,
        k1=shape.bptt,
        max_steps=steps,
        epochs=None,
        eval_every=10**9,
        device=DEVICE,
        precision=PRECISION,
        **figure.recipe,
    )
    return Trainer(model, data.open_ids(dataset, "train"), data.open_ids(dataset, "val"), config)


def arlm_side(figure: Training, dataset: Path) -> dict:
    """arlm's tokens/s per window; with `quality`, the perplexity after QUALITY_STEPS too."""
    trainer = arlm_trainer(figure, dataset, WARMUP + STEPS * WINDOWS)
    marks = []
    for record in trainer.run():
        if isinstance(record, StepRecord) and record.step >= WARMUP:
            if (record.step - WARMUP) % STEPS == 0:
                sync()
                marks.append((time.perf_counter(), record.tokens))
            if len(marks) > WINDOWS:
                break  # before the closing evaluation of the whole validation text
    precision = str(trainer.precision).removeprefix("torch.")
    shape = TOY if SMOKE else figure.shape
    result = {"rates": window_rates(marks), "precision": precision, "shape": str(shape)}
    if figure.quality:
        trainer = arlm_trainer(figure, dataset, QUALITY_STEPS)
        for record in trainer.run():
            if not isinstance(record, StepRecord) or record.step == QUALITY_STEPS:
                break
        val = data.open_ids(dataset, "val")[:VAL_TOKENS]
        loss, _ = evaluate(trainer.model, val, precision=trainer.precision)
        result |= {"quality_tokens": trainer.tokens, "val_perplexity": float(np.exp(loss))}
    return result


def reference_side(figure: Training, dataset: Path) -> dict:
    """The textbook trainer on the same ids, shape and device."""
    shape = TOY if SMOKE else figure.shape
    meta = data.load_meta(dataset)

    def fresh() -> ReferenceTrainer:
        ids = np.asarray(data.open_ids(dataset, "train"))
        return ReferenceTrainer(
            ids,
            meta["vocab_size"],
            shape.embedding_dim,
            shape.hidden_size,
            2,
            0.2,
            shape.batch_size,
            shape.bptt,
            device=DEVICE,
        )

    trainer = fresh()
    for _ in range(WARMUP):
        trainer.step()
    sync()
    marks, seen = [(time.perf_counter(), 0)], 0
    for _ in range(WINDOWS):
        seen += sum(trainer.step() for _ in range(STEPS))
        sync()
        marks.append((time.perf_counter(), seen))
    result = {"rates": window_rates(marks), "shape": str(shape)}
    if figure.quality:
        trainer = fresh()
        seen, _ = trainer.train_tokens(QUALITY_STEPS * shape.batch_size * shape.bptt)
        val = data.open_ids(dataset, "val")[:VAL_TOKENS]
        loss, _ = evaluate(ReferenceAsModel(trainer), val)
        result |= {"quality_tokens": seen, "val_perplexity": float(np.exp(loss))}
    return result


def generation() -> dict:
    """Sampling tokens/s of an LSTM 2x512, one stream and 64 (median of 3 runs each)."""
    torch.manual_seed(0)
    hidden = TOY.hidden_size if SMOKE else 512
    model = build_model(ModelConfig(kind="lstm", vocab_size=324, hidden_size=hidden))
    model = model.to(DEVICE).eval()

    def rate(streams: int, tokens: int) -> float:
        g = torch.Generator(device=DEVICE).manual_seed(0)
        sync()
        started = time.perf_counter()
        for _ in generate(model, [1], tokens, streams, 0.8, 40, 1.0, g):
            pass
        sync()
        return tokens * streams / (time.perf_counter() - started)

    one, many = (50, 20) if SMOKE else (1000, 300)
    rate(1, 50)  # warm-up: cuDNN and the allocator, a CUDA graph's capture
    rate(64, 20)
    return {
        "one_stream": [rate(1, one) for _ in range(3)],
        "64_streams": [rate(64, many) for _ in range(3)],
        "shape": f"2x{hidden}",
    }


STARTUP = (
    "import sys, torch; from arlm import data; from arlm.commands import train; "
    "torch.zeros(1, device=sys.argv[1]); data.open_ids(sys.argv[2], 'train'); "
    "data.open_ids(sys.argv[2], 'val')"
)


def startup(work: Path) -> dict:
    """The fixed start-up a time budget does not cover: a process that imports torch and arlm,
    opens the device and the word-level dataset."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", STARTUP, DEVICE, str(work / "word")], check=True)
    return {"seconds": time.perf_counter() - started}


def timed_train(work: Path, name: str, *options: str) -> dict:
    """`arlm train --time-budget BUDGET` on the word-level data: its wall time, and the seconds
    its updates took by the trainer's own clock (the metrics' per-window rates)."""
    out = work / name
    text = (
        f"-m arlm train --data {{word}} --out {{out}} --device {DEVICE} --time-budget {BUDGET}s "
        f"--precision {PRECISION}"
    )
    command = [sys.executable, *words(text, word=work / "word", out=out), "--force", *options]
    started = time.perf_counter()
    # its summary (what evaluating and writing cost, by its own clock) goes to the part's log,
    # wide enough not to wrap
    wide = os.environ | {"COLUMNS": "160"}
    subprocess.run(command, check=True, timeout=2 * BUDGET + 60, env=wide)
    wall = time.perf_counter() - started
    metrics = checkpoint.read_metrics(out)
    trained, tokens = 0.0, 0
    for m in metrics:
        if "tokens_per_second" in m:  # a log line: the updates since the one before
            trained += (m["tokens"] - tokens) / m["tokens_per_second"]
            tokens = m["tokens"]
    evaluations = sum("val_loss" in m for m in metrics)
    startup = json.loads((work / "figures" / "startup.json").read_text())["seconds"]
    return {
        "wall": wall,
        "startup": startup,
        "training": trained,
        "evaluations": evaluations,
        "budget": BUDGET,
        "command": " ".join(command[1:]),
    }


def budget(work: Path) -> dict:
    hidden, embedding = (TOY.hidden_size, TOY.embedding_dim) if SMOKE else (1024, 256)
    return timed_train(
        work, "budget", "--hidden-size", str(hidden), "--embedding-dim", str(embedding)
    )


def tokenize(work: Path, level: str) -> dict:
    if level == "char":
        source = ["--builtin", "python-docs"]
    else:
        corpus = wikitext()
        source = [str(corpus / "train.txt"), "--val", str(corpus / "valid.txt")]
    text = f"-m arlm tokenize --model-type {level} --out {{out}} --force"
    command = [sys.executable, *words(text, out=work / level), *source]
    subprocess.run(command, check=True)
    return {"vocab_size": data.load_meta(work / level)["vocab_size"]}


def wikitext() -> Path:
    places = [
        os.environ.get("WIKITEXT"),
        ROOT.parent / "shared/data/wikitext-2",
        ROOT / "shared/data/wikitext-2",
    ]
    for place in places:
        if place and (Path(place) / "train.txt").is_file():
            return Path(place)
    raise SystemExit(
        "error: no WikiText-2 (train.txt, valid.txt) in $WIKITEXT, ../shared/data/wikitext-2 or "
        "shared/data/wikitext-2: run bench/prepare_gpu_data.sh, and carry shared/data"
    )


def measure(name: str, work: Path) -> dict:
    """Run the part `name`; its figures."""
    if name.startswith("tokenize-"):
        return tokenize(work, name.removeprefix("tokenize-"))
    if name == "generation":
        return generation()
    if name == "startup":
        return startup(work)
    if name == "budget":
        return budget(work)
    if name == "defaults":
        return timed_train(work, "defaults")
    figure, side = name.rsplit("-", 1)
    run = {"arlm": arlm_side, "reference": reference_side}[side]
    return run(TRAINING[figure], work / TRAINING[figure].dataset)


# -- running every part -----------------------------------------------------------------------


@dataclass
class Part:
    name: str
    command: list[str]
    limit: float  # seconds


def plan(work: Path) -> list[Part]:
    """Every part in order, with its time limit: generous, since a part stopped gives nothing."""
    python = sys.executable
    arlm = [python, "-m", "arlm"]
    cli = TOY if SMOKE else Shape(512, 128, 64, 128)
    training = [(f"{name}-{side}", 60) for name in TRAINING for side in ("arlm", "reference")]
    measuring = [
        ("tokenize-char", 60),
        ("tokenize-word", 90),
        *training,
        ("generation", 60),
        ("startup", 30),
        ("budget", 2 * BUDGET + 60),
        ("defaults", 2 * BUDGET + 60),
    ]
    train = (
        f"train --data {{char}} --out {{ck}} --device {DEVICE} --max-steps {20 if SMOKE else 300} "
        f"--eval-every {10 if SMOKE else 150} --hidden-size {cli.hidden_size} "
        f"--batch-size {cli.batch_size} --bptt {cli.bptt} --force"
    )
    sample = f"generate {{ck}} --device {DEVICE} --prompt The --max-tokens 200 --seed 1"
    paths = {"char": work / "char", "ck": work / "ck"}
    pytest = [python, *words("-m pytest -q -p no:cacheprovider"), *cuda_tests()]
    return [
        Part("tests", pytest, 150),
        *(
            Part(name, [python, "-m", "bench.gpu_check", "part", name, str(work)], limit)
            for name, limit in measuring
        ),
        Part("cli-train", [*arlm, *words(train, **paths)], 90),
        Part("cli-generate", [*arlm, *words(sample, **paths)], 45),
        Part(
            "cli-eval",
            [*arlm, *words(f"eval {{ck}} --device {DEVICE} --data {{char}} --json", **paths)],
            45,
        ),
    ]


def cuda_tests() -> list[str]:
    """The test files that ask for a CUDA GPU (elsewhere their tests skip)."""
    files = sorted((ROOT / "tests").glob("test_*.py"))
    return [str(f) for f in files if "torch.cuda.is_available()" in f.read_text()]


def run_part(part: Part, limit: float, log: Path) -> dict:
    """Run one part in its own process group, its output to `log`; stop it at `limit`."""
    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(
            part.command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT
        )
        try:
            code, error = process.wait(timeout=limit), None
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # its children too (arlm train, pytest)
            code, error = process.wait(), f"stopped at its limit of {limit:.3g} s"
    if code != 0 and error is None:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
        error = f"exit {code}: {lines[-1].strip() if lines else 'no output'}"
    return {
        "name": part.name,
        "ok": error is None,
        "seconds": time.perf_counter() - started,
        "error": error,
    }


def run_parts(parts: list[Part], logs: Path, deadline: float) -> list[dict]:
    """Run every part, whatever the others did, all within `deadline` seconds."""
    logs.mkdir(parents=True, exist_ok=True)
    started, results = time.perf_counter(), []
    for part in parts:
        left = deadline - (time.perf_counter() - started)
        if left < 1:
            result = {
                "name": part.name,
                "ok": False,
                "seconds": 0.0,
                "error": f"not run: the {deadline:.0f} s deadline of the check had passed",
            }
        else:
            result = run_part(part, min(part.limit, left), logs / f"{part.name}.log")
        results.append(result)
        status = "ok" if result["ok"] else f"FAILED ({result['error']})"
        print(f"{part.name}: {status}, {result['seconds']:.1f} s", file=sys.stderr, flush=True)
    return results


def selected(parts: list[Part], wanted: str | None) -> list[Part]:
    if not wanted:
        return parts
    prefixes = tuple(p.strip() for p in wanted.split(",") if p.strip())
    return [part for part in parts if part.name.startswith(prefixes)]


# -- the table --------------------------------------------------------------------------------


@dataclass
class Row:
    figure: str
    parts: list[str]  # the parts that measure it: not run unless they all ran
    target: str
    needs: tuple[str, ...] = ()  # the parts they need: a failure there is named


WORD, CHAR = ("tokenize-word",), ("tokenize-char",)
ROWS = [
    Row("tests that need CUDA (tests/test_cuda.py, ...)", ["tests"], "all pass"),
    Row(
        "word LSTM 2x200 b20 bptt 35: tokens/s, ppl after equal tokens",
        ["word-2x200-arlm", "word-2x200-reference"],
        ">= 2x the reference, ppl no worse",
        WORD,
    ),
    Row(
        "word LSTM 2x1024 emb 256 b64 bptt 35: tokens/s",
        ["word-2x1024-arlm", "word-2x1024-reference"],
        ">= 2x the reference",
        WORD,
    ),
    Row(
        "char LSTM 2x1024 emb 256 b64 bptt 128: tokens/s",
        ["char-2x1024-arlm", "char-2x1024-reference"],
        ">= 1.3x the reference",
        CHAR,
    ),
    Row(
        "generation 2x512: tokens/s one stream / 64 streams",
        ["generation"],
        ">= 10,000 / >= 500,000",
    ),
    Row(
        f"--time-budget {BUDGET}s, 2x1024 word level: wall time",
        ["budget"],
        f"<= {1.05 * BUDGET:g} s + start-up",
        (*WORD, "startup"),
    ),
    Row(
        "share of wall time evaluating and writing, defaults, word level",
        ["defaults"],
        "<= 10%",
        (*WORD, "startup"),
    ),
    Row(
        "arlm train / generate / eval on the device (char 2x512)",
        ["cli-train", "cli-generate", "cli-eval"],
        "each exits 0",
        CHAR,
    ),
]
PYTEST_SUMMARY = re.compile(r"^\W*\d+ (passed|failed|error|skipped).* in [\d.]+s")


def measured(row: Row, figures: dict[str, dict], logs: dict[str, str]) -> tuple[str, bool]:
    """What a row shows, and whether its target is met, from its parts' figures."""
    name = row.parts[0].removesuffix("-arlm")
    if name == "tests":
        summary = [s for s in logs.get("tests", "").splitlines() if PYTEST_SUMMARY.match(s)]
        return (summary[-1].strip("= ") if summary else "no summary"), True
    if name == "cli-train":
        return "every command exited 0", True
    if name in TRAINING:
        arlm, reference = figures[f"{name}-arlm"], figures[f"{name}-reference"]
        fast, slow = statistics.median(arlm["rates"]), statistics.median(reference["rates"])
        text = f"arlm {fast:,.0f} ({arlm['precision']}) vs {slow:,.0f} = {fast / slow:.2f}x"
        met = fast / slow >= TRAINING[name].target
        if "val_perplexity" in arlm:
            a, r = arlm["val_perplexity"], reference["val_perplexity"]
            text += f"; ppl after {arlm['quality_tokens']:,} tokens {a:.1f} vs {r:.1f}"
            met = met and a <= r
        return text, met
    run = figures[name]
    if name == "generation":
        one, many = statistics.median(run["one_stream"]), statistics.median(run["64_streams"])
        return f"{one:,.0f} / {many:,.0f}", one >= 10_000 and many >= 500_000
    if name == "budget":
        text = f"{run['wall']:.1f} s (start-up {run['startup']:.1f} s)"
        return text, run["wall"] <= 1.05 * run["budget"] + run["startup"]
    # defaults: all that is neither start-up nor updates is evaluating, writing (and logging)
    share = 1 - run["training"] / (run["wall"] - run["startup"])
    text = (
        f"{share:.1%} of {run['wall'] - run['startup']:.1f} s after start-up "
        f"({run['evaluations']} evaluations; {run['wall']:.1f} s wall)"
    )
    return text, share <= 0.10


def table(results: list[dict], figures: dict[str, dict], logs: dict[str, str]) -> str:
    """One markdown table: each row's figure, target, and met / missed / failed / not run."""
    by_name = {r["name"]: r for r in results}
    lines = ["| figure | measured | target | met |", "| --- | --- | --- | --- |"]
    for row in ROWS:
        ran = [by_name[p] for p in (*row.needs, *row.parts) if p in by_name]
        failed = [r for r in ran if not r["ok"]]
        if failed:
            text, mark = f"{failed[0]['name']} failed: {failed[0]['error']}", "**failed**"
        elif not all(p in by_name for p in row.parts):
            text, mark = "not run", "-"
        else:
            text, met = measured(row, figures, logs)
            mark = "yes" if met else "**missed**"
        text = text.replace("|", "/")[:240]  # one table cell
        lines.append(f"| {row.figure} | {text} | {row.target} | {mark} |")
    machine = next(
        (f"{f['device']}, torch {f['torch']}" for f in figures.values() if "device" in f),
        "no part said which device",
    )
    note = "; toy sizes, a smoke test whose figures mean nothing" if SMOKE else ""
    return "\n".join(lines) + f"\n\n{machine}{note}.\n"


def collect(work: Path) -> tuple[list[dict], dict[str, dict], dict[str, str]]:
    results = json.loads((work / "parts.json").read_text())
    figures = {p.stem: json.loads(p.read_text()) for p in (work / "figures").glob("*.json")}
    logs = {p.stem: p.read_text(errors="replace") for p in (work / "logs").glob("*.log")}
    return results, figures, logs


def check(work: Path, results_dir: Path, parts: list[Part], deadline: float) -> int:
    """Every part, then the table and the three result files. Returns the exit code."""
    (work / "figures").mkdir(parents=True, exist_ok=True)
    results = run_parts(parts, work / "logs", deadline)
    (work / "parts.json").write_text(json.dumps(results, indent=2))
    results, figures, logs = collect(work)
    text = table(results, figures, logs)
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "gpu_check.md").write_text(text)
    everything = {"parts": results, "figures": figures, "device": DEVICE}
    (results_dir / "gpu_check.json").write_text(json.dumps(everything, indent=2))
    (results_dir / "gpu_check.log").write_text(
        "".join(f"==> {r['name']}\n{logs.get(r['name'], '')}\n" for r in results)
    )
    print(text)
    return 0 if all(r["ok"] for r in results) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    every = commands.add_parser("all", help="every part, then the table")
    every.add_argument("work", type=Path)
    every.add_argument("results", type=Path)
    one = commands.add_parser("part", help="one part; its figures into WORK/figures")
    one.add_argument("name")
    one.add_argument("work", type=Path)
    again = commands.add_parser("table", help="the table from what WORK holds")
    again.add_argument("work", type=Path)
    args = parser.parse_args()
    if args.command == "all":
        parts = selected(plan(args.work), os.environ.get("ARLM_CHECK_PARTS"))
        deadline = float(os.environ.get("ARLM_CHECK_DEADLINE", "480"))
        sys.exit(check(args.work, args.results, parts, deadline))
    if args.command == "part":
        figures = measure(args.name, args.work) | about()
        path = args.work / "figures" / f"{args.name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(figures, indent=2))
        print(json.dumps(figures))
        return
    print(table(*collect(args.work)))


if __name__ == "__main__":
    main()
