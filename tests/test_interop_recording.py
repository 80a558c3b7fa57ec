"""Per-route recordings against a real peer (decision 0031): sipp calls ``sipagent serve --mode echo``
and plays 3 s of seeded noise; a route with ``record = true`` leaves one 8 kHz stereo WAV, 0600 in a
0700 folder, whose left channel is what sipp sent and whose right channel is what the server sent
back (both read off a loopback capture), tick-aligned, linked from the store, the API and nothing
else; a route without ``record`` leaves no file."""

from __future__ import annotations

import sqlite3
import stat
import time
import wave
from collections import Counter
from contextlib import closing
from pathlib import Path

import httpx
import numpy as np
import numpy.typing as npt
import pytest

from peers.audio import ulaw_decode, write_g711_pcap
from peers.capture import LoopbackCapture
from peers.ports import free_port_block
from peers.sipagent_proc import SipagentServer
from peers.sipp import run_sipp, scenario_path
from sipagent.rtp.frames import SAMPLES_PER_FRAME

pytestmark = pytest.mark.peer

RECORDED = "+15550003333"
NOT_RECORDED = "+15550004444"


def _config(recordings: Path) -> str:
    return (
        f'[recording]\ndirectory = "{recordings}"\n\n'
        f'[[routes]]\nnumber = "{RECORDED}"\nname = "sales"\nrecord = true\n\n'
        '[[routes]]\nname = "main"\n'
    )


def _frames(samples: npt.NDArray[np.int16]) -> list[bytes]:
    usable = len(samples) // SAMPLES_PER_FRAME * SAMPLES_PER_FRAME
    return [f.tobytes() for f in samples[:usable].reshape(-1, SAMPLES_PER_FRAME)]


def _wire_frames(capture: LoopbackCapture, **direction: int) -> list[bytes]:
    """The PCMU frames of one direction of the call as they crossed loopback, decoded."""
    packets = capture.rtp_packets(**direction)
    return [
        ulaw_decode(p.payload[12:]).astype(np.int16).tobytes() for p in packets if p.payload[1] & 0x7F == 0
    ]


def _stored_recording(db: Path, route: str, timeout: float = 10.0) -> tuple[str, str | None]:
    """(call id, recording) of the route's call once its end is committed by the writer thread."""
    deadline = time.monotonic() + timeout
    while True:
        with closing(sqlite3.connect(db)) as conn:
            row = conn.execute(
                "SELECT id, recording FROM calls WHERE route = ? AND ended_at IS NOT NULL", (route,)
            ).fetchone()
        if row is not None:
            return row[0], row[1]
        assert time.monotonic() < deadline, f"no ended call of route {route} in the store"
        time.sleep(0.1)


def _noise_pcap(path: Path, seconds: float) -> Path:
    """A PCMU pcap of seeded noise: unlike a tone, no two of its 20 ms frames are alike, so each frame
    found in the recording says exactly which packet it was."""
    rng = np.random.default_rng(16)
    pcm = np.clip(rng.normal(0, 3000, round(seconds * 8000)), -32768, 32767).astype(np.int16)
    write_g711_pcap(path, pcm)
    return path


def _voiced(frames: list[bytes]) -> list[tuple[int, bytes]]:
    silent = bytes(2 * SAMPLES_PER_FRAME)
    return [(tick, frame) for tick, frame in enumerate(frames) if frame != silent]


def test_a_recorded_route_leaves_one_aligned_stereo_wav_and_another_route_none(tmp_path: Path) -> None:
    recordings = tmp_path / "recordings"
    pcap = _noise_pcap(tmp_path / "noise.pcap", 3.0)
    server = SipagentServer(tmp_path / "server", config_text=_config(recordings))
    with server:
        media_port = free_port_block(4)
        with LoopbackCapture(tmp_path / "capture", [media_port, *server.rtp_ports]) as capture:
            result = run_sipp(
                scenario_path("uac_call_echo"), server.address, workdir=tmp_path / "sipp",
                media_port=media_port, service=RECORDED, keys={"pcap": str(pcap)}, duration_ms=3500,
            )  # fmt: skip
        result.assert_ok()
        call_id, stored = _stored_recording(server.workdir / "calls.db", "sales")
        api_info = httpx.get(f"{server.api_url}/v1/calls/{call_id}", timeout=10).json()

        # A call on a route without `record` (and [recording] enabled unset) leaves nothing.
        other = run_sipp(
            scenario_path("uac_call_echo"), server.address, workdir=tmp_path / "sipp2",
            service=NOT_RECORDED, audio_seconds=1.0,
        )  # fmt: skip
        other.assert_ok()
        _, not_stored = _stored_recording(server.workdir / "calls.db", "main")
    assert not_stored is None

    (wav_path,) = recordings.iterdir()
    assert stored == str(wav_path.resolve()) == api_info["recording"]
    assert stat.S_IMODE(wav_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(recordings.stat().st_mode) == 0o700
    safe_id = "".join(c if c.isalnum() or c in "-_." else "_" for c in call_id)
    assert wav_path.name.endswith(f"Z-{safe_id}.wav"), wav_path.name

    with wave.open(str(wav_path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        pairs = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    left, right = _frames(pairs[:, 0].copy()), _frames(pairs[:, 1].copy())
    assert len(left) == len(right) >= 150  # a frame a tick on each side, from the answer to the BYE

    caller_sent = _wire_frames(capture, src_port=media_port)
    agent_sent = _wire_frames(capture, dst_port=media_port)
    assert len(caller_sent) == 150 and len(agent_sent) == 150, capture.describe()
    # Left: what sipp sent, in order, frame for frame (the jitter buffer plays each packet once; one
    # it had to conceal under load would be missing, hence the 95 %). Right: what the server sent.
    heard, said = _voiced(left), _voiced(right)
    assert _in_order(caller_sent, [f for _, f in heard]) >= 0.95 * len(caller_sent)
    assert _in_order(agent_sent, [f for _, f in said]) >= 0.95 * len(agent_sent)
    # Aligned on the call's 20 ms clock: the echo of the caller's frame of tick k is ours at a later
    # tick (queued while tick k is handled, sent on the next; more only if the loop fell behind), so
    # every frame is on the right a little after it is on the left; swapped channels would be before.
    tick_of = {frame: tick for tick, frame in said}
    delays = Counter(tick_of[frame] - tick for tick, frame in heard if frame in tick_of)
    assert delays.total() >= 0.95 * len(caller_sent), delays
    assert min(delays) >= 1 and max(delays) <= 25, delays


def _in_order(sent: list[bytes], recorded: list[bytes]) -> int:
    """How many of the sent frames the recording holds in the order they were sent."""
    position = {frame: i for i, frame in enumerate(recorded)}
    found = [position[frame] for frame in sent if frame in position]
    return sum(1 for a, b in zip([-1, *found], found, strict=False) if b > a)
