"""The models in their own process (``[agent] inference = "process"``): the real embedded models
answer jobs through the pipe as they do in-process, results arrive as loop events, replies stream
and stop on cancel, each call keeps its own KV cache, the worker runs at the configured priority
after loading at normal priority, a model that cannot load is a clear error, and a dead worker
fails its jobs instead of hanging them and is replaced. (The end-to-end agent tests in
test_agent_e2e.py run in this mode too.)"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio

from sipagent.config import build_settings
from sipagent.layers import inference_config
from sipagent.replay.capture import load_caller_leg
from sipagent.rtp.g711 import decode_table
from sipagent.voice.inference import (
    InferenceService,
    ModelLoadError,
    ProcessInference,
    load_models,
)
from sipagent.voice.inference.worker import JobWorker
from sipagent.voice.jobs import (
    Generate,
    Job,
    JobFailed,
    JobResult,
    Synthesize,
    Synthesized,
    TextDone,
    TextPiece,
    Transcribe,
    Transcribed,
)
from sipagent.voice.llm import Turn
from sipagent.voice.models import DEFAULT_LLM_MODEL, DEFAULT_STT_MODEL, DEFAULT_TTS_VOICE, resolve_model_path
from tests.model_gate import require_models
from tests.test_stt import _normalise

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SETTINGS = build_settings({"llm": {"temperature": 0.0}, "agent": {"inference": "process", "workers": 2}})
PROMPT = SETTINGS.llm.system_prompt
pytestmark = pytest.mark.asyncio(loop_scope="module")


def _require() -> None:
    require_models(
        resolve_model_path(DEFAULT_STT_MODEL) / "model.bin",
        resolve_model_path(DEFAULT_LLM_MODEL),
        resolve_model_path(DEFAULT_TTS_VOICE),
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def remote() -> AsyncIterator[ProcessInference]:
    _require()
    service = await ProcessInference.start(inference_config(SETTINGS))
    yield service
    await service.aclose()


def _utterance(name: str) -> np.ndarray:
    leg = load_caller_leg(FIXTURES / name)
    table = decode_table(leg.codec)
    return np.concatenate([table.take(np.frombuffer(p.packet.payload, dtype=np.uint8)) for p in leg.packets])


async def _run(service: InferenceService, job: Job) -> list[JobResult]:
    """Every result of ``job``, up to its final one."""
    return await asyncio.wait_for(service.run(job), 120)


async def test_whisper_in_the_worker_hears_what_it_hears_here(remote: ProcessInference) -> None:
    from sipagent.voice.stt import WhisperTranscriber

    audio = _utterance("speech-cards-001.pcap")
    [result] = await _run(remote, Transcribe(7, audio))
    assert isinstance(result, Transcribed) and result.job == 7  # the asker's own job number
    here = WhisperTranscriber.from_settings(SETTINGS.stt).transcribe(audio)
    assert _normalise(result.transcript.text) == _normalise(here.text)
    assert result.transcript.text and not result.transcript.likely_silence
    assert result.transcript.duration == pytest.approx(audio.size / 8000)


async def test_piper_in_the_worker_speaks_8k_telephone_audio(remote: ProcessInference) -> None:
    [result] = await _run(remote, Synthesize(1, "Thanks for calling. How can I help?"))
    assert isinstance(result, Synthesized)
    audio = result.audio
    assert audio.dtype == np.int16 and audio.ndim == 1
    assert 0.8 < audio.size / 8000 < 6.0  # seconds of speech, at 8 kHz
    assert int(np.abs(audio).max()) > 2000  # a voice, not silence
    handed_over = remote.delivery_ms()
    assert handed_over is not None and 0 <= handed_over[0] <= handed_over[1]


async def test_replies_stream_per_call_and_keep_their_kv_cache(remote: ProcessInference) -> None:
    first = (Turn("user", "Hello, my name is Dana. What is two plus two?"),)
    results = await _run(remote, Generate(1, 101, PROMPT, first))
    pieces = [r.text for r in results if isinstance(r, TextPiece)]
    assert len(pieces) > 1  # streamed, not one block
    done = results[-1]
    assert isinstance(done, TextDone) and done.stats is not None and done.stats.generated_tokens > 0
    # Another call's conversation is its own.
    other = await _run(remote, Generate(2, 102, PROMPT, (Turn("user", "Good morning."),)))
    assert any(isinstance(r, TextPiece) for r in other)
    # A second turn of the first call reuses its KV cache in the worker (only new words evaluated).
    second = (*first, Turn("assistant", "".join(pieces).strip()), Turn("user", "And what is my name?"))
    results = await _run(remote, Generate(3, 101, PROMPT, second))
    stats = results[-1].stats if isinstance(results[-1], TextDone) else None
    assert stats is not None and stats.cached_tokens and stats.prompt_tokens
    assert stats.cached_tokens > stats.prompt_tokens // 2
    remote.release(101)
    remote.release(102)


async def test_nothing_of_a_cancelled_reply_arrives_after_the_cancel(remote: ProcessInference) -> None:
    pieces: list[str] = []
    got_three = asyncio.get_running_loop().create_future()

    def deliver(result: JobResult) -> None:
        assert isinstance(result, TextPiece), result  # no TextDone either: the job was given up
        pieces.append(result.text)
        if len(pieces) == 3:
            ticket.cancel()
            got_three.set_result(None)

    story = (Turn("user", "Tell me a long story about a lighthouse keeper and the sea."),)
    ticket = remote.submit(Generate(1, 103, PROMPT, story), deliver)
    await asyncio.wait_for(got_three, 60)
    # The worker answers the next job of the same call once the cancelled one has stopped.
    results = await _run(remote, Generate(2, 103, PROMPT, (Turn("user", "Hi."),)))
    assert isinstance(results[-1], TextDone)
    assert len(pieces) == 3
    remote.release(103)


async def test_a_cancel_stops_generation_within_a_token() -> None:
    # The job worker the inference process runs, here in-process so its stats can be seen.
    _require()
    await asyncio.to_thread(_cancel_after_three_pieces)


def _cancel_after_three_pieces() -> None:
    config = inference_config(SETTINGS)
    models = load_models(config)
    results: list[JobResult] = []
    finished = threading.Event()
    worker: JobWorker

    def send(result: JobResult) -> None:
        results.append(result)
        if sum(isinstance(r, TextPiece) for r in results) == 3:
            worker.cancel(1)
        if isinstance(result, TextDone | JobFailed):
            finished.set()

    with ThreadPoolExecutor(2) as pool:
        worker = JobWorker(models, pool, send)
        story = (Turn("user", "Tell me a long story about a lighthouse keeper and the sea."),)
        worker.submit(Generate(1, 1, PROMPT, story))
        assert finished.wait(60)
        worker.close()
    models.close()
    done = results[-1]
    assert isinstance(done, TextDone) and done.stats is not None and done.stats.cancelled
    assert done.stats.generated_tokens < 6  # it stopped at the next token


def _threads_of(pid: int) -> list[int]:
    return [int(task) for task in os.listdir(f"/proc/{pid}/task")]


async def test_the_worker_serves_in_the_normal_class_at_its_nice_value(remote: ProcessInference) -> None:
    # It loaded at normal priority; now every thread of it (the runtimes' pools too) is niced, and
    # whatever class the server runs in (it may be real-time), the worker is in the normal one.
    pid = remote.pid
    assert pid is not None and pid != os.getpid()
    assert os.sched_getscheduler(pid) == os.SCHED_OTHER
    niceness = {os.getpriority(os.PRIO_PROCESS, task) for task in _threads_of(pid)}
    assert niceness == {SETTINGS.agent.inference_nice}
    assert len(_threads_of(pid)) > 2


async def test_idle_class_and_pinning_when_configured() -> None:
    _require()
    cpu = min(os.sched_getaffinity(0))
    settings = build_settings(
        {"agent": {"inference": "process", "inference_sched": "idle", "inference_cpus": [cpu], "workers": 1}}
    )
    service = await ProcessInference.start(inference_config(settings))
    try:
        pid = service.pid
        assert pid is not None
        assert {os.sched_getscheduler(task) for task in _threads_of(pid)} == {os.SCHED_IDLE}
        assert os.sched_getaffinity(pid) == {cpu}
        [result] = await _run(service, Synthesize(1, "One."))
        assert isinstance(result, Synthesized) and result.audio.size  # it still works there
    finally:
        await service.aclose()


async def test_a_voice_that_cannot_load_is_a_model_load_error(tmp_path: Path) -> None:
    _require()
    missing = tmp_path / "no-such-voice.onnx"
    settings = build_settings({"tts": {"voice": str(missing)}, "agent": {"inference": "process"}})
    with pytest.raises(ModelLoadError, match="no-such-voice"):
        await ProcessInference.start(inference_config(settings))


async def test_a_dead_worker_fails_its_jobs_and_another_takes_over() -> None:
    _require()
    service = await ProcessInference.start(inference_config(SETTINGS))
    try:
        first = service.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)  # a crash, or the kernel's OOM killer
        [failed] = await _run(service, Transcribe(1, _utterance("speech-cards-001.pcap")))
        assert isinstance(failed, JobFailed) and "exited" in failed.reason  # failed, not hung
        for _ in range(600):  # a new worker loads the models (seconds)
            if service.restarts:
                break
            await asyncio.sleep(0.1)
        assert service.restarts == 1 and service.pid not in (None, first)
        [result] = await _run(service, Transcribe(2, _utterance("speech-cards-001.pcap")))
        assert isinstance(result, Transcribed) and result.transcript.text
    finally:
        await service.aclose()
