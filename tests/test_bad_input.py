"""Bad input to `arlm train`, `generate` and `eval` (tokenize's own table is in test_cli.py):
each gives its exit code, one line that names the problem, no traceback, and changes no file.
Then hypothesis throws random arguments at all four commands: nothing but clean errors."""

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from shutil import ignore_patterns

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from arlm import checkpoint, data
from tests.conftest import make_char_dataset, run_arlm

TINY = ["--hidden-size", "8", "--embedding-dim", "8", "--batch-size", "2", "--precision", "fp32"]


arlm = run_arlm


def state_of(folder: Path) -> dict[str, str]:
    """Every file and folder under `folder` with a digest of its bytes (size and mtime for the
    huge sparse file): to show a failed command changed nothing."""
    found = {}
    for p in sorted(folder.rglob("*")):
        if p.is_dir():
            found[str(p)] = "dir"
        elif p.stat().st_size > 1 << 24:
            found[str(p)] = f"{p.stat().st_size} {p.stat().st_mtime_ns}"
        else:
            found[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return found


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("bad")
    make_char_dataset(tmp, 120)
    (tmp / "other.txt").write_text("a different alphabet: xyzzy qwerty 12345\n" * 40)
    data.build(tmp / "ds_other", [data.scan(tmp / "other.txt")], model_type="char")
    result = arlm("train", "--data", tmp / "ds", "--out", tmp / "ck", *TINY, "--max-steps", 2)
    assert result.code == 0, result.stderr
    (tmp / "ck_no_weights").mkdir()
    for name in (checkpoint.CONFIG, checkpoint.TOKENIZER):
        shutil.copyfile(tmp / "ck" / name, tmp / "ck_no_weights" / name)
    shutil.copytree(tmp / "ck", tmp / "ck_no_tokenizer")
    (tmp / "ck_no_tokenizer" / checkpoint.TOKENIZER).unlink()
    shutil.copytree(tmp / "ds", tmp / "ds_corrupt")
    with open(tmp / "ds_corrupt" / "train.bin", "r+b") as file:  # an id past the vocabulary
        file.seek(100)
        file.write(b"\xff\xff")
    shutil.copytree(tmp / "ck", tmp / "ck_garbled")
    (tmp / "ck_garbled" / checkpoint.BEST).write_bytes(os.urandom(3000))
    (tmp / "empty.txt").write_text("")
    (tmp / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1") * 20)
    (tmp / "binary.dat").write_bytes(bytes(range(256)) * 8)
    with open(tmp / "huge.txt", "wb") as file:  # 8 GB, sparse: all NUL bytes
        file.truncate(8 << 30)
    (tmp / "wrong_type.toml").write_text('hidden-size = "big"\n')
    (tmp / "unknown.toml").write_text("layers = 3\n")
    (tmp / "broken.toml").write_text("hidden-size = = 3\n")
    (tmp / "nan.toml").write_text("lr = nan\n")
    (tmp / "inf.toml").write_text("epochs = inf\n")
    (tmp / "budget.toml").write_text("time-budget = -inf\n")
    (tmp / "a_file").write_text("x")
    return tmp


T = ["train", "--data", "{tmp}/ds", "--out", "{tmp}/new", *TINY]  # a good start for train
BAD_INPUTS = [
    # train: sizes and flags
    ([*T, "--hidden-size", "0"], 2, "--hidden-size must be positive"),
    ([*T, "--num-layers", "-2"], 2, "--num-layers must be positive"),
    ([*T, "--embedding-dim", "0"], 2, "--embedding-dim must be positive"),
    ([*T, "--batch-size", "0"], 2, "--batch-size must be positive"),
    ([*T, "--k1", "8", "--k2", "4"], 2, "--k2 (4) must be at least --k1 (8)"),
    ([*T, "--lr", "-1"], 2, "--lr must be positive"),
    ([*T, "--dropout", "1.5"], 2, "--dropout"),
    ([*T, "--epochs", "0"], 2, "--epochs must be positive"),
    ([*T, "--eval-every", "0"], 2, "--eval-every must be positive"),
    ([*T, "--time-budget", "soon"], 2, "duration"),
    ([*T, "--model", "transformer"], 2, "transformer"),
    ([*T, "--optimizer", "adam"], 2, "'adam' is not one of 'adamw', 'sgd'"),
    ([*T, "--hidden-size", "lots"], 2, "'--hidden-size': Input should be a valid integer"),
    ([*T, "--batch-size", "100000"], 2, "too few"),
    ([*T, "--device", "cuda"], 2, "no CUDA device"),
    ([*T, "--precision", "fp16", "--device", "cpu"], 2, "no fast path"),
    ([*T, "--tie-weights", "--embedding-dim", "4"], 2, "--tie-weights needs"),
    ([*T, "--lr", "nan"], 2, "--lr must be a finite number, got nan"),
    ([*T, "--clip", "inf"], 2, "--clip must be a finite number, got inf"),
    ([*T, "--weight-decay", "-inf"], 2, "--weight-decay must be a finite number, got -inf"),
    ([*T, "--dropout", "nan"], 2, "--dropout must be a finite number, got nan"),
    ([*T, "--jordan-decay", "-inf"], 2, "--jordan-decay must be a finite number"),
    ([*T, "--epochs", "inf"], 2, "--epochs must be a finite number, got inf"),
    ([*T, "--time-budget", "9" * 400], 2, "--time-budget must be a finite number"),
    ([*T, "--config", "{tmp}/nan.toml"], 2, "nan.toml: lr must be a finite number, got nan"),
    ([*T, "--config", "{tmp}/inf.toml"], 2, "inf.toml: epochs must be a finite number, got inf"),
    ([*T, "--config", "{tmp}/budget.toml"], 2, "time-budget must be a finite number, got -inf"),
    # train: files
    (["train", "--out", "{tmp}/new"], 2, "--data is required"),
    (["train", "--data", "{tmp}/missing", "--out", "{tmp}/new"], 2, "does not exist"),
    (["train", "--data", "{tmp}/empty.txt", "--out", "{tmp}/new"], 2, "is empty"),
    (["train", "--data", "{tmp}/binary.dat", "--out", "{tmp}/new"], 2, "looks binary"),
    (["train", "--data", "{tmp}/huge.txt", "--out", "{tmp}/new"], 2, "looks binary"),
    (["train", "--data", "{tmp}/latin1.txt", "--out", "{tmp}/new"], 1, "are not UTF-8"),
    (["train", "--data", "{tmp}/ds", "--out", "{tmp}/ck"], 2, "--resume"),
    (["train", "--data", "{tmp}/ds_corrupt", "--out", "{tmp}/new"], 1, "outside the vocabulary"),
    (["train", "--data", "{tmp}/ds", "--out", "{tmp}/a_file"], 2, "is a file"),
    (["train", "--data", "{tmp}/ds", "--out", "/proc/arlm-nope"], 1, "cannot create"),
    (["train", "--data", "{tmp}/ds", "--out", "{tmp}/a_file/sub"], 1, "cannot create"),
    ([*T, "--config", "{tmp}/missing.toml"], 2, "does not exist"),
    ([*T, "--config", "{tmp}/wrong_type.toml"], 2, "hidden-size takes a whole number"),
    ([*T, "--config", "{tmp}/unknown.toml"], 2, "unknown setting(s) layers"),
    ([*T, "--config", "{tmp}/broken.toml"], 1, "not valid TOML"),
    ([*T, "--config", "{tmp}/binary.dat"], 1, "not valid TOML"),
    # train --resume
    (["train", "--resume", "{tmp}/missing"], 2, "not a checkpoint folder"),
    (["train", "--resume", "{tmp}/ds"], 2, "not an arlm checkpoint"),
    (["train", "--resume", "{tmp}/ck_no_weights"], 2, "has no last.safetensors"),
    (["train", "--resume", "{tmp}/ck", "--data", "{tmp}/ds_other"], 2, "another tokenizer"),
    (["train", "--resume", "{tmp}/ck", "--hidden-size", "32"], 2, "drop --hidden-size"),
    (["train", "--resume", "{tmp}/ck", "--k1", "9", "--k2", "3"], 2, "must be at least"),
    # generate
    (["generate", "{tmp}/ck", "--top-p", "0"], 2, "--top-p must be in (0, 1]"),
    (["generate", "{tmp}/ck", "--top-k", "-1"], 2, "--top-k must be >= 0"),
    (["generate", "{tmp}/ck", "--temperature", "-1"], 2, "--temperature must be >= 0"),
    (["generate", "{tmp}/ck", "--temperature", "nan"], 2, "--temperature must be"),
    (["generate", "{tmp}/ck", "--temperature", "inf"], 2, "--temperature must be"),
    (["generate", "{tmp}/ck", "--top-p", "nan"], 2, "--top-p must be in (0, 1]"),
    (["generate", "{tmp}/ck", "--max-tokens", "-5"], 2, "--max-tokens must be >= 0"),
    (["generate", "{tmp}/ck", "--num-samples", "0"], 2, "--num-samples >= 1"),
    (["generate", "{tmp}/ck", "--beam", "0"], 2, "--beam must be at least 1"),
    (["generate", "{tmp}/ck", "--beam", "2", "--num-samples", "3"], 2, "drop --num-samples"),
    (["generate", "{tmp}/ck", "--prompt", "a", "--prompt-file", "{tmp}/a_file"], 2, "use one"),
    (["generate", "{tmp}/ck", "--prompt-file", "{tmp}/missing.txt"], 2, "does not exist"),
    (["generate", "{tmp}/ck", "--prompt-file", "{tmp}/latin1.txt"], 2, "not UTF-8"),
    (["generate", "{tmp}/ck", "--device", "cuda"], 2, "no CUDA device"),
    (["generate", "{tmp}/missing"], 2, "not a checkpoint folder"),
    (["generate", "{tmp}/ds"], 2, "not an arlm checkpoint"),
    (["generate", "{tmp}/ck_no_weights"], 2, "has no model.safetensors"),
    (["generate", "{tmp}/ck_garbled"], 1, "damaged or not a weights file"),
    (["generate", "{tmp}/ck_no_tokenizer"], 2, "no tokenizer"),
    (["generate"], 2, "Missing argument"),
    # eval
    (["eval", "{tmp}/ck"], 2, "give what to score"),
    (["eval", "{tmp}/ck", "--text", "hi", "--data", "{tmp}/corpus.txt"], 2, "one of them"),
    (["eval", "{tmp}/ck", "--data", "{tmp}/missing.txt"], 2, "does not exist"),
    (["eval", "{tmp}/ck", "--data", "{tmp}/empty.txt"], 2, "too short to score"),
    (["eval", "{tmp}/ck", "--data", "{tmp}/binary.dat"], 2, "looks binary"),
    (["eval", "{tmp}/ck", "--data", "{tmp}/huge.txt"], 2, "looks binary"),
    (["eval", "{tmp}/ck", "--data", "{tmp}/latin1.txt"], 1, "are not UTF-8"),
    (["eval", "{tmp}/ck", "--data", "{tmp}/ds_other"], 2, "another tokenizer"),
    (["eval", "{tmp}/ck", "--text", ""], 2, "too short to score"),
    (["eval", "{tmp}/ck", "--text", "hi", "--precision", "fp8"], 2, "fp8"),
    (["eval", "{tmp}/ck", "--text", "hi", "--per-token", "/nowhere/x.tsv"], 2, "folder"),
    (["eval", "{tmp}/ck_garbled", "--text", "hi"], 1, "damaged or not a weights file"),
    (["evaluate", "{tmp}/ck"], 2, "No such command"),
]


@pytest.mark.parametrize(("args", "code", "message"), BAD_INPUTS, ids=lambda v: str(v)[:60])
def test_bad_input_fails_cleanly_and_changes_nothing(work, args, code, message):
    before = state_of(work)
    result = arlm(*[a.format(tmp=work) for a in args])
    assert result.code == code, result.stderr
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert state_of(work) == before  # nothing written, nothing damaged
    assert not (work / "new").exists()


# -- fuzzing ----------------------------------------------------------------------------------

VALUES = st.sampled_from(
    ["0", "-1", "1", "2", "3.5", "1e309", "nan", "-inf", "", " ", "x", "\u2581", "99999999999",
     "{tmp}/ds", "{tmp}/ck", "{tmp}/corpus.txt", "{tmp}/binary.dat", "{tmp}/missing",
     "{tmp}/empty.txt", "{tmp}/a_file", "fp16", "cuda", "lstm", "jordan", "10m", "--", "-"]
)  # fmt: skip
FLAGS = {
    "tokenize": ["--out", "--vocab-size", "--model-type", "--val", "--val-fraction", "--text",
                 "--decode", "--tokenizer", "--invalid-utf8", "--builtin", "--force"],
    "train": ["--data", "--out", "--model", "--hidden-size", "--num-layers", "--k1", "--k2",
              "--bptt", "--batch-size", "--lr", "--dropout", "--clip", "--epochs", "--resume",
              "--time-budget", "--precision", "--device", "--config", "--input", "--warmup"],
    "generate": ["--prompt", "--prompt-file", "--max-tokens", "--temperature", "--top-k",
                 "--top-p", "--seed", "--num-samples", "--stop", "--beam", "--device"],
    "eval": ["--data", "--text", "--per-token", "--device", "--precision"],
}  # fmt: skip
SAFE = {"train": ["--max-steps", "2", *TINY, "--out", "{tmp}/fuzz"], "tokenize": []}


@st.composite
def command_lines(draw) -> list[str]:
    command = draw(st.sampled_from(sorted(FLAGS)))
    args = [command]
    if command in ("generate", "eval"):
        args.append(draw(st.sampled_from(["{tmp}/ck", "{tmp}/ck_garbled", "{tmp}/ds", "x"])))
    for _ in range(draw(st.integers(0, 4))):
        flag = draw(st.sampled_from(FLAGS[command]))
        args += [flag] if flag == "--force" else [flag, draw(VALUES)]
    if command == "generate":
        args += ["--max-tokens", "3"]
    return args + SAFE.get(command, [])


@settings(
    max_examples=int(os.environ.get("ARLM_FUZZ_EXAMPLES", 60)),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(args=command_lines())
def test_random_command_lines_never_crash(work, args):
    """Any mix of flags and values: success, or exit 1/2 with one error line and no file
    changed; never a traceback. Each command line runs on a fresh copy of the files."""
    with tempfile.TemporaryDirectory() as fresh, contextlib.chdir(fresh):  # relative paths too
        tmp = Path(shutil.copytree(work, Path(fresh) / "w", ignore=ignore_patterns("huge.txt")))
        before = state_of(Path(fresh))
        result = arlm(*[a.format(tmp=tmp) for a in args])
        assert "Traceback" not in result.stderr, (args, result.stderr)
        assert result.code in (0, 1, 2), (args, result.stderr)
        if result.code:
            errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
            assert len(errors) == 1, (args, result.stderr)
            assert state_of(Path(fresh)) == before, args


@settings(
    max_examples=int(os.environ.get("ARLM_FUZZ_EXAMPLES", 60)),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    corpus=st.one_of(st.binary(max_size=400), st.text(max_size=400).map(str.encode)),
    model_type=st.sampled_from(["bpe", "unigram", "char", "word"]),
    vocab=st.sampled_from([None, "300", "1000"]),
    probe=st.text(max_size=30).filter(lambda t: "\x00" not in t),
    decode=st.lists(st.integers(-3, 2000), max_size=6).map(lambda ids: " ".join(map(str, ids))),
    replace=st.booleans(),
)
def test_random_corpora_and_probes_tokenize_or_fail_cleanly(
    tmp_path, corpus, model_type, vocab, probe, decode, replace
):
    """Random bytes or text as a corpus, random text to encode and ids to decode."""
    with tempfile.TemporaryDirectory(dir=tmp_path) as fresh:
        path, out = Path(fresh) / "c.txt", Path(fresh) / "ds"
        path.write_bytes(corpus)
        args = ["tokenize", path, "--out", out, "--model-type", model_type, "--val-fraction", "0"]
        args += ["--vocab-size", vocab] if vocab else []
        result = arlm(*args, *(["--invalid-utf8", "replace"] if replace else []))
        assert "Traceback" not in result.stderr and result.code in (0, 1, 2), result.stderr
        if result.code:
            assert result.stderr.startswith("error:") and result.stderr.count("\n") == 1
            assert not out.exists()
            return
        for probe_args in (["--text", probe], ["--decode", decode]):
            shown = arlm("tokenize", "--tokenizer", out, *probe_args)
            assert "Traceback" not in shown.stderr and shown.code in (0, 2), shown.stderr
