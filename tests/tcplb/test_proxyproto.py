"""tcplb.proxyproto: PROXY v1/v2 encoders against the spec's bytes and an independent decoder.

Golden vectors come from HAProxy's doc/proxy-protocol.txt (§2.1 the v1 example line and the maximum line
lengths, §2.2 the signature, the version/command and family bytes, the 12/36-byte address blocks) and the
worked example in ../shared/reference/rabbitmq-aware.md §4 (written by hand from the spec). The decoder below
is written from the spec's prose with byte slicing and int.from_bytes, not from the encoder's struct formats.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcplb import proxyproto as pp


@dataclass(frozen=True)
class Decoded:
    version: int
    command: str  # "PROXY" | "LOCAL" | "UNKNOWN"
    family: str | None  # "TCP4" | "TCP6" | None
    src: tuple[str, int] | None
    dst: tuple[str, int] | None
    length: int  # bytes the header occupied


class Bad(Exception):
    pass


_V1 = re.compile(
    rb"PROXY (?:(TCP4|TCP6) ([0-9a-fA-F.:]+) ([0-9a-fA-F.:]+) (0|[1-9][0-9]{0,4}) (0|[1-9][0-9]{0,4})"
    rb"|UNKNOWN[^\r\n]*)\r\n"
)


def _v1_addr(text: str, family: str) -> str:
    if family == "TCP4":
        parts = text.split(".")
        # "exactly 4 integers in the range [0..255] ... Heading zeroes are not permitted"
        if len(parts) != 4 or any(
            not p.isdigit() or (len(p) > 1 and p[0] == "0") or int(p) > 255 for p in parts
        ):
            raise Bad(f"bad IPv4 {text}")
        return text
    if "." in text:
        raise Bad(f"bad IPv6 {text}")
    return str(ipaddress.IPv6Address(text))


def decode(data: bytes) -> Decoded:
    """An independent receiver per proxy-protocol.txt §2.1/§2.2 ("identifying the protocol version")."""
    sig = bytes([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A])
    if len(data) >= 16 and data[:12] == sig:
        ver, cmd = data[12] >> 4, data[12] & 0x0F
        if ver != 2:
            raise Bad("version")
        fam, proto = data[13] >> 4, data[13] & 0x0F
        n = int.from_bytes(data[14:16], "big")
        block = data[16 : 16 + n]
        if len(block) != n:
            raise Bad("partial")
        if cmd == 0:
            return Decoded(2, "LOCAL", None, None, None, 16 + n)
        if cmd != 1:
            raise Bad("command")
        if proto != 1:
            raise Bad("transport")
        if fam == 1 and n >= 12:
            s = str(ipaddress.IPv4Address(block[0:4]))
            d = str(ipaddress.IPv4Address(block[4:8]))
            sp, dp = int.from_bytes(block[8:10], "big"), int.from_bytes(block[10:12], "big")
            return Decoded(2, "PROXY", "TCP4", (s, sp), (d, dp), 16 + n)
        if fam == 2 and n >= 36:
            s = str(ipaddress.IPv6Address(block[0:16]))
            d = str(ipaddress.IPv6Address(block[16:32]))
            sp, dp = int.from_bytes(block[32:34], "big"), int.from_bytes(block[34:36], "big")
            return Decoded(2, "PROXY", "TCP6", (s, sp), (d, dp), 16 + n)
        raise Bad("family")
    if len(data) >= 8 and data[:5] == b"PROXY":
        end = data.find(b"\r\n")
        if end < 0 or end + 2 > 107:
            raise Bad("no CRLF in the first 107 bytes")
        m = _V1.fullmatch(data[: end + 2])
        if m is None:
            raise Bad(f"v1 line {data[: end + 2]!r}")
        if m.group(1) is None:
            return Decoded(1, "UNKNOWN", None, None, None, end + 2)
        family = m.group(1).decode()
        s = _v1_addr(m.group(2).decode(), family)
        d = _v1_addr(m.group(3).decode(), family)
        sp, dp = int(m.group(4)), int(m.group(5))
        if sp > 65535 or dp > 65535:
            raise Bad("port")
        return Decoded(1, "PROXY", family, (s, sp), (d, dp), end + 2)
    raise Bad("not a PROXY header")


# --- golden bytes -------------------------------------------------------------------------------------------


def test_v1_spec_example_line() -> None:
    # proxy-protocol.txt §2.1: "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
    assert (
        pp.v1(("192.168.0.1", 56324), ("192.168.0.11", 443))
        == b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
    )


def test_v1_maximum_lengths_from_the_spec() -> None:
    line4 = pp.v1(("255.255.255.255", 65535), ("255.255.255.255", 65535))
    assert line4 == b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"
    assert len(line4) == 56  # "=> ... = 56 chars"
    full6 = "ffff:" * 7 + "ffff"
    line6 = pp.v1((full6, 65535), (full6, 65535))
    assert line6 == f"PROXY TCP6 {full6} {full6} 65535 65535\r\n".encode()
    assert len(line6) == 104  # "=> ... = 104 chars"
    assert pp.v1_unknown() == b"PROXY UNKNOWN\r\n"
    assert len(pp.v1_unknown()) == 15


def test_v2_worked_example_ipv4() -> None:
    # rabbitmq-aware.md §4: client 198.51.100.7:40000 -> 192.0.2.100:5672, 28 bytes
    expected = bytes.fromhex("0d0a0d0a000d0a515549540a2111000cc6336407c00002649c401628")
    assert pp.v2(("198.51.100.7", 40000), ("192.0.2.100", 5672)) == expected
    assert pp.header("v2", ("198.51.100.7", 40000), ("192.0.2.100", 5672)) == expected
    assert pp.header("v1", ("198.51.100.7", 40000), ("192.0.2.100", 5672)) == (
        b"PROXY TCP4 198.51.100.7 192.0.2.100 40000 5672\r\n"
    )
    assert len(pp.v1(("198.51.100.7", 40000), ("192.0.2.100", 5672))) == 48


def test_v2_local_is_16_bytes_unspec_length_zero() -> None:
    assert pp.v2_local() == bytes.fromhex("0d0a0d0a000d0a515549540a20000000")
    assert pp.V2_SIGNATURE == b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"


def test_v2_ipv6_block_is_36_bytes() -> None:
    h = pp.v2(("2001:db8::7", 40000), ("2001:db8::100", 5672))
    assert h[12:16] == bytes([0x21, 0x21, 0x00, 0x24])  # v2 PROXY, AF_INET6 STREAM, 36
    assert len(h) == 16 + 36
    assert h[16:32] == bytes.fromhex("20010db8000000000000000000000007")
    assert h[32:48] == bytes.fromhex("20010db8000000000000000000000100")
    assert h[48:] == bytes.fromhex("9c401628")


def test_ipv4_mapped_and_scoped_addresses() -> None:
    # a dual-stack listener reports ::ffff:a.b.c.d; RabbitMQ prints such addresses as IPv4
    assert pp.v1(("::ffff:198.51.100.7", 40000, 0, 0), ("::ffff:192.0.2.100", 5672, 0, 0)) == (
        b"PROXY TCP4 198.51.100.7 192.0.2.100 40000 5672\r\n"
    )
    assert pp.v2(("::ffff:198.51.100.7", 1), ("192.0.2.100", 2))[13] == 0x11
    assert (
        pp.v1(("fe80::1%eth0", 1, 0, 2), (ipaddress.IPv6Address("fe80::2"), 2))
        == b"PROXY TCP6 fe80::1 fe80::2 1 2\r\n"
    )


def test_for_check_is_a_proxy_command_never_local() -> None:
    versions: list[pp.Version] = ["v1", "v2"]
    for version in versions:
        h = pp.for_check(version, ("192.0.2.21", 51234), ("192.0.2.11", 5672))
        d = decode(h)
        assert d.command == "PROXY" and d.src == ("192.0.2.21", 51234) and d.dst == ("192.0.2.11", 5672)


@pytest.mark.parametrize(
    ("src", "dst", "words"),
    [
        (("192.0.2.1", 1), ("2001:db8::1", 2), "different address families"),
        (("192.0.2.1", 65536), ("192.0.2.2", 2), "port must be"),
        (("192.0.2.1", -1), ("192.0.2.2", 2), "port must be"),
        (("192.0.2.1", True), ("192.0.2.2", 2), "port must be"),
        (("example.org", 1), ("192.0.2.2", 2), "not an IP address"),
        (("192.0.2.1",), ("192.0.2.2", 2), "expected (host, port)"),
        ("192.0.2.1:1", ("192.0.2.2", 2), "expected (host, port)"),
        ((b"\xc0\x00\x02\x01", 1), ("192.0.2.2", 2), "not an IP address"),
    ],
)
def test_bad_local_input_is_a_clear_error(src: object, dst: object, words: str) -> None:
    for enc in (pp.v1, pp.v2):
        with pytest.raises(pp.ProxyProtocolError, match=re.escape(words)):
            enc(src, dst)  # type: ignore[arg-type]


def test_unknown_version_is_an_error() -> None:
    with pytest.raises(pp.ProxyProtocolError, match="v3"):
        pp.header("v3", ("192.0.2.1", 1), ("192.0.2.2", 2))  # type: ignore[arg-type]


# --- round trips through the independent decoder ----------------------------------------------------------

ports = st.integers(0, 65535)
v4 = st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1))
v6 = st.builds(ipaddress.IPv6Address, st.integers(0, 2**128 - 1)).filter(lambda a: a.ipv4_mapped is None)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(st.tuples(v4, v4), st.tuples(v6, v6)),
    ports,
    ports,
    st.sampled_from(["v1", "v2"]),
    st.binary(max_size=20),
)
def test_round_trip(
    addrs: tuple[pp.IP, pp.IP], sport: int, dport: int, version: pp.Version, payload: bytes
) -> None:
    s, d = addrs
    for src, dst in ((s, d), (str(s), str(d))):
        h = pp.header(version, (src, sport), (dst, dport))
        got = decode(h + payload)  # the header is self-delimiting: the client's bytes follow it
        assert got.length == len(h)
        assert got.version == (1 if version == "v1" else 2)
        assert got.command == "PROXY"
        assert got.family == ("TCP4" if s.version == 4 else "TCP6")
        assert got.src == (str(s), sport) and got.dst == (str(d), dport)
        assert (
            len(h) <= pp.V1_MAX_LENGTH if version == "v1" else len(h) == 16 + (12 if s.version == 4 else 36)
        )


@settings(max_examples=100, deadline=None)
@given(v4, ports)
def test_mapped_equals_plain_ipv4(a: ipaddress.IPv4Address, port: int) -> None:
    mapped = ipaddress.IPv6Address(b"\x00" * 10 + b"\xff\xff" + a.packed)
    for enc in (pp.v1, pp.v2):
        assert enc((mapped, port), (a, port)) == enc((a, port), (a, port))
