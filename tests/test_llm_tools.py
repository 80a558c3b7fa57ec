"""Tool calling (decision 0021): the OpenAI-compatible backend against a scripted local server
(tools sent, streamed calls assembled, results sent back, errors), the embedded backend with the real
SmolLM2-135M (a call is well formed whenever one is made; nothing of it is spoken), the shared
parts (the guard, the plain-text rendering, the session's rules), and the worker forwarding calls.

The embedded model's *choice* of tool is not asserted with ``tool_choice="auto"``: a 135M model
chooses poorly (scripts/eval_tools.py measures it). What is asserted is what the grammar guarantees.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import threading
from collections.abc import Iterator

import pytest

from peers.openai_server import Call, Fail, OpenAIServer, Pause, Raw, Text
from sipagent.voice.inference import LocalInference
from sipagent.voice.inference.loading import LoadedModels
from sipagent.voice.jobs import Generate, JobResult, TextDone, TextPiece, ToolCallRequested
from sipagent.voice.llm import LlmError, ReplyPart, ToolCall, ToolSpec, Turn
from sipagent.voice.llm_llama import LlamaCppChat
from sipagent.voice.llm_openai import OpenAIChat
from sipagent.voice.llm_tools import ToolSyntaxGuard, text_messages
from sipagent.voice.models import DEFAULT_LLM_MODEL, resolve_model_path
from tests.fakes import FakeChat, FakeReply, FakeSynthesizer, FakeTranscriber
from tests.model_gate import require_models

MODEL = resolve_model_path(DEFAULT_LLM_MODEL)

END_CALL = ToolSpec("end_call", "Hang up the phone call when the caller says goodbye or asks to end it.")
TRANSFER = ToolSpec(
    "transfer_call",
    "Transfer the caller to a department or a person.",
    json.dumps({"type": "object", "properties": {"target": {"type": "string"}}, "required": ["target"]}),
)
DTMF = ToolSpec(
    "send_dtmf",
    "Press keys on the phone keypad.",
    json.dumps(
        {
            "type": "object",
            "properties": {"digits": {"type": "string", "pattern": "^[0-9*#]{1,8}$"}},
            "required": ["digits"],
        }
    ),
)
TOOLS = (END_CALL, TRANSFER, DTMF)


def _split(parts: list[ReplyPart]) -> tuple[str, list[ToolCall]]:
    return "".join(p for p in parts if isinstance(p, str)), [p for p in parts if isinstance(p, ToolCall)]


# -- OpenAI-compatible backend against peers/openai_server.py -----------------------------------------
@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as running:
        yield running


@pytest.fixture
def remote(server: OpenAIServer) -> Iterator[OpenAIChat]:
    model = OpenAIChat(server.url, "test-model", timeout=10.0)
    yield model
    model.close()


def test_tools_are_sent_and_fragmented_calls_assembled_after_the_words(
    server: OpenAIServer, remote: OpenAIChat
) -> None:
    server.script(
        Text("One moment,", " I'll put you through."),
        Call("transfer_call", {"target": "sales"}, id="call_abc", fragments=4),
    )
    with remote.new_session("Be brief.") as session:
        session.add_user("Transfer me to sales, please.")
        parts = list(session.stream_with_tools(TOOLS))
    assert parts[:2] == ["One moment,", " I'll put you through."]
    assert parts[2:] == [ToolCall("call_abc", "transfer_call", '{"target": "sales"}')]
    assert session.history[-1] == Turn("assistant", "One moment, I'll put you through.", (parts[2],))  # type: ignore[arg-type]
    [request] = server.requests
    body = request.body
    assert body["stream"] is True and body["tool_choice"] == "auto"
    assert request.tool_names == ["end_call", "transfer_call", "send_dtmf"]
    transfer = body["tools"][1]
    assert transfer["type"] == "function"
    assert transfer["function"]["parameters"]["properties"]["target"] == {"type": "string"}
    assert transfer["function"]["description"].startswith("Transfer the caller")


def test_the_tool_result_goes_back_in_the_next_request(server: OpenAIServer, remote: OpenAIChat) -> None:
    server.script(Call("send_dtmf", {"digits": "42#"}, id="call_1"))
    server.script(Text("Done, I pressed 4 2 pound."))
    with remote.new_session("Be brief.") as session:
        session.add_user("Press 4 2 pound.")
        [call] = list(session.stream_with_tools(TOOLS))
        assert isinstance(call, ToolCall) and json.loads(call.arguments) == {"digits": "42#"}
        assert session.history[-1] == Turn("assistant", "", (call,))  # a call and no words
        session.add_tool_result(call.id, "sent 42#")
        assert "".join(map(str, session.stream_with_tools(TOOLS))) == "Done, I pressed 4 2 pound."
    second = server.requests[1].messages
    assert second[1:] == [
        {"role": "user", "content": "Press 4 2 pound."},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "send_dtmf", "arguments": call.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sent 42#"},
    ]


def test_odd_servers_whole_calls_without_ids_or_index_and_bad_json(
    server: OpenAIServer, remote: OpenAIChat
) -> None:
    # Ollama's way: each call whole in one chunk, no index, no id; and arguments that are not JSON.
    server.script(
        Text("Okay."),
        Call("end_call", {}, id=None, indexed=False),
        Call("transfer_call", '{"target": "sal', id=None, indexed=False),
    )
    with remote.new_session() as session:
        session.add_user("Bye, and transfer me.")
        text, calls = _split(list(session.stream_with_tools(TOOLS)))
    assert text == "Okay."
    assert [c.name for c in calls] == ["end_call", "transfer_call"]
    assert calls[0].arguments == "{}" and calls[1].arguments == '{"target": "sal'  # the runner validates
    assert all(c.id.startswith("call_") and len(c.id) > 10 for c in calls) and calls[0].id != calls[1].id


def test_interleaved_fragments_of_two_calls_are_kept_apart(server: OpenAIServer, remote: OpenAIChat) -> None:
    def chunk(fragment: dict[str, object], finish: str | None = None) -> dict[str, object]:
        return {"choices": [{"index": 0, "delta": {"tool_calls": [fragment]}, "finish_reason": finish}]}

    server.script(
        Raw(chunk({"index": 0, "id": "a", "function": {"name": "send_dtmf", "arguments": '{"dig'}})),
        Raw(chunk({"index": 1, "id": "b", "function": {"name": "end_call", "arguments": ""}})),
        Raw(chunk({"index": 0, "function": {"arguments": 'its": "1"}'}})),
        Raw(chunk({"index": 1, "function": {"arguments": "{}"}}, "tool_calls")),
    )
    with remote.new_session() as session:
        session.add_user("Press one and hang up.")
        _, calls = _split(list(session.stream_with_tools(TOOLS)))
    assert calls == [ToolCall("a", "send_dtmf", '{"digits": "1"}'), ToolCall("b", "end_call", "{}")]


def test_call_syntax_in_the_content_is_never_spoken(server: OpenAIServer, remote: OpenAIChat) -> None:
    # A server started without its tool-call parser passes the model's Hermes-style call as text.
    server.script(Text("Sure, ", "transferring you now. <tool", '_call>{"name": "transfer_call", "argu'),
                  Text('ments": {"target": "billing"}}</tool_call>'))  # fmt: skip
    server.script(Text('{"name": "end_call", "arguments": {}}'))
    with remote.new_session() as session:
        session.add_user("Billing, please.")
        text, calls = _split(list(session.stream_with_tools(TOOLS)))
        assert text == "Sure, transferring you now. "
        assert [(c.name, json.loads(c.arguments)) for c in calls] == [
            ("transfer_call", {"target": "billing"})
        ]
        session.add_tool_result(calls[0].id, "transferred")
        text, calls = _split(list(session.stream_with_tools(TOOLS)))
        assert text == "" and [c.name for c in calls] == ["end_call"]


def test_a_server_error_is_an_llm_error_and_tool_choice_can_name_a_tool(
    server: OpenAIServer, remote: OpenAIChat
) -> None:
    server.script(Fail(500, "the GPU is on fire"))
    with remote.new_session() as session:
        session.add_user("Hello?")
        with pytest.raises(LlmError, match=r"answered 500.*the GPU is on fire"):
            list(session.stream_with_tools(TOOLS))
        assert session.history[-1].role == "user"  # nothing was recorded
        list(session.stream_with_tools(TOOLS, tool_choice="end_call"))
        assert server.requests[1].body["tool_choice"] == {
            "type": "function",
            "function": {"name": "end_call"},
        }
        session.add_user("Still there?")
        with pytest.raises(LlmError, match="tool_choice 'fly'"):
            list(session.stream_with_tools(TOOLS, tool_choice="fly"))
        with pytest.raises(LlmError, match="unique"):
            list(session.stream_with_tools((END_CALL, END_CALL)))


def test_a_cancelled_reply_calls_nothing(server: OpenAIServer, remote: OpenAIChat) -> None:
    server.script(Text("Let me", " check"), Pause(0.2), Text(" that."), Call("end_call"))
    cancel = threading.Event()
    with remote.new_session() as session:
        session.add_user("Is it open?")
        parts = []
        for part in session.stream_with_tools(TOOLS, cancel):
            parts.append(part)
            cancel.set()
        assert parts == ["Let me"]
        assert session.last_stats is not None and session.last_stats.cancelled
        assert session.history[-1] == Turn("assistant", "Let me")


def test_without_tools_nothing_changes(server: OpenAIServer, remote: OpenAIChat) -> None:
    server.script(Text("Hi", " there."))
    with remote.new_session() as session:
        session.add_user("Hello")
        assert list(session.stream_reply()) == ["Hi", " there."]
    assert "tools" not in server.requests[0].body and "tool_choice" not in server.requests[0].body


# -- the shared parts --------------------------------------------------------------------------------
def test_the_guard_holds_back_only_what_may_be_call_syntax() -> None:
    guard = ToolSyntaxGuard(TOOLS)
    spoken = [
        guard.push(piece) for piece in ["I am", " less <", "than", " sure. <tool_", "call>", '{"name": ']
    ]
    spoken += [guard.push('"end_call"}</tool_call> Bye'), guard.flush()]
    assert "".join(spoken) == "I am less <than sure.  Bye"
    assert [c.name for c in guard.calls] == ["end_call"]
    # A reply opening with JSON is held whole; if it is not a call of an offered tool, it is dropped.
    guard = ToolSyntaxGuard(TOOLS)
    assert [guard.push(p) for p in ["  ", '{"name": "fly",', ' "arguments": {}}']] == ["", "", ""]
    assert guard.flush() == "" and guard.calls == []
    # A reply that names a tool as no one speaks is reciting its instructions: the rest is not said.
    guard = ToolSyntaxGuard(TOOLS)
    spoken = [guard.push(p) for p in ["Sure. I can end", " a call: - end", "_call: Hang up", " the call."]]
    assert "".join(spoken) + guard.flush() == "Sure. I can end a call: - "


def test_plain_text_rendering_for_templates_without_tools() -> None:
    call = ToolCall("c1", "transfer_call", '{"target": "sales"}')
    turns = (
        Turn("user", "Sales, please."),
        Turn("assistant", "", (call,)),
        Turn("tool", "ok", tool_call_id="c1"),
    )
    messages = text_messages("Be brief.", turns, TOOLS)
    assert messages[0]["content"].startswith("Be brief.\n\n")
    assert (
        "- transfer_call: Transfer the caller" in messages[0]["content"]
        and "(needs: target)" in messages[0]["content"]
    )
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert "{" not in messages[2]["content"]  # never call syntax in the agent's own words
    assert "transfer_call" in messages[3]["content"] and "Result: ok" in messages[3]["content"]
    # No tools and no tool turns: the prompt of before.
    plain = (Turn("user", "Hi"), Turn("assistant", "Hello."))
    assert text_messages("S", plain, ()) == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
    ]


def test_session_rules_for_tool_turns() -> None:
    session = FakeChat([FakeReply("Bye now.", (ToolCall("c9", "end_call", "{}"),))]).new_session()
    session.add_user("Bye")
    with pytest.raises(ValueError, match="no tool call 'c9'"):
        session.add_tool_result("c9", "x")
    assert _split(list(session.stream_with_tools(TOOLS))) == ("Bye now.", [ToolCall("c9", "end_call", "{}")])
    session.record_spoken("")  # interrupted before a word played: the call it made still stands
    assert session.history[-1] == Turn("assistant", "", (ToolCall("c9", "end_call", "{}"),))
    session.add_tool_result("c9", "hung up")
    assert session.reply() == "Okay."  # a tool's result may be the last turn before a reply


# -- the embedded backend, real model ----------------------------------------------------------------
@pytest.fixture(scope="module")
def chat() -> Iterator[LlamaCppChat]:
    require_models(MODEL)
    model = LlamaCppChat(MODEL, n_threads=1, temperature=0.0, max_tokens=48)
    yield model
    model.close()


def test_embedded_required_call_is_well_formed_and_never_spoken(chat: LlamaCppChat) -> None:
    with chat.new_session() as session:
        session.add_user("Please hang up now.")
        parts = list(session.stream_with_tools((END_CALL, TRANSFER), tool_choice="required"))
    text, calls = _split(parts)
    assert text.strip() and isinstance(parts[-1], ToolCall)  # the words first, the call last
    [call] = calls
    assert call.name in ("end_call", "transfer_call")
    arguments = json.loads(call.arguments)
    assert arguments == {} if call.name == "end_call" else isinstance(arguments.get("target"), str)
    assert "{" not in text and "<tool_call" not in text
    assert session.history[-1] == Turn("assistant", text.strip(), (call,))


def test_embedded_named_tool_gets_schema_valid_arguments(chat: LlamaCppChat) -> None:
    with chat.new_session() as session:
        session.add_user("Press one two three on the keypad for me.")
        _, calls = _split(list(session.stream_with_tools(TOOLS, tool_choice="send_dtmf")))
        [call] = calls
        assert call.name == "send_dtmf"
        digits = json.loads(call.arguments)["digits"]
        assert digits and set(digits) <= set("0123456789*#")  # the schema's pattern, by grammar
        # The result goes back; the next reply is spoken (auto: any call is again well formed).
        session.add_tool_result(call.id, "sent")
        text, calls = _split(list(session.stream_with_tools(TOOLS)))
        assert text.strip() and all(c.name in {t.name for t in TOOLS} for c in calls)
        for extra in calls:
            json.loads(extra.arguments)


def test_embedded_tool_prompt_is_evaluated_once_per_tool_set(chat: LlamaCppChat) -> None:
    def first_turn_stats(text: str) -> tuple[int, int]:
        with chat.new_session() as session:
            session.add_user(text)
            list(session.stream_with_tools(TOOLS))
            stats = session.last_stats
        assert stats is not None and stats.cached_tokens is not None and stats.prompt_tokens is not None
        return stats.cached_tokens, stats.prompt_tokens

    first_turn_stats("Good morning.")  # the first call with these tools keeps their system prompt
    cached, prompt = first_turn_stats("Are you open today?")
    assert cached > chat.system_prompt_tokens + 40  # the tools' section came from the kept cells
    assert prompt - cached < 30  # only the caller's words were evaluated


def test_embedded_cancel_stops_the_reply_without_a_call(chat: LlamaCppChat) -> None:
    cancel = threading.Event()
    with chat.new_session() as session:
        session.add_user("Tell me a long story about a lighthouse, then hang up.")
        parts = []
        for part in session.stream_with_tools(TOOLS, cancel, tool_choice="required"):
            parts.append(part)
            if len(parts) == 3:
                cancel.set()
    assert all(isinstance(p, str) for p in parts) and len(parts) <= 4
    assert session.last_stats is not None and session.last_stats.cancelled


# -- the worker forwards calls (threads path, fake model) ---------------------------------------------
async def test_the_worker_forwards_tool_calls_before_text_done() -> None:
    call = ToolCall("c1", "end_call", "{}")
    chat = FakeChat([FakeReply("Goodbye then.", (call,)), "You are welcome."])
    models = LoadedModels(FakeTranscriber(), chat, FakeSynthesizer())
    inference = LocalInference(models, workers=2)
    try:
        turns: tuple[Turn, ...] = (Turn("user", "Bye."),)
        results: list[JobResult] = await asyncio.wait_for(
            inference.run(Generate(5, 77, "S", turns, TOOLS)), 10
        )
        assert [type(r) for r in results] == [TextPiece, TextPiece, ToolCallRequested, TextDone]
        assert all(r.job == 5 for r in results)
        assert results[2] == ToolCallRequested(5, call)
        assert pickle.loads(pickle.dumps(results[2])) == results[2]  # it crosses the process pipe as is
        assert chat.offered == [TOOLS]
        # The engine sends the whole history back with the call's result last.
        turns = (
            *turns,
            Turn("assistant", "Goodbye then.", (call,)),
            Turn("tool", "ended", tool_call_id="c1"),
        )
        results = await asyncio.wait_for(inference.run(Generate(6, 77, "S", turns, TOOLS)), 10)
        assert "".join(r.text for r in results if isinstance(r, TextPiece)) == "You are welcome."
        assert isinstance(results[-1], TextDone)
        assert chat.sessions[0].history[:3] == turns
    finally:
        await inference.aclose()
