"""Cut speakable text into chunks for TTS, as it streams: sentences, and for the first chunk of a
reply an early clause, so speech can start sooner. Pure and incremental; its input is what
:class:`~sipagent.voice.spoken.SpokenFilter` returns."""

from __future__ import annotations

from dataclasses import dataclass

from .spoken import TRAILERS, words

#: Words after which a full stop does not end a sentence (lower case, without the dot).
ABBREVIATIONS = words(
    """
    mr mrs ms dr prof st jr sr vs etc eg ie approx dept inc ltd co corp mt ft vol fig
    jan feb apr jun jul aug sep sept oct nov dec tue thu fri
    """
)
_SENTENCE_END = ".!?…"
_UNDECIDED = 0
_CLAUSE = ",;:"
_DASHES = "-–—"


@dataclass(frozen=True, slots=True)
class ChunkerConfig:
    """Tunables of :class:`SentenceChunker`, validated when built.

    * ``first_min_words`` = 4: the first chunk of a reply may end at a clause (comma, semicolon,
      colon, dash) once it has this many words, so TTS starts ~1 clause earlier. Fewer words
      sound clipped ("Sure," alone); more delay the first audio.
    * ``first_max_chars`` = 48: the first chunk is cut at a word by then even without a clause.
      The phone agent cuts earlier still (:class:`~sipagent.voice.conversation.ConversationConfig`).
    * ``max_chars`` = 200: later chunks are whole sentences, cut (at a clause, else a word) only
      beyond this, which bounds the TTS latency of any one chunk.
    """

    first_min_words: int = 4
    first_max_chars: int = 48
    max_chars: int = 200

    def __post_init__(self) -> None:
        for name in ("first_min_words", "first_max_chars", "max_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ChunkerConfig.{name} must be a positive int, got {value!r}")
        if self.first_max_chars < 10 or self.max_chars < 10:
            raise ValueError("ChunkerConfig.first_max_chars and max_chars must be at least 10")


class SentenceChunker:
    """Speakable text in (already filtered), TTS chunks out: ``feed(text)`` then ``flush()``.

    A chunk ends at a sentence end (``.``, ``!``, ``?`` or ``…`` followed by whitespace; not after
    abbreviations such as "Dr." or "e.g.", single initials, or inside "3.5" or "U.S."). The first
    chunk of a reply may also end at a clause boundary (see :class:`ChunkerConfig`). Chunks are
    stripped and never empty; joined with spaces they give the input back, up to whitespace.
    The chunks do not depend on how the text was split into ``feed`` calls.
    """

    def __init__(self, config: ChunkerConfig | None = None) -> None:
        self.config = config or ChunkerConfig()
        self._text = ""
        self._first = True

    def feed(self, text: str) -> list[str]:
        """Take more text; return the chunks now complete."""
        self._text += text
        return self._drain(final=False)

    def flush(self) -> list[str]:
        """End of the reply: everything left, then start over (the next chunk is a first chunk)."""
        chunks = self._drain(final=True)
        rest = self._text.strip()
        if rest:
            chunks.append(rest)
        self._text, self._first = "", True
        return chunks

    def _drain(self, final: bool) -> list[str]:
        chunks: list[str] = []
        while True:
            self._text = self._text.lstrip()
            cut = self._next_cut(final)
            if cut is None:
                return chunks
            chunk, self._text = self._text[:cut].strip(), self._text[cut:]
            if chunk:
                chunks.append(chunk)
                self._first = False

    def _next_cut(self, final: bool) -> int | None:
        """Where the next chunk ends, or None if that is not decided yet."""
        text = self._text
        limit = self.config.first_max_chars if self._first else self.config.max_chars
        words = 0
        in_word = spoken = False  # inside a word; any letter or digit so far
        clause_at = word_at = None
        for i, char in enumerate(text[: limit + 1]):
            if char.isspace():
                if in_word and i <= limit:
                    word_at = i
                in_word = False
                continue
            if not in_word and char.isalnum():
                words += 1
            in_word = True
            spoken = spoken or char.isalnum()
            if i >= limit or not spoken:
                continue
            boundary = self._boundary(text, i, final)
            if boundary is None:
                continue
            if boundary == _UNDECIDED:
                return None  # depends on text not seen yet
            if boundary > 0:
                return boundary  # a sentence end
            clause_at = -boundary
            if self._first and words >= self.config.first_min_words:
                return clause_at
        if len(text) <= limit:
            return None  # not long enough to force a cut; wait (flush takes the rest)
        # Too long without a sentence end: cut at the last clause, else the last word, in the limit.
        if clause_at is not None:
            return clause_at
        if word_at is not None:
            return word_at
        return next((k for k in range(limit, len(text)) if text[k].isspace()), None)

    def _boundary(self, text: str, i: int, final: bool) -> int | None:
        """At ``text[i]``: a sentence end (cut after it, > 0), a clause (minus the cut),
        ``_UNDECIDED``, or None."""
        char = text[i]
        if char in _SENTENCE_END:
            if i > 0 and text[i - 1] in _SENTENCE_END:
                return None  # the run was judged at its first character
        elif char not in _CLAUSE and char not in _DASHES:
            return None
        elif char == "-" and (i == 0 or not text[i - 1].isspace()):
            return None  # "well-known", "-5": only a spaced hyphen is a dash
        j = i
        if char in _SENTENCE_END:
            while j + 1 < len(text) and text[j + 1] in _SENTENCE_END:
                j += 1
        while j + 1 < len(text) and text[j + 1] in TRAILERS:
            j += 1
        if j + 1 >= len(text):
            return None if final else _UNDECIDED
        if not text[j + 1].isspace():
            return None
        if char not in _SENTENCE_END:
            return -(j + 1)
        if char == "." and j == i and self._abbreviation(text, i):
            return None
        return j + 1

    @staticmethod
    def _abbreviation(text: str, i: int) -> bool:
        start = i
        while start > 0 and not text[start - 1].isspace():
            start -= 1
        word = text[start:i].strip(TRAILERS + "(\"'“‘")
        if not word:
            return False
        if "." in word:
            return True  # e.g. i.e. U.S. a.m.
        if len(word) == 1 and word.isalpha():
            return True  # an initial: "John F. Kennedy"
        return word.lower() in ABBREVIATIONS


__all__ = ["ABBREVIATIONS", "ChunkerConfig", "SentenceChunker"]
