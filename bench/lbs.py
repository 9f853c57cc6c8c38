"""Equivalent tcplb and HAProxy configurations, and starting either in a lab host.

Both get the same listener (one bind, the same servers, balance, retries, redispatch, timeouts and
``check inter rise fall``); HAProxy runs in the foreground (``-db``) with Debian's defaults otherwise
(threads = CPUs), tcplb on uvloop. No per-connection logging on either side (HAProxy logs nothing without a
``log`` line; tcplb gets ``log = "none"``).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import PY, ROOT
from netns import Host, Proc, wait_until


@dataclass(frozen=True)
class LBSpec:
    binds: list[tuple[str, int]]
    servers: list[tuple[str, str, int]]  # (name, ip, port)
    balance: str = "leastconn"
    inter: str = "1s"
    rise: int = 2
    fall: int = 3
    retries: int = 3
    redispatch: bool = False
    maxconn: int = 4000
    timeout_connect: str = "5s"
    timeout_idle: str = "3h"
    check: bool = True
    extra_tcplb: dict[str, str] = field(default_factory=dict)  # listener keys, TOML values as text
    extra_haproxy: list[str] = field(default_factory=list)  # listen-section lines


def tcplb_toml(spec: LBSpec, name: str = "bench") -> str:
    binds = ", ".join(f'"{ip}:{port}"' for ip, port in spec.binds)
    servers = ",\n".join(f'  {{ name = "{n}", address = "{ip}:{port}" }}' for n, ip, port in spec.servers)
    check = (
        f'{{ type = "tcp", inter = "{spec.inter}", rise = {spec.rise}, fall = {spec.fall} }}'
        if spec.check
        else "false"
    )
    extra = "".join(f"{k} = {v}\n" for k, v in spec.extra_tcplb.items())
    return (
        textwrap.dedent(
            f"""\
            [global]
            maxconn = {spec.maxconn}
            hard_stop_after = "2s"
            log = "none"

            [defaults]
            timeout_connect = "{spec.timeout_connect}"
            timeout_client = "{spec.timeout_idle}"
            timeout_server = "{spec.timeout_idle}"
            retries = {spec.retries}
            redispatch = {"true" if spec.redispatch else "false"}

            [listen.{name}]
            bind = [{binds}]
            balance = "{spec.balance}"
            maxconn = {spec.maxconn}
            check = {check}
            """
        )
        + extra
        + "server = [\n"
        + servers
        + "\n]\n"
    )


def haproxy_cfg(spec: LBSpec, name: str = "bench", pidfile: Path | None = None) -> str:
    chk = f" check inter {spec.inter} rise {spec.rise} fall {spec.fall}" if spec.check else ""
    lines = [
        "global",
        f"  maxconn {spec.maxconn}",
        *([f"  pidfile {pidfile}"] if pidfile else []),
        "defaults",
        "  mode tcp",
        f"  timeout connect {spec.timeout_connect}",
        f"  timeout client {spec.timeout_idle}",
        f"  timeout server {spec.timeout_idle}",
        f"  retries {spec.retries}",
        *(["  option redispatch"] if spec.redispatch else []),
        f"listen {name}",
        *[f"  bind {ip}:{port}" for ip, port in spec.binds],
        f"  balance {spec.balance}",
        f"  maxconn {spec.maxconn}",
        *[f"  {line}" for line in spec.extra_haproxy],
        *[f"  server {n} {ip}:{port}{chk}" for n, ip, port in spec.servers],
    ]
    return "\n".join(lines) + "\n"


def listening(host: Host, ip: str, port: int) -> bool:
    out = host.run(["ss", "-Hltn"], check=False).stdout
    return any(
        len(c := line.split()) > 3 and c[3] in (f"{ip}:{port}", f"*:{port}", f"0.0.0.0:{port}")
        for line in out.splitlines()
    )


def start_lb(kind: str, host: Host, spec: LBSpec, *, name: str, workdir: Path, loop: str = "uvloop") -> Proc:
    """Start ``kind`` ("tcplb" or "haproxy", or a name starting with either) and wait until it listens."""
    if kind.startswith("tcplb"):
        cfg = workdir / f"{name}.toml"
        cfg.write_text(tcplb_toml(spec))
        argv = [PY, "-m", "tcplb", "-c", str(cfg), "--loop", loop]
        env = {"PYTHONPATH": str(ROOT)}
    elif kind.startswith("haproxy"):
        cfg = workdir / f"{name}.cfg"
        cfg.write_text(haproxy_cfg(spec, pidfile=workdir / f"{name}.pid"))
        argv = ["haproxy", "-db", "-f", str(cfg)]
        env = {}
    else:
        raise ValueError(f"unknown LB kind {kind!r}")

    def ready() -> bool:
        return all(listening(host, ip, port) for ip, port in spec.binds)

    return host.start(argv, name=name, env=env, ready=ready, ready_timeout=20)


def wait_closed(host: Host, ip: str, port: int, timeout: float = 10) -> None:
    wait_until(lambda: not listening(host, ip, port), timeout, interval=0.1, what=f"{ip}:{port} closed")
