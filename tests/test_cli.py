"""`arlm tokenize` through the real command line, in tmp_path: outputs and every bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from arlm.cli import app
from arlm.tokenizer import Tokenizer
from tests.conftest import corpus_text

runner = CliRunner()


def arlm(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes: to show a failed command changed nothing."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def dataset(tmp_path, corpus) -> Path:
    result = arlm("tokenize", corpus, "--out", tmp_path / "ds", "--vocab-size", 300)
    assert result.exit_code == 0, result.output
    return tmp_path / "ds"


def test_tokenize_writes_a_dataset_and_a_summary(tmp_path, dataset, corpus):
    assert sorted(p.name for p in dataset.iterdir()) == [
        "meta.json",
        "tokenizer.model",
        "train.bin",
        "val.bin",
    ]
    meta = json.loads((dataset / "meta.json").read_text())
    assert meta["vocab_size"] == 300 and meta["dtype"] == "uint16"
    assert meta["sources"]["train"][0]["bytes"] == corpus.stat().st_size
    assert not list(tmp_path.glob(".*partial*"))


def test_tokenize_summary_goes_to_stderr_and_json_to_stdout(tmp_path, corpus):
    result = arlm("tokenize", corpus, "--out", tmp_path / "ds", "--vocab-size", 300, "--json")
    assert result.exit_code == 0
    meta = json.loads(result.stdout)
    assert meta["train"]["tokens"] > 0
    assert "bytes/token" in result.stderr and "vocabulary 300" in result.stderr


def test_separate_validation_file(tmp_path, corpus):
    val = tmp_path / "val.txt"
    val.write_text("the cat sat.\n", encoding="utf-8")
    result = arlm("tokenize", corpus, "--val", val, "--out", tmp_path / "ds", "--json")
    assert result.exit_code == 0, result.output
    meta = json.loads(result.stdout)
    assert meta["val"]["bytes"] == val.stat().st_size
    assert meta["train"]["bytes"] == corpus.stat().st_size


def test_char_model_defaults_to_every_character(tmp_path, corpus):
    result = arlm(
        "tokenize",
        corpus,
        "--model-type",
        "char",
        "--out",
        tmp_path / "ds",
        "--json",
        "--val-fraction",
        0,
    )
    assert result.exit_code == 0, result.output
    characters = set(corpus.read_bytes().decode())
    assert json.loads(result.stdout)["vocab_size"] == 259 + len(characters) - 1  # ' ' and U+2581


def test_reusing_a_tokenizer_encodes_only(tmp_path, dataset, corpus):
    result = arlm(
        "tokenize", corpus, "--tokenizer", dataset / "tokenizer.model", "--out", tmp_path / "again"
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "again" / "tokenizer.model").read_bytes() == (
        dataset / "tokenizer.model"
    ).read_bytes()
    assert (tmp_path / "again" / "train.bin").read_bytes() == (dataset / "train.bin").read_bytes()


def test_builtin_corpus(tmp_path):
    result = arlm(
        "tokenize",
        "--builtin",
        "python-docs",
        "--out",
        tmp_path / "py",
        "--vocab-size",
        500,
        "--json",
    )
    assert result.exit_code == 0, result.output
    meta = json.loads(result.stdout)
    assert meta["sources"]["train"][0]["path"] == "builtin:python-docs"
    assert meta["train"]["chars"] + meta["val"]["chars"] > 400_000


def test_text_shows_pieces_and_ids_and_decode_inverts_it(dataset):
    text = "the cat 🐍"
    shown = arlm("tokenize", "--tokenizer", dataset, "--text", text, "--json")
    assert shown.exit_code == 0, shown.output
    result = json.loads(shown.stdout)
    tok = Tokenizer.load(dataset)
    assert result["ids"] == tok.encode(text) and result["pieces"] == tok.pieces(result["ids"])
    plain = arlm("tokenize", "--tokenizer", dataset, "--text", text)
    assert "ids: " + " ".join(map(str, result["ids"])) in plain.stdout
    decoded = arlm(
        "tokenize", "--tokenizer", dataset, "--decode", " ".join(map(str, result["ids"]))
    )
    assert decoded.exit_code == 0 and decoded.stdout == text + "\n"
    as_json = arlm("tokenize", "--tokenizer", dataset, "--decode", "5 6", "--json")
    assert json.loads(as_json.stdout)["ids"] == [5, 6]


def test_force_replaces_an_existing_dataset(tmp_path, dataset, corpus):
    result = arlm("tokenize", corpus, "--out", dataset, "--vocab-size", 320, "--force")
    assert result.exit_code == 0, result.output
    assert json.loads((dataset / "meta.json").read_text())["vocab_size"] == 320
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_replace_policy_reads_invalid_bytes_as_replacement_characters(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(corpus_text(40).encode() + "café\n".encode("latin-1"))
    result = arlm(
        "tokenize", path, "--out", tmp_path / "ds", "--invalid-utf8", "replace", "--val-fraction", 0
    )
    assert result.exit_code == 0, result.output
    tok = Tokenizer.load(tmp_path / "ds")
    from arlm.data import open_ids

    assert tok.decode(open_ids(tmp_path / "ds")).endswith("caf\ufffd\n")


def _make_bad_inputs(tmp: Path) -> dict[str, Path]:
    (tmp / "empty.txt").write_text("")
    (tmp / "a_dir").mkdir()
    (tmp / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1") * 3)
    (tmp / "small.txt").write_text("just a few words here\n")
    (tmp / "one_line.txt").write_text("one line only")
    (tmp / "bad.model").write_bytes(b"not a sentencepiece model at all")
    (tmp / "a_file").write_text("x")
    return {}


# (arguments, expected exit code, a fragment of the message). "{tmp}" is the test's folder and
# "{corpus}" a good corpus; "{ds}" an existing dataset. Exit codes as in test_bad_input: 1 for
# the data a user points to (missing, a folder, empty, too small), 2 for a wrong command line.
BAD_INPUTS = [
    (["tokenize", "{tmp}/missing.txt", "--out", "{tmp}/out"], 1, "does not exist"),
    (["tokenize", "{tmp}/a_dir", "--out", "{tmp}/out"], 1, "is a directory"),
    (["tokenize", "{tmp}/empty.txt", "--out", "{tmp}/out"], 1, "empty"),
    (
        ["tokenize", "{corpus}", "--out", "{tmp}/out", "--vocab-size", "50000"],
        2,
        "the largest that works is",
    ),
    (["tokenize", "{corpus}", "--out", "{tmp}/out", "--vocab-size", "10"], 2, "too small"),
    (["tokenize", "{corpus}", "--out", "{tmp}/out", "--vocab-size", "0"], 2, "positive"),
    (
        ["tokenize", "{tmp}/latin1.txt", "--out", "{tmp}/out"],
        1,
        "3 bytes are not UTF-8 (first at byte offset 3, line 1)",
    ),
    (["tokenize", "{corpus}", "--out", "{ds}"], 2, "pass --force"),
    (["tokenize", "{corpus}", "--out", "{tmp}"], 2, "not empty"),
    (["tokenize", "{corpus}", "--out", "{tmp}/a_file"], 2, "is a file"),
    (
        ["tokenize", "{corpus}", "--tokenizer", "{tmp}/bad.model", "--out", "{tmp}/out"],
        1,
        "not a SentencePiece model",
    ),
    (
        ["tokenize", "--tokenizer", "{tmp}/bad.model", "--text", "hi"],
        1,
        "not a SentencePiece model",
    ),
    (["tokenize", "--tokenizer", "{tmp}/nowhere.model", "--text", "hi"], 1, "no tokenizer"),
    (["tokenize", "--text", "hi"], 2, "need --tokenizer"),
    (["tokenize", "--tokenizer", "{ds}", "--decode", "1 two 3"], 2, "whole numbers"),
    (["tokenize", "--tokenizer", "{ds}", "--decode", "99999"], 2, "outside the vocabulary"),
    (["tokenize", "{corpus}"], 2, "--out DIR is required"),
    (["tokenize", "--out", "{tmp}/out"], 2, "give corpus files"),
    (
        ["tokenize", "{corpus}", "--builtin", "python-docs", "--out", "{tmp}/out"],
        2,
        "one of the two",
    ),
    (
        [
            "tokenize",
            "{corpus}",
            "--out",
            "{tmp}/out",
            "--val",
            "{corpus}",
            "--val-fraction",
            "0.2",
        ],
        2,
        "give one",
    ),
    (["tokenize", "{corpus}", "--out", "{tmp}/out", "--val-fraction", "1.5"], 2, "[0, 1)"),
    (["tokenize", "{tmp}/one_line.txt", "--out", "{tmp}/out"], 1, "too small to hold out"),
    (
        ["tokenize", "{corpus}", "--out", "{tmp}/out", "--val", "{tmp}/missing.txt"],
        1,
        "does not exist",
    ),
    (["tokenize", "{corpus}", "--out", "{tmp}/out", "--model-type", "letters"], 2, "model-type"),
    (
        ["tokenize", "{corpus}", "--out", "{tmp}/out", "--tokenizer", "{ds}", "--vocab-size", "9"],
        2,
        "drop --vocab-size",
    ),
    (["tokenize", "{corpus}", "--out", "{tmp}/out", "--invalid-utf8", "ignore"], 2, "invalid-utf8"),
    (["tokenize", "{corpus}", "--out", "{tmp}/out", "--bogus"], 2, "No such option"),
]


@pytest.mark.parametrize(("args", "code", "message"), BAD_INPUTS, ids=lambda v: str(v)[:40])
def test_bad_input_fails_cleanly_and_changes_nothing(tmp_path, args, code, message):
    tmp = tmp_path / "work"
    tmp.mkdir()
    _make_bad_inputs(tmp)
    corpus = tmp / "corpus.txt"
    corpus.write_text(corpus_text(), encoding="utf-8")
    assert arlm("tokenize", corpus, "--out", tmp / "ds", "--vocab-size", 300).exit_code == 0
    before = snapshot(tmp)
    argv = [a.format(tmp=tmp, corpus=corpus, ds=tmp / "ds") for a in args]
    result = arlm(*argv)
    assert result.exit_code == code, result.output
    assert message in result.stderr
    # an uncaught exception lands here, not in the output: it must be our clean exit
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.stdout == ""
    if code == 1 or "error:" in result.stderr:  # our own errors are one line
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert snapshot(tmp) == before  # nothing written, nothing damaged
    assert not (tmp / "out").exists()


def test_python_dash_m_arlm_works():
    result = subprocess.run(
        [sys.executable, "-m", "arlm", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "tokenize" in result.stdout


def test_console_script_prints_usage_errors_on_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "arlm", "tokenize", "--bogus"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: No such option: --bogus (Possible options: --out) (see --help)"
    ]
    assert result.stdout == ""
