"""VRRPv3 failover at ``advert_int = 0.1`` (issue #14): vrrpd against keepalived in v3 mode, IPv4 and IPv6,
in alternating rounds, in network namespaces (the same run, the same machine).

Run: ``python -m bench failover-v3 [--rounds N]`` (root; part ``failover-v3`` of the run file and of
docs/performance.md). Alone, ``python -m bench.vrrp_v3`` prints the table.

Each round, for each implementation (the order alternates between rounds), two routers of that
implementation (lb1 priority 150, lb2 priority 100) share a bridge on which ``tcpdump -tt`` records every
VRRP advert (IPv4 and IPv6) with kernel timestamps. Each router runs two VRRPv3 instances at 0.1 s: IPv4
(VRID 61, VIP 192.0.2.120/24, adverts to 224.0.0.18) and IPv6 (VRID 62, VIP 2001:db8::120/64, adverts from
the link-local address to ff02::12); keepalived gets the equivalent keepalived.conf (``vrrp_version 3``).

* **crash**: lb1 is SIGKILLed (keepalived: SIGSTOP parent, SIGKILL VRRP child, SIGKILL parent) at a random
  point of its advert cycle. Per family: lb2's first advert minus the last advert of lb1 (frames told apart
  by source MAC and VRID), against Master_Down_Interval = 3 x 0.1 + (256 - 100) x 0.1 / 256 = 0.361 s.
* **graceful**: lb1 is restarted, preempts back, and gets SIGTERM. Per family: lb2's first advert minus
  lb1's priority-0 advert, against Skew_Time = 0.061 s.

Then one instance (IPv4, v3, 0.1 s adverts) alone idles as master: CPU (% of one core, keepalived: both
processes) and RSS.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    add,
    failed_rounds_note,
    figure,
    host_info,
    idle_usage,
    log,
    markdown_part,
    part_result,
)
from bench.vrrp_failover import RouterProc
from netns import Host, Lab, Proc, Switch, keepalived, wait_until

ROOT = Path(__file__).resolve().parents[1]
IMPLS = ("vrrpd", "keepalived")
FAMILIES = (4, 6)
VRID = {4: 61, 6: 62}
VIP = {4: "192.0.2.120", 6: "2001:db8::120"}
PREFIX = {4: 24, 6: 64}
IPS = {"lb1": "192.0.2.21", "lb2": "192.0.2.22"}
PRIO = {"lb1": 150, "lb2": 100}
ADVERT_INT = 0.1
SKEW_100 = (256 - 100) * ADVERT_INT / 256  # 0.0609375 s
MDI_100 = 3 * ADVERT_INT + SKEW_100  # 0.3609375 s
IPV6_ON = {
    "net.ipv6.conf.all.disable_ipv6": "0",
    "net.ipv6.conf.default.disable_ipv6": "0",
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",
}
IDLE_SECONDS = 20.0

_LINE = re.compile(r"^(?P<ts>\d+\.\d+) (?P<smac>[0-9a-f:]{17}) > [0-9a-f:]{17}, ethertype (?P<et>\w+)")
_VRRP = re.compile(r"VRRPv3, Advertisement, vrid (?P<vrid>\d+), prio (?P<prio>\d+)")


@dataclass(frozen=True)
class Advert:
    ts: float
    smac: str
    vrid: int
    prio: int


def parse_capture(text: str) -> list[Advert]:
    """VRRPv3 adverts from ``tcpdump -n -tt -e`` output (IPv4 and IPv6; verbose continuation lines are
    ignored)."""
    out: list[Advert] = []
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        v = _VRRP.search(line)
        if v:
            out.append(
                Advert(float(m.group("ts")), m.group("smac"), int(v.group("vrid")), int(v.group("prio")))
            )
    return out


# ----------------------------------------------------------------------------------------- implementations


def vrrpd_toml(name: str, sock: str, prio: int, families: tuple[int, ...]) -> str:
    text = f'[global]\nrouter_id = "{name}"\ncontrol_socket = "{sock}"\n'
    for fam in families:
        text += (
            f'\n[[vrrp_instance]]\nname = "V{fam}"\ninterface = "eth0"\nvirtual_router_id = {VRID[fam]}\n'
            f"version = 3\npriority = {prio}\nadvert_int = {ADVERT_INT}\n"
            f'virtual_ipaddress = ["{VIP[fam]}/{PREFIX[fam]}"]\n'
        )
    return text


def ka_conf(name: str, prio: int, families: tuple[int, ...]) -> str:
    text = f"global_defs {{\n  router_id {name}\n  vrrp_version 3\n}}\n"
    for fam in families:
        text += (
            f"vrrp_instance V{fam} {{\n  state BACKUP\n  interface eth0\n  virtual_router_id {VRID[fam]}\n"
            f"  priority {prio}\n  advert_int {ADVERT_INT}\n"
            f"  virtual_ipaddress {{\n    {VIP[fam]}/{PREFIX[fam]}\n  }}\n}}\n"
        )
    return text


class Router(RouterProc):
    """One router process (vrrpd or keepalived) with the v3 instances of ``families``."""

    def __init__(self, impl: str, lab: Lab, host: Host, prio: int, families: tuple[int, ...]) -> None:
        self.impl, self.host, self.families = impl, host, families
        d = lab.workdir / f"{impl}-{host.name}"
        d.mkdir(exist_ok=True)
        self.proc: Proc | None = None
        if impl == "vrrpd":
            self.sock = str(d / "ctl.sock")
            self.conf = d / "node.toml"
            self.conf.write_text(vrrpd_toml(host.name, self.sock, prio, families))
        else:
            self.ka = keepalived.Keepalived(host, ka_conf(f"ka-{host.name}", prio, families), d)

    def start(self) -> None:
        if self.impl == "vrrpd":
            with_sock = self.sock
            if os.path.exists(with_sock):
                os.unlink(with_sock)
            argv = [sys.executable, "-m", "vrrpd", "-c", str(self.conf)]
            self.proc = self.host.start(
                argv, name="vrrpd", env={"PYTHONPATH": str(ROOT)}, ready=lambda: os.path.exists(with_sock)
            )
        else:
            self.proc = self.ka.start().proc

    def holds_all(self) -> bool:
        return all(holds(self.host, VIP[f]) for f in self.families)

    def holds_none(self) -> bool:
        return not any(holds(self.host, VIP[f]) for f in self.families)


def holds(h: Host, ip: str) -> bool:
    if ":" not in ip:
        return h.has_address(ip)
    out = h.run(["ip", "-6", "-o", "addr", "show", "dev", "eth0"], check=False).stdout
    return f" {ip}/" in out


def mac(h: Host) -> str:
    return h.run(["cat", "/sys/class/net/eth0/address"]).stdout.strip()


def topology(lab: Lab) -> tuple[Switch, dict[str, Host]]:
    sw = lab.switch()
    hosts = {}
    for name, ip in IPS.items():
        h = lab.host(name, sysctls=IPV6_ON)
        lab.link(h, sw, f"{ip}/24")
        hosts[name] = h

    def link_locals() -> bool:
        return all(
            "fe80:" in h.run(["ip", "-6", "-o", "addr", "show", "dev", "eth0"], check=False).stdout
            for h in hosts.values()
        )

    wait_until(link_locals, 10, what="IPv6 link-local addresses")
    return sw, hosts


def start_capture(sw: Switch) -> Proc:
    argv = ["tcpdump", "-i", "br0", "-n", "-tt", "-e", "-l", "-U", "ip proto 112 or ip6 proto 112"]
    proc = sw.start(argv, name="tcpdump")
    wait_until(lambda: "listening on" in proc.output(), 10, what="tcpdump listening")
    return proc


# ------------------------------------------------------------------------------------------------ rounds


def _first(frames: list[Advert], t: float, vrid: int, smac: str, prio: int | None = None) -> Advert | None:
    """The first advert at or after ``t`` of VRID ``vrid`` from ``smac`` (with priority ``prio``)."""
    return next(
        (f for f in frames if f.ts >= t and f.vrid == vrid and f.smac == smac and prio in (None, f.prio)),
        None,
    )


def _settle() -> None:
    time.sleep(0.3)  # the last frames reach tcpdump's output file (it writes each packet, -U)


def one_round(impl: str, rng: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = {"impl": impl}
    with Lab(f"v3-{impl}") as lab:
        sw, hosts = topology(lab)
        mac1, mac2 = mac(hosts["lb1"]), mac(hosts["lb2"])
        cap = start_capture(sw)
        r1 = Router(impl, lab, hosts["lb1"], PRIO["lb1"], FAMILIES)
        r2 = Router(impl, lab, hosts["lb2"], PRIO["lb2"], FAMILIES)
        r2.start()
        r1.start()
        wait_until(r1.holds_all, 10, what=f"{impl} lb1 master (IPv4 and IPv6)")
        wait_until(r2.holds_none, 5, what=f"{impl} lb2 backup")
        time.sleep(0.5 + rng.random() * ADVERT_INT)  # a random point of the advert cycle

        # -- crash
        t_kill = time.time()
        r1.crash()
        wait_until(r2.holds_all, 5, what=f"{impl} lb2 takes over after crash")
        _settle()
        frames = parse_capture(cap.output())
        for fam in FAMILIES:
            vrid = VRID[fam]
            first2 = _first(frames, t_kill - 0.01, vrid, mac2)
            if first2 is None:
                continue
            last1 = [f for f in frames if f.vrid == vrid and f.smac == mac1 and f.ts < first2.ts]
            if last1:
                delta = first2.ts - last1[-1].ts
                out[f"crash{fam}_takeover_s"] = delta
                out[f"crash{fam}_error_ms"] = (delta - MDI_100) * 1000

        # -- preemption back, then graceful stop
        r1.start()
        wait_until(lambda: r1.holds_all() and r2.holds_none(), 10, what=f"{impl} lb1 preempts back")
        time.sleep(0.5 + rng.random() * ADVERT_INT)
        t_term = time.time()
        r1.graceful()
        wait_until(r2.holds_all, 5, what=f"{impl} lb2 takes over after graceful stop")
        _settle()
        frames = parse_capture(cap.output())
        for fam in FAMILIES:
            vrid = VRID[fam]
            zero = _first(frames, t_term - 0.01, vrid, mac1, prio=0)
            if zero is None:
                continue
            first2 = _first(frames, zero.ts, vrid, mac2)
            if first2 is not None:
                delta = first2.ts - zero.ts
                out[f"graceful{fam}_takeover_s"] = delta
                out[f"graceful{fam}_error_ms"] = (delta - SKEW_100) * 1000
        cap.terminate(2)
    return out


def idle(impl: str, seconds: float) -> dict[str, Any]:
    """One IPv4 v3 instance at 0.1 s adverts, master, alone: CPU over ``seconds`` and RSS."""
    with Lab(f"v3idle-{impl}") as lab:
        sw = lab.switch()
        h = lab.host("lb1")
        lab.link(h, sw, f"{IPS['lb1']}/24")
        r = Router(impl, lab, h, 150, (4,))
        r.start()
        wait_until(r.holds_all, 10, what=f"{impl} master")
        time.sleep(1.0)
        return idle_usage(impl, r.pids(), seconds)


KEYS = {
    "crash4_error_ms": "crash, IPv4: first advert - last advert heard, minus Master_Down_Interval (361 ms)",
    "crash6_error_ms": "crash, IPv6: first advert - last advert heard, minus Master_Down_Interval (361 ms)",
    "graceful4_error_ms": "graceful, IPv4: first advert - priority-0 advert, minus Skew_Time (61 ms)",
    "graceful6_error_ms": "graceful, IPv6: first advert - priority-0 advert, minus Skew_Time (61 ms)",
}


def run(rounds: int = 6, seed: int | None = None, quick: bool = False) -> dict[str, Any]:
    """``rounds`` rounds per implementation (alternating order), then the idle cost (a 5 s measurement
    with ``quick``). Returns a part result (bench.common layout), one sample per round per implementation
    (None where a round failed)."""
    idle_seconds = 5.0 if quick else IDLE_SECONDS
    rng = random.Random(seed)
    figs = {
        k: figure(k, label, "ms", better="info", impls=IMPLS, chart="strip", group=k[:-10])
        for k, label in KEYS.items()
    }
    results: list[dict[str, Any]] = []
    for i in range(rounds):
        for impl in IMPLS if i % 2 == 0 else IMPLS[::-1]:
            try:
                r = {"round": i, **one_round(impl, rng)}
            except Exception as e:  # a failed round is reported, not fatal
                r = {"round": i, "impl": impl, "error": repr(e)}
            results.append(r)
            for k, f in figs.items():
                add(f, impl, r.get(k))
            log(f"failover-v3 round {i + 1} {impl}: " + ", ".join(
                f"{k} {r[k]:+.2f}" for k in KEYS if isinstance(r.get(k), float)) + (
                f" error {r['error']}" if "error" in r else ""))  # fmt: skip
    idles = [idle(impl, idle_seconds) for impl in IMPLS]
    for entry in idles:
        log(f"failover-v3 idle {entry}")
    errors = [r for r in results if "error" in r]
    notes = [
        f"advert_int 0.1 s (VRRPv3), priorities 150/100: Master_Down_Interval {MDI_100 * 1000:.1f} ms, "
        f"Skew_Time {SKEW_100 * 1000:.1f} ms at priority 100. Each router runs an IPv4 (VRID 61) and an IPv6 "
        "(VRID 62) instance; kernel timestamps of tcpdump -tt on the bridge.",
        "Idle: one IPv4 v3 instance at 0.1 s adverts, master, alone; CPU in % of one core over "
        f"{idles[0]['seconds']} s (keepalived: parent and VRRP child summed): "
        + ", ".join(f"{e['impl']} {e['cpu_percent']} % ({e['rss_mib']} MiB RSS)" for e in idles)
        + ".",
    ]
    if errors:
        notes.append(failed_rounds_note(errors, "impl"))
    return part_result(
        "failover-v3",
        "VRRPv3 at advert_int 0.1: vrrpd vs keepalived, IPv4 and IPv6",
        IMPLS,
        list(figs.values()),
        rounds=rounds,
        notes=notes,
        raw={
            "expected": {
                "master_down_interval_s": MDI_100,
                "skew_time_s": SKEW_100,
                "advert_int_s": ADVERT_INT,
            },
            "rounds": results,
            "idle": idles,
            "host": host_info(),
        },
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.vrrp_v3", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args(argv)
    print(markdown_part(run(a.rounds, a.seed, a.quick)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
