"""The phone service's rules with a fake telephony (no sockets, no models): admission, outbound
requests checked field by field, what an answered call says, outcomes and events. The same service
runs against real peers in tests/test_interop_policy.py, test_interop_outbound.py and
test_interop_api.py."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace

import pytest

from sipagent.product.calls import CallBook
from sipagent.product.control import CallLimitReached, ControlError, PlaceCall, UnknownCall
from sipagent.product.limits import CallAdmission, LimitsConfig
from sipagent.product.policy import InboundPolicy
from sipagent.product.routes import Route, RouteTable
from sipagent.product.service import Dial, PhoneService
from sipagent.sip.uri import SipUri
from sipagent.voice.conversation import ConversationConfig


@dataclass
class FakeCall:
    agent_config: ConversationConfig | None = None
    started: bool = False
    said: list[tuple[str, bool, str | None]] = field(default_factory=list)
    digits: list[str] = field(default_factory=list)
    on_turn: object = None
    on_dtmf: object = None

    def start_agent(self, config: ConversationConfig | None = None) -> None:
        self.started, self.agent_config = True, config

    def say(self, text: str, *, interrupt: bool = False, hang_up_after: str | None = None) -> bool:
        if not self.started or self.agent_config is None:
            return False
        self.said.append((text, interrupt, hang_up_after))
        return True

    def send_dtmf(self, digits: str) -> bool:
        self.digits.append(digits)
        return True

    tool_results: list[tuple[str, str]] = field(default_factory=list)
    transfers_failed: list[str] = field(default_factory=list)
    on_action: object = None

    def tool_result(self, call_id: str, content: str) -> None:
        self.tool_results.append((call_id, content))

    def transfer_failed(self, reason: str) -> None:
        self.transfers_failed.append(reason)


class FakeTelephony:
    def __init__(self, *, agent: bool = True) -> None:
        self.base = ConversationConfig() if agent else None
        self.calls: dict[str, FakeCall] = {}
        self.dialled: list[Dial] = []
        self.hung_up: list[str] = []
        self.transfers: list[tuple[str, str]] = []

    @property
    def base_conversation(self) -> ConversationConfig | None:
        return self.base

    def call(self, call_id: str) -> FakeCall | None:
        return self.calls.get(call_id)

    async def dial(self, dial: Dial) -> str:
        call_id = f"out-{len(self.dialled) + 1}"
        self.dialled.append(dial)
        self.calls[call_id] = FakeCall()
        return call_id

    def hang_up(self, call_id: str) -> None:
        self.hung_up.append(call_id)

    def transfer(self, call_id: str, target: str) -> None:
        self.transfers.append((call_id, target))

    def outbound_target(self, number: str) -> Dial:
        return Dial(SipUri.parse(f"sip:{number}@trunk.example.test"), None, None)

    def caller_identity(self, dial: Dial, caller_id: str | None) -> Dial:
        number = caller_id or "+15550009999"
        return replace(dial, from_uri=SipUri.parse(f"sip:{number}@us.example.test"))


def _service(telephony: FakeTelephony, **limits: object) -> PhoneService:
    routes = RouteTable(
        [Route("bakery", "+15550003333", greeting="Welcome to the bakery.", instructions="Sell bread.")],
        Route("default", greeting="Hello.", disclosure="This is an AI."),
        default_country="US",
    )
    return PhoneService(
        telephony,  # type: ignore[arg-type]
        policy=InboundPolicy(mode="allowlist", allow=frozenset({"+15550001111"}), allow_loopback=False),
        routes=routes,
        admission=CallAdmission(LimitsConfig(**limits)),  # type: ignore[arg-type]
        default_country="US",
        outbound_disclosure="An automated call.",
        outbound_route=routes.default,
        goodbye="Time is up. Goodbye.",
        book=CallBook(clock=lambda: 1000.0),
        clock=lambda: 0.0,
    )


def test_a_stranger_gets_403_and_leaves_no_trace() -> None:
    service = _service(FakeTelephony())
    admitted = service.admit_incoming("c1", caller="sip:+15550002222@carrier", dialled="+15550003333",
                                      source_host="203.0.113.7")  # fmt: skip
    assert admitted.status == 403 and admitted.route is None
    assert service.list_calls() == []


async def test_a_listed_caller_gets_the_route_of_the_number_dialled() -> None:
    telephony = FakeTelephony()
    service = _service(telephony)
    admitted = service.admit_incoming("c1", caller="sip:+15550001111@carrier", dialled="5550003333",
                                      source_host="203.0.113.7")  # fmt: skip
    assert admitted.status is None and admitted.route is not None and admitted.route.name == "bakery"
    info = service.get_call("c1")
    assert info.state == "ringing" and info.from_ == "+*******1111" and info.route == "bakery"
    telephony.calls["c1"] = call = FakeCall()
    service.answered("c1")
    assert call.agent_config is not None
    assert call.agent_config.greeting == "Welcome to the bakery."
    assert call.agent_config.system_prompt == "Sell bread."
    other = service.admit_incoming("c2", caller="+15550001111", dialled="+15550004444", source_host="h")
    assert other.route is not None and other.route.name == "default"


def test_max_calls_answers_503_with_retry_after_before_anything_is_allocated() -> None:
    service = _service(FakeTelephony(), max_calls=1, retry_after_s=17, calls_per_minute=0)
    assert service.admit_incoming("c1", caller="+15550001111", dialled=None, source_host="h").status is None
    refused = service.admit_incoming("c2", caller="+15550001111", dialled=None, source_host="h")
    assert refused.status == 503 and refused.headers == (("Retry-After", "17"),)
    service.ended("c1", status=None, reason="bye", by_remote=True)
    assert service.admit_incoming("c3", caller="+15550001111", dialled=None, source_host="h").status is None


@pytest.mark.parametrize(
    ("request_", "field_"),
    [
        (PlaceCall("not a number"), "target"),
        (PlaceCall("sip:"), "target"),
        (PlaceCall("+15551234567", from_number="nope"), "from"),
        (PlaceCall("+15551234567", mode="notify"), "message"),
        (PlaceCall("+15551234567", mode="notify", message="x" * 1001), "message"),
        (PlaceCall("+15551234567", mode="notify", message="hi", repeat=9), "repeat"),
        (PlaceCall("+15551234567", task="x" * 2001), "task"),
        (PlaceCall("+15551234567", max_duration=99999), "max_duration"),
        (PlaceCall("+15551234567", ring_timeout=0), "ring_timeout"),
    ],
)
async def test_a_bad_outbound_request_names_its_field_and_dials_nothing(
    request_: PlaceCall, field_: str
) -> None:
    telephony = FakeTelephony()
    with pytest.raises(ControlError) as error:
        await _service(telephony).place_call(request_)
    assert error.value.field == field_ and 400 <= error.value.status < 500
    assert telephony.dialled == []


async def test_notify_needs_the_models() -> None:
    with pytest.raises(ControlError, match="echo mode") as error:
        await _service(FakeTelephony(agent=False)).place_call(PlaceCall("+15551234567", "notify", "hi"))
    assert error.value.status == 409


async def test_a_notify_call_says_the_disclosure_then_the_message_and_hangs_up_after_it() -> None:
    telephony = FakeTelephony()
    service = _service(telephony)
    info = await service.place_call(PlaceCall("(555) 123-4567", "notify", "Your parcel is here.", repeat=2,
                                              from_number="+15550008888"))  # fmt: skip
    assert info.state == "ringing" and info.to == "+*******4567" and info.from_ == "+*******8888"
    assert str(telephony.dialled[0].target) == "sip:+15551234567@trunk.example.test"
    call = telephony.calls[info.id]
    assert not call.started  # nothing is said before the answer
    service.answered(info.id)
    assert call.agent_config is not None and call.agent_config.listen is False
    assert call.said == [("An automated call.", False, None), ("Your parcel is here.", False, None),
                         ("Your parcel is here.", False, "message played")]  # fmt: skip
    service.closing(info.id, "message played")
    service.ended(info.id, status=None, reason="bye", by_remote=False)
    final = service.get_call(info.id)
    assert final.outcome == "answered" and final.end_reason == "message played"


async def test_a_conversation_call_adds_its_task_to_the_instructions() -> None:
    telephony = FakeTelephony()
    service = _service(telephony)
    info = await service.place_call(PlaceCall("+15551234567", task="Confirm the delivery."))
    service.answered(info.id)
    config = telephony.calls[info.id].agent_config
    assert config is not None and config.listen
    assert "Confirm the delivery." in config.system_prompt and config.greeting is None
    assert telephony.calls[info.id].said == [("An automated call.", False, None)]


async def test_outbound_beyond_max_calls_is_refused_not_queued() -> None:
    telephony = FakeTelephony()
    service = _service(telephony, max_calls=1)
    await service.place_call(PlaceCall("+15551234567"))
    with pytest.raises(CallLimitReached) as error:
        await service.place_call(PlaceCall("+15551234568"))
    assert error.value.status == 429 and len(telephony.dialled) == 1


OUTCOMES = [
    (486, "busy"),
    (600, "busy"),
    (480, "no-answer"),
    (403, "rejected"),
    (603, "rejected"),
    (503, "failed"),
]


@pytest.mark.parametrize(("status", "outcome"), OUTCOMES)
async def test_an_unanswered_call_has_the_outcome_its_status_says(status: int, outcome: str) -> None:
    service = _service(FakeTelephony())
    info = await service.place_call(PlaceCall("+15551234567"))
    service.ended(info.id, status=status, reason=f"{status}", by_remote=True)
    final = service.get_call(info.id)
    assert final.outcome == outcome and final.sip_status == status and final.state == "ended"


async def test_ring_timeout_cancels_and_the_outcome_is_no_answer() -> None:
    telephony = FakeTelephony()
    service = _service(telephony)
    info = await service.place_call(PlaceCall("+15551234567", ring_timeout=0.01))
    await asyncio.sleep(0.05)  # the loop runs the 10 ms timer first, whatever the machine's speed
    assert telephony.hung_up == [info.id]
    service.ended(info.id, status=487, reason="cancelled", by_remote=False)
    assert service.get_call(info.id).outcome == "no-answer"
    assert service.get_call(info.id).end_reason == "no answer"


async def test_max_call_duration_says_goodbye_then_ends_the_call() -> None:
    telephony = FakeTelephony()
    service = _service(telephony)
    info = await service.place_call(PlaceCall("+15551234567", max_duration=0.01))
    service.answered(info.id)
    await asyncio.sleep(0.05)
    assert telephony.calls[info.id].said[-1] == ("Time is up. Goodbye.", True, "max duration")


async def test_speak_dtmf_and_hang_up_check_the_call_and_the_input() -> None:
    telephony = FakeTelephony()
    service = _service(telephony)
    with pytest.raises(UnknownCall):
        service.speak("nope", "hi")
    info = await service.place_call(PlaceCall("+15551234567"))
    with pytest.raises(ControlError, match="not answered") as error:
        service.speak(info.id, "hi")
    assert error.value.status == 409
    service.answered(info.id)
    with pytest.raises(ControlError) as error:
        service.speak(info.id, "x" * 1001)
    assert error.value.field == "text"
    with pytest.raises(ControlError) as error:
        service.send_dtmf(info.id, "12X")
    assert error.value.field == "digits"
    service.speak(info.id, "Breaking news.", interrupt=True)
    service.send_dtmf(info.id, "12#")
    assert telephony.calls[info.id].said[-1] == ("Breaking news.", True, None)
    assert telephony.calls[info.id].digits == ["12#"]
    service.hang_up(info.id)
    service.ended(info.id, status=None, reason="bye", by_remote=False)
    assert service.get_call(info.id).end_reason == "hung up by the API"


async def test_events_reach_subscribers_of_all_calls_and_of_one() -> None:
    telephony = FakeTelephony()
    service = _service(telephony)
    everything = service.subscribe()
    first = asyncio.ensure_future(anext(everything))
    await asyncio.sleep(0)
    info = await service.place_call(PlaceCall("+15551234567"))
    assert (await first).type == "call_started"
    one = service.subscribe(info.id)
    collected: list[str] = []

    async def collect() -> None:
        async for event in one:
            collected.append(event.type)

    task = asyncio.ensure_future(collect())
    await asyncio.sleep(0)
    service.ringing(info.id, 180)
    service.answered(info.id)
    service.ended(info.id, status=None, reason="bye", by_remote=True)
    await asyncio.wait_for(task, 1)  # a one-call stream ends after call_ended
    assert collected == ["ringing", "answered", "call_ended"]
    assert service.get_call(info.id).end_reason == "callee hung up"
    await everything.aclose()  # type: ignore[attr-defined]


def test_routes_from_the_settings_check_numbers_and_voices() -> None:
    from sipagent.config import ConfigError, build_settings
    from sipagent.layers import route_voices
    from sipagent.model_paths import DEFAULT_TTS_VOICE, resolve_model_path
    from sipagent.product.setup import route_table

    default_voice = str(resolve_model_path(DEFAULT_TTS_VOICE))
    settings = build_settings(
        {"routes": [{"number": "(555) 000-3333", "voice": default_voice}, {"greeting": "Hi."}]}
    )
    table = route_table(settings)
    assert table.match("+15550003333").number == "+15550003333"
    assert table.match("+15550003333").voice is None  # the default voice: nothing more to load
    assert table.match("9999").greeting == "Hi."
    assert route_voices(settings) == ()
    with pytest.raises(ConfigError, match=r"routes\[0\]\.number"):
        route_table(build_settings({"routes": [{"number": "not a number"}]}))
    with pytest.raises(ConfigError, match=r"routes\[1\]\.number: \+15550003333 is routes\[0\]'s too"):
        route_table(build_settings({"routes": [{"number": "+15550003333"}, {"number": "5550003333"}]}))
    with pytest.raises(ConfigError, match=r"routes\[0\]\.voice: .*missing\.onnx does not exist"):
        route_table(build_settings({"routes": [{"voice": "models/missing.onnx"}]}))
    with pytest.raises(ConfigError, match=r"routes\[0\]\.language"):
        route_table(build_settings({"routes": [{"language": "de"}]}))


async def test_an_incoming_call_the_caller_gave_up_on_is_no_answer() -> None:
    service = _service(FakeTelephony())
    service.admit_incoming("c1", caller="+15550001111", dialled=None, source_host="h")
    service.ended("c1", status=None, reason="cancelled", by_remote=True)
    assert service.get_call("c1").outcome == "no-answer"
    service.admit_incoming("c2", caller="+15550001111", dialled=None, source_host="h")
    service.ended("c2", status=None, reason="rejected-488", by_remote=False)
    assert service.get_call("c2").outcome == "rejected" and service.get_call("c2").sip_status == 488


class FakeRunner:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def run_call(self, tools: object, call: object, *, call_id: str) -> object:
        from sipagent.product.webhooks import ToolOutcome

        self.calls.append((call_id, call.name))  # type: ignore[attr-defined]
        return ToolOutcome(ok=True, content='{"status": "shipped"}', status=200, duration_ms=12.0, error=None)

    async def aclose(self) -> None:
        pass


async def test_the_agents_tool_calls_and_keys_are_carried_out_for_its_route() -> None:
    from sipagent.product.tools import RouteTools
    from sipagent.voice.conversation import RunTool, SendDigits, TransferCall
    from sipagent.voice.llm import ToolCall

    telephony = FakeTelephony()
    service = _service(telephony)
    runner = FakeRunner()
    service.webhooks = runner  # type: ignore[assignment]
    service.planner.tools = {"default": RouteTools(transfer_targets={"sales": "+15550001234"})}
    service.admit_incoming("c1", caller="+15550001111", dialled=None, source_host="h")
    telephony.calls["c1"] = call = FakeCall()
    service.answered("c1")
    act = call.on_action
    assert callable(act)
    act(SendDigits("12#"))
    act(TransferCall("sales"))
    act(TransferCall("the moon"))
    act(RunTool(ToolCall("t1", "lookup_order", "{}")))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert call.digits == ["12#"]
    assert telephony.transfers == [("c1", "+15550001234")]  # only a configured target, by its name
    assert call.transfers_failed == ["'the moon' is not one of this route's transfer targets"]
    assert runner.calls == [("c1", "lookup_order")] and call.tool_results == [("t1", '{"status": "shipped"}')]
    service.transfer_failed("c1", 403, "Forbidden")
    assert call.transfers_failed[-1] == "403 Forbidden"
    service.transfer_succeeded("c1")
    assert telephony.hung_up == ["c1"]
