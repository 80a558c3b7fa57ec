"""Skip (or fail) peer tests when a peer program is not installed.

Set ``SIPAGENT_REQUIRE_PEERS=1`` (CI does, once its setup installs the Debian packages) to turn a missing
program into a test *failure* instead of a skip, so a broken install cannot pass silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

# program -> Debian package that provides it
PACKAGES: dict[str, str] = {
    "sipp": "sip-tester",
    "kamailio": "kamailio",
    "baresip": "baresip (baresip-core)",
    "dumpcap": "wireshark-common (via tshark)",
    "openssl": "openssl",
}


def require(*programs: str) -> None:
    """Skip the calling test unless every program is on PATH (fail instead under SIPAGENT_REQUIRE_PEERS=1)."""
    missing = [p for p in programs if shutil.which(p) is None]
    if not missing:
        return
    reason = "missing peer programs: " + ", ".join(
        f"{p} (Debian package {PACKAGES.get(p, '?')})" for p in missing
    )
    if os.environ.get("SIPAGENT_REQUIRE_PEERS") == "1":
        pytest.fail(reason)
    pytest.skip(reason)


def require_capture() -> None:
    """Skip unless dumpcap can open ``lo`` (root, or dumpcap with cap_net_raw,cap_net_admin)."""
    require("dumpcap")
    probe = subprocess.run(
        ["dumpcap", "-L", "-i", "lo"], capture_output=True, text=True, timeout=30, check=False
    )
    if probe.returncode != 0:
        reason = f"dumpcap cannot capture on lo: {probe.stderr.strip()[:200]}"
        if os.environ.get("SIPAGENT_REQUIRE_PEERS") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
