"""Word tokens as the field counts them: on a WikiText-like text a word tokenizer gives exactly
one token a whitespace word (the corpus's `<unk>` included) and one a line end, as
pytorch/examples' word_language_model counts; the round trip stays exact, and `arlm eval`
gives perplexity per word."""

import io
import json
import math
import shutil

import pytest
import sentencepiece as spm
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from arlm import checkpoint, data, score
from arlm import tokenizer as tk
from arlm.errors import UsageError
from arlm.models import ModelConfig, build_model
from tests.conftest import needs_shared_data, run_arlm, write_config

# WikiText's shape: every line starts with a space and ends with " \n", blank lines are " \n",
# and words outside the vocabulary are written <unk>.
WIKI_LINES = [
    " = Valkyria Chronicles = ",
    " ",
    " the cat <unk> sat on the mat . ",
    " <unk> <unk> , a dog ran after red balls in green parks . ",
    " ",
    " = = Gameplay = = ",
    " ",
    " the dog sat . the cat ran after the <unk> . ",
]
WIKI_TEXT = "\n".join(WIKI_LINES * 4) + "\n"


def word_tokenizer(text: str, unk_marker: str = tk.DEFAULT_UNK_MARKER) -> tk.Tokenizer:
    return tk.train(tk.training_sentences(text.split("\n")), "word", unk_marker=unk_marker)


@pytest.fixture(scope="module")
def wiki() -> tk.Tokenizer:
    return word_tokenizer(WIKI_TEXT)


def pytorch_examples_count(text: str) -> int:
    """word_language_model's data.py: `line.split() + ['<eos>']` for each line of the file."""
    return sum(len(line.split()) + 1 for line in io.StringIO(text))


def test_a_wikitext_like_text_is_words_and_line_ends(wiki):
    ids = wiki.encode(WIKI_TEXT)
    assert len(ids) == tk.count_words(WIKI_TEXT) == pytorch_examples_count(WIKI_TEXT)
    assert wiki.decode(ids) == WIKI_TEXT
    pieces = wiki.pieces(wiki.encode(" the cat <unk> sat . \n <unk> \n"))
    assert pieces == ["▁the", "▁cat", "▁<unk>", "▁sat", "▁.", "▁\n", "▁<unk>", "▁\n"]
    assert wiki.unk_marker == "<unk>"


def test_words_next_to_the_marker_stay_in_the_vocabulary():
    """SentencePiece's word trainer drops a word just before a user symbol ("cat" here)."""
    tok = word_tokenizer(" the cat <unk> sat \n the <unk> dog<unk> ran \n")
    vocabulary = set(tok.pieces(range(tok.vocab_size)))
    assert {"▁cat", "▁the", "▁sat", "▁ran", "▁<unk>", "<unk>"} <= vocabulary
    assert len(tok.encode(" the cat <unk> sat \n")) == 5


@pytest.mark.parametrize(
    ("marker", "corpus"),
    [("", WIKI_TEXT.replace(" <unk>", "")), ("[UNK]", WIKI_TEXT.replace("<unk>", "[UNK]"))],
)
def test_a_corpus_without_a_marker_or_with_another_one(marker, corpus):
    tok = word_tokenizer(corpus, marker)
    assert tok.unk_marker == (marker or None)
    ids = tok.encode(corpus)
    assert len(ids) == tk.count_words(corpus) and tok.decode(ids) == corpus
    assert tok.decode(tok.encode(WIKI_TEXT)) == WIKI_TEXT  # "<unk>" is now spelled, exactly


@pytest.mark.parametrize("marker", ["a b", "<s>", "</s>", "x\ty", "<0x41>", "▁x"])
def test_a_marker_that_cannot_be_one_piece_is_refused(marker):
    with pytest.raises(UsageError, match="--unk-marker"):
        word_tokenizer(WIKI_TEXT, marker)


def test_the_marker_pieces_count_in_the_smallest_vocabulary():
    with pytest.raises(UsageError, match="use at least 263"):
        tk.train(["the <unk> cat"], "word", 262)
    assert tk.train(["the <unk> cat"], "word", 262, unk_marker="").vocab_size == 262


def test_text_that_looks_like_a_special_piece_is_text(wiki):
    """ "<s>" or "<0x41>" at a line start once encoded to the control or byte piece."""
    for text in ["<s>", "</s> x", "<0x41>", "<arlm-unk>", "▁\n <s>", "<unk>", "<unk>x <unk>"]:
        ids = wiki.encode(text)
        assert wiki.decode(ids) == text
        assert wiki.bos_id not in ids and wiki.eos_id not in ids


# the pieces of a word corpus, and the things that break them: runs of spaces, literal U+2581,
# tabs, the marker glued to a word, control and byte piece names
word_text = st.lists(
    st.sampled_from(
        [
            "the",
            "cat",
            "<unk>",
            "[UNK]",
            " ",
            " ",
            " ",
            "\n",
            "\n",
            ".",
            "▁",
            "\t",
            "<s>",
            "<0x41>",
            "é",
            "🐍",
            "\r",
        ]  # fmt: skip
    ),
    max_size=30,
).map("".join)


@settings(max_examples=200, deadline=None)
@given(text=word_text)
def test_word_round_trip_is_exact(wiki, text):
    assert wiki.decode(wiki.encode(text)) == text


@settings(max_examples=100, deadline=None)
@given(lines=st.lists(word_text.map(lambda s: s.replace("\n", "")), min_size=1, max_size=6))
def test_encoding_line_by_line_gives_the_ids_of_the_whole(wiki, lines):
    chunks = [line + "\n" for line in lines]
    assert [i for chunk in chunks for i in wiki.encode(chunk)] == wiki.encode("".join(chunks))


@pytest.fixture(scope="module")
def old() -> tk.Tokenizer:
    """A word tokenizer as arlm trained them before the marker and the "▁\\n" line end."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(WIKI_TEXT.split("\n")),
        model_writer=model,
        model_type="word",
        vocab_size=10_000_000,
        hard_vocab_limit=False,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        byte_fallback=True,
        allow_whitespace_only_pieces=True,
        user_defined_symbols=["\n"],
        num_threads=tk.TRAIN_THREADS,
        minloglevel=2,
    )
    return tk.Tokenizer(model.getvalue())


@settings(max_examples=100, deadline=None)
@given(text=word_text)
def test_an_old_word_tokenizer_still_round_trips_and_keeps_its_ids(old, text):
    """Its ids must stay those its datasets and checkpoints were made with: "\\n" alone."""
    ids = old.encode(text)
    assert old.decode(ids) == text
    assert old.unk_marker is None and "▁\n" not in old.pieces(ids)


def test_an_old_word_tokenizer_spells_the_marker_as_before(old):
    pieces = old.pieces(old.encode(" the <unk> \n"))
    assert pieces == ["▁the", "▁", "<0x3C>", "<0x75>", "<0x6E>", "<0x6B>", "<0x3E>", "▁", "\n"]


# -- datasets and the command line --------------------------------------------------------------


@pytest.fixture(scope="module")
def wiki_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("words")
    (folder / "train.txt").write_text(WIKI_TEXT, encoding="utf-8")
    val = "\n".join(WIKI_LINES[2:]) + "\n"
    (folder / "val.txt").write_text(val, encoding="utf-8")
    return folder


def test_a_word_dataset_counts_its_words(wiki_files, tmp_path):
    train, val = wiki_files / "train.txt", wiki_files / "val.txt"
    meta = data.build(tmp_path / "ds", [data.scan(train)], [data.scan(val)], model_type="word")
    for split, path in (("train", train), ("val", val)):
        words = tk.count_words(path.read_text(encoding="utf-8"))
        assert meta[split]["words"] == meta[split]["tokens"] == words
    assert meta["tokenizer"]["unk_marker"] == "<unk>"
    bpe = data.build(tmp_path / "bpe", [data.scan(train)], vocab_size=300)
    assert "words" not in bpe["val"] and "unk_marker" not in bpe["tokenizer"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model-type", "word", "--unk-marker", "a b"], "cannot be one piece"),
        (["--model-type", "word", "--unk-marker", "<s>"], "cannot be one piece"),
        (["--model-type", "bpe", "--unk-marker", "[UNK]"], "is for --model-type word"),
        (["--unk-marker", "[UNK]"], "is for --model-type word"),  # bpe, the default
        (["--tokenizer", "t.model", "--unk-marker", "[UNK]"], "drop --vocab-size/--model-type"),
    ],
)
def test_bad_unk_markers_are_usage_errors(wiki_files, tmp_path, args, message):
    result = run_arlm("tokenize", wiki_files / "train.txt", "--out", tmp_path / "ds", *args)
    assert result.code == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(("marker", "expected"), [("[UNK]", "[UNK]"), ("", None)])
def test_tokenize_takes_another_marker(wiki_files, tmp_path, marker, expected):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(WIKI_TEXT.replace("<unk>", "[UNK]"), encoding="utf-8")
    args = ["--model-type", "word", "--unk-marker", marker, "--val-fraction", "0", "--json"]
    result = run_arlm("tokenize", corpus, "--out", tmp_path / "ds", *args)
    assert result.code == 0, result.stderr
    meta = json.loads(result.stdout)
    assert meta["tokenizer"]["unk_marker"] == expected
    assert "words" in result.stderr  # the summary's column
    assert meta["train"]["tokens"] == meta["train"]["words"]  # without a marker, [UNK] is a word


def test_eval_gives_perplexity_per_word(wiki_files, tmp_path):
    ds, ck = tmp_path / "ds", tmp_path / "ck"
    train, val = wiki_files / "train.txt", wiki_files / "val.txt"
    meta = data.build(ds, [data.scan(train)], [data.scan(val)], model_type="word")
    torch.manual_seed(0)  # an untrained model scores as well as any
    model = build_model(ModelConfig(kind="gru", vocab_size=meta["vocab_size"], hidden_size=8))
    ck.mkdir()
    write_config(ck, model)
    checkpoint.save_weights(model.eval(), ck)
    shutil.copy(ds / "tokenizer.model", ck / checkpoint.TOKENIZER)
    result = run_arlm("eval", ck, "--data", ds, "--json")
    assert result.code == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["words"] == meta["val"]["words"]
    nats = figures["loss"] * figures["tokens"]
    assert figures["perplexity_per_word"] == pytest.approx(math.exp(nats / figures["words"]))
    for other in (["--data", val], ["--text", val.read_text(encoding="utf-8")]):
        again = run_arlm("eval", ck, *other, "--json")
        assert json.loads(again.stdout) == pytest.approx(figures)
    plain = run_arlm("eval", ck, "--data", ds)
    assert f"{figures['words']:,} words: perplexity" in plain.stderr
    # a dataset made before meta.json counted words: the count comes from its ids
    meta_path = ds / "meta.json"
    old = json.loads(meta_path.read_text())
    del old["val"]["words"], old["train"]["words"], old["tokenizer"]["unk_marker"]
    meta_path.write_text(json.dumps(old))
    assert json.loads(run_arlm("eval", ck, "--data", ds, "--json").stdout) == figures


def test_per_word_figures_leave_out_the_line_ends_no_sequence_predicts(wiki):
    from tests.test_score import uniform_gru

    text = data.text_from_string(wiki, "the cat sat .\n\n\nthe dog ran .\n")
    assert text.words == 12
    model, lines = uniform_gru(wiki.vocab_size), ("lines", wiki)
    figures = score.score(model, text, torch.device("cpu"), torch.float32, by_sequence=lines)
    assert figures["words"] == 12 - 2  # the two blank lines' ends
    nats = figures["loss"] * figures["tokens"]
    assert figures["perplexity_per_word"] == pytest.approx(math.exp(nats / figures["words"]))


@pytest.mark.slow
def test_wikitext2_valid_is_words_and_line_ends(tmp_path):
    train = needs_shared_data("wikitext-2", "train.txt")
    valid = needs_shared_data("wikitext-2", "valid.txt")
    meta = data.build(tmp_path / "wt2", [data.scan(train)], [data.scan(valid)], model_type="word")
    text = valid.read_text(encoding="utf-8")
    assert meta["val"]["tokens"] == len(text.split()) + text.count("\n") == 217_646
    tok = tk.Tokenizer.load(tmp_path / "wt2")
    assert tok.decode(data.open_ids(tmp_path / "wt2", "val")) == text
