"""Text to speech: text in, 8 kHz int16 audio out, streamed one sentence at a time.

:class:`Synthesizer` is the interface the pipeline uses; :class:`PiperSynthesizer` runs a Piper voice
(ONNX, phonemes from the espeak-ng bundled in piper-tts) in-process and ``tests/fakes.py`` has a fake that
makes tones of a plausible length for tests of timing and control flow.

``synthesize`` is a lazy iterator: each ``next()`` synthesizes the next sentence, so the first audio
is ready after one sentence's work, and a barge-in simply stops iterating (nothing more is computed).
Run it on a worker thread: onnxruntime releases the GIL, and one loaded voice may serve every call
(onnxruntime sessions are thread-safe; piper-tts locks its phonemizer).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import numpy.typing as npt

from .resample import to_telephone

if TYPE_CHECKING:
    from ..config import TtsSettings


class Synthesizer(Protocol):
    """Speaks text as 8 kHz int16 audio, chunk by chunk (one sentence each)."""

    def synthesize(self, text: str) -> Iterator[npt.NDArray[np.int16]]:
        """Yield mono int16 chunks at 8 kHz; nothing for text with nothing to say."""
        ...


#: Below this peak (about -54 dBFS) a Piper sample is the silence it starts an utterance with.
_LEAD_SILENCE_PEAK = 64
#: Kept before the first louder sample: a soft onset ("h", "f") rises from below the threshold.
_LEAD_KEEP_SAMPLES = 80  # 10 ms at 8 kHz


def trim_leading_silence(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    """``pcm`` without the silence Piper puts before the first word, up to 10 ms before it.

    Piper starts an utterance with 20-60 ms of silence, and at random much more (68-400 ms
    before "He was not ..." over five runs). At the start of a reply the caller waits through all of it.
    Audio that is silent throughout comes back unchanged.
    """
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) >= _LEAD_SILENCE_PEAK)
    if loud.size == 0:
        return pcm
    return pcm[max(0, int(loud[0]) - _LEAD_KEEP_SAMPLES) :]


def synthesize_whole(synthesizer: Synthesizer, text: str) -> npt.NDArray[np.int16]:
    """All of ``text``'s audio as one array (empty for nothing to say): for a caller that speaks
    one clause at a time and so wants no chunk before the last is made."""
    parts = list(synthesizer.synthesize(text))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)


class PiperSynthesizer:
    """A Piper voice (``.onnx`` + ``.onnx.json``), loaded once, resampled to 8 kHz per chunk."""

    def __init__(
        self,
        voice_path: Path,
        *,
        length_scale: float | None = None,
        speaker: int | None = None,
        volume: float = 0.5,
        threads: int = 1,
        use_cuda: bool = False,
    ) -> None:
        """Load the voice; its config is ``<voice_path>.json``.

        ``length_scale`` < 1 speaks faster (default: the voice's own); ``speaker`` picks a speaker of a
        multi-speaker voice; ``volume`` scales each sentence after Piper's peak normalisation (0.5
        peaks at -6 dBFS, leaving headroom for G.711 and for the resampler's overshoot);
        ``threads`` per synthesis (0: onnxruntime chooses; one is as fast as two on 2 cores for
        sentence-sized inputs and leaves the other core to the other models); ``use_cuda`` needs
        onnxruntime-gpu.
        """
        voice_path = Path(voice_path)
        config_path = Path(f"{voice_path}.json")
        for path in (voice_path, config_path):
            if not path.is_file():
                raise FileNotFoundError(
                    f"no Piper voice file {path}; "
                    "run `make install` (scripts/fetch_models.py) or set tts.voice"
                )
        # Imported here so that the fakes and the configuration need no onnxruntime.
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig, SynthesisConfig

        config = PiperConfig.from_dict(json.loads(config_path.read_text(encoding="utf-8")))
        if speaker is not None and speaker >= max(config.num_speakers, 1):
            raise ValueError(
                f"tts.speaker: {voice_path.name} has {config.num_speakers} speaker(s), not {speaker + 1}"
            )
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        # Idle pool threads otherwise spin on a core between operators: on 2 cores that took the CPU
        # Whisper and llama.cpp need, and made the sentence itself twice as slow (median 220 ms
        # against 110 ms for "Hello, how can I help you today?").
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        providers = ["CPUExecutionProvider"]
        if use_cuda:
            if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
                raise RuntimeError("tts.use_cuda: onnxruntime has no CUDA provider (install onnxruntime-gpu)")
            providers.insert(0, "CUDAExecutionProvider")
        # Built here rather than with PiperVoice.load, which offers no way to bound the thread count.
        self._voice = PiperVoice(
            session=onnxruntime.InferenceSession(str(voice_path), sess_options=options, providers=providers),
            config=config,
        )
        self._syn_config = SynthesisConfig(
            speaker_id=speaker, length_scale=length_scale, normalize_audio=True, volume=volume
        )
        self.voice_path = voice_path
        #: The rate the voice speaks at (resampled to 8 kHz on the way out).
        self.voice_rate = config.sample_rate

    @classmethod
    def from_settings(cls, settings: TtsSettings) -> PiperSynthesizer:
        """Build from the ``[tts]`` configuration section."""
        return cls(
            settings.voice,
            length_scale=settings.length_scale,
            speaker=settings.speaker,
            volume=settings.volume,
            threads=settings.threads,
            use_cuda=settings.use_cuda,
        )

    def synthesize(self, text: str) -> Iterator[npt.NDArray[np.int16]]:
        """One chunk per sentence (Piper splits sentences while phonemizing), 8 kHz int16."""
        if not text.strip():
            return
        for chunk in self._voice.synthesize(text, syn_config=self._syn_config):
            yield to_telephone(chunk.audio_float_array, chunk.sample_rate)
