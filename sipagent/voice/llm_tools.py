"""Tool calling, the parts both LLM backends share (decision 0021).

* **OpenAI wire format.** :func:`openai_messages` renders a history with the agent's tool calls and
  the tools' results as the chat-completions API wants them; :func:`openai_tools` the ``tools`` list;
  :class:`ToolCallAssembler` puts streamed ``delta.tool_calls`` fragments back together (by index:
  the id and name arrive once, the arguments in pieces).
* **Plain-text rendering** for a chat template that knows nothing of tools (SmolLM2's, and every
  llama.cpp built-in format): :func:`text_messages` describes the tools at the end of the system
  prompt and tells calls and results in words, in ``user``/``assistant`` turns that still alternate
  (templates such as Mistral's refuse anything else). The embedded backend then decides on a call
  after the speech, under a grammar (:func:`decision_question`, :func:`decision_grammar`,
  :func:`schema_grammar`, :func:`constrained_text`).
* **Nothing of a call is spoken.** :class:`ToolSyntaxGuard` sits between a model's text and the
  speaker whenever tools are offered: a ``<tool_call>…</tool_call>`` block (Hermes, Qwen) or a reply
  that opens with a JSON object is held back, and read as a call when it is one, never passed on
  (a server started without its tool-call parser sends these as plain content).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .llm_turns import ReplyPart, ToolCall, ToolSpec, Turn

if TYPE_CHECKING:
    from llama_cpp import Llama

_log = logging.getLogger("sipagent.voice.llm")

_OPEN_TAG = "<tool_call>"
_CLOSE_TAG = "</tool_call>"


def new_call_id() -> str:
    """An id for a call whose model or server gave none (OpenAI's shape: ``call_`` and hex)."""
    return "call_" + secrets.token_hex(12)


def parse_parameters(tool: ToolSpec) -> dict[str, Any]:
    """``tool.parameters`` as a dict (an ``object`` schema); a schema that is not one is a ValueError."""
    try:
        schema = json.loads(tool.parameters)
    except json.JSONDecodeError as exc:
        raise ValueError(f"tool {tool.name}: parameters are not JSON: {exc}") from None
    if not isinstance(schema, dict) or schema.get("type", "object") != "object":
        raise ValueError(f"tool {tool.name}: parameters must be a JSON Schema of type object")
    return schema


def openai_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]]:
    """The chat-completions ``tools`` field."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description, "parameters": parse_parameters(t)},
        }
        for t in tools
    ]


def openai_messages(system_prompt: str, turns: Iterable[Turn]) -> list[dict[str, Any]]:
    """The conversation as chat-completions messages, system prompt first: an assistant turn carries
    its ``tool_calls``, a tool's result is a ``tool`` message answering its call's id."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system_prompt}]
    for turn in turns:
        if turn.role == "tool":
            messages.append({"role": "tool", "tool_call_id": turn.tool_call_id or "", "content": turn.text})
        elif turn.role == "assistant" and turn.tool_calls:
            calls = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in turn.tool_calls
            ]
            messages.append({"role": "assistant", "content": turn.text, "tool_calls": calls})
        else:
            messages.append({"role": turn.role, "content": turn.text})
    return messages


# -- plain text, for chat templates without tools ----------------------------------------------------
def tools_prompt(tools: Sequence[ToolSpec]) -> str:
    """The section appended to the system prompt: what each action does and the arguments it takes.

    No call syntax appears in it (no parentheses, no JSON), so a model has none to imitate in speech.
    """
    lines = ["", "", "Besides talking, the phone system can take these actions for you, after you speak:"]
    for tool in tools:
        names = required_arguments(tool)
        needs = f" (needs: {', '.join(names)})" if names else ""
        lines.append(f"- {tool.name}: {tool.description.strip()}{needs}")
    lines.append("Say briefly what you are doing when you take an action.")
    return "\n".join(lines)


def _find_call(turns: Sequence[Turn], call_id: str | None) -> ToolCall | None:
    for turn in turns:
        for call in turn.tool_calls:
            if call.id == call_id:
                return call
    return None


def text_messages(
    system_prompt: str, turns: Sequence[Turn], tools: Sequence[ToolSpec]
) -> list[dict[str, str]]:
    """The conversation for a template without tools (see the module docstring).

    Without tools or tool turns this is exactly ``[system] + (role, text)`` per turn, the prompt the
    backend had before tools existed (the no-tools path and its KV cache are unchanged).
    """
    system = system_prompt + tools_prompt(tools) if tools else system_prompt
    messages = [{"role": "system", "content": system}]
    for turn in turns:
        if turn.role == "tool":
            call = _find_call(turns, turn.tool_call_id)
            what = f"{call.name} {call.arguments}" if call is not None else "an action"
            content = f"(The phone system took the action {what}. Result: {turn.text.strip() or 'done'})"
            if messages[-1]["role"] == "user":  # several results of one reply: one turn
                messages[-1]["content"] += "\n" + content
            else:
                messages.append({"role": "user", "content": content})
        elif turn.role == "assistant" and turn.tool_calls:
            actions = ", ".join(call.name for call in turn.tool_calls)
            # The words alone, or a note of the action when nothing was said: never call syntax.
            messages.append({"role": "assistant", "content": turn.text or f"(Taking the action {actions}.)"})
        else:
            messages.append({"role": turn.role, "content": turn.text})
    return messages


def decision_question(turns: Sequence[Turn], tools: Sequence[ToolSpec]) -> str:
    """The question put after the speech: which action the caller's last words call for, if any."""
    said = next((t.text for t in reversed(turns) if t.role == "user"), "")
    names = ", ".join(tool.name for tool in tools)
    return f'The caller said: "{said}"\nThe action for that ({names} or none) is:'


def _gbnf_literal(text: str) -> str:
    return json.dumps(text)  # GBNF string literals escape like JSON's


def decision_grammar(tools: Sequence[ToolSpec], *, required: bool = False) -> str:
    """GBNF for the decision: one of the tools' names, or ``none`` unless a call is ``required``."""
    choices = [tool.name for tool in tools] + ([] if required else ["none"])
    return "root ::= " + " | ".join(_gbnf_literal(choice) for choice in choices)


def required_arguments(tool: ToolSpec) -> list[str]:
    """The names of the arguments ``tool`` needs (its schema's ``required`` that it defines)."""
    schema = parse_parameters(tool)
    properties = schema.get("properties") or {}
    return [name for name in schema.get("required", []) if name in properties]


def arguments_schema(tool: ToolSpec) -> str | None:
    """The JSON Schema a grammar constrains the arguments to: the required arguments only, in the
    schema's order; None when the tool needs none (its arguments are then ``{}``).

    Optional arguments are left out on purpose: a small model that may fill them rambles (an
    ``end_call`` reason of 200 characters) and can run out of tokens before the object closes.
    """
    schema = parse_parameters(tool)
    needed = required_arguments(tool)
    if not needed:
        return None
    properties = {name: schema["properties"][name] for name in needed}
    return json.dumps({**schema, "properties": properties, "required": needed, "additionalProperties": False})


# -- llama.cpp under a grammar (the embedded backend's decision) --------------------------------------
def schema_grammar(schema: str) -> Any:
    """A llama.cpp grammar for the JSON Schema ``schema``; any JSON object if llama.cpp's converter
    cannot read it (the runner still checks the arguments against the real schema)."""
    from llama_cpp.llama_grammar import LlamaGrammar

    try:
        return LlamaGrammar.from_json_schema(schema, verbose=False)
    except Exception as exc:  # the converter raises bare exceptions on schema features it lacks
        _log.warning("tool arguments schema not usable as a grammar (%s); any JSON object instead", exc)
        return LlamaGrammar.from_json_schema('{"type": "object"}', verbose=False)


def constrained_text(
    llama: Llama, prompt: list[int], grammar: Any, max_tokens: int, cancel: threading.Event | None
) -> str:
    """Greedy text under ``grammar`` after ``prompt`` ("" if cancelled): a decision is the model's
    most likely answer, never a dice roll (a false end_call hangs up on the caller)."""
    import llama_cpp

    out: list[int] = []
    tokens = llama.generate(prompt, temp=0.0, repeat_penalty=1.0, grammar=grammar)
    try:
        for token in tokens:
            if llama_cpp.llama_vocab_is_eog(llama._model.vocab, token) or len(out) >= max_tokens:
                break
            out.append(token)
            if cancel is not None and cancel.is_set():
                return ""
    finally:
        tokens.close()
    return llama.detokenize(out).decode("utf-8", "replace")


# -- streams ----------------------------------------------------------------------------------------
def parse_call_json(text: str, tools: Sequence[ToolSpec]) -> ToolCall | None:
    """A call written as JSON text (``{"name": …, "arguments": {…}}``, or ``"parameters"`` as
    Llama 3.1 writes it) of one of ``tools``; None if ``text`` is not one."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    if isinstance(data, dict) and isinstance(data.get("function"), dict):
        data = data["function"]
    if not isinstance(data, dict) or data.get("name") not in {tool.name for tool in tools}:
        return None
    arguments = data.get("arguments", data.get("parameters", {}))
    text_args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return ToolCall(new_call_id(), str(data["name"]), text_args)


class ToolSyntaxGuard:
    """Filters a reply's text on its way to the speaker (see the module docstring).

    ``push`` returns what may be spoken now; ``flush`` at the end returns the rest. Calls found are
    collected in :attr:`calls`. Text that looks like a call but is not one is dropped all the same:
    JSON read aloud is worse than a missing sentence. So is the rest of a reply once it names a tool
    the way no one speaks (``end_call``: a name with ``_`` or a digit): a small model that does so
    is reciting its instructions or writing a call of its own syntax, never talking to the caller.
    """

    def __init__(self, tools: Sequence[ToolSpec]) -> None:
        """Recognise calls of ``tools``."""
        self._tools = tuple(tools)
        self._names = [t.name for t in tools if any(c == "_" or c.isdigit() for c in t.name)]
        self._markers = [_OPEN_TAG, *self._names]
        self._pending = ""  # text not yet known to be speech
        self._block: str | None = None  # inside a <tool_call> block: its text so far
        self._json: str | None = None  # the reply opened with "{": all of it so far
        self._started = False  # anything other than whitespace has been seen
        self._muted = False  # a tool's name was written: nothing more is spoken
        self.calls: list[ToolCall] = []

    def push(self, text: str) -> str:
        """Take the next piece of the reply; return what may be spoken of it now."""
        if self._json is not None:
            self._json += text
            return ""
        if self._muted:
            return ""
        self._pending += text
        if not self._started:
            stripped = self._pending.lstrip()
            if not stripped:
                return ""
            self._started = True
            if stripped[0] in "{[":
                self._json, self._pending = stripped, ""
                return ""
        out = []
        while self._pending:
            if self._block is not None:
                end = self._pending.find(_CLOSE_TAG)
                if end < 0:
                    self._block += self._pending
                    self._pending = ""
                    break
                self._end_block(self._block + self._pending[:end])
                self._pending = self._pending[end + len(_CLOSE_TAG) :]
                continue
            found = [(at, m) for m in self._markers if (at := self._pending.find(m)) >= 0]
            if found:
                start, marker = min(found)
                out.append(self._pending[:start])
                if marker != _OPEN_TAG:
                    self._muted, self._pending = True, ""
                    break
                self._block, self._pending = "", self._pending[start + len(_OPEN_TAG) :]
                continue
            # Hold back a tail that could be the start of a marker (of a name: at the start of a word,
            # so "Let me" is not held back for "end_call").
            keep = max((n for m in self._markers for n in self._tail_starting(m)), default=0)
            cut = len(self._pending) - keep
            out.append(self._pending[:cut])
            self._pending = self._pending[cut:]
            break
        return "".join(out)

    def _tail_starting(self, marker: str) -> Iterator[int]:
        """Lengths of the pending text's tails that ``marker`` starts with."""
        pending = self._pending
        for size in range(min(len(marker) - 1, len(pending)), 0, -1):
            if pending.endswith(marker[:size]):
                before = pending[-size - 1 : -size]
                if marker == _OPEN_TAG or not before or not before.isalnum():
                    yield size

    def flush(self) -> str:
        """The reply is over: the text still held back if it is speech, and any last call."""
        if self._json is not None:
            self._read_json(self._json)
            self._json = None
            return ""
        if self._block is not None:
            self._end_block(self._block + self._pending)  # a block the model never closed
            self._pending = ""
            return ""
        out, self._pending = self._pending, ""
        return out

    def _end_block(self, body: str) -> None:
        self._block = None
        self._read_json(body.strip())

    def _read_json(self, text: str) -> None:
        text = text.strip()
        try:
            data: Any = json.loads(text)
        except json.JSONDecodeError:
            return
        for item in data if isinstance(data, list) else [data]:
            call = parse_call_json(json.dumps(item), self._tools)
            if call is not None:
                self.calls.append(call)


@dataclass
class _Partial:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ToolCallAssembler:
    """Streamed ``delta.tool_calls`` fragments (OpenAI's format, as vLLM, the llama.cpp server and
    Ollama send them) put back together by ``index``: the id and name usually come in the first
    fragment, the arguments in pieces to concatenate. Servers that send a whole call in one chunk,
    give no index (Ollama: one call per chunk) or no id are handled too."""

    def __init__(self) -> None:
        """No fragments yet."""
        self._calls: dict[int, _Partial] = {}

    def add(self, fragments: Any) -> None:
        """Take one chunk's ``delta.tool_calls`` list (anything else is ignored)."""
        if not isinstance(fragments, list):
            return
        for position, fragment in enumerate(fragments):
            if not isinstance(fragment, dict):
                continue
            index = fragment.get("index")
            if not isinstance(index, int):
                # No index: each fragment with a name starts a call, the rest continue the last one.
                function = fragment.get("function") or {}
                starts = isinstance(function, dict) and function.get("name")
                index = len(self._calls) + position if starts or not self._calls else max(self._calls)
            partial = self._calls.setdefault(index, _Partial())
            if isinstance(fragment.get("id"), str) and fragment["id"]:
                partial.id = fragment["id"]
            function = fragment.get("function")
            if isinstance(function, dict):
                if isinstance(function.get("name"), str):
                    partial.name += function["name"] if partial.name != function["name"] else ""
                arguments = function.get("arguments")
                if isinstance(arguments, str):
                    partial.arguments.append(arguments)
                elif isinstance(arguments, dict):  # Ollama sends an object, not text
                    partial.arguments.append(json.dumps(arguments))

    @property
    def pending(self) -> bool:
        """Some fragments were received and not yet taken by :meth:`take`."""
        return bool(self._calls)

    def take(self) -> list[ToolCall]:
        """The calls assembled so far, in index order (those with no name are dropped: nothing to
        run). Arguments are passed on even when they are not valid JSON: the runner checks them."""
        calls = [
            ToolCall(p.id or new_call_id(), p.name, "".join(p.arguments).strip() or "{}")
            for _, p in sorted(self._calls.items())
            if p.name
        ]
        self._calls.clear()
        return calls


__all__ = [
    "ReplyPart",
    "ToolCallAssembler",
    "ToolSyntaxGuard",
    "arguments_schema",
    "constrained_text",
    "decision_grammar",
    "decision_question",
    "new_call_id",
    "openai_messages",
    "openai_tools",
    "parse_call_json",
    "parse_parameters",
    "required_arguments",
    "schema_grammar",
    "text_messages",
    "tools_prompt",
]
