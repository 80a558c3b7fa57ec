"""The call store's file, the lifecycle webhooks and the tools' header variables.

**Store.** ``serve`` opens ``[store] path`` with :class:`~sipagent.product.store.CallStore`: it makes
the missing folders (0700), creates the file (0600) and writes ``-wal``/``-shm`` files beside it. The
check proves the same can happen without leaving anything behind: an existing file is opened for
writing (not created, not changed) and its SQLite header read (a file of another program, or of a
newer schema, is refused as ``serve`` would refuse it); for a missing file, a scratch folder is made
and removed in the nearest folder that exists, which is where ``serve`` would start creating.

**Recordings.** When any call is recorded, ``[recording] directory`` is checked the same way (a
folder this user can create files in, or one it can make), and its free space is given in hours of
recording: a full disk would end recordings mid-call.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from ..config import Settings
from .result import CheckResult, fail, ok, skip, warn

#: An SQLite 3 database starts with this; its ``user_version`` is the big-endian int at offset 60.
_SQLITE_MAGIC = b"SQLite format 3\x00"
_USER_VERSION_AT = 60
_STORE_KEYS = "[store] path (--store-path)"
_RECORDING_KEY = "[recording] directory"
#: A recording is 8 kHz, 16-bit, two channels: 32 000 bytes a second.
_RECORDING_BYTES_PER_HOUR = 8000 * 2 * 2 * 3600
#: Less room than this is worth a warning (a busy day of calls).
_RECORDING_HOURS_WARN = 10


def _nearest_existing(path: Path) -> Path:
    at = path
    while not at.exists() and at != at.parent:
        at = at.parent
    return at


def _can_create_in(directory: Path) -> OSError | None:
    """Make and remove a scratch folder in ``directory`` (what ``serve`` does first is a mkdir)."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".sipagent-check-", dir=directory))
    except OSError as exc:
        return exc
    return None


def _cannot_create(name: str, shown: str, folder: Path, keys: str) -> tuple[Path, CheckResult | None]:
    """The nearest existing folder of ``folder`` (where ``serve`` would start creating), and a red
    result about ``shown`` when nothing can be made there: a file in the way, or no write access."""
    base = _nearest_existing(folder)
    if not base.is_dir():
        return base, fail(
            name, f"{shown} cannot be created: {base} is a file, not a folder", f"choose another {keys}"
        )
    error = _can_create_in(base)
    if error is not None:
        return base, fail(
            name,
            f"{shown} cannot be created: {base} refuses new files ({error.strerror})",
            f"give the server's user write access to {base}, or choose another {keys}",
        )
    return base, None


def check_store(settings: Settings) -> CheckResult:
    """``store``: the database can be opened (or created) for writing by this user."""
    from ..product.store_schema import SCHEMA_VERSION

    name = "store"
    store = settings.store
    if not store.enabled:
        return skip(name, "the call store is off ([store] enabled = false)")
    path = store.path
    shown = str(path)
    if path.is_dir():
        return fail(name, f"{shown} is a folder", f"name the database file itself: {_STORE_KEYS}")
    if path.exists():
        try:
            with path.open("r+b") as handle:
                header = handle.read(100)
        except OSError as exc:
            return fail(
                name,
                f"{shown} cannot be opened for writing: {exc.strerror}",
                f"give the server's user write access (chown/chmod 600), or choose {_STORE_KEYS}",
            )
        if header and not header.startswith(_SQLITE_MAGIC):
            return fail(
                name,
                f"{shown} is not an SQLite database",
                f"move it away, or point {_STORE_KEYS} at another file",
            )
        version = int.from_bytes(header[_USER_VERSION_AT : _USER_VERSION_AT + 4], "big") if header else 0
        if version > SCHEMA_VERSION:
            return fail(
                name,
                f"{shown} has schema version {version}, newer than this sipagent's {SCHEMA_VERSION}",
                f"upgrade sipagent, or point {_STORE_KEYS} elsewhere",
            )
        directory_error = _can_create_in(path.parent)
        if directory_error is not None:
            return fail(
                name,
                f"{path.parent} does not let this user create the -wal/-shm files "
                f"beside {path.name}: {directory_error.strerror}",
                f"give the server's user write access to {path.parent}",
            )
        return ok(name, f"{shown}: writable (schema version {version})")
    base, red = _cannot_create(name, shown, path.parent, _STORE_KEYS)
    if red is not None:
        return red
    made = "" if base == path.parent else f" (serve makes {path.parent}, 0700)"
    return ok(name, f"{shown}: will be created on start{made}")


def check_recordings(settings: Settings) -> CheckResult:
    """``recordings``: when any call is recorded, its folder can take new files, and has room."""
    name = "recordings"
    recording = settings.recording
    if not recording.enabled and not any(route.record for route in settings.routes):
        return skip(name, "no call is recorded ([recording] enabled and every route's record are off)")
    directory = recording.directory
    shown = str(directory)
    base, red = _cannot_create(name, shown, directory, _RECORDING_KEY)
    if red is not None:
        return red
    hours = shutil.disk_usage(base).free / _RECORDING_BYTES_PER_HOUR
    made = "" if base == directory else " (serve makes it, 0700)"
    detail = f"{shown}{made}: room for {hours:,.0f} hours of calls"
    if hours < _RECORDING_HOURS_WARN:
        return warn(name, detail, f"free space on {base}, or choose another {_RECORDING_KEY}")
    return ok(name, detail)


def check_webhooks(settings: Settings, environ: dict[str, str] | None = None) -> CheckResult:
    """``webhooks``: a usable URL and the signing secret in its variable (``serve`` needs it)."""
    name = "webhooks"
    hooks = settings.webhooks
    if hooks is None:
        return skip(name, "no [webhooks] url")
    env = dict(os.environ) if environ is None else environ
    parts = urlsplit(hooks.url)
    host = parts.hostname or ""
    if not host:
        return fail(name, "webhooks.url has no host", "write the receiver's full URL: https://host/path")
    if parts.username or parts.password:
        return fail(
            name,
            "webhooks.url carries a user or password, which would be logged and sent with every event",
            "remove them: receivers check the X-Sipagent-Signature header",
        )
    if not env.get(hooks.secret_env):
        return fail(
            name,
            f"${hooks.secret_env} (webhooks.secret_env) is not set: serve refuses to start",
            f'export {hooks.secret_env}="$(openssl rand -hex 32)" and give the receiver the same '
            "secret to verify signatures",
        )
    if parts.scheme == "http" and host not in ("localhost", "127.0.0.1", "::1"):
        return warn(
            name, f"events (transcripts, numbers) go to {host} over plain http", "use an https:// URL"
        )
    return ok(name, f"{parts.scheme}://{host}{parts.path}, signed with ${hooks.secret_env}")


def check_tool_headers(settings: Settings, environ: dict[str, str] | None = None) -> CheckResult:
    """``tools``: every ``[[tools]]`` header's variable is set (else each call of that tool fails)."""
    name = "tools"
    if not settings.tools:
        return skip(name, "no [[tools]] webhooks")
    env = dict(os.environ) if environ is None else environ
    missing = [
        f"{tool.name}: {header} reads ${variable}"
        for tool in settings.tools
        for header, variable in tool.headers.items()
        if variable not in env
    ]
    if missing:
        return warn(
            name,
            f"unset: {'; '.join(missing)}",
            "export the variables in the server's environment: calls of these tools fail without them",
        )
    return ok(
        name, f"{len(settings.tools)} tool webhook{'s' * (len(settings.tools) != 1)}, header variables set"
    )


__all__ = ["check_recordings", "check_store", "check_tool_headers", "check_webhooks"]
