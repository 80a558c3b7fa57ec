"""Call recordings: which calls are recorded, and the one stereo WAV each becomes (decision 0031).

**Which calls.** ``[recording] enabled = true`` records every call; a route's ``record`` overrides it
for that route's calls (inbound: the route of the dialled number; outbound: ``[outbound] route``):
``record = true`` records them even when ``[recording]`` is off, ``record = false`` never records
them. The decision is made per call when the call is admitted (inbound) or placed (outbound).

**One file a call.** ``<directory>/<YYYYMMDD>-<HHMMSS>Z-<call id, made safe>.wav``: 8 kHz 16-bit
stereo, the caller on the left channel and the agent on the right, tick by tick on the call's 20 ms
clock (:class:`~sipagent.rtp.recorder.CallRecorder`), from the answer to the hang-up. The time is
the answer's, in UTC, so a listing sorts by time and two calls never share a name unless they share
both the second and the Call-ID (then ``+2``, ``+3``… is added: ``+`` is never in the
safe Call-ID, so one call's name is never another's). The directory is made 0700 and the
file 0600, whatever the umask: a call's audio is personal data.

**This module does file I/O** (a ``mkdir`` and an exclusive ``open`` when a call is answered),
called by the phone service on the server's loop, like the recorder's own opening.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "RecordingPolicy",
    "create_recording_file",
    "recording_name",
    "recordings_of",
    "safe_call_id",
]

DIR_MODE = 0o700
FILE_MODE = 0o600
#: Longest part of a file name taken from the Call-ID (Call-IDs are free text, often long).
MAX_ID_CHARS = 80
#: Most names tried for one call before giving up (a ``+N`` suffix each).
_MAX_ATTEMPTS = 100
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class RecordingPolicy:
    """``[recording]`` and the routes' ``record``: whether a call is recorded, and where."""

    directory: Path
    #: ``[recording] enabled``: every call whose route does not say otherwise.
    every_call: bool = False

    def records(self, route_record: bool | None) -> bool:
        """Whether a call on a route with ``record = route_record`` (None: unset) is recorded."""
        return self.every_call if route_record is None else route_record


def safe_call_id(call_id: str) -> str:
    """The Call-ID as a file name part: ASCII letters, digits and ``_ . -`` kept, anything else ``_``
    (a Call-ID is chosen by the far end: never a path separator). A longer one than
    :data:`MAX_ID_CHARS` is cut and ends with a hash of the whole, so two long Call-IDs that share
    their start do not share a name."""
    safe = _UNSAFE.sub("_", call_id) or "_"
    if len(safe) <= MAX_ID_CHARS:
        return safe
    digest = hashlib.sha256(call_id.encode()).hexdigest()[:8]
    return f"{safe[: MAX_ID_CHARS - 9]}-{digest}"


def recording_name(call_id: str, when: datetime) -> str:
    """``YYYYMMDD-HHMMSSZ-<safe call id>.wav`` for a call answered at ``when`` (made UTC)."""
    stamp = when.astimezone(UTC).strftime("%Y%m%d-%H%M%SZ")
    return f"{stamp}-{safe_call_id(call_id)}.wav"


def create_recording_file(directory: Path, call_id: str, when: datetime | None = None) -> Path:
    """Make the directory (0700) and a new, empty file (0600) for the call's recording; returns its
    absolute path. Never opens an existing file: a name taken gets ``+2``, ``+3``… Raises OSError."""
    directory = _private_directory(directory)
    name = recording_name(call_id, when or datetime.now(UTC))
    stem = name.removesuffix(".wav")
    for attempt in range(1, _MAX_ATTEMPTS + 1):
        path = directory / (name if attempt == 1 else f"{stem}+{attempt}.wav")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileExistsError:
            continue
        try:
            os.fchmod(fd, FILE_MODE)  # the umask may have taken bits off (0400 would not be writable)
        finally:
            os.close(fd)
        return path
    raise FileExistsError(f"{directory / name}: {_MAX_ATTEMPTS} recordings of this call already")


def recordings_of(directory: Path, call_id: str) -> list[Path]:
    """The files :func:`create_recording_file` may have made for ``call_id`` in ``directory`` (the
    purge's fallback when a call's row lost its path)."""
    safe = safe_call_id(call_id)
    if not directory.is_dir():
        return []
    pattern = re.compile(rf"\d{{8}}-\d{{6}}Z-{re.escape(safe)}(\+\d+)?\.wav")
    return sorted(p for p in directory.iterdir() if pattern.fullmatch(p.name))


def _private_directory(directory: Path) -> Path:
    """``directory`` made absolute and created 0700 if missing; an existing one is tightened to 0700
    when others may read it (the working directory itself is left alone: it is not ours)."""
    directory = directory.resolve()
    if not directory.exists():
        directory.mkdir(mode=DIR_MODE, parents=True)
        os.chmod(directory, DIR_MODE)  # mkdir's mode goes through the umask
    elif directory != Path.cwd().resolve():
        mode = stat.S_IMODE(directory.stat().st_mode)
        if mode & 0o077:
            # Best effort: a directory someone else owns stays as it is (each file is 0600 anyway).
            with suppress(OSError):
                os.chmod(directory, mode & ~0o077)
    return directory
