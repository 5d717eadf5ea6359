"""--sequences on word datasets: a word tokenizer ends WikiText's lines with one "▁\n" piece
(the line's trailing space and its newline), and every line-end piece ends a line, whose `</s>`
stands for that piece's bytes; blank lines of either piece are predicted by nothing."""

import json
import math

import numpy as np
import pytest
import torch

from arlm import checkpoint, data, score
from arlm import sequences as seqs
from arlm import tokenizer as tk
from tests.conftest import run_arlm
from tests.test_score import uniform_gru

# WikiText's shape: lines end with " \n", a blank line is " \n", words outside the vocabulary
# are written <unk>.
TINY = " = T = \n \n the cat <unk> sat . \n a dog . \n"
LINES = [" = T =", " the cat <unk> sat .", " a dog ."]


@pytest.fixture(scope="module")
def word() -> tk.Tokenizer:
    return tk.train(tk.training_sentences(TINY.split("\n")), "word")


def test_a_word_tokenizer_ends_lines_with_either_piece(word, tokenizers):
    spaced, plain = word.encode(" \n")[0], word.newline_id
    assert word.pieces([spaced]) == ["▁\n"]
    assert word.line_ends == {plain: 1, spaced: 2}
    char = tokenizers["char"]  # an old-style tokenizer: "\n" alone
    assert char.line_ends == {char.newline_id: 1}


def test_every_line_end_piece_ends_a_line(word):
    ids = word.encode(TINY + "and a cat\n")  # the last line ends with "\n" alone
    lines = seqs.split(ids, word.line_ends, "lines")
    assert [word.decode(s.tolist()) for s in lines] == [*LINES, "and a cat"]
    documents = seqs.split(ids, word.line_ends, "documents")  # the blank line cuts the text
    assert [word.decode(d.tolist()) for d in documents] == [LINES[0], TINY[10:] + "and a cat\n"]


def scored(tok: tk.Tokenizer, string: str, unit: str) -> dict:
    text = data.text_from_string(tok, string)
    return score.score(uniform_gru(tok.vocab_size), text, torch.device("cpu"), torch.float32,
                       by_sequence=(unit, tok))  # fmt: skip


@pytest.mark.parametrize(
    ("unit", "targets", "unscored_bytes", "unscored_ends"),
    [
        # ▁= ▁T ▁= </s> | ▁the ▁cat ▁<unk> ▁sat ▁. </s> | ▁a ▁dog ▁. </s>: each </s> stands
        # for a " \n" (2 bytes); the blank line's " \n" is predicted by nothing
        ("lines", 3 + 5 + 3 + 3, 2, 1),
        # ▁= ▁T ▁= </s> (" \n \n", 4 bytes) | ▁the ... ▁. ▁\n ▁a ▁dog ▁. ▁\n </s> (the end:
        # no bytes)
        ("documents", 4 + 11, 0, 0),
    ],
)
def test_bits_per_byte_on_words_by_hand(word, unit, targets, unscored_bytes, unscored_ends):
    figures = scored(word, TINY, unit)
    bits = targets * math.log2(word.vocab_size)
    assert figures["tokens"] == targets
    assert len(TINY.encode()) == len(TINY) == 42
    assert figures["bits_per_byte"] == pytest.approx(bits / (42 - unscored_bytes), rel=1e-6)
    assert figures["bits_per_char"] == pytest.approx(bits / (42 - unscored_bytes), rel=1e-6)
    assert figures["words"] == tk.count_words(TINY) - unscored_ends == 15 - unscored_ends
    ids = word.encode(TINY)
    assert seqs.unscored_newlines(ids, word.line_ends, unit) == unscored_ends
    assert seqs.unscored_bytes(ids, word.line_ends, unit) == unscored_bytes


def test_blank_lines_of_either_piece_change_no_figure(word):
    lines = TINY.replace(" \n \n", " \n").split("\n")[:-1]
    text = "\n".join(lines) + "\n"
    more = " \n\n" + "\n \n\n".join(lines) + "\n \n\n"  # blank lines of " \n" and "\n"
    assert scored(word, more, "lines") == scored(word, text, "lines")
    paragraphs = TINY + "and a cat . \n"
    longer_gaps = " \n\n" + paragraphs.replace(" \n \n", " \n \n\n \n \n")
    assert scored(word, longer_gaps, "documents") == scored(word, paragraphs, "documents")


# -- through the command line ----------------------------------------------------------------

SMALL = ["--hidden-size", "16", "--embedding-dim", "8", "--batch-size", "4", "--precision", "fp32",
         "--eval-every", "3", "--max-steps", "6", "--sequences", "lines"]  # fmt: skip


@pytest.fixture(scope="module")
def word_dataset(tmp_path_factory):
    folder = tmp_path_factory.mktemp("words")
    (folder / "train.txt").write_text(TINY * 8, encoding="utf-8")
    (folder / "val.txt").write_text(TINY * 2, encoding="utf-8")
    train, val = data.scan(folder / "train.txt"), data.scan(folder / "val.txt")
    data.build(folder / "ds", [train], [val], model_type="word")
    return folder / "ds"


def test_train_and_eval_a_word_dataset_by_lines(word_dataset, tmp_path):
    out = tmp_path / "ck"
    result = run_arlm("train", "--data", word_dataset, *SMALL, "--out", out)
    assert result.code == 0, result.stderr
    assert "24 lines" in result.stderr  # every line of the training text, blank lines none
    records = [m for m in checkpoint.read_metrics(out) if "val_loss" in m]
    best = min(records, key=lambda m: m["val_loss"])
    figures = json.loads(run_arlm("eval", out, "--data", word_dataset, "--json").stdout)
    assert figures["loss"] == pytest.approx(best["val_loss"], rel=1e-6)  # scored as validated
    assert figures["tokens"] == 2 * 14  # 3 lines of 3, 5 and 3 words, each with its </s>
    val_bytes = 2 * (42 - 2)  # each copy's blank " \n" is predicted by nothing
    bits = figures["loss"] * figures["tokens"] / math.log(2)
    assert figures["bits_per_byte"] == pytest.approx(bits / val_bytes, rel=1e-6)
    assert best["bits_per_byte"] == pytest.approx(figures["bits_per_byte"], rel=1e-6)
    assert figures["words"] == 2 * (15 - 1)
    sample = run_arlm("generate", out, "--prompt", " the", "--max-tokens", "20", "--seed", "0")
    assert sample.code == 0, sample.stderr


def test_an_old_style_char_tokenizer_keeps_its_newlines(tokenizers):
    char = tokenizers["char"]
    ids = np.asarray(char.encode(TINY))
    lines = seqs.split(ids, char.line_ends, "lines")  # " \n" is a space, then a line end
    spaced = [" = T = ", " ", " the cat <unk> sat . ", " a dog . "]
    assert [char.decode(s.tolist()) for s in lines] == spaced
    assert [s.tolist() for s in seqs.split(ids, char.newline_id, "lines")] == [
        s.tolist() for s in lines
    ]
    assert seqs.unscored_bytes(ids, char.line_ends, "lines") == 0
    assert seqs.unscored_bytes(char.encode("a\n\n\nb\n"), char.line_ends, "lines") == 2
