"""The conversation engine: one call's turn-taking, replies, barge-in and history, sans-IO.

Like aioquic's ``QuicConnection``, it never reads a clock, sleeps, opens a socket or starts a
thread: every input comes with its time ``now`` and every method returns the commands to carry out
(:mod:`.commands`, :mod:`sipagent.voice.jobs`), in order. A runner (``sipagent/net/conversation.py``)
feeds it the call's 20 ms ticks and the models' results, carries out its commands, and arms a timer
for :meth:`Conversation.next_deadline`. Tests step it by hand on virtual time.

Data flow::

    Frame ─► Listener (VAD, echo guard, turn detector, arrival watch) ─► turn events
        PauseStarted  ─► a speculative Reply: Transcribe now, Generate on its transcript, Synthesize
                         each chunk — all before the caller's turn is known to be over
        CallerResumed ─► cancel the speculation (CancelJob for its jobs)
        EndOfTurn     ─► commit the speculation (or start a committed reply): it may play
        caller voice over the agent ─► hold (FlushOutput; the place is kept) ─► resume or BargeIn
        BargeIn       ─► stop the reply (FlushOutput, CancelJob); the history keeps what was heard
    results ─► the Reply they belong to ─► more jobs, or audio for its Playback
    each tick ─► PlayFrames from the speaking reply, two frames ahead of the pacer

The history is what the caller actually heard: a caller turn enters it once its reply is committed,
the agent's words once they have played (cut to the words heard when interrupted). A cancelled
speculation leaves no trace. Interruption has priority: a barge-in flushes the line and cancels the
reply's jobs in the same tick, before anything else that tick produces.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable

import numpy as np

from ...rtp.frames import FRAME_SECONDS, Pcm
from ..jobs import (
    JobFailed,
    JobResult,
    PredictTurnEnd,
    Synthesized,
    TextDone,
    TextPiece,
    ToolCallRequested,
    Transcribe,
    Transcribed,
    TurnEndPredicted,
)
from ..llm import Turn
from ..turns import BargeIn, CallerResumed, EndOfTurn, PauseStarted, TurnEvent, TurnState
from ..vad import Vad
from .acting import Acting
from .actions import ToolDesk
from .commands import CancelJob, Command, EndCall, FlushOutput, Frame, PlayFrames, TurnFinished
from .config import ConversationConfig
from .keypad import Keypad
from .listener import Listener
from .record import Outcome, TurnRecord
from .reply import Reply, ReplyState

#: Outbound frames quieter than this peak are not the agent's voice (the pacer's silence fill).
VOICED_PEAK = 200
_OUTCOMES = {
    ReplyState.DONE: Outcome.ANSWERED,
    ReplyState.INTERRUPTED: Outcome.INTERRUPTED,
    ReplyState.UNANSWERED: Outcome.UNANSWERED,
    ReplyState.FAILED: Outcome.FAILED,
}


def _voiced(samples: Pcm) -> bool:
    return int(np.abs(samples).max()) >= VOICED_PEAK


class Conversation(Acting):
    """One call's conversation (see the module docstring)."""

    def __init__(
        self, config: ConversationConfig | None = None, *, key: int = 1, vad: Callable[[], Vad] | None = None
    ) -> None:
        """``key`` names the call to model backends that keep per-call state (a KV cache); ``vad``
        makes the voice detectors (default: WebRTC VAD, see :class:`.listener.Listener`)."""
        self.config = config or ConversationConfig()
        self.key = key
        self.listener = Listener(self.config, vad)
        #: What was said, as the caller heard it.
        self.history: list[Turn] = []
        #: Every finished turn, in order.
        self.records: list[TurnRecord] = []
        self.closed = False
        self._job_ids = itertools.count(1)
        self._owners: dict[int, Reply] = {}
        self._speculation: Reply | None = None
        self._speaking: Reply | None = None
        #: Fixed texts waiting for the line (said after the reply being played).
        self._waiting: deque[Reply] = deque()
        #: The end-of-turn model's job for the current pause, and its last verdict.
        self._turn_end_job: int | None = None
        self._turn_complete: float | None = None
        #: Frames in the pacer right now (the tick's count, plus what this tick queued).
        self._queued = 0
        self._hold_frames = max(1, round(self.config.hold_after_ms / 1000 / FRAME_SECONDS))
        self._hold_s = self._hold_frames * FRAME_SECONDS
        self._out: list[Command] = []
        #: The model's tool calls, and the caller's keys (``actions.py``, ``keypad.py``).
        self.tools = ToolDesk(self.config)
        self.keypad = Keypad(dict(self.config.keys), self.config.dtmf_timeout_s)
        self._now = 0.0

    # -- inputs ----------------------------------------------------------------------------------
    def start(self, now: float) -> list[Command]:
        """The call was answered: say the greeting, if any."""
        if self.config.greeting and not self.closed:
            self._say(self.config.greeting, now, None)
        return self._take()

    def say(
        self, text: str, now: float, *, hang_up_after: str | None = None, interrupt: bool = False
    ) -> list[Command]:
        """Speak ``text`` (from outside the call), after whatever the agent is saying now, or at once
        cutting it short (``interrupt``: the cut reply is recorded as interrupted, what waits after
        it still follows); with ``hang_up_after``, end the call once it has been said (or cut short)."""
        if not self.closed:
            if interrupt and self._speaking is not None:
                self._interrupt(self._speaking)
                if self._speaking is not None:  # the next waiting text: it goes after the new one
                    self._waiting.appendleft(self._speaking)
                    self._speaking = None
            self._say(text, now, hang_up_after)
        return self._take()

    def on_frame(self, frame: Frame, now: float) -> list[Command]:
        """One 20 ms tick of the call at tick time ``now``."""
        if self.closed:
            return []
        self._now = now
        self._queued = frame.queued_output
        self.listener.note_outbound(frame.outbound, now)
        speaking = self._speaking
        if speaking is not None:
            speaking.playback.sync_sent(frame.queued_output)
            out = frame.outbound
            record = speaking.record
            if (
                out is not None
                and record.first_voiced_out_at is None
                and int(np.abs(out).max()) >= VOICED_PEAK
            ):
                record.voiced_out(now)
        if self.config.listen:
            agent_on = speaking is not None and speaking.playback.playing
            watch = speaking is not None and not speaking.playback.done
            for event in self.listener.hear(
                frame.inbound, now, agent_on=agent_on, newest=frame.newest_inbound, watch=watch
            ):
                self._on_turn_event(event, now)
            self._hold_or_resume(now)
        self._feed(now)
        return self._take()

    def on_result(self, result: JobResult, now: float) -> list[Command]:
        """A model job's result (ignored if the job is no longer wanted)."""
        if result.job == self._turn_end_job and not self.closed:
            self._turn_end_job = None
            if isinstance(result, TurnEndPredicted):
                self._turn_end_predicted(result.probability)
            return self._take()
        reply = self._owners.get(result.job)
        if reply is None or self.closed:
            return []
        self._now = now
        if not isinstance(result, TextPiece | ToolCallRequested):
            del self._owners[result.job]
            reply.deadlines.pop(result.job, None)
        if isinstance(result, Transcribed):
            self._transcribed(reply, result, now)
        elif isinstance(result, TextPiece):
            reply.deadlines[result.job] = now + self.config.job_timeout_s
            reply.add_text(result.text, now)
        elif isinstance(result, ToolCallRequested):
            reply.tool_calls.append(result.call)
            if reply.committed:
                self._out.extend(self.tools.run(reply, result.call, now))
        elif isinstance(result, TextDone):
            reply.end_text(now)
        elif isinstance(result, Synthesized):
            reply.add_audio(result.audio, now)
        elif isinstance(result, JobFailed):
            self._failed(reply, result.job, result.reason, now)
        self._advance(reply, now)
        return self._take()

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must run next (a job's answer is overdue then), or None."""
        replies = {id(reply): reply for reply in self._owners.values()}.values()
        deadlines = [at for reply in replies for at in reply.deadlines.values()]
        deadlines += [at for at in (self.tools.filler_at, self.keypad.deadline) if at is not None]
        return min(deadlines, default=None)

    def handle_timer(self, now: float) -> list[Command]:
        """Give up the jobs whose answer is overdue: their replies fail (or play what they have); say
        the filler while a tool is slow; end a key entry whose time is up."""
        self._now = now
        if self.tools.filler_due(now, speaking=self.speaking):
            self._say(self.config.filler, now, None).filler = True  # kept out of the history
        self._keyed(self.keypad.expire(now), now)
        for job, reply in list(self._owners.items()):
            deadline = reply.deadlines.get(job)
            if deadline is not None and deadline <= now and job in self._owners:
                del self._owners[job]
                self._out.append(CancelJob(job))
                self._failed(reply, job, f"no answer from the models in {self.config.job_timeout_s:g} s", now)
                self._advance(reply, now)
        return self._take()

    def close(self, now: float) -> list[Command]:
        """The call ended: cancel every job. A reply the caller had started to hear, or a caller turn
        already transcribed, is recorded as interrupted."""
        if self.closed:
            return []
        self._cancel_speculation()
        self._forget_turn_end()
        speaking = self._speaking
        if speaking is not None and not speaking.final:
            self._stop(speaking, "interrupt")
            if speaking.record.first_voiced_out_at is not None or speaking.in_history:
                self._finish(speaking)
        for reply in self._waiting:
            self._stop(reply, "interrupt")
        self._waiting.clear()
        self.tools.forget()
        self.closed = True
        self.listener.close()
        return self._take()

    # -- state -----------------------------------------------------------------------------------
    @property
    def speaking(self) -> bool:
        """A committed reply is being prepared or played."""
        return self._speaking is not None or bool(self._waiting)

    @property
    def watching_arrivals(self) -> bool:
        """A reply is on: give :class:`Frame` the newest arrived caller frame (for the hold)."""
        return self._speaking is not None and not self._speaking.playback.done

    @property
    def busy(self) -> bool:
        """Model jobs are out."""
        return bool(self._owners) or self._turn_end_job is not None

    # -- turn events -----------------------------------------------------------------------------
    def _on_turn_event(self, event: TurnEvent, now: float) -> None:
        if isinstance(event, BargeIn):
            self._barge_in(now)
        elif isinstance(event, PauseStarted):
            self._cancel_speculation()
            self._speculation = self._new_answer(now, speculative=True)
            self._ask_turn_end()
        elif isinstance(event, CallerResumed):
            self._cancel_speculation()
            self._forget_turn_end()
        elif isinstance(event, EndOfTurn):
            self._end_of_turn(event, now)

    def _ask_turn_end(self) -> None:
        if self.config.predict_turn_end:
            self._forget_turn_end()
            self._turn_end_job = job = next(self._job_ids)
            self._out.append(PredictTurnEnd(job, self.listener.turn_audio()))

    def _forget_turn_end(self) -> None:
        if self._turn_end_job is not None:
            self._out.append(CancelJob(self._turn_end_job))
            self._turn_end_job = None
        self._turn_complete = None

    def _turn_end_predicted(self, probability: float) -> None:
        """The model's verdict on the words so far sets how long this pause may last."""
        config = self.config
        self._turn_complete = probability
        if probability >= config.turn_complete_threshold:
            wait = config.end_of_turn_complete_ms or config.turn.end_of_turn_ms
        else:
            wait = config.end_of_turn_incomplete_ms
        self.listener.turns.set_end_of_turn(wait)

    def _end_of_turn(self, event: EndOfTurn, now: float) -> None:
        listener = self.listener
        listener.end_turn()
        reply, self._speculation = self._speculation, None
        if reply is None:
            reply = self._new_answer(now, speculative=False)
        record = reply.record
        record.end_of_turn_wait_ms = (event.at - event.last_voiced_at) * 1000
        record.last_voiced_at = event.last_voiced_at
        record.last_voiced_rtp_ts = listener.last_voiced_ts
        record.speech_end_at, record.speech_end_rtp_ts = listener.speech_end(event.last_voiced_at)
        record.turn_complete_probability = self._turn_complete
        self._forget_turn_end()
        previous = self._speaking
        if previous is not None:
            self._interrupt(previous)  # the caller has moved on
        reply.committed = True
        self._speaking = reply
        self._enter_history(reply)
        for call in reply.tool_calls:  # asked for while it was a speculation: run now it counts
            self._out.extend(self.tools.run(reply, call, now))
        self._advance(reply, now)

    def _barge_in(self, now: float) -> None:
        speaking = self._speaking
        if speaking is None or speaking.playback.done:
            return
        if not speaking.playback.held:
            speaking.record.stopped(now, self.listener.run_start)
        self._interrupt(speaking)

    def _hold_or_resume(self, now: float) -> None:
        speaking = self._speaking
        if speaking is None or speaking.playback.done:
            return
        listener, playback = self.listener, speaking.playback
        arrivals = listener.arrivals
        if not playback.held and (
            listener.voice_run >= self._hold_frames or arrivals.voiced_s >= self._hold_s
        ):
            playback.hold(self._flush())
            speaking.record.holds += 1
            # The voice's onset as the stream that saw it first saw it.
            speaking.record.stopped(now, listener.run_start if listener.voice_run else arrivals.onset)
        elif (
            playback.held
            and listener.turns.state is TurnState.LISTENING
            and listener.voice_run == 0
            and not arrivals.voiced_s
        ):
            playback.resume()  # it was a blip, a cough or a short "mm": carry on

    # -- replies ---------------------------------------------------------------------------------
    def _new_answer(self, now: float, *, speculative: bool) -> Reply:
        reply = Reply(TurnRecord(turn=0, speculative=speculative), self.config, now=now)
        job = reply.stt_job = self._new_job(reply, now)
        reply.stt_started = now
        self._out.append(Transcribe(job, self.listener.turn_audio()))
        return reply

    def _say(self, text: str, now: float, hang_up_after: str | None) -> Reply:
        reply = Reply(
            TurnRecord(turn=0, scripted=True), self.config, now=now, script=text, hang_up_after=hang_up_after
        )
        reply.committed = True
        if self._speaking is None:
            self._speaking = reply
        else:
            self._waiting.append(reply)
        self._advance(reply, now)
        return reply

    def _new_job(self, reply: Reply, now: float) -> int:
        job = next(self._job_ids)
        self._owners[job] = reply
        reply.deadlines[job] = now + self.config.job_timeout_s
        return job

    def _transcribed(self, reply: Reply, result: Transcribed, now: float) -> None:
        transcript = result.transcript
        reply.stt_job = None
        assert reply.stt_started is not None
        reply.record.stt_ms = (now - reply.stt_started) * 1000
        reply.record.transcript = transcript.text
        if transcript.likely_silence:
            reply.fire("heard_nothing")
            return
        reply.transcript = transcript.text
        reply.fire("transcribed")
        self._enter_history(reply)
        job = reply.llm_job = self._new_job(reply, now)
        reply.llm_started = now
        self._out.append(self._generate(job, self._turns_for(reply)))

    def _turns_for(self, reply: Reply) -> tuple[Turn, ...]:
        """The history a reply answers: what was heard, then (for a speculation) the caller's words."""
        turns = list(self.history)
        if not reply.in_history:
            other = self._speaking
            heard = other.playback.heard_text() if other is not None and other is not reply else ""
            if heard:
                turns.append(Turn("assistant", heard))
            assert reply.transcript is not None
            turns.append(Turn("user", reply.transcript))
        return tuple(turns)

    def _enter_history(self, reply: Reply) -> None:
        if reply.committed and not reply.in_history and reply.transcript:
            self.history.append(Turn("user", reply.transcript))
            reply.in_history = True

    def _failed(self, reply: Reply, job: int, reason: str, now: float) -> None:
        """Job ``job`` of ``reply`` failed (or timed out): say what can still be said, else give up."""
        reply.record.error = reason
        if reply.final:
            return
        if job == reply.llm_job:
            reply.llm_job = None
            if reply.has_something_to_say():
                reply.fire("generated")  # its finished clauses still play; a half sentence does not
                return
        elif reply.tts_job is not None and job == reply.tts_job[0]:
            reply.drop_text()
            if reply.playback.frames_total:
                self._cancel_jobs(reply)
                if reply.state is ReplyState.GENERATING:
                    reply.fire("generated")
                return
        self._cancel_jobs(reply)
        reply.fire("fail")

    def _advance(self, reply: Reply, now: float) -> None:
        """Move ``reply`` along after anything changed: its next TTS job, the end of its audio, the
        end of its playing; a committed reply that is over is reported."""
        synthesize = reply.next_synthesis(lambda: self._new_job(reply, now), now)
        if synthesize is not None:
            self._out.append(synthesize)
        if reply.audio_complete:
            reply.fire("synthesized")
        if reply.state is ReplyState.PLAYING and reply.committed and reply.playback.done:
            reply.fire("played")
        if reply.final and reply.committed and (reply is self._speaking or reply in self._waiting):
            self._finish(reply)

    def _cancel_speculation(self) -> None:
        reply, self._speculation = self._speculation, None
        if reply is not None and not reply.final:
            self._stop(reply, "cancel")

    def _interrupt(self, reply: Reply) -> None:
        """Stop the reply on the line now: flush the pacer, cancel its jobs, report it."""
        if reply is self._speaking:
            self._flush()
        if not reply.final:
            self._stop(reply, "interrupt")
        self._finish(reply)

    def _stop(self, reply: Reply, event: str) -> None:
        self._cancel_jobs(reply)
        reply.fire(event)

    def _cancel_jobs(self, reply: Reply) -> None:
        for job in reply.jobs():
            if self._owners.pop(job, None) is not None:
                self._out.append(CancelJob(job))
        reply.stt_job = reply.llm_job = None
        reply.drop_text()

    def _finish(self, reply: Reply) -> None:
        """Report a committed reply that is over, and let the next waiting one have the line."""
        if reply is self._speaking:
            self._speaking = self._waiting.popleft() if self._waiting else None
        elif reply in self._waiting:
            self._waiting.remove(reply)
        record = reply.record
        record.turn = len(self.records) + 1
        record.reply = reply.playback.heard_text()
        record.said = reply.playback.full_text()
        record.outcome = _OUTCOMES.get(reply.state, Outcome.INTERRUPTED)
        if not reply.filler:
            self.tools.enter_history(reply, self.history, record.reply)
        self.records.append(record)
        self._out.append(TurnFinished(record))
        if reply.hang_up_after is not None:
            if reply.script is None and not record.reply:  # end_call without words: say goodbye
                self._say(self.config.goodbye, self._now, reply.hang_up_after)
            else:
                self._out.append(EndCall(reply.hang_up_after))
        elif self.tools.follow_up_due(reply):
            self._follow_up(self._now)

    # -- the line --------------------------------------------------------------------------------
    def _feed(self, now: float) -> None:
        speaking = self._speaking
        if speaking is None:
            return
        frames = speaking.playback.take(self._queued)
        if frames:
            self._out.append(PlayFrames(tuple(frames)))
            self._queued += len(frames)
        self._advance(speaking, now)

    def _flush(self) -> int:
        """Drop what the pacer holds (this tick); returns how many frames that was."""
        flushed, self._queued = self._queued, 0
        self._out.append(FlushOutput())
        return flushed

    def _take(self) -> list[Command]:
        out, self._out = self._out, []
        return out


__all__ = ["Conversation"]
