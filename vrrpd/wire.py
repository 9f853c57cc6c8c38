"""VRRPv2 wire format (RFC 3768 section 5): pure encode/decode, no sockets.

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
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address

__all__ = [
    "AUTH_AH",
    "AUTH_NONE",
    "AUTH_PASS",
    "HEADER_LEN",
    "IP_TOS",
    "VRRP_GROUP",
    "VRRP_PROTO",
    "VRRP_TTL",
    "Advert",
    "Check",
    "DecodeError",
    "Packet",
    "Reason",
    "check",
    "checksum",
    "decode",
    "decode_ip",
    "encode",
    "encode_ip",
    "garp_frame",
    "message_length",
    "password",
    "virtual_mac",
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
    adv = decode(bytes(datagram[ihl:total]))
    return Packet(
        src=IPv4Address(datagram[12:16]),
        dst=IPv4Address(datagram[16:20]),
        ttl=datagram[8],
        advert=adv,
    )


def encode_ip(src: IPv4Address, dst: IPv4Address, adv: Advert, ident: int = 0) -> bytes:
    """IPv4 header (TOS 0xc0, TTL 255, DF clear, protocol 112, header checksum filled) + VRRP message.

    With ``IP_HDRINCL`` Linux fills the IP ID when it is 0 and recomputes the header checksum anyway.
    """
    msg = encode(adv)
    total = _IPV4_MIN_HEADER + len(msg)
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
    hdr = hdr[:10] + checksum(hdr).to_bytes(2, "big") + hdr[12:]
    return hdr + msg


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
