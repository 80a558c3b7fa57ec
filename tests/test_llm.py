"""The agent's language model: the real SmolLM2-135M through llama.cpp (streaming, cancellation, the
per-call KV cache, chat templates), the OpenAI-compatible client against an in-memory server, the fake.

KV reuse is asserted on token counts (llama.cpp's own evaluation counters), never on timing.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sipagent.config import ConfigError, build_settings
from sipagent.voice.llm import (
    ChatSession,
    ChatTemplateError,
    LlmError,
    Turn,
)
from sipagent.voice.llm_backends import chat_model_from_settings
from sipagent.voice.llm_llama import LlamaCppChat
from sipagent.voice.llm_openai import OpenAIChat
from sipagent.voice.models import DEFAULT_LLM_MODEL, ROOT, resolve_model_path
from tests.fakes import FakeChat
from tests.model_gate import require_models

MODEL = resolve_model_path(DEFAULT_LLM_MODEL)
TEMPLATE_KEY = b"tokenizer.chat_template"


@pytest.fixture(scope="module")
def chat() -> Iterator[LlamaCppChat]:
    require_models(MODEL)
    # Greedy decoding, so that replies are reproducible and can be compared across sessions. One
    # thread: llama.cpp's spinning threads slow down twentyfold when another test process takes a core.
    model = LlamaCppChat(MODEL, n_threads=1, temperature=0.0, max_tokens=64)
    yield model
    model.close()


@pytest.fixture(scope="module")
def untemplated_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default GGUF with its chat template key renamed (same length, so the file stays valid)."""
    require_models(MODEL)
    path = tmp_path_factory.mktemp("gguf") / "no-template.gguf"
    shutil.copyfile(MODEL, path)
    with path.open("r+b") as handle:
        header = handle.read(4 << 20)
        offset = header.find(TEMPLATE_KEY)
        assert offset > 0 and header.count(TEMPLATE_KEY) == 1
        handle.seek(offset + len(TEMPLATE_KEY) - 1)
        handle.write(b"X")
    return path


def _turn(session: ChatSession, text: str) -> str:
    session.add_user(text)
    return session.reply()


def test_streams_a_reply_in_pieces(chat: LlamaCppChat) -> None:
    with chat.new_session() as session:
        session.add_user("Hello, who am I speaking with?")
        pieces = list(session.stream_reply())
        assert len(pieces) > 3 and all(isinstance(piece, str) and piece for piece in pieces)
        text = "".join(pieces).strip()
        assert text and "<|im_end|>" not in text and "<|im_start|>" not in text
        assert session.history == (Turn("user", "Hello, who am I speaking with?"), Turn("assistant", text))
        stats = session.last_stats
        assert stats is not None and not stats.cancelled
        assert 0 < stats.generated_tokens <= chat.max_tokens and stats.first_token_s is not None


def test_system_prompt_and_history_are_evaluated_once(chat: LlamaCppChat) -> None:
    assert chat.system_prompt_tokens > 40  # the default prompt, evaluated at load
    with chat.new_session() as session:
        _turn(session, "Hi, what are your opening hours?")
        first = session.last_stats
        _turn(session, "And on Sunday?")
        second = session.last_stats
    assert first is not None and second is not None
    # Turn 1 starts from the system prompt's cached cells: only the template's turn markers and the
    # caller's words are evaluated.
    assert first.cached_tokens is not None and first.cached_tokens >= chat.system_prompt_tokens - 3
    assert first.evaluated_tokens == first.prompt_tokens - first.cached_tokens  # type: ignore[operator]
    # Turn 2 finds all of turn 1 (its prompt and the reply) in the cache.
    assert second.cached_tokens is not None and second.prompt_tokens is not None
    assert second.cached_tokens >= first.prompt_tokens + first.generated_tokens - 1  # type: ignore[operator]
    assert second.evaluated_tokens == second.prompt_tokens - second.cached_tokens
    assert second.evaluated_tokens is not None and second.evaluated_tokens < 20
    assert not second.restored


def _diverge(chat: LlamaCppChat) -> None:
    """Leave a history in the cache that parts from the next call's right after the system prompt, so
    the next call evaluates exactly the same batches as the last one that followed this (bit-exact
    floats: a batch of one token and a batch of sixteen may round differently)."""
    with chat.new_session() as filler:
        _turn(filler, "Good morning.")


def test_calls_sharing_the_model_get_their_own_history_back(chat: LlamaCppChat) -> None:
    questions = ["Can I book a table for two?", "Tonight at eight, please."]
    _diverge(chat)
    with chat.new_session() as alone:
        expected = [_turn(alone, text) for text in questions]
    _diverge(chat)
    with chat.new_session() as caller, chat.new_session("You are a pirate. Answer briefly.") as other:
        replies = [_turn(caller, questions[0])]
        before = caller.last_stats
        _turn(other, "Where is the treasure?")  # takes the KV cache over
        replies.append(_turn(caller, questions[1]))
        after = caller.last_stats
    assert replies == expected  # the restored cache is the same cache
    assert before is not None and after is not None and after.restored
    assert after.cached_tokens >= before.prompt_tokens + before.generated_tokens - 1  # type: ignore[operator]
    assert after.evaluated_tokens is not None and after.evaluated_tokens < 20


def test_cancel_stops_generation_within_a_token(chat: LlamaCppChat) -> None:
    cancel = threading.Event()
    first_piece = threading.Event()
    cancelled_at: list[float] = []

    def barge_in() -> None:
        first_piece.wait(10)
        cancelled_at.append(time.perf_counter())
        cancel.set()

    with chat.new_session() as session:
        session.add_user("Tell me a very long story about a dragon, a knight and a wizard.")
        caller = threading.Thread(target=barge_in)
        caller.start()
        pieces: list[tuple[float, str]] = []
        for piece in session.stream_reply(cancel):
            pieces.append((time.perf_counter(), piece))
            first_piece.set()
        ended = time.perf_counter()
        caller.join()
        stats = session.last_stats
        assert stats is not None and stats.cancelled and stats.generated_tokens < chat.max_tokens
        assert sum(1 for at, _ in pieces if at > cancelled_at[0]) <= 2
        assert ended - cancelled_at[0] < 0.5
        # What was generated before the cancel is the assistant turn (the pipeline then cuts it to
        # what was played).
        assert session.history[-1] == Turn("assistant", "".join(piece for _, piece in pieces).strip())


def test_barge_in_keeps_only_what_was_heard(chat: LlamaCppChat) -> None:
    with chat.new_session() as session:
        reply = _turn(session, "What can you help me with?")
        first = session.last_stats
        heard = " ".join(reply.split()[:3])
        session.record_spoken(heard)
        assert session.history[-1] == Turn("assistant", heard)
        _turn(session, "Sorry, go on.")
        second = session.last_stats
        assert first is not None and second is not None
        # The cut turn is re-rendered shorter; the cache still covers everything before the cut.
        assert second.cached_tokens >= first.prompt_tokens  # type: ignore[operator]
        session.add_user("Hello?")
        with pytest.raises(LlmError, match="no assistant reply"):
            session.record_spoken("x")
        session.reply()
        session.record_spoken("")  # interrupted before any audio: the turn never happened
        assert session.history[-1].role == "user"


def test_session_misuse_is_reported(chat: LlamaCppChat) -> None:
    session = chat.new_session()
    with pytest.raises(LlmError, match="user turn last"):
        session.reply()
    with pytest.raises(ValueError, match="empty"):
        session.add_user("  ")
    session.close()
    with pytest.raises(LlmError, match="closed"):
        session.reply()


def test_a_full_context_forgets_the_oldest_exchanges() -> None:
    require_models(MODEL)
    small = LlamaCppChat(MODEL, n_ctx=256, n_threads=1, temperature=0.0, max_tokens=24)
    try:
        with small.new_session() as session:
            for number in range(6):
                _turn(session, f"Question {number}: please tell me about the weather in a few words.")
            assert session.history[0].role == "user" and len(session.history) < 12
            stats = session.last_stats
            assert stats is not None and stats.prompt_tokens is not None
            assert stats.prompt_tokens + small.max_tokens <= 256
            session.add_user("word " * 300)
            with pytest.raises(LlmError, match="do not fit"):
                session.reply()
    finally:
        small.close()


def test_a_gguf_without_a_chat_template_needs_chat_format(untemplated_gguf: Path) -> None:
    with pytest.raises(ChatTemplateError, match=r"no tokenizer\.chat_template.*llm\.chat_format.*chatml"):
        LlamaCppChat(untemplated_gguf)
    with pytest.raises(ChatTemplateError, match="unknown format 'smol'"):
        LlamaCppChat(untemplated_gguf, chat_format="smol")
    model = LlamaCppChat(untemplated_gguf, chat_format="chatml", n_threads=1, temperature=0.0, max_tokens=16)
    try:
        with model.new_session() as session:
            assert _turn(session, "Say hello.")
    finally:
        model.close()


def test_chat_format_may_be_a_jinja_file(untemplated_gguf: Path, tmp_path: Path) -> None:
    template = tmp_path / "chatml.jinja"
    template.write_text(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    model = LlamaCppChat(
        untemplated_gguf, chat_format=str(template), n_threads=1, temperature=0.0, max_tokens=16
    )
    try:
        assert model.system_prompt_tokens > 40
        with model.new_session() as session:
            assert _turn(session, "Say hello.")
    finally:
        model.close()
    with pytest.raises(ChatTemplateError, match="cannot read template"):
        LlamaCppChat(untemplated_gguf, chat_format=str(tmp_path / "missing.jinja"))


def test_a_missing_model_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="fetch_models"):
        LlamaCppChat(tmp_path / "nothing.gguf")


# -- OpenAI-compatible server -------------------------------------------------------------------


def _sse(*pieces: str) -> bytes:
    events = [f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': p}}]})}\n\n" for p in pieces]
    return ("data: " + json.dumps({"choices": [{"delta": {"role": "assistant"}}]}) + "\n\n").encode() + (
        ": keep-alive\n\n" + "".join(events) + "data: [DONE]\n\n"
    ).encode()


def test_openai_backend_streams_and_sends_the_history(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_LLM_KEY", "sk-secret")
    requests: list[httpx.Request] = []

    def server(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(
            200, content=_sse("Hel", "lo", " there."), headers={"content-type": "text/event-stream"}
        )

    model = OpenAIChat(
        "http://gpu-box:8000/v1/",
        "llama3",
        api_key_env="TEST_LLM_KEY",
        max_tokens=50,
        transport=httpx.MockTransport(server),
    )
    with model.new_session("Be brief.") as session:
        session.add_user("Hi")
        assert list(session.stream_reply()) == ["Hel", "lo", " there."]
        assert session.history[-1] == Turn("assistant", "Hello there.")
    request = requests[0]
    assert str(request.url) == "http://gpu-box:8000/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-secret"
    body = json.loads(request.content)
    assert body["stream"] is True and body["model"] == "llama3" and body["max_tokens"] == 50
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    model.close()


def test_openai_errors_name_the_server_never_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_LLM_KEY", "sk-secret")

    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": "bad key"})

    model = OpenAIChat(
        "http://box/v1", "m", api_key_env="TEST_LLM_KEY", transport=httpx.MockTransport(refuse)
    )
    session = model.new_session()
    session.add_user("Hi")
    with pytest.raises(LlmError, match="http://box/v1/chat/completions answered 401") as exc:
        session.reply()
    assert "sk-secret" not in str(exc.value)

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    session = OpenAIChat("http://box/v1", "m", transport=httpx.MockTransport(unreachable)).new_session()
    session.add_user("Hi")
    with pytest.raises(LlmError, match="ConnectError"):
        session.reply()
    monkeypatch.delenv("TEST_LLM_KEY")
    with pytest.raises(LlmError, match="TEST_LLM_KEY is not set"):
        OpenAIChat("http://box/v1", "m", api_key_env="TEST_LLM_KEY")


def test_openai_cancel_stops_reading_the_stream() -> None:
    model = OpenAIChat(
        "http://box/v1",
        "m",
        transport=httpx.MockTransport(lambda request: httpx.Response(200, content=_sse("a", "b", "c", "d"))),
    )
    cancel = threading.Event()
    with model.new_session() as session:
        session.add_user("Hi")
        received = []
        for piece in session.stream_reply(cancel):
            received.append(piece)
            cancel.set()
        assert received == ["a"]
        assert session.last_stats is not None and session.last_stats.cancelled


# -- configuration and the fake -----------------------------------------------------------------


def test_llm_settings_defaults_and_backend_choice() -> None:
    settings = build_settings({})
    assert settings.llm.backend == "llama" and settings.llm.model == ROOT / DEFAULT_LLM_MODEL
    assert "phone" in settings.llm.system_prompt
    assert build_settings({"llm": {"model": "/abs/model.gguf"}}).llm.model == Path("/abs/model.gguf")
    assert build_settings({"llm": {"chat_format": "t/x.jinja"}}).llm.chat_format == str(ROOT / "t/x.jinja")
    assert build_settings({"llm": {"chat_format": "chatml"}}).llm.chat_format == "chatml"
    with pytest.raises(ConfigError, match=r"llm: .*needs an \[llm\.openai\] section"):
        build_settings({"llm": {"backend": "openai"}})
    with pytest.raises(ConfigError, match=r"llm\.openai\.base_url: .*not an http"):
        build_settings({"llm": {"backend": "openai", "openai": {"base_url": "gpu-box:8000", "model": "m"}}})
    with pytest.raises(ConfigError, match=r"llm\.temperature"):
        build_settings({"llm": {"temperature": 5}})
    remote = build_settings(
        {"llm": {"backend": "openai", "openai": {"base_url": "http://h/v1/", "model": "m"}}}
    )
    model = chat_model_from_settings(remote.llm)
    assert isinstance(model, OpenAIChat) and model.base_url == "http://h/v1"
    model.close()


def test_fake_chat_scripts_streams_and_cancels() -> None:
    fake = FakeChat(["Hello there, how can I help?", "Bye."], token_delay=0.001)
    session = fake.new_session()
    session.add_user("Hi")
    assert list(session.stream_reply()) == ["Hello", " there,", " how", " can", " I", " help?"]
    session.add_user("Stop")
    cancel = threading.Event()
    for _ in session.stream_reply(cancel):
        cancel.set()
    assert session.history[-1] == Turn("assistant", "Bye.")
    session.add_user("Again")
    assert session.reply() == "Okay." and fake.sessions == [session]
    echo = FakeChat(lambda history: f"you said {history[-1].text}")
    other = echo.new_session()
    other.add_user("cheese")
    assert other.reply() == "you said cheese"
    stats = other.last_stats
    assert stats is not None and stats.generated_tokens == 3 and not stats.cancelled
