"""The models in their own process (``[agent] inference = "process"``): the real embedded models
answer through the pipe as they do in-process, replies stream and stop on cancel, each call keeps
its own history, a model that cannot load is a clear error, and a dead worker fails its jobs
instead of hanging them and is replaced. (The end-to-end agent tests in test_agent_e2e.py run in
this mode too.)"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sipagent.config import build_settings
from sipagent.replay.capture import load_caller_leg
from sipagent.rtp.g711 import decode_table
from sipagent.voice.agent import Models
from sipagent.voice.inference_process import InferenceError, RemoteChat
from sipagent.voice.models import DEFAULT_LLM_MODEL, DEFAULT_STT_MODEL, DEFAULT_TTS_VOICE, resolve_model_path
from sipagent.voice.pipeline import ModelLoadError, close_models, load_models
from tests.model_gate import require_models
from tests.test_stt import _normalise

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SETTINGS = build_settings({"llm": {"temperature": 0.0}, "agent": {"inference": "process", "workers": 2}})


def _require() -> None:
    require_models(
        resolve_model_path(DEFAULT_STT_MODEL) / "model.bin",
        resolve_model_path(DEFAULT_LLM_MODEL),
        resolve_model_path(DEFAULT_TTS_VOICE),
    )


@pytest.fixture(scope="module")
def remote() -> Iterator[Models]:
    _require()
    models = load_models(SETTINGS)
    yield models
    close_models(models)


def _utterance(name: str) -> np.ndarray:
    leg = load_caller_leg(FIXTURES / name)
    table = decode_table(leg.codec)
    return np.concatenate([table.take(np.frombuffer(p.packet.payload, dtype=np.uint8)) for p in leg.packets])


def _worker_pid(models: Models) -> int:
    assert isinstance(models.chat, RemoteChat)
    pid = models.chat._client._process.pid
    assert pid is not None and pid != os.getpid()
    return pid


def test_whisper_in_the_worker_hears_what_it_hears_here(remote: Models) -> None:
    from sipagent.voice.stt import WhisperTranscriber

    audio = _utterance("speech-cards-001.pcap")
    there = remote.transcriber.transcribe(audio)
    here = WhisperTranscriber.from_settings(SETTINGS.stt).transcribe(audio)
    assert _normalise(there.text) == _normalise(here.text)
    assert there.text and not there.likely_silence
    assert there.duration == pytest.approx(audio.size / 8000)


def test_piper_in_the_worker_speaks_8k_telephone_audio(remote: Models) -> None:
    chunks = list(remote.synthesizer.synthesize("Thanks for calling. How can I help?"))
    assert chunks and all(c.dtype == np.int16 and c.ndim == 1 for c in chunks)
    audio = np.concatenate(chunks)
    assert 0.8 < audio.size / 8000 < 6.0  # seconds of speech, at 8 kHz
    assert int(np.abs(audio).max()) > 2000  # a voice, not silence
    assert list(remote.synthesizer.synthesize("   ")) == []


def test_replies_stream_per_call_with_history_kept_here(remote: Models) -> None:
    first, second = remote.chat.new_session(), remote.chat.new_session()
    try:
        first.add_user("Hello, my name is Dana. What is two plus two?")
        pieces = list(first.stream_reply())
        assert len(pieces) > 1  # streamed, not one block
        assert first.history[-1].role == "assistant" and first.history[-1].text == "".join(pieces).strip()
        stats = first.last_stats
        assert stats is not None and stats.generated_tokens > 0 and not stats.cancelled
        # The second call's conversation is its own: one user turn, no trace of the first.
        second.add_user("Good morning.")
        assert second.reply()
        assert [t.role for t in second.history] == ["user", "assistant"]
        # A second turn on the first call reuses its KV cache in the worker (only new words evaluated).
        first.add_user("And what is my name?")
        assert first.reply()
        stats = first.last_stats
        assert stats is not None and stats.cached_tokens and stats.prompt_tokens
        assert stats.cached_tokens > stats.prompt_tokens // 2
    finally:
        first.close()
        second.close()


def test_cancel_stops_the_workers_generation(remote: Models) -> None:
    session = remote.chat.new_session()
    cancel = threading.Event()
    session.add_user("Tell me a long story about a lighthouse keeper and the sea.")
    pieces = []
    for piece in session.stream_reply(cancel):
        pieces.append(piece)
        if len(pieces) == 3:
            cancel.set()
    stats = session.last_stats
    session.close()
    assert stats is not None and stats.cancelled
    assert len(pieces) == 3  # nothing after the cancel reaches the caller
    assert stats.generated_tokens < 12  # the worker stopped within a few tokens of it


def test_the_worker_runs_in_the_idle_class_whatever_the_server_runs_in(remote: Models) -> None:
    # (The server may be real-time; the worker must not inherit that, or it would starve the media.)
    pid = _worker_pid(remote)
    assert os.sched_getscheduler(pid) == os.SCHED_IDLE
    assert os.getpriority(os.PRIO_PROCESS, pid) == SETTINGS.agent.inference_nice


def test_normal_scheduling_niced_and_pinned_when_configured() -> None:
    _require()
    cpu = min(os.sched_getaffinity(0))
    settings = build_settings(
        {
            "agent": {
                "inference": "process",
                "inference_sched": "normal",
                "inference_cpus": [cpu],
                "workers": 1,
            }
        }
    )
    models = load_models(settings)
    try:
        pid = _worker_pid(models)
        assert os.sched_getscheduler(pid) == os.SCHED_OTHER
        assert os.getpriority(os.PRIO_PROCESS, pid) == settings.agent.inference_nice
        assert os.sched_getaffinity(pid) == {cpu}
        assert list(models.synthesizer.synthesize("One."))  # it still works there
    finally:
        close_models(models)


def test_a_voice_that_cannot_load_is_a_model_load_error(tmp_path: Path) -> None:
    _require()
    missing = tmp_path / "no-such-voice.onnx"
    settings = build_settings({"tts": {"voice": str(missing)}, "agent": {"inference": "process"}})
    with pytest.raises(ModelLoadError, match="no-such-voice"):
        load_models(settings)


def test_a_dead_worker_fails_its_jobs_and_another_takes_over() -> None:
    _require()
    models = load_models(SETTINGS)
    try:
        session = models.chat.new_session()
        session.add_user("Hello, who is this?")
        assert session.reply()
        first = _worker_pid(models)
        os.kill(first, signal.SIGKILL)  # a crash, or the kernel's OOM killer
        with pytest.raises(InferenceError, match="exited"):
            models.transcriber.transcribe(np.zeros(800, dtype=np.int16))  # failed, not hung
        # A new worker loads the models; jobs asked for meanwhile fail fast.
        assert isinstance(models.chat, RemoteChat)
        client = models.chat._client
        deadline = time.monotonic() + 60
        while client.restarts == 0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.restarts == 1 and _worker_pid(models) != first
        assert models.transcriber.transcribe(_utterance("speech-cards-001.pcap")).text
        # The call's history was kept here: its next turn goes on where it was.
        session.add_user("Can you repeat that?")
        assert session.reply()
        assert [t.role for t in session.history] == ["user", "assistant", "user", "assistant"]
    finally:
        close_models(models)
