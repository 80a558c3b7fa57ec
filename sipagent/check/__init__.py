"""``sipagent check``: what would stop ``serve`` or its first call, found before either happens.

Each check is a small function returning a :class:`~sipagent.check.result.CheckResult` (green, red
with its fix, yellow, or not applicable); :func:`~sipagent.check.runner.run_checks` runs them all on
the settings ``serve`` would load. Decision 0029.
"""

from __future__ import annotations

from .result import CheckResult, Status
from .runner import CheckOptions, run_checks

__all__ = ["CheckOptions", "CheckResult", "Status", "run_checks"]
