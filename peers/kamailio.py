"""Kamailio 5.6 on loopback as the carrier edge: a digest-auth registrar/proxy or an outbound proxy.

:class:`Kamailio` renders a config into a tmp dir and runs ``kamailio -DD -E -f cfg`` (foreground,
logging to stderr, which goes to a file). No database: users and passwords live in an ``htable``
filled at start-up, locations in usrloc memory. It listens on 127.0.0.1 on one random port for UDP and
TCP (and optionally on a TLS port) and is ready once it answers an OPTIONS ping.

Roles (constructor ``role``):

``"registrar"``
    REGISTER is challenged with 401 (``qop="auth"`` when ``qop``, else no qop) and saved in memory;
    the registrar grants at most ``max_expires`` seconds (default 10, so a client's refresh can be
    watched). Out-of-dialog requests (INVITE, ...) whose Request-URI user is a registered AOR are
    looked up and relayed with ``record_route()``; in-dialog requests are loose-routed.

``"proxy"``
    Out-of-dialog INVITEs are challenged with 407 when ``users`` is given (``qop="auth"`` and an
    ``opaque`` when set, which must be echoed or the request gets 403), credentials are consumed, and
    the request is relayed to ``target`` (``host:port``) with ``record_route()``.

Every request, reply and auth decision is logged with ``xlog`` as ``KLOG|KIND|key=value|...`` lines;
:meth:`Kamailio.records` parses them, :meth:`register_log` returns REGISTER records
(:class:`RegisterRecord`) and :meth:`dialog_requests` the loose-routed in-dialog requests.
"""

from __future__ import annotations

import re
import secrets
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from peers.ports import HOST, free_sip_port, free_tcp_port
from peers.proc import Lifecycle, ManagedProcess, ProcessError
from peers.sipmsg import options_ping_udp

KAMAILIO = "kamailio"
MODULE_PATH = "/usr/lib/x86_64-linux-gnu/kamailio/modules"
Role = Literal["registrar", "proxy"]

_SAFE = re.compile(r"^[A-Za-z0-9_.+\-@:;=]+$")


@dataclass(frozen=True)
class TlsFiles:
    """Certificate chain and key (PEM) for a TLS listener."""

    certificate: Path
    private_key: Path
    ca_file: Path | None = None


@dataclass(frozen=True)
class KamailioRecord:
    """One ``KLOG|KIND|k=v|...`` line from the kamailio log."""

    kind: str  # REQ (every request received), DLG (loose-routed), REG, AUTH, RPL, DROP, FWD
    fields: Mapping[str, str]

    def get(self, key: str) -> str | None:
        """Field ``key``, or None when absent or logged as kamailio's ``<null>``."""
        value = self.fields.get(key)
        return None if value in (None, "<null>", "") else value


@dataclass(frozen=True)
class RegisterRecord:
    """One REGISTER as kamailio saw it."""

    call_id: str
    cseq: int
    expires_header: int | None  # the Expires header of the request
    contact_expires: int | None  # the ;expires= parameter of the Contact, if any
    contact: str | None
    auth_user: str | None
    status: str  # "challenge", "ok", "forbidden", "save-failed"
    rc: int | None  # return code of pv_www_authenticate (negative on failure)
    granted: int | None  # expiry kamailio stored for the contact (status "ok" only)

    @property
    def requested_expires(self) -> int | None:
        """What the client asked for: the Contact parameter wins over the Expires header (RFC 3261)."""
        return self.contact_expires if self.contact_expires is not None else self.expires_header


def _int_or_none(value: str | None) -> int | None:
    if value is None:
        return None
    match = re.match(r"-?\d+", value.strip())
    return int(match.group()) if match else None


def _check_safe(what: str, value: str) -> str:
    """Values end up inside double-quoted kamailio strings: keep them to a safe alphabet."""
    if not _SAFE.match(value):
        raise ValueError(f"{what} {value!r} has characters not allowed in the generated kamailio config")
    return value


class Kamailio(Lifecycle):
    """A kamailio instance for one test; use as a context manager.

    Args:
        workdir: directory for the config, runtime dir and log (a pytest tmp dir).
        role: ``"registrar"`` or ``"proxy"`` (see module docstring).
        users: username -> password accepted by the digest checks (registrar: REGISTER; proxy: INVITE).
            For the proxy role, None disables the 407 challenge.
        realm: digest realm.
        qop: challenge with ``qop="auth"`` (True) or without qop (False).
        opaque: proxy role only: add ``opaque="..."`` to 407 challenges and require it echoed.
        max_expires: longest registration the registrar grants (seconds).
        target: proxy role: ``host:port`` that authenticated INVITEs are relayed to (UDP).
        tls: also listen for SIP over TLS on ``tls_port`` with these files.
        port: SIP port for UDP and TCP (default: a free one).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        role: Role = "registrar",
        users: Mapping[str, str] | None = None,
        realm: str = "sipagent.test",
        qop: bool = True,
        opaque: str | None = None,
        max_expires: int = 10,
        min_expires: int = 1,
        target: str | None = None,
        tls: TlsFiles | None = None,
        port: int | None = None,
        tls_port: int | None = None,
        ready_timeout: float = 15.0,
    ) -> None:
        if shutil.which(KAMAILIO) is None:
            raise ProcessError("kamailio not installed (Debian package kamailio)")
        if role == "proxy" and target is None:
            raise ValueError("the proxy role needs a target host:port")
        if role == "registrar" and not users:
            raise ValueError("the registrar role needs users")
        self.workdir = workdir
        self.role: Role = role
        self.users = {
            _check_safe("username", u): _check_safe("password", p) for u, p in (users or {}).items()
        }
        self.realm = _check_safe("realm", realm)
        self.qop = qop
        self.opaque = _check_safe("opaque", opaque) if opaque is not None else None
        self.max_expires = max_expires
        self.min_expires = min_expires
        self.target = _check_safe("target", target) if target is not None else None
        self.tls = tls
        self.port = port if port is not None else free_sip_port()
        self.tls_port = (tls_port if tls_port is not None else free_tcp_port()) if tls is not None else None
        self.ready_timeout = ready_timeout
        self.config_path = workdir / "kamailio.cfg"
        self.runtime_dir = workdir / "run"
        self.process: ManagedProcess | None = None

    # -- addresses -----------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``127.0.0.1:<port>`` (UDP and TCP)."""
        return f"{HOST}:{self.port}"

    @property
    def tls_address(self) -> str:
        """``127.0.0.1:<tls_port>``."""
        if self.tls_port is None:
            raise RuntimeError("kamailio was started without TLS")
        return f"{HOST}:{self.tls_port}"

    def uri(self, user: str | None = None, *, transport: str = "udp") -> str:
        """A SIP URI for this kamailio (``sips``-less; ``;transport=`` added for tcp/tls)."""
        userpart = f"{user}@" if user else ""
        if transport == "tls":
            return f"sip:{userpart}{self.tls_address};transport=tls"
        suffix = ";transport=tcp" if transport == "tcp" else ""
        return f"sip:{userpart}{self.address}{suffix}"

    # -- config --------------------------------------------------------------------------------------

    def render_config(self) -> str:
        """The kamailio.cfg text for this instance."""
        return _render(self)

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Write the config, start kamailio and wait until it answers OPTIONS."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        if self.tls is not None:
            (self.workdir / "tls.cfg").write_text(_render_tls(self.tls))
        self.config_path.write_text(self.render_config())
        self.process = ManagedProcess(
            [
                KAMAILIO,
                "-DD",
                "-E",
                "-f",
                str(self.config_path),
                "-Y",
                str(self.runtime_dir),
                "-m",
                "32",
                "-M",
                "8",
                "-w",
                str(self.workdir),
            ],
            name="kamailio",
            logdir=self.workdir,
            stop_timeout=5.0,
        )
        self.process.start()
        deadline = time.monotonic() + self.ready_timeout
        while options_ping_udp((HOST, self.port), timeout=0.3) is None:
            if not self.process.is_running() or time.monotonic() > deadline:
                log = self.log_text()
                self.process.stop()
                raise ProcessError(f"kamailio did not answer OPTIONS on {self.address}:\n{log[-4000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop kamailio (SIGTERM to its process group, then SIGKILL)."""
        if self.process is not None:
            self.process.stop()

    # -- logs ----------------------------------------------------------------------------------------

    def log_text(self) -> str:
        """Everything kamailio logged (stderr)."""
        return self.process.stderr_text() if self.process is not None else ""

    def records(self, kind: str | None = None) -> list[KamailioRecord]:
        """Parsed ``KLOG`` lines, optionally only those of ``kind`` (REQ, DLG, REG, AUTH, RPL, DROP, FWD)."""
        out: list[KamailioRecord] = []
        for line in self.log_text().splitlines():
            index = line.find("KLOG|")
            if index < 0:
                continue
            parts = line[index:].rstrip().split("|")
            fields = dict(part.split("=", 1) for part in parts[2:] if "=" in part)
            if kind is None or parts[1] == kind:
                out.append(KamailioRecord(parts[1], fields))
        return out

    def register_log(self) -> list[RegisterRecord]:
        """Every REGISTER kamailio processed, in order."""
        records = []
        for rec in self.records("REG"):
            contact = rec.get("ct")
            ct_match = re.search(r";\s*expires\s*=\s*(\d+)", contact or "", re.IGNORECASE)
            records.append(
                RegisterRecord(
                    call_id=rec.get("ci") or "",
                    cseq=_int_or_none(rec.get("cseq")) or 0,
                    expires_header=_int_or_none(rec.get("expires")),
                    contact_expires=int(ct_match.group(1)) if ct_match else None,
                    contact=contact,
                    auth_user=rec.get("au"),
                    status=rec.get("status") or "",
                    rc=_int_or_none(rec.get("rc")),
                    granted=_int_or_none(rec.get("granted")),
                )
            )
        return records

    def dialog_requests(self, method: str | None = None) -> list[KamailioRecord]:
        """In-dialog requests kamailio loose-routed (proof that ACK/BYE/re-INVITE went through it)."""
        return [r for r in self.records("DLG") if method is None or r.get("m") == method.upper()]

    def requests(self, method: str | None = None) -> list[KamailioRecord]:
        """Every request kamailio received (before any routing decision)."""
        return [r for r in self.records("REQ") if method is None or r.get("m") == method.upper()]

    def wait_for_record(
        self, kind: str, *, timeout: float = 10.0, count: int = 1, **match: str
    ) -> list[KamailioRecord]:
        """Poll the log until ``count`` records of ``kind`` whose fields equal ``match`` exist."""
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.records(kind) if all(r.get(k) == v for k, v in match.items())]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count}x {kind} {match} not logged by kamailio within {timeout}s")
            time.sleep(0.05)


# --- config rendering ----------------------------------------------------------------------------------

_LOG_REQ = (
    'xlog("L_NOTICE", "KLOG|REQ|m=$rm|ci=$ci|cseq=$cs|ruri=$ru|src=$si:$sp|proto=$pr'
    '|totag=$tt|route=$hdr(Route)|ct=$ct\\n");'
)
_LOG_DLG = 'xlog("L_NOTICE", "KLOG|DLG|m=$rm|ci=$ci|cseq=$cs|ruri=$ru|du=$du|src=$si:$sp|proto=$pr\\n");'


def _reg_log(status: str, *, au: str = "$au", rc: str = "$var(rc)", extra: str = "") -> str:
    """The xlog statement for one REGISTER record (parsed back by :meth:`Kamailio.register_log`)."""
    return (
        'xlog("L_NOTICE", "KLOG|REG|ci=$ci|cseq=$cs|expires=$hdr(Expires)|ct=$ct'
        f'|au={au}|status={status}|rc={rc}{extra}\\n");'
    )


def _render_tls(tls: TlsFiles) -> str:
    ca = f"ca_list = {tls.ca_file}\n" if tls.ca_file else ""
    return (
        "[server:default]\n"
        "method = TLSv1.2+\n"
        "verify_certificate = no\n"
        "require_certificate = no\n"
        f"private_key = {tls.private_key}\n"
        f"certificate = {tls.certificate}\n"
        f"{ca}\n"
        "[client:default]\n"
        "method = TLSv1.2+\n"
        "verify_certificate = no\n"
        "require_certificate = no\n"
    )


def _render(k: Kamailio) -> str:
    qop_challenge = "1" if k.qop else "0"
    # kamailio rejects an empty route block, hence the no-op assignment.
    users_init = "\n".join(
        [f'    $sht(users=>{u}) = "{p}";' for u, p in k.users.items()] or ["    $var(no_users) = 1;"]
    )
    listen = [f"listen=udp:{HOST}:{k.port}", f"listen=tcp:{HOST}:{k.port}"]
    modules = [
        "kex",
        "corex",
        "tm",
        "tmx",
        "sl",
        "rr",
        "pv",
        "maxfwd",
        "textops",
        "siputils",
        "xlog",
        "sanity",
        "auth",
        "htable",
    ]
    params = [
        'modparam("rr", "enable_full_lr", 1)',
        'modparam("rr", "append_fromtag", 1)',
        'modparam("tm", "failure_reply_mode", 3)',
        f'modparam("auth", "secret", "{secrets.token_hex(16)}")',
        'modparam("auth", "nonce_expire", 300)',
        'modparam("htable", "htable", "users=>size=4;")',
    ]
    if k.role == "registrar":
        modules += ["usrloc", "registrar"]
        params += [
            'modparam("usrloc", "db_mode", 0)',
            'modparam("usrloc", "timer_interval", 5)',
            f'modparam("registrar", "max_expires", {k.max_expires})',
            f'modparam("registrar", "min_expires", {k.min_expires})',
            f'modparam("registrar", "default_expires", {k.max_expires})',
        ]
    if k.tls is not None:
        listen.append(f"listen=tls:{HOST}:{k.tls_port}")
        modules.append("tls")
        params.append(f'modparam("tls", "config", "{k.workdir / "tls.cfg"}")')
    globals_ = "\n".join(
        [
            "#!KAMAILIO",
            "# Generated by peers/kamailio.py for one test; not for production.",
            "debug=2",
            "log_stderror=yes",
            'log_prefix=""',
            "memdbg=5",
            "memlog=5",
            "fork=yes",
            "children=2",
            "tcp_children=2",
            "auto_aliases=no",
            "dns=no",
            "rev_dns=no",
            "dns_try_ipv6=no",
            "use_dns_cache=off",
            "tcp_accept_no_cl=yes",
            f"enable_tls={'yes' if k.tls is not None else 'no'}",
            'server_header="Server: sipagent-test-kamailio"',
            'user_agent_header="User-Agent: sipagent-test-kamailio"',
            *listen,
            f'mpath="{MODULE_PATH}/"',
            *[f'loadmodule "{m}.so"' for m in modules],
            *params,
        ]
    )

    if k.role == "registrar":
        initial = """
    if (is_method("REGISTER")) {
        route(REGISTRAR);
        exit;
    }
    # Requests to a registered user: Request-URI user = AOR.
    if (!lookup("location")) {
        xlog("L_NOTICE", "KLOG|FWD|m=$rm|ci=$ci|ruri=$ru|status=not-found\\n");
        sl_send_reply("404", "Not Found");
        exit;
    }
    xlog("L_NOTICE", "KLOG|FWD|m=$rm|ci=$ci|ruri=$ru|du=$du|status=lookup\\n");
    record_route();
    route(RELAY);
"""
        registrar = f"""
route[REGISTRAR] {{
    # An absent user (or no credentials at all) must still yield a challenge: give the auth
    # function a password that cannot match rather than a null PV (which aborts it).
    $var(pw) = "-no-such-user-";
    if ($au != $null && $sht(users=>$au) != $null) {{
        $var(pw) = $sht(users=>$au);
    }}
    if (!pv_www_authenticate("{k.realm}", "$var(pw)", "0")) {{
        $var(rc) = $rc;
        if ($var(rc) == -2) {{
            {_reg_log("forbidden")}
            sl_send_reply("403", "Forbidden");
            exit;
        }}
        {_reg_log("challenge")}
        if ($var(rc) == -4 || $var(rc) == -6) {{
            www_challenge("{k.realm}", "{int(qop_challenge) | 16}");
        }} else {{
            www_challenge("{k.realm}", "{qop_challenge}");
        }}
        exit;
    }}
    $var(au) = $au;
    consume_credentials();
    # 0x02: save without replying, so the record is logged before the 200 leaves. With two
    # workers, a reply sent first let the client's next REGISTER be logged ahead of this one.
    if (!save("location", "0x02")) {{
        {_reg_log("save-failed", au="$var(au)", rc="1")}
        sl_reply_error();
        exit;
    }}
    $var(granted) = "none";
    if (reg_fetch_contacts("location", "$tu", "aor")) {{
        # usrloc stores an absolute time: log the seconds granted.
        $var(granted) = $ulc(aor=>expires) - $Ts;
    }}
    {_reg_log("ok", au="$var(au)", rc="1", extra="|granted=$var(granted)")}
    reg_send_reply();
}}
"""
    else:
        if k.users:
            flags = "4" if k.qop else "2"
            if k.opaque is not None:
                challenge = f"""
            # kamailio's auth module has no opaque: take the challenge it built and add one.
            $var(ch) = $(avp(digest_challenge){{s.trim}});
            append_to_reply("$var(ch), opaque=\\"{k.opaque}\\"\\r\\n");
            sl_send_reply("407", "Proxy Authentication Required");"""
                opaque_check = f"""
        if (!($hdr(Proxy-Authorization) =~ "opaque=\\"{k.opaque}\\"")) {{
            xlog("L_NOTICE", "KLOG|AUTH|m=$rm|ci=$ci|cseq=$cs|au=$au|status=opaque-missing|rc=0\\n");
            sl_send_reply("403", "Opaque Not Echoed");
            exit;
        }}"""
            else:
                challenge = """
            $var(ch) = $(avp(digest_challenge){s.trim});
            append_to_reply("$var(ch)\\r\\n");
            sl_send_reply("407", "Proxy Authentication Required");"""
                opaque_check = ""
            auth = f"""
    if (is_method("INVITE")) {{
        # An absent user (or no credentials at all) must still yield a challenge: give the auth
        # function a password that cannot match rather than a null PV (which aborts it).
        $var(pw) = "-no-such-user-";
        if ($au != $null && $sht(users=>$au) != $null) {{
            $var(pw) = $sht(users=>$au);
        }}
        if (!pv_proxy_authenticate("{k.realm}", "$var(pw)", "{flags}")) {{
            $var(rc) = $rc;
            xlog("L_NOTICE", "KLOG|AUTH|m=$rm|ci=$ci|cseq=$cs|au=$au|status=challenge|rc=$var(rc)\\n");
            if ($var(rc) == -2) {{
                sl_send_reply("403", "Forbidden");
                exit;
            }}{challenge}
            exit;
        }}{opaque_check}
        xlog("L_NOTICE", "KLOG|AUTH|m=$rm|ci=$ci|cseq=$cs|au=$au|status=ok|rc=1\\n");
        consume_credentials();
    }}"""
        else:
            auth = ""
        initial = f"""{auth}
    record_route();
    $du = "sip:{k.target}";
    xlog("L_NOTICE", "KLOG|FWD|m=$rm|ci=$ci|ruri=$ru|du=$du|status=target\\n");
    route(RELAY);
"""
        registrar = ""

    routes = f"""
event_route[htable:mod-init] {{
{users_init}
}}

request_route {{
    {_LOG_REQ}
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (!sanity_check("17895", "7")) {{
        xlog("L_NOTICE", "KLOG|DROP|m=$rm|ci=$ci|reason=sanity\\n");
        exit;
    }}
    # Keepalive / readiness ping addressed to kamailio itself.
    if (is_method("OPTIONS") && uri == myself && $rU == $null) {{
        append_to_reply("Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, REGISTER\\r\\n");
        sl_send_reply("200", "OK");
        exit;
    }}
    if (has_totag()) {{
        route(WITHINDLG);
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            route(RELAY);
        }}
        exit;
    }}
    if (!is_method("ACK")) {{
        t_check_trans();
    }}
    remove_hf("Route");
{initial}
}}

route[WITHINDLG] {{
    if (loose_route()) {{
        {_LOG_DLG}
        route(RELAY);
        exit;
    }}
    if (is_method("ACK")) {{
        if (t_check_trans()) {{
            # ACK for a negative reply kamailio relayed: hop-by-hop, forward statefully.
            xlog("L_NOTICE", "KLOG|DLG|m=$rm|ci=$ci|cseq=$cs|ruri=$ru|du=$du|src=$si:$sp|proto=$pr|lr=no\\n");
            t_relay();
            exit;
        }}
        # ACK for a reply kamailio sent itself (401/407/404): absorbed here.
        xlog("L_NOTICE", "KLOG|DROP|m=$rm|ci=$ci|cseq=$cs|reason=ack-absorbed\\n");
        exit;
    }}
    xlog("L_NOTICE", "KLOG|DROP|m=$rm|ci=$ci|cseq=$cs|reason=no-route\\n");
    sl_send_reply("404", "Not here");
    exit;
}}

route[RELAY] {{
    if (!t_relay()) {{
        xlog("L_NOTICE", "KLOG|DROP|m=$rm|ci=$ci|cseq=$cs|reason=relay-failed\\n");
        sl_reply_error();
    }}
    exit;
}}
{registrar}
onreply_route {{
    xlog("L_NOTICE", "KLOG|RPL|code=$rs|m=$rm|ci=$ci|cseq=$cs|src=$si:$sp|proto=$pr\\n");
}}
"""
    return globals_ + "\n" + routes
