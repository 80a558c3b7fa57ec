"""baresip, a real softphone, calls ``sipagent serve --mode echo`` and hears itself (issue 2, item 5).

baresip plays a tone sequence as its microphone and records what it hears. The echo must come back
loud (close to the sent level; G.711 twice is near-lossless for tones) and at the frequencies sent.
The same over TLS with a self-signed certificate, where sipagent also ends a call with BYE over the
TLS connection the call came in on (connection reuse for in-dialog requests).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from peers.audio import read_wav, tone_sequence, wav_stats, write_wav
from peers.baresip import Baresip, Transport
from peers.sipagent_proc import SipagentServer
from peers.tls import make_test_pki

pytestmark = pytest.mark.peer

TONES = (440.0, 1000.0, 1500.0)


def _heard(baresip: Baresip) -> tuple[float, float]:
    """(seconds of audible audio, correlation of the heard spectrum with the sent tone mix)."""
    stats = wav_stats(baresip.recording())
    samples, rate = read_wav(baresip.recording())
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    energy_at_tones = sum(spectrum[np.abs(freqs - f) < 15].sum() for f in TONES)
    return stats.active_s, float(energy_at_tones / max(spectrum.sum(), 1.0))


def _call(
    tmp_path: Path, server: SipagentServer, uri: str, transport: Transport, **kwargs: object
) -> Baresip:
    wav = write_wav(tmp_path / "mic.wav", tone_sequence(4.0, tones_hz=TONES))
    baresip = Baresip(
        tmp_path / "baresip",
        audio_wav=wav,
        transport=transport,
        dial=uri,
        **kwargs,  # type: ignore[arg-type]
    )
    return baresip


def test_baresip_hears_its_echo_over_udp(tmp_path: Path) -> None:
    with SipagentServer(tmp_path / "server") as server:
        baresip = _call(tmp_path, server, f"sip:echo@{server.address}", "udp")
        with baresip:
            baresip.wait_for_event("CALL_ESTABLISHED", timeout=10)
            # The aufile microphone ends the call when the 4 s file ends.
            baresip.wait_for_event("CALL_CLOSED", timeout=15)
        active, tonal = _heard(baresip)
        assert active >= 2.5, baresip.log_text()[-2000:]
        assert tonal > 0.5
        assert "ended: remote-bye" in server.log()


def test_baresip_over_tls_with_self_signed_certificate(tmp_path: Path) -> None:
    pki = make_test_pki(tmp_path / "pki")
    server = SipagentServer.with_tls(tmp_path / "server", pki)
    with server:
        uri = f"sip:echo@127.0.0.1:{server.tls_port};transport=tls"
        baresip = _call(tmp_path, server, uri, "tls", ca_file=pki.ca_cert)
        with baresip:
            baresip.wait_for_event("CALL_ESTABLISHED", timeout=10)
            baresip.wait_for_event("CALL_CLOSED", timeout=15)
        active, tonal = _heard(baresip)
        assert active >= 2.5, baresip.log_text()[-2000:]
        assert tonal > 0.5
        log = server.log()
        assert "recv tls:" in log and "ended: remote-bye" in log


def test_sipagent_hangs_up_over_the_same_tls_connection(tmp_path: Path) -> None:
    pki = make_test_pki(tmp_path / "pki")
    server = SipagentServer.with_tls(tmp_path / "server", pki)
    with server:
        uri = f"sip:echo@127.0.0.1:{server.tls_port};transport=tls"
        wav = write_wav(tmp_path / "mic.wav", tone_sequence(20.0, tones_hz=TONES))
        with Baresip(
            tmp_path / "baresip", audio_wav=wav, transport="tls", dial=uri, ca_file=pki.ca_cert
        ) as baresip:
            baresip.wait_for_event("CALL_ESTABLISHED", timeout=10)
            assert server.process is not None
            os.kill(server.process.pid, signal.SIGTERM)  # shutting down hangs every call up with BYE
            closed = baresip.wait_for_event("CALL_CLOSED", timeout=10)
        log = server.log()
        bye_lines = [line for line in log.splitlines() if line.startswith("BYE sip:")]
        assert bye_lines, log[-3000:]
        # The BYE left on the TLS connection baresip opened, not on a new one to its Contact.
        sends = [line for line in log.splitlines() if "DEBUG sipagent.sip: send tls:" in line]
        recvs = {
            line.split("recv ")[1] for line in log.splitlines() if "DEBUG sipagent.sip: recv tls:" in line
        }
        assert sends and all(line.split("send ")[1] in recvs for line in sends)
        assert "bye" in str(closed.data).lower() or closed.type == "CALL_CLOSED"
