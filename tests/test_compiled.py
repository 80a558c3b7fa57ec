"""The mypyc build of the media engine: the one list of compiled modules, the stale-build guard (a
stale build is not used and nothing is deleted), and that `make test` tests compiled code."""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import runpy
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipagent import _compiled

REPO = Path(__file__).resolve().parent.parent
#: Not an extension at all: loading it as one fails, so a test can tell which file an import used.
_BROKEN_BUILD = b"not a shared object"


@pytest.fixture
def fake_package(tmp_path: Path) -> Iterator[Path]:
    """An importable package ``fakepkg`` in ``tmp_path``; forgotten again after the test."""
    package = tmp_path / "fakepkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (tmp_path / "compiled.txt").write_text("# the group\nfakepkg/alpha.py\nfakepkg/beta.py  # trailing\n\n")
    sys.path.insert(0, str(tmp_path))
    yield package
    sys.path.remove(str(tmp_path))
    for name in [name for name in sys.modules if name.partition(".")[0] == "fakepkg"]:
        del sys.modules[name]
    importlib.invalidate_caches()


def _fake_build(package: Path, built_at: float) -> list[Path]:
    """Sources saying where they were loaded from, and a (broken) extension beside each."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    extensions = []
    for name in ("alpha", "beta"):
        source, extension = package / f"{name}.py", package / f"{name}{suffix}"
        source.write_text("LOADED_FROM = 'source'\n")
        extension.write_bytes(_BROKEN_BUILD)
        os.utime(source, (built_at, built_at))
        os.utime(extension, (built_at, built_at))
        extensions.append(extension)
    return extensions


def _group(tmp_path: Path) -> dict[str, Path]:
    return _compiled.compiled_modules(tmp_path / "compiled.txt", root=tmp_path)


def test_the_list_is_read_with_comments_and_blank_lines(fake_package: Path, tmp_path: Path) -> None:
    assert _group(tmp_path) == {
        "fakepkg.alpha": fake_package / "alpha.py",
        "fakepkg.beta": fake_package / "beta.py",
    }


def test_setup_py_and_the_guard_read_the_same_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """setup.py cannot import sipagent (it runs before the dependencies are installed): it reads the
    same text file, and gets the same modules."""
    monkeypatch.setattr("setuptools.setup", lambda **_: None)  # load setup.py, build nothing
    monkeypatch.setenv("SIPAGENT_PURE_PYTHON", "1")
    paths = runpy.run_path(str(REPO / "setup.py"))["compiled_sources"]()
    from_setup = {path.removesuffix(".py").replace("/", ".") for path in paths}
    assert from_setup == set(_compiled.compiled_modules())
    assert {"sipagent.errors", "sipagent.rtp.packet", "sipagent.net.media"} <= from_setup
    assert all((REPO / path).is_file() for path in paths)


def test_current_builds_are_kept(fake_package: Path, tmp_path: Path) -> None:
    extensions = _fake_build(fake_package, time.time() - 100)
    assert _compiled.guard_stale_builds(_group(tmp_path)) == []
    assert not any(isinstance(finder, _compiled.SourcesFirst) for finder in sys.meta_path)
    assert all(extension.read_bytes() == _BROKEN_BUILD for extension in extensions)


def test_an_edited_source_runs_the_group_from_source_and_deletes_nothing(
    fake_package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extensions = _fake_build(fake_package, time.time() - 100)
    os.utime(fake_package / "beta.py")  # edited now, after the build
    # Without the guard the broken extensions would be loaded (and fail): Python prefers them.
    with pytest.raises(ImportError):
        importlib.import_module("fakepkg.alpha")
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))  # the finder goes with the test
    with pytest.warns(RuntimeWarning, match="fakepkg.beta changed since compiled"):
        assert _compiled.guard_stale_builds(_group(tmp_path)) == ["fakepkg.beta"]
    for name in ("fakepkg.alpha", "fakepkg.beta"):  # alpha too: one group
        sys.modules.pop(name, None)
        module = importlib.import_module(name)
        assert module.LOADED_FROM == "source"
        assert module.__file__ == str(fake_package / f"{name.rpartition('.')[2]}.py")
    assert all(extension.read_bytes() == _BROKEN_BUILD for extension in extensions)  # nothing deleted


def test_the_finder_leaves_other_modules_to_the_next_finder(tmp_path: Path) -> None:
    finder = _compiled.SourcesFirst({"fakepkg.alpha": tmp_path / "alpha.py"})
    assert finder.find_spec("json", None) is None
    spec = finder.find_spec("fakepkg.alpha", None)
    assert spec is not None and spec.origin == str(tmp_path / "alpha.py")


@pytest.mark.skipif(os.environ.get("SIPAGENT_EXPECT_COMPILED") != "1", reason="set by `make test`")
def test_make_test_runs_the_compiled_media_engine() -> None:
    assert _compiled.media_engine_compiled()
