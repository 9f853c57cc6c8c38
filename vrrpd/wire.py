"""VRRPv2 wire format (RFC 3768 section 5) and VRRPv3 (RFC 5798 / RFC 9568, IPv4 and IPv6): pure
encode/decode, no sockets.

Layers:

* :func:`encode` / :func:`decode` handle the VRRP message alone (version byte through the 8 bytes of
  authentication data). The checksum is the Internet checksum (RFC 1071) over the whole VRRP message with the
  checksum field zeroed, *without* any pseudo header (RFC 3768 section 5.3.8).
* :func:`encode_ip` / :func:`decode_ip` add or strip the IPv4 header, which is what a raw ``IPPROTO_VRRP``
  socket with ``IP_HDRINCL`` sends and receives.
* :func:`check` applies the semantic receive checks of RFC 3768 section 7.1 (TTL, VRID, owner, auth, interval,
  unicast peer, address list) against the local configuration. It is pure too; the state machine calls it.

Structural problems (the bytes are not a VRRPv2 advertisement at all) raise :class:`DecodeError` carrying a
:class:`Reason`; nothing else ever escapes :func:`decode` or :func:`decode_ip` for any input bytes.

VRRPv3 (the second half of the module) has its own functions with the same property: :func:`encode_v3` /
:func:`decode_v3` for the message, :func:`encode_ip_v3` / :func:`decode_ip_v3` for IPv4 datagrams,
:func:`decode_ipv6` for what an ``AF_INET6`` raw socket returns (the bare message, with source, destination
and hop limit from the ancillary data), :func:`decode_ip_any` to dispatch an IPv4 datagram on the version
nibble, :func:`check_v3` for the receive checks, and :func:`na_frame` for the unsolicited Neighbor
Advertisement that replaces gratuitous ARP for IPv6 VIPs.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from typing import TypeAlias

__all__ = [
    "ALL_NODES6",
    "AUTH_AH",
    "AUTH_NONE",
    "AUTH_PASS",
    "HEADER_LEN",
    "IP_TOS",
    "MAX_ADVER_INT_CS",
    "VRRP_GROUP",
    "VRRP_GROUP6",
    "VRRP_PROTO",
    "VRRP_TTL",
    "Advert",
    "AdvertV3",
    "Check",
    "DecodeError",
    "IPAddress",
    "Packet",
    "PacketV3",
    "Reason",
    "check",
    "check_v3",
    "checksum",
    "checksum_v3",
    "decode",
    "decode_ip",
    "decode_ip_any",
    "decode_ip_v3",
    "decode_ipv6",
    "decode_v3",
    "encode",
    "encode_ip",
    "encode_ip_v3",
    "encode_v3",
    "garp_frame",
    "message_length",
    "message_length_v3",
    "na_frame",
    "password",
    "pseudo_header",
    "virtual_mac",
    "virtual_mac6",
]

VRRP_PROTO = 112
VRRP_GROUP = IPv4Address("224.0.0.18")
VRRP_TTL = 255
VRRP_VERSION = 2
VRRP_TYPE_ADVERT = 1
IP_TOS = 0xC0  # "internetwork control", as keepalived sends it
AUTH_NONE = 0
AUTH_PASS = 1  # "Reserved" in RFC 3768, simple text password in RFC 2338 and keepalived
AUTH_AH = 2  # "Reserved" in RFC 3768, IPsec AH in RFC 2338; never sent by vrrpd
AUTH_LEN = 8
HEADER_LEN = 8  # fixed fields before the address list
MAX_ADDRS = 255
_IPV4_MIN_HEADER = 20
_HEADER = struct.Struct("!BBBBBBH")
_NUL8 = b"\0" * AUTH_LEN


class Reason(enum.Enum):
    """Why a received packet was discarded. The values are the counter names shown by ``vrrpd status``."""

    TTL = "ttl"
    VERSION = "version"
    TYPE = "type"
    LENGTH = "length"
    CHECKSUM = "checksum"
    VRID = "vrid"
    OWNER = "owner"
    AUTH_TYPE = "auth_type"
    AUTH_PASS = "auth_pass"
    INTERVAL = "interval"
    PEER = "peer"
    IP_HEADER = "ip_header"
    ADDR_LIST = "addr_list"  # counted and logged, but the advert is still used (as keepalived does)


class DecodeError(Exception):
    """The bytes are not a well-formed VRRPv2 advertisement.

    ``vrid`` is the VRID byte when the packet was long enough to carry one (so the daemon can attribute the
    discard to an instance), else ``None``.
    """

    def __init__(self, reason: Reason, detail: str = "", vrid: int | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.vrid = vrid
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)


@dataclass(frozen=True, slots=True)
class Advert:
    """One VRRPv2 ADVERTISEMENT (RFC 3768 section 5.3). ``advert_int`` is in whole seconds."""

    vrid: int
    priority: int
    advert_int: int
    addresses: tuple[IPv4Address, ...]
    auth_type: int = AUTH_NONE
    auth_data: bytes = _NUL8

    def __post_init__(self) -> None:
        # Local API misuse raises ValueError; remote garbage never reaches here (decode checks first).
        if not 1 <= self.vrid <= 255:
            raise ValueError(f"vrid {self.vrid} not in 1..255")
        if not 0 <= self.priority <= 255:
            raise ValueError(f"priority {self.priority} not in 0..255")
        if not 0 <= self.advert_int <= 255:
            raise ValueError(f"advert_int {self.advert_int} not in 0..255")
        if not 0 <= self.auth_type <= 255:
            raise ValueError(f"auth_type {self.auth_type} not in 0..255")
        if len(self.addresses) > MAX_ADDRS:
            raise ValueError(f"{len(self.addresses)} addresses, at most {MAX_ADDRS}")
        if len(self.auth_data) != AUTH_LEN:
            raise ValueError(f"auth_data must be exactly {AUTH_LEN} bytes")
        for a in self.addresses:
            if not isinstance(a, IPv4Address):
                raise ValueError(f"address {a!r} is not an IPv4Address")


@dataclass(frozen=True, slots=True)
class Packet:
    """An advert with the IPv4 header fields the receive checks need."""

    src: IPv4Address
    dst: IPv4Address
    ttl: int
    advert: Advert


def message_length(count: int) -> int:
    """Length of a VRRPv2 message carrying ``count`` addresses: 8 + 4*count + 8 (RFC 3768 section 5.3)."""
    return HEADER_LEN + 4 * count + AUTH_LEN


def checksum(data: bytes) -> int:
    """RFC 1071 Internet checksum (16-bit one's complement of the one's complement sum)."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def encode(adv: Advert) -> bytes:
    """The VRRP message for ``adv`` (no IP header), checksum filled in."""
    body = b"".join(a.packed for a in adv.addresses) + adv.auth_data
    head = _HEADER.pack(
        (VRRP_VERSION << 4) | VRRP_TYPE_ADVERT,
        adv.vrid,
        adv.priority,
        len(adv.addresses),
        adv.auth_type,
        adv.advert_int,
        0,
    )
    csum = checksum(head + body)
    return head[:6] + csum.to_bytes(2, "big") + body


def decode(msg: bytes) -> Advert:
    """Parse one VRRP message (no IP header).

    Structural checks of RFC 3768 section 7.1, in this order: length of the fixed header, version 2,
    type 1 (ADVERTISEMENT), the message is exactly 8 + 4*count + 8 bytes ("complete"; a longer message is
    an oversized packet and also discarded as ``LENGTH``), checksum. Raises :class:`DecodeError`.
    """
    vrid = msg[1] if len(msg) >= 2 else None
    if len(msg) < HEADER_LEN:
        raise DecodeError(Reason.LENGTH, f"{len(msg)} bytes, shorter than the {HEADER_LEN}-byte header", vrid)
    version, ptype = msg[0] >> 4, msg[0] & 0x0F
    if version != VRRP_VERSION:
        raise DecodeError(Reason.VERSION, f"version {version}, expected {VRRP_VERSION}", vrid)
    if ptype != VRRP_TYPE_ADVERT:
        raise DecodeError(Reason.TYPE, f"type {ptype}, expected {VRRP_TYPE_ADVERT}", vrid)
    count = msg[3]
    need = message_length(count)
    if len(msg) != need:
        raise DecodeError(Reason.LENGTH, f"{len(msg)} bytes, {count} addresses need {need}", vrid)
    if checksum(msg) != 0:
        got = int.from_bytes(msg[6:8], "big")
        want = checksum(msg[:6] + b"\0\0" + msg[8:])
        raise DecodeError(Reason.CHECKSUM, f"checksum {got:#06x}, computed {want:#06x}", vrid)
    if vrid == 0:
        # VRID 0 is not a valid virtual router (RFC 3768 section 5.3.3: 1-255).
        raise DecodeError(Reason.VRID, "vrid 0", vrid)
    addrs = tuple(IPv4Address(msg[HEADER_LEN + 4 * i : HEADER_LEN + 4 * i + 4]) for i in range(count))
    return Advert(
        vrid=msg[1],
        priority=msg[2],
        advert_int=msg[5],
        addresses=addrs,
        auth_type=msg[4],
        auth_data=bytes(msg[need - AUTH_LEN : need]),
    )


def decode_ip(datagram: bytes) -> Packet:
    """Parse an IPv4 datagram carrying VRRP, as a raw socket returns it.

    Checks the IPv4 header (version 4, IHL >= 5 and inside the buffer, protocol 112, not a fragment) and
    that the buffer holds the IP total length. Bytes after the total length (Ethernet minimum-frame padding
    when the datagram came from a packet socket) are ignored, as keepalived tolerates them. The IP header
    checksum is not verified: the kernel has already dropped datagrams with a bad one. Raises
    :class:`DecodeError`
    (``IP_HEADER`` or ``LENGTH``, or whatever :func:`decode` raises for the VRRP part).
    """
    msg, src, dst, ttl = _ipv4_payload(datagram)
    adv = decode(msg)
    return Packet(src=src, dst=dst, ttl=ttl, advert=adv)


def _ipv4_payload(datagram: bytes) -> tuple[bytes, IPv4Address, IPv4Address, int]:
    """The IPv4 header checks of :func:`decode_ip`: ``(vrrp message, src, dst, ttl)`` or DecodeError."""
    if len(datagram) < _IPV4_MIN_HEADER:
        raise DecodeError(Reason.IP_HEADER, f"{len(datagram)} bytes, shorter than an IPv4 header")
    ver, ihl = datagram[0] >> 4, (datagram[0] & 0x0F) * 4
    if ver != 4:
        raise DecodeError(Reason.IP_HEADER, f"IP version {ver}")
    if ihl < _IPV4_MIN_HEADER or ihl > len(datagram):
        raise DecodeError(Reason.IP_HEADER, f"IHL {ihl} bytes with {len(datagram)} bytes received")
    total = int.from_bytes(datagram[2:4], "big")
    vrid = datagram[ihl + 1] if len(datagram) >= ihl + 2 else None
    if total < ihl:
        raise DecodeError(Reason.IP_HEADER, f"total length {total} < IHL {ihl}", vrid)
    if total > len(datagram):
        raise DecodeError(Reason.LENGTH, f"total length {total}, only {len(datagram)} bytes received", vrid)
    frag = int.from_bytes(datagram[6:8], "big")
    if frag & 0x3FFF:  # MF flag or a fragment offset
        raise DecodeError(Reason.IP_HEADER, "fragment", vrid)
    if datagram[9] != VRRP_PROTO:
        raise DecodeError(Reason.IP_HEADER, f"protocol {datagram[9]}, expected {VRRP_PROTO}", vrid)
    return bytes(datagram[ihl:total]), IPv4Address(datagram[12:16]), IPv4Address(datagram[16:20]), datagram[8]


def encode_ip(src: IPv4Address, dst: IPv4Address, adv: Advert, ident: int = 0) -> bytes:
    """IPv4 header (TOS 0xc0, TTL 255, DF clear, protocol 112, header checksum filled) + VRRP message.

    With ``IP_HDRINCL`` Linux fills the IP ID when it is 0 and recomputes the header checksum anyway.
    """
    msg = encode(adv)
    return _ipv4_header(src, dst, len(msg), ident) + msg


def _ipv4_header(src: IPv4Address, dst: IPv4Address, length: int, ident: int) -> bytes:
    total = _IPV4_MIN_HEADER + length
    hdr = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        IP_TOS,
        total,
        ident & 0xFFFF,
        0,
        VRRP_TTL,
        VRRP_PROTO,
        0,
        src.packed,
        dst.packed,
    )
    return hdr[:10] + checksum(hdr).to_bytes(2, "big") + hdr[12:]


def password(auth_pass: str | None) -> tuple[int, bytes]:
    """``(auth_type, auth_data)`` for a configured ``auth_pass``: PASS with the NUL-padded password, or none.

    Raises ``ValueError`` for an empty password or one longer than 8 bytes in UTF-8 (keepalived silently
    truncates to 8; vrrpd refuses so that two configs that differ after byte 8 cannot look equal).
    """
    if auth_pass is None:
        return AUTH_NONE, _NUL8
    raw = auth_pass.encode("utf-8")
    if not raw:
        raise ValueError("auth_pass must not be empty")
    if len(raw) > AUTH_LEN:
        raise ValueError(f"auth_pass is {len(raw)} bytes, at most {AUTH_LEN}")
    return AUTH_PASS, raw.ljust(AUTH_LEN, b"\0")


def virtual_mac(vrid: int) -> bytes:
    """The IPv4 VRRP virtual MAC 00-00-5E-00-01-{VRID} (RFC 3768 section 7.3)."""
    if not 1 <= vrid <= 255:
        raise ValueError(f"vrid {vrid} not in 1..255")
    return bytes((0x00, 0x00, 0x5E, 0x00, 0x01, vrid))


def garp_frame(mac: bytes, ip: IPv4Address) -> bytes:
    """A gratuitous ARP as keepalived sends it: Ethernet broadcast, ARP REQUEST, sender = target = ``ip``,
    sender MAC = ``mac``, target MAC ff:ff:ff:ff:ff:ff. 42 bytes (the driver pads to the minimum frame)."""
    if len(mac) != 6:
        raise ValueError("mac must be 6 bytes")
    bcast = b"\xff" * 6
    eth = bcast + mac + b"\x08\x06"
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + ip.packed + bcast + ip.packed
    return eth + arp


# ----------------------------------------------------------------------------------------------------
# Semantic receive checks (RFC 3768 section 7.1) against the local configuration.


@dataclass(frozen=True, slots=True)
class Check:
    """Outcome of :func:`check`: ``discard`` is the reason to drop the advert (or ``None`` to use it),
    ``detail`` a human-readable explanation; ``warnings`` are counted and logged but do not drop the advert
    (address-list mismatch)."""

    discard: Reason | None
    detail: str = ""
    warnings: tuple[tuple[Reason, str], ...] = field(default=())


def _equal_8(a: bytes, b: bytes) -> bool:
    """Constant-time comparison of two auth fields (``hmac`` would cost the daemon 0.6 MiB of RSS)."""
    if len(a) != len(b):
        return False
    diff = 0
    for x, y in zip(a, b, strict=True):
        diff |= x ^ y
    return diff == 0


def check(
    packet: Packet,
    *,
    vrid: int,
    advert_int: int,
    auth_type: int,
    auth_data: bytes,
    vips: Sequence[IPv4Address],
    unicast_peers: Sequence[IPv4Address] = (),
    owner: bool = False,
    owner_ignore_adverts: bool = False,
) -> Check:
    """Apply the RFC 3768 section 7.1 checks that need local configuration, in the RFC's order.

    * TTL must be 255 in multicast mode; skipped in unicast mode (``unicast_peers`` non-empty), as keepalived.
    * The VRID must be ours.
    * Owner (priority 255): the RFC says the owner discards every advert. keepalived by default still
      processes them so that two misconfigured owners converge on one master; vrrpd does the same unless
      ``owner_ignore_adverts`` (keepalived's keyword for the strict RFC behaviour) is set.
    * Auth type must equal ours; for PASS the 8 bytes must match (constant-time compare).
    * Advert interval must equal ours (a mismatch would otherwise give two masters).
    * Unicast mode: the source must be a configured peer (keepalived's ``check_unicast_src``).
    * The address list should equal our VIPs (as a set); a mismatch is only a warning.
    """
    adv = packet.advert
    if not unicast_peers and packet.ttl != VRRP_TTL:
        return Check(Reason.TTL, f"TTL {packet.ttl} from {packet.src}, expected {VRRP_TTL}")
    if adv.vrid != vrid:
        return Check(Reason.VRID, f"VRID {adv.vrid} from {packet.src}, ours is {vrid}")
    if owner and owner_ignore_adverts:
        return Check(Reason.OWNER, f"we own the addresses (priority 255); advert from {packet.src} ignored")
    if adv.auth_type != auth_type:
        return Check(Reason.AUTH_TYPE, f"auth type {adv.auth_type} from {packet.src}, expected {auth_type}")
    if auth_type == AUTH_PASS and not _equal_8(adv.auth_data, auth_data):
        return Check(Reason.AUTH_PASS, f"wrong password from {packet.src}")
    if adv.advert_int != advert_int:
        return Check(
            Reason.INTERVAL, f"advert_int {adv.advert_int}s from {packet.src}, ours is {advert_int}s"
        )
    if unicast_peers and packet.src not in unicast_peers:
        return Check(Reason.PEER, f"source {packet.src} is not a configured unicast peer")
    if set(adv.addresses) != set(vips) or len(adv.addresses) != len(vips):
        theirs = ",".join(str(a) for a in adv.addresses) or "-"
        ours = ",".join(str(a) for a in vips) or "-"
        detail = f"addresses from {packet.src} [{theirs}] != ours [{ours}]"
        return Check(None, warnings=((Reason.ADDR_LIST, detail),))
    return Check(None)


# ----------------------------------------------------------------------------------------------------
# VRRPv3 (RFC 5798, RFC 9568): IPv4 and IPv6, Max Adver Int in centiseconds, no authentication.

IPAddress: TypeAlias = IPv4Address | IPv6Address

VRRP_VERSION_3 = 3
VRRP_GROUP6 = IPv6Address("ff02::12")
ALL_NODES6 = IPv6Address("ff02::1")
MAX_ADVER_INT_CS = 0x0FFF  # 12 bits: 40.95 s
ICMPV6_PROTO = 58
_ND_NA_TYPE = 136
_NA_ROUTER = 0x80
_NA_SOLICITED = 0x40
_NA_OVERRIDE = 0x20
_ETH_P_IPV6 = b"\x86\xdd"
_HEADER_V3 = struct.Struct("!BBBBHH")


@dataclass(frozen=True, slots=True)
class AdvertV3:
    """One VRRPv3 ADVERTISEMENT (RFC 5798 section 5.2).

    ``max_advert_int`` is in centiseconds (12 bits). 0 is representable because it can arrive from the wire,
    but it is not a valid interval: :func:`check_v3` discards it (RFC 9568 erratum 8301). ``family`` is 4 or 6
    and every address must be of that family; it is carried explicitly because the address list may be
    empty on the wire (the family then comes from the socket the advert arrived on).
    """

    vrid: int
    priority: int
    max_advert_int: int
    addresses: tuple[IPv4Address, ...] | tuple[IPv6Address, ...]
    family: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.vrid <= 255:
            raise ValueError(f"vrid {self.vrid} not in 1..255")
        if not 0 <= self.priority <= 255:
            raise ValueError(f"priority {self.priority} not in 0..255")
        if not 0 <= self.max_advert_int <= MAX_ADVER_INT_CS:
            raise ValueError(f"max_advert_int {self.max_advert_int} cs not in 0..{MAX_ADVER_INT_CS}")
        if self.family not in (4, 6):
            raise ValueError(f"family {self.family} is neither 4 nor 6")
        if len(self.addresses) > MAX_ADDRS:
            raise ValueError(f"{len(self.addresses)} addresses, at most {MAX_ADDRS}")
        kind = IPv4Address if self.family == 4 else IPv6Address
        for a in self.addresses:
            if type(a) is not kind:
                raise ValueError(f"address {a!r} is not an {kind.__name__} (family {self.family})")

    @property
    def version(self) -> int:
        return VRRP_VERSION_3


@dataclass(frozen=True, slots=True)
class PacketV3:
    """A VRRPv3 advert with the IP-layer fields the receive checks need.

    ``ttl`` is the IPv4 TTL or the IPv6 hop limit. ``checksum_as_v2`` says which checksum form verified:
    ``True`` for the message-only form (RFC 9568 IPv4, keepalived's ``v3_checksum_as_v2``), ``False`` for the
    pseudo-header form (keepalived's default for IPv4, always for IPv6).
    """

    src: IPAddress
    dst: IPAddress
    ttl: int
    advert: AdvertV3
    checksum_as_v2: bool = False


def message_length_v3(count: int, family: int = 4) -> int:
    """Length of a VRRPv3 message carrying ``count`` addresses: 8 + 4*count (IPv4) or 8 + 16*count (IPv6)."""
    return HEADER_LEN + (4 if family == 4 else 16) * count


def _family(src: IPAddress, dst: IPAddress) -> int:
    if isinstance(src, IPv4Address) and isinstance(dst, IPv4Address):
        return 4
    if isinstance(src, IPv6Address) and isinstance(dst, IPv6Address):
        return 6
    raise ValueError(f"source {src!r} and destination {dst!r} are not of one address family")


def pseudo_header(src: IPAddress, dst: IPAddress, length: int) -> bytes:
    """The pseudo-header summed into a VRRPv3 checksum for a ``length``-byte message.

    IPv4 (as keepalived and FRR sum it): source, destination, zero, protocol 112, 16-bit length.
    IPv6 (RFC 8200 section 8.1): source, destination, 32-bit length, three zero bytes, next header 112.
    ``src`` and ``dst`` are the addresses of the IP header (the group, or the peer when unicasting).
    """
    if _family(src, dst) == 4:
        return src.packed + dst.packed + bytes((0, VRRP_PROTO)) + length.to_bytes(2, "big")
    return src.packed + dst.packed + length.to_bytes(4, "big") + bytes((0, 0, 0, VRRP_PROTO))


def checksum_v3(msg: bytes, src: IPAddress, dst: IPAddress, *, checksum_as_v2: bool = False) -> int:
    """Internet checksum of a VRRPv3 message (pass it with the checksum field zeroed to compute one, as
    received to verify: the result is then 0).

    IPv6 always sums the pseudo-header. IPv4 sums it by default, as keepalived 2.2.7 (which has no switch)
    and FRR do; ``checksum_as_v2`` selects the message-only form of RFC 9568 section 5.2.8, keepalived
    2.2.8's keyword ``v3_checksum_as_v2`` (what Cisco and Juniper send). It is ignored for IPv6, as there.
    """
    if _family(src, dst) == 4 and checksum_as_v2:
        return checksum(msg)
    return checksum(pseudo_header(src, dst, len(msg)) + msg)


def encode_v3(adv: AdvertV3, src: IPAddress, dst: IPAddress, *, checksum_as_v2: bool = False) -> bytes:
    """The VRRPv3 message for ``adv`` sent from ``src`` to ``dst`` (the IP header's addresses, needed by the
    checksum), reserved bits zero, checksum filled in. ``src``/``dst`` must be of the advert's family."""
    if _family(src, dst) != adv.family:
        raise ValueError(f"IPv{adv.family} advert with IPv{_family(src, dst)} addresses {src} -> {dst}")
    head = _HEADER_V3.pack(
        (VRRP_VERSION_3 << 4) | VRRP_TYPE_ADVERT,
        adv.vrid,
        adv.priority,
        len(adv.addresses),
        adv.max_advert_int & MAX_ADVER_INT_CS,
        0,
    )
    body = b"".join(a.packed for a in adv.addresses)
    csum = checksum_v3(head + body, src, dst, checksum_as_v2=checksum_as_v2)
    return head[:6] + csum.to_bytes(2, "big") + body


def decode_v3(msg: bytes, src: IPAddress, dst: IPAddress, *, checksum_as_v2: bool | None = None) -> AdvertV3:
    """Parse one VRRPv3 message that arrived from ``src`` to ``dst`` (the IP header's addresses).

    Structural checks in this order: length of the fixed header, version 3, type 1, the message is exactly
    8 + 4*count (IPv4) or 8 + 16*count (IPv6) bytes, checksum, VRID not 0. ``checksum_as_v2``: ``False``
    accepts only the pseudo-header form, ``True`` only the message-only form (IPv4; IPv6 always uses the
    pseudo-header), ``None`` either (see :func:`decode_ip_v3` for learning which one arrived). The reserved
    bits are ignored (RFC 5798 section 5.2.6). Raises :class:`DecodeError`.
    """
    return _decode_v3(msg, src, dst, checksum_as_v2)[0]


def _decode_v3(msg: bytes, src: IPAddress, dst: IPAddress, mode: bool | None) -> tuple[AdvertV3, bool]:
    family = _family(src, dst)
    vrid = msg[1] if len(msg) >= 2 else None
    if len(msg) < HEADER_LEN:
        raise DecodeError(Reason.LENGTH, f"{len(msg)} bytes, shorter than the {HEADER_LEN}-byte header", vrid)
    version, ptype = msg[0] >> 4, msg[0] & 0x0F
    if version != VRRP_VERSION_3:
        raise DecodeError(Reason.VERSION, f"version {version}, expected {VRRP_VERSION_3}", vrid)
    if ptype != VRRP_TYPE_ADVERT:
        raise DecodeError(Reason.TYPE, f"type {ptype}, expected {VRRP_TYPE_ADVERT}", vrid)
    count = msg[3]
    need = message_length_v3(count, family)
    if len(msg) != need:
        raise DecodeError(Reason.LENGTH, f"{len(msg)} bytes, {count} IPv{family} addresses need {need}", vrid)
    as_v2: bool
    if family == 6 or mode is False:
        ok, as_v2 = checksum_v3(msg, src, dst) == 0, False
    elif mode is True:
        ok, as_v2 = checksum(msg) == 0, True
    elif checksum_v3(msg, src, dst) == 0:
        ok, as_v2 = True, False
    else:
        ok, as_v2 = checksum(msg) == 0, True
    if not ok:
        got = int.from_bytes(msg[6:8], "big")
        zeroed = msg[:6] + b"\0\0" + msg[8:]
        want = checksum_v3(zeroed, src, dst, checksum_as_v2=bool(mode))
        form = "message-only" if family == 4 and mode else "pseudo-header"
        extra = f" (message-only {checksum(zeroed):#06x})" if family == 4 and mode is None else ""
        raise DecodeError(Reason.CHECKSUM, f"checksum {got:#06x}, computed {want:#06x} ({form}){extra}", vrid)
    if vrid == 0:
        raise DecodeError(Reason.VRID, "vrid 0", vrid)
    size = 4 if family == 4 else 16
    addrs: tuple[IPv4Address, ...] | tuple[IPv6Address, ...]
    if family == 4:
        addrs = tuple(
            IPv4Address(msg[HEADER_LEN + size * i : HEADER_LEN + size * (i + 1)]) for i in range(count)
        )
    else:
        addrs = tuple(
            IPv6Address(msg[HEADER_LEN + size * i : HEADER_LEN + size * (i + 1)]) for i in range(count)
        )
    adv = AdvertV3(
        vrid=msg[1],
        priority=msg[2],
        max_advert_int=int.from_bytes(msg[4:6], "big") & MAX_ADVER_INT_CS,
        addresses=addrs,
        family=family,
    )
    return adv, as_v2


def decode_ip_v3(datagram: bytes, *, checksum_as_v2: bool | None = None) -> PacketV3:
    """Parse an IPv4 datagram carrying VRRPv3, as the ``IP_HDRINCL`` raw socket returns it: the IPv4 checks
    of :func:`decode_ip`, then :func:`decode_v3` with the header's source and destination. Raises
    :class:`DecodeError`."""
    msg, src, dst, ttl = _ipv4_payload(datagram)
    adv, as_v2 = _decode_v3(msg, src, dst, checksum_as_v2)
    return PacketV3(src=src, dst=dst, ttl=ttl, advert=adv, checksum_as_v2=as_v2)


def decode_ip_any(datagram: bytes, *, checksum_as_v2: bool | None = None) -> Packet | PacketV3:
    """An IPv4 datagram with a VRRPv2 or a VRRPv3 advert, told apart by the version nibble (both versions
    can share one interface with different VRIDs). Version 3 goes to :func:`decode_ip_v3`, anything else to
    :func:`decode_ip` (which rejects versions other than 2). Raises :class:`DecodeError`."""
    if len(datagram) >= _IPV4_MIN_HEADER and datagram[0] >> 4 == 4:
        ihl = (datagram[0] & 0x0F) * 4
        if _IPV4_MIN_HEADER <= ihl < len(datagram) and datagram[ihl] >> 4 == VRRP_VERSION_3:
            return decode_ip_v3(datagram, checksum_as_v2=checksum_as_v2)
    return decode_ip(datagram)


def decode_ipv6(msg: bytes, *, src: IPv6Address, dst: IPv6Address, hop_limit: int) -> PacketV3:
    """Parse what an ``AF_INET6`` raw ``IPPROTO_VRRP`` socket returns: the bare VRRPv3 message, with the
    source (the sender's link-local address), destination and hop limit taken from ``recvmsg``'s address
    and ``IPV6_PKTINFO`` / ``IPV6_HOPLIMIT`` ancillary data. The checksum is verified here too (the kernel
    verifies it only when ``IPV6_CHECKSUM`` is set on the socket). Raises :class:`DecodeError`."""
    adv, _ = _decode_v3(msg, src, dst, False)
    return PacketV3(src=src, dst=dst, ttl=hop_limit, advert=adv, checksum_as_v2=False)


def encode_ip_v3(
    src: IPv4Address, dst: IPv4Address, adv: AdvertV3, ident: int = 0, *, checksum_as_v2: bool = False
) -> bytes:
    """IPv4 header (as :func:`encode_ip`) + VRRPv3 message, for the ``IP_HDRINCL`` socket."""
    msg = encode_v3(adv, src, dst, checksum_as_v2=checksum_as_v2)
    return _ipv4_header(src, dst, len(msg), ident) + msg


def virtual_mac6(vrid: int) -> bytes:
    """The IPv6 VRRP virtual MAC 00-00-5E-00-02-{VRID} (RFC 5798 section 7.3)."""
    if not 1 <= vrid <= 255:
        raise ValueError(f"vrid {vrid} not in 1..255")
    return bytes((0x00, 0x00, 0x5E, 0x00, 0x02, vrid))


def na_frame(mac: bytes, ip: IPv6Address, *, router: bool = False, override: bool = True) -> bytes:
    """An unsolicited Neighbor Advertisement for ``ip`` (RFC 4861 section 4.4), the IPv6 counterpart of
    :func:`garp_frame`, as keepalived 2.2.7 sends it (``vrrp_ndisc.c``): Ethernet to 33:33:00:00:00:01 from
    ``mac``; IPv6 from the VIP itself to ff02::1, traffic class 0, flow label 0, hop limit 255; ICMPv6 type
    136 with the Override flag (Solicited clear; Router only when ``router``, which keepalived sets when the
    interface forwards), target ``ip`` and a Target Link-Layer Address option carrying ``mac``. 86 bytes."""
    if len(mac) != 6:
        raise ValueError("mac must be 6 bytes")
    flags = (_NA_ROUTER if router else 0) | (_NA_OVERRIDE if override else 0)
    body = bytes((flags, 0, 0, 0)) + ip.packed + bytes((2, 1)) + mac
    icmp = bytes((_ND_NA_TYPE, 0, 0, 0)) + body
    ph = ip.packed + ALL_NODES6.packed + len(icmp).to_bytes(4, "big") + bytes((0, 0, 0, ICMPV6_PROTO))
    icmp = icmp[:2] + checksum(ph + icmp).to_bytes(2, "big") + icmp[4:]
    ip6 = struct.pack("!IHBB", 6 << 28, len(icmp), ICMPV6_PROTO, VRRP_TTL) + ip.packed + ALL_NODES6.packed
    eth = b"\x33\x33\x00\x00\x00\x01" + mac + _ETH_P_IPV6
    return eth + ip6 + icmp


def check_v3(
    packet: PacketV3,
    *,
    vrid: int,
    vips: Sequence[IPAddress],
    unicast_peers: Sequence[IPAddress] = (),
    owner: bool = False,
    owner_ignore_adverts: bool = False,
) -> Check:
    """The receive checks of RFC 5798 section 7.1 that need local configuration, in the RFC's order.

    As :func:`check` for v2, except: there is no authentication; the interval is *not* compared with ours
    (v3 backups learn it from the master, section 6.4.2); a Max Adver Int of 0 is discarded as ``INTERVAL``
    (outside the 1..4095 range; keepalived 2.2.7 would learn 0 and take over at once); and the hop limit
    must be 255 for IPv6 as the TTL for IPv4 (multicast mode only).
    """
    adv = packet.advert
    if not unicast_peers and packet.ttl != VRRP_TTL:
        what = "TTL" if adv.family == 4 else "hop limit"
        return Check(Reason.TTL, f"{what} {packet.ttl} from {packet.src}, expected {VRRP_TTL}")
    if adv.vrid != vrid:
        return Check(Reason.VRID, f"VRID {adv.vrid} from {packet.src}, ours is {vrid}")
    if owner and owner_ignore_adverts:
        return Check(Reason.OWNER, f"we own the addresses (priority 255); advert from {packet.src} ignored")
    if adv.max_advert_int == 0:
        return Check(Reason.INTERVAL, f"Max Adver Int 0 from {packet.src} (valid: 1..{MAX_ADVER_INT_CS} cs)")
    if unicast_peers and packet.src not in unicast_peers:
        return Check(Reason.PEER, f"source {packet.src} is not a configured unicast peer")
    if set(adv.addresses) != set(vips) or len(adv.addresses) != len(vips):
        theirs = ",".join(str(a) for a in adv.addresses) or "-"
        ours = ",".join(str(a) for a in vips) or "-"
        detail = f"addresses from {packet.src} [{theirs}] != ours [{ours}]"
        return Check(None, warnings=((Reason.ADDR_LIST, detail),))
    return Check(None)
