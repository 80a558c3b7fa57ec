"""Build hook: compile the media engine's per-packet modules with mypyc.

Everything else about the package is declared in ``pyproject.toml``. The modules below run for
every call 50 times a second each way; compiled, they cost about a third less CPU per call-tick,
which is what lets one core carry 250 calls with on-time packets (docs/decisions/0007). They stay
plain, typed Python: ``SIPAGENT_PURE_PYTHON=1`` builds without compiling, and a source edited
after the build is noticed at import (``sipagent/_compiled.py``) and runs as Python.
"""

from __future__ import annotations

import os

from setuptools import setup

#: The per-packet path: parse, jitter buffer and concealment, pacer, RTCP statistics, DTMF, the
#: session that ties them, and the small types they pass around.
COMPILED = [
    "sipagent/rtp/events.py",
    "sipagent/rtp/frames.py",
    "sipagent/rtp/g711.py",
    "sipagent/rtp/packet.py",
    "sipagent/rtp/plc.py",
    "sipagent/rtp/jitter.py",
    "sipagent/rtp/pacer.py",
    "sipagent/rtp/rtcp.py",
    "sipagent/rtp/dtmf.py",
    "sipagent/rtp/session.py",
    "sipagent/rtp/window.py",
    # The asyncio adapter's per-tick path: the shared clock and each call's sockets (decision 0013).
    "sipagent/net/media_clock.py",
    "sipagent/net/media.py",
]


def ext_modules() -> list[object]:
    if os.environ.get("SIPAGENT_PURE_PYTHON") == "1":
        return []
    from mypyc.build import mypycify

    return list(mypycify(COMPILED, opt_level="3", group_name="sipagent_media"))


setup(ext_modules=ext_modules())
