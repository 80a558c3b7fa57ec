"""A throw-away PKI for TLS tests: a CA and a server/client certificate for 127.0.0.1 / localhost.

Made with the ``openssl`` command line (Debian package openssl), so no Python crypto package is needed.
Keys are P-256 EC (fast to generate); certificates are valid for two days.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL = "openssl"


@dataclass(frozen=True)
class PkiFiles:
    """Files of a test PKI (all PEM)."""

    ca_cert: Path
    ca_key: Path
    cert: Path  # leaf certificate for CN=localhost, SAN DNS:localhost, IP:127.0.0.1
    key: Path
    cert_and_key: Path  # cert followed by key, the single-file form baresip's sip_certificate wants
    chain: Path  # leaf certificate followed by the CA certificate


def _run(args: list[str], cwd: Path) -> None:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr}")


def make_test_pki(directory: Path, *, common_name: str = "localhost") -> PkiFiles:
    """Create a CA and a CA-signed leaf certificate for ``common_name`` and 127.0.0.1 in ``directory``."""
    if shutil.which(OPENSSL) is None:
        raise RuntimeError("openssl not installed (Debian package openssl)")
    directory.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _run(
        [
            OPENSSL,
            "req",
            "-x509",
            *ec,
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=sipagent test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        directory,
    )
    _run(
        [OPENSSL, "req", *ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", f"/CN={common_name}"],
        directory,
    )
    (directory / "leaf.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyAgreement\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        f"subjectAltName=DNS:{common_name},DNS:localhost,IP:127.0.0.1\n"
    )
    _run(
        [
            OPENSSL,
            "x509",
            "-req",
            "-in",
            "leaf.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "leaf.pem",
            "-days",
            "2",
            "-extfile",
            "leaf.ext",
        ],
        directory,
    )
    leaf, key, ca = (directory / n for n in ("leaf.pem", "leaf.key", "ca.pem"))
    (directory / "leaf+key.pem").write_text(leaf.read_text() + key.read_text())
    (directory / "chain.pem").write_text(leaf.read_text() + ca.read_text())
    return PkiFiles(
        ca_cert=ca,
        ca_key=directory / "ca.key",
        cert=leaf,
        key=key,
        cert_and_key=directory / "leaf+key.pem",
        chain=directory / "chain.pem",
    )
