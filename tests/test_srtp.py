"""SRTP/SRTCP through libsrtp and SDES a=crypto values (sipagent.rtp.srtp)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipagent.rtp.packet import RtpPacket
from sipagent.rtp.srtp import (
    KEY_SALT_LENGTH,
    CryptoAttribute,
    CryptoAttributeError,
    CryptoSuite,
    SrtpError,
    SrtpParams,
    SrtpSession,
    SrtpStats,
)

S80 = CryptoSuite.AES_CM_128_HMAC_SHA1_80
S32 = CryptoSuite.AES_CM_128_HMAC_SHA1_32

# --- known answers ------------------------------------------------------------------------------
# RFC 3711 Appendix B publishes keystream (B.2) and key-derivation (B.3) vectors, not whole packets,
# and libsrtp keeps its session keys to itself. So the whole-packet vectors are libsrtp's own
# srtp_validate() ones (test/srtp_driver.c), which are keyed with the RFC 3711 B.3 master key and
# salt: they pin the IV from SSRC and index, the encrypted span, the HMAC over packet||ROC, and the
# SRTCP E-bit/index word.
KAT_KEY_SALT = bytes.fromhex("e1f97a0d3e018be0d64fa32c06de41390ec675ad498afeebb6960b3aabe6")
KAT_RTP = bytes.fromhex("800f1234decafbadcafebabe" + "ab" * 16)  # PT 15, seq 0x1234, SSRC 0xcafebabe
KAT_SRTP_80 = bytes.fromhex("800f1234decafbadcafebabe4e55dc4ce79978d88ca4d215949d2402b78d6acc99ea179b8dbb")
KAT_SRTP_32 = KAT_SRTP_80[:-6]  # the same HMAC-SHA1, truncated to 32 bits
KAT_RTCP = bytes.fromhex("81c8000bcafebabe" + "ab" * 16)  # an SR from SSRC 0xcafebabe
KAT_SRTCP = bytes.fromhex("81c8000bcafebabe7128035be487b9bdbef89041f977a5a880000001993e08cd54d6c1230798")


def key(seed: str) -> bytes:
    return hashlib.sha256(seed.encode()).digest()[:KEY_SALT_LENGTH]


def pair(
    suite: CryptoSuite = S80, a: bytes = key("a"), b: bytes = key("b")
) -> tuple[SrtpSession, SrtpSession]:
    """Two ends of a call: each protects with its own key and unprotects with the other's."""
    return SrtpSession(SrtpParams(suite, a, b)), SrtpSession(SrtpParams(suite, b, a))


def rtp(seq: int, ssrc: int = 0x01020304, payload: bytes = b"\xff" * 160, pt: int = 0) -> bytes:
    return RtpPacket(pt, seq & 0xFFFF, seq * 160 & 0xFFFFFFFF, ssrc, payload).serialize()


def rtcp_rr(ssrc: int = 0x01020304) -> bytes:
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc)  # an empty receiver report


@pytest.mark.parametrize(("suite", "expected"), [(S80, KAT_SRTP_80), (S32, KAT_SRTP_32)])
def test_known_answer_rtp(suite: CryptoSuite, expected: bytes) -> None:
    sender = SrtpSession(SrtpParams(suite, KAT_KEY_SALT, key("unused")))
    assert sender.protect(KAT_RTP) == expected
    receiver = SrtpSession(SrtpParams(suite, key("unused"), KAT_KEY_SALT))
    assert receiver.unprotect(expected) == KAT_RTP
    assert len(expected) - len(KAT_RTP) == suite.rtp_tag_length


@pytest.mark.parametrize("suite", [S80, S32])
def test_known_answer_rtcp_has_an_80_bit_tag_in_both_suites(suite: CryptoSuite) -> None:
    sender = SrtpSession(SrtpParams(suite, KAT_KEY_SALT, key("unused")))
    assert sender.protect_rtcp(KAT_RTCP) == KAT_SRTCP
    receiver = SrtpSession(SrtpParams(suite, key("unused"), KAT_KEY_SALT))
    assert receiver.unprotect_rtcp(KAT_SRTCP) == KAT_RTCP
    assert len(KAT_SRTCP) - len(KAT_RTCP) == 4 + suite.rtcp_tag_length


# --- round trips --------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", [S80, S32])
def test_round_trip_both_directions(suite: CryptoSuite) -> None:
    a, b = pair(suite)
    for seq in range(100, 110):
        sent = rtp(seq)
        wire = a.protect(sent)
        assert wire != sent and wire[:12] == sent[:12]  # header in clear, payload encrypted
        assert len(wire) == len(sent) + suite.rtp_tag_length
        assert b.unprotect(wire) == sent
        back = rtp(seq, ssrc=0xDEADBEEF, payload=b"\xd5" * 160, pt=8)
        assert a.unprotect(b.protect(back)) == back
    assert a.stats == b.stats == SrtpStats(protected=10, unprotected=10)


def test_any_ssrc_both_ways_and_out_of_order_delivery() -> None:
    a, b = pair()
    wires = [a.protect(rtp(seq, ssrc=ssrc)) for ssrc in (1, 2, 0xFFFFFFFF) for seq in (7, 8, 9)]
    for wire in reversed(wires):  # reordering within the replay window is fine
        assert b.unprotect(wire) is not None
    assert b.stats.unprotected == 9


def test_sequence_rollover_carries_the_roc() -> None:
    a, b = pair()
    for seq in (65533, 65534, 65535, 65536, 65537):  # 16-bit wrap: ROC 0 -> 1
        packet = rtp(seq)
        assert b.unprotect(a.protect(packet)) == packet


@pytest.mark.parametrize("suite", [S80, S32])
def test_rtcp_round_trip(suite: CryptoSuite) -> None:
    a, b = pair(suite)
    for _ in range(3):
        wire = a.protect_rtcp(rtcp_rr())
        assert len(wire) == len(rtcp_rr()) + 4 + 10
        assert b.unprotect_rtcp(wire) == rtcp_rr()
    assert b.unprotect_rtcp(wire) is None  # SRTCP has its own replay protection
    assert b.stats.rejected_replay == 1


def test_accepts_bytearray_and_memoryview() -> None:
    a, b = pair()
    wire = a.protect(bytearray(rtp(1)))
    assert b.unprotect(memoryview(wire)) == rtp(1)


# --- rejection: counted, never raised -----------------------------------------------------------


@pytest.mark.parametrize("suite", [S80, S32])
def test_a_flipped_bit_anywhere_is_rejected(suite: CryptoSuite) -> None:
    a, b = pair(suite)
    size = len(a.protect(rtp(0)))
    for position in range(size):
        genuine = a.protect(rtp(1 + position))
        forged = bytearray(genuine)
        forged[position] ^= 1 << (position % 8)
        before = b.stats
        assert b.unprotect(bytes(forged)) is None, f"bit flip at byte {position} was accepted"
        after = b.stats
        assert after.rejected == before.rejected + 1
        if position >= 12:  # payload and tag: exactly an authentication failure
            assert after.rejected_auth == before.rejected_auth + 1
        # A forgery must not burn the index: the genuine packet still gets through.
        assert b.unprotect(genuine) is not None
    assert b.stats.unprotected == size


def test_tampered_rtcp_and_truncated_tag_are_rejected() -> None:
    a, b = pair()
    wire = bytearray(a.protect_rtcp(rtcp_rr()))
    wire[-1] ^= 0x80
    assert b.unprotect_rtcp(bytes(wire)) is None
    assert b.unprotect_rtcp(a.protect_rtcp(rtcp_rr())[:-3]) is None
    assert b.unprotect(a.protect(rtp(5))[:-1]) is None
    assert b.stats.rejected == 3 and b.stats.unprotected == 0


def test_replayed_packet_is_rejected() -> None:
    a, b = pair()
    wire = a.protect(rtp(1))
    assert b.unprotect(wire) == rtp(1)
    assert b.unprotect(wire) is None
    assert b.stats == SrtpStats(unprotected=1, rejected_replay=1)


def test_packet_older_than_the_replay_window_is_rejected() -> None:
    a, b = pair()
    old = a.protect(rtp(1))
    for seq in range(2, 300):
        b.unprotect(a.protect(rtp(seq)))
    assert b.unprotect(old) is None
    assert b.stats.rejected_replay == 1


def test_wrong_key_is_rejected() -> None:
    a, _ = pair()
    stranger = SrtpSession(SrtpParams(S80, key("x"), key("not a")))
    assert stranger.unprotect(a.protect(rtp(1))) is None
    assert stranger.unprotect_rtcp(a.protect_rtcp(rtcp_rr())) is None
    assert stranger.stats.rejected_auth == 2


def test_suite_mismatch_is_rejected() -> None:
    sender = SrtpSession(SrtpParams(S80, key("a"), key("b")))
    receiver = SrtpSession(SrtpParams(S32, key("b"), key("a")))
    assert receiver.unprotect(sender.protect(rtp(1))) is None


@pytest.mark.parametrize(
    "garbage", [b"", b"\x80", bytes(11), bytes(12), b"\x80\x00" + bytes(30), b"\x80" * 1600, b"\x00" * 200]
)
def test_garbage_is_counted_not_raised(garbage: bytes) -> None:
    _, b = pair()
    assert b.unprotect(garbage) is None
    assert b.unprotect_rtcp(garbage) is None
    assert b.stats.rejected == 2 and b.stats.unprotected == 0


@given(st.binary(max_size=1600))
def test_fuzz_unprotect_never_raises(data: bytes) -> None:
    _, b = pair()
    assert b.unprotect(data) is None
    assert b.unprotect_rtcp(data) is None
    assert b.stats.rejected == 2


def test_protect_misuse_raises() -> None:
    a, _ = pair()
    a.protect(rtp(1))
    with pytest.raises(SrtpError, match="protect our RTP packet"):
        a.protect(rtp(1))  # same index again would reuse keystream
    with pytest.raises(SrtpError):
        a.protect(rtp(2, payload=bytes(1400)))  # beyond pylibsrtp's 1500-byte buffer
    with pytest.raises(SrtpError):
        a.protect(b"\x80\x00")
    assert a.stats.protected == 1


# --- re-keying ----------------------------------------------------------------------------------


def test_update_rebuilds_only_the_direction_whose_key_changed() -> None:
    a, b = pair()
    for seq in (1, 2, 3):
        b.unprotect(a.protect(rtp(seq)))
    # The peer re-keys its own direction: our outbound context must live on (same ROC and replay
    # state), which shows as refusing to protect index 3 a second time.
    a.update(SrtpParams(S80, key("a"), key("b2")))
    with pytest.raises(SrtpError):
        a.protect(rtp(3))
    assert b.unprotect(a.protect(rtp(4))) == rtp(4)
    b2 = SrtpSession(SrtpParams(S80, key("b2"), key("a")))
    assert a.unprotect(b2.protect(rtp(1))) == rtp(1)
    assert a.unprotect(b.protect(rtp(2))) is None  # the old key is gone
    # We re-key ours: a fresh outbound context, the peer follows with the new key.
    a.update(SrtpParams(S80, key("a2"), key("b2")))
    b2.update(SrtpParams(S80, key("b2"), key("a2")))
    assert b2.unprotect(a.protect(rtp(3))) == rtp(3)
    assert a.params == SrtpParams(S80, key("a2"), key("b2"))
    # Counters survive updates.
    assert a.stats.protected == 5


def test_update_with_equal_params_keeps_both_contexts() -> None:
    a, b = pair()
    wire = a.protect(rtp(1))
    assert b.unprotect(wire) is not None
    b.update(SrtpParams(S80, key("b"), key("a")))
    assert b.unprotect(wire) is None  # replay window kept
    assert b.stats.rejected_replay == 1


# --- interop through the SDP line ---------------------------------------------------------------


def test_interop_through_a_serialized_crypto_line() -> None:
    ours = CryptoAttribute.generate(1, S32, lambda n: key("generated")[:n])
    theirs = CryptoAttribute.generate(1, S32, lambda n: key("peer")[:n])
    # Each side only ever sees the other's line as SDP text.
    a = SrtpSession(SrtpParams(S32, ours.key_salt, CryptoAttribute.parse(str(theirs)).key_salt))
    b = SrtpSession(SrtpParams(S32, theirs.key_salt, CryptoAttribute.parse(str(ours)).key_salt))
    assert b.unprotect(a.protect(rtp(9))) == rtp(9)
    assert a.unprotect_rtcp(b.protect_rtcp(rtcp_rr(7))) == rtcp_rr(7)


# --- CryptoAttribute ----------------------------------------------------------------------------

RFC_KEY = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"  # RFC 4568 §4's example key||salt


class TestCryptoAttributeParse:
    def test_twilio_lines(self) -> None:
        one = CryptoAttribute.parse(f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}")
        two = CryptoAttribute.parse(f"2 AES_CM_128_HMAC_SHA1_32 inline:{RFC_KEY}")
        assert (one.tag, one.suite, one.lifetime, one.session_params) == (1, S80, None, ())
        assert (two.tag, two.suite) == (2, S32)
        assert one.key_salt == base64.b64decode(RFC_KEY) and len(one.key_salt) == 30
        assert str(one) == f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}"

    @pytest.mark.parametrize(
        ("lifetime", "packets", "written"),
        [
            ("2^20", 1 << 20, "2^20"),
            ("2^31", 1 << 31, "2^31"),
            ("1048576", 1 << 20, "2^20"),
            ("1000", 1000, "1000"),
        ],
    )
    def test_lifetime(self, lifetime: str, packets: int, written: str) -> None:
        attribute = CryptoAttribute.parse(f"5 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|{lifetime}")
        assert attribute.lifetime == packets
        assert str(attribute) == f"5 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|{written}"

    def test_ignorable_session_params_are_kept(self) -> None:
        value = f"3 aes_cm_128_hmac_sha1_80 inline:{RFC_KEY} WSH=128 KDR=0 -X-VENDOR=1"
        attribute = CryptoAttribute.parse(value)
        assert attribute.suite is S80  # ABNF literals are case-insensitive
        assert attribute.session_params == ("WSH=128", "KDR=0", "-X-VENDOR=1")
        assert str(attribute) == f"3 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} WSH=128 KDR=0 -X-VENDOR=1"

    def test_tabs_and_repeated_spaces(self) -> None:
        assert CryptoAttribute.parse(f"7 \tAES_CM_128_HMAC_SHA1_32   inline:{RFC_KEY} ").tag == 7

    @pytest.mark.parametrize(
        ("value", "message"),
        [
            ("", "has 0 field(s), not '<tag> <suite> inline:<key||salt>'"),
            ("1 AES_CM_128_HMAC_SHA1_80", "has 2 field(s)"),
            (RFC_KEY, "has 1 field(s)"),
            (f"x AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}", "tag 'x' is not 1-9 digits"),
            (f"1234567890 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}", "is not 1-9 digits"),
            (
                f"1 AES_256_CM_HMAC_SHA1_80 inline:{RFC_KEY}",
                "crypto suite 'AES_256_CM_HMAC_SHA1_80' is not supp",
            ),
            (
                f"1 F8_128_HMAC_SHA1_80 inline:{RFC_KEY}",
                "is not supported (we support AES_CM_128_HMAC_SHA1_80",
            ),
            (f"1 AEAD_AES_128_GCM inline:{RFC_KEY}", "crypto suite 'AEAD_AES_128_GCM' is not supported"),
            (f"1 AES_CM_128_HMAC_SHA1_80 uri:{RFC_KEY}", "key method 'uri' is not supported"),
            (f"1 AES_CM_128_HMAC_SHA1_80 {RFC_KEY}", "key parameter is not inline:"),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:not*base64", "is not base64"),
            ("1 AES_CM_128_HMAC_SHA1_80 inline:QUJD", "needs a 30-byte key||salt, the line has 3 bytes"),
            (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}QUJD", "the line has 33 bytes"),
            (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|1:4", "MKI"),
            (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|1:4", "MKI"),
            (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|1:4;inline:{RFC_KEY}|2:4", "several master keys"),
            (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^20|2^20", "more '|' fields"),
            (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|2^49", "outside 1..2^48"),
            (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|0", "outside 1..2^48"),
            (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}|forever", "neither a number nor 2^<n>"),
            (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} UNENCRYPTED_SRTP", "UNENCRYPTED_SRTP is not supp"),
            (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} UNAUTHENTICATED_SRTP", "not supported"),
            (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} FEC_ORDER=FEC_SRTP", "FEC_ORDER is not supported"),
            (
                f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} KDR=10",
                "key derivation rate 'KDR=10' is not supported",
            ),
            (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} FOO=1", "unknown mandatory session parameter"),
            (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} WSH=²", "unknown mandatory session parameter"),
            (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} KDR=٠", "only KDR=0"),
            # Mangled lines with the key out of place: it must not leak into the message.
            (f"1 {RFC_KEY} inline:{RFC_KEY}", "crypto suite <a 40-character token> is not supported"),
            (f"{RFC_KEY} AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}", "crypto tag <a 40-character token>"),
            (f"1 AES_CM_128_HMAC_SHA1_80 {RFC_KEY}:x", "key method <a 40-character token> is not"),
            (f"1 AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY} {RFC_KEY}", "parameter <a 40-character token>"),
            (f"١ AES_CM_128_HMAC_SHA1_80 inline:{RFC_KEY}", "is not 1-9 digits"),
        ],
    )
    def test_unusable_lines(self, value: str, message: str) -> None:
        with pytest.raises(CryptoAttributeError) as info:
            CryptoAttribute.parse(value)
        assert message in str(info.value)
        assert isinstance(info.value, ValueError)
        assert RFC_KEY not in str(info.value)  # error messages end up in logs and reason phrases

    @given(st.text(max_size=120))
    def test_fuzz_parse_raises_only_crypto_attribute_error(self, value: str) -> None:
        try:
            attribute = CryptoAttribute.parse(value)
        except CryptoAttributeError:
            return
        assert CryptoAttribute.parse(str(attribute)) == attribute

    @given(
        st.integers(0, 999_999_999),
        st.sampled_from(list(CryptoSuite)),
        st.binary(min_size=30, max_size=30),
        st.one_of(st.none(), st.integers(1, 1 << 48)),
    )
    def test_serialize_parse_round_trip(
        self, tag: int, suite: CryptoSuite, key_salt: bytes, lifetime: int | None
    ) -> None:
        attribute = CryptoAttribute(tag, suite, key_salt, lifetime)
        assert CryptoAttribute.parse(str(attribute)) == attribute


class TestCryptoAttributeGenerate:
    def test_uses_the_injected_rng(self) -> None:
        calls: list[int] = []

        def rng(n: int) -> bytes:
            calls.append(n)
            return key("rng")[:n]

        attribute = CryptoAttribute.generate(2, "AES_CM_128_HMAC_SHA1_32", rng)
        assert calls == [30]
        assert (attribute.tag, attribute.suite, attribute.key_salt) == (2, S32, key("rng"))
        assert str(attribute).startswith("2 AES_CM_128_HMAC_SHA1_32 inline:")

    def test_short_rng_output_is_refused(self) -> None:
        with pytest.raises(CryptoAttributeError, match="returned 16 bytes"):
            CryptoAttribute.generate(1, S80, lambda n: bytes(16))

    def test_validation(self) -> None:
        with pytest.raises(CryptoAttributeError, match="30-byte"):
            CryptoAttribute(1, S80, bytes(16))
        with pytest.raises(CryptoAttributeError, match="1-9 digits"):
            CryptoAttribute(-1, S80, bytes(30))
        with pytest.raises(CryptoAttributeError, match="suite 'AES_256"):
            CryptoAttribute.generate(1, "AES_256_CM_HMAC_SHA1_80", lambda n: bytes(n))
        with pytest.raises(CryptoAttributeError):
            SrtpParams(S80, bytes(30), bytes(29))
        with pytest.raises(dataclasses.FrozenInstanceError):
            CryptoAttribute(1, S80, bytes(30)).tag = 2  # type: ignore[misc]


def test_keys_never_appear_in_repr() -> None:
    secret = key("secret")
    other = key("other")
    attribute = CryptoAttribute(1, S80, secret)
    params = SrtpParams(S80, secret, other)
    session = SrtpSession(params)
    forms = [secret.hex(), other.hex(), base64.b64encode(secret).decode(), repr(secret), repr(other)]
    for text in (repr(attribute), repr(params), repr(session), str(session), repr(session.stats)):
        assert not any(form in text for form in forms), text
    assert "AES_CM_128_HMAC_SHA1_80" in repr(session)
    # The wire form is the one place the key goes, by design.
    assert base64.b64encode(secret).decode() in str(attribute)
