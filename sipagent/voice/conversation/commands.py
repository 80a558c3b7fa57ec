"""What goes into the conversation engine besides job results, and what comes out of it.

In: one :class:`Frame` per 20 ms tick of the call (what the caller's stream played, what we sent,
what is queued, the newest frame that has arrived). Job results come in as the types of
:mod:`sipagent.voice.jobs`.

Out, in the order they must be carried out:

* the jobs of :mod:`sipagent.voice.jobs` (run them on the models) and :class:`CancelJob`;
* :class:`PlayFrames` (hand them to the call's pacer now) and :class:`FlushOutput` (drop what the
  pacer still holds, this tick: a hold or a barge-in);
* :class:`EndCall` (hang up: the agent said its last words);
* :class:`TurnFinished` (a report: log it, store it; nothing to do for the media);
* what the agent does beyond speaking, from its tool calls and the caller's keys:
  :class:`RunTool` (a webhook), :class:`TransferCall`, :class:`SendDigits`.

Frozen dataclasses, like h11's events: the runner matches on their type.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...rtp.frames import AudioFrame, Pcm
from ..jobs import Job
from ..llm import ToolCall
from .record import TurnRecord


@dataclass(frozen=True, slots=True, eq=False)
class Frame:
    """One tick of the call, as the media engine saw it."""

    #: The caller's frame the jitter buffer played this tick.
    inbound: AudioFrame
    #: The samples sent this tick (None: nothing, the pacer's silence fill).
    outbound: Pcm | None
    #: Frames still queued in the pacer after this tick's packet left.
    queued_output: int
    #: The newest caller frame that has arrived but not played yet (None: all has played).
    newest_inbound: AudioFrame | None = None


@dataclass(frozen=True, slots=True)
class CancelJob:
    """Stop job ``job`` (its late results will be ignored)."""

    job: int


@dataclass(frozen=True, slots=True, eq=False)
class PlayFrames:
    """Queue these 20 ms frames of the agent's voice in the pacer, in order."""

    frames: tuple[Pcm, ...]


@dataclass(frozen=True, slots=True)
class FlushOutput:
    """Drop every frame still queued in the pacer (the line goes quiet from the next tick)."""


@dataclass(frozen=True, slots=True)
class EndCall:
    """Hang up: the conversation is over (``reason`` for the logs and the call's record)."""

    reason: str


@dataclass(frozen=True, slots=True)
class TurnFinished:
    """A turn is over (answered, interrupted, unanswered or failed); its record is final."""

    record: TurnRecord


@dataclass(frozen=True, slots=True)
class RunTool:
    """Run a tool the model called (one of the operator's webhooks) and answer with
    :meth:`~sipagent.voice.conversation.Conversation.on_tool_result` and the call's ``id``. The
    arguments are the model's JSON text: the runner checks them against the tool's schema."""

    call: ToolCall


@dataclass(frozen=True, slots=True)
class TransferCall:
    """Transfer the caller to ``target``, a name among the route's transfer targets (never a number
    the model made up); answer with :meth:`Conversation.on_transfer_failed` if it does not happen."""

    target: str


@dataclass(frozen=True, slots=True)
class SendDigits:
    """Send ``digits`` (0-9 * # A-D) to the far end as RFC 4733 events (an IVR to navigate)."""

    digits: str


Command = (
    Job | CancelJob | PlayFrames | FlushOutput | EndCall | TurnFinished | RunTool | TransferCall | SendDigits
)

__all__ = [
    "CancelJob",
    "Command",
    "EndCall",
    "FlushOutput",
    "Frame",
    "PlayFrames",
    "RunTool",
    "SendDigits",
    "TransferCall",
    "TurnFinished",
]
