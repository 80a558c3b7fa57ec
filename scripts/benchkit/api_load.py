"""The control API beside the media: does a steady stream of API requests move the media p99?

``bench_media.py --api-rps N`` repeats each asyncio media run (peer in its own process) with the
control API served by uvicorn **on the same event loop as the calls**, as ``sipagent serve`` runs
it, over :class:`StubControl`: a stand-in for the server that lists as many calls as the run has
media calls (each with two turns, so a listing is the size a real one would be). A load generator
in a process of its own (on the peer's core when pinned, so the server's core does only the
server's work) sends N requests a second on an absolute schedule, alternating
``GET /v1/calls`` and ``GET /v1/calls/{id}``, with the bearer token, over one kept-alive
connection, and times each answer.

Reported, for the measured seconds only (after the warm-up): requests asked for and answered by
the server (counted by the stub), failures, and the answers' latency p50/p99 as the client saw it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from multiprocessing.connection import Connection
from typing import Any

from benchkit.common import HOST, percentile
from sipagent.api.config import ApiConfig
from sipagent.api.server import ApiServer
from sipagent.product.control import CallEvent, CallInfo, ControlError, PlaceCall, Turn, UnknownCall

_TURNS = (
    Turn(
        caller="Hi, I'm calling about my prescription.", agent="Sure, can I have your name?", latency_ms=420.0
    ),
    Turn(caller="It's Alex Morgan.", agent="Thanks Alex, your order is ready for pickup.", latency_ms=390.0),
)


class StubControl:
    """The server as the API sees it, with ``calls`` answered calls that never change.

    Only what the load asks for works (listing, one call); the rest refuses. ``served`` counts the
    answers given, ``mark()`` starts the count anew when the measurement starts.
    """

    def __init__(self, calls: int) -> None:
        now = time.time()
        self.calls = {
            f"call-{n:04d}": CallInfo(
                id=f"call-{n:04d}",
                direction="inbound" if n % 2 else "outbound",
                state="answered",
                from_="********" + f"{n:04d}",
                to="********0100",
                route="pharmacy",
                mode="conversation",
                started_at=now - 60 - n,
                answered_at=now - 55 - n,
                turns=_TURNS,
            )
            for n in range(calls)
        }
        self._newest_first = list(reversed(self.calls.values()))
        self.served = 0

    def mark(self) -> None:
        """Count from now on."""
        self.served = 0

    async def place_call(self, request: PlaceCall) -> CallInfo:
        raise ControlError("the benchmark's stub places no calls", field="target")

    def list_calls(self) -> list[CallInfo]:
        self.served += 1
        return self._newest_first

    def get_call(self, call_id: str) -> CallInfo:
        self.served += 1
        try:
            return self.calls[call_id]
        except KeyError:
            raise UnknownCall(call_id) from None

    def speak(self, call_id: str, text: str, *, interrupt: bool = False) -> None:
        raise ControlError("the benchmark's stub has no agent", status=409)

    def send_dtmf(self, call_id: str, digits: str) -> None:
        raise ControlError("the benchmark's stub has no media", status=409)

    def hang_up(self, call_id: str) -> None:
        raise ControlError("the benchmark's stub ends no call", status=409)

    def subscribe(self, call_id: str | None = None) -> AsyncIterator[CallEvent]:
        raise UnknownCall(call_id or "*")


def _load_process(conn: Connection, cpus: set[int] | None) -> None:
    """The load generator: N requests a second on the schedule ``t0 + n / N``; a late answer makes
    the next request leave at once (one connection: requests never overlap)."""
    import httpx

    if cpus is not None:
        os.sched_setaffinity(0, cpus)
    url, token, ids, rps, duration, measure_after = conn.recv()
    latencies: list[float] = []
    sent = failed = 0
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=5.0) as client:
        t0 = time.monotonic()
        n = 0
        while True:
            due = t0 + n / rps
            if due >= t0 + duration:
                break
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            path = "/v1/calls" if n % 2 == 0 else f"/v1/calls/{ids[(n // 2) % len(ids)]}"
            started = time.perf_counter()
            measured = time.monotonic() - t0 >= measure_after
            try:
                ok = client.get(path).status_code == 200
            except httpx.HTTPError:
                ok = False
            elapsed = time.perf_counter() - started
            if measured:
                sent += 1
                if ok:
                    latencies.append(elapsed)
                else:
                    failed += 1
            n += 1
    latencies.sort()
    conn.send(
        {
            "sent": sent,
            "failed": failed,
            "p50_ms": percentile(latencies, 0.50) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000,
            "max_ms": latencies[-1] * 1000 if latencies else 0.0,
        }
    )
    conn.close()


class ApiLoad:
    """The API on the benchmark's loop and its load generator (forked before the loop starts)."""

    def __init__(self, rps: float, cpus: set[int] | None) -> None:
        """Fork the generator now: it waits for :meth:`start` to say where and how long."""
        if rps <= 0:
            raise ValueError("the API load needs a positive request rate")
        self.rps = rps
        context = multiprocessing.get_context("fork")
        self._link, child = context.Pipe()
        self._process = context.Process(target=_load_process, args=(child, cpus), daemon=True)
        self._process.start()
        self._stub: StubControl | None = None
        self._server: ApiServer | None = None
        self._measure_start = 0.0

    async def start(self, calls: int, duration: float, measure_after: float) -> None:
        """Serve the API over ``calls`` listed calls and start the load for ``duration`` seconds."""
        token = secrets.token_urlsafe(24)
        self._stub = StubControl(max(1, calls))
        self._server = ApiServer(self._stub, ApiConfig(bind=HOST, port=0, token=token))
        await self._server.start()
        ids = list(self._stub.calls)
        self._link.send((self._server.url, token, ids, self.rps, duration, measure_after))

    def mark(self) -> None:
        """The measurement starts: count the answers from now on."""
        if self._stub is not None:
            self._stub.mark()
            self._measure_start = time.monotonic()

    async def stop(self) -> dict[str, float]:
        """Wait for the generator's report (still serving its last requests), then stop the API."""
        served = self._stub.served if self._stub is not None else 0
        seconds = time.monotonic() - self._measure_start
        report: dict[str, float] = {}
        if await asyncio.to_thread(self._link.poll, 30):
            report = dict(self._link.recv())
        if self._server is not None:
            await self._server.stop()
        self._process.join(5)
        if self._process.is_alive():
            self._process.kill()
        return {
            "rps": self.rps,
            "served": served,
            "served_per_s": served / seconds if seconds else 0.0,
            **report,
        }


def api_summary(runs: Sequence[dict[str, Any]]) -> list[str]:
    """The lines of the table that puts each API run beside its media run without the API."""
    lines: list[str] = []
    with_api = [run for run in runs if run.get("api")]
    if not with_api:
        return lines
    lines += [
        "",
        "   Control API on the same loop: GET /v1/calls (every call listed) and GET /v1/calls/{id}",
        "   alternately, with the bearer token, from a client process; latency as the client saw it",
        f"   {'loop':<8}{'calls':>6}{'asked/s':>9}{'served':>8}{'failed':>8}{'api p50':>9}{'api p99':>9}"
        f"{'api max':>9}{'media p99':>11}{'without':>9}",
    ]
    for run in with_api:
        api = run["api"]
        alone = [
            other
            for other in runs
            if other["work"] == "media"
            and other["calls"] == run["calls"]
            and other["sink"] == run["sink"]
            and other["loop"] == run["loop"]
        ]
        without = f"{alone[0]['send_error_p99_ms']:.2f}" if alone else "-"
        lines.append(
            f"   {run['loop']:<8}{run['calls']:>6}{api['rps']:>9.1f}{int(api['served']):>8}"
            f"{int(api.get('failed', 0)):>8}{api.get('p50_ms', float('nan')):>9.2f}"
            f"{api.get('p99_ms', float('nan')):>9.2f}{api.get('max_ms', float('nan')):>9.1f}"
            f"{run['send_error_p99_ms']:>11.2f}{without:>9}"
        )
    lines.append("   (ms; media p99: send error with the API load, without: the same run without it)")
    return lines
