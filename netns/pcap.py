"""Just enough of the pcap format to time VRRP adverts and gratuitous ARPs in a bridge capture."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path


@dataclass(frozen=True, slots=True)
class VrrpAdvert:
    time: float
    src: str
    vrid: int
    priority: int


@dataclass(frozen=True, slots=True)
class Garp:
    time: float
    ip: str
    mac: str


def _records(path: Path) -> list[tuple[float, bytes]]:
    data = path.read_bytes()
    if len(data) < 24:
        return []
    magic = data[:4]
    if magic == b"\xd4\xc3\xb2\xa1":
        endian, scale = "<", 1e-6
    elif magic == b"\xa1\xb2\xc3\xd4":
        endian, scale = ">", 1e-6
    elif magic == b"\x4d\x3c\xb2\xa1":
        endian, scale = "<", 1e-9
    elif magic == b"\xa1\xb2\x3c\x4d":
        endian, scale = ">", 1e-9
    else:
        raise ValueError(f"{path}: not a pcap file")
    out: list[tuple[float, bytes]] = []
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack(endian + "IIII", data[off : off + 16])
        off += 16
        if off + incl > len(data):
            break  # a record cut by the capture stopping
        out.append((sec + frac * scale, data[off : off + incl]))
        off += incl
    return out


def vrrp_adverts(path: Path) -> list[VrrpAdvert]:
    """Every VRRP advert (IPv4 protocol 112) in an Ethernet capture."""
    found: list[VrrpAdvert] = []
    for ts, frame in _records(path):
        if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 112 or len(ip) < ihl + 8:
            continue
        src = str(IPv4Address(ip[12:16]))
        vrrp = ip[ihl:]
        found.append(VrrpAdvert(ts, src, vrrp[1], vrrp[2]))
    return found


def garps(path: Path) -> list[Garp]:
    """Gratuitous ARPs (sender IP == target IP) in an Ethernet capture."""
    found: list[Garp] = []
    for ts, frame in _records(path):
        if len(frame) < 14 + 28 or frame[12:14] != b"\x08\x06":
            continue
        arp = frame[14:]
        spa, tpa = arp[14:18], arp[24:28]
        if spa == tpa:
            mac = ":".join(f"{b:02x}" for b in arp[8:14])
            found.append(Garp(ts, str(IPv4Address(spa)), mac))
    return found
