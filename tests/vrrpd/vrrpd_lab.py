"""Helpers for the vrrpd namespace tests: config text, starting daemons, reading their status."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path
from typing import Any

from netns import Host, Lab, Proc, Switch, wait_until
from vrrpd.control import query

PY = sys.executable
VIP = "192.0.2.100"
ROOT = str(Path(__file__).resolve().parents[2])


def instance_toml(
    *,
    prio: int,
    vrid: int = 51,
    name: str = "VI_1",
    vips: list[str] | None = None,
    auth: str | None = "rmqlab51",
    extra: str = "",
) -> str:
    vl = ", ".join(f'"{v}"' for v in (vips if vips is not None else [f"{VIP}/24"]))
    lines = [
        "[[vrrp_instance]]",
        f'name = "{name}"',
        'interface = "eth0"',
        f"virtual_router_id = {vrid}",
        f"priority = {prio}",
        "advert_int = 1",
        f"virtual_ipaddress = [{vl}]",
    ]
    if auth:
        lines.append(f'auth_pass = "{auth}"')
    return "\n".join(lines) + "\n" + textwrap.dedent(extra).strip() + "\n"


class Router:
    def __init__(self, lab: Lab, host: Host, conf: Path, sock: str) -> None:
        self.lab = lab
        self.host = host
        self.conf = conf
        self.sock = sock
        self.proc: Proc | None = None

    def start(self, *, loop: str = "uvloop", wait: bool = True) -> Router:
        argv = [PY, "-m", "vrrpd", "-c", str(self.conf), "--loop", loop]
        self.proc = self.host.start(
            argv,
            name="vrrpd",
            env={"PYTHONPATH": ROOT},
            ready=(lambda: self.status()) if wait else None,
            ready_timeout=30,  # start-up in a namespace on a busy machine (readiness, not a claim)
        )
        return self

    def status(self) -> dict[str, Any]:
        return query(self.sock, timeout=2.0)

    def inst(self, name: str = "VI_1") -> dict[str, Any]:
        for i in self.status()["instances"]:
            if i["name"] == name:
                return dict(i)
        raise KeyError(name)

    def state(self, name: str = "VI_1") -> str:
        try:
            return str(self.inst(name)["state"])
        except (OSError, ValueError, KeyError):
            return "DOWN"

    def counters(self, name: str = "VI_1") -> dict[str, Any]:
        return dict(self.inst(name)["counters"])

    def wait_state(self, state: str, timeout: float = 8.0, name: str = "VI_1") -> None:
        wait_until(lambda: self.state(name) == state, timeout, what=f"{self.host.name} {name} {state}")

    def has_vip(self, ip: str = VIP) -> bool:
        return self.host.has_address(ip)

    def write(self, text: str) -> None:
        self.conf.write_text(text)


def make_router(lab: Lab, host: Host, body: str, global_extra: str = "") -> Router:
    sock = str(lab.workdir / f"{host.name}.sock")
    conf = lab.workdir / f"{host.name}.toml"
    head = (
        f'[global]\nrouter_id = "{host.name}"\ncontrol_socket = "{sock}"\n{textwrap.dedent(global_extra)}\n'
    )
    conf.write_text(head + body)
    return Router(lab, host, conf, sock)


def global_head(lab: Lab, host: Host, extra: str = "") -> str:
    sock = str(lab.workdir / f"{host.name}.sock")
    return f'[global]\nrouter_id = "{host.name}"\ncontrol_socket = "{sock}"\n{textwrap.dedent(extra)}\n'


def topology(lab: Lab, n: int, *, client: bool = False) -> tuple[Switch, list[Host]]:
    sw = lab.switch()
    hosts = []
    for i in range(n):
        h = lab.host(f"lb{i + 1}")
        lab.link(h, sw, f"192.0.2.{21 + i}/24")
        hosts.append(h)
    if client:
        c = lab.host("client")
        lab.link(c, sw, "192.0.2.50/24")
        hosts.append(c)
    return sw, hosts


def vip_holders(hosts: list[Host], ip: str = VIP) -> list[str]:
    return [h.name for h in hosts if h.has_address(ip)]


def which_master(routers: list[Router], name: str = "VI_1") -> list[str]:
    return [r.host.name for r in routers if r.state(name) == "MASTER"]


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")
