"""Which media modules run compiled (mypyc, see ``setup.py``), and a guard against stale builds.

An editable install compiles ``sipagent/rtp`` and the media adapter in ``sipagent/net`` in place,
and Python prefers an extension module
to the ``.py`` beside it: a source edited after the build would silently not run. Before any of
those modules is imported, :func:`drop_stale_builds` compares each source with its extension and,
if one was edited later, removes the compiled modules (they are one group, compiled together, so
all of them) and warns: the edited sources then run as Python until the next ``make install``.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import sys
import warnings
from pathlib import Path

#: The modules ``setup.py`` compiles, as paths below ``sipagent/`` without ``.py``.
COMPILED_MODULES = (
    "rtp/events",
    "rtp/frames",
    "rtp/g711",
    "rtp/packet",
    "rtp/plc",
    "rtp/jitter",
    "rtp/pacer",
    "rtp/rtcp",
    "rtp/dtmf",
    "rtp/session",
    "rtp/window",
    "net/media_clock",
    "net/media",
)
_ROOT = Path(__file__).resolve().parent
#: Wheels and sdists unpack sources and extensions within moments of each other; an edit is later.
_SLACK_S = 2.0


def _extension(name: str) -> Path | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = _ROOT / f"{name}{suffix}"
        if path.exists():
            return path
    return None


def drop_stale_builds() -> list[str]:
    """Remove the compiled media modules if any source is newer than its build; returns the
    names of the stale sources (empty when everything is current or nothing is compiled)."""
    stale: list[str] = []
    extensions: list[Path] = []
    for name in COMPILED_MODULES:
        extension = _extension(name)
        if extension is None:
            continue
        extensions.append(extension)
        source = _ROOT / f"{name}.py"
        if source.exists() and source.stat().st_mtime > extension.stat().st_mtime + _SLACK_S:
            stale.append(name)
    if not stale:
        return []
    if any(f"sipagent.{name.replace('/', '.')}" in sys.modules for name in COMPILED_MODULES):
        return stale  # too late to switch this process; the next one will
    for extension in extensions:
        with contextlib.suppress(OSError):  # read-only install: the warning still says why
            extension.unlink()
    warnings.warn(
        f"sipagent: {', '.join(stale)} changed since they were compiled; running the media engine as "
        "plain Python (slower) until `make install` compiles it again",
        RuntimeWarning,
        stacklevel=2,
    )
    return stale


def media_engine_compiled() -> bool:
    """Whether the media engine's per-packet modules run as compiled code in this process."""
    from .net import media
    from .rtp import session

    return not any(str(module.__file__).endswith(".py") for module in (session, media))
