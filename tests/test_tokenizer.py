"""Tokenizer properties: exact round trips for every model type, chunking, vocab sizes."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arlm import tokenizer as tk
from arlm.data import dtype_for
from arlm.errors import ArlmError, UsageError
from tests.conftest import ODD_TEXT, corpus_text

# Characters that stress round trips: whitespace of every kind, controls, combining marks,
# astral-plane emoji, SentencePiece's U+2581, letters seen and never seen in training.
awkward = st.text(
    alphabet=st.one_of(
        st.sampled_from(" \t\n\r\x0b\x0c\x00\x1b\u00a0\u3000\u2581\u0301🐍🚀👍🏽é漢"),
        st.characters(codec="utf-8", exclude_categories=("Cs",)),
    ),
    max_size=60,
)


@pytest.mark.parametrize("kind", tk.MODEL_TYPES)
@settings(max_examples=150, deadline=None)
@given(text=awkward)
def test_decode_encode_is_identity(tokenizers, kind, text):
    tok = tokenizers[kind]
    assert tok.decode(tok.encode(text)) == text


@pytest.mark.parametrize("kind", tk.MODEL_TYPES)
@settings(max_examples=60, deadline=None)
@given(parts=st.lists(awkward, min_size=2, max_size=4))
def test_encoding_chunk_by_chunk_decodes_to_the_whole(tokenizers, kind, parts):
    """The corpus is encoded in chunks; their ids, concatenated, must decode to the whole."""
    tok = tokenizers[kind]
    ids = [i for part in parts for i in tok.encode(part)]
    assert tok.decode(ids) == "".join(parts)


@pytest.mark.parametrize("kind", tk.MODEL_TYPES)
def test_encode_array_equals_encode(tokenizers, kind):
    tok = tokenizers[kind]
    text = corpus_text(40)
    array = tok.encode_array(text, np.dtype(np.uint16))
    assert array.dtype == np.uint16
    assert array.tolist() == tok.encode(text)


def test_model_type_is_read_back_from_the_model(tokenizers):
    for kind, tok in tokenizers.items():
        assert tk.Tokenizer(tok.proto).model_type == kind


def test_char_vocabulary_holds_every_training_character(tokenizers):
    tok = tokenizers["char"]
    characters = set(corpus_text()) - {"\n", "\u2581"}  # a literal U+2581 is spelt in bytes
    assert tok.vocab_size == tk.char_vocab_size(set(corpus_text()))
    for ch in characters:
        ids = tok.encode(ch)
        assert len(ids) == 1, f"{ch!r} fell back to bytes"


def test_unseen_characters_use_byte_pieces(tokenizers):
    tok = tokenizers["bpe"]
    ids = tok.encode("ꙮ")  # never in the training text
    assert tok.pieces(ids) == ["<0xEA>", "<0x99>", "<0xAE>"]
    assert tok.sp.unk_id() not in ids


def test_newline_is_one_piece(tokenizers):
    for kind in ("bpe", "unigram", "char", "word"):
        tok = tokenizers[kind]
        assert tok.pieces(tok.encode("\n")) == ["\n"]


def test_vocabulary_too_large_names_the_largest_that_works():
    sentences = list(tk.training_sentences(corpus_text(50).split("\n")))
    with pytest.raises(UsageError, match=r"the largest that works is (\d+)") as info:
        tk.train(sentences, "bpe", 100_000)
    largest = int(info.value.largest)
    assert tk.train(sentences, "bpe", largest).vocab_size == largest


def test_default_vocabulary_shrinks_to_what_a_small_text_supports():
    tok = tk.train(["tiny text here"], "bpe")
    assert tk.MIN_VOCAB_SIZE <= tok.vocab_size < tk.DEFAULT_VOCAB_SIZE


def test_vocabulary_below_byte_fallback_is_refused():
    with pytest.raises(UsageError, match="too small"):
        tk.train(["some text"], "bpe", 100)


def test_empty_training_text_is_refused():
    with pytest.raises(ArlmError, match="empty") as info:
        tk.train(["", ""], "bpe")
    assert info.value.exit_code == 1  # bad data, not a wrong command line


def test_long_lines_are_cut_for_training_not_dropped():
    line = "abc " * 5000  # 20,000 characters: above SentencePiece's 4192-byte sentence limit
    sentences = list(tk.training_sentences([line]))
    assert all(len(s) <= tk.MAX_SENTENCE_CHARS for s in sentences)
    assert "".join(sentences) == line
    tok = tk.train(sentences, "bpe", 270)
    assert "▁abc" in tok.pieces(tok.encode(line))  # learnt from the long line


def test_corrupt_model_is_refused(tmp_path):
    path = tmp_path / "tokenizer.model"
    path.write_bytes(b"\x00garbage\xff" * 10)
    with pytest.raises(ArlmError, match="not a SentencePiece model"):
        tk.Tokenizer.load(path)


def test_decode_refuses_ids_outside_the_vocabulary(tokenizers):
    tok = tokenizers["bpe"]
    with pytest.raises(UsageError, match="outside the vocabulary"):
        tok.decode([tok.vocab_size])


def test_dtype_holds_every_id():
    assert dtype_for(256) == np.uint16
    assert dtype_for(65536) == np.uint16  # ids 0..65535
    assert dtype_for(65537) == np.uint32


def test_odd_text_round_trips_in_every_model(tokenizers):
    for tok in tokenizers.values():
        assert tok.decode(tok.encode(ODD_TEXT * 3)) == ODD_TEXT * 3
