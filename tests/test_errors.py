"""The error tree: every error sipagent defines derives from SipAgentError and is drawn in the docstring
of sipagent/errors.py."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import sipagent
from sipagent.errors import SipAgentError


def _defined_errors() -> dict[str, type[BaseException]]:
    """``{module.Class: class}`` for every exception class defined in a sipagent module."""
    errors: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(sipagent.__path__, "sipagent."):
        if info.name.endswith("__main__"):  # runs the command line when imported
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == info.name:
                errors[f"{info.name}.{name}"] = value
    return errors


def test_every_error_derives_from_the_root() -> None:
    errors = _defined_errors()
    assert "sipagent.rtp.packet.RtpParseError" in errors  # the walk reaches compiled modules too
    assert [name for name, cls in errors.items() if not issubclass(cls, SipAgentError)] == []


def test_the_docstring_draws_every_error() -> None:
    # From the source: the compiled module has no __doc__.
    tree = ast.get_docstring(ast.parse((Path(sipagent.__file__).parent / "errors.py").read_text())) or ""
    missing = [name for name in _defined_errors() if not re.search(rf"\b{name.rpartition('.')[2]}\b", tree)]
    assert missing == []


def test_builtin_bases_are_kept_for_callers_that_catch_them() -> None:
    from sipagent.net.media_sockets import PortRangeExhausted
    from sipagent.pcapio import PcapError
    from sipagent.rtp.packet import RtpPacket, RtpParseError
    from sipagent.rtp.rtcp import RtcpParseError
    from sipagent.rtp.srtp import CryptoAttributeError

    assert all(issubclass(cls, ValueError) for cls in (RtpParseError, RtcpParseError, CryptoAttributeError))
    assert issubclass(PcapError, ValueError) and issubclass(PortRangeExhausted, RuntimeError)
    try:  # raised by (possibly compiled) code, caught by the root
        RtpPacket.parse(b"\x80")
    except SipAgentError as exc:
        assert isinstance(exc, RtpParseError) and isinstance(exc, ValueError)
    else:
        raise AssertionError("a 1-byte datagram parsed as RTP")
