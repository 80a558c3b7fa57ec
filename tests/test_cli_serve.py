"""``sipagent serve`` that cannot start says why in one line and exits non-zero, never a traceback:
a busy SIP or API port, a model that is not there, a bad number in the configuration (each bad key
on a line of its own), an API bound beyond loopback without a token."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from peers.ports import HOST, free_sip_port, free_tcp_port


def _serve(tmp_path: Path, *args: str, config: str | None = None, env: dict[str, str] | None = None) -> str:
    argv = [sys.executable, "-m", "sipagent", "serve", "--sip-bind", HOST, *args]
    if config is not None:
        path = tmp_path / "sipagent.toml"
        path.write_text(config)
        argv += ["--config", str(path)]
    environment = {k: v for k, v in os.environ.items() if k != "SIPAGENT_API_TOKEN"} | (env or {})
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=environment, check=False)
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    # One "Error:" line (a bad configuration lists its keys on the lines after it).
    lines = result.stderr.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Error:")]
    assert len(starts) == 1, result.stderr
    return "\n".join(lines[starts[0] :])


def test_a_busy_sip_port(tmp_path: Path) -> None:
    port = free_sip_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind((HOST, port))
        line = _serve(tmp_path, "--mode", "echo", "--sip-port", str(port), "--api-port", "0")
    assert ("cannot listen" in line and str(port) in line) or "in use" in line, line


def test_a_busy_api_port(tmp_path: Path) -> None:
    port = free_tcp_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind((HOST, port))
        busy.listen()
        line = _serve(tmp_path, "--mode", "echo", "--sip-port", str(free_sip_port()), "--api-port", str(port))
    assert "control API" in line and str(port) in line, line


def test_a_missing_model(tmp_path: Path) -> None:
    config = f'[stt]\nmodel = "{tmp_path / "no-such-model"}"\n'
    line = _serve(
        tmp_path, "--mode", "agent", "--sip-port", str(free_sip_port()), "--api-port", "0", config=config
    )
    assert "no-such-model" in line, line


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ('[inbound]\nallow = ["+15550001111", "call me"]\n', "inbound.allow[1]"),
        ('[[routes]]\nnumber = "12"\n', "routes[0].number"),
        ('[trunk]\nuri = "sip:trunk.example.test"\ncaller_id = "nope"\n', "trunk.caller_id"),
        ('[trunk]\nprofile = "twilio"\nuri = "sip:sip.example.test"\n', "trunk.uri"),
        ("[limits]\nmax_calls = 0\n", "limits.max_calls"),
    ],
)
def test_a_bad_value_names_its_key(tmp_path: Path, config: str, key: str) -> None:
    line = _serve(
        tmp_path, "--mode", "echo", "--sip-port", str(free_sip_port()), "--api-port", "0", config=config
    )
    assert line.startswith("Error: invalid configuration:") and f"  {key}: " in line, line


def test_an_api_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    config = '[api]\nbind = "0.0.0.0"\n'
    line = _serve(
        tmp_path, "--mode", "echo", "--sip-port", str(free_sip_port()), "--api-port", "0", config=config
    )
    assert "SIPAGENT_API_TOKEN" in line, line
