"""``tls``: the TLS listener's certificate and key, as ``serve`` will load them.

Readable, PEM, the key unencrypted (the server cannot ask for a passphrase), the key the
certificate's (compared as public keys, then loaded the way the server loads them, by ``ssl``), and
the certificate valid now and for at least :data:`MIN_DAYS` more days: a certificate that expires
while the server runs fails every TLS call and registration from that moment.
"""

from __future__ import annotations

import datetime
import ssl

from ..config import Settings
from .result import CheckResult, fail, first_line, ok, skip

NAME = "tls"
#: A certificate expiring sooner than this is red: time to renew before it stops calls.
MIN_DAYS = 14
_KEYS = "[sip] tls_cert / tls_key (--tls-cert / --tls-key)"


def check_tls(settings: Settings, now: datetime.datetime | None = None) -> CheckResult:
    """The certificate and key of ``[sip]``, when TLS is one of the transports."""
    sip = settings.sip
    if "tls" not in sip.transports:
        return skip(NAME, 'no "tls" in sip.transports')
    assert sip.tls_cert is not None and sip.tls_key is not None  # the config requires both with tls
    # Imported here: cryptography is only needed when there is a certificate to read.
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        cert_pem, key_pem = sip.tls_cert.read_bytes(), sip.tls_key.read_bytes()
    except OSError as exc:
        return fail(
            NAME,
            f"cannot read {exc.filename}: {exc.strerror}",
            f"check the path and that this user may read it: {_KEYS}",
        )
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError as exc:
        return fail(
            NAME,
            f"{sip.tls_cert} holds no PEM certificate ({first_line(exc)})",
            f"point tls_cert at the PEM certificate (chain) file: {_KEYS}",
        )
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        return fail(
            NAME,
            f"{sip.tls_key} is encrypted: the server cannot ask for its passphrase",
            f"store it unencrypted and readable only by the server's user "
            f"(`openssl pkey -in {sip.tls_key} -out key.pem`, chmod 600)",
        )
    except Exception as exc:  # ValueError, or an unsupported key type's own error
        return fail(
            NAME,
            f"{sip.tls_key} holds no PEM private key ({first_line(exc)})",
            f"point tls_key at the certificate's PEM key: {_KEYS}",
        )
    leaf = chain[0]
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if leaf.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        return fail(
            NAME,
            f"{sip.tls_key} is not the key of {sip.tls_cert}",
            f"pair the certificate with the key it was issued for: {_KEYS}",
        )
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(sip.tls_cert, sip.tls_key)
    except (ssl.SSLError, OSError) as exc:
        return fail(
            NAME, f"the TLS library refuses the pair: {first_line(exc)}", f"check both files: {_KEYS}"
        )
    now = now or datetime.datetime.now(datetime.UTC)
    subject = leaf.subject.rfc4514_string() or "(no subject)"
    until = leaf.not_valid_after_utc
    renew = "renew it (certbot renew, or your CA) and restart serve"
    if leaf.not_valid_before_utc > now:
        return fail(
            NAME,
            f"{subject} is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
            "check this machine's clock, or use a certificate valid now",
        )
    if until <= now:
        return fail(NAME, f"{subject} expired on {until:%Y-%m-%d}", renew)
    left = until - now
    if left < datetime.timedelta(days=MIN_DAYS):
        return fail(
            NAME, f"{subject} expires on {until:%Y-%m-%d}, in {left.days} days (under {MIN_DAYS})", renew
        )
    return ok(NAME, f"{subject}, key matches, valid until {until:%Y-%m-%d} ({left.days} days)")


__all__ = ["MIN_DAYS", "check_tls"]
