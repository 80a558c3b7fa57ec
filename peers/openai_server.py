"""A tiny OpenAI-compatible chat-completions server on loopback, scripted per request, for tests.

It stands in for vLLM, a llama.cpp server or Ollama: ``POST /v1/chat/completions`` streams
server-sent events as they do (``stream: true``) or answers one JSON completion, ``GET /v1/models``
lists the one model. Each request takes the next scripted reply from a queue (then ``default``), and
every request is recorded, so a test can check what sipagent sent (the tools, the history, the
caller's DTMF digits in a tool result) and script what the "model" answers::

    from peers.openai_server import Call, Fail, OpenAIServer, Pause, Text

    with OpenAIServer() as server:
        server.script(Text("One moment,", " I'll transfer you."), Call("transfer_call", {"target": "sales"}))
        server.script(Pause(0.5), Text("Done."))     # the second request: a slow first token
        server.script(Fail(500, "overloaded"))       # the third: an error status
        settings = {"llm": {"backend": "openai", "openai": {"base_url": server.url, "model": "m"}}}
        ...
        request = server.wait_for_requests(1)[0]
        assert request.body["tools"][0]["function"]["name"] == "transfer_call"

Steps of a reply, in order: :class:`Text` (content chunks), :class:`Call` (one tool call, its
arguments split over ``fragments`` chunks as real servers stream them), :class:`Pause` (sleep before
the next chunk), :class:`Raw` (any chunk as it is, for odd servers), :class:`Fail` (an error status
instead of a stream; alone in its reply). The last chunk carries ``finish_reason`` ``tool_calls`` when
the reply called a tool, else ``stop``. A client that closes the stream early (a cancelled turn) is
counted in :attr:`OpenAIServer.aborted`.

Threads, not asyncio: the server runs in a daemon thread of its own (``http.server``), so a
synchronous client in the test's thread and an asyncio server under test both reach it. It binds
127.0.0.1 port 0 itself (the kernel picks a free port: no window for another test to take it).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Text:
    """Content chunks, one per piece."""

    pieces: tuple[str, ...]

    def __init__(self, *pieces: str) -> None:
        """``Text("Hel", "lo.")`` streams two chunks."""
        object.__setattr__(self, "pieces", pieces)


@dataclass(frozen=True)
class Call:
    """One tool call. ``arguments`` (a dict, sent as JSON, or text sent as it is, valid or not) is
    split over ``fragments`` chunks; the first carries the id (``None``: the server sends none) and
    the name. ``index`` defaults to the call's position in the reply; ``indexed=False`` leaves it out
    (as Ollama does)."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    id: str | None = "auto"
    fragments: int = 1
    index: int | None = None
    indexed: bool = True


@dataclass(frozen=True)
class Pause:
    """Sleep ``seconds`` before the next chunk (a slow first token, a slow model)."""

    seconds: float


@dataclass(frozen=True)
class Raw:
    """One ``data:`` event with ``chunk`` as it is (a dict, sent as JSON, or text)."""

    chunk: Mapping[str, Any] | str


@dataclass(frozen=True)
class Fail:
    """Answer ``status`` with ``message`` in OpenAI's error shape instead of a completion."""

    status: int = 500
    message: str = "scripted failure"


Step = Text | Call | Pause | Raw | Fail


@dataclass(frozen=True)
class RecordedRequest:
    """A request the server got: its path, headers (lower-case names) and JSON body."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The request's ``messages``."""
        return list(self.body.get("messages", []))

    @property
    def tool_names(self) -> list[str]:
        """The names of the tools the request offered."""
        return [tool["function"]["name"] for tool in self.body.get("tools", [])]


class OpenAIServer:
    """See the module docstring. Use as a context manager (or :meth:`start` and :meth:`stop`)."""

    def __init__(self, *, model: str = "test-model", default: tuple[Step, ...] = (Text("Okay."),)) -> None:
        """``default``: the reply to requests once the script is used up."""
        self.model = model
        self.default = default
        #: Every request so far, oldest first.
        self.requests: list[RecordedRequest] = []
        #: Streams the client closed before their end.
        self.aborted = 0
        self._script: deque[tuple[Step, ...]] = deque()
        self._changed = threading.Condition()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life --------------------------------------------------------------------------------------
    def start(self) -> OpenAIServer:
        """Listen on a free loopback port and serve in a daemon thread."""
        server = self

        class Handler(_Handler):
            owner = server

        self._httpd = ThreadingHTTPServer((HOST, 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="openai-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port it listens on."""
        if self._httpd is None:
            raise RuntimeError("the server is not started")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """The base URL to configure a client with (``http://127.0.0.1:PORT/v1``)."""
        return f"http://{HOST}:{self.port}/v1"

    # -- the script and the record -------------------------------------------------------------------
    def script(self, *steps: Step) -> None:
        """Queue the reply to one more request."""
        if any(isinstance(step, Fail) for step in steps) and len(steps) != 1:
            raise ValueError("a Fail step is a whole reply")
        with self._changed:
            self._script.append(tuple(steps))

    def wait_for_requests(self, count: int, timeout: float = 30.0) -> list[RecordedRequest]:
        """Block until ``count`` requests have arrived (TimeoutError after ``timeout`` s); all so far."""
        with self._changed:
            if not self._changed.wait_for(lambda: len(self.requests) >= count, timeout):
                raise TimeoutError(f"{len(self.requests)} of {count} requests arrived in {timeout} s")
            return list(self.requests)

    def _next_reply(self, request: RecordedRequest) -> tuple[Step, ...]:
        with self._changed:
            self.requests.append(request)
            reply = self._script.popleft() if self._script else self.default
            self._changed.notify_all()
        return reply


class _Handler(BaseHTTPRequestHandler):
    owner: OpenAIServer
    protocol_version = "HTTP/1.0"  # a stream ends when the connection closes: no chunked encoding

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read :attr:`OpenAIServer.requests` instead."""

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._json(200, {"object": "list", "data": [{"id": self.owner.model, "object": "model"}]})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        size = int(self.headers.get("content-length") or 0)
        try:
            body = json.loads(self.rfile.read(size) or b"{}")
        except json.JSONDecodeError:
            self._json(400, {"error": {"message": "the body is not JSON"}})
            return
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        steps = self.owner._next_reply(RecordedRequest(self.path, headers, body))
        if len(steps) == 1 and isinstance(steps[0], Fail):
            self._json(steps[0].status, {"error": {"message": steps[0].message, "code": steps[0].status}})
            return
        chunks = _chunks(steps, str(body.get("model", self.owner.model)))
        try:
            if body.get("stream"):
                self._stream(chunks)
            else:
                self._json(200, _whole(chunks))
        except (BrokenPipeError, ConnectionResetError):
            with self.owner._changed:
                self.owner.aborted += 1

    def _json(self, status: int, data: Any) -> None:
        payload = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _stream(self, chunks: list[dict[str, Any] | str | Pause]) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.end_headers()
        self.wfile.write(b": scripted stream\n\n")  # a comment line, as servers send keep-alives
        for chunk in chunks:
            if isinstance(chunk, Pause):
                self.wfile.flush()
                time.sleep(chunk.seconds)
                continue
            data = chunk if isinstance(chunk, str) else json.dumps(chunk)
            self.wfile.write(f"data: {data}\n\n".encode())
            self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


def _chunks(steps: tuple[Step, ...], model: str) -> list[dict[str, Any] | str | Pause]:
    """The reply's stream events (pauses kept in place), the role first and ``finish_reason`` last."""
    created = int(time.time())

    def event(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-scripted",
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    out: list[dict[str, Any] | str | Pause] = [event({"role": "assistant", "content": ""})]
    calls = 0
    for step in steps:
        if isinstance(step, Text):
            out.extend(event({"content": piece}) for piece in step.pieces)
        elif isinstance(step, Pause):
            out.append(step)
        elif isinstance(step, Raw):
            out.append(step.chunk if isinstance(step.chunk, str) else dict(step.chunk))
        elif isinstance(step, Call):
            out.extend(event({"tool_calls": [fragment]}) for fragment in _fragments(step, calls))
            calls += 1
    out.append(event({}, "tool_calls" if calls else "stop"))
    return out


def _fragments(call: Call, position: int) -> list[dict[str, Any]]:
    arguments = call.arguments if isinstance(call.arguments, str) else json.dumps(dict(call.arguments))
    count = max(1, call.fragments)
    size = -(-len(arguments) // count) if arguments else 1
    parts = [arguments[i : i + size] for i in range(0, len(arguments), size)] or [""]
    fragments: list[dict[str, Any]] = []
    for number, part in enumerate(parts):
        fragment: dict[str, Any] = {"function": {"arguments": part}}
        if call.indexed:
            fragment["index"] = position if call.index is None else call.index
        if number == 0:
            fragment["type"] = "function"
            fragment["function"]["name"] = call.name
            if call.id is not None:
                fragment["id"] = f"call_scripted_{position}" if call.id == "auto" else call.id
        fragments.append(fragment)
    return fragments


def _whole(chunks: list[dict[str, Any] | str | Pause]) -> dict[str, Any]:
    """The same reply as one non-streamed completion."""
    content: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    finish = "stop"
    for chunk in chunks:
        if isinstance(chunk, Pause):
            time.sleep(chunk.seconds)
            continue
        if isinstance(chunk, str):
            continue
        choice = chunk["choices"][0]
        delta = choice["delta"]
        content.append(delta.get("content") or "")
        for fragment in delta.get("tool_calls", []):
            call = calls.setdefault(
                fragment.get("index", len(calls)),
                {"id": fragment.get("id", ""), "type": "function", "function": {"name": "", "arguments": ""}},
            )
            call["function"]["name"] += fragment["function"].get("name", "")
            call["function"]["arguments"] += fragment["function"].get("arguments", "")
        finish = choice.get("finish_reason") or finish
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content)}
    if calls:
        message["tool_calls"] = [calls[index] for index in sorted(calls)]
    return {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }


__all__ = ["Call", "Fail", "OpenAIServer", "Pause", "Raw", "RecordedRequest", "Step", "Text"]
