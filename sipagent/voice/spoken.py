"""Make LLM text speakable on a phone, as it streams.

:class:`SpokenFilter` takes the reply a few characters at a time (the LLM's tokens) and returns
text a TTS voice can read: no markdown, no emoji, no stage directions, no role labels or
reasoning. :mod:`.chunker` then cuts that text into chunks for the TTS. Pure and incremental.

What the filter removes or rewrites
===================================
* ``<think>…</think>`` (also ``thinking``, ``reasoning``, ``reflection``) blocks, chat-template
  tokens such as ``<|im_end|>``, other HTML-like tags.
* At the start of a line: role labels (``Assistant:``, ``AI:``, ``Answer:``; the rest of the
  line stays), meta lines (``Thought: …``, ``Note: …``, ``Plan: …``, ``Reasoning: …``: the line
  goes), fenced code blocks, heading hashes, bullets and numbered-list markers, quote markers.
* Emphasis and code markers (``**``, ``*``, ``__``, ``_``, ``~~``, backticks): the words stay.
* Stage directions: ``*laughs*``, ``(smiles)``, ``[pause]``, i.e. a starred or parenthesised span
  that starts with an action word (see ``ACTIONS``), and any bracketed span that is not a link.
* Links ``[text](url)`` become their text; bare URLs become their host name ("example.com").
* Emoji and other pictographs; ``°`` becomes "degrees", ``&`` "and", ``#5`` "number 5".
* Whitespace collapses to single spaces; a line break after a line without final punctuation
  becomes a full stop, so headings and list items read as sentences.

Streaming
=========
A marker may arrive split across tokens ("*" then "*bold**"), so the filter holds back what is
still undecided, and no more: stage A (character by character) drops reasoning blocks and meta
lines as they stream, holding only a possible tag or line label; stage B renders complete
stretches of text, cut at whitespace outside any open construct (a span that could still close
within its length limit). The output is the same however the text is split into tokens. A
construct never closed is held until it exceeds its length limit, a line ends, or ``flush``.
"""

from __future__ import annotations

import re
import unicodedata


def words(text: str) -> frozenset[str]:
    return frozenset(text.split())


#: First words that make a starred or parenthesised span a stage direction, not emphasis.
ACTIONS = words(
    """
    laughs laugh laughing laughter chuckles chuckle chuckling giggles giggle giggling smiles smile
    smiling grins grin grinning sighs sigh sighing pauses pause pausing nods nod nodding winks wink
    shrugs shrug gasps gasp coughs cough clears whispers whispering whisper beams waves leans
    blushes hums humming claps sniffs yawns groans inhales exhales breathes smirks frowns
    cheerfully excitedly softly warmly happily sadly gently thoughtfully playfully enthusiastically
    applause music silence sound sounds typing
    """
)
_ROLES = words("assistant ai agent bot response answer reply")
_META = words(
    "thought thoughts thinking reasoning plan planning note notes internal analysis reflection "
    "observation action scratchpad system context instructions"
)
_LABELS = _ROLES | _META
_LONGEST_LABEL = max(len(word) for word in _LABELS)
_THINK_TAGS = ("<think>", "<thinking>", "<reasoning>", "<reflection>")
_LONGEST_THINK = max(len(tag) for tag in _THINK_TAGS)
_SPECIAL_LIMIT = 64  # "<|...|>" chat-template tokens are short
TRAILERS = "\"')]”’»"  # closing quotes and brackets that follow a sentence's punctuation
_SENTINEL = "\x00"  # marks "not at a line start" for the line-anchored patterns (stage A drops NULs)


# ---------------------------------------------------------------------------------------------
# Stage B patterns. Each construct has a length limit, so the filter never holds text forever.
# ---------------------------------------------------------------------------------------------
_TAG = re.compile(r"</?[A-Za-z][^<>\n]{0,40}>")
_LINK = re.compile(r"!?\[([^\[\]\n]{0,120})\](\([^()\s]{0,300}\))?")
_PAREN = re.compile(r"\(([^()\n]{1,80})\)")
_STAR = re.compile(r"(?<![*\w])\*(?![\s*])([^*\n]{1,60}?)(?<![\s*])\*(?![*\w])")
_URL = re.compile(r"(?:https?://|(?<![\w.])www\.)[^\s<>()\[\]]*[^\s<>()\[\].,;:!?'\"]")
_LINE_MARKER = re.compile(r"^[ \t]*(?:#{1,6}|[-*+•>]|\d{1,3}[.)])(?=\s|$)", re.MULTILINE)
_RULE = re.compile(r"^[ \t]*([-*_=])\1{2,}[ \t]*$", re.MULTILINE)
_MARKERS = re.compile(r"\*+|~~|`+|\||\[|\]")  # leftovers: unmatched brackets too
_INNER_UNDERSCORE = re.compile(r"(?<=[^\W_])_+(?=[^\W_])")
_NUMBER_SIGN = re.compile(r"#(?=\d)")
_TIMES = re.compile(r"(?<=\d)[*×](?=\d)")  # unspaced only: stage B may cut at spaces

#: (pattern, opener characters, a continuation that would close it): see ``_safe_cut``.
_CONSTRUCTS: tuple[tuple[re.Pattern[str], str, str], ...] = (
    (_TAG, "<", "x>"),
    (_LINK, "![", "x] "),
    (_PAREN, "(", "x) "),
    (_STAR, "*", "x* "),
)
_CONSTRUCT_LIMIT = 440  # longer than any construct: a link with its URL


def _first_word(text: str) -> str:
    match = re.match(r"\W*([A-Za-z]+)", text)
    return match.group(1).lower() if match else ""


def _link(match: re.Match[str]) -> str:
    # A link keeps its text; a bare bracketed span ([laughs], [1], [your name]) is not for saying.
    return match.group(1) if match.group(2) is not None else " "


def _paren(match: re.Match[str]) -> str:
    word = _first_word(match.group(1))
    return " " if word in ACTIONS or word in ("note", "notes") else match.group(0)


def _star(match: re.Match[str]) -> str:
    return " " if _first_word(match.group(1)) in ACTIONS else match.group(1)


def _url(match: re.Match[str]) -> str:
    host = re.sub(r"^(?:https?://)?(?:www\.)?", "", match.group(0)).split("/")[0].split("?")[0]
    return host.split(":")[0]


def _is_pictograph(char: str) -> bool:
    code = ord(char)
    if code >= 0x1F000 or 0x2600 <= code <= 0x27BF or 0x2B00 <= code <= 0x2BFF or 0x2190 <= code <= 0x21FF:
        return True  # emoji, dingbats, misc symbols, arrows
    if code in (0xFE0E, 0xFE0F, 0x200D, 0x20E3) or 0xE0000 <= code <= 0xE007F:
        return True  # variation selectors, joiners, keycaps, tags: emoji plumbing
    return unicodedata.category(char) in ("So", "Co", "Cs", "Cn")


_WORDS = {"°": " degrees ", "&": " and ", "•": " "}


def _render(segment: str, at_line_start: bool) -> str:
    """Stage B on a complete stretch of text (no construct crosses its ends)."""
    text = segment if at_line_start else _SENTINEL + segment
    # Line markers first, on the text as written: a removed span must not expose a new one.
    text = _RULE.sub("", text)
    text = _LINE_MARKER.sub("", text)
    text = _TAG.sub(" ", text)
    text = _LINK.sub(_link, text)
    text = _PAREN.sub(_paren, text)
    text = _STAR.sub(_star, text)
    text = _URL.sub(_url, text)
    text = _NUMBER_SIGN.sub("number ", text)
    text = _TIMES.sub(" times ", text)
    text = _MARKERS.sub("", text)
    text = _INNER_UNDERSCORE.sub(" ", text)
    out = []
    for char in text:
        if char in _WORDS:
            out.append(_WORDS[char])
        elif char in "_#" or char == _SENTINEL or _is_pictograph(char):
            continue
        else:
            out.append(char)
    return "".join(out)


def _safe_cut(text: str) -> int:
    """The last whitespace index at which ``text`` can be cut with no construct across it (0: none).

    For every construct, the matches the renderer would make are found in order (as
    ``re.sub`` would); an opener that does not match now but would with some continuation (the
    closing continuation of the table) is pending, and nothing after it may be cut yet.
    """
    limit = len(text)
    blocked: list[tuple[int, int]] = []
    for pattern, openers, closing in _CONSTRUCTS:
        position = 0
        while position < limit:
            starts = [i for i in (text.find(o, position) for o in openers) if i >= 0]
            if not starts:
                break
            start = min(starts)
            if start >= limit:
                break
            match = pattern.match(text, start)
            if match and match.end() < len(text):
                blocked.append((start, match.end()))
                position = match.end()
                continue
            tail = text[start:]
            could_close = match or pattern.match(text + closing, start)
            if could_close and len(tail) <= _CONSTRUCT_LIMIT and "\n" not in tail:
                limit = start  # could still close: hold from here
                break
            position = start + 1
    for index in range(min(limit, len(text)) - 1, 0, -1):
        if text[index].isspace() and not any(a < index < b for a, b in blocked):
            return index
    return 0


# ---------------------------------------------------------------------------------------------
# Stage A helpers: line labels and fences at the start of a line
# ---------------------------------------------------------------------------------------------
_PENDING = -1


def _line_label(text: str, final: bool) -> tuple[str, int]:
    """Classify the start of a line: ("role"|"meta"|"fence", length), ("", 0) or ("", _PENDING)."""
    if text.startswith("```"):
        return "fence", 3
    if text.strip("`") == "" and not final:
        return "", _PENDING
    i = 0
    while i < len(text) and i < 2 and text[i] in "*_":
        i += 1
    start = i
    while i < len(text) and text[i].isascii() and text[i].isalpha():
        i += 1
    word = text[start:i].lower()
    if i == len(text):
        could = len(word) <= _LONGEST_LABEL and any(label.startswith(word) for label in _LABELS)
        return ("", _PENDING) if could and not final else ("", 0)
    if word not in _LABELS:
        return "", 0
    while i < len(text) and text[i] in "*_ " and i - start < len(word) + 4:
        i += 1
    if i == len(text):
        return ("", _PENDING) if not final else ("", 0)
    if text[i] != ":":
        return "", 0
    i += 1
    while i < len(text) and text[i] in "*_":
        i += 1
    if i == len(text) and not final:
        return "", _PENDING
    return ("role" if word in _ROLES else "meta"), i


class SpokenFilter:
    """Streaming LLM text in, speakable text out: ``feed(token) -> str`` then ``flush() -> str``.

    One instance per reply (``flush`` resets it for the next).
    """

    def __init__(self) -> None:
        self._reset()

    def feed(self, token: str) -> str:
        """Take the next piece of the reply; return whatever is now decided (maybe '')."""
        self._raw += token
        self._stage_a(final=False)
        return self._stage_b(final=False)

    def flush(self) -> str:
        """End of the reply: decide everything held back and return it; the filter starts over."""
        self._stage_a(final=True)
        out = self._stage_b(final=True)
        self._reset()
        return out

    def _reset(self) -> None:
        self._raw = ""  # stage A input not yet decided
        self._mode = "text"  # or "think", "fence", "meta"
        self._end_tag = ""
        self._line_start = True
        self._text = ""  # stage B input not yet rendered
        self._text_at_line_start = True
        self._emitted = False
        self._last = ""  # last character emitted
        self._last_closer = ""  # the same, skipping closing quotes and brackets
        self._space = False  # whitespace seen since it
        self._newline = False  # a line break seen since it

    # -- stage A --------------------------------------------------------------------------------
    def _stage_a(self, final: bool) -> None:
        raw, i, out = self._raw, 0, []
        while i < len(raw):
            if self._mode == "think":
                end = raw.lower().find(self._end_tag, i)
                if end < 0:
                    i = len(raw) if final else max(i, len(raw) - len(self._end_tag) + 1)
                    break
                i, self._mode, self._line_start = end + len(self._end_tag), "text", True
                continue
            if self._mode in ("fence", "meta"):
                closer = "```" if self._mode == "fence" else "\n"
                end = raw.find(closer, i)
                if end < 0:
                    i = len(raw) if final else max(i, len(raw) - len(closer) + 1)
                    break
                # A meta line goes with its line break; after a closing fence the line goes on.
                i, self._mode, self._line_start = end + len(closer), "text", closer == "\n"
                continue
            char = raw[i]
            if self._line_start and char not in " \t\n":
                kind, length = _line_label(raw[i:], final)
                if length == _PENDING:
                    break
                # A role label goes and the line is judged again ("Assistant: Thought: ..."); a
                # meta line or a fence goes whole; anything else is text.
                self._line_start = kind == "role"
                if kind in ("fence", "meta"):
                    self._mode = kind
                i += length
                continue
            if char == "<":
                decided = self._angle(raw, i, final)
                if decided is None:
                    break
                if decided > 0:
                    i += decided
                    continue
            if char == "\n":
                self._line_start = True
            if unicodedata.category(char) == "Cc" and char not in "\n\t":  # "\r", NUL: the sentinel
                i += 1
                continue
            out.append(char)
            i += 1
        self._raw = raw[i:]
        self._text += "".join(out)

    def _angle(self, raw: str, i: int, final: bool) -> int | None:
        """At a '<': how much to drop (0: it is text), or None to wait for more."""
        rest = raw[i : i + _SPECIAL_LIMIT]
        lower = rest.lower()
        for tag in _THINK_TAGS:
            if lower.startswith(tag):
                self._mode, self._end_tag = "think", "</" + tag[1:]
                return len(tag)
        if rest.startswith("<|"):
            end = rest.find("|>")
            if end >= 0:
                token = rest[: end + 2].lower()
                # Chat-template role headers: the role name that follows is not for saying.
                if token == "<|im_start|>":
                    self._mode = "meta"
                elif token == "<|start_header_id|>":
                    self._mode, self._end_tag = "think", "<|end_header_id|>"
                return end + 2
            return None if not final and len(rest) < _SPECIAL_LIMIT else 0
        openers = (*_THINK_TAGS, "<|")
        if not final and len(rest) < _LONGEST_THINK and any(t.startswith(lower) for t in openers):
            return None
        return 0

    # -- stage B --------------------------------------------------------------------------------
    def _stage_b(self, final: bool) -> str:
        cut = len(self._text) if final else _safe_cut(self._text)
        if cut <= 0:
            return ""
        segment, self._text = self._text[:cut], self._text[cut:]
        rendered = _render(segment, self._text_at_line_start)
        line = segment.rsplit("\n", 1)[-1]
        self._text_at_line_start = (self._text_at_line_start or "\n" in segment) and line.strip() == ""
        return self._normalize(rendered)

    def _normalize(self, text: str) -> str:
        """Collapse whitespace; a line break after an unpunctuated line becomes a full stop."""
        out: list[str] = []
        for char in text:
            if char == "\n":
                self._newline = True
                continue
            if char.isspace():
                self._space = True
                continue
            if self._emitted:
                if char in ".,;:!?":
                    if char in ".," and self._last in ".,;:!?":
                        continue  # "Sure! (smiles)." leaves "Sure! ."; keep "Sure!"
                    # otherwise punctuation hugs the word before it, even across a removed span
                elif self._newline:
                    out.append(" " if self._last_closer in _CLOSERS else ". ")
                elif self._space:
                    out.append(" ")
            out.append(char)
            self._emitted, self._last, self._space, self._newline = True, char, False, False
            if char not in TRAILERS:
                self._last_closer = char
        return "".join(out)


#: After these a line break needs no added full stop.
_CLOSERS = frozenset(".,;:!?…—–-")


def speakable(text: str) -> str:
    """The whole of ``text`` through a fresh :class:`SpokenFilter` (for tests and tools)."""
    spoken = SpokenFilter()
    return spoken.feed(text) + spoken.flush()
