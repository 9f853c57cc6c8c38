"""vrrpd.wire's VRRPv3 codec (IPv4 and IPv6) and unsolicited NAs against keepalived 2.2.7 captures, the
reference's worked examples, an independent checksum and scapy's VRRPv3 layer (both directions)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

import pytest
from golden import CAPTURED_NAS, CAPTURED_V3, REFERENCE_V3, V3Frame, inet_checksum, pseudo4, pseudo6
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6NDOptDstLLAddr, IPv6
from scapy.layers.l2 import Ether
from scapy.layers.vrrp import VRRPv3

from vrrpd import wire
from vrrpd.wire import Reason

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
V4 = [f for f in CAPTURED_V3 if f.family == 4]
V6 = [f for f in CAPTURED_V3 if f.family == 6]


def _ip(a: str) -> wire.IPAddress:
    return ip_address(a)


def expected(f: V3Frame) -> wire.AdvertV3:
    addrs: tuple[IPv4Address, ...] | tuple[IPv6Address, ...]
    if f.family == 4:
        addrs = tuple(IPv4Address(a) for a in f.addresses)
    else:
        addrs = tuple(IPv6Address(a) for a in f.addresses)
    return wire.AdvertV3(f.vrid, f.priority, f.max_advert_int, addrs, f.family)


def _v6_header(f: V3Frame) -> tuple[IPv6Address, IPv6Address, int]:
    hdr = f.raw[14 : 14 + 40]
    return IPv6Address(hdr[8:24]), IPv6Address(hdr[24:40]), hdr[7]


# ------------------------------------------------------------------------------------------- golden frames


@pytest.mark.parametrize("f", V4, ids=lambda f: f.note)
def test_keepalived_v4_frames_decode(f: V3Frame) -> None:
    for decoder in (wire.decode_ip_v3, wire.decode_ip_any):
        pkt = decoder(f.l3)
        assert isinstance(pkt, wire.PacketV3)
        assert pkt.advert == expected(f)
        assert (pkt.src, pkt.dst, pkt.ttl) == (_ip(f.src), _ip(f.dst), 255)
        assert pkt.checksum_as_v2 is False  # keepalived 2.2.7: pseudo-header form, no switch
    assert wire.decode_ip_v3(f.l3, checksum_as_v2=False).advert == expected(f)


@pytest.mark.parametrize("f", V4, ids=lambda f: f.note)
def test_keepalived_v4_frames_reencode_byte_exact(f: V3Frame) -> None:
    """The whole IPv4 datagram: header as for v2 and the pseudo-header checksum keepalived 2.2.7 sends, with
    the unicast peer (not the group) in the pseudo-header when unicasting."""
    src, dst = IPv4Address(f.src), IPv4Address(f.dst)
    assert wire.encode_ip_v3(src, dst, expected(f), ident=f.ip_id) == f.l3


@pytest.mark.parametrize("f", V4, ids=lambda f: f.note)
def test_keepalived_v4_frames_fail_the_message_only_form(f: V3Frame) -> None:
    """An instance set to ``v3_checksum_as_v2`` and strict about it rejects keepalived 2.2.7's adverts, as
    keepalived 2.2.8 with that option would: the reason the default must stay the pseudo-header form."""
    with pytest.raises(wire.DecodeError) as exc:
        wire.decode_ip_v3(f.l3, checksum_as_v2=True)
    assert exc.value.reason is Reason.CHECKSUM and exc.value.vrid == f.vrid


@pytest.mark.parametrize("f", V6, ids=lambda f: f.note)
def test_keepalived_v6_frames_decode_and_reencode(f: V3Frame) -> None:
    src, dst, hlim = _v6_header(f)
    assert (str(src), str(dst), hlim) == (f.src, f.dst, 255)
    pkt = wire.decode_ipv6(f.l3, src=src, dst=dst, hop_limit=hlim)
    assert pkt.advert == expected(f)
    assert (pkt.src, pkt.dst, pkt.ttl, pkt.checksum_as_v2) == (src, dst, 255, False)
    assert wire.encode_v3(expected(f), src, dst) == f.l3
    # the message-only switch does not apply to IPv6 (keepalived 2.2.8 and RFC 9568 alike)
    assert wire.encode_v3(expected(f), src, dst, checksum_as_v2=True) == f.l3


@pytest.mark.parametrize("f", CAPTURED_V3, ids=lambda f: f.note)
def test_keepalived_frames_verify_with_an_independent_checksum(f: V3Frame) -> None:
    msg = f.l3[20:] if f.family == 4 else f.l3
    ph = (pseudo4 if f.family == 4 else pseudo6)(f.src, f.dst, len(msg))
    assert inet_checksum(ph + msg) == 0
    if f.family == 4:
        assert inet_checksum(msg) != 0  # not the message-only form


@pytest.mark.parametrize("f", CAPTURED_V3, ids=lambda f: f.note)
def test_keepalived_frames_agree_with_scapy(f: V3Frame) -> None:
    frame = Ether(f.raw)
    layer = frame[VRRPv3]
    adv = expected(f)
    assert (layer.version, layer.type, layer.res) == (3, 1, 0)
    assert (layer.vrid, layer.priority, layer.adv, layer.ipcount) == (
        adv.vrid,
        adv.priority,
        adv.max_advert_int,
        len(adv.addresses),
    )
    assert [ip_address(a) for a in layer.addrlist] == list(adv.addresses)
    # scapy recomputes the checksum itself (over its own pseudo-header) when the field is cleared
    clone = frame.copy()
    clone[VRRPv3].chksum = None
    assert bytes(clone) == f.raw


@pytest.mark.parametrize(
    ("msg_hex", "src", "dst", "as_v2", "note"), REFERENCE_V3, ids=[r[4] for r in REFERENCE_V3]
)
def test_reference_examples(msg_hex: str, src: str, dst: str, as_v2: bool, note: str) -> None:
    msg = bytes.fromhex(msg_hex)
    s, d = _ip(src), _ip(dst)
    adv = wire.decode_v3(msg, s, d, checksum_as_v2=as_v2)
    assert wire.encode_v3(adv, s, d, checksum_as_v2=as_v2) == msg
    assert wire.decode_v3(msg, s, d) == adv  # "accept either form" takes it too
    if isinstance(s, IPv4Address) and "unused" not in note:
        with pytest.raises(wire.DecodeError) as exc:
            wire.decode_v3(msg, s, d, checksum_as_v2=not as_v2)
        assert exc.value.reason is Reason.CHECKSUM


def test_accept_either_form_reports_which_arrived() -> None:
    adv = wire.AdvertV3(51, 100, 100, (IPv4Address("192.0.2.100"),))
    src = IPv4Address("192.0.2.21")
    for as_v2 in (False, True):
        dgram = wire.encode_ip_v3(src, wire.VRRP_GROUP, adv, checksum_as_v2=as_v2)
        pkt = wire.decode_ip_v3(dgram)
        assert (pkt.advert, pkt.checksum_as_v2) == (adv, as_v2)
        assert wire.decode_ip_v3(dgram, checksum_as_v2=as_v2).checksum_as_v2 is as_v2


@pytest.mark.parametrize(("hexframe", "mac", "vip"), CAPTURED_NAS)
def test_na_frame_matches_keepalived(hexframe: str, mac: str, vip: str) -> None:
    raw = bytes.fromhex(hexframe)
    assert wire.na_frame(bytes.fromhex(mac.replace(":", "")), IPv6Address(vip)) == raw
    frame = Ether(raw)
    na = frame[ICMPv6ND_NA]
    assert (na.R, na.S, na.O, na.tgt) == (0, 0, 1, vip)
    assert frame[ICMPv6NDOptDstLLAddr].lladdr == mac
    assert (frame[IPv6].src, frame[IPv6].dst, frame[IPv6].hlim) == (vip, "ff02::1", 255)
    clone = frame.copy()
    clone[ICMPv6ND_NA].cksum = None
    assert bytes(clone) == raw


@SETTINGS
@given(
    st.binary(min_size=6, max_size=6),
    st.integers(0, 2**128 - 1).map(IPv6Address),
    st.booleans(),
    st.booleans(),
)
def test_na_frame_agrees_with_scapy(mac: bytes, vip: IPv6Address, router: bool, override: bool) -> None:
    mac_s = ":".join(f"{b:02x}" for b in mac)
    built = (
        Ether(dst="33:33:00:00:00:01", src=mac_s)
        / IPv6(src=str(vip), dst="ff02::1", hlim=255)
        / ICMPv6ND_NA(R=int(router), S=0, O=int(override), tgt=str(vip))
        / ICMPv6NDOptDstLLAddr(lladdr=mac_s)
    )
    assert wire.na_frame(mac, vip, router=router, override=override) == bytes(built)


def test_virtual_mac6() -> None:
    assert wire.virtual_mac6(62) == bytes.fromhex("00005e00023e")
    with pytest.raises(ValueError):
        wire.virtual_mac6(0)


# ------------------------------------------------------------------------------------ structural rejections

SRC4, SRC6 = IPv4Address("192.0.2.21"), IPv6Address("fe80::1")


def _msg6(**kw: Any) -> bytes:
    base: dict[str, Any] = {"vrid": 62, "priority": 100, "max_advert_int": 10, "family": 6}
    base["addresses"] = (IPv6Address("2001:db8::120"),)
    base.update(kw)
    return wire.encode_v3(wire.AdvertV3(**base), SRC6, wire.VRRP_GROUP6)


def _reason6(msg: bytes) -> Reason:
    with pytest.raises(wire.DecodeError) as exc:
        wire.decode_v3(msg, SRC6, wire.VRRP_GROUP6)
    return exc.value.reason


def _fix6(msg: bytes) -> bytes:
    msg = msg[:6] + b"\0\0" + msg[8:]
    return (
        msg[:6] + inet_checksum(pseudo6(str(SRC6), "ff02::12", len(msg)) + msg).to_bytes(2, "big") + msg[8:]
    )


def test_structural_reasons_v3() -> None:
    good = _msg6()
    assert wire.decode_v3(good, SRC6, wire.VRRP_GROUP6).vrid == 62
    assert _reason6(good[:7]) is Reason.LENGTH
    assert _reason6(good[:-1]) is Reason.LENGTH
    assert _reason6(good + b"\0" * 4) is Reason.LENGTH  # an IPv4-sized tail does not make it valid
    assert _reason6(_fix6(good[:3] + b"\x02" + good[4:])) is Reason.LENGTH  # count 2, one address
    assert _reason6(_fix6(b"\x21" + good[1:])) is Reason.VERSION  # a v2 advert on the v3 path
    assert _reason6(_fix6(b"\x32" + good[1:])) is Reason.TYPE
    assert _reason6(good[:6] + bytes([good[6] ^ 0x80]) + good[7:]) is Reason.CHECKSUM
    assert _reason6(_fix6(good[:1] + b"\0" + good[2:])) is Reason.VRID
    # the wrong pseudo-header source is a checksum error (what a spoofed or rewritten source looks like)
    with pytest.raises(wire.DecodeError) as exc:
        wire.decode_v3(good, IPv6Address("fe80::2"), wire.VRRP_GROUP6)
    assert exc.value.reason is Reason.CHECKSUM and exc.value.vrid == 62


def test_reserved_bits_ignored_and_interval_masked() -> None:
    good = _msg6(max_advert_int=0xFFF)
    noisy = _fix6(good[:4] + bytes([good[4] | 0xF0]) + good[5:])
    adv = wire.decode_v3(noisy, SRC6, wire.VRRP_GROUP6)
    assert adv.max_advert_int == 4095
    assert wire.encode_v3(adv, SRC6, wire.VRRP_GROUP6) == good  # sent with the reserved bits zero


def test_v2_decoders_still_reject_v3_and_dispatch_works() -> None:
    v3 = wire.encode_ip_v3(SRC4, wire.VRRP_GROUP, wire.AdvertV3(51, 100, 100, (IPv4Address("192.0.2.100"),)))
    with pytest.raises(wire.DecodeError) as exc:
        wire.decode_ip(v3)
    assert exc.value.reason is Reason.VERSION
    v2 = wire.encode_ip(SRC4, wire.VRRP_GROUP, wire.Advert(51, 100, 1, (IPv4Address("192.0.2.100"),)))
    assert isinstance(wire.decode_ip_any(v2), wire.Packet)
    assert isinstance(wire.decode_ip_any(v3), wire.PacketV3)
    with pytest.raises(wire.DecodeError) as exc:
        wire.decode_ip_v3(v2)
    assert exc.value.reason is Reason.VERSION


def test_advert_v3_rejects_misuse() -> None:
    with pytest.raises(ValueError, match="max_advert_int"):
        wire.AdvertV3(1, 100, 4096, ())
    with pytest.raises(ValueError, match="IPv6Address"):
        wire.AdvertV3(1, 100, 100, (IPv4Address("192.0.2.1"),), family=6)
    with pytest.raises(ValueError, match="IPv4Address"):
        wire.AdvertV3(1, 100, 100, (IPv6Address("::1"),))
    with pytest.raises(ValueError, match="family"):
        wire.AdvertV3(1, 100, 100, (), family=5)
    adv4 = wire.AdvertV3(1, 100, 100, ())
    with pytest.raises(ValueError, match="IPv4 advert"):
        wire.encode_v3(adv4, SRC6, wire.VRRP_GROUP6)
    with pytest.raises(ValueError, match="one address family"):
        wire.encode_v3(adv4, SRC4, wire.VRRP_GROUP6)


# ------------------------------------------------------------------------------------------------ hypothesis

v4_addrs = st.lists(st.integers(0, 2**32 - 1).map(IPv4Address), max_size=12).map(tuple)
v6_addrs = st.lists(st.integers(0, 2**128 - 1).map(IPv6Address), max_size=8).map(tuple)
common: dict[str, Any] = {"vrid": st.integers(1, 255), "priority": st.integers(0, 255)}
adverts4 = st.builds(wire.AdvertV3, max_advert_int=st.integers(0, 4095), addresses=v4_addrs, **common)
adverts6 = st.builds(
    wire.AdvertV3, max_advert_int=st.integers(0, 4095), addresses=v6_addrs, family=st.just(6), **common
)
ip4 = st.integers(0, 2**32 - 1).map(IPv4Address)
ip6 = st.integers(0, 2**128 - 1).map(IPv6Address)


@st.composite
def sent(draw: st.DrawFn) -> tuple[wire.AdvertV3, wire.IPAddress, wire.IPAddress, bool]:
    """An advert with the addresses of its IP header and a checksum form."""
    if draw(st.booleans()):
        return draw(adverts4), draw(ip4), draw(ip4), draw(st.booleans())
    return draw(adverts6), draw(ip6), draw(ip6), False


@SETTINGS
@given(sent())
def test_round_trip_v3(case: tuple[wire.AdvertV3, wire.IPAddress, wire.IPAddress, bool]) -> None:
    adv, src, dst, as_v2 = case
    raw = wire.encode_v3(adv, src, dst, checksum_as_v2=as_v2)
    assert len(raw) == wire.message_length_v3(len(adv.addresses), adv.family)
    assert wire.decode_v3(raw, src, dst, checksum_as_v2=as_v2) == adv
    assert wire.decode_v3(raw, src, dst) == adv
    # independently: the form that was asked for verifies with a checksum written apart from vrrpd
    if adv.family == 4:
        ph = b"" if as_v2 else pseudo4(str(src), str(dst), len(raw))
    else:
        ph = pseudo6(str(src), str(dst), len(raw))
    assert inet_checksum(ph + raw) == 0


@SETTINGS
@given(adverts4, ip4, ip4, st.integers(0, 65535), st.booleans())
def test_ip_round_trip_v3(
    adv: wire.AdvertV3, src: IPv4Address, dst: IPv4Address, ident: int, as_v2: bool
) -> None:
    pkt = wire.decode_ip_v3(
        wire.encode_ip_v3(src, dst, adv, ident, checksum_as_v2=as_v2), checksum_as_v2=as_v2
    )
    assert pkt == wire.PacketV3(src, dst, 255, adv, as_v2)


@SETTINGS
@given(st.data())
def test_scapy_built_packets_decode_v3(data: st.DataObject) -> None:
    """scapy builds the packet with its own pseudo-header checksum; vrrpd decodes the same fields."""
    if data.draw(st.booleans()):
        adv, src, dst = data.draw(adverts4), data.draw(ip4), data.draw(ip4)
        ttl = data.draw(st.integers(0, 255))
        built = IP(src=str(src), dst=str(dst), ttl=ttl, tos=0xC0) / VRRPv3(
            vrid=adv.vrid,
            priority=adv.priority,
            adv=adv.max_advert_int,
            addrlist=[str(a) for a in adv.addresses],
        )
        pkt = wire.decode_ip_v3(bytes(built), checksum_as_v2=False)
        assert (pkt.advert, pkt.src, pkt.dst, pkt.ttl) == (adv, src, dst, ttl)
    else:
        adv, src, dst = data.draw(adverts6), data.draw(ip6), data.draw(ip6)
        built6 = IPv6(src=str(src), dst=str(dst), hlim=255) / VRRPv3(
            vrid=adv.vrid,
            priority=adv.priority,
            adv=adv.max_advert_int,
            addrlist=[str(a) for a in adv.addresses],
        )
        pkt = wire.decode_ipv6(bytes(built6)[40:], src=src, dst=dst, hop_limit=255)
        assert pkt.advert == adv


@SETTINGS
@given(sent())
def test_scapy_parses_our_encoding_v3(
    case: tuple[wire.AdvertV3, wire.IPAddress, wire.IPAddress, bool],
) -> None:
    adv, src, dst, _ = case
    assume(adv.addresses)  # scapy dispatches an 8-byte message to its v2 layer (RFC 5798: count >= 1)
    raw = wire.encode_v3(adv, src, dst)
    under = IP(src=str(src), dst=str(dst)) if adv.family == 4 else IPv6(src=str(src), dst=str(dst))
    frame = under.__class__(bytes(under / VRRPv3(raw)))  # parse through the IP layer: scapy picks the family
    layer = frame[VRRPv3]
    assert (layer.vrid, layer.priority, layer.adv, layer.ipcount) == (
        adv.vrid,
        adv.priority,
        adv.max_advert_int,
        len(adv.addresses),
    )
    assert [ip_address(a) for a in layer.addrlist] == list(adv.addresses)
    clone = frame.copy()
    clone[VRRPv3].chksum = None  # scapy's own pseudo-header checksum
    assert bytes(clone[VRRPv3]) == raw


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80), st.sampled_from([None, False, True]), st.booleans())
def test_any_bytes_decode_v3_or_decode_error(data: bytes, mode: bool | None, v6: bool) -> None:
    src, dst = (SRC6, wire.VRRP_GROUP6) if v6 else (SRC4, wire.VRRP_GROUP)
    calls = [
        lambda: wire.decode_v3(data, src, dst, checksum_as_v2=mode),
        lambda: wire.decode_ip_v3(data, checksum_as_v2=mode),
        lambda: wire.decode_ip_any(data, checksum_as_v2=mode),
        lambda: wire.decode_ipv6(data, src=SRC6, dst=wire.VRRP_GROUP6, hop_limit=255),
    ]
    for call in calls:
        try:
            call()
        except wire.DecodeError as e:
            assert isinstance(e.reason, Reason)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=20, max_size=80), st.sampled_from([None, False, True]))
def test_any_ip_looking_bytes_decode_v3_or_error(data: bytes, mode: bool | None) -> None:
    dgram = bytes([0x45]) + data[1:2] + len(data).to_bytes(2, "big") + data[4:6] + b"\0\0" + data[8:9]
    dgram += bytes([112]) + data[10:20] + bytes([0x31]) + data[21:]
    for fn in (wire.decode_ip_v3, wire.decode_ip_any):
        try:
            fn(dgram, checksum_as_v2=mode)
        except wire.DecodeError as e:
            assert isinstance(e.reason, Reason)


@SETTINGS
@given(sent(), st.data())
def test_single_bit_flip_is_always_detected_v3(
    case: tuple[wire.AdvertV3, wire.IPAddress, wire.IPAddress, bool], data: st.DataObject
) -> None:
    """With the checksum form fixed (as an instance configures it), every single-bit error is caught."""
    adv, src, dst, as_v2 = case
    raw = bytearray(wire.encode_v3(adv, src, dst, checksum_as_v2=as_v2))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(wire.DecodeError):
        wire.decode_v3(bytes(raw), src, dst, checksum_as_v2=as_v2)


@SETTINGS
@given(sent(), st.data())
def test_mutations_decode_v3_or_decode_error(
    case: tuple[wire.AdvertV3, wire.IPAddress, wire.IPAddress, bool], data: st.DataObject
) -> None:
    adv, src, dst, as_v2 = case
    raw = bytearray(wire.encode_v3(adv, src, dst, checksum_as_v2=as_v2))
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "set" and raw:
            raw[pos] = data.draw(st.integers(0, 255))
        elif op == "insert":
            raw.insert(pos, data.draw(st.integers(0, 255)))
        elif op == "delete" and raw:
            del raw[pos : pos + 1]
        else:
            del raw[pos:]
    msg = bytes(raw)
    try:
        got = wire.decode_v3(msg, src, dst)
    except wire.DecodeError as e:
        assert isinstance(e.reason, Reason)
    else:
        # accepted: the bytes verify independently in one of the two forms, and scapy reads the same fields
        forms = [inet_checksum(msg)] if adv.family == 4 else []
        ph = pseudo4 if adv.family == 4 else pseudo6
        forms.append(inet_checksum(ph(str(src), str(dst), len(msg)) + msg))
        assert 0 in forms
        layer = VRRPv3(msg)
        assert (layer.version, layer.vrid, layer.priority, layer.adv) == (
            3,
            got.vrid,
            got.priority,
            got.max_advert_int,
        )


# ------------------------------------------------------------------------------------------ semantic checks

VIP6 = IPv6Address("2001:db8::120")
PEER6 = IPv6Address("fe80::22")


def _pkt6(ttl: int = 255, src: wire.IPAddress = PEER6, **kw: Any) -> wire.PacketV3:
    base: dict[str, Any] = {
        "vrid": 62,
        "priority": 100,
        "max_advert_int": 10,
        "addresses": (VIP6,),
        "family": 6,
    }
    base.update(kw)
    return wire.PacketV3(src, wire.VRRP_GROUP6, ttl, wire.AdvertV3(**base))


def _check6(pkt: wire.PacketV3, **kw: Any) -> wire.Check:
    base: dict[str, Any] = {"vrid": 62, "vips": (VIP6,)}
    base.update(kw)
    return wire.check_v3(pkt, **base)


def test_check_v3_accepts_any_nonzero_interval() -> None:
    for cs in (1, 10, 100, 4095):
        assert _check6(_pkt6(max_advert_int=cs)) == wire.Check(None)


@pytest.mark.parametrize(
    ("pkt", "kw", "reason"),
    [
        (_pkt6(ttl=254), {}, Reason.TTL),
        (_pkt6(ttl=64), {}, Reason.TTL),
        (_pkt6(vrid=63), {}, Reason.VRID),
        (_pkt6(max_advert_int=0), {}, Reason.INTERVAL),
        (_pkt6(src=IPv6Address("fe80::99")), {"unicast_peers": (PEER6,)}, Reason.PEER),
        (_pkt6(), {"owner": True, "owner_ignore_adverts": True}, Reason.OWNER),
    ],
)
def test_check_v3_discards(pkt: wire.PacketV3, kw: dict[str, Any], reason: Reason) -> None:
    verdict = _check6(pkt, **kw)
    assert verdict.discard is reason
    assert verdict.detail


def test_check_v3_hop_limit_named_and_skipped_in_unicast() -> None:
    assert "hop limit 1" in _check6(_pkt6(ttl=1)).detail
    assert _check6(_pkt6(ttl=64), unicast_peers=(PEER6,)).discard is None


def test_check_v3_addr_list_mismatch_is_a_warning() -> None:
    ll = IPv6Address("fe80::200:5eff:fe00:23e")
    assert _check6(_pkt6(addresses=(VIP6, ll)), vips=(ll, VIP6)) == wire.Check(None)  # order does not matter
    verdict = _check6(_pkt6(addresses=(ll,)))
    assert verdict.discard is None and [r for r, _ in verdict.warnings] == [Reason.ADDR_LIST]
