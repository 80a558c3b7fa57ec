"""The process: listeners, trunk attachment, inbound policy, the call table and each call's media.

``agent`` mode (the default) answers every call with the voice pipeline: the models are loaded
once at start-up, before the listeners open, and shared by every call. ``echo`` mode — every
answered call hears its own audio back through the media engine (jitter buffer, 20 ms pacer, DTMF,
SRTP) — is the classic trunk test and needs no models.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import os
import ssl
import threading
from collections.abc import Callable

from .call import Call, CallOptions
from .config import Settings
from .net.media_clock import MediaClock
from .net.media_sockets import PortRangeExhausted
from .net.sip_transport import SipNetwork, default_local_address
from .sip.address import uri_address
from .sip.context import EndpointConfig
from .sip.digest import Credentials
from .sip.endpoint import SipEndpoint
from .sip.events import (
    CallAnswered,
    CallConfirmed,
    CallEnded,
    CallFailed,
    EarlyMedia,
    Event,
    IncomingCall,
    MediaUpdated,
    RegistrationFailed,
    RegistrationSucceeded,
)
from .sip.registration import RegistrationConfig
from .sip.session import CallState
from .sip.uri import SipUri
from .voice.chunker import ChunkerConfig
from .voice.conversation import ConversationConfig
from .voice.echo_guard import EchoConfig
from .voice.inference import Inference, InferenceConfig
from .voice.turns import TurnConfig
from .voice.vad import Vad

log = logging.getLogger("sipagent")


class Server:
    """Owns the endpoint, its network adapter and every call."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.network: SipNetwork | None = None
        self.endpoint: SipEndpoint | None = None
        self.calls: dict[str, Call] = {}
        rtp = settings.rtp
        self.call_options = CallOptions(
            mode=settings.mode,
            bind=rtp.bind or settings.sip.bind,
            port_min=rtp.port_min,
            port_max=rtp.port_max,
            media_timeout=rtp.media_timeout,
            record_dir=settings.recording.directory if settings.recording.enabled else None,
        )
        #: One timer per millisecond slot for every call's media (made on the running loop).
        self.media_clock: MediaClock | None = None
        self.registered = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Agent mode: the models every call shares (loaded by :meth:`start`, before any call).
        self.inference: Inference | None = None
        self._allow = [
            ipaddress.ip_network(n, strict=False)
            for n in (settings.trunk.allow_from if settings.trunk else [])
        ]

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the models (agent mode), bind listeners and attach to the trunk."""
        if self.settings.mode == "agent" and self.inference is None:
            await self._load_models()
        sip = self.settings.sip
        client_ssl = ssl.create_default_context()
        if not self.settings.sip.tls_verify:
            client_ssl.check_hostname = False
            client_ssl.verify_mode = ssl.CERT_NONE
        network = SipNetwork(self._on_event, client_ssl=client_ssl)
        ports: dict[str, int] = {}
        if "udp" in sip.transports:
            ports["udp"] = await network.listen_udp(sip.bind, sip.port)
        if "tcp" in sip.transports:
            ports["tcp"] = await network.listen_stream("tcp", sip.bind, ports.get("udp", sip.port), None)
        if "tls" in sip.transports:
            assert sip.tls_cert is not None and sip.tls_key is not None
            server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_ssl.load_cert_chain(sip.tls_cert, sip.tls_key)
            ports["tls"] = await network.listen_stream("tls", sip.bind, sip.tls_port, server_ssl)
        if sip.public_port is not None:
            for name in ("udp", "tcp"):
                if name in ports:
                    ports[name] = sip.public_port
        advertised = sip.advertised_host(default_local_address())
        if not sip.public_address and sip.bind in ("0.0.0.0", "::"):
            log.warning(
                "no sip.public_address set: advertising %s; behind NAT set it to the public address",
                advertised,
            )
        config = EndpointConfig(
            public_host=advertised,
            ports={k: v for k, v in ports.items() if k in ("udp", "tcp", "tls")},  # type: ignore[misc]
            user_agent=sip.user_agent,
            session_expires=sip.session_expires or None,
            min_se=sip.min_se,
            srtp=sip.srtp,
        )
        self.endpoint = SipEndpoint(config, srtp_rng=os.urandom)
        network.attach(self.endpoint)
        self.network = network
        log.info(
            "sipagent %s mode listening on %s (%s), advertising %s",
            self.settings.mode,
            sip.bind,
            ", ".join(f"{k}/{v}" for k, v in network.bound.items()),
            advertised,
        )
        self._attach_trunk()
        raise_loop_priority(self.settings.rtp.loop_nice)
        # Everything alive now (modules, settings, models) lives as long as the process. Frozen, the
        # cyclic collector stops walking it: a full collection of the startup heap alone stalls the
        # event loop for ~13 ms on a 2-core box, which every call's packets would feel.
        gc.collect()
        gc.freeze()

    async def _load_models(self) -> None:
        # Imported here: echo mode needs no model runtimes at all.
        from .voice.inference import start_inference

        log.info("loading the voice models (stt %s, llm %s, tts %s)", self.settings.stt.model,
                 self.settings.llm.model, self.settings.tts.voice)  # fmt: skip
        # A model that cannot load raises ModelLoadError, naming it.
        self.inference = await start_inference(inference_config(self.settings))
        self.call_options.inference = self.inference
        self.call_options.conversation = conversation_config(self.settings)
        self.call_options.vad = vad_factory(self.settings)

    def _attach_trunk(self) -> None:
        trunk = self.settings.trunk
        if trunk is None:
            return
        assert self.endpoint is not None and self.network is not None
        if trunk.mode == "register":
            registrar = SipUri.parse(trunk.uri)
            aor = SipUri.parse(trunk.aor) if trunk.aor else SipUri(host=registrar.host, user=trunk.username)
            self.endpoint.register(
                RegistrationConfig(
                    registrar=registrar,
                    aor=aor,
                    credentials=self._credentials(),
                    expires=trunk.expires,
                    outbound_proxy=SipUri.parse(trunk.outbound_proxy) if trunk.outbound_proxy else None,
                ),
                self.network.now(),
            )
            self.network.pump()
        if trunk.keepalive_interval > 0:
            self._spawn(self._keepalive(trunk.keepalive_interval))

    def _credentials(self) -> Credentials | None:
        trunk = self.settings.trunk
        if trunk is None or not trunk.username:
            return None
        password = trunk.resolved_password()
        return Credentials(trunk.username, password or "")

    async def stop(self) -> None:
        """Hang up every call, remove registrations, close sockets."""
        if self.endpoint is not None and self.network is not None:
            now = self.network.now()
            for call_id in list(self.calls):
                with contextlib.suppress(Exception):
                    self.endpoint.hangup(call_id, now)
            self.endpoint.unregister_all(now)
            self.network.pump()
            await asyncio.sleep(0.2)  # let BYEs and the un-REGISTER leave
        for task in list(self._tasks):
            task.cancel()
        for call in list(self.calls.values()):
            call.close()
        if self.inference is not None:
            await self.inference.aclose()
            self.inference = None
        if self.network is not None:
            await self.network.close()

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _keepalive(self, interval: float) -> None:
        """OPTIONS over UDP, CRLFCRLF over TCP/TLS, toward the trunk (sip-trunks.md, RFC 5626)."""
        trunk = self.settings.trunk
        assert trunk is not None and self.endpoint is not None and self.network is not None
        target = SipUri.parse(trunk.outbound_proxy or trunk.uri)
        address = uri_address(target)
        while True:
            await asyncio.sleep(interval)
            if address.reliable:
                self.network.send_keepalive(address)
            else:
                self.endpoint.ping(target, self.network.now())
                self.network.pump()

    # -- events ----------------------------------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        assert self.endpoint is not None and self.network is not None
        if isinstance(event, IncomingCall):
            self._on_incoming(event)
        elif isinstance(event, CallConfirmed | CallAnswered | EarlyMedia | MediaUpdated):
            call = self.calls.get(event.call_id)
            if call is not None and event.media is not None:
                call.apply(event.media)
            if call is not None and isinstance(event, CallAnswered):
                call.outcome = event
                call.settled.set()
        elif isinstance(event, CallEnded | CallFailed):
            log.info("call %s ended: %s", event.call_id, event.reason)
            call = self.calls.pop(event.call_id, None)
            if call is not None:
                call.outcome = call.outcome or event
                call.close()
        elif isinstance(event, RegistrationSucceeded):
            log.info("registered %s for %d s", event.aor, event.expires)
            self.registered.set()
        elif isinstance(event, RegistrationFailed):
            log.warning("registration of %s failed: %d %s", event.aor, event.status, event.reason)

    def _hangup(self, call_id: str) -> None:
        assert self.endpoint is not None and self.network is not None
        with contextlib.suppress(Exception):
            self.endpoint.hangup(call_id, self.network.now())
        self.network.pump()

    def _new_call(self, call_id: str) -> Call:
        if self.media_clock is None:
            self.media_clock = MediaClock()
        return Call(
            call_id, self.call_options, hangup=lambda reason: self._hangup(call_id), clock=self.media_clock
        )

    def _on_incoming(self, event: IncomingCall) -> None:
        assert self.endpoint is not None and self.network is not None
        now = self.network.now()
        if self._allow and not any(ipaddress.ip_address(event.source.host) in net for net in self._allow):
            log.warning("refusing call %s from %s: not in trunk.allow_from", event.call_id, event.source.host)
            self.endpoint.reject(event.call_id, 403, now)
            return
        log.info("incoming call %s from %s to %s", event.call_id, event.asserted_caller, event.callee)
        self.endpoint.ring(event.call_id, now)
        self._spawn(self._answer(event.call_id))

    async def _answer(self, call_id: str) -> None:
        assert self.endpoint is not None and self.network is not None
        if self.settings.answer_delay > 0:
            await asyncio.sleep(self.settings.answer_delay)
            if self.endpoint.call_state(call_id) not in (CallState.INITIAL, CallState.EARLY):
                return  # the caller gave up (CANCEL) while it rang
        call = self._new_call(call_id)
        try:
            port = await call.open()
        except PortRangeExhausted:
            log.error("call %s: no RTP port free", call_id)
            self.endpoint.reject(call_id, 503, self.network.now())
            self.network.pump()
            return
        if self.endpoint.call_state(call_id) is None:
            call.close()  # cancelled while we bound the ports
            return
        self.calls[call_id] = call
        try:
            media = self.endpoint.answer(call_id, self.network.now(), rtp_port=port)
        except Exception as exc:  # OfferRejected (488 already sent) or the call vanished (CANCEL)
            log.info("call %s not answered: %s", call_id, exc)
            self.calls.pop(call_id, None)
            call.close()
            self.network.pump()
            return
        if media is not None:
            call.apply(media)
        self.network.pump()

    # -- outbound --------------------------------------------------------------------------------
    async def place_call(
        self, target: SipUri, *, duration: float, answer_timeout: float = 30.0, dtmf: str = ""
    ) -> Event | None:
        """Call ``target`` through the trunk (or directly), echo for ``duration`` s, hang up.

        ``dtmf`` digits are sent (RFC 4733) once answered. Returns the outcome event:
        CallAnswered when it was answered, CallFailed (or CallEnded) otherwise.
        """
        assert self.endpoint is not None and self.network is not None
        trunk = self.settings.trunk
        outbound_proxy = SipUri.parse(trunk.outbound_proxy) if trunk and trunk.outbound_proxy else None
        if outbound_proxy is None and trunk is not None and trunk.mode == "static":
            trunk_uri = SipUri.parse(trunk.uri)
            if target.host != trunk_uri.host:
                outbound_proxy = trunk_uri
        placeholder = self._new_call("")
        port = await placeholder.open()
        call_id = self.endpoint.invite(
            target,
            self.network.now(),
            rtp_port=port,
            credentials=self._credentials(),
            outbound_proxy=outbound_proxy,
        )
        placeholder.call_id = call_id
        placeholder.hangup = lambda reason: self._hangup(call_id)
        self.calls[call_id] = placeholder
        self.network.pump()
        call = placeholder
        try:
            await asyncio.wait_for(call.settled.wait(), answer_timeout)
        except TimeoutError:
            self._hangup(call_id)
        if isinstance(call.outcome, CallAnswered):
            for digit in dtmf:
                if call.session.dtmf_out is not None:
                    call.session.send_dtmf(digit)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(call.ended.wait(), duration)
            if not call.ended.is_set():
                self._hangup(call_id)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(call.ended.wait(), 5)
        # wait for the BYE transaction to finish so the far end sees a clean hang-up
        for _ in range(50):
            if call_id not in self.endpoint.calls:
                break
            await asyncio.sleep(0.1)
        return call.outcome


def raise_loop_priority(nice: int) -> bool:
    """Give the calling thread (the event loop's: it paces every call's RTP) the nice value ``nice``
    (decision 0017). Threads it starts afterwards inherit it; the inference process leaves it when
    it starts. Without the privilege (root or CAP_SYS_NICE) it stays as it is and a warning says so;
    returns whether the loop runs at ``nice``."""
    if nice >= 0:
        return nice == 0
    thread = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, thread) <= nice:
            return True
        os.setpriority(os.PRIO_PROCESS, thread, nice)
    except (OSError, AttributeError) as exc:
        log.warning(
            "the media loop stays at its nice value (rtp.loop_nice %d needs root or CAP_SYS_NICE: %s); "
            "packets may be late while the models or other programs keep the cores busy",
            nice,
            exc,
        )
        return False
    log.info("media loop at nice %d", nice)
    return True


def vad_factory(settings: Settings) -> Callable[[], Vad] | None:
    """How each call makes its voice detectors (None: the engine's default, WebRTC VAD). Silero's
    network is loaded once here and shared by every call's detectors."""
    agent = settings.agent
    if agent.vad != "silero":
        return None
    from .voice.silero_vad import SileroModel, SileroVad

    model = SileroModel()
    threshold = agent.silero_threshold
    return lambda: SileroVad(model, threshold=threshold)


def conversation_config(settings: Settings) -> ConversationConfig:
    """Each call's conversation behaviour, from ``[agent]`` and ``[llm]``."""
    agent = settings.agent
    return ConversationConfig(
        turn=TurnConfig(
            min_speech_ms=agent.min_speech_ms,
            min_barge_in_ms=agent.min_barge_in_ms,
            pause_ms=agent.pause_ms,
            end_of_turn_ms=agent.end_of_turn_ms,
        ),
        echo=EchoConfig(),
        vad_aggressiveness=agent.vad_aggressiveness,
        hold_after_ms=agent.hold_after_ms,
        greeting=agent.greeting,
        chunker=ChunkerConfig(
            first_min_words=agent.first_chunk_min_words, first_max_chars=agent.first_chunk_max_chars
        ),
        system_prompt=settings.llm.system_prompt,
        predict_turn_end=agent.turn_model != "none",
        end_of_turn_complete_ms=agent.end_of_turn_complete_ms,
        end_of_turn_incomplete_ms=agent.end_of_turn_incomplete_ms,
        turn_complete_threshold=agent.turn_complete_threshold,
    )


def inference_config(settings: Settings) -> InferenceConfig:
    """Where and how the models run, from ``[agent]``, ``[stt]``, ``[llm]`` and ``[tts]``."""
    agent = settings.agent
    return InferenceConfig(
        stt=settings.stt,
        llm=settings.llm,
        tts=settings.tts,
        where=agent.inference,
        workers=agent.workers,
        nice=agent.inference_nice,
        sched=agent.inference_sched,
        cpus=tuple(agent.inference_cpus) if agent.inference_cpus is not None else None,
        turn_model=agent.turn_model == "smart-turn",
        log_level=settings.log_level.upper(),
    )


__all__ = ["Call", "Server", "conversation_config", "inference_config", "vad_factory"]
