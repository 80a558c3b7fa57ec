"""Configuration: one validated object, loaded from TOML and overridden by CLI flags.

A bad file fails at start-up with every problem named by its dotted key (``sip.port: must be
between 1 and 65535``), never later in a call. Secrets (trunk passwords) are ``SecretStr``: they
print as ``**********`` in logs, reprs and error messages; ``password_env`` reads one from the
environment instead of the file.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from .config_product import (
    ApiSettings,
    InboundSettings,
    LimitsSettings,
    OutboundSettings,
    RouteSettings,
    StoreSettings,
    ToolSettings,
    WebhookSettings,
    check_route_tools,
    check_routes,
    check_tools,
)
from .config_section import Section
from .errors import SipAgentError
from .model_paths import DEFAULT_LLM_MODEL, DEFAULT_STT_MODEL, DEFAULT_TTS_VOICE, resolve_model_path
from .sip.errors import RemoteProtocolError
from .sip.uri import SipUri

#: The agent's instructions unless ``[llm] system_prompt`` (or a route) says otherwise. Written for
#: the small default model as much as for big ones: short, concrete rules about speech.
DEFAULT_SYSTEM_PROMPT = (
    "You are a friendly assistant answering a phone call. Everything you write is spoken aloud to the "
    "caller. Reply in one or two short, plain sentences. Do not use lists, markdown, emoji, or symbols. "
    "If you do not know something, say so briefly. Ask one question at a time."
)


class ConfigError(SipAgentError):
    """The configuration cannot be used; the message names each bad key and the problem."""


_Section = Section


class SipSettings(_Section):
    """Signalling listeners and what we advertise."""

    bind: str = "0.0.0.0"
    port: int = Field(5060, ge=1, le=65535)
    transports: list[Literal["udp", "tcp", "tls"]] = Field(default_factory=lambda: ["udp", "tcp"])  # type: ignore[arg-type]
    tls_port: int = Field(5061, ge=1, le=65535)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Verify the certificates of TLS peers we connect to (turn off only for lab peers).
    tls_verify: bool = True
    #: SRTP with SDES keys: "off", "optional" (accept SRTP offers, offer plain RTP) or "required".
    #: SDES keys travel inside the SDP, so anything but "off" needs signalling over TLS.
    srtp: Literal["off", "optional", "required"] = "off"
    #: The address the world reaches us on (NAT); goes in Via, Contact and SDP. Defaults to bind.
    public_address: str | None = None
    #: The public port when a NAT maps it to another one (default: the listener's port).
    public_port: int | None = Field(None, ge=1, le=65535)
    user_agent: str = "sipagent/0.1"
    #: RFC 4028 interval asked for on outbound calls (0 disables).
    session_expires: int = Field(1800, ge=0)
    min_se: int = Field(90, ge=90)

    @field_validator("bind")
    @classmethod
    def _ip(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address") from None
        return value

    @model_validator(mode="after")
    def _tls_files(self) -> SipSettings:
        if "tls" in self.transports and (self.tls_cert is None or self.tls_key is None):
            raise ValueError("transport 'tls' needs tls_cert and tls_key")
        if self.srtp != "off" and "tls" not in self.transports:
            raise ValueError("srtp needs transport 'tls': SDES keys would cross the network in clear")
        return self

    def advertised_host(self, wildcard_fallback: str) -> str:
        """What goes in Via/Contact/SDP: the public address, else the bind address, else (bound to
        every interface) ``wildcard_fallback``, the primary interface's address."""
        if self.public_address:
            return self.public_address
        return wildcard_fallback if self.bind in ("0.0.0.0", "::") else self.bind


class RtpSettings(_Section):
    """Media ports: a fixed range so a firewall can open it."""

    bind: str | None = None
    port_min: int = Field(10000, ge=1024, le=65534)
    port_max: int = Field(20000, ge=1025, le=65535)
    #: End a call when no RTP arrives for this long (seconds; 0 disables).
    media_timeout: float = Field(30.0, ge=0)
    #: Nice value of the event loop's thread, which paces every call's packets (Linux; below 0
    #: needs root or CAP_SYS_NICE, else it stays as it is and start-up says so). Raised, its 20 ms
    #: ticks win a core that the models or other programs keep busy (decision 0017); 0 leaves it.
    loop_nice: int = Field(-10, ge=-20, le=0)

    @model_validator(mode="after")
    def _range(self) -> RtpSettings:
        if self.port_max <= self.port_min:
            raise ValueError("port_max must be greater than port_min")
        return self


class TrunkSettings(_Section):
    """The carrier or PBX we attach to (optional: without it we only take calls sent to us)."""

    #: What the carrier needs filled in (sipagent/product/trunks.py): ``twilio`` (static, Request-URI
    #: on the termination host, its signalling ranges for allow_from), ``telnyx`` (registration to
    #: sip.telnyx.com, SRV), ``generic`` (nothing assumed).
    profile: Literal["twilio", "telnyx", "generic"] = "generic"
    #: Our number (E.164) as outbound calls present it: the From user part (and P-Asserted-Identity
    #: where the profile uses it). Twilio refuses a number it does not own or has not verified.
    caller_id: str | None = None
    #: Display name with caller_id (optional).
    caller_name: str | None = None
    mode: Literal["register", "static"] = "static"
    #: Registrar (register mode) or where outbound INVITEs go (static mode), as a SIP URI.
    uri: str
    username: str | None = None
    password: SecretStr | None = None
    #: Name of an environment variable holding the password (keeps it out of the file).
    password_env: str | None = None
    #: Address-of-record to register (default ``sip:username@host of uri``).
    aor: str | None = None
    outbound_proxy: str | None = None
    expires: int = Field(3600, ge=60)
    #: Seconds between OPTIONS (UDP) or CRLF (TCP/TLS) keepalives toward the trunk; 0 disables.
    keepalive_interval: float = Field(30.0, ge=0)
    #: Static mode: only accept INVITEs from these networks (CIDR). Empty means accept any.
    allow_from: list[str] = Field(default_factory=list)

    @field_validator("uri", "outbound_proxy", "aor")
    @classmethod
    def _sip_uri(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            SipUri.parse(value)
        except RemoteProtocolError as exc:
            raise ValueError(f"not a SIP URI ({exc})") from None
        return value

    @field_validator("allow_from")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not a network in CIDR form") from None
        return value

    @model_validator(mode="after")
    def _register_needs_user(self) -> TrunkSettings:
        if self.mode == "register" and not self.username:
            raise ValueError("register mode needs username")
        return self

    def resolved_password(self) -> str | None:
        """The password from the file or from ``password_env``."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(f"trunk.password_env: environment variable {self.password_env} is not set")
            return value
        return self.password.get_secret_value() if self.password else None


class RecordingSettings(_Section):
    """Call recording: one 8 kHz stereo WAV per call (caller left, agent right), crash-safe (every
    finished second is kept); a route's ``record`` overrides ``enabled`` for its calls (decision 0031)."""

    #: Record every call (a route with ``record = false`` excepted).
    enabled: bool = False
    #: Where the recordings go (made 0700; each file 0600).
    directory: Path = Path("recordings")


def _resolve_model(value: Path) -> Path:
    # Relative model paths are taken from the source tree, not the working directory, so the defaults
    # are found whatever directory the server starts in (see sipagent/voice/models.py).
    return resolve_model_path(value)


class SttSettings(_Section):
    """Speech to text: faster-whisper on a local CTranslate2 model folder."""

    #: A faster-whisper (CTranslate2) model folder; relative paths resolve against the source tree.
    model: Path = Field(DEFAULT_STT_MODEL, validate_default=True)
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    #: CTranslate2 compute type: int8 on CPU; float16 (or int8_float16) on a GPU.
    compute_type: Literal[
        "default",
        "auto",
        "int8",
        "int8_float32",
        "int8_float16",
        "int8_bfloat16",
        "int16",
        "float16",
        "bfloat16",
        "float32",
    ] = "int8"
    #: CPU threads per transcription (0: CTranslate2 chooses). tiny.en's matrices are too
    #: small to share out: one thread transcribed the fixtures in a median 105 ms against 130 ms
    #: with CTranslate2's choice and 127 ms with two, and leaves the other core to the LLM and TTS.
    #: A larger model (small.en and up) on a many-core box gains from more.
    cpu_threads: int = Field(1, ge=0)
    #: Transcriptions that may run in parallel (each worker holds its own working memory).
    num_workers: int = Field(1, ge=1)
    #: 1 is greedy decoding: the fastest; larger beams buy little on short utterances.
    beam_size: int = Field(1, ge=1, le=10)
    language: str | None = "en"
    #: Domain words (names, products) given to Whisper as its initial prompt.
    prompt: str | None = None
    #: Seconds of audio the encoder sees per utterance: the utterance padded to this, or to the next
    #: multiple of it up to 30. Whisper was trained on 30 s windows; its encoder's cost grows faster
    #: than linearly with the window (tiny.en on 2 cores, the fixtures' utterances: 30 s 378 ms,
    #: 10 s 120 ms, 5 s 79 ms) for a word error rate within the noise on telephone speech (0.123,
    #: 0.137, 0.137; decision 0009). 30 is stock faster-whisper.
    window_s: int = Field(5, ge=5, le=30)

    _model_path = field_validator("model")(_resolve_model)


class OpenAISettings(_Section):
    """An OpenAI-compatible chat completions server (vLLM, llama.cpp server, Ollama)."""

    #: The API root, e.g. ``http://gpu-box:8000/v1`` (``/chat/completions`` is appended).
    base_url: str
    model: str
    #: Name of an environment variable holding the API key (never read from the file, never logged).
    api_key_env: str | None = None
    #: Seconds to wait for the connection and for each streamed chunk.
    timeout: float = Field(30.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value.rstrip("/")


class LlmSettings(_Section):
    """The agent's language model: llama.cpp in-process, or an OpenAI-compatible server."""

    backend: Literal["llama", "openai"] = "llama"
    #: A GGUF file (llama backend); relative paths resolve against the source tree.
    model: Path = Field(DEFAULT_LLM_MODEL, validate_default=True)
    #: Chat format when the GGUF has no ``tokenizer.chat_template`` (or to override it): a llama-cpp
    #: format name ("chatml", "llama-3", ...) or a path to a Jinja2 template file (``.jinja``).
    chat_format: str | None = None
    n_ctx: int = Field(2048, ge=256)
    #: CPU threads for llama.cpp (0: half the cores). Its threads spin while they wait for each other,
    #: so more threads than the cores Whisper and Piper leave free makes decoding far slower.
    n_threads: int = Field(0, ge=0)
    #: Threads for prompt evaluation (0: every core). It runs between STT and the first token, when
    #: nothing else of the turn runs, so it may take the whole box (decision 0009).
    n_threads_batch: int = Field(0, ge=0)
    #: Layers offloaded to the GPU (needs a CUDA build of llama-cpp-python; -1: all).
    n_gpu_layers: int = Field(0, ge=-1)
    #: Longest reply in tokens (a phone reply is a sentence or two).
    max_tokens: int = Field(96, ge=1)
    temperature: float = Field(0.3, ge=0, le=2)
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    openai: OpenAISettings | None = None

    _model_path = field_validator("model")(_resolve_model)

    @field_validator("chat_format")
    @classmethod
    def _template_path(cls, value: str | None) -> str | None:
        # A template file resolves like the model paths; a format name stays as it is.
        if value is not None and value.endswith(".jinja"):
            return str(resolve_model_path(Path(value)))
        return value

    @model_validator(mode="after")
    def _backend_settings(self) -> LlmSettings:
        if self.backend == "openai" and self.openai is None:
            raise ValueError("backend 'openai' needs an [llm.openai] section (base_url, model)")
        if not self.system_prompt.strip():
            raise ValueError("system_prompt must not be empty")
        return self


class TtsSettings(_Section):
    """Text to speech: a Piper voice (``.onnx`` with its ``.onnx.json`` beside it)."""

    #: The voice model; relative paths resolve against the source tree.
    voice: Path = Field(DEFAULT_TTS_VOICE, validate_default=True)
    #: Speaking rate: < 1 faster, > 1 slower (default: the voice's own).
    length_scale: float | None = Field(None, gt=0, le=4)
    #: Speaker id for multi-speaker voices.
    speaker: int | None = Field(None, ge=0)
    #: Gain after Piper's per-sentence peak normalisation (0.5: peaks at -6 dBFS, headroom for G.711).
    volume: float = Field(0.5, gt=0, le=1)
    #: Threads per synthesis (0: onnxruntime chooses). One is as fast as two for a sentence on 2 cores.
    threads: int = Field(1, ge=0)
    #: Run the voice on a GPU (needs onnxruntime-gpu instead of onnxruntime).
    use_cuda: bool = False

    _voice_path = field_validator("voice")(_resolve_model)


class AgentSettings(_Section):
    """How the phone agent takes turns (``mode = "agent"``); the models are ``[stt]``, ``[llm]``,
    ``[tts]``."""

    #: Caller silence that ends a turn (ms). The reply is already being prepared from the pause on,
    #: so a longer wait costs the caller only this much more; above ~700 ms a phone line feels dead.
    end_of_turn_ms: float = Field(300.0, ge=100, le=3000)
    #: Silence after which speculative STT and LLM start (ms); must be shorter than end_of_turn_ms.
    pause_ms: float = Field(60.0, ge=20, le=2000)
    #: Caller voice shorter than this does not start a turn (clicks, line hits), ms.
    min_speech_ms: float = Field(120.0, ge=20, le=2000)
    #: Caller voice over the agent must last this long to interrupt it (ms): backchannels ("mm",
    #: "ok") and coughs below it do not. The line goes quiet earlier (hold_after_ms) and resumes.
    min_barge_in_ms: float = Field(240.0, ge=40, le=3000)
    #: Caller voice over the agent for this long silences the line at once, keeping the place (ms).
    hold_after_ms: float = Field(60.0, ge=20, le=1000)
    #: The voice detector behind turn-taking: ``webrtc`` (WebRTC VAD behind an adaptive energy gate,
    #: a few µs a frame) or ``silero`` (Silero VAD v5, a recurrent network on onnxruntime; decision
    #: 0015 has how each finds the end of speech on clean and noisy phone audio).
    vad: Literal["webrtc", "silero"] = "silero"
    #: WebRTC VAD aggressiveness, 0 (lenient) to 3 (strict).
    vad_aggressiveness: int = Field(2, ge=0, le=3)
    #: Silero's speech probability from which a frame is voiced (no hysteresis: the turn detector
    #: already bridges short dips; decision 0015).
    silero_threshold: float = Field(0.7, gt=0, lt=1)
    #: An end-of-turn model asked at each pause whether the words so far make a finished turn:
    #: ``smart-turn`` (Smart Turn v3, in the inference process, ~36 ms a pause) or ``none``.
    turn_model: Literal["none", "smart-turn"] = "none"
    #: With a turn model: the end-of-turn wait after a finished-sounding turn (none: end_of_turn_ms)
    #: and after an unfinished-sounding one, whose speaker is probably going on (ms).
    end_of_turn_complete_ms: float | None = Field(None, ge=60, le=3000)
    end_of_turn_incomplete_ms: float = Field(800.0, ge=100, le=5000)
    #: The turn model's probability from which a turn counts as finished.
    turn_complete_threshold: float = Field(0.5, gt=0, lt=1)
    #: The first TTS chunk of a reply may end at a clause after this many words, and ends at a word
    #: by ``first_chunk_max_chars`` characters: shorter starts speaking sooner (each word waited for
    #: is ~30 ms of LLM time, and Piper's time grows with the chunk), longer sounds less clipped.
    first_chunk_min_words: int = Field(2, ge=1, le=20)
    first_chunk_max_chars: int = Field(16, ge=10, le=200)
    #: Said when a call is answered (none: wait for the caller).
    greeting: str | None = None
    #: Where the models run: ``process``, a process of their own, so their Python parts never hold
    #: the media loop's GIL (decision 0011); ``threads``, worker threads of the server's process.
    inference: Literal["process", "threads"] = "process"
    #: Scheduling of the inference process (Linux): ``normal``, the normal class at
    #: ``inference_nice``: the media loop wins a contended core and the models still get a bounded
    #: share of it (decision 0017); ``idle`` (SCHED_IDLE): the models get only CPU time nothing else
    #: wants, which starves them (and silences the agent) while other programs keep the cores busy.
    inference_sched: Literal["idle", "normal"] = "normal"
    #: CPUs the inference process may run on (Linux; none: all). Keeping the models off the cores
    #: the media loop runs on (pin the server with ``taskset``) keeps them from delaying packets.
    inference_cpus: list[int] | None = None
    #: Worker threads for inference shared by every call (STT, LLM and TTS jobs).
    workers: int = Field(4, ge=1, le=64)
    #: Nice value the models run at once loaded (Linux; they load at the server's own priority, so
    #: start-up is quick however busy the box is): the media loop's 20 ms ticks win a contended core.
    inference_nice: int = Field(5, ge=0, le=19)

    @model_validator(mode="after")
    def _pause_before_end(self) -> AgentSettings:
        if self.pause_ms >= self.end_of_turn_ms:
            raise ValueError(
                f"pause_ms ({self.pause_ms:g}) must be shorter than end_of_turn_ms ({self.end_of_turn_ms:g})"
            )
        complete = self.end_of_turn_complete_ms
        if complete is not None and complete <= self.pause_ms:
            raise ValueError(
                f"end_of_turn_complete_ms ({complete:g}) must be longer than pause_ms ({self.pause_ms:g})"
            )
        if self.end_of_turn_incomplete_ms < self.end_of_turn_ms:
            raise ValueError(
                f"end_of_turn_incomplete_ms ({self.end_of_turn_incomplete_ms:g}) must not be shorter than "
                f"end_of_turn_ms ({self.end_of_turn_ms:g})"
            )
        if self.hold_after_ms > self.min_barge_in_ms:
            raise ValueError(
                f"hold_after_ms ({self.hold_after_ms:g}) must not exceed min_barge_in_ms "
                f"({self.min_barge_in_ms:g})"
            )
        if self.inference_cpus is not None:
            if not self.inference_cpus:
                raise ValueError("inference_cpus must name at least one CPU (leave it out for all)")
            if hasattr(os, "sched_getaffinity"):
                usable = os.sched_getaffinity(0)
                missing = sorted(set(self.inference_cpus) - usable)
                if missing:
                    raise ValueError(
                        f"inference_cpus: CPU {', '.join(map(str, missing))} is not available here "
                        f"(this process may use {', '.join(map(str, sorted(usable)))})"
                    )
            if self.inference == "threads":
                raise ValueError(
                    'inference_cpus needs inference = "process" (threads share the server\'s CPUs)'
                )
        if self.greeting is not None and not self.greeting.strip():
            raise ValueError("greeting must not be empty (leave it out for none)")
        return self


class Settings(_Section):
    """The whole configuration."""

    #: ``agent``: the voice pipeline answers; ``echo``: every caller hears themselves (trunk test).
    mode: Literal["echo", "agent"] = "agent"
    #: Seconds to ring (180) before answering an inbound call.
    answer_delay: float = Field(0.0, ge=0, le=300)
    sip: SipSettings = Field(default_factory=SipSettings)  # type: ignore[arg-type]
    rtp: RtpSettings = Field(default_factory=RtpSettings)  # type: ignore[arg-type]
    trunk: TrunkSettings | None = None
    recording: RecordingSettings = Field(default_factory=RecordingSettings)
    stt: SttSettings = Field(default_factory=SttSettings)  # type: ignore[arg-type]
    llm: LlmSettings = Field(default_factory=LlmSettings)  # type: ignore[arg-type]
    tts: TtsSettings = Field(default_factory=TtsSettings)  # type: ignore[arg-type]
    agent: AgentSettings = Field(default_factory=AgentSettings)  # type: ignore[arg-type]
    inbound: InboundSettings = Field(default_factory=InboundSettings)
    #: Webhooks the agent may call (``[[tools]]``); before ``routes``, whose tool lists name them.
    tools: list[ToolSettings] = Field(default_factory=list)
    routes: list[RouteSettings] = Field(default_factory=list)
    outbound: OutboundSettings = Field(default_factory=OutboundSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)  # type: ignore[arg-type]
    api: ApiSettings = Field(default_factory=ApiSettings)  # type: ignore[arg-type]
    webhooks: WebhookSettings | None = None
    store: StoreSettings = Field(default_factory=StoreSettings)  # type: ignore[arg-type]
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    #: ``text`` (a line for people) or ``json`` (JSON Lines with each line's call; decision 0030).
    log_format: Literal["text", "json"] = "text"

    _routes = field_validator("routes")(check_routes)
    _tools = field_validator("tools")(check_tools)
    _route_tools = field_validator("routes")(check_route_tools)


def _format_errors(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"  {key}: {message}")
    return "invalid configuration:\n" + "\n".join(lines)


def build_settings(data: dict[str, Any]) -> Settings:
    """Validate a raw mapping (from TOML plus overrides)."""
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc)) from None


def load_settings(path: Path | None, overrides: dict[str, Any] | None = None) -> Settings:
    """Read ``path`` (TOML) if given, apply dotted-key ``overrides`` and validate."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return build_settings(data)
