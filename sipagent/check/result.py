"""One line of ``sipagent check``: what was checked, how it went, and how to fix it.

Every check is a small function returning a :class:`CheckResult`. ``fail`` is a red line (the server
would not start, or a call would fail); ``warn`` is yellow and does not change the exit status;
``skip`` says why a check does not apply to this configuration. Details never hold a secret, and
:func:`redact` hides phone numbers in text that came from elsewhere (a configuration error).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from ..product.numbers import mask

Status = Literal["ok", "warn", "fail", "skip"]

#: What a full phone number looks like inside free text: ``+`` and digits (separators allowed), or a
#: bare run of 7-15 digits. Ports (5 digits) and dotted addresses stay as they are.
_NUMBER = re.compile(r"\+\d[\d .()\-]{4,20}\d|(?<![\d.])\d{7,15}(?![\d.])")


@dataclass(frozen=True)
class CheckResult:
    """One check: ``name`` (dotted, stable for scripts), ``status``, what was found and the fix."""

    name: str
    status: Status
    detail: str
    fix: str | None = None

    @property
    def ok(self) -> bool:
        """False only for a red line (warnings and skips do not fail ``check``)."""
        return self.status != "fail"

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: name, status, ok, detail, fix."""
        return {
            "name": self.name,
            "status": self.status,
            "ok": self.ok,
            "detail": self.detail,
            "fix": self.fix,
        }


def ok(name: str, detail: str) -> CheckResult:
    """A green line."""
    return CheckResult(name, "ok", detail)


def fail(name: str, detail: str, fix: str) -> CheckResult:
    """A red line: ``fix`` says what to do about it."""
    return CheckResult(name, "fail", detail, fix)


def warn(name: str, detail: str, fix: str | None = None) -> CheckResult:
    """A yellow line: worth knowing, not stopping the server."""
    return CheckResult(name, "warn", detail, fix)


def skip(name: str, detail: str) -> CheckResult:
    """Not applicable to this configuration (``detail`` says why)."""
    return CheckResult(name, "skip", detail)


def redact(text: str) -> str:
    """``text`` with every phone number masked as in the logs (``+*******4567``)."""
    return _NUMBER.sub(lambda match: mask(re.sub(r"[^\d+]", "", match.group(0))), text)


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one short line: libraries' messages can run to pages."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = ["CheckResult", "Status", "fail", "first_line", "ok", "redact", "skip", "warn"]
