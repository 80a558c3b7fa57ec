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

from .api.config import ApiConfig
from .api.server import ApiServer
from .call import Call, CallOptions
from .config import ConfigError, Settings
from .layers import (
    conversation_config,
    inference_config,
    raise_loop_priority,
    vad_factory,
    warn_if_text_leaves,
)
from .logs import call_scope
from .media_gauges import SAMPLE_INTERVAL, MediaSampler
from .net.media_clock import MediaClock
from .net.media_sockets import PortRangeExhausted
from .net.sip_resolver import SipResolver
from .net.sip_transport import SipNetwork, default_local_address
from .product.control import ControlError
from .product.lifecycle import LifecycleWebhooks
from .product.limits import CallAdmission
from .product.metrics import Metrics
from .product.observers import CallObserver, StoreObserver
from .product.recordings import RecordingPolicy
from .product.service import PhoneService
from .product.setup import caller_id, inbound_policy, limits_config, route_table, route_tools
from .product.store import CallStore, StoreError
from .product.trunks import (
    TrunkProfileError,
    allow_from_for,
    check_trunk_uri,
    profile_for,
)
from .product.webhooks import WebhookRunner, missing_environment
from .sip.address import uri_address
from .sip.context import EndpointConfig
from .sip.digest import Credentials
from .sip.endpoint import SipEndpoint
from .sip.events import (
    CallAnswered,
    CallConfirmed,
    CallEnded,
    CallFailed,
    CallProgress,
    EarlyMedia,
    Event,
    IncomingCall,
    MediaUpdated,
    RegistrationFailed,
    RegistrationSucceeded,
    TransferFailed,
    TransferSucceeded,
)
from .sip.registration import RegistrationConfig
from .sip.session import CallState
from .sip.uri import SipUri
from .telephony import SipTelephony
from .voice.inference import Inference

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
        )
        #: One timer per millisecond slot for every call's media (made on the running loop).
        self.media_clock: MediaClock | None = None
        self.registered = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Agent mode: the models every call shares (loaded by :meth:`start`, before any call).
        self.inference: Inference | None = None
        trunk = settings.trunk
        #: The carrier's needs (Request-URI host, signalling ranges, caller ID headers).
        self.profile = profile_for(trunk.profile if trunk is not None else "generic")
        if trunk is not None:
            try:
                check_trunk_uri(self.profile, SipUri.parse(trunk.uri))
            except TrunkProfileError as exc:
                raise ConfigError(f"invalid configuration:\n  trunk.uri: {exc}") from None
        # Static trunks accept INVITEs only from the carrier's signalling ranges (the profile's, or
        # the configured allow_from); register mode gets calls down its own registration flow.
        allow: tuple[str, ...] = ()
        if trunk is not None:
            allow = (
                allow_from_for(self.profile, trunk.allow_from)
                if trunk.mode == "static"
                else tuple(trunk.allow_from)
            )
        self._allow = [ipaddress.ip_network(n, strict=False) for n in allow]
        #: Who may call, which agent answers, how many at once; the calls' book (ConfigError here
        #: names a bad number in the configuration, before anything listens).
        routes = route_table(settings)
        outbound_route = routes.named(settings.outbound.route) if settings.outbound.route else routes.default
        if outbound_route is None:
            raise ConfigError(
                f"invalid configuration:\n  outbound.route: no route {settings.outbound.route!r}"
            )
        self.caller_id = caller_id(settings)
        #: The narrow door the product layer goes through (telephony.py).
        self.telephony = SipTelephony(self)
        tools = route_tools(settings)
        self.service = PhoneService(
            self.telephony,
            policy=inbound_policy(settings),
            routes=routes,
            admission=CallAdmission(limits_config(settings)),
            default_country=settings.inbound.default_country,
            outbound_disclosure=settings.outbound.disclosure,
            outbound_route=outbound_route,
            goodbye=settings.limits.goodbye,
            tools=tools,
            webhooks=WebhookRunner(),
            # [recording] enabled records every call, a route's record its own (decision 0031).
            recordings=RecordingPolicy(settings.recording.directory, every_call=settings.recording.enabled),
        )
        webhooks = {tool.name: tool for route in tools.values() for tool in route.webhooks.values()}
        for problem in missing_environment(webhooks.values()):
            log.warning("tools: %s", problem)
        self.api: ApiServer | None = None
        #: Prometheus metrics (GET /metrics on the API) and the lifecycle webhooks, both fed from
        #: the call book's events (product/observers.py).
        trunks = [settings.trunk.profile] if settings.trunk is not None else []
        self.metrics = Metrics(tool_names=[tool.name for tool in settings.tools], trunks=trunks)
        self.media_sampler = MediaSampler(self.metrics)
        self.lifecycle = lifecycle_webhooks(settings, self.metrics)
        CallObserver(self.service.book, self.metrics, self.lifecycle)
        #: The call store: opened by start() (a bad path stops start-up in one line).
        self.store: CallStore | None = None
        #: RFC 3263 lookups of trunk host names (NAPTR, SRV, A), cached by their TTL.
        self.resolver = SipResolver()

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
        self._open_store()
        await self._start_api()
        log.info("%s", self.service.policy.describe())
        warn_if_text_leaves(self.settings)
        log.info(
            "sipagent %s mode listening on %s (%s), advertising %s",
            self.settings.mode,
            sip.bind,
            ", ".join(f"{k}/{v}" for k, v in network.bound.items()),
            advertised,
        )
        await self._attach_trunk()
        self._spawn(self._sample_media())
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

    def _open_store(self) -> None:
        """[store]: open (or create, or upgrade) the database and purge calls past keep_days."""
        settings = self.settings.store
        if not settings.enabled or self.store is not None:
            return
        try:
            self.store = CallStore(settings.path, fsync=settings.fsync)
        except StoreError as exc:
            raise ConfigError(f"store.path: {exc}") from None
        self.service.store = self.store
        StoreObserver(self.service.book, self.store)
        if settings.keep_days:
            recordings = self.settings.recording.directory
            self._spawn(asyncio.to_thread(self.store.purge, settings.keep_days, recordings))
        log.info("call store: %s", settings.path)

    async def _start_api(self) -> None:
        """The control API, in this loop (decision 0020); its token comes from the environment."""
        api = self.settings.api
        if not api.enabled:
            return
        token = os.environ.get(api.token_env) or None
        if token is None and not api.loopback:
            raise ConfigError(
                f"api.bind is {api.bind}, beyond loopback: set the bearer token in the environment "
                f"variable {api.token_env} (api.token_env), or bind the API to 127.0.0.1"
            )
        self.api = ApiServer(
            self.service, ApiConfig(bind=api.bind, port=api.port, token=token), metrics=self.metrics.render
        )
        await self.api.start()
        log.info(
            "control API on http://%s:%d/v1 (%s)",
            api.bind,
            self.api.bound_port,
            "bearer token required" if token else f"no token: open to this machine (set {api.token_env})",
        )

    async def _attach_trunk(self) -> None:
        trunk = self.settings.trunk
        if trunk is None:
            return
        assert self.endpoint is not None and self.network is not None
        if trunk.mode == "register":
            registrar = SipUri.parse(trunk.uri)
            aor = SipUri.parse(trunk.aor) if trunk.aor else SipUri(host=registrar.host, user=trunk.username)
            outbound_proxy = SipUri.parse(trunk.outbound_proxy) if trunk.outbound_proxy else None
            try:
                destination = await self.telephony.locate(outbound_proxy or registrar)
            except ControlError as exc:  # no DNS answer: the transport tries the name itself
                log.warning("registrar: %s", exc)
                destination = None
            self.endpoint.register(
                RegistrationConfig(
                    registrar=registrar,
                    aor=aor,
                    credentials=self._credentials(),
                    expires=self.profile.register_expires or trunk.expires,
                    outbound_proxy=outbound_proxy,
                    destination=destination,
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
        if self.api is not None:
            await self.api.stop()
            self.api = None
        self.service.book.close()
        await self.service.webhooks.aclose()
        if self.lifecycle is not None:
            await self.lifecycle.aclose()
        if self.store is not None:
            await asyncio.to_thread(self.store.close)  # what is queued is committed
            self.store = None
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
        # What a call's event does, and the tasks and timers it starts (_answer, the service's
        # timers), is that call's work: its log lines carry the Call-ID (sipagent/logs.py).
        with call_scope(getattr(event, "call_id", None)):
            self._handle_event(event)

    def _handle_event(self, event: Event) -> None:
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
            # The agent speaks once the call is answered on both sides: our 200 OK acknowledged
            # (inbound), the callee's 200 OK (outbound); never on early media.
            # (CallConfirmed: our 2xx was acknowledged, which only a call we answered has.)
            if call is not None and isinstance(event, CallConfirmed | CallAnswered):
                self.service.answered(event.call_id)
        elif isinstance(event, CallProgress):
            if event.status in (180, 183):
                self.service.ringing(event.call_id, event.status)
        elif isinstance(event, CallEnded | CallFailed):
            log.info("call %s ended: %s", event.call_id, event.reason)
            call = self.calls.pop(event.call_id, None)
            if call is not None:
                call.outcome = call.outcome or event
                self.media_sampler.closed(event.call_id, call.live_session)
                call.close()
            status = event.status if isinstance(event, CallFailed) else None
            by_remote = isinstance(event, CallEnded) and event.by_remote
            self.service.ended(event.call_id, status=status, reason=event.reason, by_remote=by_remote)
        elif isinstance(event, TransferSucceeded):
            log.info("call %s: transfer succeeded (%d)", event.call_id, event.status)
            self.service.transfer_succeeded(event.call_id)
        elif isinstance(event, TransferFailed):
            log.info("call %s: transfer failed: %d %s", event.call_id, event.status, event.reason)
            self.service.transfer_failed(event.call_id, event.status, event.reason)
        elif isinstance(event, RegistrationSucceeded):
            log.info("registered %s for %d s", event.aor, event.expires)
            self.registered.set()
            self._registration(up=True)
        elif isinstance(event, RegistrationFailed):
            log.warning("registration of %s failed: %d %s", event.aor, event.status, event.reason)
            self._registration(up=False)

    def _registration(self, *, up: bool) -> None:
        if self.settings.trunk is not None:
            self.metrics.registration(self.settings.trunk.profile, up)

    async def _sample_media(self) -> None:
        """Line quality and the inference queue into the metrics, every few seconds (media_gauges)."""
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL)
            sessions = [(call_id, s) for call_id, call in self.calls.items() if (s := call.live_session)]
            self.media_sampler.sample(sessions, self.inference)

    def _hangup(self, call_id: str, reason: str | None = None) -> None:
        assert self.endpoint is not None and self.network is not None
        if reason is not None:
            self.service.closing(call_id, reason)
        with contextlib.suppress(Exception):
            self.endpoint.hangup(call_id, self.network.now())
        self.network.pump()

    def _new_call(self, call_id: str) -> Call:
        if self.media_clock is None:
            self.media_clock = MediaClock()
        return Call(call_id, self.call_options, hangup=lambda reason: self._hangup(call_id, reason),
                    clock=self.media_clock)  # fmt: skip

    def _on_incoming(self, event: IncomingCall) -> None:
        assert self.endpoint is not None and self.network is not None
        now = self.network.now()
        if self._allow and not any(ipaddress.ip_address(event.source.host) in net for net in self._allow):
            log.warning("refusing call %s from %s: not in trunk.allow_from", event.call_id, event.source.host)
            self.endpoint.reject(event.call_id, 403, now)
            return
        request_user = SipUri.parse(event.request.uri).user if event.request.uri else None
        admitted = self.service.admit_incoming(
            event.call_id,
            caller=str(event.asserted_caller.uri),
            dialled=request_user or event.callee.user,
            source_host=event.source.host,
        )
        if admitted.status is not None:
            self.endpoint.reject(event.call_id, admitted.status, now, headers=admitted.headers)
            return
        self.endpoint.ring(event.call_id, now)
        self.service.ringing(event.call_id, 180)
        self._spawn(self._answer(event.call_id))

    async def _answer(self, call_id: str) -> None:
        assert self.endpoint is not None and self.network is not None
        if self.settings.answer_delay > 0:
            await asyncio.sleep(self.settings.answer_delay)
            if self.endpoint.call_state(call_id) not in (CallState.INITIAL, CallState.EARLY):
                return  # the caller gave up (CANCEL) while it rang; CallEnded told the service
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


def lifecycle_webhooks(settings: Settings, metrics: Metrics) -> LifecycleWebhooks | None:
    """``[webhooks]``: the signing secret from its environment variable (ConfigError without it)."""
    hooks = settings.webhooks
    if hooks is None:
        return None
    secret = os.environ.get(hooks.secret_env)
    if not secret:
        raise ConfigError(
            f"invalid configuration:\n  webhooks.secret_env: environment variable {hooks.secret_env} "
            "is not set (the lifecycle webhooks are signed with it)"
        )
    return LifecycleWebhooks(hooks.url, secret, max_attempts=hooks.max_attempts, timeout=hooks.timeout,
                             on_result=metrics.webhook_delivery)  # fmt: skip


__all__ = ["Call", "Server"]
