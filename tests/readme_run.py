"""The README, run as written: every command of its console blocks (and `make demo` of its
first block) and every python block, in order, in a fresh folder, with small budgets, so that
the README stays true.

    python -m tests.readme_run [--budget 3s] [--keep]     (make readme)

What changes from the README: every `--time-budget` becomes --budget (a `train` with no budget
and no --max-steps gets one), `--max-tokens` at most 40, `make demo` and `make compare` their
budget variables, a python block's `max_steps=` at most 5; `make test` is left out (it is what
runs this). Each python block runs as a script of its own. A command whose block shows
`error:` after it must fail; every other must succeed. `arlm serve` runs in the background for
the commands after it in its block (on another port if 8000 is taken). A command that needs
`../shared/data` where there is none is skipped, and so is every later one that reads what it
would have written. The `arlm` commands run in this process, by the console script's function,
each as `tests.conftest.run_arlm` runs it; the others (make, torchrun, curl) in a shell.
tests/test_readme.py runs this in CI.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SAFE = re.compile(r"[\w@%+=:,./*-]+")  # a word the shell may read as it is (globs expanded)
SHELL = {"|", ">", ">>", "<", "&&", "||", ";", "&"}  # a line with these goes to the shell


@dataclass
class Command:
    line: str  # as the README writes it (a python block: its code)
    error: str | None  # the error line the README shows after it, if it shows one
    block: int  # which block
    python: bool = False

    @property
    def label(self) -> str:
        return f"python: {self.line.splitlines()[0]} ..." if self.python else self.line


def commands(readme: str) -> list[Command]:
    found = []
    blocks = re.findall(r"```(console|bash|python)\n(.*?)```", readme, re.DOTALL)
    for number, (kind, body) in enumerate(blocks):
        if kind == "python":
            found.append(Command(body, None, number, python=True))
            continue
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
            error = shown if shown.startswith("error:") else None
            found.append(Command(line[2:].strip(), error, number))
    return found


def adapt(words: list[str], budget: str) -> list[str] | None:
    """The command with small budgets; None for one left out."""
    if words[:2] == ["make", "test"]:
        return None
    fixed = ["-o", ".venv/.installed"]  # the project's .venv as it is: never reinstalled here
    if words[:2] == ["make", "demo"]:
        return ["make", *fixed, "demo", f"DEMO_BUDGET={budget}"]
    if words[:2] == ["make", "compare"]:
        return ["make", *fixed, "compare", f"LADDER_BUDGET={budget}"]
    if words[0] == "curl":  # an HTTP error is a failure, not a body printed
        return ["curl", "--fail-with-body", *words[1:]]
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


def few_steps(code: str) -> str:
    """A python block's code with `max_steps=N` at most 5."""
    return re.sub(r"max_steps=(\d+)", lambda m: f"max_steps={min(int(m[1]), 5)}", code)


def arlm_here(words: list[str]) -> tuple[int, str]:
    """`arlm ARGS` by the console script's own function in this process (Python and torch
    start once, not 30 times), globs expanded as the shell would; its code and messages."""
    from tests.conftest import run_arlm

    args = [
        found for w in words[1:] for found in ((sorted(glob.glob(w)) or [w]) if "*" in w else [w])
    ]
    run = run_arlm(*args)
    return run.code, run.stderr.strip() or run.stdout.strip()


def free_port(port: int) -> int:
    """`port` if nothing listens there, else one the system picks."""
    for wanted in (port, 0):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", wanted))
            except OSError:
                continue
            return probe.getsockname()[1]
    raise OSError("no free port")


def start_server(words: list[str], work: Path, env: dict) -> tuple[subprocess.Popen | None, str]:
    """`arlm serve ...` in the background, once it answers /health; else None and its error."""
    port = words[words.index("--port") + 1]
    server = subprocess.Popen(words, cwd=work, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.perf_counter() + 120
    while time.perf_counter() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5):
                return server, ""
        except OSError:
            time.sleep(0.2)
    server.kill()
    return None, server.communicate()[1].strip() or "no answer at /health in 120 s"


def stop(server: subprocess.Popen | None) -> None:
    if server:
        server.terminate()
        server.wait(timeout=60)


def run_all(work: Path, env: dict, budget: str) -> list[str]:
    """Run the README in `work`, a line printed for each command; the commands that failed."""
    missing: set[str] = set()  # what skipped commands would have written
    failures, server = [], None
    last_block, port = -1, free_port(8000)  # the README's 8000, unless it is taken here
    try:
        for command in commands((ROOT / "README.md").read_text(encoding="utf-8")):
            if command.block != last_block:  # a block's server stops with it
                stop(server)
                server = None
            last_block = command.block
            line = command.line.replace(":8000", f":{port}").replace(
                "--port 8000", f"--port {port}"
            )
            if command.python:  # its code as one word, for what it reads
                words, adapted = [line], [sys.executable, "-c", few_steps(line)]
            else:
                words = shlex.split(line, comments=True)
                adapted = adapt(words, budget)
            if adapted is None:
                continue
            shared = re.findall(r"\.\./shared[^\s'\"]*", line)
            if any(not (work / p).exists() for p in shared) or any(m in line for m in missing):
                outs = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--out"]
                missing.update(outs)
                print(f"skip  {command.label}", flush=True)
                continue
            begun = time.perf_counter()
            if adapted[:2] == ["arlm", "serve"]:
                server, said = start_server(adapted, work, env)
                code = 0 if server else 1
            elif adapted[0] == "arlm" and not SHELL.intersection(adapted):
                code, said = arlm_here(adapted)
            else:
                if not command.python:
                    safe = (w if SAFE.fullmatch(w) else shlex.quote(w) for w in adapted)
                    adapted = " ".join(safe)
                done = subprocess.run(adapted, shell=not command.python, cwd=work, env=env,
                                      capture_output=True, text=True)  # fmt: skip
                code, said = done.returncode, done.stderr.strip() or done.stdout.strip()
            first = said.splitlines()[0] if said else ""
            ok = code == 0 if command.error is None else (code != 0 and first == command.error)
            took = time.perf_counter() - begun
            print(f"{'ok   ' if ok else 'FAIL '} {command.label}  ({took:.0f}s)", flush=True)
            if not ok:
                failures.append(command.label)
                print("      " + said[-600:], flush=True)
    finally:
        stop(server)
    return failures


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
    os.chdir(work)
    env = dict(os.environ, PATH=f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    started = time.perf_counter()
    try:
        failures = run_all(work, env, args.budget)
    finally:
        os.chdir(ROOT)
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"{len(failures)} failed, {time.perf_counter() - started:.0f}s; ran in {work}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
