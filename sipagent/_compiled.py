"""Which modules run compiled (mypyc, see ``setup.py``), and a guard against stale builds.

An editable install compiles the modules listed in ``compiled_modules.txt`` in place, and Python
prefers an extension module to the ``.py`` beside it: a source edited after the build would silently
not run. When :mod:`sipagent` is imported, before any of those modules, :func:`guard_stale_builds`
compares each source with its extension. If one was edited later, it puts a :class:`SourcesFirst`
finder at the front of ``sys.meta_path`` that loads every module of the group from its ``.py`` (they
are compiled together, and compiled code calls its group-mates directly, so all of them or none), and
warns. Nothing is deleted: the build stays where it is, unused by this process, until ``make install``
compiles it again; a fresh build makes the guard step aside.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType

_PACKAGE = Path(__file__).resolve().parent
#: The one list of compiled modules, also read by ``setup.py`` and the Makefile.
COMPILED_LIST = _PACKAGE / "compiled_modules.txt"
#: Wheels and sdists unpack sources and extensions within moments of each other; an edit is later.
_SLACK_S = 2.0


def compiled_modules(listing: Path = COMPILED_LIST, root: Path = _PACKAGE.parent) -> dict[str, Path]:
    """The compiled group as ``{module name: source path}``, read from ``listing``.

    Its lines are paths relative to ``root`` (the directory holding the ``sipagent`` package);
    ``#`` starts a comment.
    """
    modules: dict[str, Path] = {}
    for line in listing.read_text().splitlines():
        relative = line.partition("#")[0].strip()
        if relative:
            modules[relative.removesuffix(".py").replace("/", ".")] = root / relative
    return modules


def _extension(source: Path) -> Path | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = source.with_name(source.stem + suffix)
        if path.exists():
            return path
    return None


def stale_sources(modules: Mapping[str, Path]) -> list[str]:
    """The modules whose source was edited after its extension was built (empty when every build is
    current or nothing is compiled)."""
    stale: list[str] = []
    for name, source in modules.items():
        extension = _extension(source)
        if extension is None or not source.exists():
            continue
        if source.stat().st_mtime > extension.stat().st_mtime + _SLACK_S:
            stale.append(name)
    return stale


class SourcesFirst(importlib.abc.MetaPathFinder):
    """Loads the named modules from their ``.py`` sources, whatever extension sits beside them."""

    def __init__(self, sources: Mapping[str, Path]) -> None:
        self.sources = dict(sources)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        """A source spec for a module of the group; ``None`` (ask the next finder) for any other."""
        source = self.sources.get(fullname)
        if source is None:
            return None
        return importlib.util.spec_from_file_location(fullname, source)


def guard_stale_builds(modules: Mapping[str, Path] | None = None) -> list[str]:
    """Make this process run the compiled group as Python if any of its sources is newer than its
    build, and warn; returns the stale modules' names. Deletes nothing."""
    group = compiled_modules() if modules is None else modules
    stale = stale_sources(group)
    if not stale:
        return []
    # The import system is process-wide by nature: the finder must see every later import of the
    # group, wherever it comes from. Installed once, whatever the number of calls.
    if not any(isinstance(finder, SourcesFirst) for finder in sys.meta_path):
        sys.meta_path.insert(0, SourcesFirst(group))
    warnings.warn(
        f"sipagent: {', '.join(stale)} changed since compiled; running the media engine as plain "
        "Python (slower) until `make install` compiles it again",
        RuntimeWarning,
        stacklevel=2,
    )
    return stale


def media_engine_compiled() -> bool:
    """Whether every module of the compiled group runs as compiled code in this process."""
    # By name: this module is imported by sipagent/__init__.py, before the modules it checks.
    modules = [importlib.import_module(name) for name in compiled_modules()]
    return not any(str(module.__file__).endswith(".py") for module in modules)
