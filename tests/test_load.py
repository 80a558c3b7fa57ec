"""Load: 50 concurrent sipp calls (pcap audio) against ``serve --mode echo`` on this 2-core box.

Every call's RTP is counted at our side of the wire: packets into each of our RTP ports must come
back out of it, within 1 % over all calls (issue 3, item 5). Per-call counts are checked too, so a
call that went quiet cannot hide behind the total.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from peers.capture import LoopbackCapture
from peers.ports import free_port_block
from peers.sipagent_proc import SipagentServer
from peers.sipp import run_sipp, scenario_path

pytestmark = pytest.mark.peer

CALLS = 50
AUDIO_SECONDS = 8.0


def test_fifty_concurrent_echo_calls(tmp_path: Path) -> None:
    # One sipp caller places every call: the per-caller rate and the call limit are lifted.
    server = SipagentServer(
        tmp_path / "server", rtp_port_count=2 * CALLS + 20, extra_args=("--log-level", "info"),
        config_text=f"[limits]\nmax_calls = {2 * CALLS}\ncalls_per_minute = 0\n",
    )  # fmt: skip
    with server:
        media_port = free_port_block(4)
        ours = set(server.rtp_ports)
        with LoopbackCapture(tmp_path / "capture", [media_port, *server.rtp_ports]) as capture:
            result = run_sipp(
                scenario_path("uac_call_echo"), server.address, workdir=tmp_path / "sipp",
                media_port=media_port, service="echo", calls=CALLS, rate=25, audio_seconds=AUDIO_SECONDS,
                timeout=90, extra_args=("-l", str(CALLS)),
            )  # fmt: skip
        result.assert_ok()
        log = server.log()
    packets = capture.rtp_packets()
    into = Counter(p.dst[1] for p in packets if p.dst[1] in ours)
    out = Counter(p.src[1] for p in packets if p.src[1] in ours)
    assert len(into) == CALLS, f"{len(into)} calls carried RTP"
    sent, echoed = sum(into.values()), sum(out.values())
    expected = CALLS * AUDIO_SECONDS / 0.020
    assert sent >= 0.97 * expected, (sent, expected)
    assert abs(echoed - sent) <= 0.01 * sent, (sent, echoed)
    worst = max(abs(out[port] - n) / n for port, n in into.items())
    assert worst <= 0.02, f"worst call echoed {worst:.1%} off"
    assert log.count("incoming call") == CALLS
    assert result.stats is not None and result.stats.successful == CALLS
    # All 50 overlapped: sipp started them at 25 calls/s and each lasts > 8 s.
    active = peak = 0
    for line in log.splitlines():
        if "incoming call" in line:
            active += 1
            peak = max(peak, active)
        elif " ended: " in line:
            active -= 1
    assert peak == CALLS
