"""Bad input to `arlm train`, `generate` and `eval` (tokenize's own table is in test_cli.py):
each gives its exit code, one line that names the problem, no traceback, and changes no file.
Then hypothesis throws random arguments at every command but serve: nothing but clean errors,
and never a file of the user's changed."""

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
    for split in ("train", "val"):  # an id past the vocabulary in each split
        with open(tmp / "ds_corrupt" / f"{split}.bin", "r+b") as file:
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
    shutil.copytree(tmp / "ds", tmp / "ds_swapped")  # ids of one tokenizer, beside another
    shutil.copyfile(tmp / "ds_other" / "tokenizer.model", tmp / "ds_swapped" / "tokenizer.model")
    data.build(
        tmp / "ds_no_val", [data.scan(tmp / "corpus.txt")], model_type="char", val_fraction=0
    )
    return tmp


# The rule of the exit codes: a problem with the data a user points to (a path that does not
# exist, a binary, empty or non-UTF-8 file, a folder that is no dataset or no checkpoint, a
# damaged one, a tokenizer that does not match) is bad data, 1; a flag value out of range,
# contradictory flags or a missing required one is a wrong command line, 2.
DATA, USAGE = 1, 2
T = ["train", "--data", "{tmp}/ds", "--out", "{tmp}/new", *TINY]  # a good start for train
TOK = ["tokenize", "--out", "{tmp}/new"]
BAD_INPUTS = [
    # tokenize (the rest of its table is in test_cli.py)
    ([*TOK, "{tmp}/missing.txt"], DATA, "does not exist"),
    ([*TOK, "{tmp}/ds"], DATA, "is a directory"),
    ([*TOK, "{tmp}/empty.txt"], DATA, "the corpus is empty"),
    ([*TOK, "{tmp}/binary.dat"], DATA, "looks binary"),
    ([*TOK, "{tmp}/latin1.txt"], DATA, "are not UTF-8"),
    ([*TOK, "{tmp}/a_file"], DATA, "too small to hold out"),
    ([*TOK, "{tmp}/corpus.txt", "--val", "{tmp}/missing.txt"], DATA, "does not exist"),
    ([*TOK, "{tmp}/corpus.txt", "--tokenizer", "{tmp}/missing"], DATA, "no tokenizer"),
    (["tokenize", "--tokenizer", "{tmp}/binary.dat", "--text", "a"], DATA, "not a SentencePiece"),
    ([*TOK, "{tmp}/corpus.txt", "--vocab-size", "0"], USAGE, "--vocab-size must be positive"),
    ([*TOK, "{tmp}/corpus.txt", "--val-fraction", "nan"], USAGE, "--val-fraction must be in"),
    ([*TOK, "{tmp}/corpus.txt", "--val-fraction", "0.2", "--val", "{tmp}/corpus.txt"], USAGE,
     "give one"),
    (["tokenize", "{tmp}/corpus.txt"], USAGE, "--out DIR is required"),
    (["tokenize", "{tmp}/corpus.txt", "--out", "{tmp}/ds"], USAGE, "pass --force"),
    # train: sizes and flags
    ([*T, "--hidden-size", "0"], USAGE, "--hidden-size must be positive"),
    ([*T, "--num-layers", "-2"], USAGE, "--num-layers must be positive"),
    ([*T, "--embedding-dim", "0"], USAGE, "--embedding-dim must be positive"),
    ([*T, "--batch-size", "0"], USAGE, "--batch-size must be positive"),
    ([*T, "--k1", "8", "--k2", "4"], USAGE, "--k2 (4) must be at least --k1 (8)"),
    ([*T, "--lr", "-1"], USAGE, "--lr must be positive"),
    ([*T, "--dropout", "1.5"], USAGE, "--dropout"),
    ([*T, "--epochs", "0"], USAGE, "--epochs must be positive"),
    ([*T, "--eval-every", "0"], USAGE, "--eval-every must be positive"),
    ([*T, "--time-budget", "soon"], USAGE, "duration"),
    ([*T, "--model", "transformer"], USAGE, "transformer"),
    ([*T, "--optimizer", "adam"], USAGE, "'adam' is not one of 'adamw', 'sgd'"),
    ([*T, "--hidden-size", "lots"], USAGE, "'--hidden-size': Input should be a valid integer"),
    ([*T, "--batch-size", "100000"], USAGE, "too few"),
    ([*T, "--device", "cuda"], USAGE, "no CUDA device"),
    ([*T, "--precision", "fp16", "--device", "cpu"], USAGE, "no fast path"),
    ([*T, "--tie-weights", "--embedding-dim", "4"], USAGE, "--tie-weights needs"),
    ([*T, "--model", "ngram", "--sequences", "lines"], USAGE, "drop --sequences"),
    ([*T, "--lr", "nan"], USAGE, "--lr must be a finite number, got nan"),
    ([*T, "--clip", "inf"], USAGE, "--clip must be a finite number, got inf"),
    ([*T, "--weight-decay", "-inf"], USAGE, "--weight-decay must be a finite number, got -inf"),
    ([*T, "--dropout", "nan"], USAGE, "--dropout must be a finite number, got nan"),
    ([*T, "--jordan-decay", "-inf"], USAGE, "--jordan-decay must be a finite number"),
    ([*T, "--epochs", "inf"], USAGE, "--epochs must be a finite number, got inf"),
    ([*T, "--time-budget", "9" * 400], USAGE, "--time-budget must be a finite number"),
    # train: files
    (["train", "--out", "{tmp}/new"], USAGE, "--data is required"),
    (["train", "--data", "{tmp}/missing", "--out", "{tmp}/new"], DATA, "does not exist"),
    (["train", "--data", "{tmp}/empty.txt", "--out", "{tmp}/new"], DATA, "is empty"),
    (["train", "--data", "{tmp}/binary.dat", "--out", "{tmp}/new"], DATA, "looks binary"),
    (["train", "--data", "{tmp}/huge.txt", "--out", "{tmp}/new"], DATA, "looks binary"),
    (["train", "--data", "{tmp}/latin1.txt", "--out", "{tmp}/new"], DATA, "are not UTF-8"),
    (["train", "--data", "{tmp}/ck", "--out", "{tmp}/new"], DATA, "not an arlm dataset"),
    (["train", "--data", "{tmp}/ds_corrupt", "--out", "{tmp}/new"], DATA, "outside the vocabulary"),
    (["train", "--data", "{tmp}/ds_swapped", "--out", "{tmp}/new"], DATA, "re-tokenize"),
    (["train", "--data", "{tmp}/ds_no_val", "--out", "{tmp}/new"], DATA, "no validation text"),
    (["train", "--data", "{tmp}/ds", "--out", "{tmp}/ck"], USAGE, "--resume"),
    (["train", "--data", "{tmp}/ds", "--out", "{tmp}/ds_other"], USAGE, "--out"),
    (["train", "--data", "{tmp}/ds", "--out", "{tmp}/a_file"], USAGE, "is a file"),
    (["train", "--data", "{tmp}/ds", "--out", "/proc/arlm-nope"], DATA, "cannot create"),
    (["train", "--data", "{tmp}/ds", "--out", "{tmp}/a_file/sub"], DATA, "cannot create"),
    ([*T, "--config", "{tmp}/missing.toml"], DATA, "does not exist"),
    ([*T, "--config", "{tmp}/wrong_type.toml"], USAGE, "hidden-size takes a whole number"),
    ([*T, "--config", "{tmp}/unknown.toml"], USAGE, "unknown setting(s) layers"),
    ([*T, "--config", "{tmp}/broken.toml"], DATA, "not valid TOML"),
    ([*T, "--config", "{tmp}/binary.dat"], DATA, "not valid TOML"),
    ([*T, "--config", "{tmp}/nan.toml"], USAGE, "nan.toml: lr must be a finite number, got nan"),
    ([*T, "--config", "{tmp}/inf.toml"], USAGE, "inf.toml: epochs must be a finite number"),
    ([*T, "--config", "{tmp}/budget.toml"], USAGE, "time-budget must be a finite number"),
    # train --resume
    (["train", "--resume", "{tmp}/missing"], DATA, "not a checkpoint folder"),
    (["train", "--resume", "{tmp}/ds"], DATA, "not an arlm checkpoint"),
    (["train", "--resume", "{tmp}/ck_no_weights"], DATA, "has no last.safetensors"),
    (["train", "--resume", "{tmp}/ck", "--data", "{tmp}/ds_other"], DATA, "another tokenizer"),
    (["train", "--resume", "{tmp}/ck", "--hidden-size", "32"], USAGE, "drop --hidden-size"),
    (["train", "--resume", "{tmp}/ck", "--k1", "9", "--k2", "3"], USAGE, "must be at least"),
    (["train", "--resume", "{tmp}/ck", "--lr", "inf"], USAGE, "--lr must be a finite number"),
    # generate
    (["generate", "{tmp}/ck", "--top-p", "0"], USAGE, "--top-p must be in (0, 1]"),
    (["generate", "{tmp}/ck", "--top-p", "nan"], USAGE, "--top-p must be in (0, 1]"),
    (["generate", "{tmp}/ck", "--top-k", "-1"], USAGE, "--top-k must be >= 0"),
    (["generate", "{tmp}/ck", "--temperature", "-1"], USAGE, "--temperature must be"),
    (["generate", "{tmp}/ck", "--temperature", "nan"], USAGE, "--temperature must be"),
    (["generate", "{tmp}/ck", "--temperature", "inf"], USAGE, "--temperature must be"),
    (["generate", "{tmp}/ck", "--max-tokens", "-5"], USAGE, "--max-tokens must be >= 0"),
    (["generate", "{tmp}/ck", "--num-samples", "0"], USAGE, "--num-samples from 1 to"),
    (["generate", "{tmp}/ck", "--num-samples", "99999999999"], USAGE, "--num-samples from 1 to"),
    (["generate", "{tmp}/ck", "--beam", "0"], USAGE, "--beam must be at least 1"),
    (["generate", "{tmp}/ck", "--beam", "2", "--num-samples", "3"], USAGE, "drop --num-samples"),
    (["generate", "{tmp}/ck", "--beam", "2", "--length-penalty", "-1"], USAGE, "--length-penalty"),
    (["generate", "{tmp}/ck", "--beam", "2", "--length-penalty", "nan"], USAGE, "--length-penalty"),
    (["generate", "{tmp}/ck", "--prompt", "a", "--prompt-file", "{tmp}/a_file"], USAGE, "use one"),
    (["generate", "{tmp}/ck", "--prompt-file", "{tmp}/missing.txt"], DATA, "does not exist"),
    (["generate", "{tmp}/ck", "--prompt-file", "{tmp}/latin1.txt"], DATA, "not UTF-8"),
    (["generate", "{tmp}/ck", "--device", "cuda"], USAGE, "no CUDA device"),
    (["generate", "{tmp}/missing"], DATA, "not a checkpoint folder"),
    (["generate", "{tmp}/ds"], DATA, "not an arlm checkpoint"),
    (["generate", "{tmp}/ck_no_weights"], DATA, "has no model.safetensors"),
    (["generate", "{tmp}/ck_garbled"], DATA, "damaged or not a weights file"),
    (["generate", "{tmp}/ck_no_tokenizer"], DATA, "no tokenizer"),
    (["generate"], USAGE, "Missing argument"),
    # eval
    (["eval", "{tmp}/ck"], USAGE, "give what to score"),
    (["eval", "{tmp}/ck", "--text", "hi", "--data", "{tmp}/corpus.txt"], USAGE, "one of them"),
    (["eval", "{tmp}/ck", "--data", "{tmp}/missing.txt"], DATA, "does not exist"),
    (["eval", "{tmp}/ck", "--data", "{tmp}/empty.txt"], DATA, "empty"),
    (["eval", "{tmp}/ck", "--data", "{tmp}/binary.dat"], DATA, "looks binary"),
    (["eval", "{tmp}/ck", "--data", "{tmp}/huge.txt"], DATA, "looks binary"),
    (["eval", "{tmp}/ck", "--data", "{tmp}/latin1.txt"], DATA, "are not UTF-8"),
    (["eval", "{tmp}/ck", "--data", "{tmp}/ds_other"], DATA, "another tokenizer"),
    (["eval", "{tmp}/ck", "--data", "{tmp}/ds_swapped"], DATA, "re-tokenize"),
    (["eval", "{tmp}/ck", "--data", "{tmp}/ds_corrupt"], DATA, "outside the vocabulary"),
    (["eval", "{tmp}/ck", "--text", ""], DATA, "empty"),
    (["eval", "{tmp}/ck", "--text", "hi", "--precision", "fp8"], USAGE, "fp8"),
    (["eval", "{tmp}/ck", "--text", "hi", "--per-token", "/nowhere/x.tsv"], USAGE, "folder"),
    (["eval", "{tmp}/ck", "--text", "hi", "--per-token", ""], USAGE, "a file's path"),
    (["train", "--data", "{tmp}/ds", "--out", "{tmp}/new", "--reverse", "--sequences", "lines"],
     USAGE, "--reverse"),
    (["train", "--data", "{tmp}/ds", "--out", "{tmp}/new", "--model", "ffnn", "--context", "0"],
     USAGE, "--context"),
    (["eval", "{tmp}/ck_garbled", "--text", "hi"], DATA, "damaged or not a weights file"),
    (["eval", "{tmp}/ds", "--text", "hi"], DATA, "not an arlm checkpoint"),
    (["evaluate", "{tmp}/ck"], USAGE, "No such command"),
]  # fmt: skip


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
    "eval": ["--data", "--text", "--per-token", "--device", "--precision", "--plot"],
    "compare": ["--data", "--device", "--json", "--plot"],
    "diagnose": ["--data", "--max-distance", "--windows", "--json", "--plot"],
    "embed": ["--data", "--method", "--dim", "--window", "--out", "--neighbors", "--count",
              "--force"],
    "classify": ["--text", "--top", "--json"],
    "translate": ["--text", "--beam", "--temperature", "--top-k", "--max-tokens", "--json",
                  "--plot"],
    "export": ["--out", "--format"],
}  # fmt: skip
CHECKPOINT_FIRST = {"generate", "eval", "compare", "diagnose", "classify", "translate", "export"}
SAFE = {"train": ["--max-steps", "2", *TINY, "--out", "{tmp}/fuzz"], "tokenize": []}


@st.composite
def command_lines(draw) -> list[str]:
    command = draw(st.sampled_from(sorted(FLAGS)))
    args = [command]
    if command in CHECKPOINT_FIRST:
        args.append(draw(st.sampled_from(["{tmp}/ck", "{tmp}/ck_garbled", "{tmp}/ds", "x"])))
    for _ in range(draw(st.integers(0, 4))):
        flag = draw(st.sampled_from(FLAGS[command]))
        args += [flag] if flag in ("--force", "--json") else [flag, draw(VALUES)]
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
    changed; never a traceback; and whatever the outcome, the user's own files (those beside
    the datasets and checkpoints) keep their bytes. Each command line runs on a fresh copy of
    the files."""
    with tempfile.TemporaryDirectory() as fresh, contextlib.chdir(fresh):  # relative paths too
        tmp = Path(shutil.copytree(work, Path(fresh) / "w", ignore=ignore_patterns("huge.txt")))
        before = state_of(Path(fresh))
        result = arlm(*[a.format(tmp=tmp) for a in args])
        assert "Traceback" not in result.stderr, (args, result.stderr)
        assert result.code in (0, 1, 2), (args, result.stderr)
        after = state_of(Path(fresh))
        mine = [name for name, kind in before.items() if Path(name).parent == tmp and kind != "dir"]
        assert [after.get(name) for name in mine] == [before[name] for name in mine], args
        if result.code:
            errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
            assert len(errors) == 1, (args, result.stderr)
            assert after == before, args


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
