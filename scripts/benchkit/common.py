"""Pieces the benchmark scripts share: the speech, simulated callers, sessions, statistics, the box.

Nothing here measures anything; each helper is what a benchmark needs around the code it times:

* constants: the repository ``ROOT``, the speech ``FIXTURE``, one 20 ms ``FRAME`` (in seconds and,
  as ``FRAME_US``, in µs: one call's budget per tick at 100 % of a core), the loopback ``HOST``
  and the ``PORT_MIN``–``PORT_MAX`` range our RTP sockets bind in;
* :func:`load_speech`: the caller's 20 ms PCMU payloads from a capture, to replay;
* :class:`CallStream`: one simulated caller, which turns the speech into serialized RTP packets
  with its own SSRC, sequence and timestamp bases (the speech loops seamlessly);
* :func:`negotiate` and :func:`new_session`: our side of a real SDP offer/answer, and an
  :class:`RtpSession` with random bases and no media timeout, as a call would have;
* :func:`percentile`: nearest-rank percentile of a sorted sequence;
* :func:`bind_pair`: a UDP socket pair on an even/odd port pair (RTP, RTCP) on ``HOST``;
* :func:`machine` (cores, CPU model, Python and numpy versions, as the docs quote them) and
  :func:`machine_busy` (the whole machine's busy and steal CPU seconds, from ``/proc/stat``), so a
  result can say what it ran on and how busy the (possibly shared) box was meanwhile.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import random
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sipagent.replay.capture import load_caller_leg
from sipagent.rtp.frames import PTIME_MS
from sipagent.rtp.session import RtpSession, RtpSessionConfig
from sipagent.sip.offer_answer import MediaSession, NegotiatedMedia

#: The repository (this file is ``scripts/benchkit/common.py``).
ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "fixtures" / "speech-librivox-0870.pcap"
#: One packet's worth of audio, in seconds.
FRAME = PTIME_MS / 1000
#: The budget of one call per tick at 100 % of one core.
FRAME_US = PTIME_MS * 1000.0
HOST = "127.0.0.1"
#: Our RTP ports: below Linux's ephemeral range (32768+), where the peer's socket lands.
PORT_MIN, PORT_MAX = 20000, 32000
_HEADER = struct.Struct("!BBHII")
_PCMU = 0
_MARKER = 0x80

#: A clock to time with, in seconds (``time.process_time``, ``time.perf_counter``, ...).
Clock = Callable[[], float]


# ---------------------------------------------------------------------------------- the speech


def load_speech(path: Path = FIXTURE) -> list[bytes]:
    """The caller's PCMU payloads (160 bytes, 20 ms each) from a capture, in order."""
    leg = load_caller_leg(path)
    if leg.codec != "PCMU":
        raise SystemExit(f"{path}: the benchmark replays PCMU, the capture carries {leg.codec}")
    payloads = [
        timed.packet.payload
        for timed in leg.packets
        if timed.packet.payload_type == leg.payload_type and len(timed.packet.payload) == 160
    ]
    if not payloads:
        raise SystemExit(f"{path}: no 20 ms PCMU packets in the caller leg")
    return payloads


@dataclass(frozen=True)
class CallStream:
    """One simulated caller: its own SSRC, sequence and timestamp bases, and where in the loop of
    speech it starts, so the calls are neither identical nor in step."""

    ssrc: int
    first_sequence: int
    first_timestamp: int
    offset: int

    @classmethod
    def draw(cls, rng: random.Random, length: int) -> CallStream:
        """A stream with random bases (RFC 3550 §5.1) and a random starting point in the speech."""
        return cls(rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(32), rng.randrange(length))

    def packet(self, speech: Sequence[bytes], index: int) -> bytes:
        """Serialized RTP packet ``index`` of this stream (the speech loops seamlessly)."""
        return (
            _HEADER.pack(
                0x80,
                _PCMU | (_MARKER if index == 0 else 0),
                (self.first_sequence + index) & 0xFFFF,
                (self.first_timestamp + 160 * index) & 0xFFFFFFFF,
                self.ssrc,
            )
            + speech[(self.offset + index) % len(speech)]
        )


# -------------------------------------------------------------------------------- the sessions


def negotiate(local_port: int, remote_port: int, session_id: int) -> NegotiatedMedia:
    """Our side of a real offer/answer with a caller at ``HOST:remote_port`` (PCMU, DTMF)."""
    caller = MediaSession(HOST, remote_port, session_id=2 * session_id + 1, codecs=("PCMU",))
    ours = MediaSession(HOST, local_port, session_id=2 * session_id + 2)
    _, media = ours.answer(caller.create_offer())
    return media


def new_session(rng: random.Random, index: int, now: float) -> RtpSession:
    """Call ``index``'s :class:`RtpSession` at time ``now``: random SSRC, sequence and timestamp
    bases drawn from ``rng``, and no media timeout (a benchmark's silence is not a dead call)."""
    return RtpSession(
        ssrc=rng.getrandbits(32),
        first_sequence=rng.getrandbits(16),
        first_timestamp=rng.getrandbits(32),
        cname=f"bench-{index}",
        rng=random.Random(rng.getrandbits(64)),
        now=now,
        wall_offset=time.time() - time.monotonic(),
        config=RtpSessionConfig(media_timeout=0),
    )


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (0.0 when empty)."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


# --------------------------------------------------------------------------------- the sockets


def bind_pair() -> tuple[socket.socket, socket.socket]:
    """A UDP socket on a free even port and one on the odd port above it (RTP, RTCP)."""
    for _ in range(100):
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind((HOST, 0))
        port = rtp.getsockname()[1]
        if port % 2 == 0:
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                rtcp.bind((HOST, port + 1))
            except OSError:
                rtcp.close()
            else:
                return rtp, rtcp
        rtp.close()
    raise RuntimeError("no free even/odd UDP port pair on 127.0.0.1")


# --------------------------------------------------------------------------------- the machine


def machine() -> dict[str, str | int]:
    """Cores and CPU model, as the docs quote them."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count() or 0,
        "cpu": model,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }


def machine_busy() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine so far, from /proc/stat (0, 0 elsewhere)."""
    try:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    hertz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    steal = fields[7] if len(fields) > 7 else 0
    return (sum(fields[:8]) - idle) / hertz, steal / hertz
