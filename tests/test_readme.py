"""The README runs as written: every command of its console blocks, in order, in a fresh folder,
with small budgets (tests/readme_run.py; `make readme` runs it with a line per command)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import readme_run

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_every_command_of_the_readme_does_what_the_readme_says():
    if not (ROOT / ".venv" / "bin" / "arlm").exists():
        pytest.skip("the README's commands run from the project's .venv: `make install` first")
    for tool in ("make", "curl"):
        if shutil.which(tool) is None:
            pytest.skip(f"the README's commands call {tool}, which is not installed")
    done = subprocess.run([sys.executable, "-m", "tests.readme_run"], cwd=ROOT,
                          capture_output=True, text=True, timeout=1200)  # fmt: skip
    lines = done.stdout.splitlines()
    failed = [line for line in lines if line.startswith(("FAIL", "      "))]
    assert done.returncode == 0, "\n".join(failed) or done.stderr[-2000:]
    # every command was run or skipped for want of ../shared/data; most of them ran
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    expected = [c for c in readme_run.commands(readme) if not c.line.startswith("make test")]
    ran = [line for line in lines if line.startswith("ok")]
    assert len(ran) + sum(line.startswith("skip") for line in lines) == len(expected) > 30
    assert len(ran) > len(expected) / 2, lines
