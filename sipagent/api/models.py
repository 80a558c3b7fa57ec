"""The control API's request and response bodies, as pydantic models (and so its OpenAPI schemas).

Requests are checked here, field by field, before the server sees them: a bad one is answered 422
naming the field. What only the server can judge (is ``target`` a number the trunk can dial, is
the call answered) it answers with a :class:`~sipagent.product.control.ControlError`.

The response models document :meth:`CallInfo.as_json` and :meth:`CallEvent.as_json`; the routes
send those dicts as they are (the server's JSON is the contract), and the tests check that each
model accepts exactly what they produce.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..product.control import DTMF_CHARACTERS, EVENT_TYPES, MAX_SPEAK_CHARS, PlaceCall

#: Longest DTMF string one request sends (at about 10 digits a second, 3 s of tones).
MAX_DTMF_DIGITS = 32
#: Longest notify message and task: a message is spoken ``repeat`` times, a task joins the prompt.
MAX_MESSAGE_CHARS = MAX_SPEAK_CHARS
MAX_TASK_CHARS = 2000


class _Request(BaseModel):
    # A misspelt field ("mesage") is an error naming it, not a silently ignored key.
    model_config = ConfigDict(extra="forbid")


class PlaceCallRequest(_Request):
    """An outbound call to place (``sipagent call``'s options)."""

    target: str = Field(
        min_length=1,
        max_length=256,
        description="An E.164 number (`+15551234567`, dialled through the trunk) or a SIP URI (as given).",
        examples=["+15551234567"],
    )
    mode: Literal["notify", "conversation"] = Field(
        "conversation",
        description="`notify`: say `message` once answered, then hang up; `conversation`: the agent talks.",
    )
    message: str | None = Field(
        None, min_length=1, max_length=MAX_MESSAGE_CHARS, description="notify: what to say (required)."
    )
    repeat: int = Field(1, ge=1, le=5, description="notify: how many times to say the message.")
    task: str | None = Field(
        None,
        min_length=1,
        max_length=MAX_TASK_CHARS,
        description="conversation: the job, added to the route's instructions (none: the route's alone).",
    )
    from_number: str | None = Field(
        None,
        alias="from",
        min_length=1,
        max_length=64,
        description="Caller ID (E.164) instead of the trunk's `caller_id`.",
    )
    max_duration: float | None = Field(
        None, gt=0, le=86400, description="Hang up after this many seconds answered (default: the limit)."
    )
    ring_timeout: float | None = Field(
        None, gt=0, le=600, description="Give up ringing after this many seconds (default: the limit)."
    )
    amd: Literal["hangup", "leave-message", "continue"] | None = Field(
        None,
        description="Answering-machine detection from the answer on: hang up on a machine, leave the "
        "notify message after the beep, or only report it (default: off).",
    )

    def to_control(self) -> PlaceCall:
        """The request the server's :meth:`CallControl.place_call` takes."""
        return PlaceCall(
            target=self.target,
            mode=self.mode,
            message=self.message,
            repeat=self.repeat,
            task=self.task,
            from_number=self.from_number,
            max_duration=self.max_duration,
            ring_timeout=self.ring_timeout,
            amd=self.amd,
        )


class SpeakRequest(_Request):
    """Text for the agent to say in an answered call."""

    text: str = Field(min_length=1, max_length=MAX_SPEAK_CHARS, description="What to say.")
    interrupt: bool = Field(
        False, description="Cut what the agent is saying (true) or speak after its current sentence."
    )

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("nothing to say: the text is blank")
        return value


class DtmfRequest(_Request):
    """Digits to send as RFC 4733 telephone events."""

    digits: str = Field(
        min_length=1,
        max_length=MAX_DTMF_DIGITS,
        description="Only 0-9, *, #, A-D.",
        examples=["1234#"],
    )

    @field_validator("digits")
    @classmethod
    def _dtmf_only(cls, value: str) -> str:
        bad = sorted({c for c in value if c not in DTMF_CHARACTERS})
        if bad:
            shown = ", ".join(repr(c) for c in bad)
            raise ValueError(f"only 0-9, *, #, A-D are DTMF digits, not {shown}")
        return value


class TurnModel(BaseModel):
    """One exchange of a call, as the caller experienced it."""

    model_config = ConfigDict(extra="forbid")

    caller: str = Field(description="What the caller said (transcribed).")
    agent: str = Field(description="What the agent said (what was heard of it when interrupted).")
    interrupted: bool = Field(description="The caller talked over the agent's reply.")
    latency_ms: float | None = Field(
        description="From the end of the caller's speech to the agent's first voiced packet."
    )


class CallInfoModel(BaseModel):
    """A call's status; numbers are masked but for their last 4 digits."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    id: str
    direction: Literal["inbound", "outbound"]
    state: Literal["ringing", "answered", "ended"] = Field(
        description="ringing: set up, not answered yet; answered: media flows; ended: see `outcome`."
    )
    from_: str = Field(alias="from", description="The caller (masked).")
    to: str = Field(description="The callee (masked).")
    route: str | None = Field(description="The route (agent) that handles the call.")
    mode: str
    started_at: float = Field(description="Unix time.")
    answered_at: float | None
    ended_at: float | None
    duration: float | None = Field(description="Seconds answered, so far or in all (null: never answered).")
    end_reason: str | None = Field(description='"caller hung up", "agent ended the call", "busy"…')
    sip_status: int | None = Field(description="The final SIP status of the INVITE (200, 486, 487…).")
    outcome: Literal["answered", "busy", "no-answer", "rejected", "failed"] | None = Field(
        description="How the call turned out (set when it ends)."
    )
    turns: list[TurnModel]
    recording: str | None = Field(
        None, description="The call's stereo WAV (caller left, agent right) from its answer; null: none."
    )


class CallListModel(BaseModel):
    """Calls in progress and the most recent ended ones, newest first."""

    calls: list[CallInfoModel]


class AcceptedModel(BaseModel):
    """The server took the request; what it does in the call shows in the events and the status."""

    call_id: str
    action: Literal["speak", "dtmf", "hangup"]


class HealthModel(BaseModel):
    """The server is up; ``calls`` is how many are in progress."""

    status: Literal["ok"]
    calls: int


class ErrorDetail(BaseModel):
    """What was wrong: ``field`` names it (dotted, as in the request), null for the request as a whole."""

    field: str | None
    message: str


class ErrorModel(BaseModel):
    """The one shape of every error body (4xx and 500)."""

    error: ErrorDetail


class CallEventModel(BaseModel):
    """One event, as a WebSocket text frame; fields beyond these depend on ``type``."""

    model_config = ConfigDict(extra="allow")

    type: Literal[EVENT_TYPES]  # type: ignore[valid-type]
    call_id: str
    at: float = Field(description="Unix time.")
