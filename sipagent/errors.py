"""The root of every error sipagent raises on purpose, and the tree of them all.

``except SipAgentError`` catches anything the product raises deliberately; catch a branch to handle
one layer. An error that callers have long caught by a builtin (``ValueError`` from a parser,
``RuntimeError``) keeps that builtin as a second base, so ``except ValueError`` still works. As in h11,
each error says who broke the rule and, where a peer did, what to answer::

    SipAgentError
    ├── ConfigError                       config.py: the configuration cannot be used; the message names
    │                                     every bad key. Raised at start-up, never in a call.
    ├── SipError                          sip/errors.py: the sans-IO SIP core
    │   ├── ProtocolError                 status_hint: the SIP status that answers it
    │   │   ├── RemoteProtocolError       the peer sent something malformed or unacceptable; the
    │   │   │                             transport answers status_hint (400, 413, 513…) and carries on
    │   │   └── LocalProtocolError        our own code asked for something the protocol forbids (a bug)
    │   ├── OfferRejected                 an SDP offer or answer we cannot accept (status, 488 by default)
    │   └── TransactionStateError         an impossible transition in a transaction or timer machine;
    │                                     names role, state and event (a bug)
    ├── RtpParseError (ValueError)        rtp/packet.py: a datagram that is not well-formed RTP; the
    │                                     RTP session drops and counts it
    ├── RtcpParseError (ValueError)       rtp/rtcp.py: a datagram that is not a well-formed RTCP compound
    │                                     packet; the RTP session drops and counts it
    ├── CryptoAttributeError (ValueError) rtp/srtp.py: an a=crypto line we cannot use; sip/sdes.py skips
    │                                     it and rejects the stream (488) only when no line is usable
    ├── SrtpError                         rtp/srtp.py: protecting one of *our* packets failed (a bug,
    │                                     never the peer's doing; its bad packets are dropped, not raised)
    ├── PortRangeExhausted (RuntimeError) net/media_sockets.py, raised by net/media.py: no free RTP/RTCP
    │                                     port pair in the configured range; the call is refused
    ├── PcapError (ValueError)            pcapio.py: a file that is not a readable pcap capture
    ├── CaptureError (ValueError)         replay/capture.py: a capture with no usable caller RTP
    │                                     (`sipagent replay` reports it and exits)
    ├── TrunkResolutionError              net/sip_resolver.py: no address for a SIP host by RFC 3263 (NAPTR,
    │                                     SRV, A); names the host and every DNS question tried
    ├── TrunkProfileError                 product/trunks.py: a number, caller ID, display name or trunk URI
    │                                     the carrier's profile cannot use; names the profile and the rule
    ├── ControlError                      product/control.py: a control request the server cannot carry out;
    │   │                                 names the field, and the HTTP status that answers it (4xx)
    │   ├── UnknownCall                   no call with that id (404)
    │   └── CallLimitReached              an outbound call beyond limits.max_calls (429; never queued)
    ├── ApiBindError                      api/server.py: the control API cannot listen on [api] bind/port
    │                                     (`sipagent serve` reports it and exits)
    ├── ApiClientError                    api/client.py: the CLI's request failed (no server, refused
    │                                     token, a 4xx naming the field); printed in one line
    ├── StoreError                        product/store.py: the call store cannot be opened or used
    │   │                                 (names the file and what failed; `sipagent serve` reports it)
    │   └── StoreSchemaError              the database was written by a newer sipagent (names both versions)
    ├── NumberError (ValueError)          product/numbers.py: a value that cannot become an E.164 number
    │                                     (names the value and why); start-up turns a bad configured number
    │                                     into a ConfigError, a caller's number is read leniently (None)
    ├── LlmError                          voice/llm.py: the language model cannot answer (server error,
    │   │                                 bad stream, misuse of a session)
    │   └── ChatTemplateError             no usable chat template in the GGUF or the configuration
    ├── ModelLoadError (RuntimeError)     voice/inference/loading.py: a model cannot be loaded; names
    │                                     the file or setting (`sipagent serve` reports it and exits)
    ├── AmdConfigError (ValueError)       voice/amd.py: answering-machine detection parameters that cannot
    │                                     work together (names the parameter)
    ├── ToneConfigError (ValueError)      voice/tones.py: tone-classifier parameters out of range
    ├── TurnStateError (RuntimeError)     voice/turns.py: an event the turn detector's table does not
    │                                     allow in its state (a bug)
    └── ReplyStateError (RuntimeError)    voice/conversation/reply.py: an event the reply's table does
                                          not allow in its state (a bug)

A model job that fails does not raise in the call: it comes back as ``JobFailed`` (voice/jobs.py),
the turn is recorded as failed with the reason, and the call goes on.

This module is compiled with the media engine (``sipagent/compiled_modules.txt``): the compiled
parsers' errors derive from this class, and mypyc cannot compile a subclass of a plain Python class.
"""

from __future__ import annotations

from mypy_extensions import mypyc_attr

__all__ = ["SipAgentError"]


# Compiled, the class is native; the errors in plain Python modules (most of the tree) subclass it,
# which mypyc allows only when asked.
@mypyc_attr(allow_interpreted_subclasses=True)
class SipAgentError(Exception):
    """Base of every error sipagent raises on purpose (the tree is in this module's docstring)."""
