"""SentencePiece tokenizers that give back any text byte for byte.

The settings that make `decode(encode(s)) == s` hold (docs/ARCHITECTURE.md, "Tokenizer
settings"): identity normalization, no whitespace folding, byte fallback (so unseen characters,
emoji included, become byte pieces instead of <unk>), and no dummy prefix (so encoding a text
chunk by chunk gives the same ids as encoding it whole). Two gaps in SentencePiece are closed here:

- a literal U+2581 (SentencePiece's visible space) in the text would decode as a space: we spell
  it with its three byte pieces instead;
- the `word` model falls back to bytes of the escaped word (a space comes back as U+2581) and
  ignores user symbols: words are looked up here, and unknown ones spelled in bytes.

A `word` model counts a text as the field does (pytorch/examples' word_language_model: every
whitespace-separated word, and one <eos> a line): a word is one piece with the space before it
("▁cat"), a line end one piece with the space before it if any ("▁\n"), and the corpus's own
unknown-word marker ("<unk>" in WikiText and PTB) one piece like any word.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from pathlib import Path

import numpy as np
import sentencepiece as spm

from arlm import lemmas
from arlm.errors import ArlmError, UsageError

MODEL_TYPES = ("bpe", "unigram", "char", "word")
SPACE = "\u2581"  # how SentencePiece writes a space inside a piece
NUM_SPECIALS = 3  # <unk>, <s>, </s>
NUM_BYTE_PIECES = 256  # <0x00> .. <0xFF>, for byte fallback
DEFAULT_VOCAB_SIZE = 4000
TRAIN_THREADS = 2  # pinned: unigram models come out differently with another thread count
ENCODE_THREADS = 2
MIN_VOCAB_SIZE = NUM_SPECIALS + NUM_BYTE_PIECES + 2  # "\n" and at least one more piece
MAX_SENTENCE_CHARS = 4096  # longer lines are cut for training, never silently dropped
_MODEL_TYPE_NAMES = {1: "unigram", 2: "bpe", 3: "word", 4: "char"}  # TrainerSpec.ModelType
_USER_SYMBOLS_FIELD = 31  # TrainerSpec.user_defined_symbols
DEFAULT_UNK_MARKER = "<unk>"  # how WikiText and PTB write a word outside their vocabulary
# SentencePiece's own unknown piece is also "<unk>": word models rename it, so that the corpus's
# "<unk>" can be a user symbol. The name also tells a word model made with the "▁\n" line end
# from an older one, whose ids must stay as they were made.
WORD_UNK_PIECE = "<arlm-unk>"
_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")
NORMALIZER_FIELD = 3  # ModelProto.normalizer_spec
NORMALIZER_NAME = "identity"  # arlm's tokenizers keep the text as it is...
LEMMAS_TAG = "+lemmas:"  # ...or lemmatise it first: "identity+lemmas:en"


class Tokenizer:
    """A loaded SentencePiece model with exact, chunkable encode and decode."""

    def __init__(self, proto: bytes) -> None:
        try:
            self.sp = spm.SentencePieceProcessor(model_proto=proto)
            self.model_type = _model_type(proto)
        except Exception as error:  # SentencePiece raises RuntimeError/OSError on garbage
            raise ArlmError(f"not a SentencePiece model ({error})") from None
        self.proto = proto
        self.vocab_size = self.sp.vocab_size()
        self.lemmas = _lemma_language(proto)  # the language whose lemmas replace words, if any
        self._lemmatize = lemmas.lemmatizer(self.lemmas) if self.lemmas else None
        self._pieces = {self.sp.id_to_piece(i): i for i in range(self.vocab_size)}
        # what a word of the text may be: never a control, unknown or byte piece ("<s>" is text)
        self._words = {piece: i for piece, i in self._pieces.items() if self._is_word(i)}
        self._bytes = [self._pieces.get(f"<0x{b:02X}>") for b in range(NUM_BYTE_PIECES)]
        self.byte_fallback = None not in self._bytes
        self._newline = [self._pieces["\n"]] if "\n" in self._pieces else self._spell("\n")
        self._space = [self._pieces[SPACE]] if SPACE in self._pieces else self._spell(" ")
        spaced_newline = self._pieces.get(SPACE + "\n")
        self._spaced_newline = (
            [spaced_newline]
            if self.model_type == "word"
            and self.sp.id_to_piece(self.sp.unk_id()) == WORD_UNK_PIECE
            and spaced_newline is not None
            else None
        )

    def _is_word(self, i: int) -> bool:
        sp = self.sp
        return not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i) or sp.is_unused(i))

    @classmethod
    def load(cls, path: Path) -> Tokenizer:
        """Load `path`: a tokenizer.model, or a directory holding one (dataset or checkpoint)."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.model"
        if not path.is_file():
            raise ArlmError(f"no tokenizer at {path}: pass a tokenizer.model or a dataset folder")
        try:
            return cls(path.read_bytes())
        except ArlmError as error:
            raise ArlmError(f"{path} is {error}; re-create it with `arlm tokenize`") from None

    @property
    def sha256(self) -> str:
        """Identifies the model: datasets and checkpoints record it to refuse a mismatch."""
        return hashlib.sha256(self.proto).hexdigest()

    def save(self, path: Path) -> None:
        Path(path).write_bytes(self.proto)

    def with_lemmas(self, language: str) -> Tokenizer:
        """This tokenizer, lemmatising every text in `language` before encoding it (arlm.lemmas).
        It says so in its normalizer's name, which SentencePiece reads as a label only."""
        if not lemmas.known(language):
            raise UsageError(lemmas.UNKNOWN.format(language))
        spec = _proto_field(self.proto, NORMALIZER_FIELD) or b""
        name = f"{NORMALIZER_NAME}{LEMMAS_TAG}{language}".encode()
        spec = _proto_without(spec, 1) + _proto_entry(1, name)  # NormalizerSpec.name
        proto = _proto_without(self.proto, NORMALIZER_FIELD)
        return Tokenizer(proto + _proto_entry(NORMALIZER_FIELD, spec))

    # -- encoding -----------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Ids of `text`; any string works, and `decode` gives it back exactly."""
        return list(chain.from_iterable(self._encode_lines(text)))

    @property
    def newline_id(self) -> int | None:
        """The id of the "\n" piece, if a newline is one piece."""
        return self._newline[0] if len(self._newline) == 1 else None

    @property
    def line_ends(self) -> dict[int, int]:
        """The ids that end a line, each with the bytes (and characters) it stands for: "\n",
        and a new word model's "▁\n" (a line's trailing space and its newline)."""
        ends = {} if self.newline_id is None else {self.newline_id: 1}
        if self._spaced_newline:
            ends[self._spaced_newline[0]] = 2
        return ends

    @property
    def unk_marker(self) -> str | None:
        """The corpus's unknown-word marker that a word model holds as one piece, if any."""
        if self.model_type != "word":
            return None
        spec = _proto_field(self.proto, 2)
        symbols = [s.decode() for s in _proto_fields(spec, _USER_SYMBOLS_FIELD) if s != b"\n"]
        return symbols[0] if symbols else None

    @property
    def bos_id(self) -> int:
        return self.sp.bos_id()

    @property
    def eos_id(self) -> int:
        return self.sp.eos_id()

    def encode_array(self, text: str, dtype: np.dtype) -> np.ndarray:
        """`encode` straight into a numpy array, for corpora."""
        rows = self._encode_lines(text)
        return np.fromiter(chain.from_iterable(rows), dtype=dtype, count=sum(map(len, rows)))

    def _encode_lines(self, text: str) -> list[list[int]]:
        """Encode line by line (faster than one long string) and put the newlines back; a
        lemmatising tokenizer first replaces each word by its lemma."""
        if self._lemmatize:
            text = self._lemmatize(text)
        lines = text.split("\n")
        ends = [self._newline] * (len(lines) - 1) + [[]]
        if self.model_type == "word":
            if self._spaced_newline:  # a line's trailing space goes with its end: "▁\n"
                for i, line in enumerate(lines[:-1]):
                    if line.endswith(" "):
                        lines[i], ends[i] = line[:-1], self._spaced_newline
            rows = [self._encode_word_line(line) for line in lines]
        else:
            rows = self.sp.encode(lines, num_threads=ENCODE_THREADS)
            if SPACE in text:
                for i, line in enumerate(lines):
                    if SPACE in line:
                        parts = self.sp.encode(line.split(SPACE))
                        rows[i] = _join(parts, self._spell(SPACE))
        for row, end in zip(rows, ends, strict=True):
            row.extend(end)
        return rows

    _WORD = re.compile(r" ?[^ ]+| ")

    def _encode_word_line(self, line: str) -> list[int]:
        ids: list[int] = []
        for word in self._WORD.findall(line):
            spaced = word.startswith(" ")
            piece = SPACE + word[1:] if spaced else word
            if SPACE not in word and piece in self._words:
                ids.append(self._words[piece])
            else:  # unknown word: a space piece, then the word spelled in bytes
                if spaced:
                    ids.extend(self._space)
                ids.extend(self._spell(word[1:] if spaced else word))
        return ids

    def _spell(self, text: str) -> list[int]:
        """`text` as byte pieces (or <unk> when the model has no byte fallback)."""
        unk = self.sp.unk_id()
        return [self._bytes[b] if self._bytes[b] is not None else unk for b in text.encode()]

    # -- decoding -----------------------------------------------------------------------------

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        ids = ids.tolist() if isinstance(ids, np.ndarray) else [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise UsageError(f"id {bad[0]} is outside the vocabulary (0..{self.vocab_size - 1})")
        return self.sp.decode(ids)

    def pieces(self, ids: Iterable[int]) -> list[str]:
        return [self.sp.id_to_piece(int(i)) for i in ids]


def _join(parts: list[list[int]], separator: list[int]) -> list[int]:
    out = list(parts[0])
    for part in parts[1:]:
        out += separator + part
    return out


def _model_type(proto: bytes) -> str:
    """Read TrainerSpec.model_type (ModelProto field 2, its field 3) without protobuf."""
    spec = _proto_field(proto, 2)
    code = _proto_field(spec, 3) if isinstance(spec, bytes) else None
    return _MODEL_TYPE_NAMES.get(code if isinstance(code, int) else 1, "unigram")


def _lemma_language(proto: bytes) -> str | None:
    """The language of the lemmas a tokenizer replaces words with (`with_lemmas`), if any."""
    spec = _proto_field(proto, NORMALIZER_FIELD)
    name = _proto_field(spec, 1) if isinstance(spec, bytes) else None
    if not isinstance(name, bytes) or LEMMAS_TAG.encode() not in name:
        return None
    return name.decode().split(LEMMAS_TAG, 1)[1]


def _proto_entry(number: int, value: bytes) -> bytes:
    """A length-delimited field (strings, bytes, messages) of a serialized protobuf message."""
    return _varint_bytes(number << 3 | 2) + _varint_bytes(len(value)) + value


def _proto_without(message: bytes, unwanted: int) -> bytes:
    """`message` with every value of field `unwanted` taken out, the rest byte for byte."""
    return b"".join(message[start:end] for number, _, start, end in _proto_entries(message)
                    if number != unwanted)  # fmt: skip


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _proto_field(message: bytes, wanted: int) -> bytes | int | None:
    """The first value of field `wanted` in a serialized protobuf message."""
    values = _proto_fields(message, wanted)
    return values[0] if values else None


def _proto_fields(message: bytes, wanted: int) -> list[bytes | int]:
    """Every value of field `wanted` in a serialized protobuf message, in order."""
    return [value for number, value, _, _ in _proto_entries(message) if number == wanted]


def _proto_entries(message: bytes) -> Iterator[tuple[int, bytes | int | None, int, int]]:
    """Each field of a serialized protobuf message: (number, value, start, end), where
    message[start:end] is the whole entry (key and value) and a fixed-width value is None."""
    pos = 0
    while pos < len(message):
        start = pos
        key, pos = _varint(message, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(message, pos)
        elif wire == 2:
            size, pos = _varint(message, pos)
            value, pos = message[pos : pos + size], pos + size
        elif wire in (1, 5):
            value, pos = None, pos + (8 if wire == 1 else 4)
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, value, start, pos


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        result |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            return result, pos


# -- training ---------------------------------------------------------------------------------


def training_sentences(lines: Iterable[str]) -> Iterator[str]:
    """Lines as SentencePiece wants them: no newline, at most MAX_SENTENCE_CHARS characters
    (it silently skips longer ones), literal U+2581 read as the space it will decode to."""
    for line in lines:
        line = line.rstrip("\n").replace(SPACE, " ")
        for start in range(0, len(line), MAX_SENTENCE_CHARS):
            yield line[start : start + MAX_SENTENCE_CHARS]


def count_words(text: str) -> int:
    """Whitespace-separated words and line ends: the tokens pytorch/examples counts in a text
    that ends with a newline (`len(line.split()) + 1` a line, the 1 being its <eos>)."""
    return len(text.split()) + text.count("\n")


def char_vocab_size(characters: set[str]) -> int:
    """The vocabulary that holds every character of the text, plus specials and byte pieces."""
    pieces = {SPACE if ch == " " else ch for ch in characters} | {"\n"}  # a space is a U+2581
    return len(pieces) + NUM_SPECIALS + NUM_BYTE_PIECES


def train(
    sentences: Iterable[str],
    model_type: str = "bpe",
    vocab_size: int | None = None,
    characters: set[str] | None = None,
    unk_marker: str = DEFAULT_UNK_MARKER,
) -> Tokenizer:
    """Train a tokenizer on `sentences` (see `training_sentences`).

    Args:
        vocab_size: None picks a default: every character for `char`, every word for `word`,
            otherwise DEFAULT_VOCAB_SIZE or the largest the text supports, if smaller.
        characters: every character of the full training text (when `sentences` is a sample),
            so that none of them is left to byte fallback in a `char` model.
        unk_marker: the corpus's unknown-word marker, one piece in a `word` model ("": none);
            other model types ignore it.
    """
    if model_type not in MODEL_TYPES:
        raise UsageError(f"unknown model type {model_type!r}: pick one of {', '.join(MODEL_TYPES)}")
    marker = unk_marker if model_type == "word" else ""
    check_unk_marker(marker)
    least = MIN_VOCAB_SIZE + 2 * bool(marker)  # the marker, with and without its space
    if vocab_size is not None and vocab_size < least:
        raise UsageError(
            f"--vocab-size {vocab_size} is too small: byte fallback alone takes "
            f"{NUM_SPECIALS + NUM_BYTE_PIECES} pieces; use at least {least}"
        )
    sentences = list(sentences)
    if not any(sentences):
        raise ArlmError("the training text is empty: give a corpus with some text in it")
    options: dict = {"user_defined_symbols": ["\n"]}
    if model_type == "char":
        characters = characters or set("".join(sentences))
        options["character_coverage"] = 1.0
        options["required_chars"] = "".join(sorted(characters - {"\n", " ", SPACE}))
        vocab_size = vocab_size or char_vocab_size(characters)
    if model_type == "word":
        options["unk_piece"] = WORD_UNK_PIECE
        options["character_coverage"] = 1.0  # else words with a rare letter ("Perón") are dropped
    if marker:
        options["user_defined_symbols"].append(marker)  # SentencePiece adds "▁<unk>" too
        sentences = _without_marker(sentences, marker)
    if model_type == "word" and vocab_size is None:
        vocab_size, options["hard_vocab_limit"] = 10_000_000, False  # soft: every word
    try:
        return Tokenizer(_train(sentences, model_type, vocab_size or DEFAULT_VOCAB_SIZE, options))
    except VocabTooLarge as error:
        if vocab_size is not None:
            raise
        return Tokenizer(_train(sentences, model_type, error.largest, options))


def check_unk_marker(marker: str) -> None:
    """Refuse a marker that cannot be one word piece (exit 2)."""
    if (
        any(ch.isspace() or ch == SPACE for ch in marker)
        or marker in ("<s>", "</s>", WORD_UNK_PIECE)
        or _BYTE_PIECE.fullmatch(marker)
    ):
        raise UsageError(
            f"--unk-marker {marker!r} cannot be one piece: give a word without whitespace that "
            'is not <s>, </s> or a byte piece like <0x41> (or "" for none)'
        )


def _without_marker(sentences: list[str], marker: str) -> list[str]:
    """`sentences` without `marker`, for SentencePiece's word trainer: next to a user symbol it
    drops words ("the cat <unk> sat" loses "▁cat"). The marker is a piece all the same."""
    alone = re.compile(rf"(?:^| ){re.escape(marker)}(?= |$)")  # a whole word, and its space
    return [alone.sub("", s).replace(marker, " ") for s in sentences]


class VocabTooLarge(UsageError):
    def __init__(self, message: str, largest: int) -> None:
        super().__init__(message)
        self.largest = largest


_TOO_HIGH = re.compile(r"Vocabulary size too high \((\d+)\)\. Please set it to a value <= (\d+)")
_TOO_SMALL = re.compile(r"Vocabulary size is smaller than required_chars\. (\d+) vs (\d+)")


def _train(sentences: list[str], model_type: str, vocab_size: int, options: dict) -> bytes:
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            model_type=model_type,
            vocab_size=vocab_size,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            byte_fallback=True,
            allow_whitespace_only_pieces=True,
            max_sentence_length=4 * MAX_SENTENCE_CHARS,  # bytes; UTF-8 takes at most 4 a char
            num_threads=TRAIN_THREADS,
            minloglevel=2,
            **options,
        )
    except RuntimeError as error:
        message = str(error)
        if match := _TOO_HIGH.search(message):
            largest = int(match.group(2))
            raise VocabTooLarge(
                f"--vocab-size {vocab_size} is more than this text supports: "
                f"the largest that works is {largest}",
                largest,
            ) from None
        if match := _TOO_SMALL.search(message):
            raise UsageError(
                f"--vocab-size {vocab_size} is too small: this text needs at least "
                f"{match.group(2)} (or pass --model-type char for a character vocabulary)"
            ) from None
        raise ArlmError(f"SentencePiece could not train a tokenizer: {message.strip()}") from None
    return model.getvalue()
