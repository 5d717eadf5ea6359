"""Labelled datasets for sequence classification (`arlm tokenize --task classify`)."""

import json
from pathlib import Path

import numpy as np
import pytest

from arlm import data, labelled
from arlm.errors import ArlmError, UsageError
from arlm.tokenizer import Tokenizer
from tests.conftest import corpus_text, run_arlm

ROWS = [
    ("cat", "the cat sat on the mat"),
    ("dog", "a dog ran after the red ball"),
    ("cat", "cats purr and sleep all day"),
    ("dog", "dogs bark at the postman"),
] * 10


def tsv(path: Path, rows=ROWS) -> Path:
    path.write_text("".join(f"{label}\t{text}\n" for label, text in rows), encoding="utf-8")
    return path


def test_a_tsv_and_a_folder_of_label_folders_read_the_same(tmp_path):
    from_tsv = labelled.read(tsv(tmp_path / "a.tsv"))
    for i, (label, text) in enumerate(ROWS):
        (tmp_path / "docs" / label).mkdir(parents=True, exist_ok=True)
        (tmp_path / "docs" / label / f"{i:03}.txt").write_text(text, encoding="utf-8")
    from_folder = labelled.read(tmp_path / "docs")
    pairs = sorted(zip(from_tsv.labels, from_tsv.texts, strict=True))
    assert pairs == sorted(zip(from_folder.labels, from_folder.texts, strict=True))
    assert from_tsv.where[1] == f"{tmp_path / 'a.tsv'}:2"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("cat the cat sat\n", ":1: no tab after the label"),
        ("cat\tok\n\t no label\n", ":2: an empty label or text"),
        ("\n\n", "holds no labelled text"),
    ],
)
def test_a_bad_tsv_is_refused_with_the_line(tmp_path, content, message):
    (tmp_path / "bad.tsv").write_text(content, encoding="utf-8")
    with pytest.raises(ArlmError, match=message):
        labelled.read(tmp_path / "bad.tsv")


def test_a_dataset_keeps_every_text_its_label_and_the_label_set(tmp_path):
    examples = labelled.read(tsv(tmp_path / "a.tsv"))
    train, val = data.hold_out(examples, 0.25)
    assert len(train) == 30 and len(val) == 10
    assert sorted(train.where + val.where) == sorted(examples.where)  # each text in one split
    meta = labelled.build(tmp_path / "ds", train, val)
    assert meta["task"] == "classify" and meta["labels"] == ["cat", "dog"]
    assert sum(meta["val"]["per_label"].values()) == meta["val"]["texts"] == 10
    tokenizer = Tokenizer.load(tmp_path / "ds")
    split = labelled.open_split(tmp_path / "ds", "val")
    for i in range(len(split)):
        assert tokenizer.decode(split.text(i)) == val.texts[i]
        assert meta["labels"][split.labels[i]] == val.labels[i]


def test_a_label_the_training_texts_never_had_is_refused(tmp_path):
    train = labelled.read(tsv(tmp_path / "a.tsv"))
    val = labelled.read(tsv(tmp_path / "v.tsv", [("cat", "a cat"), ("bird", "a bird sings")]))
    with pytest.raises(ArlmError, match=r"v.tsv:2: label 'bird' is not among the training"):
        labelled.build(tmp_path / "ds", train, val)
    assert not (tmp_path / "ds").exists()
    one = labelled.read(tsv(tmp_path / "one.tsv", [("cat", "a cat")] * 5))
    with pytest.raises(ArlmError, match="a classifier needs two"):
        labelled.build(tmp_path / "ds", one, one)


def test_the_cli_makes_a_labelled_dataset_and_the_language_model_paths_refuse_it(tmp_path):
    path = tsv(tmp_path / "a.tsv")
    result = run_arlm("tokenize", path, "--task", "classify", "--out", tmp_path / "ds",
                      "--json")  # fmt: skip
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["labels"] == ["cat", "dog"]
    assert "cat" in result.stderr and "2 labels" in result.stderr
    refused = run_arlm("train", "--data", tmp_path / "ds", "--out", tmp_path / "lm")
    assert refused.code == 2 and "labelled texts" in refused.stderr
    assert "--task classify" in refused.stderr
    with pytest.raises(UsageError, match="language-model dataset"):
        labelled.load_meta(make_lm_dataset(tmp_path))
    again = run_arlm("tokenize", path, "--task", "classify", "--out", tmp_path / "ds")
    assert again.code == 2 and "--force" in again.stderr  # nothing replaced without it
    forced = run_arlm("tokenize", path, "--task", "classify", "--out", tmp_path / "ds", "--force")
    assert forced.code == 0, forced.stderr


def make_lm_dataset(tmp_path: Path) -> Path:
    from tests.conftest import make_char_dataset

    (tmp_path / "lm-data").mkdir()
    return make_char_dataset(tmp_path / "lm-data")


def test_the_builtin_labelled_corpus_is_docstrings_by_package(tmp_path):
    result = run_arlm("tokenize", "--builtin", "python-modules", "--task", "classify",
                      "--out", tmp_path / "ds", "--json")  # fmt: skip
    assert result.code == 0, result.stderr
    meta = json.loads(result.stdout)
    assert meta["labels"] == ["asyncio", "email", "http", "importlib", "logging", "unittest"]
    assert meta["train"]["texts"] > 500 and min(meta["val"]["per_label"].values()) > 5
    refused = run_arlm("tokenize", "--builtin", "python-modules", "--out", tmp_path / "x")
    assert refused.code == 2 and "--task classify" in refused.stderr
    split = labelled.open_split(tmp_path / "ds", "train")
    assert np.bincount(split.labels).min() > 50


def test_train_on_a_text_file_takes_its_validation_text_from_val(tmp_path):
    """`arlm train --data FILE --val FILE`: the dataset it makes inside --out holds the given
    validation text, and a second run with the same files reuses that dataset."""
    text, held = tmp_path / "train.txt", tmp_path / "valid.txt"
    text.write_text(corpus_text(80), encoding="utf-8")
    held.write_text("the cat sat on a mat.\n" * 7, encoding="utf-8")
    out = tmp_path / "lm"
    first = run_arlm("train", "--data", text, "--val", held, "--out", out, "--max-steps", 2)
    assert first.code == 0, first.stderr
    assert "valid.txt for validation" in first.stderr
    assert data.load_meta(out / "dataset")["val"]["chars"] == len(held.read_text())
    again = run_arlm("train", "--data", text, "--val", held, "--out", out, "--max-steps", 2,
                     "--force")  # fmt: skip
    assert again.code == 0 and "tokenizing" not in again.stderr
