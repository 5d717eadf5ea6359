"""Lemmatisation: each word of a text replaced by its lemma ("went" -> "go", "mice" ->
"mouse"), one of the typical steps of a language model's preprocessing in the course notes. It
shrinks a word vocabulary: the model then predicts lemmas, not word forms.

The lemmas come from simplemma (dictionaries for about 50 languages, no model to download). Only
the words change: spaces, punctuation and line ends stay as they are, so a lemmatised text keeps
its layout, and `decode` gives it back exactly. A tokenizer that lemmatises says so in its
SentencePiece model (arlm.tokenizer), so every text it encodes, from training to `arlm eval` on
raw text and `arlm generate`'s prompt, goes through the same step.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

from arlm.errors import UsageError

# a word: letters, with apostrophes inside ("don't"), not just after a "<" (markers such as
# <unk> stay as they are, as do numbers and punctuation)
WORD = re.compile(r"(?<![<\w])[^\W\d_]+(?:['’][^\W\d_]+)*")


@functools.cache
def lemmatizer(language: str) -> Callable[[str], str]:
    """text -> the same text with each word replaced by its lemma in `language` (ISO 639-1)."""
    import simplemma

    try:
        simplemma.lemmatize("a", lang=language)
    except ValueError:
        raise UsageError(
            f"--language {language!r}: simplemma has no dictionary for it; give an ISO 639-1 "
            "code such as en, de, fr, es, it, nl, pt, ru"
        ) from None

    @functools.lru_cache(maxsize=1 << 18)  # a corpus repeats its words: look each up once
    def lemma(word: str) -> str:
        found = simplemma.lemmatize(word, lang=language)
        return word if not found or any(c.isspace() for c in found) else found

    def lemmatize(text: str) -> str:
        return WORD.sub(lambda match: lemma(match.group()), text)

    return lemmatize
