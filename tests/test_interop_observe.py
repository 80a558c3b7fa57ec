"""Metrics, lifecycle webhooks and the call store of a running server (issue 16, items 1, 5, 6):
sipp calls ``sipagent serve``; ``GET /metrics`` parses with prometheus-client's parser and has moved; a
local receiver gets ``call.started``, ``call.answered`` and ``call.ended`` with valid signatures; a
receiver that is down delays nothing and its failure is counted; the call is in the store.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from peers.ports import free_tcp_port
from peers.sipagent_proc import SipagentServer
from peers.sipp import run_sipp, scenario_path
from sipagent.product.lifecycle import verify_signature
from sipagent.product.store import CallStore

pytestmark = pytest.mark.peer

SECRET = "whsec-test-0123456789"


@contextmanager
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    got: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            got.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hooks", got
    finally:
        server.shutdown()
        server.server_close()


def _metrics(server: SipagentServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{server.api_url}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _call(server: SipagentServer, workdir: Path) -> None:
    run_sipp(
        scenario_path("uac_call_identity"), server.address, workdir=workdir, service="echo",
        keys={"from_user": "+15550001111", "identity": "X-Test: none"}, duration_ms=500, timeout=20,
    ).assert_ok()  # fmt: skip


def _wait(predicate: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s")
        time.sleep(0.1)


def test_metrics_move_and_a_receiver_gets_signed_lifecycle_events(tmp_path: Path) -> None:
    with receiver() as (url, got):
        config = f'[webhooks]\nurl = "{url}"\n'
        server = SipagentServer(
            tmp_path / "server", config_text=config, env={"SIPAGENT_WEBHOOK_SECRET": SECRET}
        )
        with server:
            before = _metrics(server)
            _call(server, tmp_path / "sipp")
            _wait(lambda: len(got) >= 3, "three lifecycle events")
            after = _metrics(server)
            log = server.log()
    assert before.get(("sipagent_calls_started_total", (("direction", "inbound"),)), 0.0) == 0.0
    assert after[("sipagent_calls_started_total", (("direction", "inbound"),))] == 1.0
    ended = [value for (name, labels), value in after.items() if name == "sipagent_calls_ended_total"]
    assert sum(ended) == 1.0
    assert not any("1-" in value for _, labels in after for _, value in labels)  # no per-call labels
    kinds = []
    for headers, body in got:
        assert verify_signature(
            SECRET, headers["x-sipagent-timestamp"], body, headers["x-sipagent-signature"]
        )
        kinds.append(json.loads(body)["type"])
    assert kinds == ["call.started", "call.answered", "call.ended"]
    report = json.loads(got[-1][1])["data"]
    assert (
        report["outcome"] == "answered" and "1111" in report["from"] and "+15550001111" not in report["from"]
    )
    assert SECRET not in log
    # The call store has the call too (the server stopped: everything queued was committed).
    with CallStore(server.workdir / "calls.db") as store:
        (stored,) = store.calls()
    assert stored.direction == "inbound" and stored.outcome == "answered" and stored.ended_at is not None


def test_a_receiver_that_is_down_delays_nothing_and_the_failure_is_counted(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_tcp_port()}/hooks"  # nothing listens there
    config = f'[webhooks]\nurl = "{url}"\nmax_attempts = 1\n'
    server = SipagentServer(tmp_path / "server", config_text=config, env={"SIPAGENT_WEBHOOK_SECRET": SECRET})
    with server:
        _call(server, tmp_path / "sipp")  # answered and ended as ever

        def failed() -> float:
            samples = _metrics(server).items()
            name = "sipagent_lifecycle_webhooks_total"
            return sum(v for (n, labels), v in samples if n == name and ("result", "failed") in labels)

        _wait(lambda: failed() >= 3, "three failed deliveries counted")
