"""Tests for the call recorder: alignment, stereo layout, WAV headers, and surviving a crash."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import wave
from pathlib import Path

import numpy as np
import pytest

from sipagent.rtp.frames import SAMPLE_RATE, SAMPLES_PER_FRAME, Pcm, silence
from sipagent.rtp.recorder import CallRecorder

ROOT = Path(__file__).resolve().parent.parent


def frame(value: int) -> Pcm:
    return np.full(SAMPLES_PER_FRAME, value, dtype=np.int16)


def caller_frame(tick: int) -> Pcm:
    return frame(tick + 1)


def agent_frame(tick: int) -> Pcm:
    return frame(-(tick + 1))


def read(path: Path) -> tuple[wave._wave_params, Pcm]:
    with wave.open(str(path), "rb") as wav:
        params = wav.getparams()
        data = np.frombuffer(wav.readframes(params.nframes), dtype="<i2").astype(np.int16)
    return params, data


def record(prefix: Path, ticks: int, **kwargs: object) -> CallRecorder:
    recorder = CallRecorder(prefix, **kwargs)  # type: ignore[arg-type]
    for tick in range(ticks):
        recorder.write_inbound(caller_frame(tick))
        recorder.write_outbound(agent_frame(tick))
    return recorder


def expected(ticks: int, sign: int) -> Pcm:
    return np.repeat(np.arange(1, ticks + 1, dtype=np.int16) * sign, SAMPLES_PER_FRAME)


def test_both_legs_are_aligned_mono_files(tmp_path: Path) -> None:
    record(tmp_path / "call", 120).close()
    caller_params, caller = read(tmp_path / "call-caller.wav")
    agent_params, agent = read(tmp_path / "call-agent.wav")
    for params in (caller_params, agent_params):
        assert (params.nchannels, params.sampwidth, params.framerate) == (1, 2, SAMPLE_RATE)
        assert params.nframes == 120 * SAMPLES_PER_FRAME
    assert np.array_equal(caller, expected(120, 1))
    assert np.array_equal(agent, expected(120, -1))
    assert not (tmp_path / "call-both.wav").exists()


def test_stereo_mix_puts_the_caller_left_and_the_agent_right(tmp_path: Path) -> None:
    recorder = CallRecorder(tmp_path / "call", stereo=True)
    for tick in range(30):
        # Either leg may be written first within a tick, or run a few ticks ahead.
        if tick % 2:
            recorder.write_outbound(agent_frame(tick))
            recorder.write_inbound(caller_frame(tick))
        else:
            recorder.write_inbound(caller_frame(tick))
            recorder.write_outbound(agent_frame(tick))
    for tick in range(30, 33):
        recorder.write_inbound(caller_frame(tick))
    for tick in range(30, 33):
        recorder.write_outbound(agent_frame(tick))
    recorder.close()
    params, data = read(tmp_path / "call-both.wav")
    assert (params.nchannels, params.sampwidth, params.framerate) == (2, 2, SAMPLE_RATE)
    assert params.nframes == 33 * SAMPLES_PER_FRAME
    pairs = data.reshape(-1, 2)
    assert np.array_equal(pairs[:, 0], expected(33, 1))
    assert np.array_equal(pairs[:, 1], expected(33, -1))


def test_header_is_valid_after_close_and_from_the_first_instant(tmp_path: Path) -> None:
    recorder = CallRecorder(tmp_path / "call", stereo=True)
    for path in (recorder.caller_path, recorder.agent_path, recorder.both_path):
        assert path is not None
        assert read(path)[0].nframes == 0  # a playable empty WAV before any audio
    recorder.write_inbound(silence())
    recorder.write_outbound(silence())
    recorder.close()
    recorder.close()  # idempotent
    for path, channels in ((recorder.caller_path, 1), (recorder.agent_path, 1), (recorder.both_path, 2)):
        assert path is not None
        raw = path.read_bytes()
        data_size = SAMPLES_PER_FRAME * 2 * channels
        assert len(raw) == 44 + data_size
        assert raw[:4] == b"RIFF" and raw[8:16] == b"WAVEfmt "
        assert struct.unpack_from("<I", raw, 4)[0] == len(raw) - 8
        assert raw[36:40] == b"data" and struct.unpack_from("<I", raw, 40)[0] == data_size


def test_close_pads_the_shorter_leg_with_silence(tmp_path: Path) -> None:
    with CallRecorder(tmp_path / "call", stereo=True) as recorder:
        for tick in range(10):
            recorder.write_inbound(caller_frame(tick))
        for tick in range(7):
            recorder.write_outbound(agent_frame(tick))
    _, agent = read(tmp_path / "call-agent.wav")
    assert np.array_equal(agent[: 7 * SAMPLES_PER_FRAME], expected(7, -1))
    assert not agent[7 * SAMPLES_PER_FRAME :].any() and len(agent) == 10 * SAMPLES_PER_FRAME
    _, both = read(tmp_path / "call-both.wav")
    assert len(both) == 2 * 10 * SAMPLES_PER_FRAME


def test_a_leg_that_falls_too_far_behind_is_filled_and_its_late_frames_dropped(tmp_path: Path) -> None:
    recorder = CallRecorder(tmp_path / "call", stereo=True, max_skew_frames=5)
    for tick in range(8):
        recorder.write_inbound(caller_frame(tick))
    # Ticks 0-4 are within the bound; ticks 5-7 pushed silence into the agent leg at ticks 0-2.
    for tick in range(8):
        recorder.write_outbound(agent_frame(tick))
    recorder.close()
    assert recorder.misaligned_frames == 6  # 3 silences written, 3 late frames dropped
    _, caller = read(tmp_path / "call-caller.wav")
    _, agent = read(tmp_path / "call-agent.wav")
    assert len(caller) == len(agent) == 8 * SAMPLES_PER_FRAME
    agent_ticks = agent.reshape(-1, SAMPLES_PER_FRAME)[:, 0].tolist()
    assert agent_ticks == [0, 0, 0, -4, -5, -6, -7, -8]
    both = read(tmp_path / "call-both.wav")[1].reshape(-1, 2)
    assert both[::SAMPLES_PER_FRAME, 1].tolist() == agent_ticks


def test_rejects_bad_frames_and_writes_after_close(tmp_path: Path) -> None:
    recorder = CallRecorder(tmp_path / "call")
    with pytest.raises(ValueError, match="160 int16"):
        recorder.write_inbound(np.zeros(80, dtype=np.int16))
    recorder.close()
    with pytest.raises(ValueError, match="closed"):
        recorder.write_outbound(silence())


def test_creates_the_directory(tmp_path: Path) -> None:
    record(tmp_path / "2026" / "05" / "call", 1).close()
    assert (tmp_path / "2026" / "05" / "call-caller.wav").exists()


def test_a_copy_taken_mid_call_is_playable_up_to_the_last_fix_up(tmp_path: Path) -> None:
    recorder = record(tmp_path / "call", 175, stereo=True, sync_seconds=1.0)  # 3.5 s, not closed
    copies = tmp_path / "copies"
    copies.mkdir()
    for path in (recorder.caller_path, recorder.agent_path, recorder.both_path):
        assert path is not None
        shutil.copy(path, copies / path.name)
    fixed_up = 150  # ticks: fix-ups at 1, 2 and 3 s
    params, caller = read(copies / "call-caller.wav")
    assert params.nframes >= fixed_up * SAMPLES_PER_FRAME
    assert np.array_equal(caller[: fixed_up * SAMPLES_PER_FRAME], expected(fixed_up, 1))
    params, agent = read(copies / "call-agent.wav")
    assert np.array_equal(agent[: fixed_up * SAMPLES_PER_FRAME], expected(fixed_up, -1))
    params, both = read(copies / "call-both.wav")
    assert params.nframes >= fixed_up * SAMPLES_PER_FRAME
    pairs = both.reshape(-1, 2)[: fixed_up * SAMPLES_PER_FRAME]
    assert np.array_equal(pairs[:, 0], expected(fixed_up, 1))
    recorder.close()
    assert recorder.caller_path is not None
    assert read(recorder.caller_path)[0].nframes == 175 * SAMPLES_PER_FRAME


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_killed_process_leaves_playable_files(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        import numpy as np
        from sipagent.rtp.recorder import CallRecorder
        recorder = CallRecorder(Path({str(tmp_path / "call")!r}), stereo=True, sync_seconds=1.0)
        for tick in range(130):
            recorder.write_inbound(np.full(160, tick + 1, dtype=np.int16))
            recorder.write_outbound(np.full(160, -(tick + 1), dtype=np.int16))
        print("ready", flush=True)
        time.sleep(60)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env) as child:
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n"
        child.send_signal(signal.SIGKILL)  # no close(), no atexit, no finalisers
        child.wait(timeout=10)
    for name, sign in (("caller", 1), ("agent", -1)):
        params, data = read(tmp_path / f"call-{name}.wav")
        assert params.nframes == 100 * SAMPLES_PER_FRAME  # fix-ups at 1 s and 2 s
        assert np.array_equal(data, expected(100, sign))
    params, both = read(tmp_path / "call-both.wav")
    assert params.nframes == 100 * SAMPLES_PER_FRAME
    assert np.array_equal(both.reshape(-1, 2)[:, 1], expected(100, -1))
