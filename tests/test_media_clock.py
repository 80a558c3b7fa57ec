"""The shared media clock and the read-on-tick RTP adapter, on a real event loop and sockets."""

from __future__ import annotations

import asyncio
import random
import socket
import time

import pytest

from sipagent.net.media import MediaTransport
from sipagent.net.media_clock import ARM_EARLY_S, PHASES, MediaClock
from sipagent.rtp.events import MediaEvent
from sipagent.rtp.frames import FRAME_SECONDS
from sipagent.rtp.packet import RtpPacket
from sipagent.rtp.session import RtpSession, Tick
from sipagent.sip.offer_answer import MediaSession, NegotiatedMedia


class _Client:
    def __init__(
        self,
        clock: MediaClock,
        fail: bool = False,
        journal: list[tuple[str, int]] | None = None,
        busy: float = 0.0,
    ) -> None:
        self.clock = clock
        self.busy = busy
        self.journal: list[tuple[str, int]] = journal if journal is not None else []
        self.clock_slot: int | None = None
        self.runs: list[float] = []
        self.fail = fail

    def on_send(self, now: float) -> None:
        self.journal.append(("send", id(self)))

    def on_clock(self, now: float, wall_offset: float) -> None:
        self.journal.append(("clock", id(self)))
        self.runs.append(now)
        if self.busy:
            time.sleep(self.busy)  # inbound work that blocks the loop
        if self.fail:
            raise RuntimeError("boom")


async def test_calls_due_in_the_same_millisecond_share_one_loop_timer() -> None:
    loop = asyncio.get_running_loop()
    clock = MediaClock(loop)
    base = loop.time() + 0.03
    clients = [_Client(clock) for _ in range(10)]
    for index, client in enumerate(clients):
        clock.schedule(client, base + index * 0.0001)  # all ten inside one millisecond slot
    assert clock.pending_slots <= 2
    await asyncio.sleep(0.06)
    assert all(len(client.runs) == 1 for client in clients)
    assert clock.wakeups <= 2 and clock.runs == 10
    for client in clients:
        # Never more than ARM_EARLY_S before the deadline it asked for.
        assert client.runs[0] >= base - ARM_EARLY_S - 1e-9


async def test_every_call_in_a_slot_sends_before_any_does_its_inbound_work() -> None:
    loop = asyncio.get_running_loop()
    clock = MediaClock(loop)
    journal: list[tuple[str, int]] = []
    clients = [_Client(clock, journal=journal) for _ in range(5)]
    deadline = loop.time() + 0.01
    for client in clients:
        clock.schedule(client, deadline)
    await asyncio.sleep(0.03)
    assert [phase for phase, _ in journal] == ["send"] * 5 + ["clock"] * 5


async def test_a_later_slot_sends_while_an_earlier_one_is_still_busy_inbound() -> None:
    # The first call's inbound work overruns into the next slots: their packets must not wait
    # for the rest of it (nor for their own timers, queued behind it on the loop).
    loop = asyncio.get_running_loop()
    clock = MediaClock(loop)
    journal: list[tuple[str, int]] = []
    # Slots 8 ms apart and 16 ms of inbound work: the order holds unless the loop wakes a whole 8 ms
    # late (a loaded test box), which would make the later slot due at the first pass already.
    slow, first = _Client(clock, journal=journal, busy=0.016), _Client(clock, journal=journal)
    later = _Client(clock, journal=journal)
    deadline = loop.time() + 0.01
    clock.schedule(slow, deadline)
    clock.schedule(first, deadline)
    clock.schedule(later, deadline + 0.008)
    await asyncio.sleep(0.06)
    assert journal == [
        ("send", id(slow)),
        ("send", id(first)),
        ("clock", id(slow)),
        ("send", id(later)),  # sent ahead: its slot came due while slow was busy
        ("clock", id(first)),
        ("send", id(later)),  # its own timer: the adapter finds nothing left to send
        ("clock", id(later)),
    ]
    assert clock.sent_ahead == 1 and clock.runs == 3


async def test_calls_start_on_the_least_busy_millisecond_phase() -> None:
    loop = asyncio.get_running_loop()
    clock = MediaClock(loop)
    now = loop.time()
    starts = [clock.claim_start(now + index * 0.0003) for index in range(2 * PHASES)]
    assert clock.phase_calls == [2] * PHASES  # however the calls arrived, every phase carries two
    for index, start in enumerate(starts):
        asked = now + index * 0.0003
        assert asked < start <= asked + FRAME_SECONDS + 1e-9  # never more than one tick later
        # Mid-slot: the slot a tick lands in does not depend on float rounding of its deadline.
        assert abs(((start - ARM_EARLY_S) * 1000.0) % 1.0 - 0.5) < 1e-6
    for start in starts[:PHASES]:
        clock.release_start(start)
    assert sum(clock.phase_calls) == PHASES


async def test_rescheduling_and_unscheduling_leave_no_stale_runs() -> None:
    loop = asyncio.get_running_loop()
    clock = MediaClock(loop)
    moved, dropped = _Client(clock), _Client(clock)
    clock.schedule(moved, loop.time() + 0.01)
    clock.schedule(moved, loop.time() + 0.03)
    clock.schedule(dropped, loop.time() + 0.01)
    clock.schedule(dropped, None)
    await asyncio.sleep(0.05)
    assert len(moved.runs) == 1 and moved.runs[0] >= loop.time() - 0.03
    assert dropped.runs == []


async def test_one_failing_call_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    clock = MediaClock(loop)
    bad, good = _Client(clock, fail=True), _Client(clock)
    deadline = loop.time() + 0.01
    clock.schedule(bad, deadline)
    clock.schedule(good, deadline)
    await asyncio.sleep(0.03)
    assert len(good.runs) == 1
    assert "media tick failed" in caplog.text


def _negotiated(local_port: int, remote_port: int) -> NegotiatedMedia:
    caller = MediaSession("127.0.0.1", remote_port, session_id=1, codecs=("PCMU",))
    ours = MediaSession("127.0.0.1", local_port, session_id=2)
    _, media = ours.answer(caller.create_offer())
    return media


async def test_packets_are_read_on_the_tick_with_their_kernel_arrival_time() -> None:
    loop = asyncio.get_running_loop()
    session = RtpSession(
        ssrc=1,
        first_sequence=0,
        first_timestamp=0,
        cname="t",
        rng=random.Random(1),
        now=loop.time(),
        wall_offset=time.time() - loop.time(),
    )
    ticks: list[Tick] = []
    events: list[MediaEvent] = []
    media = MediaTransport(session, ticks.append, events.append)
    port = await media.bind("127.0.0.1", 30000, 40000, random.Random(2))
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    try:
        session.configure(_negotiated(port, peer.getsockname()[1]))
        arrivals: list[float] = []
        original = media.deliver_rtp

        def spy(data: bytes, source: tuple[str, int], now: float) -> None:
            arrivals.append(now)
            original(data, source, now)

        media.deliver_rtp = spy
        media.start()
        sent_at: list[float] = []
        for index in range(10):
            await asyncio.sleep(0.007)  # between ticks, not on them
            packet = RtpPacket(0, index, index * 160, 0x1234, bytes(160), marker=index == 0)
            sent_at.append(loop.time())
            peer.sendto(packet.serialize(), ("127.0.0.1", port))
        await asyncio.sleep(0.1)
        assert len(arrivals) == 10
        # The arrival time is when the packet came, not when the tick read it (up to 20 ms later).
        for sent, arrival in zip(sent_at, arrivals, strict=True):
            assert abs(arrival - sent) < 0.003
        assert len(ticks) >= 5
        assert session.remote == peer.getsockname()  # latched on the real source
        echoed = 0
        peer.setblocking(False)
        while True:
            try:
                peer.recv(2048)
            except BlockingIOError:
                break
            echoed += 1
        assert echoed >= len(ticks) - 1  # one packet a tick (silence fill) back to the source
        assert FRAME_SECONDS == 0.02
    finally:
        media.close()
        peer.close()
