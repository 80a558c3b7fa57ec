"""The server's logging: one record a line on stderr, as text or JSON Lines, masked, tagged with its call.

:func:`install_logging` is the whole setup, for the server (``sipagent serve``) and for the inference
process alike (its lines carry ``[inference]`` after the logger's name). ``log_format = "json"``
writes one JSON object a line::

    {"time": "2025-01-31T09:12:03.141Z", "level": "info", "logger": "sipagent.product",
     "message": "call 1-42@10.0.0.9 ended: bye (completed)", "call_id": "1-42@10.0.0.9"}

plus ``exception`` (the traceback's text) when the record has one. Both formats go through
:class:`LogFilter`, which masks numbers and redacts credentials and secrets
(:mod:`sipagent.log_masking`) before anything is written.

**Which call a line is about.** The SIP Call-ID, found in this order:

1. a SIP message trace's own ``Call-ID`` header (the debug level's ``recv``/``send`` lines): the
   message says which call it belongs to, whatever code path carried it;
2. the :data:`contextvars` variable set while a call's work runs (:func:`call_scope`): the server
   sets it around each SIP event of a call, each call's media callbacks set it (:func:`in_call`),
   and what those start inherits it — asyncio copies the context into every task, timer and callback
   it creates, and inference results are delivered under the call that asked
   (:mod:`sipagent.voice.inference.service`);
3. a message that names its call the way the code base writes it (``call <Call-ID>``), for the work
   that runs outside any call (the API's requests, the webhook queue, results of the inference
   process).

Handles shared by every call — the SIP network's timer, the shared media clock's slots, the RTCP
sockets' readers — are created outside any call (:func:`outside_calls`), so they never carry the
call that happened to arm them first.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar

from .log_masking import LogMasker

if TYPE_CHECKING:
    from .config import Settings

__all__ = [
    "JsonFormatter",
    "LogFilter",
    "LogSetup",
    "call_id_for",
    "call_scope",
    "configured_secrets",
    "current_call",
    "in_call",
    "install_logging",
    "log_setup",
    "outside_calls",
    "outside_calls_context",
]

LogFormat = Literal["text", "json"]
_T = TypeVar("_T")

#: The Call-ID of the call whose work is running (None: no call's).
_CALL: contextvars.ContextVar[str | None] = contextvars.ContextVar("sipagent_call_id", default=None)

#: A SIP trace's Call-ID header line (long or compact form).
_TRACE_CALL_ID = re.compile(r"^(?:call-id|i)[ \t]*:[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)
#: ``call <Call-ID>`` as the code base's messages write it; a Call-ID has a digit in it (which keeps
#: out "call the tool"), and "call store …" names the database, not a call.
_NAMED_CALL = re.compile(r"\bcall '?(?!store\b)([^\s,;()'\"]*[0-9][^\s,;()'\"]*)")


# -- which call ---------------------------------------------------------------------------------------
def current_call() -> str | None:
    """The Call-ID of the call whose work is running here, if any."""
    return _CALL.get()


@contextlib.contextmanager
def call_scope(call_id: str | None) -> Iterator[None]:
    """Run the block as ``call_id``'s work (None or "": as no call's); what it starts inherits it."""
    token = _CALL.set(call_id or None)
    try:
        yield
    finally:
        _CALL.reset(token)


def outside_calls() -> contextlib.AbstractContextManager[None]:
    """Run the block as no call's work: for what it arms that every call shares."""
    return call_scope(None)


def outside_calls_context() -> contextvars.Context:
    """A copy of the current context with no call, for ``loop.call_at(..., context=)`` and
    ``create_task(..., context=)`` of handles every call shares."""
    context = contextvars.copy_context()
    context.run(_CALL.set, None)
    return context


class _HasCallId(Protocol):
    call_id: str


def in_call(owner: _HasCallId, callback: Callable[[_T], None]) -> Callable[[_T], None]:
    """``callback`` run as the work of ``owner``'s call (its ``call_id`` read at each run: an
    outbound call learns its Call-ID after its media is bound). For callbacks a shared scheduler
    runs (the media clock), which would otherwise run them in whatever context armed it."""

    def run(argument: _T) -> None:
        token = _CALL.set(owner.call_id or None)
        try:
            callback(argument)
        finally:
            _CALL.reset(token)

    return run


def call_id_for(message: str) -> str | None:
    """The Call-ID a log message is about (the module docstring's order), or None."""
    if "SIP/2.0" in message:
        trace = _TRACE_CALL_ID.search(message)
        if trace is not None:
            return trace.group(1)
    call = _CALL.get()
    if call is not None:
        return call
    named = _NAMED_CALL.search(message)
    return named.group(1).rstrip(":.") if named is not None else None


# -- records ------------------------------------------------------------------------------------------
_TRACEBACKS = logging.Formatter()


class LogFilter(logging.Filter):
    """Masks each record's message and exception text in place and notes its call as ``call_id``
    (installed on the handler, so every logger's records pass through it)."""

    def __init__(self, masker: LogMasker) -> None:
        super().__init__()
        self._masker = masker

    def filter(self, record: logging.LogRecord) -> bool:
        mask = self._masker.mask
        message = mask(record.getMessage())
        record.msg, record.args = message, None
        if record.exc_info and not record.exc_text:
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask(record.exc_text)
        if record.stack_info:
            record.stack_info = mask(record.stack_info)
        if getattr(record, "call_id", None) is None:
            call = call_id_for(message)
            record.call_id = mask(call) if call is not None else None
        return True


def _utc(created: float, msecs: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ms), level, logger, message, call_id, [exception]."""

    def __init__(self, tag: str = "") -> None:
        super().__init__()
        #: Appended to the logger's name: ``[inference]`` in the inference process.
        self._tag = tag

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        # Set by LogFilter; a formatter used without it finds the call itself.
        call = record.call_id if hasattr(record, "call_id") else call_id_for(message)
        entry: dict[str, object] = {
            "time": _utc(record.created, record.msecs),
            "level": record.levelname.lower(),
            "logger": record.name + self._tag,
            "message": message,
            "call_id": call,
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


# -- setup --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LogSetup:
    """How a process logs (picklable: the inference process is started with it)."""

    level: str = "info"
    format: LogFormat = "text"
    #: Values never to be written (:func:`configured_secrets`); kept out of reprs.
    secrets: tuple[str, ...] = field(default=(), repr=False)


def configured_secrets(settings: Settings) -> tuple[str, ...]:
    """The secret values the settings lead to: the API token, the webhook signing secret, the trunk
    password, the tool webhooks' header values and the LLM server's key (each read from where the
    settings say; unset ones are skipped, start-up reports those that are required)."""
    from .config import ConfigError

    names = [settings.api.token_env]
    if settings.webhooks is not None:
        names.append(settings.webhooks.secret_env)
    for tool in settings.tools:
        names.extend(tool.headers.values())
    openai = settings.llm.openai
    if openai is not None and openai.api_key_env:
        names.append(openai.api_key_env)
    values = [os.environ.get(name) for name in names]
    if settings.trunk is not None:
        with contextlib.suppress(ConfigError):
            values.append(settings.trunk.resolved_password())
    return tuple(sorted({value for value in values if value}))


def log_setup(settings: Settings) -> LogSetup:
    """``log_level``, ``log_format`` and the secrets of ``settings``."""
    return LogSetup(settings.log_level, settings.log_format, configured_secrets(settings))


def install_logging(setup: LogSetup, *, process: str | None = None) -> None:
    """Log to stderr as ``setup`` says, masked; ``process`` tags the lines (``inference``).

    Like :func:`logging.basicConfig`, nothing changes when the root logger has handlers already (a
    test harness's). Warnings and uncaught exceptions then go through the same handler, so a JSON
    log stays JSON and a traceback is masked like any line.
    """
    tag = f"[{process}]" if process else ""
    handler = logging.StreamHandler(sys.stderr)
    if setup.format == "json":
        handler.setFormatter(JsonFormatter(tag))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s %(name)s{tag}: %(message)s"))
    handler.addFilter(LogFilter(LogMasker(setup.secrets)))
    logging.basicConfig(level=setup.level.upper(), handlers=[handler])
    if handler not in logging.getLogger().handlers:
        return
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(kind: type[BaseException], value: BaseException, traceback: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, traceback)
        return
    logging.getLogger("sipagent").critical("uncaught exception", exc_info=(kind, value, traceback))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or issubclass(args.exc_type, SystemExit):
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("sipagent").critical(
        "uncaught exception in thread %s", name, exc_info=(args.exc_type, args.exc_value, args.exc_traceback)
    )
