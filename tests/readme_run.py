"""The README, run as written: every command of its console blocks (and `make demo` of its
first block), in order, in a fresh folder, with small budgets, so that the README stays true.

    python -m tests.readme_run [--budget 3s] [--keep]     (make readme)

What changes from the README: every `--time-budget` becomes --budget (a `train` with no budget
and no --max-steps gets one), `--max-tokens` at most 40, `make demo` and `make compare` their
budget variables; `make test` is left out (it is what runs this). A command whose block shows
`error:` after it must fail; every other must succeed. `arlm serve` runs in the background for
the commands after it in its block. A command that needs `../shared/data` where there is none
is skipped, and so is every later one that reads what it would have written.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SAFE = re.compile(r"[\w@%+=:,./*-]+")  # a word the shell may read as it is (globs expanded)


@dataclass
class Command:
    line: str  # as the README writes it
    fails: bool  # the README shows an error after it
    block: int  # which console block


def commands(readme: str) -> list[Command]:
    found = []
    blocks = re.findall(r"```(console|bash)\n(.*?)```", readme, re.DOTALL)
    for number, (kind, body) in enumerate(blocks):
        lines = body.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            i += 1
            if kind == "bash":
                line = "$ " + line
            if not line.startswith("$ "):
                continue
            while line.endswith("\\") and i < len(lines):
                line = line[:-1] + " " + lines[i].strip()
                i += 1
            shown = lines[i] if i < len(lines) else ""
            found.append(Command(line[2:].strip(), shown.startswith("error:"), number))
    return found


def adapt(words: list[str], budget: str) -> list[str] | None:
    """The command with small budgets; None for one left out."""
    if words[:2] == ["make", "test"]:
        return None
    if words[:2] == ["make", "demo"]:
        return ["make", "demo", f"DEMO_BUDGET={budget}"]
    if words[:2] == ["make", "compare"]:
        return ["make", "compare", f"LADDER_BUDGET={budget}"]
    out = list(words)
    for i, word in enumerate(out[:-1]):
        if word == "--time-budget":
            out[i + 1] = budget
        if word == "--max-tokens":
            out[i + 1] = str(min(int(out[i + 1]), 40))
    train = "train" in out[:6] and ("arlm" in out[0] or "-m" in out)
    if train and "--time-budget" not in out and "--max-steps" not in out and "--resume" not in out:
        out += ["--time-budget", budget]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="3s")
    parser.add_argument("--keep", action="store_true", help="keep the folder it ran in")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="arlm-readme-"))
    work = scratch / "work"
    work.mkdir()
    for name in (".venv", "Makefile", "pyproject.toml"):  # what make needs, as it is
        (work / name).symlink_to(ROOT / name)
    if SHARED.is_dir():
        (scratch / "shared").symlink_to(SHARED)
    env = dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    missing: set[str] = set()  # what skipped commands would have written
    failures, server, started = [], None, time.perf_counter()
    last_block = -1
    for command in commands((ROOT / "README.md").read_text(encoding="utf-8")):
        if command.block != last_block and server:  # a block's server stops with it
            server.terminate()
            server.wait(timeout=60)
            server = None
        last_block = command.block
        words = shlex.split(command.line, comments=True)
        adapted = adapt(words, args.budget)
        if adapted is None:
            continue
        needs_shared = any("../shared" in w for w in words) and not SHARED.is_dir()
        if needs_shared or any(m in w for w in words for m in missing):
            outs = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--out"]
            missing.update(outs)
            print(f"skip  {command.line}", flush=True)
            continue
        if adapted[:2] == ["arlm", "serve"]:
            server = subprocess.Popen(adapted, cwd=work, env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)  # fmt: skip
            time.sleep(8)  # loading the model
            print(f"serve {command.line}", flush=True)
            continue
        begun = time.perf_counter()
        shell_line = " ".join(w if SAFE.fullmatch(w) else shlex.quote(w) for w in adapted)
        done = subprocess.run(shell_line, shell=True, cwd=work, env=env,
                              capture_output=True, text=True)  # fmt: skip
        ok = (done.returncode != 0) == command.fails
        took = time.perf_counter() - begun
        print(f"{'ok   ' if ok else 'FAIL '} {command.line}  ({took:.0f}s)", flush=True)
        if not ok:
            failures.append(command.line)
            print("      " + (done.stderr.strip() or done.stdout.strip())[-600:], flush=True)
    if server:
        server.terminate()
        server.wait(timeout=60)
    print(f"{len(failures)} failed, {time.perf_counter() - started:.0f}s; ran in {work}")
    if not args.keep:
        shutil.rmtree(scratch, ignore_errors=True)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
