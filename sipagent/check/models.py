"""Are the configured models present, intact and loadable?

**Intact.** The embedded defaults are pinned file by file in :mod:`sipagent.voice.models` (the
sha256 and size ``scripts/fetch_models.py`` checked when it extracted them). A configured model is
matched to those pins by name, wherever it lies: a file model by its file name
(``SmolLM2-135M-Instruct.Q8_0.gguf``), a Whisper folder by the folder's name and each file in it
(``whisper-tiny.en/model.bin``). So a copy of a default elsewhere is checked too, and a file that
carries a default's name but not its bytes is reported, as ``fetch_models.py`` reports it. A model of
your own under another name has no pin: it is only loaded.

**Loadable.** Each model is opened the way the server opens it, cheaply: the Whisper folder by
faster-whisper, the GGUF's vocabulary and metadata by llama.cpp (not its weights) with its chat
template, the Piper voice and the ONNX models by onnxruntime. A file whose hash is wrong is not
loaded: a corrupted weight file can crash a native loader. ``--quick`` skips loading.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..config import Settings
from ..model_paths import MODELS_DIR, ROOT, resolve_model_path
from ..voice.models import DERIVED, MANIFEST, sha256_file
from .result import CheckResult, fail, first_line, ok, skip

_FETCH = "`make install` (scripts/fetch_models.py)"
#: What each kind of model is, in the fixes.
_KINDS = {
    "whisper": "faster-whisper (CTranslate2) folder",
    "gguf": "GGUF file",
    "piper": "Piper voice (.onnx with its .onnx.json)",
    "onnx": "ONNX model",
}


@dataclass(frozen=True)
class Pin:
    """A default model file's pinned hash and size, and where it is installed."""

    dest: str
    sha256: str
    size: int


def _pins() -> list[Pin]:
    items = [Pin(f.dest, f.sha256, f.size) for wheel in MANIFEST for f in wheel.files]
    return items + [Pin(d.dest, d.sha256, d.size) for d in DERIVED]


def _by_folder() -> dict[str, list[Pin]]:
    # A folder model (Whisper) is a folder of pinned files; piper/ only groups file models.
    folders: dict[str, list[Pin]] = {}
    for pin in _pins():
        parts = Path(pin.dest).parts
        if len(parts) == 2 and parts[0] != "piper":
            folders.setdefault(parts[0], []).append(pin)
    return folders


#: File models by file name; Whisper folders' files by the folder's name.
PINS_BY_NAME: dict[str, Pin] = {Path(p.dest).name: p for p in _pins()}
PINS_BY_FOLDER: dict[str, list[Pin]] = _by_folder()


@dataclass(frozen=True)
class ModelSpec:
    """One model the configuration uses: the check's name, its key, its path and how to load it."""

    name: str
    key: str
    path: Path
    #: "whisper" (a folder), "gguf", "piper" (.onnx with .onnx.json beside it) or "onnx".
    kind: str
    load: Callable[[], object]


def shown(path: Path) -> str:
    """A path as the user thinks of it: relative to the source tree for the defaults."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def files_of(spec: ModelSpec) -> list[tuple[Path, Pin | None]]:
    """The files a model is made of, each with its pin when it is a default's."""
    if spec.kind == "whisper":
        pins = PINS_BY_FOLDER.get(spec.path.name)
        if pins:
            return [(spec.path / Path(pin.dest).name, pin) for pin in pins]
        return [(spec.path / "model.bin", None), (spec.path / "config.json", None)]
    paths = [spec.path]
    if spec.kind == "piper":
        paths.append(Path(f"{spec.path}.json"))
    return [(path, PINS_BY_NAME.get(path.name)) for path in paths]


def _reinstall_fix(spec: ModelSpec) -> str:
    fix = "reinstall the default: scripts/fetch_models.py --force"
    if not spec.path.is_relative_to(MODELS_DIR):
        fix += f", then copy it again from {shown(MODELS_DIR)}/ or point {spec.key} there"
    return fix + "; a model of your own must not carry a default's name"


def check_model(spec: ModelSpec, *, load: bool) -> CheckResult:
    """Present, matching its pins, loadable (unless ``load`` is False)."""
    files = files_of(spec)
    for path, _pin in files:
        if not path.is_file():
            return fail(
                spec.name,
                f"{shown(path)} not found",
                f"install the defaults with {_FETCH}, or set {spec.key} to an existing {_KINDS[spec.kind]}",
            )
    pinned = 0
    for path, pin in files:
        if pin is None:
            continue
        size = path.stat().st_size
        if size != pin.size:
            return fail(
                spec.name,
                f"{shown(path)} is {size} bytes, the pinned default is {pin.size} (truncated or replaced)",
                _reinstall_fix(spec),
            )
        actual = sha256_file(path)
        if actual != pin.sha256:
            return fail(
                spec.name,
                f"{shown(path)}: sha256 {actual[:16]}… is not the pinned "
                f"{pin.sha256[:16]}… (corrupted or replaced)",
                _reinstall_fix(spec),
            )
        pinned += 1
    where = shown(spec.path)
    if pinned == len(files):
        intact = f"sha256 of {pinned} file{'s' * (pinned != 1)} as pinned"
    elif pinned:
        intact = f"{pinned} of {len(files)} files as pinned"
    else:
        intact = "not a default model: no pinned sha256"
    if not load:
        return ok(spec.name, f"{where}: {intact} (not loaded: --quick)")
    started = time.perf_counter()
    try:
        spec.load()
    except Exception as exc:  # any loader failure is the finding; the server would stop on it
        return fail(
            spec.name,
            f"{where} does not load: {first_line(exc)}",
            f"{spec.key} must be a {_KINDS[spec.kind]} this version reads: reinstall it "
            f"with {_FETCH}, or point {spec.key} at another",
        )
    return ok(spec.name, f"{where}: {intact}, loads ({time.perf_counter() - started:.1f} s)")


def configured_models(settings: Settings) -> list[ModelSpec]:
    """Every model ``serve`` would load with these settings (none in echo mode)."""
    if settings.mode != "agent":
        return []
    specs = [_stt(settings)]
    if settings.llm.backend == "llama":
        specs.append(_llm(settings))
    specs.append(_tts("model.tts", "tts.voice", settings.tts.voice, settings))
    for i, route in enumerate(settings.routes):
        if route.voice:
            voice = resolve_model_path(Path(route.voice))
            if voice != settings.tts.voice:
                specs.append(_tts(f"model.tts.routes[{i}]", f"routes[{i}].voice", voice, settings))
    if settings.agent.vad == "silero":
        specs.append(_silero())
    if settings.agent.turn_model == "smart-turn":
        specs.append(_smart_turn())
    return specs


def not_loaded(settings: Settings) -> list[CheckResult]:
    """Lines for what agent mode would load but this configuration does not."""
    if settings.mode != "agent":
        return [skip("model", "echo mode: no models are loaded")]
    if settings.llm.backend == "openai":
        assert settings.llm.openai is not None
        return [
            skip(
                "model.llm",
                f"served by {settings.llm.openai.base_url.split('//', 1)[-1].split('/')[0]} "
                "(llm.openai): nothing to load here",
            )
        ]
    return []


def _stt(settings: Settings) -> ModelSpec:
    stt = settings.stt

    def load() -> object:
        from ..voice.stt import WhisperTranscriber

        return WhisperTranscriber(
            stt.model,
            device=stt.device,
            compute_type=stt.compute_type,
            cpu_threads=1,
            num_workers=1,
            window_s=stt.window_s,
        )

    return ModelSpec("model.stt", "stt.model", stt.model, "whisper", load)


def _llm(settings: Settings) -> ModelSpec:
    llm = settings.llm

    def load() -> object:
        # The vocabulary and metadata only (vocab_only): enough to prove the GGUF is one llama.cpp
        # reads, with a chat template the server can format turns with, in a tenth of a second.
        import llama_cpp

        from ..voice import llm_llama

        if llm_llama.LlamaCppChat._log_callback is None:
            llm_llama.LlamaCppChat._log_callback = llm_llama._route_llama_logs()
        # First through the C API: a file llama.cpp refuses gives NULL there, where the Python
        # wrapper would leave a half-built object that complains on stderr when collected.
        params = llama_cpp.llama_model_default_params()
        params.vocab_only = True
        with _collected(llm_llama._log) as errors:
            probe = llama_cpp.llama_model_load_from_file(str(llm.model).encode(), params)
        if not probe:
            why = errors[0].removeprefix("llama.cpp: ") if errors else "not a GGUF model it knows"
            raise RuntimeError(f"llama.cpp cannot read it: {why}")
        llama_cpp.llama_model_free(probe)
        model = llama_cpp.Llama(model_path=str(llm.model), vocab_only=True, n_ctx=256, verbose=False)
        try:
            llm_llama._make_formatter(model, llm.chat_format, llm.model.name)
        finally:
            model.close()
        return model

    return ModelSpec("model.llm", "llm.model", llm.model, "gguf", load)


@contextlib.contextmanager
def _collected(logger: logging.Logger) -> Iterator[list[str]]:
    """The ERROR lines ``logger`` gets meanwhile, kept for the detail instead of printed on stderr."""
    errors: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            errors.append(record.getMessage())

    handler = Collect(logging.ERROR)
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield errors
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _tts(name: str, key: str, voice: Path, settings: Settings) -> ModelSpec:
    tts = settings.tts

    def load() -> object:
        from ..voice.tts import PiperSynthesizer

        return PiperSynthesizer(
            voice, length_scale=tts.length_scale, speaker=tts.speaker, threads=1, use_cuda=tts.use_cuda
        )

    return ModelSpec(name, key, voice, "piper", load)


def _silero() -> ModelSpec:
    from ..voice.silero_vad import DEFAULT_SILERO_MODEL

    def load() -> object:
        from ..voice.silero_vad import SileroModel

        return SileroModel()

    return ModelSpec("model.vad", "agent.vad", resolve_model_path(DEFAULT_SILERO_MODEL), "onnx", load)


def _smart_turn() -> ModelSpec:
    from ..voice.smart_turn import DEFAULT_SMART_TURN_MODEL

    def load() -> object:
        from ..voice.smart_turn import SmartTurn

        return SmartTurn()

    path = resolve_model_path(DEFAULT_SMART_TURN_MODEL)
    return ModelSpec("model.turn", "agent.turn_model", path, "onnx", load)


__all__ = ["ModelSpec", "check_model", "configured_models", "files_of", "not_loaded", "sha256_file"]
