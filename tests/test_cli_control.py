"""The CLI commands that drive a running server (sipagent/cli_control.py), through click's test
runner, against the real control API over a fake server (tests/fake_control.py) running in a
background thread's event loop: what each prints, its exit status, and one-line errors."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest
from click.testing import CliRunner

from sipagent import cli_control
from sipagent.api.client import ApiClient
from sipagent.api.config import ApiConfig
from sipagent.api.server import ApiServer
from sipagent.cli import main
from tests.fake_control import FakeControl

TOKEN = "cli-token"
T = TypeVar("T")


class Background:
    """The API and its fake on an event loop of their own thread, as a running server would be."""

    def __init__(self, fake: FakeControl, config: ApiConfig) -> None:
        self.fake = fake
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="api-loop", daemon=True)
        self.thread.start()
        self.server = ApiServer(fake, config)
        self.run(self.server.start())
        self.url = self.server.url

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def call(self, func: Callable[[], T]) -> T:
        """``func()`` on the loop's thread (the fake is not thread-safe, as the server is not)."""
        done: Future[T] = Future()

        def run() -> None:
            try:
                done.set_result(func())
            except BaseException as exc:
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return done.result(timeout=30)

    def when_subscribed(self, then: Callable[[], None]) -> threading.Thread:
        """Run ``then`` on the loop once a client has subscribed to events (from another thread)."""

        async def wait_then() -> None:
            async with asyncio.timeout(20):
                while not self.fake.subscriptions:
                    await asyncio.sleep(0.005)
            then()

        thread = threading.Thread(target=self.run, args=(wait_then(),), daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def server() -> Iterator[Background]:
    background = Background(FakeControl(script=True), ApiConfig(port=0, token=TOKEN))
    try:
        yield background
    finally:
        background.close()


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_control, "POLL_INTERVAL", 0.01)


def invoke(*args: str, token: str | None = TOKEN, env: dict[str, str | None] | None = None) -> Any:
    runner = CliRunner()
    environment: dict[str, str | None] = {
        "SIPAGENT_API_TOKEN": token,
        "SIPAGENT_API_URL": None,
        **(env or {}),
    }
    return runner.invoke(main, list(args), env=environment, catch_exceptions=False)


def one_line_error(result: Any) -> str:
    """The error a command printed: exactly one line on stderr, nothing on stdout."""
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr
    line: str = lines[0]
    return line


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# ------------------------------------------------------------------------------------ call


def test_call_json_prints_one_object_and_exits_0_when_answered(server: Background) -> None:
    result = invoke(
        "call", "+15550000200", "--task", "Tell them the order is ready.", "--json", "--api", server.url
    )
    assert result.exit_code == 0, result.stderr
    final = json.loads(result.stdout)  # one JSON object, and nothing else on stdout
    assert final["state"] == "ended" and final["outcome"] == "answered" and final["sip_status"] == 200
    assert [turn["caller"] for turn in final["turns"]] == ["Hello?", "Thanks, bye."]
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("target", "outcome", "status"),
    [("+15550000486", "busy", 486), ("+15550000408", "no-answer", 487), ("+15550000603", "rejected", 603)],
)
def test_call_exits_1_when_not_answered(server: Background, target: str, outcome: str, status: int) -> None:
    result = invoke("call", target, "--json", "--api", server.url)
    assert result.exit_code == 1
    final = json.loads(result.stdout)
    assert final["outcome"] == outcome and final["sip_status"] == status


def test_call_prints_the_outcome_and_the_transcript(server: Background) -> None:
    result = invoke(
        "call", "+15550000200", "--mode", "notify", "--message", "Your order is ready.", "--repeat", "2",
        "--from", "+15550001111", "--max-duration", "30", "--ring-timeout", "15", "--api", server.url,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "answered (SIP 200)" in result.stdout and "agent ended the call" in result.stdout
    assert "caller: Hello?" in result.stdout and "agent:  Goodbye!" in result.stdout
    assert "ringing" in result.stderr  # progress goes to stderr
    placed = server.fake.requests[0][1]
    assert (placed.mode, placed.message, placed.repeat, placed.from_number) == (
        "notify", "Your order is ready.", 2, "+15550001111"
    )  # fmt: skip
    assert (placed.max_duration, placed.ring_timeout) == (30.0, 15.0)


def test_call_no_wait_returns_once_it_rings(server: Background) -> None:
    result = invoke("call", "+15550000200", "--no-wait", "--json", "--api", server.url)
    assert result.exit_code == 0
    assert json.loads(result.stdout)["state"] == "ringing"


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        (["--mode", "notify"], "--mode notify needs --message"),
        (["--mode", "notify", "--message", "Hi", "--task", "x"], "--task is for --mode conversation"),
        (["--message", "Hi"], "--message is for --mode notify"),
        (["--repeat", "2"], "--repeat is for --mode notify"),
        (["--mode", "notify", "--message", "Hi", "--repeat", "9"], "--repeat"),
        (["--max-duration", "0"], "--max-duration"),
    ],
)
def test_call_options_are_checked_before_asking_the_server(
    server: Background, options: list[str], problem: str
) -> None:
    result = invoke("call", "+15550000200", *options, "--api", server.url)
    assert result.exit_code == 2 and problem in result.stderr
    assert server.fake.requests == []


def test_call_to_a_bad_target_is_one_line_naming_it(server: Background) -> None:
    line = one_line_error(invoke("call", "bob", "--api", server.url))
    assert line.startswith("Error: target: 'bob' is not a phone number")


def test_ctrl_c_while_following_hangs_the_call_up(
    server: Background, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_control, "_pause", interrupted)
    result = invoke("call", "sip:echo@127.0.0.1", "--api", server.url)
    assert result.exit_code == cli_control.EXIT_INTERRUPTED
    assert "interrupted: hung up call c1" in result.stderr and "Traceback" not in result.stderr
    assert ("hang_up", "c1") in server.fake.requests


def test_call_help_says_it_needs_a_running_server() -> None:
    result = invoke("call", "--help")
    assert result.exit_code == 0
    assert "running `sipagent serve`" in result.stdout and "sipagent serve --config FILE" in result.stdout


# ------------------------------------------------------------------------- the other commands


def test_calls_live_prints_a_table_or_a_json_array(server: Background) -> None:
    # `calls --live` (an --api URL on the command line implies it): what the server holds, not the
    # store's history (tests/test_cli_reports.py).
    assert invoke("calls", "--live", "--api", server.url).stdout.strip() == "no calls"
    invoke("call", "+15550000486", "--api", server.url)
    invoke("call", "+15550000200", "--api", server.url)
    table = invoke("calls", "--api", server.url)
    assert table.exit_code == 0
    rows = table.stdout.splitlines()
    assert rows[0].split()[:3] == ["id", "dir", "state"]
    assert rows[1].split()[0] == "c2" and "answered (200)" in rows[1]
    assert rows[2].split()[0] == "c1" and "busy (486)" in rows[2]
    listing = json.loads(invoke("calls", "--json", "--api", server.url).stdout)
    assert [call["id"] for call in listing] == ["c2", "c1"]


def test_status_shows_one_call(server: Background) -> None:
    invoke("call", "+15550000200", "--api", server.url)
    text = invoke("status", "c1", "--api", server.url)
    assert text.exit_code == 0 and "c1 to " in text.stdout and "caller: Thanks, bye." in text.stdout
    assert json.loads(invoke("status", "c1", "--json", "--api", server.url).stdout)["id"] == "c1"
    assert one_line_error(invoke("status", "c9", "--api", server.url)) == "Error: call_id: no call 'c9'"


def test_speak_dtmf_and_end_reach_the_server(server: Background) -> None:
    server.fake.script = False
    invoke("call", "+15550000200", "--no-wait", "--api", server.url)
    server.call(lambda: server.fake.answer("c1"))
    assert invoke("speak", "c1", "One moment please.", "--interrupt", "--api", server.url).exit_code == 0
    assert invoke("dtmf", "c1", "12#", "--api", server.url).stdout.strip() == "c1: sent DTMF 12#"
    assert invoke("end", "c1", "--api", server.url).stdout.strip() == "c1: hanging up"
    assert server.fake.requests[1:] == [
        ("speak", "c1", "One moment please.", True),
        ("send_dtmf", "c1", "12#"),
        ("hang_up", "c1"),
    ]


def test_bad_dtmf_is_one_line_naming_digits(server: Background) -> None:
    invoke("call", "+15550000200", "--api", server.url)
    line = one_line_error(invoke("dtmf", "c1", "12X", "--api", server.url))
    assert line == "Error: digits: only 0-9, *, #, A-D are DTMF digits, not 'X'"


def test_speak_in_a_call_that_is_not_answered_is_one_line(server: Background) -> None:
    server.fake.script = False
    invoke("call", "+15550000200", "--no-wait", "--api", server.url)
    assert one_line_error(invoke("speak", "c1", "hi", "--api", server.url)).endswith(
        "the call is not answered"
    )


def test_tail_follows_one_call_until_it_ends(server: Background) -> None:
    server.fake.script = False
    invoke("call", "+15550000200", "--no-wait", "--api", server.url)

    def story() -> None:
        server.fake.answer("c1")
        server.fake.publish("transcript", "c1", text="is my order ready?")
        server.fake.end("c1", reason="agent ended the call")

    server.when_subscribed(story)
    result = invoke("tail", "c1", "--json", "--api", server.url)
    assert result.exit_code == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]  # JSON Lines
    assert [event["type"] for event in events] == ["answered", "transcript", "call_ended"]
    assert events[1]["text"] == "is my order ready?"


def test_tail_text_lines(server: Background) -> None:
    server.fake.script = False
    invoke("call", "+15550000200", "--no-wait", "--api", server.url)

    def story() -> None:
        server.fake.publish("dtmf", "c1", digit="5")
        server.fake.end("c1", outcome="busy", sip_status=486, reason="busy")

    server.when_subscribed(story)
    result = invoke("tail", "c1", "--api", server.url)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert "c1 dtmf" in lines[0] and "digit=5" in lines[0]
    assert "call_ended" in lines[1] and "outcome=busy" in lines[1]


def test_tail_of_an_unknown_call_is_one_line(server: Background) -> None:
    assert one_line_error(invoke("tail", "nope", "--api", server.url)) == "Error: call_id: no call 'nope'"


def test_ctrl_c_stops_tail_cleanly(server: Background, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(self: ApiClient, call_id: str | None = None) -> Iterator[dict[str, Any]]:
        yield {"type": "ringing", "call_id": "c1", "at": 1.0}
        raise KeyboardInterrupt

    monkeypatch.setattr(ApiClient, "events", interrupted)
    result = invoke("tail", "--api", server.url)
    assert result.exit_code == 0 and "ringing" in result.stdout and result.stderr == ""


# ------------------------------------------------------------------- finding the server, token


@pytest.mark.parametrize("command", [["calls"], ["call", "+15551234567"], ["tail"], ["dtmf", "c1", "1"]])
def test_no_server_running_is_one_line(command: list[str]) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    line = one_line_error(invoke(*command, "--api", url))
    assert line == (
        f"Error: no sipagent server answers at {url} — start one with `sipagent serve` (or pass --api URL)"
    )


def test_a_wrong_or_missing_token_is_one_line(server: Background) -> None:
    line = one_line_error(invoke("calls", "--api", server.url, token="wrong"))
    assert line.startswith("Error: the API refused the token: set SIPAGENT_API_TOKEN")
    line = one_line_error(invoke("tail", "--api", server.url, token="wrong"))
    assert line.startswith("Error: the API refused the token")
    line = one_line_error(invoke("calls", "--api", server.url, token=None))
    assert line.startswith("Error: the API wants a token: set SIPAGENT_API_TOKEN")


def test_the_api_is_found_from_the_config(server: Background, tmp_path: Path) -> None:
    config = tmp_path / "sipagent.toml"
    port = server.server.bound_port
    config.write_text(f'[api]\nbind = "0.0.0.0"\nport = {port}\ntoken_env = "MY_SIPAGENT_TOKEN"\n')
    result = invoke(
        "calls", "--live", "--json", "--config", str(config), token=None, env={"MY_SIPAGENT_TOKEN": TOKEN}
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == []
    # The URL from the environment, as --api.
    assert invoke("calls", "--live", env={"SIPAGENT_API_URL": server.url}).exit_code == 0


def test_a_bad_config_or_url_is_one_line(tmp_path: Path) -> None:
    line = one_line_error(invoke("calls", "--live", "--config", str(tmp_path / "missing.toml")))
    assert "does not exist" in line
    result = invoke("calls", "--api", "127.0.0.1:8060")
    assert result.exit_code == 2 and "http://" in result.stderr
