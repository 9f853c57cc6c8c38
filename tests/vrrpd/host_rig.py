"""A :class:`vrrpd.host.Host` on the in-memory :class:`vrrpd.fakeplatform.FakePlatform`, in virtual time."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

from vrrpd import wire
from vrrpd.config import Config, parse
from vrrpd.fakeplatform import FakePlatform
from vrrpd.host import Host

MASTER_IP = "192.0.2.22"
OUR_IP = "192.0.2.21"


def inst(
    name: str = "VI_1", vrid: int = 51, prio: int = 100, vips: list[str] | None = None, **kw: Any
) -> dict[str, Any]:
    d: dict[str, Any] = {
        "name": name,
        "interface": "eth0",
        "virtual_router_id": vrid,
        "priority": prio,
        "advert_int": 1,
        "virtual_ipaddress": vips if vips is not None else ["192.0.2.100/24"],
        "notify": ["/bin/true"],
    }
    d.update(kw)
    return d


def config(*instances: dict[str, Any], **extra: Any) -> Config:
    return parse({"global": {"router_id": "t"}, "vrrp_instance": list(instances), **extra})


def advert(
    src: str = MASTER_IP, prio: int = 150, vrid: int = 51, vips: tuple[str, ...] = ("192.0.2.100",)
) -> bytes:
    adv = wire.Advert(vrid=vrid, priority=prio, advert_int=1, addresses=tuple(IPv4Address(v) for v in vips))
    return wire.encode_ip(IPv4Address(src), wire.VRRP_GROUP, adv, 1)


class Rig:
    def __init__(self, cfg: Config, *, start: bool = True) -> None:
        self.fake = FakePlatform()
        self.fake.add_link("eth0", 2)
        self.fake.operator_add("eth0", f"{OUR_IP}/24")
        self.fake.take()  # the dump tells the host what is there
        self.host = Host(cfg, self.fake)
        self.now = 100.0
        self.host.begin(self.now)
        self.pump()
        if start:
            self.host.start(self.now)
            self.pump()

    def pump(self) -> None:
        """Deliver what the 'kernel' answered until it is quiet (one reconciliation step per round)."""
        for _ in range(20):
            msgs = self.fake.take()
            if not msgs:
                return
            self.host.netlink(msgs, False, self.now)
        raise AssertionError("the host and the fake kernel never settle")

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass, firing every wake-up on time."""
        end = self.now + seconds
        while (d := self.host.next_deadline()) is not None and d <= end:
            self.now = max(self.now, d)
            self.host.timer(self.now)
            self.pump()
        self.now = end

    def receive(self, *datagrams: bytes) -> None:
        self.host.receive("eth0", list(datagrams), self.now)
        self.pump()

    def state(self, name: str = "VI_1") -> str:
        return str(self.host.describe(name)["state"])

    def notify_states(self, name: str = "VI_1") -> list[str]:
        return [str(a[-2]) for a in self.fake.of("notify") if len(a) >= 4 and a[-3] == name]
