"""Prometheus metrics: what the server counts, as text for ``GET /metrics`` on the API port.

:class:`Metrics` owns its own ``CollectorRegistry`` (never prometheus_client's global one), so tests
and several servers in one process do not share counters, and nothing but these metrics is exported.
The server calls its small methods as things happen; :meth:`Metrics.render` is the body and
content type of the ``/metrics`` answer.

**No per-call labels, bounded label values.** A label value creates a time series for as long as the
process lives, so every label here takes values from a small set known at start-up:

* ``direction``: ``inbound``/``outbound``; ``outcome``: the call outcomes (``answered``, ``busy``,
  ``no-answer``, ``rejected``, ``failed``); ``stage``: ``stt``, ``llm_first_token``,
  ``tts_first_audio``; ``result`` of AMD: ``human``, ``machine``, ``uncertain``;
* ``tool``: the built-in tools and the tool names given at construction (the configured
  ``[[tools]]``); any other name (a model may invent one) is counted as ``other``;
* ``trunk``: the configured trunk names (given at construction, or first seen: the caller passes
  only configured names).

Any value outside its set is counted as ``other``. Times are exported in seconds (the Prometheus
convention); the methods take milliseconds, as the conversation measures them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

__all__ = ["BUILTIN_TOOL_NAMES", "Metrics", "TurnLike"]

BUILTIN_TOOL_NAMES = ("end_call", "transfer_call", "send_dtmf")
_DIRECTIONS = frozenset({"inbound", "outbound"})
_OUTCOMES = frozenset({"answered", "busy", "no-answer", "rejected", "failed"})
_AMD_RESULTS = frozenset({"human", "machine", "uncertain"})
_DELIVERY_RESULTS = frozenset({"delivered", "failed", "dropped"})
OTHER = "other"

#: Turn latency (end of the caller's speech to the reply's first voiced packet), seconds.
_TURN_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0)
#: One stage of a turn (STT, LLM first token, TTS first audio), seconds.
_STAGE_BUCKETS = (0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0)
#: RTP interarrival jitter (RFC 3550), seconds.
_JITTER_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2)


class TurnLike(Protocol):
    """What :meth:`Metrics.turn_record` reads of a finished turn
    (:class:`sipagent.voice.conversation.TurnRecord` fits)."""

    @property
    def latency_ms(self) -> float | None: ...
    @property
    def stt_ms(self) -> float | None: ...
    @property
    def llm_first_token_ms(self) -> float | None: ...
    @property
    def tts_first_audio_ms(self) -> float | None: ...


def _bounded(value: str, allowed: Iterable[str]) -> str:
    return value if value in allowed else OTHER


class Metrics:
    """The server's metrics (see the module docstring); one per server."""

    def __init__(self, *, tool_names: Iterable[str] = (), trunks: Iterable[str] = ()) -> None:
        """``tool_names``: the configured webhook tools (the built-ins are always known);
        ``trunks``: the configured trunk names (their registration gauge starts at 0)."""
        self.registry = CollectorRegistry(auto_describe=True)
        self._tools = frozenset((*BUILTIN_TOOL_NAMES, *tool_names))
        self._trunks = set(trunks)
        r = self.registry
        self.active_calls = Gauge("sipagent_active_calls", "Calls in progress.", registry=r)
        self.calls_started = Counter(
            "sipagent_calls_started", "Calls begun, by direction.", ["direction"], registry=r
        )
        self.calls_ended = Counter(
            "sipagent_calls_ended",
            "Calls over, by direction and outcome.",
            ["direction", "outcome"],
            registry=r,
        )
        self.turns = Counter(
            "sipagent_turns",
            "Finished turns, by whether the caller cut the reply.",
            ["interrupted"],
            registry=r,
        )
        self.turn_latency = Histogram(
            "sipagent_turn_latency_seconds",
            "From the end of the caller's speech to the reply's first voiced packet.",
            buckets=_TURN_BUCKETS,
            registry=r,
        )
        self.turn_stage = Histogram(
            "sipagent_turn_stage_seconds",
            "Time to the first output of each stage of a turn.",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.barge_ins = Counter("sipagent_barge_ins", "Replies stopped by the caller's voice.", registry=r)
        self.resumes = Counter(
            "sipagent_false_interruption_resumes",
            "Replies held for caller voice and resumed (a blip, a cough, a backchannel).",
            registry=r,
        )
        self.amd_results = Counter(
            "sipagent_amd_results", "Answering-machine detection results.", ["result"], registry=r
        )
        self.tool_calls = Counter(
            "sipagent_tool_calls", "Tool calls by tool and result.", ["tool", "result"], registry=r
        )
        self.registration_up = Gauge(
            "sipagent_registration_up",
            "1 while the trunk's registration holds, else 0.",
            ["trunk"],
            registry=r,
        )
        self.rtp_lost = Counter(
            "sipagent_rtp_packets_lost", "RTP packets the caller sent that never came.", registry=r
        )
        self.rtp_late = Counter(
            "sipagent_rtp_packets_late", "RTP packets that came too late to be played.", registry=r
        )
        self.rtp_jitter = Histogram(
            "sipagent_rtp_jitter_seconds",
            "RTP interarrival jitter as reported.",
            buckets=_JITTER_BUCKETS,
            registry=r,
        )
        self.inference_queue_depth = Gauge(
            "sipagent_inference_queue_depth", "Model jobs waiting in the inference process.", registry=r
        )
        self.webhook_deliveries = Counter(
            "sipagent_lifecycle_webhooks", "Lifecycle webhook events by final result.", ["result"], registry=r
        )
        for trunk in self._trunks:
            self.registration_up.labels(trunk=trunk).set(0)

    # -- what the server reports -----------------------------------------------------------------
    def call_started(self, direction: str) -> None:
        self.active_calls.inc()
        self.calls_started.labels(direction=_bounded(direction, _DIRECTIONS)).inc()

    def call_ended(self, direction: str, outcome: str) -> None:
        """Once per call that was :meth:`call_started`."""
        self.active_calls.dec()
        self.calls_ended.labels(
            direction=_bounded(direction, _DIRECTIONS), outcome=_bounded(outcome, _OUTCOMES)
        ).inc()

    def turn(
        self,
        *,
        wire_ms: float | None,
        stt_ms: float | None = None,
        llm_first_token_ms: float | None = None,
        tts_first_audio_ms: float | None = None,
        interrupted: bool = False,
    ) -> None:
        """A finished turn; a time that was not measured is None and not observed."""
        self.turns.labels(interrupted="true" if interrupted else "false").inc()
        if wire_ms is not None:
            self.turn_latency.observe(wire_ms / 1000)
        for stage, ms in (
            ("stt", stt_ms),
            ("llm_first_token", llm_first_token_ms),
            ("tts_first_audio", tts_first_audio_ms),
        ):
            if ms is not None:
                self.turn_stage.labels(stage=stage).observe(ms / 1000)

    def turn_record(self, record: TurnLike, *, interrupted: bool) -> None:
        """:meth:`turn` from a conversation's TurnRecord (``interrupted``: its outcome is INTERRUPTED)."""
        self.turn(
            wire_ms=record.latency_ms,
            stt_ms=record.stt_ms,
            llm_first_token_ms=record.llm_first_token_ms,
            tts_first_audio_ms=record.tts_first_audio_ms,
            interrupted=interrupted,
        )

    def barge_in(self) -> None:
        self.barge_ins.inc()

    def resume(self) -> None:
        """A held reply went on (the caller's voice was not a barge-in)."""
        self.resumes.inc()

    def amd(self, result: str) -> None:
        self.amd_results.labels(result=_bounded(result, _AMD_RESULTS)).inc()

    def tool_call(self, name: str, ok: bool) -> None:
        """A tool call; ``name`` outside the built-ins and configured tools is counted as ``other``."""
        self.tool_calls.labels(tool=_bounded(name, self._tools), result="ok" if ok else "error").inc()

    def registration(self, trunk: str, up: bool) -> None:
        """A configured trunk's registration state changed (or was confirmed)."""
        self._trunks.add(trunk)
        self.registration_up.labels(trunk=trunk).set(1 if up else 0)

    def rtp(self, lost: int = 0, late: int = 0, jitter_ms: float | None = None) -> None:
        """Since the last report of a stream: packets ``lost`` and ``late`` (increments; negative
        values, as RFC 3550's cumulative loss can go after duplicates, are ignored), and its current
        jitter."""
        if lost > 0:
            self.rtp_lost.inc(lost)
        if late > 0:
            self.rtp_late.inc(late)
        if jitter_ms is not None and jitter_ms >= 0:
            self.rtp_jitter.observe(jitter_ms / 1000)

    def inference_queue(self, depth: int) -> None:
        self.inference_queue_depth.set(depth)

    def webhook_delivery(self, result: str) -> None:
        """A lifecycle webhook's final result (the ``on_result`` hook of LifecycleWebhooks)."""
        self.webhook_deliveries.labels(result=_bounded(result, _DELIVERY_RESULTS)).inc()

    # -- what the API serves ---------------------------------------------------------------------
    def render(self) -> tuple[bytes, str]:
        """The body and content type of ``GET /metrics`` (Prometheus text format 0.0.4)."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
