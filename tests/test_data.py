"""Datasets: chunked reading, splits, exact reconstruction, batchify and TBPTT windows."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arlm import data
from arlm.errors import ArlmError, UsageError
from arlm.tokenizer import Tokenizer
from tests.conftest import corpus_text, make_char_dataset


def test_read_text_chunks_end_at_line_ends_and_rebuild_the_file(tmp_path):
    text = corpus_text(50)
    path = tmp_path / "a.txt"
    path.write_text(text, encoding="utf-8")
    chunks = list(data.read_text([data.Span(path, 0, path.stat().st_size)], block_bytes=64))
    assert "".join(chunks) == text
    assert len(chunks) > 5
    assert all(chunk.endswith("\n") for chunk in chunks[:-1])


def test_read_text_never_splits_a_character(tmp_path):
    text = "é🐍漢" * 100  # multi-byte characters, no newline: blocks cut inside characters
    path = tmp_path / "a.txt"
    path.write_text(text, encoding="utf-8")
    chunks = list(data.read_text([data.Span(path, 0, path.stat().st_size)], block_bytes=7))
    assert "".join(chunks) == text


def test_split_is_at_a_line_end_and_covers_everything(tmp_path):
    paths = []
    for name, lines in (("a", 30), ("b", 40)):
        paths.append(tmp_path / f"{name}.txt")
        paths[-1].write_text(corpus_text(lines), encoding="utf-8")
    sources = [data.scan(p) for p in paths]
    train, val = data.split_spans(sources, 0.3)
    whole = b"".join(p.read_bytes() for p in paths)
    pieces = [s.path.read_bytes()[s.start : s.end] for s in train + val]
    assert b"".join(pieces) == whole
    head = b"".join(pieces[: len(train)])
    assert head.endswith(b"\n")
    assert abs(len(head) / len(whole) - 0.7) < 0.05


def test_scan_counts_and_locates_bytes_that_are_not_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("line one\nline two café\nand naïve\n".encode("latin-1"))
    source = data.scan(path)
    assert source.invalid_bytes == 2
    offset, line = source.first_invalid
    assert (offset, line) == (len(b"line one\nline two caf"), 2)
    with pytest.raises(
        ArlmError, match=r"2 bytes are not UTF-8 \(first at byte offset 21, line 2\)"
    ):
        data.check_utf8([source], "refuse")
    data.check_utf8([source], "replace")  # accepted: read as U+FFFD


@settings(max_examples=40, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from("ab \n\té🐍漢\u2581\r"), max_size=300),
    block=st.integers(min_value=1, max_value=40),
)
def test_chunked_encoding_reproduces_any_text(tokenizers, tmp_path_factory, text, block):
    path = tmp_path_factory.mktemp("t") / "x.txt"
    path.write_text(text, encoding="utf-8", newline="")
    tok = tokenizers["bpe"]
    spans = [data.Span(path, 0, path.stat().st_size)]
    ids = np.concatenate(
        [tok.encode_array(c, np.dtype(np.uint16)) for c in data.read_text(spans, block)] or [[]]
    )
    assert tok.decode(ids.astype(int)) == text


@pytest.mark.parametrize("kind", ["bpe", "char", "word"])
def test_build_reproduces_train_and_val_text_byte_for_byte(tmp_path, corpus, kind, monkeypatch):
    monkeypatch.setattr(data, "BLOCK_BYTES", 256)  # many chunks, even on a tiny corpus
    size = 340 if kind == "bpe" else None
    meta = data.build(
        tmp_path / "ds", [data.scan(corpus)], val_fraction=0.2, model_type=kind, vocab_size=size
    )
    tok = Tokenizer.load(tmp_path / "ds")
    train = tok.decode(data.open_ids(tmp_path / "ds", "train"))
    val = tok.decode(data.open_ids(tmp_path / "ds", "val"))
    assert (train + val).encode() == corpus.read_bytes()
    assert meta["train"]["tokens"] == len(data.open_ids(tmp_path / "ds", "train"))
    assert meta["train"]["bytes"] + meta["val"]["bytes"] == corpus.stat().st_size
    assert meta["train"]["chars"] == len(train)
    assert meta["tokenizer"]["model_type"] == kind
    assert json.loads((tmp_path / "ds" / "meta.json").read_text()) == meta


def test_tokenizer_never_sees_validation_text(tmp_path):
    train = tmp_path / "train.txt"
    val = tmp_path / "val.txt"
    train.write_text(corpus_text(100), encoding="utf-8")
    val.write_text("жжж ж " * 50, encoding="utf-8")  # a letter absent from the training text
    data.build(tmp_path / "ds", [data.scan(train)], [data.scan(val)], model_type="char")
    tok = Tokenizer.load(tmp_path / "ds")
    assert tok.pieces(tok.encode("ж")) == ["<0xD0>", "<0xB6>"]  # byte fallback: not a piece


def test_sampled_tokenizer_training_keeps_about_the_budget(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text(corpus_text(2000), encoding="utf-8")
    spans = [data.Span(path, 0, path.stat().st_size)]
    lines, characters = data.sample_lines(spans, budget=path.stat().st_size // 10)
    kept = sum(len(line) + 1 for line in lines)
    assert 0.05 < kept / path.stat().st_size < 0.2
    assert characters == set(path.read_bytes().decode())  # counted over everything


def test_long_lines_are_encoded_not_dropped(tmp_path):
    path = tmp_path / "long.txt"
    text = ("word " * 10_000).strip() + "\n" + corpus_text(20)
    path.write_text(text, encoding="utf-8")
    data.build(tmp_path / "ds", [data.scan(path)], val_fraction=0, vocab_size=300)
    tok = Tokenizer.load(tmp_path / "ds")
    assert tok.decode(data.open_ids(tmp_path / "ds", "train")) == text


def test_open_ids_is_a_memory_map_and_notices_truncation(tmp_path, corpus):
    data.build(tmp_path / "ds", [data.scan(corpus)], vocab_size=300)
    ids = data.open_ids(tmp_path / "ds")
    assert isinstance(ids, np.memmap) and ids.dtype == np.uint16
    with open(tmp_path / "ds" / "train.bin", "r+b") as file:
        file.truncate(10)
    with pytest.raises(ArlmError, match="truncated"):
        data.open_ids(tmp_path / "ds")


def test_a_newer_dataset_format_is_refused(tmp_path, corpus):
    data.build(tmp_path / "ds", [data.scan(corpus)], vocab_size=300)
    meta = json.loads((tmp_path / "ds" / "meta.json").read_text())
    meta["format_version"] = 99
    (tmp_path / "ds" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArlmError, match="format version 99"):
        data.load_meta(tmp_path / "ds")


# -- batchify and windows ---------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 400), batch=st.integers(1, 9), k1=st.integers(1, 20), extra=st.integers(0, 9)
)
def test_every_token_but_the_first_is_a_target_exactly_once(n, batch, k1, extra):
    ids = np.arange(n, dtype=np.uint32)
    if (n - 1) // batch < 1:
        with pytest.raises(UsageError):
            data.batchify(ids, batch)
        return
    rows = data.batchify(ids, batch)
    targets = []
    for window in data.windows(rows, k1, k1 + extra):
        counted = window.targets[:, window.loss_start :]
        assert counted.shape[1] <= k1
        assert window.inputs.shape[1] <= k1 + extra
        assert (window.targets[:, :-1] == window.inputs[:, 1:]).all()  # shifted by one
        targets.append(counted)
    seen = np.concatenate(targets, axis=1).ravel()
    length = (n - 1) // batch
    assert sorted(seen.tolist()) == list(range(1, batch * length + 1))


def test_rows_are_contiguous_views_of_the_stream():
    ids = np.arange(101, dtype=np.uint16)
    rows = data.batchify(ids, 4)
    assert rows.shape == (4, 26)
    assert np.shares_memory(rows, ids)  # a view, not a copy
    for b in range(4):
        assert (np.diff(rows[b].astype(int)) == 1).all()  # row b is one stretch of text
        assert rows[b, 0] == 25 * b


def test_windows_reach_back_k2_tokens_and_count_the_last_k1():
    rows = data.batchify(np.arange(41, dtype=np.uint16), 1)  # one row of 40 targets
    windows = list(data.windows(rows, k1=10, k2=15))
    assert [w.position for w in windows] == [0, 10, 20, 30]
    second = windows[1]
    assert second.inputs[0].tolist() == list(range(5, 20))
    assert second.loss_start == 5
    assert second.targets[0, second.loss_start :].tolist() == list(range(11, 21))


def test_windows_start_where_asked():
    rows = data.batchify(np.arange(41, dtype=np.uint16), 2)
    assert [w.position for w in data.windows(rows, 5, start=10)] == [10, 15]
    with pytest.raises(UsageError, match="k1 <= k2"):
        next(data.windows(rows, 5, 4))


def test_a_dataset_whose_tokenizer_is_not_meta_jsons_is_refused(tmp_path, corpus, tokenizers):
    data.build(tmp_path / "ds", [data.scan(corpus)], vocab_size=300)
    data.load_meta(tmp_path / "ds")
    tokenizers["char"].save(tmp_path / "ds" / "tokenizer.model")  # ids of one, read by another
    with pytest.raises(ArlmError, match="re-tokenize") as info:
        data.load_meta(tmp_path / "ds")
    assert info.value.exit_code == 1
    (tmp_path / "ds" / "tokenizer.model").unlink()
    with pytest.raises(ArlmError, match="tokenizer.model") as info:
        data.load_meta(tmp_path / "ds")
    assert info.value.exit_code == 1


def test_token_counts_are_the_bincount_of_a_split_read_in_blocks(tmp_path):
    folder = make_char_dataset(tmp_path)
    ids = np.asarray(data.open_ids(folder, "train"))
    vocab = data.load_meta(folder)["vocab_size"]
    expected = np.bincount(ids, minlength=vocab)
    for block in (2, 6, 1 << 20):  # bytes: one id, several, the whole split at once
        assert np.array_equal(data.token_counts(folder, "train", block=block), expected)
