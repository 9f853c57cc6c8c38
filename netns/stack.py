"""The full front door in a lab: two LB hosts (vrrpd + tcplb, or keepalived + HAProxy), 3 RabbitMQ nodes,
and a client, all on one switch.

::

    client 192.0.2.50 ──┐
    lb1 192.0.2.21 ─────┤  sw (bridge br0)      VIP 192.0.2.100 (VRID 51) on lb1 or lb2
    lb2 192.0.2.22 ─────┤
    rmq1..3 192.0.2.11-13

Each LB host runs a VRRP daemon and a balancer bound to VIP:5672 (``net.ipv4.ip_nonlocal_bind=1`` in the
LB namespaces). The VRRP daemon tracks the balancer with a script (an HTTP GET on the balancer's stats page
on 127.0.0.1:8404; weight -60, so a dead balancer drops lb1 from 150 to 90, below lb2's 100) and runs a
notify script that appends each state change to ``<workdir>/<lb>.notify``. vrrpd also tracks the tcplb
process itself (``track_process``, the exact argv, weight 0): when tcplb dies the instance goes to FAULT at
once and sends priority 0, so the backup takes over after its Skew_Time (issue #11). keepalived keeps the
script alone: its ``vrrp_track_process`` needs the kernel's process-event connector, which is refused
inside a network namespace (it would stay in FAULT for good).

A :class:`VipMonitor` thread records who holds the VIP every 20 ms: the timeline of every scenario.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from netns import keepalived
from netns.amqp import CLASSIC, QUORUM, AmqpLoad, Burst, Holder, Ledger
from netns.lab import Host, Lab, LabError, Proc, Switch, dead, wait_until
from netns.rabbitmq import (
    AMQP_PORT,
    MGMT_PASSWORD,
    MGMT_USER,
    PROBE_PASSWORD,
    PROBE_USER,
    RabbitCluster,
    greets,
)
from vrrpd import control

VIP = "192.0.2.100"
VRID = 51
ADVERT_INT = 1
AUTH_PASS = "rmqlab51"
PRIORITIES = {"lb1": 150, "lb2": 100}
LB_ADDRS = {"lb1": "192.0.2.21", "lb2": "192.0.2.22"}
CLIENT_ADDR = "192.0.2.50"
STATS_PORT = 8404
STATS_AUTH = "admin:lab-admin"  # tcplb's stats.auth (its admin API always needs a user)
TRACK_WEIGHT = -60
GREETING_TIMEOUT = "1s"  # tcplb: a broker silent this long after the client's header is a failed connect
SLOWSTART = "10s"  # tcplb: a node that comes back gets its weight ramped over this
# A healed partition where the backup hears the master's advert first: keepalived (higher_prio_send_advert off
# by default) then sends no gratuitous ARP, and clients keep the other box's MAC until their ARP entry expires
# (30-45 s); its remedy, a periodic GARP from the master, is used for keepalived. vrrpd needs none: a master
# that yields sends one last advert, which the winner answers with a GARP burst (higher_prio_send_advert).
GARP_REFRESH_KEEPALIVED = 1
PY = sys.executable

VrrpKind = Literal["vrrpd", "keepalived"]
BalancerKind = Literal["tcplb", "haproxy"]


def skew_time(priority: int) -> float:
    return (256 - priority) / 256


def is_v3(advert_int: float) -> bool:
    """The stack runs VRRPv3 (vrrpd ``version = 3``, keepalived ``vrrp_version 3``) for a sub-second or
    fractional advert interval, VRRPv2 otherwise."""
    return advert_int < 1 or advert_int != int(advert_int)


def master_down_interval(priority: int, advert_int: float = ADVERT_INT) -> float:
    """3 x interval + Skew_Time; the VRRPv3 Skew_Time scales with the interval (RFC 5798 6.1)."""
    skew = (256 - priority) * advert_int / 256 if is_v3(advert_int) else skew_time(priority)
    return 3 * advert_int + skew


def _package_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


NOTIFY_SH = """#!/bin/sh
# $1=INSTANCE|GROUP $2=name $3=state $4=priority (keepalived's and vrrpd's generic notify)
echo "$(date +%s.%N) $3 $4" >> {path}
"""


# ------------------------------------------------------------------------------------------ configs


def tcplb_toml(
    servers: list[tuple[str, str]],
    *,
    check_inter: str = "1s",
    send_proxy: str = "none",
    rebalance: dict[str, str] | None = None,
    timeout_idle: str = "3h",
) -> str:
    """tcplb's config for an LB node: an AMQP listener (``protocol = "amqp"``: a server connection counts
    when the broker greets, a silent one is retried elsewhere after ``timeout_greeting``), leastconn,
    slowstart, and the ``rabbitmq`` check: a clean AMQP probe as :data:`PROBE_USER` plus each node's state
    and alarms from its management API (``/api/nodes/rabbit@rmqN`` on 3.10). ``send_proxy``: PROXY protocol
    toward the brokers (and on the checks); ``rebalance``: a ``[listen.rabbitmq.rebalance]`` table (TOML
    values as text); ``timeout_idle``: ``timeout_client``/``timeout_server``."""
    rows = ",\n".join(
        f'  {{ name = "{n}", address = "{ip}:{AMQP_PORT}", '
        f'check = {{ management = {{ node = "rabbit@{n}" }} }} }}'
        for n, ip in servers
    )
    check = (
        f'{{ type = "rabbitmq", inter = "{check_inter}", fastinter = "250ms", rise = 2, fall = 2, '
        f'user = "{PROBE_USER}", password = "{PROBE_PASSWORD}", '
        f'management = {{ user = "{MGMT_USER}", password = "{MGMT_PASSWORD}", inter = "2s" }} }}'
    )
    rb = ""
    if rebalance:
        rb = "\n[listen.rabbitmq.rebalance]\n" + "".join(f"{k} = {v}\n" for k, v in rebalance.items())
    return (
        textwrap.dedent(
            f"""\
        [global]
        maxconn = 4000
        hard_stop_after = "5s"

        [defaults]
        timeout_connect = "2s"
        timeout_client = "{timeout_idle}"
        timeout_server = "{timeout_idle}"
        timeout_check = "1s"
        retries = 3
        redispatch = true

        [listen.rabbitmq]
        bind = ["{VIP}:{AMQP_PORT}"]
        balance = "leastconn"
        protocol = "amqp"
        timeout_greeting = "{GREETING_TIMEOUT}"
        send_proxy = "{send_proxy}"
        default_server = {{ slowstart = "{SLOWSTART}" }}
        """
        )
        + f"check = {check}\nserver = [\n"
        + rows
        + "\n]\n"
        + rb
        + textwrap.dedent(
            f"""
        [stats]
        bind = "127.0.0.1:{STATS_PORT}"
        auth = ["{STATS_AUTH}"]
        admin = true
        """
        )
    )


def haproxy_cfg(servers: list[tuple[str, str]], pidfile: Path) -> str:
    rows = "\n".join(f"  server {n} {ip}:{AMQP_PORT} check inter 1s rise 2 fall 3" for n, ip in servers)
    return (
        textwrap.dedent(
            f"""\
        global
          maxconn 6000
          pidfile {pidfile}
        defaults
          mode tcp
          timeout connect 2s
          timeout client 3h
          timeout server 3h
          retries 3
          option redispatch
        listen rabbitmq
          bind {VIP}:{AMQP_PORT}
          balance leastconn
        """
        )
        + rows
        + textwrap.dedent(
            f"""
        listen stats
          bind 127.0.0.1:{STATS_PORT}
          mode http
          stats enable
          stats uri /stats
        """
        )
    )


TRACK_ARGV = [
    "/usr/bin/curl", "-sf", "-o", "/dev/null", "-m", "1", "-u", STATS_AUTH, f"http://127.0.0.1:{STATS_PORT}/stats"
]  # fmt: skip


def balancer_argv(wd: Path, name: str) -> list[str]:
    """How a node's tcplb is started: also what vrrpd's ``track_process`` matches (the exact argv, unique per
    node by its config path)."""
    return [PY, "-m", "tcplb", "-c", str(wd / f"{name}.lb.toml")]


def vrrpd_toml(
    name: str,
    priority: int,
    sock: Path,
    notify: Path,
    lb_argv: list[str] | None = None,
    advert_int: float = ADVERT_INT,
) -> str:
    """vrrpd's config for an LB node; with ``lb_argv`` (tcplb's command line) the instance also tracks that
    process with weight 0 (FAULT, priority 0 while tcplb is not running). A sub-second ``advert_int`` makes
    it VRRPv3 (no authentication there)."""
    track = ", ".join(f'"{a}"' for a in TRACK_ARGV)
    if is_v3(advert_int):
        version_auth = f"version = 3\n        advert_int = {advert_int:g}"
    else:
        version_auth = f'advert_int = {advert_int:g}\n        auth_pass = "{AUTH_PASS}"'
    process = ""
    if lb_argv is not None:
        argv = ", ".join(json.dumps(a) for a in lb_argv)
        process = f"""
        [vrrp_track_process.lb]
        process = [{argv}]
        weight = 0
        """
    tracks = 'track_process = ["lb"]\n        ' if lb_argv is not None else ""
    return textwrap.dedent(
        f"""\
        [global]
        router_id = "{name}"
        control_socket = "{sock}"

        [[vrrp_instance]]
        name = "VI_1"
        interface = "eth0"
        virtual_router_id = {VRID}
        priority = {priority}
        {version_auth}
        virtual_ipaddress = ["{VIP}/24"]
        track_script = ["chk_lb"]
        {tracks}notify = ["{notify}"]

        [vrrp_script.chk_lb]
        script = [{track}]
        interval = 1
        timeout = 1
        rise = 2
        fall = 2
        weight = {TRACK_WEIGHT}
        """
    ) + textwrap.dedent(process)


def keepalived_conf(name: str, priority: int, notify: Path, advert_int: float = ADVERT_INT) -> str:
    """keepalived's config for an LB node (VRRPv3 without authentication for a sub-second ``advert_int``)."""
    if is_v3(advert_int):
        auth, version = "", "\n          vrrp_version 3"
    else:
        auth = (
            f"authentication {{\n            auth_type PASS\n            auth_pass {AUTH_PASS}\n          }}"
        )
        version = ""
    return textwrap.dedent(
        f"""\
        global_defs {{
          router_id {name}
          script_user root{version}
        }}
        vrrp_script chk_lb {{
          script "{" ".join(TRACK_ARGV)}"
          interval 1
          timeout 1
          rise 2
          fall 2
          weight {TRACK_WEIGHT}
        }}
        vrrp_instance VI_1 {{
          state BACKUP
          interface eth0
          virtual_router_id {VRID}
          priority {priority}
          advert_int {advert_int:g}
          {auth}
          virtual_ipaddress {{
            {VIP}/24 dev eth0
          }}
          garp_master_refresh {GARP_REFRESH_KEEPALIVED}
          track_script {{
            chk_lb
          }}
          notify "{notify}"
        }}
        """
    )


# ------------------------------------------------------------------------------------------ LB hosts


@dataclass
class LBNode:
    """One load-balancer host and its two daemons."""

    stack: Stack
    host: Host
    priority: int
    vrrp_kind: VrrpKind = "vrrpd"
    balancer_kind: BalancerKind = "tcplb"
    vrrp: Proc | None = None
    balancer: Proc | None = None
    generation: int = 0

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def wd(self) -> Path:
        return self.stack.lab.workdir

    @property
    def sock(self) -> Path:
        return self.wd / f"{self.name}.vrrpd.sock"

    @property
    def notify_log(self) -> Path:
        return self.wd / f"{self.name}.notify"

    def _write_configs(self) -> None:
        servers = [(n.name, n.ip) for n in self.stack.rabbit.nodes]
        notify = self.wd / f"{self.name}-notify.sh"
        notify.write_text(NOTIFY_SH.format(path=self.notify_log))
        os.chmod(notify, 0o755)
        if self.balancer_kind == "tcplb":
            st = self.stack
            cfg = tcplb_toml(
                servers, send_proxy=st.send_proxy, rebalance=st.rebalance, timeout_idle=st.timeout_idle
            )
            (self.wd / f"{self.name}.lb.toml").write_text(cfg)
        else:
            pid = self.wd / f"{self.name}.haproxy.pid"
            (self.wd / f"{self.name}.haproxy.cfg").write_text(haproxy_cfg(servers, pid))
        if self.vrrp_kind == "vrrpd":
            lb_argv = balancer_argv(self.wd, self.name) if self.balancer_kind == "tcplb" else None
            (self.wd / f"{self.name}.node.toml").write_text(
                vrrpd_toml(self.name, self.priority, self.sock, notify, lb_argv, self.stack.advert_int)
            )
        else:
            (self.wd / f"{self.name}.keepalived.conf").write_text(
                keepalived_conf(self.name, self.priority, notify, self.stack.advert_int)
            )

    def _listening(self, port: int, ip: str | None = None) -> bool:
        out = self.host.run(["ss", "-Hltn"], check=False).stdout
        for line in out.splitlines():
            cols = line.split()
            if len(cols) > 3 and cols[3].endswith(f":{port}") and (ip is None or cols[3].startswith(ip)):
                return True
        return False

    def stats_ok(self) -> bool:
        res = self.host.run(TRACK_ARGV, check=False, timeout=5)
        return res.returncode == 0

    def start_balancer(self) -> Proc:
        self.generation += 1
        g = self.generation
        if self.balancer_kind == "tcplb":
            argv = balancer_argv(self.wd, self.name)
            env = {"PYTHONPATH": _package_root()}
        else:
            argv = ["haproxy", "-db", "-f", str(self.wd / f"{self.name}.haproxy.cfg")]
            env = {}
        self.balancer = self.host.start(
            argv,
            name=f"{self.balancer_kind}-{g}",
            env=env,
            ready=lambda: self._listening(AMQP_PORT, VIP) and self.stats_ok(),
            ready_timeout=20,
        )
        return self.balancer

    def start_vrrp(self) -> Proc:
        g = self.generation
        if self.vrrp_kind == "vrrpd":
            argv = [PY, "-m", "vrrpd", "-c", str(self.wd / f"{self.name}.node.toml")]
            self.vrrp = self.host.start(
                argv,
                name=f"vrrpd-{g}",
                env={"PYTHONPATH": _package_root()},
                ready=self._vrrpd_up,
                ready_timeout=20,
            )
        else:
            argv = keepalived.argv(
                self.wd / f"{self.name}.keepalived.conf",
                self.wd / f"{self.name}.keepalived.pid",
                self.wd / f"{self.name}.keepalived-vrrp.pid",
            )
            self.vrrp = self.host.start(argv, name=f"keepalived-{g}", ready_log="VI_1", ready_timeout=20)
        return self.vrrp

    def _vrrpd_up(self) -> bool:
        return self.vrrp_status() is not None

    def start(self) -> None:
        self._write_configs()
        self.start_balancer()
        self.start_vrrp()

    def vrrp_status(self) -> dict[str, Any] | None:
        if self.vrrp_kind != "vrrpd":
            return None
        try:
            return control.query(str(self.sock), timeout=1.0)
        except (OSError, ValueError):
            return None

    def state(self) -> str:
        """VRRP state: vrrpd's status socket, or the last notify line (keepalived); DOWN if not running."""
        if self.vrrp is None or not self.vrrp.alive():
            return "DOWN"
        if self.vrrp_kind == "vrrpd":
            st = self.vrrp_status()
            if st is None:
                return "UNKNOWN"
            for inst in st.get("instances", []):
                if inst.get("name") == "VI_1":
                    return str(inst.get("state"))
            return "UNKNOWN"
        try:
            lines = self.notify_log.read_text().splitlines()
        except OSError:
            return "BACKUP"
        return lines[-1].split()[1] if lines else "BACKUP"

    def has_vip(self) -> bool:
        return self.host.has_address(VIP)

    def _stats_get(self, path: str) -> str | None:
        res = self.host.run(
            ["curl", "-sf", "-m", "2", "-u", STATS_AUTH, f"http://127.0.0.1:{STATS_PORT}{path}"],
            check=False,
            timeout=10,
        )
        return res.stdout if res.returncode == 0 else None

    def servers(self) -> dict[str, dict[str, Any]]:
        """tcplb's stats JSON: the ``rabbitmq`` listener's servers by name ({} if unreadable)."""
        if self.balancer_kind != "tcplb":
            return {}
        out = self._stats_get("/stats;json")
        if out is None:
            return {}
        try:
            data = json.loads(out)
        except ValueError:
            return {}
        for li in data.get("listeners", []):
            if li.get("name") == "rabbitmq":
                return {str(s["name"]): s for s in li.get("servers", [])}
        return {}

    def upstream_counts(self) -> dict[str, int]:
        """Established connections from this LB host to each RabbitMQ node's AMQP port (``ss`` in the
        namespace: the same measure for tcplb and HAProxy; a check probe in flight may add one)."""
        by_ip = {n.ip: n.name for n in self.stack.rabbit.nodes}
        counts = dict.fromkeys(by_ip.values(), 0)
        out = self.host.run(["ss", "-Htn", "state", "established", f"( dport = :{AMQP_PORT} )"], check=False)
        for line in out.stdout.splitlines():
            cols = line.split()
            if len(cols) >= 4:
                ip = cols[3].rsplit(":", 1)[0]
                if ip in by_ip:
                    counts[by_ip[ip]] += 1
        return counts

    def metrics(self) -> str:
        """tcplb's Prometheus text (empty if unreadable)."""
        return self._stats_get("/metrics") or ""

    def set_server_state(self, server: str, state: str) -> None:
        """tcplb's admin API: ``ready``, ``drain`` (no new connections) or ``maint``."""
        if self.balancer_kind != "tcplb" or self.balancer is None or not self.balancer.alive():
            return
        url = f"http://127.0.0.1:{STATS_PORT}/api/servers/rabbitmq/{server}/{state}"
        self.host.run(["curl", "-sf", "-m", "2", "-u", STATS_AUTH, "-X", "POST", url], timeout=10)

    # faults
    def crash(self) -> None:
        """SIGKILL both daemons (and their children): the host's software dies, the VIP stays configured."""
        for p in (self.vrrp, self.balancer):
            if p is not None:
                p.kill()
        for p in (self.vrrp, self.balancer):
            if p is not None:
                p.wait(5)

    def freeze(self) -> None:
        for p in (self.vrrp, self.balancer):
            if p is not None:
                p.stop()

    def thaw(self) -> None:
        for p in (self.vrrp, self.balancer):
            if p is not None:
                p.cont()

    def graceful_stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the VRRP daemon (priority 0, VIP removed), then the balancer."""
        if self.vrrp is not None:
            self.vrrp.terminate(timeout)
        if self.balancer is not None:
            self.balancer.terminate(timeout)

    def kill_balancer(self) -> None:
        if self.balancer is not None:
            self.balancer.kill()
            self.balancer.wait(5)

    def stop(self) -> None:
        for p in (self.vrrp, self.balancer):
            if p is not None and p.alive():
                p.cont()
                p.terminate(5)
        self.vrrp = self.balancer = None

    def remove_vip(self) -> None:
        if self.has_vip():
            self.host.run(["ip", "addr", "del", f"{VIP}/24", "dev", "eth0"], check=False)


# ------------------------------------------------------------------------------------------ monitor


UNKNOWN: tuple[str, ...] = ("<unknown>",)
"""The holders recorded while the VIP could not be read (an error of the monitor, never a guess)."""


class VipMonitor:
    """Records who holds the VIP (every ``interval`` s) as transitions ``(time, holders)``.

    A failed read is never papered over with the last known holders: it is recorded as a transition to
    :data:`UNKNOWN` and kept in :attr:`errors`; :meth:`check` (called by :meth:`Stack.finish`) raises them.
    """

    def __init__(self, lbs: list[LBNode], interval: float = 0.02) -> None:
        self.lbs = lbs
        self.interval = interval
        self.transitions: list[tuple[float, tuple[str, ...]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vip-monitor", daemon=True)
        self.errors: list[tuple[float, str]] = []

    def start(self) -> VipMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def holders(self) -> tuple[str, ...]:
        return self.transitions[-1][1] if self.transitions else ()

    def read(self) -> tuple[str, ...]:
        """Who holds the VIP now; :data:`UNKNOWN` (and an entry in :attr:`errors`) if it cannot be read."""
        try:
            return tuple(lb.name for lb in self.lbs if lb.has_vip())
        except Exception as exc:
            self.errors.append((time.time(), f"{type(exc).__name__}: {exc}"))
            return UNKNOWN

    def sample(self) -> None:
        now = self.read()
        if not self.transitions or self.transitions[-1][1] != now:
            self.transitions.append((time.time(), now))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def check(self) -> None:
        """LabError when some reads failed: the timeline has holes and its figures cannot be trusted."""
        if self.errors:
            shown = "; ".join(f"{t:.3f}: {e}" for t, e in self.errors[:5])
            raise LabError(f"the VIP monitor could not read the VIP {len(self.errors)} times: {shown}")

    def first_holding_after(self, t: float, name: str) -> float | None:
        """When ``name`` first held the VIP at or after ``t`` (``t`` itself if it already did)."""
        before = [h for ts, h in self.transitions if ts < t]
        if before and name in before[-1]:
            return t
        for ts, h in self.transitions:
            if ts >= t and name in h:
                return ts
        return None

    def timeline(self, origin: float | None = None) -> list[str]:
        t0 = origin if origin is not None else (self.transitions[0][0] if self.transitions else 0.0)
        return [f"{ts - t0:+8.3f} s  {', '.join(h) if h else '(nobody)'}" for ts, h in self.transitions]


class SpreadMonitor:
    """Samples the per-node connection counts on one LB host every ``interval`` s: ``(time, {node: n})``."""

    def __init__(self, lb: LBNode, interval: float = 1.0) -> None:
        self.lb = lb
        self.interval = interval
        self.samples: list[tuple[float, dict[str, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spread-monitor", daemon=True)

    def start(self) -> SpreadMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a failed read leaves a gap in the series, never a guess
                self.samples.append((time.time(), self.lb.upstream_counts()))
            self._stop.wait(self.interval)

    def last(self) -> dict[str, int]:
        return dict(self.samples[-1][1]) if self.samples else {}


def spread(counts: dict[str, int]) -> float:
    """The largest deviation from an even share, as a fraction of it (0.10 = within ±10 % of even)."""
    total = sum(counts.values())
    if not counts or total == 0:
        return 0.0
    even = total / len(counts)
    return max(abs(n - even) for n in counts.values()) / even


# ------------------------------------------------------------------------------------------ stack


@dataclass
class Outcome:
    """What a scenario measured."""

    name: str
    fault_at: float
    ledger: Ledger
    summary: dict[str, Any]
    outage: dict[str, float]  # phase -> longest gap without a confirm
    consume_outage: dict[str, float]  # phase -> longest gap without a delivery
    detection: float | None  # fault -> the VIP on the backup
    timeline: list[str]
    holders_end: list[str]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def lost(self) -> list[str]:
        return self.ledger.lost

    def figures(self) -> dict[str, Any]:
        return {
            "scenario": self.name,
            "detection_s": self.detection,
            "outage_s": self.outage,
            "consume_outage_s": self.consume_outage,
            "messages": self.summary,
            "vip_end": self.holders_end,
            "timeline": self.timeline,
            **self.extra,
        }

    def report(self) -> str:
        lines = [f"{self.name}: detection {self.detection} s, outage {self.outage} {self.extra or ''}"]
        lines.append(self.ledger.report())
        lines += [f"  {t}" for t in self.timeline]
        return "\n".join(lines)


@dataclass
class Stack:
    lab: Lab
    switch: Switch
    rabbit: RabbitCluster
    client: Host
    lbs: dict[str, LBNode] = field(default_factory=dict)
    monitor: VipMonitor | None = None
    events: list[tuple[float, str]] = field(default_factory=list)
    loads: list[AmqpLoad] = field(default_factory=list)
    bursts: list[Burst] = field(default_factory=list)
    holders: list[Holder] = field(default_factory=list)
    queues: list[str] = field(default_factory=list)
    _seq: int = 0
    advert_int: float = ADVERT_INT  # set before start_lbs(); < 1 s runs VRRPv3 (reset() restores the default)
    # tcplb options, set before start_lbs() (reset() restores the defaults)
    send_proxy: str = "none"  # "v1"/"v2": PROXY protocol toward the brokers
    rebalance: dict[str, str] | None = None  # [listen.rabbitmq.rebalance] keys, TOML values as text
    timeout_idle: str = "3h"  # timeout_client/timeout_server

    @classmethod
    def build(cls, lab: Lab, *, switch: Switch | None = None, rabbit: RabbitCluster | None = None) -> Stack:
        """Create the hosts (RabbitMQ nodes unless given, lb1, lb2, client); nothing started yet."""
        sw = switch or lab.switch("sw")
        cluster = rabbit or RabbitCluster(lab, sw, management=True)
        cluster.enable_management()  # the rabbitmq check reads each node's state from its management API
        stack = cls(lab, sw, cluster, lab.hosts.get("client") or _mkhost(lab, sw, "client", CLIENT_ADDR))
        for name, prio in PRIORITIES.items():
            host = lab.hosts.get(name) or _mkhost(
                lab, sw, name, LB_ADDRS[name], {"net.ipv4.ip_nonlocal_bind": "1"}
            )
            stack.lbs[name] = LBNode(stack, host, prio)
        return stack

    def event(self, what: str) -> float:
        t = time.time()
        self.events.append((t, what))
        return t

    def start_lbs(
        self,
        kinds: dict[str, tuple[VrrpKind, BalancerKind]] | None = None,
        *,
        expect_master: str = "lb1",
        timeout: float = 20.0,
    ) -> None:
        """Start both LB hosts (in parallel) and wait for ``expect_master`` to hold the VIP alone."""
        for name, lb in self.lbs.items():
            lb.vrrp_kind, lb.balancer_kind = (kinds or {}).get(name, ("vrrpd", "tcplb"))
            lb.notify_log.unlink(missing_ok=True)
        errors: list[BaseException] = []

        def start(lb: LBNode) -> None:
            try:
                lb.start()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(lb,)) for lb in self.lbs.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise LabError(f"LB start failed: {errors[0]}") from errors[0]
        if self.monitor is None:
            self.monitor = VipMonitor(list(self.lbs.values())).start()
        self.event("lbs started")
        self.wait_master(expect_master, timeout)

    def vip_holders(self) -> list[str]:
        return [lb.name for lb in self.lbs.values() if lb.has_vip()]

    def set_server_state(self, server: str, state: str) -> None:
        """Drain/ready a RabbitMQ node in every tcplb (as an operator does around a planned restart)."""
        for lb in self.lbs.values():
            lb.set_server_state(server, state)

    def masters(self) -> list[str]:
        return [lb.name for lb in self.lbs.values() if lb.state() == "MASTER"]

    def wait_master(self, name: str, timeout: float = 15.0, *, alone: bool = True) -> float:
        """Wait until ``name`` holds the VIP (alone, unless a crashed host still has it configured) and the
        client reaches RabbitMQ through it."""
        lb = self.lbs[name]

        def down() -> str | None:  # the expected master's daemons died: it cannot get there
            return dead(lb.vrrp, lb.balancer)

        if alone:
            wait_until(
                lambda: self.vip_holders() == [name], timeout, what=f"VIP on {name} alone", fail_if=down
            )
        else:
            wait_until(lambda: name in self.vip_holders(), timeout, what=f"VIP on {name}", fail_if=down)
        wait_until(self.client_reaches_vip, timeout, what="AMQP through the VIP", fail_if=down)
        return time.time()

    def client_reaches_vip(self) -> bool:
        return greets(self.client, VIP, AMQP_PORT, 2.0)

    def servers(self, lb: str = "lb1") -> dict[str, dict[str, Any]]:
        """tcplb's view of the RabbitMQ nodes on ``lb`` (stats JSON rows by server name)."""
        return self.lbs[lb].servers()

    def reset(self) -> None:
        """Between scenarios: stop loads and LB daemons, undo faults, drop leftover VIPs and queues."""
        for load in self.loads:
            for p in [*load.publishers, *load.consumers]:
                p.terminate(2)
        self.loads.clear()
        procs = [b.proc for b in self.bursts] + [h.proc for h in self.holders]
        for proc in procs:
            if proc is not None:
                proc.terminate(2)
        self.bursts.clear()
        self.holders.clear()
        self.rabbit.undo_faults()
        if self.monitor is not None:
            self.monitor.stop()
            self.monitor = None
        for lb in self.lbs.values():
            lb.stop()
            if self.lab.is_partitioned(lb.host):
                self.lab.heal(lb.host)
            if not lb.host.link_is_up():
                lb.host.link_up()
            lb.remove_vip()
        self.client.run(["ip", "neigh", "flush", "all"], check=False)
        self.events.clear()
        if self.queues:
            self.rabbit.ensure_all_running()
            self.rabbit.delete_queues(self.queues)
            self.queues.clear()
        self.rabbit.clear_ha_policy()
        self.advert_int = ADVERT_INT
        self.send_proxy, self.rebalance, self.timeout_idle = "none", None, "3h"

    def timeline(self, origin: float | None = None) -> list[str]:
        return self.monitor.timeline(origin) if self.monitor else []

    # ---- traffic -------------------------------------------------------------------------------------

    def load(
        self,
        *,
        publishers: int = 1,
        consumers: int = 1,
        rate: float = 100.0,
        queue_type: str = QUORUM,
        target: str = VIP,
        blocked_timeout: float = 10.0,
    ) -> AmqpLoad:
        """Publishers/consumers on the client against a fresh queue (``ha.*`` for classic mirrored)."""
        self._seq += 1
        prefix = "ha." if queue_type == CLASSIC else ""
        queue = f"{prefix}s{self._seq}-{self.lab.uid}"
        if queue_type == CLASSIC:
            self.rabbit.set_ha_policy()
        load = AmqpLoad(
            self.client, target, queue, publishers=publishers, consumers=consumers, rate=rate,
            queue_type=queue_type, tag=f"s{self._seq}", blocked_timeout=blocked_timeout,
        )  # fmt: skip
        self.loads.append(load)
        self.queues.append(queue)
        return load

    def burst(self, *, interval: float = 0.1, timeout: float = 10.0) -> Burst:
        """A new AMQP connection through the VIP every ``interval`` s (started; stopped by the test or by
        reset)."""
        self._seq += 1
        tag = f"burst{self._seq}-{self.lab.uid}"
        b = Burst(self.client, VIP, interval=interval, timeout=timeout, tag=tag)
        self.bursts.append(b)
        return b.start()

    def rolling_restart(self, *, drain: bool = True, timeout: float = 90.0) -> list[tuple[float, str]]:
        """Restart the RabbitMQ nodes one at a time, RabbitMQ's procedure: ``rabbitmq-upgrade drain`` (its
        clients are closed with 320, its listeners suspended; a balancer that watches the node stops sending
        it clients), stop, start (a successful boot clears maintenance), and wait for the full cluster
        before the next node. Returns the marks ``(time, what)``."""
        marks: list[tuple[float, str]] = []
        for node in self.rabbit.nodes:
            if drain:
                marks.append((self.event(f"drain {node.name}"), f"drain {node.name}"))
                node.drain(timeout)
            marks.append((self.event(f"stop {node.name}"), f"stop {node.name}"))
            node.stop()
            node.drained = False
            marks.append((self.event(f"start {node.name}"), f"start {node.name}"))
            node.start(timeout=timeout)
            self.rabbit.wait_running(len(self.rabbit.nodes), timeout)
            marks.append((self.event(f"{node.name} back"), f"{node.name} back"))
        return marks

    def hold(self, n: int = 60, *, open_rate: float = 20.0) -> Holder:
        """``n`` long-lived pika connections through the VIP, reopened whenever closed (started)."""
        self._seq += 1
        h = Holder(self.client, VIP, n, open_rate=open_rate, tag=f"hold{self._seq}-{self.lab.uid}")
        self.holders.append(h)
        return h.start()

    def drained(self, load: AmqpLoad) -> Callable[[], bool]:
        return lambda: self.rabbit.queue_depth(load.queue) == 0

    def finish(
        self,
        load: AmqpLoad,
        name: str,
        fault_at: float,
        phases: list[tuple[str, float]],
        new_master: str = "lb2",
    ) -> Outcome:
        """Stop ``load`` (queue drained first), and measure the scenario.

        ``phases``: (label, time) marks after the fault (e.g. ``("recovery", t)``); the outage of the fault is
        measured in [fault_at, first phase], each phase's outage in [its time, next phase or the end].
        """
        end = time.time()
        ledger = load.stop(timeout=60)
        if self.monitor is not None:
            self.monitor.check()
        marks = [("fault", fault_at), *phases, ("end", end)]
        outages: dict[str, float] = {}
        consume_outages: dict[str, float] = {}
        for (label, start), (_next, stop) in itertools.pairwise(marks):
            outages[label] = round(ledger.confirm_gap(start, stop)[0], 3)
            consume_outages[label] = round(ledger.consume_gap(start, stop)[0], 3)
        detection = None
        if self.monitor is not None:
            first = next(
                (
                    ts
                    for ts, h in self.monitor.transitions
                    if h != UNKNOWN
                    and (
                        (ts >= fault_at and h and h[-1] != "lb1")
                        or (ts >= fault_at and "lb2" in h and "lb1" not in h)
                    )
                ),
                None,
            )
            detection = round(first - fault_at, 3) if first is not None else None
        return Outcome(
            name=name,
            fault_at=fault_at,
            ledger=ledger,
            summary=ledger.summary(),
            outage=outages,
            consume_outage=consume_outages,
            detection=detection,
            timeline=self.timeline(fault_at),
            holders_end=self.vip_holders(),
        )

    def notify_history(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for lb in self.lbs.values():
            try:
                out[lb.name] = lb.notify_log.read_text().splitlines()
            except OSError:
                out[lb.name] = []
        return out


def _mkhost(lab: Lab, sw: Switch, name: str, ip: str, sysctls: dict[str, str] | None = None) -> Host:
    h = lab.host(name, sysctls=sysctls)
    lab.link(h, sw, f"{ip}/24")
    return h
