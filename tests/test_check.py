"""``sipagent check``: green on a configuration ``serve`` would run, and red, with the fix and exit
status 1, on each thing that would stop it or its calls: a busy port, a corrupted or unloadable
model, a private address advertised to a trunk, an expired or expiring certificate (or a key that is
not its own), an API beyond loopback without its token, a store that cannot be written, a trunk
host that does not resolve, a bad configuration key, and (``--register``, against Kamailio) a
registration the registrar refuses. Phone numbers and secrets never reach the output."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from peers.kamailio import Kamailio
from peers.ports import HOST, free_port_block, free_sip_port, free_tcp_port
from peers.skips import require
from sipagent.check.network import rtp_sample
from sipagent.check.trunk import locate_trunk
from sipagent.cli import main
from sipagent.config import load_settings
from sipagent.voice.models import DEFAULT_LLM_MODEL, DEFAULT_STT_MODEL, DEFAULT_TTS_VOICE, MODELS_DIR
from tests.dns_server import DnsServer
from tests.model_gate import require_models

#: Environment variables a check reads: unset for every run unless a test sets them.
_ENV_UNSET: dict[str, str | None] = {"SIPAGENT_API_TOKEN": None, "SIPAGENT_WEBHOOK_SECRET": None}


class Run:
    """One ``sipagent check --json`` run: the exit status and each check by name."""

    def __init__(self, exit_code: int, output: str) -> None:
        self.exit_code = exit_code
        self.output = output
        document = json.loads(output)
        self.ok: bool = document["ok"]
        self.checks: dict[str, dict[str, Any]] = {c["name"]: c for c in document["checks"]}

    def status(self, name: str) -> str:
        return str(self.checks[name]["status"])

    def failed(self) -> list[str]:
        return [name for name, check in self.checks.items() if check["status"] == "fail"]


def _ports(tmp_path: Path) -> list[str]:
    """Options that keep every socket the check probes on loopback ports of this test's own."""
    rtp = free_port_block(48)  # 24 pairs: more than limits.max_calls (20)
    return [
        "--sip-bind",
        HOST,
        "--sip-port",
        str(free_sip_port()),
        "--api-port",
        str(free_tcp_port()),
        "--rtp-port-min",
        str(rtp),
        "--rtp-port-max",
        str(rtp + 48),
        "--store-path",
        str(tmp_path / "data" / "calls.db"),
    ]


def _check(
    tmp_path: Path, *args: str, config: str | None = None, env: dict[str, str | None] | None = None
) -> Run:
    argv = ["check", "--json", *args]
    if config is not None:
        path = tmp_path / "sipagent.toml"
        path.write_text(config)
        argv += ["--config", str(path)]
    result = CliRunner().invoke(main, argv, env=_ENV_UNSET | (env or {}), catch_exceptions=False)
    run = Run(result.exit_code, result.stdout)
    assert run.exit_code == (0 if run.ok else 1), result.stdout
    return run


def _echo(tmp_path: Path, *args: str, **kwargs: Any) -> Run:
    """A check of an echo-mode server (no models: the quick runs)."""
    return _check(tmp_path, "--mode", "echo", *_ports(tmp_path), *args, **kwargs)


def _assert_red(run: Run, name: str, *, detail: str, fix: str) -> None:
    assert run.exit_code == 1 and not run.ok
    check = run.checks[name]
    assert check["status"] == "fail" and check["ok"] is False, check
    assert detail in check["detail"], check
    assert check["fix"] and fix in check["fix"], check


# -- all green -----------------------------------------------------------------------------------
def test_the_default_configuration_with_its_models_is_green(tmp_path: Path) -> None:
    require_models(
        MODELS_DIR / DEFAULT_STT_MODEL.name,
        MODELS_DIR / DEFAULT_LLM_MODEL.name,
        MODELS_DIR / "piper" / DEFAULT_TTS_VOICE.name,
        MODELS_DIR / "silero_vad.onnx",
    )
    run = _check(tmp_path, *_ports(tmp_path))
    assert run.exit_code == 0 and run.ok, run.output
    for name in (
        "config",
        "model.stt",
        "model.llm",
        "model.tts",
        "model.vad",
        "ports.sip",
        "ports.rtp",
        "ports.api",
        "api.token",
        "store",
    ):
        assert run.status(name) == "ok", run.checks[name]
    for name in ("model.stt", "model.llm", "model.tts", "model.vad"):
        assert "as pinned, loads" in run.checks[name]["detail"]
    # What does not apply to the defaults is said, not failed.
    for name in ("ports.tls", "tls", "trunk.dns", "public_address", "trunk.credentials", "webhooks", "tools"):
        assert run.status(name) == "skip", run.checks[name]
    # The store would be created on start; the check itself created nothing.
    assert not (tmp_path / "data").exists()


def test_text_output_has_a_line_per_check_and_a_fix_under_each_red_one(tmp_path: Path) -> None:
    port = free_sip_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind((HOST, port))
        args = [*_ports(tmp_path), "--sip-port", str(port), "--mode", "echo"]
        result = CliRunner().invoke(main, ["check", *args], env=_ENV_UNSET, catch_exceptions=False)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    red = next(i for i, line in enumerate(lines) if "ports.sip" in line)
    assert lines[red].lstrip().startswith("✗") and f"udp {HOST}:{port} is in use" in lines[red]
    assert lines[red + 1].lstrip().startswith("fix:") and "--sip-port" in lines[red + 1]
    assert any(line.lstrip().startswith("✓ config") for line in lines)
    assert "1 check failed" in lines[-1]


# -- ports ---------------------------------------------------------------------------------------
def test_a_busy_sip_port_is_red(tmp_path: Path) -> None:
    port = free_sip_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind((HOST, port))
        run = _echo(tmp_path, "--sip-port", str(port))
    _assert_red(run, "ports.sip", detail=f"udp {HOST}:{port} is in use", fix="--sip-port")
    assert run.failed() == ["ports.sip"]


def test_a_busy_api_port_and_a_busy_rtp_range_are_red(tmp_path: Path) -> None:
    api = free_tcp_port()
    rtp = free_port_block(4)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((HOST, api))
        listener.listen(1)
        sockets = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(4)]
        try:
            for i, sock in enumerate(sockets):
                sock.bind((HOST, rtp + i))
            run = _echo(
                tmp_path, "--api-port", str(api), "--rtp-port-min", str(rtp), "--rtp-port-max", str(rtp + 4)
            )
        finally:
            for sock in sockets:
                sock.close()
    _assert_red(run, "ports.api", detail=f"tcp {HOST}:{api} is in use", fix="--api-port")
    _assert_red(run, "ports.rtp", detail="every sampled pair is in use", fix="--rtp-port-min")


def test_the_rtp_sample_spreads_over_the_range() -> None:
    assert rtp_sample(10000, 20000) == sorted(set(rtp_sample(10000, 20000)))
    sample = rtp_sample(10000, 20000)
    assert len(sample) == 16 and sample[0] == 10000 and sample[-1] == 19998
    assert all(port % 2 == 0 for port in sample)
    assert rtp_sample(10001, 10008) == [10002, 10004, 10006]


# -- models --------------------------------------------------------------------------------------
def _whisper_copy(tmp_path: Path) -> Path:
    """The default Whisper folder, elsewhere: tokenizer.json copied, the big files linked."""
    source = MODELS_DIR / DEFAULT_STT_MODEL.name
    require_models(source / "model.bin", source / "tokenizer.json")
    copy = tmp_path / "models" / source.name
    copy.mkdir(parents=True)
    for item in source.iterdir():
        if item.name == "tokenizer.json":
            shutil.copyfile(item, copy / item.name)
        else:
            (copy / item.name).symlink_to(item)
    return copy


def test_a_corrupted_model_file_is_red(tmp_path: Path) -> None:
    copy = _whisper_copy(tmp_path)
    config = f'[stt]\nmodel = "{copy}"\n'
    intact = _check(tmp_path, "--quick", *_ports(tmp_path), config=config)
    assert intact.status("model.stt") == "ok", intact.checks["model.stt"]
    assert "sha256 of 4 files as pinned" in intact.checks["model.stt"]["detail"]
    # Flip a few bytes in the middle: same size, other content.
    tokenizer = copy / "tokenizer.json"
    data = bytearray(tokenizer.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4] = bytes(b ^ 0xFF for b in data[middle : middle + 4])
    tokenizer.write_bytes(bytes(data))
    run = _check(tmp_path, *_ports(tmp_path), config=config)
    _assert_red(run, "model.stt", detail="tokenizer.json: sha256", fix="fetch_models.py --force")
    assert "is not the pinned" in run.checks["model.stt"]["detail"]
    assert run.failed() == ["model.stt"]


def test_a_missing_model_and_one_that_does_not_load_are_red(tmp_path: Path) -> None:
    require_models(MODELS_DIR / "piper" / DEFAULT_TTS_VOICE.name)
    junk = tmp_path / "mine.gguf"
    junk.write_bytes(b"GGUF" + bytes(range(256)) * 20)
    config = f'[stt]\nmodel = "{tmp_path / "nowhere"}"\n[llm]\nmodel = "{junk}"\n'
    run = _check(tmp_path, *_ports(tmp_path), config=config)
    _assert_red(run, "model.stt", detail="not found", fix="stt.model")
    _assert_red(run, "model.llm", detail="does not load", fix="llm.model")
    assert "no pinned sha256" not in run.checks["model.llm"]["detail"]


def test_quick_skips_loading(tmp_path: Path) -> None:
    junk = tmp_path / "mine.gguf"
    junk.write_bytes(b"not a model")
    run = _check(tmp_path, "--quick", *_ports(tmp_path), config=f'[llm]\nmodel = "{junk}"\n')
    assert run.status("model.llm") == "ok"
    assert "no pinned sha256 (not loaded: --quick)" in run.checks["model.llm"]["detail"]


# -- the address a trunk reaches us on -----------------------------------------------------------
#: A global address of Twilio's signalling range: never contacted (numeric: no DNS, no REGISTER).
_PUBLIC_TRUNK = '[trunk]\nuri = "sip:54.172.60.0"\n'


@pytest.mark.parametrize(
    ("public", "trunk", "status"),
    [
        ("192.168.1.10", _PUBLIC_TRUNK, "fail"),
        ("169.254.10.1", _PUBLIC_TRUNK, "fail"),
        ("100.64.0.7", _PUBLIC_TRUNK, "fail"),
        ("54.172.60.99", _PUBLIC_TRUNK, "ok"),
        # A PBX on the same LAN reaches a private address: that is the right one to advertise.
        ("192.168.1.10", '[trunk]\nuri = "sip:192.168.1.1"\n', "ok"),
    ],
)
def test_a_private_public_address_with_a_trunk_is_red(
    tmp_path: Path, public: str, trunk: str, status: str
) -> None:
    run = _echo(tmp_path, "--public-address", public, config=trunk)
    assert run.status("public_address") == status, run.checks["public_address"]
    if status == "fail":
        _assert_red(run, "public_address", detail=public, fix="--public-address")
        assert run.failed() == ["public_address"]


# -- TLS -----------------------------------------------------------------------------------------
def _certificate(directory: Path, *, days_left: float, other_key: bool = False) -> tuple[Path, Path]:
    """A self-signed certificate for localhost ending ``days_left`` days from now, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sip.example.test")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=30))
        .not_valid_after(now + datetime.timedelta(days=days_left))
        .sign(key, hashes.SHA256())
    )
    if other_key:
        key = ec.generate_private_key(ec.SECP256R1())
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.mark.parametrize(
    ("days_left", "other_key", "status", "detail"),
    [
        (90, False, "ok", "key matches, valid until"),
        (5, False, "fail", "in 4 days (under 14)"),
        (-1, False, "fail", "expired on"),
        (90, True, "fail", "is not the key of"),
    ],
    ids=["valid", "expiring", "expired", "wrong-key"],
)
def test_tls_certificate(tmp_path: Path, days_left: float, other_key: bool, status: str, detail: str) -> None:
    cert, key = _certificate(tmp_path / "pki", days_left=days_left, other_key=other_key)
    args = [
        "--transport",
        "udp",
        "--transport",
        "tls",
        "--tls-port",
        str(free_tcp_port()),
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
    ]
    run = _echo(tmp_path, *args)
    assert run.status("tls") == status, run.checks["tls"]
    assert detail in run.checks["tls"]["detail"], run.checks["tls"]
    assert run.status("ports.tls") == "ok"
    if status == "fail":
        assert run.failed() == ["tls"] and run.checks["tls"]["fix"]


# -- the control API's token ---------------------------------------------------------------------
def test_the_api_beyond_loopback_needs_its_token(tmp_path: Path) -> None:
    config = '[api]\nbind = "0.0.0.0"\n'
    run = _echo(tmp_path, config=config)
    _assert_red(run, "api.token", detail="SIPAGENT_API_TOKEN is not set", fix="export SIPAGENT_API_TOKEN")
    token = "t0ken-" + "x" * 40
    run = _echo(tmp_path, config=config, env={"SIPAGENT_API_TOKEN": token})
    assert run.status("api.token") == "ok" and token not in run.output


# -- the store -----------------------------------------------------------------------------------
def test_a_store_that_cannot_be_created_is_red(tmp_path: Path) -> None:
    (tmp_path / "not-a-folder").write_text("")
    run = _echo(tmp_path, "--store-path", str(tmp_path / "not-a-folder" / "calls.db"))
    _assert_red(run, "store", detail="is a file, not a folder", fix="--store-path")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_a_store_in_a_read_only_folder_is_red(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        run = _echo(tmp_path, "--store-path", str(locked / "calls.db"))
    finally:
        locked.chmod(0o700)
    _assert_red(run, "store", detail="refuses new files", fix="write access")


def test_an_existing_store_is_checked_without_being_changed(tmp_path: Path) -> None:
    from sipagent.product.store import CallStore

    path = tmp_path / "calls.db"
    CallStore(path).close()
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    run = _echo(tmp_path, "--store-path", str(path))
    assert run.status("store") == "ok" and "writable (schema version" in run.checks["store"]["detail"]
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before
    other = tmp_path / "other.db"
    other.write_text("a text file")
    run = _echo(tmp_path, "--store-path", str(other))
    _assert_red(run, "store", detail="is not an SQLite database", fix="--store-path")


# -- the trunk's host ----------------------------------------------------------------------------
def test_an_unresolvable_trunk_host_is_red(tmp_path: Path) -> None:
    # .invalid never resolves (RFC 6761).
    run = _echo(tmp_path, config='[trunk]\nuri = "sip:trunk.example.invalid"\n')
    _assert_red(
        run, "trunk.dns", detail="cannot locate SIP server for 'trunk.example.invalid'", fix="trunk.uri"
    )


async def test_a_trunk_host_is_located_as_the_server_locates_it(monkeypatch: pytest.MonkeyPatch) -> None:
    zone = {
        ("_sip._udp.trunk.example.test", "SRV"): ["10 60 5080 edge.trunk.example.test."],
        ("edge.trunk.example.test", "A"): ["192.0.2.44"],
    }
    async with DnsServer("trunk.example.test", zone) as dns:
        from sipagent.net import sip_resolver

        real = sip_resolver.SipResolver
        monkeypatch.setattr(sip_resolver, "SipResolver", lambda: real(nameservers=[HOST], port=dns.port))
        settings = load_settings(None, {"trunk.uri": "sip:trunk.example.test", "sip.transports": ["udp"]})
        result, found = await locate_trunk(settings)
    assert result.status == "ok", result
    assert "trunk.example.test → udp 192.0.2.44:5080" in result.detail
    assert [(a.host, a.port) for a in found] == [("192.0.2.44", 5080)]


# -- the configuration ---------------------------------------------------------------------------
def test_a_bad_key_is_named(tmp_path: Path) -> None:
    run = _echo(tmp_path, config="[sip]\nprot = 5060\n")
    _assert_red(run, "config", detail="sip.prot: Extra inputs are not permitted", fix="sipagent.toml")
    assert list(run.checks) == ["config"]  # nothing else can be checked without the settings


def test_a_configuration_error_does_not_print_the_number(tmp_path: Path) -> None:
    config = '[[routes]]\nnumber = "+15557654321"\n[[routes]]\nnumber = "+1 555 765 4321"\n'
    run = _echo(tmp_path, config=config)
    _assert_red(run, "config", detail="routes[1].number", fix="sipagent.toml")
    assert "4321" in run.output
    assert "7654321" not in run.output


def test_recordings_need_a_folder_that_takes_files(tmp_path: Path) -> None:
    run = _echo(tmp_path)
    assert run.status("recordings") == "skip"  # nothing is recorded by default
    recordings = tmp_path / "rec" / "calls"
    route = '[[routes]]\nnumber = "+15550001111"\nrecord = true\n'
    run = _echo(tmp_path, config=f'[recording]\ndirectory = "{recordings}"\n{route}')
    assert run.status("recordings") == "ok", run.checks["recordings"]
    assert "(serve makes it, 0700)" in run.checks["recordings"]["detail"]
    assert "hours of calls" in run.checks["recordings"]["detail"]
    assert not (tmp_path / "rec").exists()  # checked, not made
    (tmp_path / "rec").write_text("")
    run = _echo(tmp_path, config=f'[recording]\nenabled = true\ndirectory = "{recordings}"\n')
    _assert_red(run, "recordings", detail="is a file, not a folder", fix="[recording] directory")


def test_webhooks_need_their_secret(tmp_path: Path) -> None:
    config = '[webhooks]\nurl = "https://crm.example.test/hooks"\n'
    run = _echo(tmp_path, config=config)
    _assert_red(run, "webhooks", detail="SIPAGENT_WEBHOOK_SECRET", fix="export SIPAGENT_WEBHOOK_SECRET")
    secret = "s" * 40
    run = _echo(tmp_path, config=config, env={"SIPAGENT_WEBHOOK_SECRET": secret})
    assert run.status("webhooks") == "ok" and secret not in run.output


# -- one REGISTER --------------------------------------------------------------------------------
USER, PASSWORD = "agent", "s3cret-Pa55"


def _register_config(kamailio: Kamailio) -> str:
    return (
        f'[trunk]\nmode = "register"\nuri = "{kamailio.uri()}"\nusername = "{USER}"\n'
        f'password_env = "CHECK_TRUNK_PASSWORD"\n'
    )


@pytest.mark.peer
def test_register_against_a_registrar(tmp_path: Path) -> None:
    require("kamailio")
    with Kamailio(tmp_path / "kamailio", users={USER: PASSWORD}, qop=True) as kamailio:
        run = _echo(
            tmp_path, "--register", config=_register_config(kamailio), env={"CHECK_TRUNK_PASSWORD": PASSWORD}
        )
        records = kamailio.register_log()
    assert run.exit_code == 0 and run.ok, run.output
    register = run.checks["trunk.register"]
    assert register["status"] == "ok" and "accepted the REGISTER" in register["detail"], register
    assert "binding removed again" in register["detail"]
    # Challenged, accepted, then removed (Expires: 0), challenged again and accepted.
    assert [r.status for r in records] == ["challenge", "ok", "challenge", "ok"]
    assert records[-1].expires_header == 0
    assert PASSWORD not in run.output


@pytest.mark.peer
def test_register_with_a_wrong_password_is_red(tmp_path: Path) -> None:
    require("kamailio")
    with Kamailio(tmp_path / "kamailio", users={USER: PASSWORD}, qop=True) as kamailio:
        run = _echo(
            tmp_path,
            "--register",
            config=_register_config(kamailio),
            env={"CHECK_TRUNK_PASSWORD": "wr0ng-password"},
        )
    _assert_red(run, "trunk.register", detail="answered 403", fix="trunk.username and the password")
    assert run.failed() == ["trunk.register"]
    assert "wr0ng-password" not in run.output


def test_register_without_the_password_variable_is_red(tmp_path: Path) -> None:
    config = (
        '[trunk]\nmode = "register"\nuri = "sip:127.0.0.1:9"\nusername = "agent"\npassword_env = "NOPE_X"\n'
    )
    run = _echo(tmp_path, "--register", config=config, env={"NOPE_X": None})
    _assert_red(run, "trunk.credentials", detail="$NOPE_X", fix="export NOPE_X")
    _assert_red(run, "trunk.register", detail="no password", fix="export NOPE_X")


def test_check_takes_every_option_of_serve() -> None:
    serve, check = main.commands["serve"], main.commands["check"]
    assert {p.name for p in serve.params} <= {p.name for p in check.params}
