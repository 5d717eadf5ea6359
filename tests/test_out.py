"""`arlm train --out` never damages a folder: it takes a new folder, an empty one, or an arlm
checkpoint (replaced with --force only); anything else is refused and left byte for byte as it
was, --force included. A dataset whose tokenizer is not the one its ids were made with is
refused."""

import json
import shutil
from pathlib import Path

import pytest

from arlm import checkpoint, data
from tests.conftest import make_char_dataset, run_arlm
from tests.test_bad_input import TINY, state_of

RUN = [*TINY, "--max-steps", "2", "--log-every", "1"]
LM_FILES = set(checkpoint.FILES) - {checkpoint.TARGET_TOKENIZER}  # all but a seq2seq decoder's


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """A dataset `ds`, another one `ds_other`, and a checkpoint `ck` trained on `ds`."""
    tmp = tmp_path_factory.mktemp("out")
    make_char_dataset(tmp, 60)
    (tmp / "other.txt").write_text("a different alphabet: xyzzy qwerty 12345\n" * 40)
    data.build(tmp / "ds_other", [data.scan(tmp / "other.txt")], model_type="char")
    result = run_arlm("train", "--data", tmp / "ds", "--out", tmp / "ck", *RUN)
    assert result.code == 0, result.stderr
    return tmp


@pytest.fixture
def work(made, tmp_path) -> Path:
    """A fresh copy of `made`, plus `home`: a folder of the user's own files."""
    work = Path(shutil.copytree(made, tmp_path / "w"))
    home = work / "home"
    (home / "photos").mkdir(parents=True)
    (home / "notes.txt").write_text("my notes\n")
    (home / "tokenizer.model").write_bytes(b"the user's own file that happens to have this name")
    (home / "config.json").write_text('{"theme": "dark"}\n')
    (home / "photos" / "cat.jpg").write_bytes(bytes(range(256)))
    return work


def refused(*args) -> str:
    """The one error line of a command that must fail as a usage error."""
    result = run_arlm(*args)
    assert result.code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


# (--data, --out), relative to the work folder: each --out holds files that arlm did not write
NOT_A_CHECKPOINT = {
    "another dataset": ("ds_other", "ds"),
    "the dataset itself": ("ds", "ds"),
    "a folder of the user's files": ("ds", "home"),
    "a new folder inside the dataset": ("ds", "ds/ck"),
    "the folder that holds the dataset": ("ds", "."),
}


@pytest.mark.parametrize("force", [False, True], ids=["", "--force"])
@pytest.mark.parametrize("case", list(NOT_A_CHECKPOINT))
def test_out_that_is_not_a_checkpoint_is_refused_and_untouched(work, case, force):
    data_path, out = NOT_A_CHECKPOINT[case]
    before = state_of(work)
    message = refused(
        "train", "--data", work / data_path, "--out", work / out, *RUN, *["--force"] * force
    )
    assert "--out" in message and "--resume" not in message  # no checkpoint to resume
    assert state_of(work) == before


@pytest.mark.parametrize("force", [False, True], ids=["", "--force"])
def test_out_as_the_current_folder_of_user_files_is_refused(work, monkeypatch, force):
    monkeypatch.chdir(work / "home")
    shutil.copyfile(work / "corpus.txt", "corpus.txt")  # the user's text, beside their files
    before = state_of(work)
    for data_path in ("corpus.txt", work / "ds"):
        message = refused("train", "--data", data_path, "--out", ".", *RUN, *["--force"] * force)
        assert "--resume" not in message  # its config.json is not a checkpoint's
        assert state_of(work) == before


def test_force_keeps_a_checkpoint_that_holds_a_file_arlm_did_not_write(work):
    (work / "ck" / "notes.txt").write_text("results of the last run, by hand\n")
    before = state_of(work)
    refused("train", "--data", work / "ds", "--out", work / "ck", *RUN, "--force")
    assert state_of(work) == before


def test_a_dataset_whose_tokenizer_was_swapped_is_refused(work):
    shutil.copyfile(work / "ds_other" / "tokenizer.model", work / "ds" / "tokenizer.model")
    before = state_of(work)
    for args in (["train", "--data", work / "ds", "--out", work / "new", *RUN],
                 ["eval", work / "ck", "--data", work / "ds"]):  # fmt: skip
        result = run_arlm(*args)
        assert result.code == 1, result.stderr
        assert "tokenizer.model" in result.stderr and "arlm tokenize" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert state_of(work) == before


def steps_logged(folder: Path) -> list[int]:
    return [r["step"] for r in checkpoint.read_metrics(folder) if "loss" in r]


def test_force_replaces_a_previous_checkpoint(work):
    old = json.loads((work / "ck" / checkpoint.CONFIG).read_text())
    result = run_arlm("train", "--data", work / "ds_other", "--out", work / "ck", *RUN, "--force")
    assert result.code == 0, result.stderr
    new = json.loads((work / "ck" / checkpoint.CONFIG).read_text())
    assert new["data"]["tokenizer_sha256"] != old["data"]["tokenizer_sha256"]
    assert steps_logged(work / "ck") == [1, 2]  # the old run's records are gone
    tokenizer = (work / "ck" / checkpoint.TOKENIZER).read_bytes()
    assert tokenizer == (work / "ds_other" / "tokenizer.model").read_bytes()
    assert run_arlm("eval", work / "ck", "--text", "xyzzy qwerty").code == 0


def test_force_over_a_checkpoint_of_a_text_file(work):
    """The dataset arlm made beside the checkpoint goes with it, unless it is what --data is."""
    ck = work / "ck_text"
    assert run_arlm("train", "--data", work / "corpus.txt", "--out", ck, *RUN).code == 0
    assert (ck / "dataset" / "meta.json").is_file()
    dataset = state_of(ck / "dataset")
    result = run_arlm("train", "--data", ck / "dataset", "--out", ck, *RUN, "--force")
    assert result.code == 0, result.stderr
    assert state_of(ck / "dataset") == dataset and steps_logged(ck) == [1, 2]
    result = run_arlm("train", "--data", work / "ds_other", "--out", ck, *RUN, "--force")
    assert result.code == 0, result.stderr
    assert not (ck / "dataset").exists()
    assert sorted(p.name for p in ck.iterdir()) == sorted(LM_FILES)


def test_a_force_that_cannot_start_leaves_the_old_run_and_its_dataset(work):
    """--data a new text file over a checkpoint of another text: its dataset is rebuilt, but the
    old one comes back when the new run fails to start (here: damaged --init-embeddings)."""
    ck = work / "ck_text"
    assert run_arlm("train", "--data", work / "corpus.txt", "--out", ck, *RUN).code == 0
    before = state_of(ck)
    (work / "bad.emb").write_text("junk\n")
    args = ["--data", work / "other.txt", "--out", ck, *RUN, "--force"]
    result = run_arlm("train", *args, "--init-embeddings", work / "bad.emb")
    assert result.code != 0 and "error:" in result.stderr, result.stderr
    assert state_of(ck) == before
    assert run_arlm("train", "--resume", ck, "--max-steps", "3").code == 0


def test_an_empty_folder_is_a_fine_out(work):
    (work / "empty").mkdir()
    assert run_arlm("train", "--data", work / "ds", "--out", work / "empty", *RUN).code == 0
    assert (work / "empty" / checkpoint.BEST).is_file()


def test_train_without_arguments_asks_for_data_before_the_checkpoint(work, monkeypatch):
    """After a first run in the default --out, a bare `arlm train` says what is missing."""
    monkeypatch.chdir(work)
    shutil.copytree(work / "ck", work / "checkpoints" / "lstm")
    message = refused("train")
    assert "--data is required" in message and "--force" not in message


def test_force_clears_what_a_killed_run_left_being_written(work):
    ck = work / "ck"
    (ck / f".{checkpoint.LAST}.tmp-123").write_bytes(b"half a snapshot")
    (ck / ".dataset.partial-9").mkdir()
    (ck / ".dataset.partial-9" / "train.bin").write_bytes(b"\0\1")
    (ck / ".dataset.partial-9" / ".meta.json.tmp-9").write_text("{")
    assert "--resume" in refused("train", "--data", work / "ds", "--out", ck, *RUN)
    result = run_arlm("train", "--data", work / "ds", "--out", ck, *RUN, "--force")
    assert result.code == 0, result.stderr
    assert sorted(p.name for p in ck.iterdir()) == sorted(LM_FILES)


def test_an_empty_out_is_left_empty_when_the_run_cannot_start(work):
    (work / "empty").mkdir()
    args = ["--data", work / "corpus.txt", "--out", work / "empty", "--batch-size", "100000"]
    result = run_arlm("train", *args)  # refused once the text is tokenized into --out
    assert result.code == 2 and "too few" in result.stderr, result.stderr
    assert list((work / "empty").iterdir()) == []


def test_resume_clears_what_a_killed_run_left_and_nothing_else(work):
    ck = work / "ck"
    (ck / f".{checkpoint.LAST}.tmp-123").write_bytes(b"half a snapshot")
    (ck / f".{checkpoint.DATASET}.tmp-7").mkdir()  # a dataset a failed start set aside
    (ck / f".{checkpoint.DATASET}.tmp-7" / "train.bin").write_bytes(b"\0\1")
    (ck / ".notes.tmp-5").write_text("the user's own file, whatever its name\n")
    result = run_arlm("train", "--resume", ck, "--max-steps", "3")
    assert result.code == 0, result.stderr
    assert sorted(p.name for p in ck.iterdir() if p.name.startswith(".")) == [".notes.tmp-5"]
    assert (ck / ".notes.tmp-5").read_text() == "the user's own file, whatever its name\n"
