"""The agent's reply on its way out: frames fed to the pacer just in time, and what was heard.

Pure, like the rest of ``voice/``'s decisions. The reply's audio is kept here, not in the pacer:
each tick tops the pacer up to :data:`LEAD_FRAMES` frames, so

* a *hold* (the caller may be starting to talk) silences the line at once and loses nothing: the
  frames the pacer still had are taken back and play again on *resume*;
* a *stop* (barge-in) drops the rest in the same tick;
* what the caller actually heard is known to the frame, and so to the word (the chat history
  keeps only that, :meth:`Playback.heard_text`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..rtp.frames import SAMPLES_PER_FRAME, Pcm

#: Frames kept queued in the pacer ahead of the tick: enough that the next packet never waits on the
#: event loop, few enough that a hold or stop is heard within two frames.
LEAD_FRAMES = 2


@dataclass
class _Chunk:
    """One synthesized piece of text and the frames it became."""

    text: str
    first_frame: int
    frames: int


class Playback:
    """One reply: chunks of text with their audio, a play position, hold and stop."""

    def __init__(self) -> None:
        self._frames: list[Pcm] = []
        self._chunks: list[_Chunk] = []
        self._next = 0  # the next frame to hand to the pacer
        self._confirmed = 0  # frames the pacer really sent (the caller heard them)
        self.held = False
        self.stopped = False
        self.finished_adding = False

    # -- filling ---------------------------------------------------------------------------------
    def add(self, text: str, audio: Pcm) -> int:
        """Append a chunk's 8 kHz audio (padded to whole frames); returns its frame count."""
        if self.stopped:
            return 0
        padded = -len(audio) % SAMPLES_PER_FRAME
        if padded:
            audio = np.concatenate([audio, np.zeros(padded, dtype=np.int16)])
        frames = [audio[i : i + SAMPLES_PER_FRAME] for i in range(0, len(audio), SAMPLES_PER_FRAME)]
        self._chunks.append(_Chunk(text, len(self._frames), len(frames)))
        self._frames.extend(frames)
        return len(frames)

    def finish(self) -> None:
        """No more chunks will come (the reply is complete or was cut)."""
        self.finished_adding = True

    # -- the tick --------------------------------------------------------------------------------
    def take(self, queued_in_pacer: int) -> list[Pcm]:
        """Frames to hand to the pacer now so it holds :data:`LEAD_FRAMES` (none when held or stopped)."""
        if self.held or self.stopped:
            return []
        want = max(0, LEAD_FRAMES - queued_in_pacer)
        out = self._frames[self._next : self._next + want]
        self._next += len(out)
        return out

    def sync_sent(self, queued_in_pacer: int) -> None:
        """The pacer still holds ``queued_in_pacer`` of the frames handed to it: the rest left.

        Counted from the queue rather than from each tick's outbound frame, so a stalled loop
        whose catch-up sent several packets in one tick (or skipped some) cannot leave frames
        unaccounted for, and the reply always ends.
        """
        self._confirmed = max(self._confirmed, min(self._next, self._next - queued_in_pacer))

    def hold(self, flushed_from_pacer: int) -> None:
        """Silence the line but keep the place: ``flushed_from_pacer`` frames go back in line."""
        self.held = True
        self._next = max(self._confirmed, self._next - flushed_from_pacer)

    def resume(self) -> None:
        """Carry on from where the hold stopped."""
        self.held = False

    def stop(self) -> None:
        """Barge-in: nothing more plays."""
        self.stopped = True
        self._next = self._confirmed

    # -- state -----------------------------------------------------------------------------------
    @property
    def playing(self) -> bool:
        """Audio is going out or waiting to (not stopped, and not everything was heard yet)."""
        return not self.stopped and (self._confirmed < len(self._frames) or not self.finished_adding)

    @property
    def done(self) -> bool:
        """Everything that will ever play has been heard (or the reply was stopped)."""
        return self.stopped or (self.finished_adding and self._confirmed >= len(self._frames))

    @property
    def frames_heard(self) -> int:
        """Frames the caller heard."""
        return self._confirmed

    @property
    def frames_total(self) -> int:
        """Frames synthesized so far."""
        return len(self._frames)

    def heard_text(self) -> str:
        """The words the caller heard: whole chunks, and the share of words of a cut chunk."""
        words: list[str] = []
        for chunk in self._chunks:
            heard = min(chunk.frames, max(0, self._confirmed - chunk.first_frame))
            if heard <= 0:
                break
            chunk_words = chunk.text.split()
            if heard >= chunk.frames:
                words.extend(chunk_words)
            else:
                words.extend(chunk_words[: int(len(chunk_words) * heard / chunk.frames)])
                break
        return " ".join(words)

    def full_text(self) -> str:
        """Every chunk's text, heard or not."""
        return " ".join(chunk.text for chunk in self._chunks)
