"""What a user reads before running anything: `arlm COMMAND --help` (every option says what it
does and shows its real default) and the dependency floor that pyproject.toml promises."""

import dataclasses
import operator
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch
import typer
from rich.text import Text

from arlm import settings
from arlm import tokenizer as tk
from arlm.cli import app
from arlm.models import ModelConfig
from arlm.settings import TrainConfig
from tests.conftest import run_arlm

COMMANDS = typer.main.get_command(app).commands
DEFAULT = re.compile(r"\[default: ([^\]]*)\]")


def options(command: str) -> list:
    """The command's options (click parameters), --help left out."""
    params = COMMANDS[command].params
    return [p for p in params if p.opts[0].startswith("--") and p.name != "help"]


def help_rows(command: str, monkeypatch) -> dict[str, str]:
    """`arlm COMMAND --help` on a wide terminal: each option's row, wrapped lines joined."""
    monkeypatch.setenv("COLUMNS", "200")
    result = run_arlm(command, "--help")
    assert result.code == 0, result.stderr
    rows, name = {}, None
    for line in result.stdout.splitlines():
        if not line.startswith("│"):  # a panel's border ends the row above it
            name = None
            continue
        cells = line.strip("│ ")
        if match := re.match(r"(?:\*\s+)?(--[a-z0-9-]+)", cells):
            name = match[1]
            rows[name] = cells
        elif name:  # the help text went on to the next line
            rows[name] += " " + cells
    return {option: " ".join(row.split()) for option, row in rows.items()}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_says_what_it_does_and_nothing_is_eaten(command, monkeypatch):
    rows = help_rows(command, monkeypatch)
    for param in options(command):
        option, written = param.opts[0], param.help or ""
        plain = Text.from_markup(written).plain
        # rich reads [word ...] as markup and drops it: every bracket must survive
        assert plain == written.replace("\\[", "["), f"{option}: markup ate part of {written!r}"
        assert plain.strip(), f"{option} has no help"
        assert " ".join(plain.split()) in rows[option], (option, rows[option])
        assert not re.search(r"\s[.,;:]|\(\s*\)", rows[option]), rows[option]
        if param.default is not None and param.default is not False:
            assert DEFAULT.search(rows[option]), f"{option} hides its default {param.default!r}"


def shown(row: str) -> str:
    """The one default that a help row shows."""
    (value,) = DEFAULT.findall(row)
    return value


def test_train_help_shows_the_defaults_of_the_config_classes(monkeypatch):
    rows = help_rows("train", monkeypatch)
    fields = {
        **{flag: (ModelConfig, name) for flag, name in settings.MODEL_FIELDS.items()},
        **{flag: (TrainConfig, name) for flag, name in settings.TRAIN_FIELDS.items()},
    }
    checked = 0
    for param in options("train"):
        if param.name not in fields:
            continue
        config, name = fields[param.name]
        (default,) = [f.default for f in dataclasses.fields(config) if f.name == name]
        if default is None:  # no default to show (k2: k1, patience: off, ...)
            continue
        value = shown(rows[param.opts[0]])
        if isinstance(default, bool):
            assert value == ("on" if default else "off"), (param.opts[0], value)
        else:
            assert type(default)(value) == default, (param.opts[0], value, default)
        checked += 1
    assert checked >= 20  # the model's shape and the whole of training


def test_tokenize_help_shows_the_tokenizer_defaults(monkeypatch):
    from arlm.cli import VAL_FRACTION

    rows = help_rows("tokenize", monkeypatch)
    assert shown(rows["--vocab-size"]).startswith(f"{tk.DEFAULT_VOCAB_SIZE}")
    assert float(shown(rows["--val-fraction"])) == VAL_FRACTION


def test_help_and_the_commands_without_a_model_start_without_torch():
    """The defaults in train's help come from classes that import torch: read when the help is
    shown, so that `arlm tokenize` and every --help but train's start in a fraction of the time."""
    script = (
        "import sys; sys.argv = ['arlm', 'tokenize', '--help']\n"
        "from arlm.cli import main\n"
        "try: main()\n"
        "except SystemExit: pass\n"
        "sys.stderr.write(str('torch' in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.stderr == "False", done.stderr


# -- the dependency floor ---------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
# The newest torch functions arlm calls, and the release that added each; the fused CPU AdamW and
# SGD (training/trainer.py) and torch.get_autocast_dtype came in 2.4.
NEWEST_TORCH_APIS = {
    "torch.nn.utils.get_total_norm": "2.6",
    "torch.nn.utils.clip_grads_with_norm_": "2.6",
    "torch.get_autocast_dtype": "2.4",
}


def release(version: str) -> tuple[int, int]:
    """'2.6.0+cu124' -> (2, 6)."""
    major, minor = re.match(r"(\d+)\.(\d+)", version).groups()
    return int(major), int(minor)


def test_the_torch_floor_covers_the_newest_torch_functions_the_code_calls():
    """Catches a floor lowered below what these functions need, a torch older than the floor,
    and a table that no longer matches the code; not a newer function used without being listed
    here: `make test-floor` (the fast tests on the floor versions) is the check for that."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (floor,) = [d.split(">=")[1] for d in project["dependencies"] if d.startswith("torch>=")]
    source = "".join(path.read_text() for path in (ROOT / "arlm").rglob("*.py"))
    for name, added in NEWEST_TORCH_APIS.items():
        assert name in source, f"arlm no longer calls {name}: update this table and the floor"
        assert callable(operator.attrgetter(name.removeprefix("torch."))(torch))
        assert release(added) <= release(floor), f"{name} needs torch>={added}, floor {floor}"
    assert release(torch.__version__) >= release(floor)
