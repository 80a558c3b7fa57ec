"""The conversation engine's moves beyond speech on virtual time: tool calls (webhooks, end_call,
transfer_call, send_dtmf), the filler, the limit per reply, the caller's keys, a failed transfer.

Uses tests/test_conversation.py's line and level VAD: 20 voiced frames from tick 0 pause at tick 24
(a speculative reply starts) and end the turn at tick 34 (the reply is committed).
"""

from __future__ import annotations

import numpy as np

from sipagent.voice.conversation import (
    Command,
    Conversation,
    EndCall,
    PlayFrames,
    RunTool,
    SendDigits,
    TransferCall,
)
from sipagent.voice.jobs import (
    Generate,
    Synthesize,
    Synthesized,
    TextDone,
    TextPiece,
    ToolCallRequested,
    Transcribed,
)
from sipagent.voice.llm import ToolCall, ToolSpec, Turn
from tests.test_conversation import Line, _conversation, heard, speech_audio, voice

LOOKUP = ToolSpec("lookup_order", "Find an order by its number.")
BUILTINS = (ToolSpec("end_call", "End the call."), ToolSpec("transfer_call", "Transfer."),
            ToolSpec("send_dtmf", "Send keys."))  # fmt: skip


def _moves(line: Line) -> list[tuple[int, Command]]:
    return [(tick, command) for tick, command in line.log if not isinstance(command, PlayFrames)]


def _of(line: Line, kind: type) -> list[tuple[int, Command]]:
    return [(tick, command) for tick, command in _moves(line) if isinstance(command, kind)]


def _caller_turn(line: Line, words: str, calls: list[ToolCall], text: str) -> None:
    """The caller speaks (ticks 0-19); the speculative reply's STT and LLM answer at 26."""
    line.play(voice(20))
    line.until(26)
    line.answer(Transcribed(1, heard(words)))
    for call in calls:
        line.answer(ToolCallRequested(2, call))
    if text:
        line.answer(TextPiece(2, text))
    line.answer(TextDone(2))


def test_a_webhook_runs_once_the_reply_counts_and_the_agent_speaks_from_its_result() -> None:
    conversation, line = _conversation(tools=(LOOKUP,))
    call = ToolCall("c1", "lookup_order", '{"order": 42}')
    _caller_turn(line, "where is my order 42", [call], "Let me check that.")
    (generate,) = [command for _, command in _of(line, Generate)]
    assert isinstance(generate, Generate) and generate.tools == (LOOKUP,)
    # Guard rail: the caller's words reach the model quoted, as data.
    assert generate.turns == (Turn("user", 'The caller said: "where is my order 42"'),)
    assert _of(line, RunTool) == []  # a speculation may still be cancelled: nothing runs yet
    line.until(30)
    line.answer(Synthesized(3, speech_audio(10)))
    line.until(60)
    assert _of(line, RunTool) == [(34, RunTool(call))]  # at the end of the caller's turn
    line.run(conversation.on_tool_result("c1", '{"status": "shipped"}', line.now))
    follow_up = _of(line, Generate)[-1]
    assert follow_up[0] == 60
    assert isinstance(follow_up[1], Generate) and follow_up[1].turns[-2:] == (
        Turn("assistant", "Let me check that.", tool_calls=(call,)),
        Turn("tool", '{"status": "shipped"}', tool_call_id="c1"),
    )
    line.answer(TextPiece(4, "It has shipped."))
    line.answer(TextDone(4))
    assert _of(line, Synthesize)[-1][1] == Synthesize(5, "It has shipped.")
    # The result came 520 ms after the tool started: no filler, and none is pending any more.
    assert all(c.text != "One moment." for _, c in _of(line, Synthesize) if isinstance(c, Synthesize))
    assert conversation.tools.filler_at is None


def test_a_cancelled_speculation_runs_none_of_its_tools() -> None:
    _, line = _conversation(tools=(LOOKUP,))
    line.play(voice(20))
    line.until(26)
    line.answer(Transcribed(1, heard("where is my")))
    line.answer(ToolCallRequested(2, ToolCall("c1", "lookup_order", "{}")))
    line.answer(TextDone(2))
    line.play(voice(20))  # the caller goes on: the speculation is cancelled
    line.until(80)
    assert _of(line, RunTool) == []


def test_a_slow_tool_makes_the_agent_say_the_filler_once_the_line_is_quiet() -> None:
    conversation, line = _conversation(tools=(LOOKUP,))
    _caller_turn(line, "where is my order", [ToolCall("c1", "lookup_order", "{}")], "")
    line.until(40)
    # The tool started at tick 34; 700 ms later (tick 69) the line is quiet and it has not answered.
    assert conversation.next_deadline() == 34 * 0.02 + 0.7
    line.until(69)
    line.run(conversation.handle_timer(conversation.next_deadline() or 0.0))
    assert _of(line, Synthesize)[-1][1] == Synthesize(3, "One moment.")
    assert conversation.tools.filler_at is None  # once per wait


def test_end_call_without_words_says_goodbye_then_hangs_up() -> None:
    conversation, line = _conversation(tools=BUILTINS)
    _caller_turn(line, "that's all, bye", [ToolCall("c1", "end_call", "{}")], "")
    line.until(40)
    assert _of(line, Synthesize)[-1][1] == Synthesize(3, "Goodbye.")
    line.answer(Synthesized(3, speech_audio(5)))
    line.until(60)
    assert [command for _, command in _of(line, EndCall)] == [EndCall("agent ended the call")]
    assert conversation.history[-3:] == [
        Turn("assistant", "", tool_calls=(ToolCall("c1", "end_call", "{}"),)),
        Turn("tool", "The call ends after your last words.", tool_call_id="c1"),
        Turn("assistant", "Goodbye."),
    ]


def test_transfer_and_keys_become_commands_and_bad_or_extra_calls_do_not_run() -> None:
    conversation, line = _conversation(tools=BUILTINS, max_tool_calls=3)
    calls = [
        ToolCall("c1", "transfer_call", '{"target": "sales"}'),
        ToolCall("c2", "send_dtmf", '{"digits": "12#"}'),
        ToolCall("c3", "send_dtmf", '{"digits": "call 911"}'),
        ToolCall("c4", "transfer_call", '{"target": "support"}'),
    ]
    _caller_turn(line, "sales please", calls, "Putting you through.")
    line.until(40)
    assert [command for _, command in _moves(line) if isinstance(command, TransferCall | SendDigits)] == [
        TransferCall("sales"),
        SendDigits("12#"),
    ]
    line.answer(Synthesized(3, speech_audio(5)))
    line.until(60)
    results = {turn.tool_call_id: turn.text for turn in conversation.history if turn.role == "tool"}
    assert results["c3"].startswith("Not run: digits")
    assert results["c4"] == "Not run: at most 3 tool calls per reply."


def test_a_failed_transfer_is_told_and_the_call_goes_on() -> None:
    conversation, line = _conversation()
    line.run(conversation.on_transfer_failed("403 Forbidden", line.now))
    assert _of(line, Synthesize)[0][1] == Synthesize(1, "I'm sorry,")  # the first chunk of the apology
    assert _of(line, EndCall) == []
    assert conversation.history[-1] == Turn("user", "(The transfer did not happen: 403 Forbidden.)")


def _keys(conversation: Conversation, line: Line, keys: str) -> None:
    for key in keys:
        line.run(conversation.on_dtmf(key, line.now))
        line.until(line.tick + 10)


def test_keys_pressed_reach_the_model_as_the_callers_turn() -> None:
    conversation, line = _conversation(tools=(LOOKUP,))
    _keys(conversation, line, "42#")
    (generate,) = [command for _, command in _of(line, Generate)]
    assert isinstance(generate, Generate)
    assert generate.turns[-1] == Turn("user", "The caller pressed 4 2 #.")  # typed: not quoted speech


def test_an_entry_without_hash_ends_after_its_timeout() -> None:
    conversation, line = _conversation(dtmf_timeout_s=1.0)
    _keys(conversation, line, "7")
    assert _of(line, Generate) == []
    assert conversation.next_deadline() == 0.0 + 1.0
    line.until(50)
    line.run(conversation.handle_timer(1.0))
    assert _of(line, Generate)[0][1].turns[-1] == Turn("user", "The caller pressed 7.")  # type: ignore[union-attr]


def test_menu_keys_act_without_the_model() -> None:
    conversation, line = _conversation(
        keys=(("0", "transfer:operator"), ("9", "end_call"), ("1", "say:We open at nine."))
    )
    _keys(conversation, line, "0")
    _keys(conversation, line, "1")
    _keys(conversation, line, "9")
    assert _of(line, Generate) == []
    assert [command for _, command in _moves(line) if isinstance(command, TransferCall)] == [
        TransferCall("operator")
    ]
    said = [command.text for _, command in _of(line, Synthesize) if isinstance(command, Synthesize)]
    assert said == ["We open at nine.", "Goodbye."]
    line.answer(Synthesized(1, speech_audio(3)))
    line.answer(Synthesized(2, speech_audio(3)))
    line.until(line.tick + 20)
    assert [command for _, command in _of(line, EndCall)] == [EndCall("caller pressed 9: end the call")]


def test_the_filler_waits_for_the_agents_words_to_end() -> None:
    conversation, line = _conversation(tools=(LOOKUP,))
    _caller_turn(
        line, "where is my order", [ToolCall("c1", "lookup_order", "{}")], "Let me check that for you."
    )
    line.until(30)
    line.answer(Synthesized(3, speech_audio(60)))  # 1.2 s of words from tick 35: past the 700 ms
    line.until(70)
    line.run(conversation.handle_timer(69 * 0.02))
    assert not [c for _, c in _of(line, Synthesize) if c == Synthesize(4, "One moment.")]
    assert conversation.next_deadline() == 69 * 0.02 + 0.2  # looks again shortly
    line.until(100)  # the words end at tick 95
    for _ in range(3):  # the timer fires once the line is quiet (the runner arms it at each deadline)
        line.run(conversation.handle_timer(max(conversation.next_deadline() or 0.0, line.now)))
    assert _of(line, Synthesize)[-1][1] == Synthesize(4, "One moment.")
    assert conversation.next_deadline() is None or conversation.next_deadline() != line.now  # said once
    line.answer(Synthesized(4, speech_audio(5)))
    line.until(line.tick + 20)
    assert Turn("assistant", "One moment.") not in conversation.history  # a courtesy, not the conversation
    line.run(conversation.on_tool_result("c1", "shipped", line.now))
    assert _of(line, Generate)[-1][1].turns[-1] == Turn("tool", "shipped", tool_call_id="c1")  # type: ignore[union-attr]


def test_a_beep_is_not_speech_it_starts_no_turn_and_never_reaches_stt() -> None:
    from sipagent.rtp.frames import SAMPLES_PER_FRAME
    from sipagent.voice.jobs import Transcribe

    _, line = _conversation()
    t = np.arange(50 * SAMPLES_PER_FRAME) / 8000
    beep = (np.sin(2 * np.pi * 1000 * t) * 8000).astype(np.int16)  # loud enough for the level VAD
    line.play([beep[i : i + SAMPLES_PER_FRAME] for i in range(0, beep.size, SAMPLES_PER_FRAME)])
    line.until(line.tick + 40)
    assert _of(line, Transcribe) == []
