"""Tests that need the embedded models: skip with the reason when they are missing, unless
``SIPAGENT_REQUIRE_MODELS=1`` (set by ``make test``, which installs them) makes that a failure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sipagent.voice.models import missing_models_message


def require_models(*paths: Path) -> None:
    """Skip (or fail under ``make test``) when any of ``paths`` is not installed."""
    message = missing_models_message(paths)
    if message:
        if os.environ.get("SIPAGENT_REQUIRE_MODELS") == "1":
            pytest.fail(message)
        pytest.skip(message)
