"""The control API and the CLI against a running ``sipagent serve`` with a live sipp call (issue 14).

The server runs in echo mode with a bearer token; sipp calls it and waits for our BYE. Every
endpoint is exercised over HTTP, each bad input gets its 4xx naming the field, a wrong token gets
401 and nothing else, the OpenAPI document validates, and the CLI commands (calls, status, dtmf,
speak, end, tail) do the same through the API, each error in one line without a traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate

from peers.proc import ManagedProcess
from peers.sipagent_proc import SipagentServer
from peers.sipp import SippProcess, scenario_path

pytestmark = pytest.mark.peer

TOKEN = "test-token-0123456789"


def _cli(server: SipagentServer, *args: str, token: str = TOKEN) -> subprocess.CompletedProcess[str]:
    env = {"SIPAGENT_API_TOKEN": token, "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "sipagent", *args, "--api", server.api_url],
        capture_output=True, text=True, timeout=30, env=env, check=False,
    )  # fmt: skip


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and "RuntimeWarning" not in line
             and "guard_stale_builds" not in line]  # fmt: skip
    assert len(lines) == 1, result.stderr
    return lines[0]


def _wait_answered(api: httpx.Client) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        calls = api.get("/v1/calls").json()["calls"]
        if calls and calls[0]["state"] == "answered":
            return dict(calls[0])
        time.sleep(0.2)
    raise AssertionError(f"no answered call: {calls}")


def test_every_endpoint_and_command_against_a_running_server(tmp_path: Path) -> None:
    server = SipagentServer(tmp_path / "server", env={"SIPAGENT_API_TOKEN": TOKEN})
    with server:
        caller = SippProcess(
            scenario_path("uac_call_wait_bye"), remote=server.address, workdir=tmp_path / "sipp",
            service="echo", timeout=60,
        )  # fmt: skip
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=server.api_url, headers=headers, timeout=10) as api, caller:
            # Open without a token: liveness only.
            assert httpx.get(f"{server.api_url}/healthz").status_code == 200
            for bad in ({}, {"Authorization": "Bearer wrong"}):
                refused = httpx.get(f"{server.api_url}/v1/calls", headers=bad)
                assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
            validate(api.get("/openapi.json").json())

            call = _wait_answered(api)
            call_id = call["id"]
            assert call["direction"] == "inbound" and call["from"].startswith(("sip:", "+", "*"))
            assert api.get(f"/v1/calls/{call_id}").json()["state"] == "answered"

            tail = ManagedProcess(
                [sys.executable, "-m", "sipagent", "tail", call_id, "--json", "--api", server.api_url],
                name="tail", logdir=tmp_path / "tail",
                env={"SIPAGENT_API_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"},
            )  # fmt: skip
            (tmp_path / "tail").mkdir()
            with tail:
                time.sleep(1.0)  # let it subscribe

                def problem(response: httpx.Response, status: int) -> str | None:
                    assert response.status_code == status, response.text
                    error = response.json()["error"]
                    assert error["message"]
                    return error["field"]  # type: ignore[no-any-return]

                assert problem(api.get("/v1/calls/no-such-call"), 404) == "call_id"
                assert problem(api.post(f"/v1/calls/{call_id}/dtmf", json={"digits": "12X"}), 422) == "digits"
                assert (
                    problem(api.post(f"/v1/calls/{call_id}/speak", json={"text": "x" * 5000}), 422) == "text"
                )
                assert problem(api.post("/v1/calls", json={"target": "not a number"}), 422) == "target"
                malformed = api.post(
                    "/v1/calls", content=b"{not json", headers={"Content-Type": "application/json"}
                )
                assert problem(malformed, 400) == "body"
                # An echo call has no agent to speak: refused, and the call goes on.
                assert api.post(f"/v1/calls/{call_id}/speak", json={"text": "hello"}).status_code == 409
                assert api.post(f"/v1/calls/{call_id}/dtmf", json={"digits": "12#"}).status_code == 202

                # The CLI, through the same API.
                listed = _cli(server, "calls", "--json")
                assert listed.returncode == 0 and json.loads(listed.stdout)[0]["id"] == call_id
                status = _cli(server, "status", call_id, "--json")
                assert status.returncode == 0 and json.loads(status.stdout)["state"] == "answered"
                assert _cli(server, "dtmf", call_id, "4").returncode == 0
                assert "digits" in _one_line_error(_cli(server, "dtmf", call_id, "4Z"))
                assert "no-such-call" in _one_line_error(_cli(server, "status", "no-such-call"))
                assert "token" in _one_line_error(_cli(server, "calls", token="wrong")).lower()
                _one_line_error(_cli(server, "speak", call_id, "hello"))  # echo: no agent
                assert "target" in _one_line_error(_cli(server, "call", "+1 nonsense", "--no-wait"))

                ended = _cli(server, "end", call_id)
                assert ended.returncode == 0, ended.stderr
                result = caller.wait(timeout=15)
                tail.wait(timeout=15)
                events = [
                    json.loads(line) for line in tail.stdout_text().splitlines() if line.startswith("{")
                ]
            final = api.get(f"/v1/calls/{call_id}").json()
    result.assert_ok()  # sipp got our BYE
    assert final["state"] == "ended" and final["end_reason"] == "hung up by the API", final
    types = [event["type"] for event in events]
    assert types[-1] == "call_ended" and events[-1]["reason"] == "hung up by the API", events
    # The server is gone: one line saying so, and how to start one.
    assert "sipagent serve" in _one_line_error(_cli(server, "calls"))
