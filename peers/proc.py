"""A child process that is always stopped: output to files, terminate then kill, whole process group.

Every peer (sipp, kamailio, baresip, dumpcap) is started through :class:`ManagedProcess` so that a failing
test cannot leave a process behind: ``stop()`` sends SIGTERM to the process group the child leads (and
only to it), waits, then sends SIGKILL. Output goes to files in the test's tmp dir, never to pipes that
could fill up and block the child.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self


class Lifecycle:
    """``start()`` on entering a ``with`` block, ``stop()`` on leaving it, whatever happened inside."""

    def start(self) -> None:
        """Start the peer."""
        raise NotImplementedError

    def stop(self) -> object:
        """Stop the peer (idempotent)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ProcessError(RuntimeError):
    """A peer process failed to start, died early, or did not show an expected log line in time."""


class ManagedProcess(Lifecycle):
    """Run ``argv`` in its own session with stdout/stderr captured to ``<logdir>/<name>.stdout|stderr``.

    Use as a context manager; on exit the process group is terminated (then killed after
    ``stop_timeout`` seconds) whatever happened in the block.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        logdir: Path,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        stop_signal: int = signal.SIGTERM,
        stop_timeout: float = 5.0,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.name = name
        self.logdir = logdir
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self.stop_signal = stop_signal
        self.stop_timeout = stop_timeout
        self.stdout_path = logdir / f"{name}.stdout"
        self.stderr_path = logdir / f"{name}.stderr"
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the process (once)."""
        if self._proc is not None:
            raise ProcessError(f"{self.name} already started")
        self.logdir.mkdir(parents=True, exist_ok=True)
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=self.cwd,
                env=self.env,
                start_new_session=True,  # own process group, so stop() reaches its children too
            )

    @property
    def pid(self) -> int:
        """Process id of the started child."""
        return self._require().pid

    @property
    def returncode(self) -> int | None:
        """Exit status once the child has exited, else None."""
        proc = self._require()
        return proc.poll()

    def is_running(self) -> bool:
        """True while the child has not exited."""
        return self._proc is not None and self._proc.poll() is None

    def wait(self, timeout: float) -> int:
        """Wait for the child to exit by itself; :class:`subprocess.TimeoutExpired` after ``timeout``."""
        return self._require().wait(timeout=timeout)

    def stop(self) -> int:
        """Stop the child and its process group: ``stop_signal``, wait, then SIGKILL. Returns exit status."""
        proc = self._proc
        if proc is None:
            return 0
        if proc.poll() is None:
            self._signal_group(self.stop_signal)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                proc.wait(timeout=10)
        # Children (kamailio workers) may outlive a leader that exited on its own: reap the group.
        self._signal_group(signal.SIGKILL)
        return proc.returncode

    def _signal_group(self, sig: int) -> None:
        proc = self._require()
        # The child called setsid(): its pid is its process group id. Only that group is signalled.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def _require(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise ProcessError(f"{self.name} not started")
        return self._proc

    # -- output --------------------------------------------------------------------------------------

    def stdout_text(self) -> str:
        """Everything the child wrote to stdout so far."""
        return _read_text(self.stdout_path)

    def stderr_text(self) -> str:
        """Everything the child wrote to stderr so far."""
        return _read_text(self.stderr_path)

    def wait_for_output(
        self,
        pattern: str | re.Pattern[str],
        *,
        timeout: float,
        stream: str = "stderr",
    ) -> re.Match[str]:
        """Poll ``stream`` ("stdout"/"stderr") until ``pattern`` matches; ProcessError on timeout/exit."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        path = self.stderr_path if stream == "stderr" else self.stdout_path
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(_read_text(path))
            if match:
                return match
            if not self.is_running():
                raise ProcessError(
                    f"{self.name} exited (status {self.returncode}) before printing {regex.pattern!r}; "
                    f"{stream} tail:\n{_read_text(path)[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise ProcessError(
                    f"{self.name} did not print {regex.pattern!r} within {timeout}s; "
                    f"{stream} tail:\n{_read_text(path)[-2000:]}"
                )
            time.sleep(0.05)


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
