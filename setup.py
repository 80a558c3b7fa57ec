"""Build hook: compile the media engine's per-packet modules with mypyc.

Everything else about the package is declared in ``pyproject.toml``. The modules in
``sipagent/compiled_modules.txt`` run for every call 50 times a second each way; compiled, they cost
about a third less CPU per call-tick, which is what lets one core carry 250 calls with on-time packets
(docs/decisions/0007). They stay plain, typed Python: ``SIPAGENT_PURE_PYTHON=1`` builds without
compiling, and a source edited after the build is noticed at import (``sipagent/_compiled.py``) and
runs as Python.
"""

from __future__ import annotations

import os
from pathlib import Path

from setuptools import setup

#: The one list of compiled modules, shared with the stale-build guard and the Makefile. Read as text:
#: setup.py runs before sipagent (and its dependencies) can be imported.
COMPILED_LIST = Path(__file__).resolve().parent / "sipagent" / "compiled_modules.txt"


def compiled_sources() -> list[str]:
    """The paths in ``sipagent/compiled_modules.txt``, relative to this directory."""
    lines = (line.partition("#")[0].strip() for line in COMPILED_LIST.read_text().splitlines())
    return [line for line in lines if line]


def ext_modules() -> list[object]:
    if os.environ.get("SIPAGENT_PURE_PYTHON") == "1":
        return []
    from mypyc.build import mypycify

    return list(mypycify(compiled_sources(), opt_level="3", group_name="sipagent_media"))


setup(ext_modules=ext_modules())
