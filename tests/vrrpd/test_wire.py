"""vrrpd.wire against golden bytes (RFC vectors, keepalived captures) and scapy as an independent codec."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

import pytest
from golden import CAPTURED, CAPTURED_GARPS, LAB_FACTS_FRAME, RFC_VECTORS, Vector, inet_checksum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP
from scapy.layers.l2 import ARP, Ether
from scapy.layers.vrrp import VRRP

from vrrpd import wire
from vrrpd.wire import Reason

FRAMES = [*CAPTURED, LAB_FACTS_FRAME]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def fields(adv: wire.Advert) -> tuple[object, ...]:
    return (adv.vrid, adv.priority, adv.advert_int, adv.addresses, adv.auth_type, adv.auth_data)


def expected(v: Vector) -> tuple[object, ...]:
    return (v.vrid, v.priority, v.advert_int, v.ips, v.auth_type, v.auth_data)


# ------------------------------------------------------------------------------------------- golden vectors


@pytest.mark.parametrize("v", RFC_VECTORS, ids=lambda v: v.hex[:12])
def test_rfc_vectors_decode_and_encode(v: Vector) -> None:
    adv = wire.decode(v.raw)
    assert fields(adv) == expected(v)
    assert wire.encode(adv) == v.raw
    assert inet_checksum(v.raw) == 0  # the vector is valid by a checksum written apart from vrrpd


@pytest.mark.parametrize("v", FRAMES, ids=lambda v: v.note)
def test_keepalived_frames_decode(v: Vector) -> None:
    pkt = wire.decode_ip(v.raw[14:])
    assert fields(pkt.advert) == expected(v)
    assert pkt.src == IPv4Address(v.src)
    assert pkt.dst == wire.VRRP_GROUP
    assert pkt.ttl == 255


@pytest.mark.parametrize("v", FRAMES, ids=lambda v: v.note)
def test_keepalived_frames_reencode_byte_exact(v: Vector) -> None:
    """Our encoder produces keepalived's exact bytes (TOS 0xc0, TTL 255, DF clear, same checksums)."""
    adv = wire.Advert(v.vrid, v.priority, v.advert_int, v.ips, v.auth_type, v.auth_data)
    assert wire.encode_ip(IPv4Address(v.src), wire.VRRP_GROUP, adv, ident=v.ip_id) == v.raw[14:]


@pytest.mark.parametrize("v", FRAMES, ids=lambda v: v.note)
def test_keepalived_frames_agree_with_scapy(v: Vector) -> None:
    frame = Ether(v.raw)
    layer = frame[VRRP]
    pkt = wire.decode_ip(v.raw[14:])
    adv = pkt.advert
    assert (layer.version, layer.type) == (2, 1)
    assert layer.vrid == adv.vrid
    assert layer.priority == adv.priority
    assert layer.adv == adv.advert_int
    assert layer.authtype == adv.auth_type
    assert [IPv4Address(a) for a in layer.addrlist] == list(adv.addresses)
    assert layer.auth1.to_bytes(4, "big") + layer.auth2.to_bytes(4, "big") == adv.auth_data
    assert frame[IP].ttl == pkt.ttl and IPv4Address(frame[IP].src) == pkt.src
    # scapy recomputes the checksum independently when the field is cleared
    clone = layer.copy()
    clone.chksum = None
    assert bytes(clone)[6:8] == v.raw[14 + 20 + 6 : 14 + 20 + 8]


@pytest.mark.parametrize(("hexframe", "mac", "vip"), CAPTURED_GARPS)
def test_garp_frame_matches_keepalived(hexframe: str, mac: str, vip: str) -> None:
    raw = bytes.fromhex(hexframe)
    assert wire.garp_frame(bytes.fromhex(mac.replace(":", "")), IPv4Address(vip)) == raw
    arp = Ether(raw)[ARP]
    assert (arp.op, arp.psrc, arp.pdst, arp.hwdst) == (1, vip, vip, "ff:ff:ff:ff:ff:ff")


def test_password() -> None:
    assert wire.password(None) == (0, b"\0" * 8)
    assert wire.password("rmqlab51") == (1, b"rmqlab51")
    assert wire.password("vc51-pw") == (1, b"vc51-pw\0")
    with pytest.raises(ValueError):
        wire.password("123456789")
    with pytest.raises(ValueError):
        wire.password("")


def test_virtual_mac() -> None:
    assert wire.virtual_mac(51) == bytes.fromhex("00005e000133")


# ------------------------------------------------------------------------------------ structural rejections


def _msg(**kw: Any) -> bytes:
    base: dict[str, Any] = {"vrid": 51, "priority": 100, "advert_int": 1}
    base["addresses"] = (IPv4Address("192.0.2.100"),)
    base.update(kw)
    return wire.encode(wire.Advert(**base))


def _reason(data: bytes, ip: bool = False) -> Reason:
    with pytest.raises(wire.DecodeError) as exc:
        (wire.decode_ip if ip else wire.decode)(data)
    return exc.value.reason


def _fix_csum(msg: bytes) -> bytes:
    msg = msg[:6] + b"\0\0" + msg[8:]
    return msg[:6] + wire.checksum(msg).to_bytes(2, "big") + msg[8:]


def test_structural_reasons() -> None:
    good = _msg()
    assert _reason(good[:7]) is Reason.LENGTH
    assert _reason(good[:-1]) is Reason.LENGTH  # truncated auth data
    assert _reason(good + b"\0\0\0\0") is Reason.LENGTH  # oversized
    assert _reason(_fix_csum(bytes([0x31]) + good[1:])) is Reason.VERSION
    assert _reason(_fix_csum(bytes([0x22]) + good[1:])) is Reason.TYPE
    assert _reason(good[:6] + bytes([good[6] ^ 1]) + good[7:]) is Reason.CHECKSUM
    assert _reason(_fix_csum(good[:1] + b"\0" + good[2:])) is Reason.VRID
    with pytest.raises(wire.DecodeError) as exc:
        wire.decode(good[:-1])
    assert exc.value.vrid == 51


def test_ip_layer_reasons() -> None:
    adv = wire.decode(_msg())
    dgram = wire.encode_ip(IPv4Address("192.0.2.21"), wire.VRRP_GROUP, adv)
    assert wire.decode_ip(dgram + b"\0" * 18).advert == adv  # Ethernet padding slack is tolerated
    assert _reason(dgram[:19], ip=True) is Reason.IP_HEADER
    assert _reason(bytes([0x65]) + dgram[1:], ip=True) is Reason.IP_HEADER  # IPv6 nibble
    assert _reason(bytes([0x44]) + dgram[1:], ip=True) is Reason.IP_HEADER  # IHL 16
    assert _reason(dgram[:9] + bytes([17]) + dgram[10:], ip=True) is Reason.IP_HEADER  # UDP
    assert _reason(dgram[:6] + b"\x20\x00" + dgram[8:], ip=True) is Reason.IP_HEADER  # MF fragment
    assert _reason(dgram[:-2], ip=True) is Reason.LENGTH  # total length beyond the buffer
    oversized = dgram[:2] + (len(dgram) + 4).to_bytes(2, "big") + dgram[4:] + b"\0" * 4
    assert _reason(oversized, ip=True) is Reason.LENGTH
    # IP options (IHL 6) are skipped
    with_opts = bytes([0x46]) + dgram[1:2] + (len(dgram) + 4).to_bytes(2, "big") + dgram[4:20] + b"\x01" * 4
    assert wire.decode_ip(with_opts + dgram[20:]).advert == adv


# ------------------------------------------------------------------------------------------------ hypothesis

addresses = st.lists(st.integers(0, 2**32 - 1).map(IPv4Address), max_size=12).map(tuple)
adverts = st.builds(
    wire.Advert,
    vrid=st.integers(1, 255),
    priority=st.integers(0, 255),
    advert_int=st.integers(0, 255),
    addresses=addresses,
    auth_type=st.integers(0, 255),
    auth_data=st.binary(min_size=8, max_size=8),
)


@SETTINGS
@given(adverts)
def test_round_trip(adv: wire.Advert) -> None:
    raw = wire.encode(adv)
    assert len(raw) == wire.message_length(len(adv.addresses))
    assert wire.decode(raw) == adv


@SETTINGS
@given(adverts, st.integers(0, 2**32 - 1).map(IPv4Address), st.integers(0, 65535))
def test_ip_round_trip(adv: wire.Advert, src: IPv4Address, ident: int) -> None:
    pkt = wire.decode_ip(wire.encode_ip(src, wire.VRRP_GROUP, adv, ident))
    assert pkt == wire.Packet(src, wire.VRRP_GROUP, 255, adv)


@SETTINGS
@given(adverts, st.integers(0, 2**32 - 1).map(IPv4Address), st.integers(0, 255))
def test_scapy_built_packets_decode(adv: wire.Advert, src: IPv4Address, ttl: int) -> None:
    """scapy builds the packet (its own checksum), vrrpd decodes it to the same fields."""
    built = IP(src=str(src), dst="224.0.0.18", ttl=ttl, tos=0xC0) / VRRP(
        vrid=adv.vrid,
        priority=adv.priority,
        adv=adv.advert_int,
        authtype=adv.auth_type,
        addrlist=[str(a) for a in adv.addresses],
        auth1=int.from_bytes(adv.auth_data[:4], "big"),
        auth2=int.from_bytes(adv.auth_data[4:], "big"),
    )
    pkt = wire.decode_ip(bytes(built))
    assert pkt.advert == adv
    assert (pkt.src, pkt.ttl) == (src, ttl)


@SETTINGS
@given(adverts)
def test_scapy_parses_our_encoding(adv: wire.Advert) -> None:
    layer = VRRP(wire.encode(adv))
    assert (layer.vrid, layer.priority, layer.adv, layer.authtype) == (
        adv.vrid,
        adv.priority,
        adv.advert_int,
        adv.auth_type,
    )
    assert [IPv4Address(a) for a in layer.addrlist] == list(adv.addresses)
    clone = layer.copy()
    clone.chksum = None
    assert bytes(clone) == wire.encode(adv)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_any_bytes_decode_or_decode_error(data: bytes) -> None:
    for fn in (wire.decode, wire.decode_ip):
        try:
            fn(data)
        except wire.DecodeError as e:
            assert isinstance(e.reason, Reason)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=20, max_size=80))
def test_any_ip_looking_bytes_decode_or_error(data: bytes) -> None:
    # force a plausible IPv4 header so the VRRP part gets exercised too
    dgram = bytes([0x45]) + data[1:2] + len(data).to_bytes(2, "big") + data[4:6] + b"\0\0" + data[8:9]
    dgram += bytes([112]) + data[10:]
    try:
        wire.decode_ip(dgram)
    except wire.DecodeError as e:
        assert isinstance(e.reason, Reason)


@SETTINGS
@given(adverts, st.data())
def test_single_bit_flip_is_always_detected(adv: wire.Advert, data: st.DataObject) -> None:
    raw = bytearray(wire.encode(adv))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(wire.DecodeError):
        wire.decode(bytes(raw))


@SETTINGS
@given(adverts, st.data())
def test_mutations_decode_or_decode_error(adv: wire.Advert, data: st.DataObject) -> None:
    raw = bytearray(wire.encode_ip(IPv4Address("192.0.2.21"), wire.VRRP_GROUP, adv))
    for _ in range(data.draw(st.integers(1, 6))):
        op = data.draw(st.sampled_from(["set", "insert", "delete", "truncate"]))
        pos = data.draw(st.integers(0, max(0, len(raw) - 1)))
        if op == "set" and raw:
            raw[pos] = data.draw(st.integers(0, 255))
        elif op == "insert":
            raw.insert(pos, data.draw(st.integers(0, 255)))
        elif op == "delete" and raw:
            del raw[pos]
        else:
            del raw[pos:]
    try:
        pkt = wire.decode_ip(bytes(raw))
    except wire.DecodeError as e:
        assert isinstance(e.reason, Reason)
    else:
        # Accepted: judge the bytes that were on the wire, not our own re-encoding (whose checksum is right by
        # construction). They must verify with a checksum written apart from vrrpd, hold exactly the fields
        # decoded, and scapy must read the same fields from them.
        ihl, total = (raw[0] & 0x0F) * 4, int.from_bytes(raw[2:4], "big")
        msg = bytes(raw[ihl:total])
        assert inet_checksum(msg) == 0
        assert wire.encode(pkt.advert) == msg
        layer = VRRP(msg)
        assert (layer.vrid, layer.priority, layer.adv, layer.authtype) == (
            pkt.advert.vrid,
            pkt.advert.priority,
            pkt.advert.advert_int,
            pkt.advert.auth_type,
        )
        assert [IPv4Address(a) for a in layer.addrlist] == list(pkt.advert.addresses)


# ------------------------------------------------------------------------------------------ semantic checks

VIP = IPv4Address("192.0.2.100")
PEER = IPv4Address("192.0.2.22")


def _pkt(ttl: int = 255, src: IPv4Address = PEER, **kw: Any) -> wire.Packet:
    base: dict[str, Any] = {
        "vrid": 51,
        "priority": 100,
        "advert_int": 1,
        "addresses": (VIP,),
        "auth_type": 1,
        "auth_data": b"secret\0\0",
    }
    base.update(kw)
    return wire.Packet(src, wire.VRRP_GROUP, ttl, wire.Advert(**base))


def _check(pkt: wire.Packet, **kw: Any) -> wire.Check:
    base: dict[str, Any] = {
        "vrid": 51,
        "advert_int": 1,
        "auth_type": 1,
        "auth_data": b"secret\0\0",
        "vips": (VIP,),
    }
    base.update(kw)
    return wire.check(pkt, **base)


def test_check_accepts_good_advert() -> None:
    assert _check(_pkt()) == wire.Check(None)


@pytest.mark.parametrize(
    ("pkt", "kw", "reason"),
    [
        (_pkt(ttl=254), {}, Reason.TTL),
        (_pkt(ttl=1), {}, Reason.TTL),
        (_pkt(vrid=52), {}, Reason.VRID),
        (_pkt(auth_type=0, auth_data=b"\0" * 8), {}, Reason.AUTH_TYPE),
        (_pkt(auth_type=2), {}, Reason.AUTH_TYPE),
        (_pkt(auth_data=b"secreT\0\0"), {}, Reason.AUTH_PASS),
        (_pkt(auth_data=b"secret\0x"), {}, Reason.AUTH_PASS),
        (_pkt(advert_int=2), {}, Reason.INTERVAL),
        (_pkt(advert_int=0), {}, Reason.INTERVAL),
        (_pkt(src=IPv4Address("192.0.2.99")), {"unicast_peers": (PEER,)}, Reason.PEER),
        (_pkt(), {"owner": True, "owner_ignore_adverts": True}, Reason.OWNER),
    ],
)
def test_check_discards(pkt: wire.Packet, kw: dict[str, Any], reason: Reason) -> None:
    verdict = _check(pkt, **kw)
    assert verdict.discard is reason
    assert verdict.detail


def test_check_ttl_skipped_in_unicast_mode() -> None:
    assert _check(_pkt(ttl=64), unicast_peers=(PEER,)).discard is None


def test_check_owner_processes_adverts_by_default() -> None:
    assert _check(_pkt(), owner=True).discard is None


def test_check_no_auth() -> None:
    pkt = _pkt(auth_type=0, auth_data=b"\0" * 8)
    assert _check(pkt, auth_type=0, auth_data=b"\0" * 8).discard is None
    # with auth type 0 the auth data is not compared (RFC 3768 section 5.3.10)
    pkt = _pkt(auth_type=0, auth_data=b"junkjunk")
    assert _check(pkt, auth_type=0, auth_data=b"\0" * 8).discard is None


@pytest.mark.parametrize(
    "addrs",
    [(), (IPv4Address("192.0.2.101"),), (VIP, IPv4Address("192.0.2.101")), (VIP, VIP)],
)
def test_check_addr_list_mismatch_is_a_warning(addrs: tuple[IPv4Address, ...]) -> None:
    verdict = _check(_pkt(addresses=addrs))
    assert verdict.discard is None
    assert [r for r, _ in verdict.warnings] == [Reason.ADDR_LIST]


def test_check_addr_list_order_does_not_matter() -> None:
    a, b = IPv4Address("192.0.2.100"), IPv4Address("192.0.2.101")
    assert _check(_pkt(addresses=(b, a)), vips=(a, b)) == wire.Check(None)


def test_advert_rejects_misuse() -> None:
    with pytest.raises(ValueError):
        wire.Advert(0, 100, 1, ())
    with pytest.raises(ValueError):
        wire.Advert(1, 256, 1, ())
    with pytest.raises(ValueError):
        wire.Advert(1, 100, 1, (), auth_data=b"short")
