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

# a word: letters, with apostrophes inside ("don't"), not just after a "<" (markers such as
# <unk> stay as they are, as do numbers and punctuation)
WORD = re.compile(r"(?<![<\w])[^\W\d_]+(?:['’][^\W\d_]+)*")


def known(language: str) -> bool:
    """Whether simplemma has a dictionary for `language` (an ISO 639-1 code such as en, de)."""
    import simplemma

    try:
        simplemma.lemmatize("a", lang=language)
    except ValueError:
        return False
    return True


UNKNOWN = (
    "--language {!r}: simplemma has no dictionary for it; give an ISO 639-1 code such as en, "
    "de, fr, es, it, nl, pt or ru"
)


@functools.cache
def lemmatizer(language: str) -> Callable[[str], str]:
    """text -> the same text with each word replaced by its lemma in `language` (ISO 639-1);
    ValueError for a language simplemma does not know (`known` says)."""
    import simplemma

    if not known(language):
        raise ValueError(UNKNOWN.format(language))

    @functools.lru_cache(maxsize=1 << 18)  # a corpus repeats its words: look each up once
    def lemma(word: str) -> str:
        """The lemma, with the word's capital: "Children" -> "Child". Never a change of case
        alone ("The", PTB's number token "N" and "IT" stay), nor a lemma of several words."""
        found = simplemma.lemmatize(word, lang=language)
        if not found or found.lower() == word.lower() or any(c.isspace() for c in found):
            return word
        return found[0].upper() + found[1:] if word[0].isupper() else found

    def lemmatize(text: str) -> str:
        return WORD.sub(lambda match: lemma(match.group()), text)

    return lemmatize
