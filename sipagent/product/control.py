"""What a running server lets a script do with its calls: the interface the control API drives.

The HTTP API (:mod:`sipagent.api`) knows calls only through :class:`CallControl`; the server
implements it. Requests and answers are small frozen dataclasses; a request the server cannot carry
out raises a :class:`ControlError` naming the field and the problem, which the API answers with its
``status`` (4xx) and the CLI prints in one line.

Events stream as :class:`CallEvent` (``type`` is one of :data:`EVENT_TYPES`) to every subscriber,
all calls or one, through a bounded queue each: a subscriber that stops reading loses its oldest
events (and is told so by a ``dropped`` count), never the call's pace.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ..errors import SipAgentError

CallMode = Literal["notify", "conversation"]
AmdPolicy = Literal["hangup", "leave-message", "continue"]
Direction = Literal["inbound", "outbound"]
#: ringing: set up, not answered yet; answered: media flows; ended: over (see ``outcome``).
CallState = Literal["ringing", "answered", "ended"]
#: How a call turned out (set when it ends; an answered call that ended is ``answered``).
CallOutcome = Literal["answered", "busy", "no-answer", "rejected", "failed"]

EVENT_TYPES = (
    "call_started",
    "ringing",
    "answered",
    "transcript",
    "agent_text",
    "dtmf",
    "turn_latency",
    "barge_in",
    "tool_call",
    "transfer",
    "amd",
    "beep",
    "call_ended",
)

#: Longest text ``speak`` accepts (characters): about a minute of speech.
MAX_SPEAK_CHARS = 1000
#: Characters ``send_dtmf`` accepts (RFC 4733 events 0-15).
DTMF_CHARACTERS = frozenset("0123456789*#ABCD")


class ControlError(SipAgentError):
    """A request the server cannot carry out: ``field`` names what was wrong (None: the request as
    a whole), ``status`` is the HTTP status that answers it."""

    def __init__(self, message: str, *, field: str | None = None, status: int = 422) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


class UnknownCall(ControlError):
    """No call with this id (404)."""

    def __init__(self, call_id: str) -> None:
        super().__init__(f"no call {call_id!r}", field="call_id", status=404)
        self.call_id = call_id


class CallLimitReached(ControlError):
    """An outbound call beyond ``limits.max_calls`` (429; never queued silently)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"limits.max_calls ({limit}) calls are up; try again when one ends", status=429)


@dataclass(frozen=True)
class PlaceCall:
    """An outbound call to place: the same options as ``sipagent call``."""

    #: An E.164 number (``+15551234567``: through the trunk) or a SIP URI (dialled as given).
    target: str
    mode: CallMode = "conversation"
    #: notify: what to say once answered (then hang up).
    message: str | None = None
    #: notify: how many times to say it.
    repeat: int = 1
    #: conversation: the job, added to the route's instructions.
    task: str | None = None
    #: Caller ID (E.164) instead of ``trunk.caller_id``.
    from_number: str | None = None
    #: Hang up after this many seconds answered (None: limits.max_call_duration).
    max_duration: float | None = None
    #: Give up ringing after this many seconds (None: limits.ring_timeout).
    ring_timeout: float | None = None
    #: Answering-machine detection from the 200 OK (None: off): ``hangup`` on a machine,
    #: ``leave-message`` (notify: say the message after the beep), ``continue`` (only report it).
    amd: AmdPolicy | None = None


@dataclass(frozen=True)
class Turn:
    """One exchange of a call, as the caller experienced it."""

    caller: str
    agent: str
    interrupted: bool = False
    #: From the end of the caller's speech to the agent's first voiced packet (ms), if measured.
    latency_ms: float | None = None


@dataclass(frozen=True)
class CallInfo:
    """A call's status (numbers masked except their last 4 digits)."""

    id: str
    direction: Direction
    state: CallState
    #: The caller and callee as E.164 numbers or SIP URIs, masked.
    from_: str
    to: str
    route: str | None
    mode: str
    started_at: float
    answered_at: float | None = None
    ended_at: float | None = None
    #: Why it ended: "caller hung up", "agent ended the call", "max duration", "busy"…
    end_reason: str | None = None
    #: The final SIP status of the INVITE (200, 486, 487, 603…), when there was one.
    sip_status: int | None = None
    outcome: CallOutcome | None = None
    turns: tuple[Turn, ...] = ()
    #: The call's recording (a stereo WAV's path), from its answer; None: not recorded.
    recording: str | None = None

    @property
    def duration(self) -> float | None:
        """Seconds answered (None: never answered)."""
        if self.answered_at is None:
            return None
        return (self.ended_at if self.ended_at is not None else time.time()) - self.answered_at

    def as_json(self) -> dict[str, Any]:
        """The JSON object the API and ``--json`` print."""
        return {
            "id": self.id,
            "direction": self.direction,
            "state": self.state,
            "from": self.from_,
            "to": self.to,
            "route": self.route,
            "mode": self.mode,
            "started_at": self.started_at,
            "answered_at": self.answered_at,
            "ended_at": self.ended_at,
            "duration": None if self.duration is None else round(self.duration, 3),
            "end_reason": self.end_reason,
            "sip_status": self.sip_status,
            "outcome": self.outcome,
            "turns": [
                {
                    "caller": t.caller,
                    "agent": t.agent,
                    "interrupted": t.interrupted,
                    "latency_ms": t.latency_ms,
                }
                for t in self.turns
            ],
            "recording": self.recording,
        }


@dataclass(frozen=True)
class CallEvent:
    """Something that happened in a call (``type`` in :data:`EVENT_TYPES`), at wall time ``at``."""

    type: str
    call_id: str
    at: float
    data: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"type": self.type, "call_id": self.call_id, "at": self.at, **self.data}


class CallControl(Protocol):
    """The running server, as the control API sees it. Every method runs on the server's loop."""

    async def place_call(self, request: PlaceCall) -> CallInfo:
        """Start an outbound call and return at once (state ``ringing``); raises ControlError
        (field ``target``, ``from_number``, ``message``, ``task``…) or CallLimitReached."""
        ...

    def list_calls(self) -> list[CallInfo]:
        """Calls in progress and the most recent ended ones, newest first."""
        ...

    def get_call(self, call_id: str) -> CallInfo:
        """One call; raises UnknownCall."""
        ...

    def speak(self, call_id: str, text: str, *, interrupt: bool = False) -> None:
        """Say ``text`` in the call: after the current sentence, or at once cutting it (``interrupt``).
        Raises UnknownCall, or ControlError when the call is not answered or has no agent."""
        ...

    def send_dtmf(self, call_id: str, digits: str) -> None:
        """Send ``digits`` (0-9 * # A-D) as RFC 4733 events; raises UnknownCall or ControlError."""
        ...

    def hang_up(self, call_id: str) -> None:
        """End the call (BYE, or CANCEL while it rings); raises UnknownCall."""
        ...

    def subscribe(self, call_id: str | None = None) -> AsyncIterator[CallEvent]:
        """Events from now on, of every call or of one (which must exist: UnknownCall), until the
        iterator is closed; a subscription to one call ends after its ``call_ended``."""
        ...
