"""Per-route recordings (decision 0031): which calls are recorded, the file's name and permissions,
the phone service starting the one stereo WAV at the answer and linking it from the call's record,
and the purge removing it. The same runs against a real peer in tests/test_interop_recording.py."""

from __future__ import annotations

import os
import stat
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from sipagent.call import Call, CallOptions
from sipagent.config import Settings
from sipagent.product.calls import CallBook
from sipagent.product.control import PlaceCall
from sipagent.product.lifecycle import end_of_call_report
from sipagent.product.limits import CallAdmission, LimitsConfig
from sipagent.product.policy import InboundPolicy
from sipagent.product.recordings import (
    MAX_ID_CHARS,
    RecordingPolicy,
    create_recording_file,
    recording_name,
    recordings_of,
    safe_call_id,
)
from sipagent.product.routes import Route, RouteTable
from sipagent.product.service import Dial, PhoneService
from sipagent.product.setup import route_table
from sipagent.product.store import CallStore, recording_files
from sipagent.rtp.frames import SAMPLES_PER_FRAME, AudioFrame, FrameKind, Pcm
from sipagent.rtp.recorder import CallRecorder
from sipagent.rtp.session import Tick
from sipagent.sip.uri import SipUri


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- the decision ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("enabled", "route_record", "recorded"),
    [
        (False, None, False),  # nothing asked
        (False, True, True),  # the route records its calls alone
        (False, False, False),
        (True, None, True),  # [recording] enabled: every call
        (True, True, True),
        (True, False, False),  # the route opts out of the global switch
    ],
)
def test_a_route_record_overrides_the_global_switch(
    enabled: bool, route_record: bool | None, recorded: bool
) -> None:
    assert RecordingPolicy(Path("r"), every_call=enabled).records(route_record) is recorded


def test_the_route_setting_reaches_the_route_table() -> None:
    settings = Settings.model_validate(
        {
            "routes": [
                {"number": "+15550001111", "record": True},
                {"number": "+15550002222", "record": False},
                {"greeting": "Hello."},
            ]
        }
    )
    table = route_table(settings)
    assert table.match("+15550001111").record is True
    assert table.match("+15550002222").record is False
    assert table.match("+15550009999").record is None  # the default route: as [recording] says


def test_a_route_record_must_be_a_boolean() -> None:
    with pytest.raises(ValueError, match="record"):
        Settings.model_validate({"routes": [{"record": "sometimes"}]})


# -- names and permissions ------------------------------------------------------------------------


def test_names_sort_by_the_answer_time_in_utc() -> None:
    paris = timezone(timedelta(hours=2))
    when = datetime(2026, 5, 4, 1, 2, 3, tzinfo=paris)
    assert recording_name("a84b4c76e66710@pc33.example.com", when) == (
        "20260503-230203Z-a84b4c76e66710_pc33.example.com.wav"
    )


@pytest.mark.parametrize(
    "call_id", ["../../etc/passwd", "/abs/olute", "..", "a b;c\\d", "ünïcødé", "", "x" * 300, "\x00\n"]
)
def test_a_call_id_never_escapes_the_directory(call_id: str, tmp_path: Path) -> None:
    safe = safe_call_id(call_id)
    assert safe and len(safe) <= MAX_ID_CHARS
    assert set(safe) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
    path = create_recording_file(tmp_path / "rec", call_id, datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert path.parent == (tmp_path / "rec").resolve()
    assert path.name.startswith("20260102-030405Z-") and path.suffix == ".wav"


def test_long_call_ids_that_share_their_start_get_different_names() -> None:
    a, b = "c" * 100 + "-one", "c" * 100 + "-two"
    assert safe_call_id(a) != safe_call_id(b)
    assert len(safe_call_id(a)) == MAX_ID_CHARS


def test_the_directory_is_0700_and_the_file_0600_whatever_the_umask(tmp_path: Path) -> None:
    with umask(0):
        path = create_recording_file(tmp_path / "a" / "recordings", "call-1")
    assert path.is_absolute() and path.is_file() and path.stat().st_size == 0
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    with umask(0o277):  # a umask that would leave the file unwritable (0400)
        second = create_recording_file(tmp_path / "a" / "recordings", "call-2")
    assert mode(second) == 0o600


def test_an_existing_directory_open_to_others_is_tightened(tmp_path: Path) -> None:
    directory = tmp_path / "recordings"
    directory.mkdir()
    directory.chmod(0o755)
    create_recording_file(directory, "call-1")
    assert mode(directory) == 0o700


def test_a_name_taken_is_never_reopened(tmp_path: Path) -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    first = create_recording_file(tmp_path, "same", when)
    first.write_bytes(b"kept")
    second = create_recording_file(tmp_path, "same", when)
    assert first.read_bytes() == b"kept"
    assert second.name == "20260102-030405Z-same+2.wav"
    assert recordings_of(tmp_path, "same") == [second, first]  # sorted by name
    # "+" is never in a safe Call-ID: the call "same+2" (safe: "same_2") is not "same"'s.
    assert recordings_of(tmp_path, "same+2") == []


def test_the_recorder_writes_only_the_stereo_file_0600(tmp_path: Path) -> None:
    path = create_recording_file(tmp_path, "call-1")
    with umask(0o022):
        recorder = CallRecorder(path.with_suffix(""), stereo=True, mono=False, both_path=path)
    for tick in range(10):
        recorder.write_inbound(np.full(SAMPLES_PER_FRAME, tick + 1, dtype=np.int16))
        recorder.write_outbound(np.full(SAMPLES_PER_FRAME, -(tick + 1), dtype=np.int16))
    recorder.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    assert recorder.caller_path is None and recorder.agent_path is None
    assert mode(path) == 0o600
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        pairs = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    assert pairs[::SAMPLES_PER_FRAME, 0].tolist() == list(range(1, 11))
    assert pairs[::SAMPLES_PER_FRAME, 1].tolist() == [-n for n in range(1, 11)]
    with pytest.raises(ValueError, match="mono legs, the stereo file or both"):
        CallRecorder(tmp_path / "x", mono=False)


# -- the phone service ----------------------------------------------------------------------------


class Telephony:
    """Real :class:`Call` objects (echo mode: no models), no sockets."""

    base_conversation = None

    def __init__(self) -> None:
        self.calls: dict[str, Call] = {}
        self.hung_up: list[str] = []

    def add(self, call_id: str) -> Call:
        self.calls[call_id] = Call(call_id, CallOptions(mode="echo"), hangup=lambda reason: None)
        return self.calls[call_id]

    def call(self, call_id: str) -> Call | None:
        return self.calls.get(call_id)

    async def dial(self, dial: Dial) -> str:
        self.add("out-1")
        return "out-1"

    def hang_up(self, call_id: str) -> None:
        self.hung_up.append(call_id)

    def outbound_target(self, number: str) -> Dial:
        return Dial(SipUri.parse(f"sip:{number}@trunk.example.test"), None, None)

    def caller_identity(self, dial: Dial, caller_id: str | None) -> Dial:
        return dial


def service(telephony: Telephony, directory: Path, *, every_call: bool = False) -> PhoneService:
    routes = RouteTable(
        [Route("sales", "+15550003333", record=True), Route("private", "+15550004444", record=False)],
        Route("default"),
        default_country="US",
    )
    return PhoneService(
        telephony,  # type: ignore[arg-type]
        policy=InboundPolicy(mode="open", allow_loopback=True),
        routes=routes,
        admission=CallAdmission(LimitsConfig()),
        default_country="US",
        outbound_disclosure=None,
        outbound_route=routes.named("sales") or routes.default,
        goodbye="Goodbye.",
        book=CallBook(),
        recordings=RecordingPolicy(directory, every_call=every_call),
    )


def frame(value: int) -> Pcm:
    return np.full(SAMPLES_PER_FRAME, value, dtype=np.int16)


def tick(call: Call, n: int) -> None:
    # CONCEALED: echo mode sends only VOICE frames back, and this call has no socket to send on.
    call._on_tick(Tick(n * 0.02, AudioFrame(frame(n + 1), FrameKind.CONCEALED), frame(-(n + 1))))


def answer(svc: PhoneService, telephony: Telephony, call_id: str, dialled: str) -> Call:
    assert svc.admit_incoming(call_id, caller="+15550001111", dialled=dialled, source_host="h").status is None
    call = telephony.add(call_id)
    tick(call, 99)  # before the answer: not recorded
    svc.answered(call_id)
    return call


async def test_a_recorded_route_makes_one_stereo_file_from_the_answer_linked_everywhere(
    tmp_path: Path,
) -> None:
    telephony = Telephony()
    svc = service(telephony, tmp_path / "rec")
    store = CallStore(tmp_path / "calls.db")
    svc.store = store
    store.call_started("c1", direction="inbound", caller="+15550001111", callee="+15550003333", route="sales")
    call = answer(svc, telephony, "c1", "+15550003333")
    for n in range(5):
        tick(call, n)
    call.close()
    info = svc.get_call("c1")
    (path,) = (tmp_path / "rec").iterdir()
    assert info.recording == str(path.resolve())
    assert info.as_json()["recording"] == info.recording
    assert end_of_call_report(info, recording_path=info.recording)["recording"] == info.recording
    store.flush()
    stored = store.call("c1")
    assert stored is not None and stored.recording == info.recording
    store.close()
    with wave.open(str(path), "rb") as wav:
        assert wav.getnchannels() == 2 and wav.getnframes() == 5 * SAMPLES_PER_FRAME
        pairs = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2)
    # Tick by tick from the answer on: the caller's frame left, ours right, never the tick before it.
    assert pairs[::SAMPLES_PER_FRAME].tolist() == [[n + 1, -(n + 1)] for n in range(5)]


async def test_the_recording_starts_before_the_agents_first_word(tmp_path: Path) -> None:
    class Spy(Call):
        recording_at_greeting: bool | None = None

        def start_agent(self, config: object = None) -> None:
            self.recording_at_greeting = self.recorder is not None

    telephony = Telephony()
    svc = service(telephony, tmp_path / "rec")
    svc.admit_incoming("c1", caller="+15550001111", dialled="+15550003333", source_host="h")
    telephony.calls["c1"] = spy = Spy("c1", CallOptions(mode="agent"), hangup=lambda reason: None)
    svc.answered("c1")
    spy.close()
    assert spy.recording_at_greeting is True


@pytest.mark.parametrize(
    ("every_call", "dialled", "recorded"),
    [
        (False, "+15550004444", False),
        (False, "+15550009999", False),  # the default route: as [recording] says, off
        (True, "+15550009999", True),
        (True, "+15550004444", False),  # record = false beats enabled
    ],
)
async def test_the_decision_is_the_calls_route(
    tmp_path: Path, every_call: bool, dialled: str, recorded: bool
) -> None:
    telephony = Telephony()
    svc = service(telephony, tmp_path / "rec", every_call=every_call)
    call = answer(svc, telephony, "c1", dialled)
    call.close()
    assert (call.recorder is not None) is recorded
    assert (svc.get_call("c1").recording is not None) is recorded
    files = list((tmp_path / "rec").iterdir()) if (tmp_path / "rec").exists() else []
    assert len(files) == int(recorded)


async def test_an_outbound_call_follows_the_outbound_route(tmp_path: Path) -> None:
    telephony = Telephony()
    svc = service(telephony, tmp_path / "rec")  # outbound route: "sales", record = true
    info = await svc.place_call(PlaceCall(target="sip:bob@example.test"))
    assert info.id == "out-1"
    svc.answered("out-1")
    call = telephony.calls["out-1"]
    call.close()
    assert call.recorder is not None and svc.get_call("out-1").recording is not None
    assert Path(str(svc.get_call("out-1").recording)).name.endswith("-out-1.wav")


async def test_a_directory_that_cannot_be_made_costs_the_recording_not_the_call(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    telephony = Telephony()
    svc = service(telephony, blocker / "rec")
    call = answer(svc, telephony, "c1", "+15550003333")
    assert call.recorder is None and svc.get_call("c1").state == "answered"
    assert svc.get_call("c1").recording is None


# -- retention ------------------------------------------------------------------------------------


def test_purge_removes_the_stereo_file_and_keeps_the_neighbours(tmp_path: Path) -> None:
    now = [1_000_000_000.0]
    rec = tmp_path / "rec"
    with CallStore(tmp_path / "calls.db", clock=lambda: now[0]) as store:
        old = create_recording_file(rec, "old@host")
        lost = create_recording_file(rec, "lost@host")  # its row never got the path
        young = create_recording_file(rec, "young@host")
        legacy = rec / "legacy-both.wav"
        legacy.write_bytes(b"")
        for call_id in ("old@host", "lost@host", "legacy"):
            store.call_started(call_id, direction="inbound", caller="a", callee="b")
        store.recording("old@host", str(old))
        store.recording("legacy", str(rec / "legacy"))  # an earlier release's prefix
        now[0] += 40 * 86400
        store.call_started("young@host", direction="inbound", caller="a", callee="b")
        store.recording("young@host", str(young))
        assert store.purge(30, rec) == 3
    assert not old.exists() and not lost.exists() and not legacy.exists()
    assert young.exists()
    assert recording_files(young) == [young] and recording_files(old) == []


def test_settings_accept_record_with_the_recording_directory(tmp_path: Path) -> None:
    settings = Settings.model_validate(
        {"recording": {"directory": str(tmp_path)}, "routes": [{"record": True}]}
    )
    assert settings.recording.enabled is False and settings.routes[0].record is True
    assert replace(RecordingPolicy(settings.recording.directory), every_call=True).records(None)
