#!/usr/bin/env python3
"""Tool calling on a small scripted set of requests: does the model call the right tool, with valid
arguments, and only when it should (decision 0021)?

Each request is one caller turn in a new call, offered the tools a route has: the built-in
``end_call``, ``transfer_call`` (targets sales, billing, support, reception) and ``send_dtmf``, as
the product layer defines them, and a ``lookup_order`` webhook. Some requests should call one of
them, the others none. Printed:

* tool right: of the requests that should call a tool, the share whose (first) call is that tool;
* arguments valid: of all calls made, the share whose arguments pass the tool's JSON Schema;
  arguments right: of the right calls, the share with the expected values (the target, the digits,
  the order number);
* false calls: of the requests that should call nothing, the share that called something;
* latency: median time from asking to the first text piece, and to the tool call (calls only).

Usage::

    .venv/bin/python scripts/eval_tools.py                       # the embedded model (settings' [llm])
    .venv/bin/python scripts/eval_tools.py -v                    # one line per request
    .venv/bin/python scripts/eval_tools.py --tool-choice required   # which tool, when one must be called
    .venv/bin/python scripts/eval_tools.py --openai http://gpu-box:8000/v1 --model Qwen/Qwen2.5-7B-Instruct
    .venv/bin/python scripts/eval_tools.py --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# jsonschema ships no type information (types-jsonschema is not installed).
import jsonschema  # type: ignore[import-untyped, unused-ignore]

from sipagent.config import DEFAULT_SYSTEM_PROMPT
from sipagent.product.tools import end_call_spec, send_dtmf_spec, transfer_call_spec
from sipagent.voice.llm import ChatModel, ToolCall, ToolSpec
from sipagent.voice.models import DEFAULT_LLM_MODEL, resolve_model_path

TARGETS = ("sales", "billing", "support", "reception")
LOOKUP = ToolSpec(
    "lookup_order",
    "Look up the status of an order by its order number.",
    json.dumps(
        {
            "type": "object",
            "properties": {"order_id": {"type": "string", "pattern": "^[0-9]{1,12}$"}},
            "required": ["order_id"],
        }
    ),
)


@dataclass(frozen=True)
class Case:
    """One caller turn, the tool it should call (None: no tool) and the arguments expected."""

    said: str
    tool: str | None
    arguments: dict[str, str] | None = None


CASES = (
    Case("Please hang up now.", "end_call"),
    Case("That's all I needed, goodbye!", "end_call"),
    Case("You can end the call now, thanks.", "end_call"),
    Case("I'm done here, bye bye.", "end_call"),
    Case("Transfer me to sales, please.", "transfer_call", {"target": "sales"}),
    Case("Can you put me through to billing?", "transfer_call", {"target": "billing"}),
    Case("I want to talk to the support team, connect me please.", "transfer_call", {"target": "support"}),
    Case("Please transfer this call to reception.", "transfer_call", {"target": "reception"}),
    Case("Press 1 for me please.", "send_dtmf", {"digits": "1"}),
    Case("Please dial extension 4 5 6.", "send_dtmf", {"digits": "456"}),
    Case("Enter the code 9 8 7 6 on the keypad.", "send_dtmf", {"digits": "9876"}),
    Case("Press star and then 0.", "send_dtmf", {"digits": "*0"}),
    Case("What's the status of order 12345?", "lookup_order", {"order_id": "12345"}),
    Case("Can you look up my order number 5521?", "lookup_order", {"order_id": "5521"}),
    Case("Where is my package? The order is 8890.", "lookup_order", {"order_id": "8890"}),
    Case("Check order 777 for me please.", "lookup_order", {"order_id": "777"}),
    Case("What are your opening hours?", None),
    Case("Hello, how are you today?", None),
    Case("Can you tell me a joke?", None),
    Case("I'd like to book a table for two tonight.", None),
    Case("Do you sell gift cards?", None),
    Case("Thanks, that's helpful. One more question: do you deliver?", None),
)


def route_tools() -> tuple[ToolSpec, ...]:
    """The tools of a route with four transfer targets and one webhook."""
    transfer = transfer_call_spec(TARGETS)
    assert transfer is not None
    return (end_call_spec(), transfer, send_dtmf_spec(), LOOKUP)


@dataclass
class Outcome:
    """What the model did with one request."""

    said: str
    expected: str | None
    called: str | None
    arguments: str | None
    arguments_valid: bool | None
    arguments_right: bool | None
    speech: str
    first_text_ms: float | None
    call_ms: float | None


def run_case(model: ChatModel, tools: Sequence[ToolSpec], case: Case, tool_choice: str = "auto") -> Outcome:
    """Ask once, timing the first text piece and the first call."""
    schemas = {tool.name: json.loads(tool.parameters) for tool in tools}
    with model.new_session(DEFAULT_SYSTEM_PROMPT) as session:
        session.add_user(case.said)
        started = time.perf_counter()
        first_text: float | None = None
        call: ToolCall | None = None
        call_at: float | None = None
        speech: list[str] = []
        for part in session.stream_with_tools(tools, tool_choice=tool_choice):
            now = time.perf_counter() - started
            if isinstance(part, ToolCall):
                if call is None:
                    call, call_at = part, now
            else:
                first_text = first_text if first_text is not None else now
                speech.append(part)
    valid = right = None
    if call is not None:
        try:
            arguments = json.loads(call.arguments)
            jsonschema.validate(arguments, schemas[call.name])
            valid = True
        except (json.JSONDecodeError, jsonschema.ValidationError, KeyError):
            arguments, valid = None, False
        if call.name == case.tool:
            right = bool(valid) and all(
                str(arguments.get(key, "")).lower() == value for key, value in (case.arguments or {}).items()
            )
    return Outcome(
        case.said,
        case.tool,
        call.name if call else None,
        call.arguments if call else None,
        valid,
        right,
        "".join(speech).strip(),
        None if first_text is None else first_text * 1000,
        None if call_at is None else call_at * 1000,
    )


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:5.1f}% ({part}/{whole})" if whole else "    -"


def _median(values: Sequence[float | None]) -> str:
    kept = [value for value in values if value is not None]
    return f"{statistics.median(kept):7.0f} ms" if kept else "      -"


def summary(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """The table's figures."""
    should = [o for o in outcomes if o.expected is not None]
    should_not = [o for o in outcomes if o.expected is None]
    calls = [o for o in outcomes if o.called is not None]
    right = [o for o in should if o.called == o.expected]
    return {
        "tool_right": (len(right), len(should)),
        "arguments_valid": (sum(bool(o.arguments_valid) for o in calls), len(calls)),
        "arguments_right": (sum(bool(o.arguments_right) for o in right), len(right)),
        "false_calls": (sum(o.called is not None for o in should_not), len(should_not)),
        "first_text_ms": _median([o.first_text_ms for o in outcomes]),
        "call_ms": _median([o.call_ms for o in calls]),
    }


def print_table(name: str, outcomes: Sequence[Outcome], verbose: bool) -> None:
    """One line per request (``verbose``), then the figures."""
    if verbose:
        for o in outcomes:
            mark = "ok " if o.called == o.expected else "BAD"
            args = f" {o.arguments}" if o.arguments else ""
            print(f"{mark} {o.said[:44]:44} want {o.expected or '-':13} got {o.called or '-'}{args}")
            print(f"      first text {o.first_text_ms or 0:6.0f} ms  said: {o.speech[:70]!r}")
    figures = summary(outcomes)
    print(f"\n{name}: {len(outcomes)} requests")
    print(f"  tool chosen right   {_share(*figures['tool_right'])}")
    print(f"  arguments valid     {_share(*figures['arguments_valid'])}   (of the calls made)")
    print(f"  arguments right     {_share(*figures['arguments_right'])}   (of the right calls)")
    print(f"  false tool calls    {_share(*figures['false_calls'])}")
    print(f"  median to 1st text  {figures['first_text_ms']}")
    print(f"  median to the call  {figures['call_ms']}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the set on the chosen model and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--openai", metavar="URL", help="an OpenAI-compatible server's base URL (…/v1)")
    parser.add_argument("--model", default="default", help="the server's model name (with --openai)")
    parser.add_argument("--gguf", type=Path, help="a GGUF for the embedded backend (default: SmolLM2-135M)")
    parser.add_argument("--temperature", type=float, default=0.3, help="sampling of the speech (0.3)")
    parser.add_argument("--seed", type=int, default=0, help="the embedded model's sampling seed")
    parser.add_argument(
        "--tool-choice",
        choices=("auto", "required"),
        default="auto",
        help="required: only the requests that should call a tool, each made to call one (which one is "
        "the model's choice): tells choosing the tool apart from deciding to call at all",
    )
    parser.add_argument("--json", action="store_true", help="every outcome and the figures as JSON")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per request")
    args = parser.parse_args(argv)

    model: ChatModel
    if args.openai:
        from sipagent.voice.llm_openai import OpenAIChat

        model = OpenAIChat(args.openai, args.model, temperature=args.temperature)
        name = f"{args.model} at {args.openai}"
    else:
        from sipagent.voice.llm_llama import LlamaCppChat

        path = args.gguf or resolve_model_path(DEFAULT_LLM_MODEL)
        model = LlamaCppChat(path, temperature=args.temperature, seed=args.seed)
        name = f"{path.name} (embedded)"
    name += f", tool_choice {args.tool_choice}"
    tools = route_tools()
    try:
        # One request first, not counted: the first call with a tool set evaluates its system prompt.
        run_case(model, tools, Case("Hello.", None))
        cases = [case for case in CASES if case.tool or args.tool_choice == "auto"]
        outcomes = [run_case(model, tools, case, args.tool_choice) for case in cases]
    finally:
        model.close()
    if args.json:
        print(json.dumps({"model": name, "outcomes": [asdict(o) for o in outcomes], **summary(outcomes)}))
    else:
        print_table(name, outcomes, args.verbose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
