"""Call recording: both legs as 8 kHz 16-bit WAV files that survive a crash mid-call.

**This module does file I/O.** It is called from the net/call layer (once per 20 ms tick for
each leg, alongside the pacer and the jitter buffer), never from the sans-IO cores in
:mod:`sipagent.rtp` and :mod:`sipagent.sip`, which stay free of files as of sockets and clocks.
Writes go to the OS page cache in a few hundred bytes per tick; at most one small seek-and-
write per file per ``sync_seconds`` patches the header. Callers that cannot afford even that
on the event loop can run the recorder in a worker thread; it does not touch the loop.

Files, for ``path_prefix = /var/rec/call-42``:

* ``call-42-caller.wav``: what the caller sent us (mono);
* ``call-42-agent.wav``: what we sent the caller (mono);
* ``call-42-both.wav`` (``stereo=True``): caller on the left channel, agent on the right.

``mono=False`` leaves out the two mono files (``stereo=True`` then required), and ``both_path``
names the stereo file anywhere: the server records each call as that one stereo file, named by
:mod:`sipagent.product.recordings` (decision 0031). Every file is created 0600 (the audio of a call is
personal data), whatever the umask.

**Alignment.** The legs are aligned by tick: the *k*-th frame written to each leg belongs to the
same 20 ms. The caller passes a silence frame for a leg that had nothing on a tick, so both files
stay the same length and sample *i* of one is simultaneous with sample *i* of the other. If one
leg stops being written (a bug upstream), the other may run at most ``max_skew_frames`` ahead;
beyond that the lagging leg is presumed to have missed ticks: silence is written in its place and
as many of its late frames are dropped when they arrive (``misaligned_frames`` counts them), so
alignment is kept and memory stays bounded. :meth:`CallRecorder.close` pads the shorter leg.

**Crash safety.** A WAV header states the data length, which the stdlib :mod:`wave` writer only
fixes up on ``close()``: a killed process would leave a header claiming zero samples. Here the
header is written when the file is opened (a valid empty WAV from the first instant) and
patched every ``sync_seconds`` of audio by ``writeframes(b"")`` (public API: it patches the
RIFF and data sizes whenever they are stale, then the stream is flushed to the OS). Frames in
between go through ``writeframesraw``, which never seeks. A process killed at any moment leaves
files whose header covers everything up to the last fix-up (at most ``sync_seconds`` old);
the bytes after it are ignored by readers as trailing data. Flushing to the OS is enough for a
process crash; against power loss pass ``fsync=True`` to also fsync at every fix-up.
"""

from __future__ import annotations

import os
import wave
from collections import deque
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .frames import PTIME_MS, SAMPLE_RATE, SAMPLES_PER_FRAME, Pcm, silence

__all__ = ["CallRecorder"]

_CALLER = 0
_AGENT = 1
_SILENCE_BYTES = silence().tobytes()


class _WavFile:
    """A :mod:`wave` writer on a file we own, with its header valid from the start."""

    def __init__(self, path: Path, channels: int) -> None:
        self.path = path
        # 0600 from the first byte (never readable by others for an instant), and set again for a
        # file that existed (os.open keeps an existing file's mode).
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._file: BinaryIO = os.fdopen(fd, "wb")
        try:
            os.fchmod(fd, 0o600)
            self._wav = wave.open(self._file, "wb")  # noqa: SIM115 - closed in close()
            self._wav.setnchannels(channels)
            self._wav.setsampwidth(2)
            self._wav.setframerate(SAMPLE_RATE)
            self._wav.writeframes(b"")  # writes the header now: a playable empty file
            self._file.flush()
        except BaseException:
            self._file.close()
            raise

    def write(self, data: bytes) -> None:
        # Native-endian int16 bytes: wave byte-swaps to little-endian itself on big-endian hosts.
        self._wav.writeframesraw(data)

    def sync(self, fsync: bool) -> None:
        """Patch the RIFF and data sizes to cover everything written, and push it to the OS."""
        self._wav.writeframes(b"")
        self._file.flush()
        if fsync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        try:
            self._wav.close()  # patches the header; does not close a file it did not open
        finally:
            self._file.close()


class CallRecorder:
    """Records one call's two legs (and optionally a stereo mix) as WAV files."""

    def __init__(
        self,
        path_prefix: Path,
        *,
        stereo: bool = False,
        mono: bool = True,
        both_path: Path | None = None,
        sync_seconds: float = 1.0,
        max_skew_frames: int = 50,
        fsync: bool = False,
    ) -> None:
        if sync_seconds <= 0:
            raise ValueError(f"sync_seconds must be positive, got {sync_seconds}")
        if max_skew_frames < 1:
            raise ValueError(f"max_skew_frames must be at least 1, got {max_skew_frames}")
        if not (mono or stereo):
            raise ValueError("a recorder writes the mono legs, the stereo file or both")
        path_prefix = Path(path_prefix)
        path_prefix.parent.mkdir(parents=True, exist_ok=True)
        #: The mono legs' files (None with ``mono=False``).
        self.caller_path: Path | None = None
        self.agent_path: Path | None = None
        if mono:
            self.caller_path = path_prefix.with_name(path_prefix.name + "-caller.wav")
            self.agent_path = path_prefix.with_name(path_prefix.name + "-agent.wav")
        self.both_path: Path | None = None
        if stereo:
            self.both_path = both_path or path_prefix.with_name(path_prefix.name + "-both.wav")
        self._sync_every = max(1, round(sync_seconds * 1000 / PTIME_MS))
        self._max_skew = max_skew_frames
        self._fsync = fsync
        self._files: list[_WavFile] = []
        try:
            if self.caller_path is not None and self.agent_path is not None:
                self._files.append(_WavFile(self.caller_path, 1))
                self._files.append(_WavFile(self.agent_path, 1))
            if self.both_path is not None:
                self._files.append(_WavFile(self.both_path, 2))
        except BaseException:
            for opened in self._files:
                opened.close()
            raise
        self._mono = (self._files[0], self._files[1]) if mono else None
        self._both = self._files[-1] if stereo else None
        # Frames written to each leg, late frames still to drop per leg, and (stereo only)
        # each leg's frames waiting for their partner from the other leg.
        self._written = [0, 0]
        self._debt = [0, 0]
        self._pending: tuple[deque[bytes], deque[bytes]] = (deque(), deque())
        self._next_sync = self._sync_every
        self._closed = False
        #: Frames replaced by silence or dropped to keep the legs aligned (see module docstring).
        self.misaligned_frames = 0

    def __enter__(self) -> CallRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def frames_written(self) -> int:
        """Ticks recorded on the longer leg."""
        return max(self._written)

    def write_inbound(self, frame: Pcm) -> None:
        """The caller's audio for one tick (a silence frame if nothing arrived)."""
        self._write(_CALLER, frame)

    def write_outbound(self, frame: Pcm) -> None:
        """Our (the agent's) audio for one tick (a silence frame if nothing was sent)."""
        self._write(_AGENT, frame)

    def sync(self) -> None:
        """Make everything written so far readable after a crash (done every ``sync_seconds``)."""
        self._check_open()
        for file in self._files:
            file.sync(self._fsync)
        self._next_sync = min(self._written) + self._sync_every

    def close(self) -> None:
        """Pad the shorter leg with silence, finish the headers and close the files. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            shorter = _CALLER if self._written[_CALLER] < self._written[_AGENT] else _AGENT
            for _ in range(abs(self._written[_CALLER] - self._written[_AGENT])):
                self._append(shorter, _SILENCE_BYTES)
        finally:
            for file in self._files:
                file.close()

    # -- internals -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("the call recorder is closed")

    def _write(self, leg: int, frame: Pcm) -> None:
        self._check_open()
        if frame.shape != (SAMPLES_PER_FRAME,) or frame.dtype != np.int16:
            raise ValueError(
                f"the recorder takes frames of {SAMPLES_PER_FRAME} int16 samples, "
                f"got {frame.dtype} {frame.shape}"
            )
        if self._debt[leg]:
            # Silence already stands in for this frame: it arrived too late to be aligned.
            self._debt[leg] -= 1
            self.misaligned_frames += 1
            return
        self._append(leg, frame.tobytes())
        other = 1 - leg
        if self._written[leg] - self._written[other] > self._max_skew:
            self._append(other, _SILENCE_BYTES)
            self._debt[other] += 1
            self.misaligned_frames += 1
        # Fix up once every leg (and so the stereo file) holds the next ``sync_seconds``.
        if min(self._written) >= self._next_sync:
            self.sync()

    def _append(self, leg: int, data: bytes) -> None:
        if self._mono is not None:
            self._mono[leg].write(data)
        self._written[leg] += 1
        if self._both is None:
            return
        mine, theirs = self._pending[leg], self._pending[1 - leg]
        if not theirs:
            mine.append(data)
            return
        partner = theirs.popleft()
        caller, agent = (data, partner) if leg == _CALLER else (partner, data)
        interleaved = np.empty(2 * SAMPLES_PER_FRAME, dtype=np.int16)
        interleaved[0::2] = np.frombuffer(caller, dtype=np.int16)
        interleaved[1::2] = np.frombuffer(agent, dtype=np.int16)
        self._both.write(interleaved.tobytes())
