"""The mypyc build of the media engine: the stale-build guard, and that `make test` tests compiled code."""

from __future__ import annotations

import importlib.machinery
import os
import time
from pathlib import Path

import pytest

from sipagent import _compiled


def _fake_build(folder: Path, names: tuple[str, ...], built_at: float) -> list[Path]:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    extensions = []
    for name in names:
        source, extension = folder / f"{name}.py", folder / f"{name}{suffix}"
        source.write_text("")
        extension.write_bytes(b"")
        os.utime(source, (built_at, built_at))
        os.utime(extension, (built_at, built_at))
        extensions.append(extension)
    return extensions


def test_current_builds_are_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_compiled, "_ROOT", tmp_path)
    monkeypatch.setattr(_compiled, "COMPILED_MODULES", ("alpha", "beta"))
    extensions = _fake_build(tmp_path, ("alpha", "beta"), time.time() - 100)
    assert _compiled.drop_stale_builds() == []
    assert all(extension.exists() for extension in extensions)


def test_an_edited_source_drops_the_compiled_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_compiled, "_ROOT", tmp_path)
    monkeypatch.setattr(_compiled, "COMPILED_MODULES", ("alpha", "beta"))
    extensions = _fake_build(tmp_path, ("alpha", "beta"), time.time() - 100)
    os.utime(tmp_path / "beta.py")  # edited now, after the build
    with pytest.warns(RuntimeWarning, match="beta changed since they were compiled"):
        assert _compiled.drop_stale_builds() == ["beta"]
    assert not any(extension.exists() for extension in extensions)  # alpha too: one group


@pytest.mark.skipif(os.environ.get("SIPAGENT_EXPECT_COMPILED") != "1", reason="set by `make test`")
def test_make_test_runs_the_compiled_media_engine() -> None:
    assert _compiled.media_engine_compiled()
