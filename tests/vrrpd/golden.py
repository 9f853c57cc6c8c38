# ruff: noqa: E501  (verbatim capture script and hex vectors)
"""Golden VRRPv2 vectors.

Three sources, none of them produced by vrrpd's own codec:

1. ``RFC_VECTORS``: the four messages of ../shared/reference/vrrp.md section 3.1 (the first is scapy's regression
   vector ``test/scapy/layers/vrrp.uts``).
2. ``LAB_FACTS_FRAME``: the keepalived advert frame quoted in ../shared/reference/lab-facts.md (lb1, priority 150,
   password "rmqlab51", VIP 192.0.2.100).
3. ``CAPTURED``: frames captured by hand on 2026-11-21 from Debian's keepalived 2.2.7 (``Keepalived v2.2.7
   (01/16,2022)``) in throw-away network namespaces, with this script (run as root, nothing in the root
   namespace; namespaces deleted on exit):

       ./capture.sh pass yes 51 150 100 192.0.2.100
       ./capture.sh none no  52 200 50  192.0.2.110 192.0.2.111

   and then, per run, the first frame of each kind was taken from ``$TAG/cap.pcap`` with
   ``scapy.all.rdpcap`` (``bytes(pkt).hex()``), deduplicated by (source IP, priority) for adverts and by source
   MAC for ARP. ``tcpdump -nn -e -r cap.pcap`` shows the same packets ("authtype simple" for the PASS run).

   The script (``capture.sh``)::

       #!/bin/bash
       # Capture VRRP adverts and GARPs from Debian's keepalived 2.2.7 in throw-away namespaces.
       # usage: capture.sh TAG AUTH(yes|no) VRID PRIO_A PRIO_B VIPS...
       set -eu
       TAG=$1; AUTH=$2; VRID=$3; PA=$4; PB=$5; shift 5; VIPS="$*"
       R=vc-$(head -c3 /dev/urandom | od -An -tx1 | tr -d ' \n')
       SW=$R-sw; A=$R-a; B=$R-b; D=/tmp/vc-cap/$TAG; mkdir -p $D
       cleanup() {
         for f in $D/run-a.pid $D/run-b.pid $D/tcpdump.pid; do [ -s $f ] && kill $(cat $f) 2>/dev/null || true; done
         sleep 0.5
         ip netns del $A 2>/dev/null || true; ip netns del $B 2>/dev/null || true; ip netns del $SW 2>/dev/null || true
       }
       trap cleanup EXIT
       ip netns add $SW; ip netns add $A; ip netns add $B
       ip -n $SW link add br0 type bridge stp_state 0; ip -n $SW link set br0 up; ip -n $SW link set lo up
       i=0
       for N in $A $B; do
         i=$((i+1))
         ip -n $N link add eth0 type veth peer name p$i netns $SW
         ip -n $N addr add 192.0.2.$((20+i))/24 dev eth0; ip -n $N link set eth0 up; ip -n $N link set lo up
         ip -n $SW link set p$i master br0; ip -n $SW link set p$i up
       done
       mkconf() { # name prio
         {
         echo "global_defs { router_id $1 }"
         echo "vrrp_instance VI_$VRID {"
         echo "  state BACKUP"; echo "  interface eth0"; echo "  virtual_router_id $VRID"; echo "  priority $2"; echo "  advert_int 1"
         if [ "$AUTH" = yes ]; then printf '  authentication {\n    auth_type PASS\n    auth_pass vc%s\n  }\n' "$VRID-pw"; fi
         echo "  virtual_ipaddress {"; for v in $VIPS; do echo "    $v/24"; done; echo "  }"
         echo "}"
         } > $D/$1.conf
       }
       mkconf a $PA; mkconf b $PB
       ip netns exec $SW tcpdump -Z root -i br0 -w $D/cap.pcap -U 'vrrp or arp' >$D/tcpdump.log 2>&1 & echo $! > $D/tcpdump.pid
       sleep 1
       ip netns exec $A keepalived -n -l -P -f $D/a.conf -p $D/ka-a.pid -r $D/ka-a-vrrp.pid >$D/a.log 2>&1 & echo $! > $D/run-a.pid
       sleep 0.3
       ip netns exec $B keepalived -n -l -P -f $D/b.conf -p $D/ka-b.pid -r $D/ka-b-vrrp.pid >$D/b.log 2>&1 & echo $! > $D/run-b.pid
       sleep 6     # a (higher priority) wins after its Master_Down_Interval and advertises
       kill -TERM $(cat $D/run-a.pid)   # graceful stop: priority-0 advert, b takes over after Skew_Time
       sleep 3
       kill -TERM $(cat $D/run-b.pid)
       sleep 1

   Observed timings in these captures (keepalived's figures to match): priority-0 advert -> first advert of the
   new master 0.6095 s at priority 100 (Skew_Time 0.609375) and 0.8050 s at priority 50 (0.8047); the first
   advert and the 5 GARPs of a new master within 1.1 ms; GARP frames are 42 bytes (no padding on veth).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address


@dataclass(frozen=True)
class Vector:
    """Expected fields of one VRRP message (or of one captured Ethernet frame)."""

    hex: str
    vrid: int
    priority: int
    advert_int: int
    addresses: tuple[str, ...]
    auth_type: int
    auth_data: bytes
    src: str = ""
    ttl: int = 255
    ip_id: int = 0
    note: str = ""

    @property
    def raw(self) -> bytes:
        return bytes.fromhex(self.hex)

    @property
    def ips(self) -> tuple[IPv4Address, ...]:
        return tuple(IPv4Address(a) for a in self.addresses)


NUL8 = b"\0" * 8

# VRRP messages only (no IP header).
RFC_VECTORS = [
    Vector("2101640000017afd0000000000000000", 1, 100, 1, (), 0, NUL8, note="scapy vrrp.uts"),
    Vector("213364010001b8bdc0a801640000000000000000", 51, 100, 1, ("192.168.1.100",), 0, NUL8),
    Vector("2133960101014971c0a801647365637265740000", 51, 150, 1, ("192.168.1.100",), 1, b"secret\0\0"),
    Vector(
        "2133000100011cbec0a801640000000000000000", 51, 0, 1, ("192.168.1.100",), 0, NUL8, note="shutdown"
    ),
]

# Full Ethernet frames (14-byte Ethernet header, then IPv4 + VRRP).
LAB_FACTS_FRAME = Vector(
    "01005e0000120200c00002150800"
    "45c0002802f50000ff701589c0000215e0000012"
    "2133960101010af8c0000264726d716c61623531",
    51,
    150,
    1,
    ("192.0.2.100",),
    1,
    b"rmqlab51",
    src="192.0.2.21",
    ip_id=0x02F5,
    note="lab-facts.md lb1",
)

_PW51 = b"vc51-pw\0"
CAPTURED = [
    # run "pass": VRID 51, PASS "vc51-pw" (7 bytes, NUL-padded), VIP 192.0.2.100; a=192.0.2.21 prio 150,
    # b=192.0.2.22 prio 100.
    Vector(
        "01005e0000121ecc964de049080045c0002800010000ff70187dc0000215e0000012"
        "2133960101013560c0000264766335312d707700",
        51,
        150,
        1,
        ("192.0.2.100",),
        1,
        _PW51,
        src="192.0.2.21",
        ip_id=1,
        note="a master, prio 150",
    ),
    Vector(
        "01005e0000121ecc964de049080045c0002800040000ff70187ac0000215e0000012"
        "213300010101cb60c0000264766335312d707700",
        51,
        0,
        1,
        ("192.0.2.100",),
        1,
        _PW51,
        src="192.0.2.21",
        ip_id=4,
        note="a SIGTERM, prio 0",
    ),
    Vector(
        "01005e0000124a888b1cc03a080045c0002800010000ff70187cc0000216e0000012"
        "2133640101016760c0000264766335312d707700",
        51,
        100,
        1,
        ("192.0.2.100",),
        1,
        _PW51,
        src="192.0.2.22",
        ip_id=1,
        note="b master, prio 100",
    ),
    Vector(
        "01005e0000124a888b1cc03a080045c0002800040000ff701879c0000216e0000012"
        "213300010101cb60c0000264766335312d707700",
        51,
        0,
        1,
        ("192.0.2.100",),
        1,
        _PW51,
        src="192.0.2.22",
        ip_id=4,
        note="b SIGTERM, prio 0",
    ),
    # run "none": VRID 52, no auth, VIPs 192.0.2.110 and .111; a prio 200, b prio 50.
    Vector(
        "01005e0000127e14f00320b7080045c0002c00010000ff701879c0000215e0000012"
        "2134c802000191e9c000026ec000026f0000000000000000",
        52,
        200,
        1,
        ("192.0.2.110", "192.0.2.111"),
        0,
        NUL8,
        src="192.0.2.21",
        ip_id=1,
        note="a prio 200",
    ),
    Vector(
        "01005e0000127e14f00320b7080045c0002c00050000ff701875c0000215e0000012"
        "21340002000159eac000026ec000026f0000000000000000",
        52,
        0,
        1,
        ("192.0.2.110", "192.0.2.111"),
        0,
        NUL8,
        src="192.0.2.21",
        ip_id=5,
        note="a prio 0",
    ),
    Vector(
        "01005e000012fa07dfdf9490080045c0002c00010000ff701878c0000216e0000012"
        "21343202000127eac000026ec000026f0000000000000000",
        52,
        50,
        1,
        ("192.0.2.110", "192.0.2.111"),
        0,
        NUL8,
        src="192.0.2.22",
        ip_id=1,
        note="b prio 50",
    ),
    Vector(
        "01005e000012fa07dfdf9490080045c0002c00040000ff701875c0000216e0000012"
        "21340002000159eac000026ec000026f0000000000000000",
        52,
        0,
        1,
        ("192.0.2.110", "192.0.2.111"),
        0,
        NUL8,
        src="192.0.2.22",
        ip_id=4,
        note="b prio 0",
    ),
]

# Gratuitous ARPs keepalived sent on becoming master: (frame hex, sender MAC, VIP).
CAPTURED_GARPS = [
    (
        "ffffffffffff1ecc964de049080600010800060400011ecc964de049c0000264ffffffffffffc0000264",
        "1e:cc:96:4d:e0:49",
        "192.0.2.100",
    ),
    (
        "ffffffffffff4a888b1cc03a080600010800060400014a888b1cc03ac0000264ffffffffffffc0000264",
        "4a:88:8b:1c:c0:3a",
        "192.0.2.100",
    ),
    (
        "ffffffffffff7e14f00320b7080600010800060400017e14f00320b7c000026effffffffffffc000026e",
        "7e:14:f0:03:20:b7",
        "192.0.2.110",
    ),
    (
        "fffffffffffffa07dfdf949008060001080006040001fa07dfdf9490c000026effffffffffffc000026e",
        "fa:07:df:df:94:90",
        "192.0.2.110",
    ),
]
