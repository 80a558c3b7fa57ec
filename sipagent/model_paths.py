"""Where the models live: the source tree's ``models/`` folder, the embedded defaults, and how a
configured model path is resolved.

Relative model paths in the configuration resolve against :data:`ROOT`, the source tree holding
``sipagent/`` and ``models/`` (an editable install, as ``make install`` makes), not against the
working directory: ``sipagent serve`` started from anywhere finds the defaults. Absolute paths are
used as they are. A leaf: the configuration imports it, and it imports nothing of the project.
"""

from __future__ import annotations

from pathlib import Path

#: The source tree: the folder holding the ``sipagent`` package and ``models/``.
ROOT = Path(__file__).resolve().parents[1]
#: Where the default models are installed.
MODELS_DIR = ROOT / "models"

#: faster-whisper (CTranslate2) model folder: Whisper tiny.en, int8.
DEFAULT_STT_MODEL = Path("models/whisper-tiny.en")
#: llama.cpp model: SmolLM2-135M-Instruct, re-encoded at install from the wheel's Q4_1 as Q8_0 (see
#: :data:`sipagent.voice.models.DERIVED`).
DEFAULT_LLM_MODEL = Path("models/SmolLM2-135M-Instruct.Q8_0.gguf")
#: Piper voice (its ``.onnx.json`` config sits beside it): en_US-joe-medium, 22.05 kHz.
DEFAULT_TTS_VOICE = Path("models/piper/en_US-joe-medium.onnx")


def resolve_model_path(path: Path) -> Path:
    """An absolute path: relative ones are taken from :data:`ROOT` (see the module docstring)."""
    path = path.expanduser()
    return path if path.is_absolute() else ROOT / path


__all__ = [
    "DEFAULT_LLM_MODEL",
    "DEFAULT_STT_MODEL",
    "DEFAULT_TTS_VOICE",
    "MODELS_DIR",
    "ROOT",
    "resolve_model_path",
]
