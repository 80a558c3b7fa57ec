"""Speakable LLM output: the streaming filter and the sentence chunker, whole and token by token."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipagent.voice.chunker import ChunkerConfig, SentenceChunker
from sipagent.voice.spoken import SpokenFilter, speakable


def streamed(text: str, sizes: list[int]) -> list[str]:
    """Feed ``text`` in tokens of the given sizes (cycled), return every output including flush."""
    spoken = SpokenFilter()
    outputs, i, k = [], 0, 0
    while i < len(text):
        size = sizes[k % len(sizes)] if sizes else 1
        outputs.append(spoken.feed(text[i : i + size]))
        i, k = i + size, k + 1
    outputs.append(spoken.flush())
    return outputs


def chars(text: str) -> list[str]:
    return streamed(text, [1])


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


# --- the filter, whole -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "spoken"),
    [
        ("**Sure!** I can _definitely_ help.", "Sure! I can definitely help."),
        ("Run `make install` first.", "Run make install first."),
        ("~~old~~ new __bold__ text", "old new bold text"),
        ("## Opening hours\nWe open at nine.", "Opening hours. We open at nine."),
        ("Options:\n- red\n- blue\n* green\n+ white", "Options: red. blue. green. white"),
        ("1. Call us\n2) Write to us\n10. Visit", "Call us. Write to us. Visit"),
        ("> quoted wisdom\nok", "quoted wisdom. ok"),
        ("Above\n---\nBelow", "Above. Below"),
        ("See [our site](https://acme.com/page) today.", "See our site today."),
        ("![a logo](logo.png) Welcome", "a logo Welcome"),
        ("Visit https://www.acme.com/contact?x=1.", "Visit acme.com."),
        ("Docs at http://docs.example.org:8080/a/b, thanks", "Docs at docs.example.org, thanks"),
        ("or www.test.org now", "or test.org now"),
        ("Great 😀 news 👍🏽! ❤️ ✓ → done", "Great news! done"),
        ("It is 20°C & sunny, #1 choice", "It is 20 degrees C and sunny, number 1 choice"),
        ("snake_case and __init__", "snake case and init"),
        ("It costs 5*3 dollars", "It costs 5 times 3 dollars"),
        ("*laughs* Well, *sighs softly* okay.", "Well, okay."),
        ("That's *really* good.", "That's really good."),
        ("Sure! (smiles) Let me see (about 5 minutes).", "Sure! Let me see (about 5 minutes)."),
        ("Hmm [pause] let me check [1].", "Hmm let me check."),
        ("Yes. (Note: this is a guess.) Okay.", "Yes. Okay."),
        ("Hello *waves*.", "Hello."),
        ("Use <b>bold</b> and <br> breaks", "Use bold and breaks"),
    ],
)
def test_markdown_and_stage_directions(raw: str, spoken: str) -> None:
    assert speakable(raw) == spoken
    assert "".join(chars(raw)) == spoken


@pytest.mark.parametrize(
    ("raw", "spoken"),
    [
        ("Assistant: Hello there!", "Hello there!"),
        ("AI: Hi.\nAgent: Bye.", "Hi. Bye."),
        ("**Answer:** 42", "42"),
        ("Thought: the user wants hours.\nWe open at nine.", "We open at nine."),
        ("Note: internal only\nHello!", "Hello!"),
        ("**Note:** meta\nReal content", "Real content"),
        ("Plan: greet\nReasoning: be brief\nHi!", "Hi!"),
        ("Nothing to note here.", "Nothing to note here."),
        ("Notes are due. Answers too.", "Notes are due. Answers too."),
        ("Note that we close at five.", "Note that we close at five."),
        ("<think>The user wants the time.\nBe brief.</think>\n\nIt's 5 pm.", "It's 5 pm."),
        ("<THINKING>x < y</THINKING>Done.", "Done."),
        ("Sure. <reasoning>hidden</reasoning> Here.", "Sure. Here."),
        ("<|im_start|>assistant\nHi there<|im_end|>", "Hi there"),
        ("<|start_header_id|>assistant<|end_header_id|>\n\nHello", "Hello"),
        ("Here:\n```python\nprint('hi')\n```\nThat prints hi.", "Here: That prints hi."),
        ("Assistant: Thought: hmm\nHi", "Hi"),
        ("3 < 5 and 7 > 2", "3 < 5 and 7 > 2"),
        ("<think>never closed", ""),
        ("Thought: only reasoning, no answer", ""),
    ],
)
def test_roles_reasoning_and_meta(raw: str, spoken: str) -> None:
    assert speakable(raw) == spoken
    assert "".join(chars(raw)) == spoken


def test_whitespace_collapses_and_nothing_leads_or_trails() -> None:
    assert speakable("  \n\n  Hello,\t\tworld   \n\n") == "Hello, world"
    assert speakable("") == ""
    assert speakable("😀 👍") == ""


def test_the_filter_starts_over_after_flush() -> None:
    spoken = SpokenFilter()
    assert spoken.feed("<think>a") == ""
    assert spoken.flush() == ""
    assert spoken.feed("Assistant: next reply ") == "next reply"
    assert spoken.flush() == ""


# --- the filter, streaming -------------------------------------------------------------------
def test_markers_split_across_tokens() -> None:
    spoken = SpokenFilter()
    parts = [spoken.feed(t) for t in ["**", "bold", "**", " and *", "la", "ughs", "* ", "done."]]
    assert "".join([*parts, spoken.flush()]) == "bold and done."


def test_think_tag_split_across_tokens_is_never_spoken() -> None:
    tokens = ["Ok", "ay. <", "thi", "nk>sec", "ret plan</", "thi", "nk> Go", " on."]
    spoken = SpokenFilter()
    outputs = [spoken.feed(t) for t in tokens] + [spoken.flush()]
    assert "".join(outputs) == "Okay. Go on."
    assert not any("secret" in o or "plan" in o for o in outputs)


def test_text_is_released_promptly() -> None:
    # Plain words come out one word behind the stream (a word may still grow), not at flush.
    spoken = SpokenFilter()
    assert spoken.feed("Hello there, how ") == "Hello there, how"
    assert spoken.feed("are you") == " are"
    # An open stage direction holds only itself back; it is resolved when it closes.
    assert spoken.feed(" today? *la") == " you today?"
    assert spoken.feed("ughs* Fine ") == " Fine"
    assert spoken.feed("thanks. ") == " thanks."


def test_an_unclosed_span_is_released_at_its_length_limit() -> None:
    spoken = SpokenFilter()
    out = spoken.feed("I think (this never closes and goes on" + " and on" * 20)
    assert out.startswith("I think (this never closes and goes on and on")
    assert spoken.flush() == " on"


def test_a_reasoning_block_is_dropped_as_it_streams() -> None:
    # Nothing of a long <think> block is buffered beyond a possible closing tag.
    spoken = SpokenFilter()
    spoken.feed("<think>")
    for _ in range(1000):
        assert spoken.feed("lots of private reasoning ") == ""
    assert len(spoken._raw) < 16
    assert spoken.feed("</think>Answer here. ") == "Answer here."


FRAGMENTS = [
    "Hello",
    "world",
    "Sure",
    "I can",
    "help",
    "3.5",
    "Dr.",
    " ",
    " ",
    "  ",
    "\n",
    "\n\n",
    ".",
    ",",
    "!",
    "?",
    ":",
    "**",
    "*",
    "_",
    "__",
    "`",
    "```",
    "~~",
    "#",
    "## ",
    "- ",
    "* ",
    "1. ",
    "> ",
    "*laughs*",
    "(smiles)",
    "(about 5 minutes)",
    "[pause]",
    "[our site](https://acme.com/x)",
    "https://www.example.com/a?b=1",
    "www.test.org",
    "<think>",
    "</think>",
    "<|im_end|>",
    "<b>",
    "</b>",
    "<",
    ">",
    "(",
    ")",
    "[",
    "]",
    "Assistant:",
    "Thought:",
    "Note:",
    "Answer: ",
    "😀",
    "👍🏽",
    "°",
    "&",
    "#1",
    "snake_case",
]
texts = st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join)
token_sizes = st.lists(st.integers(min_value=1, max_value=7), min_size=1, max_size=12)


@settings(max_examples=400, deadline=None)
@given(texts, token_sizes)
def test_streaming_gives_the_same_text_as_the_whole(text: str, sizes: list[int]) -> None:
    outputs = streamed(text, sizes)
    whole = speakable(text)
    assert squash("".join(outputs)) == squash(whole)
    assert "".join(outputs) == whole  # in fact exactly, spaces included


@settings(max_examples=400, deadline=None)
@given(texts, token_sizes)
def test_output_is_speakable(text: str, sizes: list[int]) -> None:
    out = "".join(streamed(text, sizes))
    for marker in ("*", "`", "~", "#", "_", "<think", "<|", "http", "[", "]", "  ", "\n"):
        assert marker not in out, (marker, out)
    assert out == out.strip()
    assert not any(unicodedata.category(c) == "So" for c in out)


# --- the chunker -----------------------------------------------------------------------------
def chunk_all(text: str, sizes: list[int] | None = None, config: ChunkerConfig | None = None) -> list[str]:
    chunker = SentenceChunker(config)
    out: list[str] = []
    sizes = sizes or [len(text) or 1]
    i = k = 0
    while i < len(text):
        size = sizes[k % len(sizes)]
        out += chunker.feed(text[i : i + size])
        i, k = i + size, k + 1
    return out + chunker.flush()


def test_sentences_and_an_early_first_clause() -> None:
    text = "Thanks for calling Acme Dental, how can I help you today? We open at nine. Sure, that works. Bye!"
    assert chunk_all(text) == [
        "Thanks for calling Acme Dental,",
        "how can I help you today?",
        "We open at nine.",
        "Sure, that works.",  # only the first chunk is cut at a clause
        "Bye!",
    ]


def test_a_short_first_clause_is_not_cut() -> None:
    assert chunk_all("Sure, I can help with that. Okay.") == ["Sure, I can help with that.", "Okay."]


@pytest.mark.parametrize(
    "text",
    [
        "Dr. Smith will see you at 3.5 past.",
        "Bring your ID, e.g. a passport.",
        "It is the U.S. office.",
        "John F. Kennedy was here.",
        "That is approx. ten minutes.",
        "Use version 2.0.1 please.",
    ],
)
def test_abbreviations_and_numbers_do_not_end_sentences(text: str) -> None:
    assert chunk_all(text + " Next one.") == [text, "Next one."]


def test_other_boundaries() -> None:
    assert chunk_all('He said "hi." Then left. Really?! Yes... maybe.') == [
        'He said "hi."',
        "Then left.",
        "Really?!",
        "Yes...",
        "maybe.",
    ]
    # A spaced dash is a clause in the first chunk; a hyphen is not.
    assert chunk_all("A well-known and trusted clinic - open daily. Ok.") == [
        "A well-known and trusted clinic -",
        "open daily.",
        "Ok.",
    ]


def test_long_sentences_are_cut_at_the_limit() -> None:
    config = ChunkerConfig(first_max_chars=40, max_chars=60)
    words = " ".join(["word"] * 40)
    chunks = chunk_all("Start. " + words + ", and then " + words + ".", config=config)
    assert chunks[0] == "Start."
    assert all(len(c) <= 60 for c in chunks[1:])
    assert squash("".join(chunks)) == squash("Start. " + words + ", and then " + words + ".")
    # The first chunk honours its own (smaller) limit.
    first = chunk_all(" ".join(["long"] * 30), config=config)[0]
    assert len(first) <= 40


def test_a_sentence_end_waits_for_the_next_character() -> None:
    chunker = SentenceChunker()
    assert chunker.feed("It costs 3.") == []  # "3." may become "3.5"
    assert chunker.feed("5 dollars. And") == ["It costs 3.5 dollars."]
    assert chunker.flush() == ["And"]
    assert chunker.feed("New reply here, with a clause, now. ") == ["New reply here, with a clause,", "now."]


def test_chunker_config_is_validated() -> None:
    with pytest.raises(ValueError, match="first_min_words"):
        ChunkerConfig(first_min_words=0)
    with pytest.raises(ValueError, match="max_chars"):
        ChunkerConfig(max_chars=True)


SENTENCE_PIECES = [
    "Hello",
    "there",
    "Dr.",
    "e.g.",
    "U.S.",
    "3.5",
    "J.",
    ".",
    ".",
    "!",
    "?",
    "...",
    ",",
    ";",
    ":",
    " - ",
    "—",
    '"',
    ")",
    "(",
    " ",
    " ",
    " ",
    "\n",
    "okay",
    "well-known",
    "a",
]
sentences = st.lists(st.sampled_from(SENTENCE_PIECES), max_size=80).map("".join)


@settings(max_examples=400, deadline=None)
@given(sentences, token_sizes, st.integers(min_value=1, max_value=8), st.integers(min_value=10, max_value=80))
def test_chunks_cover_the_text_whatever_the_tokens(
    text: str, sizes: list[int], words: int, limit: int
) -> None:
    config = ChunkerConfig(first_min_words=words, first_max_chars=limit, max_chars=limit + 20)
    chunks = chunk_all(text, sizes, config)
    assert all(chunk and chunk == chunk.strip() for chunk in chunks)
    assert squash("".join(chunks)) == squash(text)
    assert chunks == chunk_all(text, None, config)


@settings(max_examples=300, deadline=None)
@given(texts, token_sizes)
def test_filter_then_chunker(text: str, sizes: list[int]) -> None:
    spoken, chunker = SpokenFilter(), SentenceChunker()
    chunks: list[str] = []
    i = k = 0
    while i < len(text):
        size = sizes[k % len(sizes)]
        chunks += chunker.feed(spoken.feed(text[i : i + size]))
        i, k = i + size, k + 1
    chunks += chunker.feed(spoken.flush()) + chunker.flush()
    assert all(chunks)
    assert squash("".join(chunks)) == squash(speakable(text))
