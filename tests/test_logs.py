"""Logs (issue 16 item 7, decision 0030): JSON Lines with each line's call, numbers masked and secrets
redacted in both formats, also in the debug level's SIP traces; and the real server logging a sipp
call that way."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from sipagent.cli import main
from sipagent.config import ConfigError, build_settings
from sipagent.log_masking import LogMasker
from sipagent.logs import (
    JsonFormatter,
    LogFilter,
    LogSetup,
    call_scope,
    configured_secrets,
    in_call,
    outside_calls_context,
)
from sipagent.net.sip_transport import _trace
from sipagent.sip.message import parse_message

CALLER = "+15551234567"


@pytest.fixture
def json_log() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing through the server's JSON formatter and filter into a string."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(LogFilter(LogMasker(["hunter2-trunk-password"])))
    logger = logging.getLogger("sipagent.test_logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


# -- which call a line is about ---------------------------------------------------------------------
async def test_a_task_started_for_a_call_logs_its_call_id_and_other_lines_none(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    log, stream = json_log

    async def answer() -> None:
        await asyncio.sleep(0)
        log.info("answering")  # names no call: the context says whose it is
        asyncio.get_running_loop().call_soon(log.info, "a timer of the call")

    with call_scope("a84b4c76e66710@pc33.example.com"):
        task = asyncio.get_running_loop().create_task(answer())
    log.info("listening on udp 127.0.0.1:5060")
    await task
    await asyncio.sleep(0)
    lines = _lines(stream)
    assert [(line["message"], line["call_id"]) for line in lines] == [
        ("listening on udp 127.0.0.1:5060", None),
        ("answering", "a84b4c76e66710@pc33.example.com"),
        ("a timer of the call", "a84b4c76e66710@pc33.example.com"),
    ]
    for line in lines:
        assert set(line) == {"time", "level", "logger", "message", "call_id"}
        assert line["level"] == "info" and line["logger"] == "sipagent.test_logs"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(line["time"]))


async def test_shared_handles_run_as_no_call_and_a_call_callback_as_its_own(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    """A timer armed by one call's work but shared by every call (the SIP network's, the media
    clock's slots) is no call's; a call's media callback says whose it is wherever it runs."""
    log, stream = json_log
    loop = asyncio.get_running_loop()
    fired = asyncio.Event()

    class Call:
        call_id = "second-2@host"

    tick = in_call(Call(), log.info)
    with call_scope("first-1@host"):
        loop.call_soon(log.info, "network timer", context=outside_calls_context())
        loop.call_soon(tick, "a tick of the second call")
        loop.call_soon(fired.set)
    await fired.wait()
    assert [(line["message"], line["call_id"]) for line in _lines(stream)] == [
        ("network timer", None),
        ("a tick of the second call", "second-2@host"),
    ]


def test_a_message_that_names_its_call_carries_it_outside_any_call(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    log, stream = json_log
    log.info("call %s: DTMF %s (%d ms)", "1-4242@127.0.0.1", "5", 120)
    log.warning("lifecycle webhook %s (call %s) dropped: closed", "call.ended", "77f1@h")
    log.info("call store data/calls1.db opened")  # the database, not a call
    log.info("the model may call the tool")
    assert [line["call_id"] for line in _lines(stream)] == ["1-4242@127.0.0.1", "77f1@h", None, None]


def test_an_exception_is_its_own_field_and_masked_too(json_log: tuple[logging.Logger, io.StringIO]) -> None:
    log, stream = json_log
    try:
        raise ValueError(f"cannot route {CALLER}")
    except ValueError:
        log.exception("call %s: routing failed", "9-1@h")
    (line,) = _lines(stream)
    assert line["call_id"] == "9-1@h" and line["level"] == "error"
    assert "Traceback" in str(line["exception"]) and "ValueError: cannot route +*******4567" in str(
        line["exception"]
    )
    assert CALLER not in stream.getvalue()


# -- masking on real SIP traces ---------------------------------------------------------------------
SDP = (
    b"v=0\r\n"
    b"o=- 1555123456 1555123457 IN IP4 198.51.100.7\r\n"
    b"s=-\r\n"
    b"c=IN IP4 198.51.100.7\r\n"
    b"t=0 0\r\n"
    b"m=audio 16384 RTP/AVP 0 101\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=ptime:20\r\n"
)
INVITE = (
    b"INVITE sip:+15557654321@203.0.113.10:5060;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK5551234567a;rport\r\n"
    b'From: "+15551234567" <sip:+15551234567@198.51.100.7:5060;user=phone>;tag=8675309-5551234567\r\n'
    b"To: <sip:+15557654321@203.0.113.10>\r\n"
    b"Call-ID: 15551234567-8475629103@198.51.100.7\r\n"
    b"CSeq: 4711 INVITE\r\n"
    b"Contact: <sip:5551234567@198.51.100.7:5060>\r\n"
    b"P-Asserted-Identity: <tel:+1-555-123-4567>\r\n"
    b"Remote-Party-ID: <sip:%2B15551234567@carrier.example>;party=calling;screen=yes\r\n"
    b'Authorization: Digest username="acme", realm="sip.example", nonce="5f0a3", '
    b'uri="sip:+15557654321@203.0.113.10", response="6629fae49393a05397450978507c4ef1"\r\n'
    b"Date: Sat, 13 Nov 2010 23:29:00 GMT\r\n"
    b"Max-Forwards: 70\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n"
    b"\r\n" + SDP
)


def test_a_sip_trace_masks_every_number_and_leaves_the_protocol_alone(
    json_log: tuple[logging.Logger, io.StringIO],
) -> None:
    log, stream = json_log
    message = parse_message(INVITE)
    log.debug("recv %s\n%s", "udp 198.51.100.7:5060", _trace(message.serialize()))
    (line,) = _lines(stream)
    text = str(line["message"])
    for full in ("15551234567", "15557654321", "555-123", "5551234567@"):
        assert full not in text.replace("Call-ID: 15551234567-8475629103", ""), full
    assert "sip:+*******4321@203.0.113.10:5060" in text  # the Request-URI: host, port kept
    assert (
        'From: "+*******4567" <sip:+*******4567@198.51.100.7:5060;user=phone>;tag=8675309-5551234567' in text
    )
    assert "To: <sip:+*******4321@203.0.113.10>" in text
    assert "Contact: <sip:******4567@198.51.100.7:5060>" in text
    assert "P-Asserted-Identity: <tel:+**********4567>" in text
    assert "Remote-Party-ID: <sip:+*******4567@carrier.example>" in text
    # What is digits but no one's number is untouched: Call-ID, branch, tag, CSeq, addresses, ports,
    # the date, the SDP's session id and version, the media port.
    for kept in (
        "Call-ID: 15551234567-8475629103@198.51.100.7",
        "branch=z9hG4bK5551234567a",
        "CSeq: 4711 INVITE",
        "Date: Sat, 13 Nov 2010 23:29:00 GMT",
        "o=- 1555123456 1555123457 IN IP4 198.51.100.7",
        "m=audio 16384 RTP/AVP 0 101",
        "a=ptime:20",
    ):
        assert kept in text, kept
    # The digest answer is redacted (by the trace, and by the filter wherever else it appears).
    assert "6629fae4" not in text and "Authorization: <redacted>" in text
    # The trace's own Call-ID says which call it is.
    assert line["call_id"] == "15551234567-8475629103@198.51.100.7"


def test_credentials_and_configured_secrets_are_redacted_wherever_they_appear() -> None:
    masker = LogMasker(["hunter2-trunk-password", "tok_live_abcdef"])
    digest = (
        'Authorization: Digest username="acme", realm="sip.example", nonce="5f0a3", '
        'response="6629fae49393a05397450978507c4ef1"'
    )
    assert masker.mask(digest) == "Authorization: <redacted>"
    assert masker.mask('Proxy-Authorization: Digest response="6629fae49393a05397450978507c4ef1"') == (
        "Proxy-Authorization: <redacted>"
    )
    assert masker.mask("headers={'authorization': 'Bearer 8f14e45fceea167a'}") == (
        "headers={'authorization': 'Bearer ***'}"
    )
    assert masker.mask("retrying with Bearer eyJhbGciOiJIUzI1NiJ9.e30.x") == "retrying with Bearer ***"
    assert masker.mask("credentials(response=6629fae49393a053)") == "credentials(response=***)"
    assert masker.mask("login failed for hunter2-trunk-password!") == "login failed for ***!"
    assert masker.mask("sip:acme:hunter2@sip.example") == "sip:acme:***@sip.example"
    # Too short to search for without blanking ordinary text.
    assert LogMasker(["ab"]).mask("a tab") == "a tab"


def test_number_forms_outside_traces_and_what_is_left_alone() -> None:
    masker = LogMasker()
    assert masker.mask("transfer to +442079460958 accepted") == "transfer to +********0958 accepted"
    assert masker.mask("calling tel:+1-555-123-4567") == "calling tel:+**********4567"
    assert masker.mask('{"caller": "5551234567", "turn": 3}') == '{"caller": "******4567", "turn": 3}'
    assert masker.mask("caller=+1 555 123 4567") == "caller=+**********4567"
    # Already masked stays as it is (lines mask their numbers themselves).
    assert masker.mask("incoming call 1-2@h from +*******4567") == "incoming call 1-2@h from +*******4567"
    for untouched in (
        "registered sip:alice@sip.example for 3600 s",
        "media: received 1555123456, sent 1555123457",
        "listening on udp 10.0.0.1:5060 (public 203.0.113.10)",
        "2024-05-01T10:00:00+00:00 sent ahead 12345678",
        "RTP source changed to 0x5551234567",
        "call abc+15551234567@host ended",  # a '+' inside a Call-ID is not a number
    ):
        assert masker.mask(untouched) == untouched


def test_the_text_format_is_masked_too() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(LogFilter(LogMasker(["s3cret-webhook"])))
    logger = logging.getLogger("sipagent.test_logs.text")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(
            "refusing call %s from %s (signed with %s)", "1-1@h", f"sip:{CALLER}@h", "s3cret-webhook"
        )
    finally:
        logger.removeHandler(handler)
    assert (
        stream.getvalue()
        == "WARNING sipagent.test_logs.text: refusing call 1-1@h from sip:+*******4567@h (signed with ***)\n"
    )


# -- configuration ----------------------------------------------------------------------------------
def test_log_format_json_is_accepted_and_a_bad_value_names_the_key() -> None:
    assert build_settings({}).log_format == "text"
    assert build_settings({"log_format": "json"}).log_format == "json"
    with pytest.raises(ConfigError, match=r"log_format: .*'text' or 'json'"):
        build_settings({"log_format": "xml"})


def test_serve_has_a_log_format_option_that_refuses_other_values(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["serve", "--log-format", "xml"])
    assert result.exit_code == 2 and "'xml' is not one of 'text', 'json'" in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text('log_format = "yaml"\n')
    result = CliRunner().invoke(main, ["serve", "--config", str(bad)])
    assert result.exit_code == 1 and "log_format" in result.output and "Traceback" not in result.output


def test_the_secrets_come_from_where_the_settings_say(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIPAGENT_API_TOKEN", "api-token-123")
    monkeypatch.setenv("HOOK_SECRET", "hook-secret-456")
    monkeypatch.setenv("CRM_KEY", "Bearer crm-789")
    monkeypatch.setenv("TRUNK_PW", "trunk-pw-000")
    settings = build_settings(
        {
            "webhooks": {"url": "https://hooks.example/calls", "secret_env": "HOOK_SECRET"},
            "tools": [
                {
                    "name": "crm",
                    "description": "Look the caller up.",
                    "url": "https://crm.example/lookup",
                    "headers": {"Authorization": "CRM_KEY"},
                }
            ],
            "trunk": {"uri": "sip:sip.example", "password_env": "TRUNK_PW"},
        }
    )
    secrets = configured_secrets(settings)
    assert set(secrets) == {"api-token-123", "hook-secret-456", "Bearer crm-789", "trunk-pw-000"}
    assert "trunk-pw-000" not in repr(LogSetup("info", "json", secrets))


# -- the process setup ------------------------------------------------------------------------------
_CHILD = """
import logging, warnings
from sipagent.logs import LogSetup, install_logging
install_logging(LogSetup("info", "json", ("topsecret-value",)), process="inference")
logging.getLogger("sipagent.voice").info("models for call 1-2@h loaded with topsecret-value")
logging.getLogger("sipagent.voice").debug("below the level")
warnings.warn("a library complains")
raise RuntimeError("crashed calling +15551234567")
"""


def test_a_process_logs_json_lines_only_warnings_and_crashes_included() -> None:
    """The inference process's setup: every line JSON, tagged [inference], masked, a warning and an
    uncaught exception as lines of their own."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [(line["level"], line["logger"], line["call_id"]) for line in lines] == [
        ("info", "sipagent.voice[inference]", "1-2@h"),
        ("warning", "py.warnings[inference]", None),
        ("critical", "sipagent[inference]", None),
    ]
    assert lines[0]["message"] == "models for call 1-2@h loaded with ***"
    assert "a library complains" in str(lines[1]["message"])
    assert "RuntimeError: crashed calling +*******4567" in str(lines[2]["exception"])
    assert "15551234567" not in done.stderr and "topsecret" not in done.stderr


def test_the_inference_process_is_set_up_like_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from sipagent.layers import inference_config

    monkeypatch.setenv("SIPAGENT_API_TOKEN", "api-token-123")
    logs = inference_config(build_settings({"log_format": "json", "log_level": "debug"})).logs
    assert logs == LogSetup("debug", "json", ("api-token-123",))


# -- the real server ----------------------------------------------------------------------------------
DIALLED = "+15550003333"


@pytest.mark.peer
def test_the_server_logs_a_sipp_call_as_json_lines_with_its_call_id_and_no_full_number(
    tmp_path: Path,
) -> None:
    """``sipagent serve`` with ``log_format = "json"`` at debug level (the SIP traces too) answers a
    sipp caller whose From and P-Asserted-Identity carry a full number."""
    from peers.sipagent_proc import SipagentServer
    from peers.sipp import run_sipp, scenario_path

    with SipagentServer(tmp_path / "server", config_text='log_format = "json"\n') as server:
        result = run_sipp(
            scenario_path("uac_call_identity"), server.address, workdir=tmp_path / "sipp", service=DIALLED,
            keys={"from_user": CALLER, "identity": f"P-Asserted-Identity: <sip:{CALLER}@127.0.0.1>"},
            duration_ms=300, timeout=20,
        )  # fmt: skip
        result.assert_ok()
        assert server.process is not None
        server.process.wait_for_output(r" media: received", timeout=10)  # the call's last line
        stderr = server.log()
    call_id = result.sent()[0].call_id
    assert call_id
    lines = [json.loads(line) for line in stderr.splitlines()]  # every line is a JSON object
    assert lines and all({"time", "level", "logger", "message", "call_id"} <= set(line) for line in lines)
    of_call = [line for line in lines if line["call_id"] == call_id]
    # Every line that shows the Call-ID is tagged with it: the SIP traces both ways, the product's
    # lines, the media summary; and lines of no call carry none.
    assert all(line["call_id"] == call_id for line in lines if call_id in str(line["message"]))
    messages = [str(line["message"]) for line in of_call]
    assert any(m.startswith("recv ") and "INVITE sip:" in m for m in messages)
    assert any(m.startswith("send ") and "SIP/2.0 200 OK" in m for m in messages)
    assert any(m.startswith("incoming call ") for m in messages)
    assert any(" media: received" in m for m in messages)
    assert next(line for line in lines if "listening on" in str(line["message"]))["call_id"] is None
    # The caller's number shows masked, never whole (nor the number dialled), in traces or not.
    assert "+*******1111" not in stderr and "+*******4567" in stderr
    for full in (CALLER, CALLER[1:], CALLER[2:], DIALLED, DIALLED[2:]):
        assert full not in stderr, full
