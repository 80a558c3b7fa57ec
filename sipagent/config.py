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
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from .sip.errors import RemoteProtocolError
from .sip.uri import SipUri


class ConfigError(Exception):
    """The configuration cannot be used; the message names each bad key and the problem."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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

    @model_validator(mode="after")
    def _range(self) -> RtpSettings:
        if self.port_max <= self.port_min:
            raise ValueError("port_max must be greater than port_min")
        return self


class TrunkSettings(_Section):
    """The carrier or PBX we attach to (optional: without it we only take calls sent to us)."""

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
    """Call recording: both legs as 8 kHz WAV files, crash-safe (every finished second is kept)."""

    enabled: bool = False
    directory: Path = Path("recordings")


class Settings(_Section):
    """The whole configuration."""

    mode: Literal["echo", "agent"] = "echo"
    #: Seconds to ring (180) before answering an inbound call.
    answer_delay: float = Field(0.0, ge=0, le=300)
    sip: SipSettings = Field(default_factory=SipSettings)  # type: ignore[arg-type]
    rtp: RtpSettings = Field(default_factory=RtpSettings)  # type: ignore[arg-type]
    trunk: TrunkSettings | None = None
    recording: RecordingSettings = Field(default_factory=RecordingSettings)
    log_level: Literal["debug", "info", "warning", "error"] = "info"


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
