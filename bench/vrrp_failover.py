"""Failover benchmark: vrrpd against keepalived, in alternating rounds, in network namespaces.

Run: ``python -m bench.vrrp_failover [--rounds N] [--idle SECONDS]`` (root). Writes
``bench/results/vrrp_failover.json`` and ``bench/results/vrrp_failover.md``.

Each round, for each implementation (the order alternates between rounds, the machines are noisy), two routers
of that implementation (lb1 priority 150, lb2 priority 100, advert_int 1, PASS auth) share a bridge on which a
``tcpdump -tt`` records every VRRP advert and ARP frame with kernel timestamps:

* **crash**: lb1 is SIGKILLed (keepalived: SIGSTOP parent, SIGKILL VRRP child, SIGKILL parent) at a random
  point of its advert cycle. Measured: lb2's first advert minus the last advert of lb1 that it heard, against
  Master_Down_Interval = 3 + (256 - 100) / 256 = 3.609 s.
* **graceful**: lb1 is restarted, preempts back, and gets SIGTERM. Measured: lb2's first advert minus lb1's
  priority-0 advert, against Skew_Time = 0.609 s.
* **GARP**: lb2's first gratuitous ARP minus its first advert as master (both takeovers).

Then one instance alone idles for ``--idle`` seconds: RSS (keepalived: both processes) and CPU %.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import failed_rounds_note, host_info, idle_usage
from netns import Host, Lab, Proc, Switch, keepalived, wait_until

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
VIP = "192.0.2.100"
IPS = {"lb1": "192.0.2.21", "lb2": "192.0.2.22"}
PRIO = {"lb1": 150, "lb2": 100}
MDI_100 = 3 + (256 - 100) / 256
SKEW_100 = (256 - 100) / 256
IMPLS = ("vrrpd", "keepalived")

_LINE = re.compile(
    r"^(?P<ts>\d+\.\d+) (?P<smac>[0-9a-f:]{17}) > (?P<dmac>[0-9a-f:]{17}), "
    r"ethertype (?P<et>\w+) .*?: (?P<rest>.*)$"
)
_VRRP = re.compile(
    r"(?P<src>[\d.]+) > (?P<dst>[\d.]+): VRRPv2, Advertisement, vrid (?P<vrid>\d+), prio (?P<prio>\d+)"
)
_ARP = re.compile(r"Request who-has (?P<tpa>[\d.]+) \(ff:ff:ff:ff:ff:ff\) tell (?P<spa>[\d.]+)")


@dataclass(frozen=True)
class Frame:
    ts: float
    kind: str  # "vrrp" or "garp"
    src: str  # IP (advert source, or GARP sender)
    prio: int = -1
    smac: str = ""


def parse_capture(text: str) -> list[Frame]:
    out: list[Frame] = []
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        rest = m.group("rest")
        v = _VRRP.search(rest)
        if v:
            out.append(
                Frame(float(m.group("ts")), "vrrp", v.group("src"), int(v.group("prio")), m.group("smac"))
            )
            continue
        a = _ARP.search(rest)
        if a and a.group("tpa") == a.group("spa"):
            out.append(Frame(float(m.group("ts")), "garp", a.group("spa"), -1, m.group("smac")))
    return out


# ----------------------------------------------------------------------------------------- implementations


class RouterProc:
    """What a bench router (vrrpd or keepalived) does with its running process; the subclasses set
    ``impl``, ``proc`` and, for keepalived, ``ka``. Also bench.vrrp_v3's."""

    impl: str
    proc: Proc | None
    ka: keepalived.Keepalived

    def pids(self) -> list[int]:
        assert self.proc is not None
        return [self.proc.pid] if self.impl == "vrrpd" else self.ka.pids()

    def crash(self) -> None:
        assert self.proc is not None
        if self.impl == "vrrpd":
            self.proc.kill()
            self.proc.wait(5)
        else:
            self.ka.crash()

    def graceful(self) -> None:
        assert self.proc is not None
        self.proc.term()
        self.proc.wait(5)


class Router(RouterProc):
    """One router process (vrrpd or keepalived) on a lab host."""

    def __init__(self, impl: str, lab: Lab, host: Host, prio: int) -> None:
        self.impl, self.lab, self.host, self.prio = impl, lab, host, prio
        self.dir = lab.workdir / f"{impl}-{host.name}"
        self.dir.mkdir(exist_ok=True)
        self.proc: Proc | None = None
        if impl == "vrrpd":
            self.sock = str(self.dir / "ctl.sock")
            self.conf = self.dir / "node.toml"
            self.conf.write_text(
                f'[global]\nrouter_id = "{host.name}"\ncontrol_socket = "{self.sock}"\n\n'
                f'[[vrrp_instance]]\nname = "VI_1"\ninterface = "eth0"\nvirtual_router_id = 51\n'
                f'priority = {prio}\nadvert_int = 1\nauth_pass = "rmqlab51"\n'
                f'virtual_ipaddress = ["{VIP}/24"]\n'
            )
        else:
            conf = keepalived.instance_conf(
                f"ka-{host.name}", priority=prio, vips=[f"{VIP}/24"], auth_pass="rmqlab51"
            )
            self.ka = keepalived.Keepalived(host, conf, self.dir)

    def start(self) -> None:
        if self.impl == "vrrpd":
            argv = [sys.executable, "-m", "vrrpd", "-c", str(self.conf)]
            self.proc = self.host.start(
                argv, name="vrrpd", env={"PYTHONPATH": str(ROOT)}, ready=lambda: os.path.exists(self.sock)
            )
        else:
            self.proc = self.ka.start().proc

    def has_vip(self) -> bool:
        return self.host.has_address(VIP)


def topology(lab: Lab) -> tuple[Switch, dict[str, Host]]:
    sw = lab.switch()
    hosts = {}
    for name, ip in IPS.items():
        h = lab.host(name)
        lab.link(h, sw, f"{ip}/24")
        hosts[name] = h
    return sw, hosts


def start_capture(sw: Switch) -> Proc:
    argv = ["tcpdump", "-i", "br0", "-n", "-tt", "-e", "-l", "-U", "ip proto 112 or arp"]
    proc = sw.start(argv, name="tcpdump")
    wait_until(lambda: "listening on" in proc.output(), 10, what="tcpdump listening")
    return proc


# ------------------------------------------------------------------------------------------------ rounds


def _after(frames: list[Frame], t: float, pred: Callable[[Frame], bool]) -> Frame | None:
    return next((f for f in frames if f.ts >= t and pred(f)), None)


def one_round(impl: str, rng: random.Random) -> dict[str, Any]:
    out: dict[str, Any] = {"impl": impl}
    with Lab(f"bench-{impl}") as lab:
        sw, hosts = topology(lab)
        cap = start_capture(sw)
        r1 = Router(impl, lab, hosts["lb1"], PRIO["lb1"])
        r2 = Router(impl, lab, hosts["lb2"], PRIO["lb2"])
        r2.start()
        r1.start()
        wait_until(r1.has_vip, 10, what=f"{impl} lb1 master")
        wait_until(lambda: not r2.has_vip(), 5, what=f"{impl} lb2 backup")
        time.sleep(1.0 + rng.random())  # a random point of the advert cycle

        # -- crash
        t_kill = time.time()
        r1.crash()
        wait_until(r2.has_vip, 10, what=f"{impl} lb2 takes over after crash")
        time.sleep(0.3)
        frames = parse_capture(cap.output())
        first2 = _after(frames, t_kill - 0.01, lambda f: f.kind == "vrrp" and f.src == IPS["lb2"])
        assert first2 is not None
        last1 = [f for f in frames if f.kind == "vrrp" and f.src == IPS["lb1"] and f.ts < first2.ts]
        if last1:
            delta = first2.ts - last1[-1].ts
            out["crash_takeover_s"] = delta
            out["crash_error_ms"] = (delta - MDI_100) * 1000
            out["crash_from_kill_s"] = first2.ts - t_kill
        t2, mac2 = first2.ts, first2.smac
        g = _after(frames, t2 - 0.5, lambda f: f.kind == "garp" and f.src == VIP and f.smac == mac2)
        if g is not None:
            out["crash_garp_after_advert_ms"] = (g.ts - t2) * 1000

        # -- preemption back, then graceful stop
        r1.start()
        wait_until(lambda: r1.has_vip() and not r2.has_vip(), 10, what=f"{impl} lb1 preempts back")
        time.sleep(1.0 + rng.random())
        t_term = time.time()
        r1.graceful()
        wait_until(r2.has_vip, 5, what=f"{impl} lb2 takes over after graceful stop")
        time.sleep(0.3)
        frames = parse_capture(cap.output())
        zero = _after(
            frames, t_term - 0.01, lambda f: f.kind == "vrrp" and f.src == IPS["lb1"] and f.prio == 0
        )
        if zero is not None:
            first2 = _after(frames, zero.ts, lambda f: f.kind == "vrrp" and f.src == IPS["lb2"])
            if first2 is not None:
                delta = first2.ts - zero.ts
                out["graceful_takeover_s"] = delta
                out["graceful_error_ms"] = (delta - SKEW_100) * 1000
                out["graceful_zero_after_signal_ms"] = (zero.ts - t_term) * 1000
                mac2 = first2.smac
                g = _after(
                    frames, first2.ts - 0.5, lambda f: f.kind == "garp" and f.src == VIP and f.smac == mac2
                )
                if g is not None:
                    out["graceful_garp_after_advert_ms"] = (g.ts - first2.ts) * 1000
        cap.terminate(2)
    return out


def idle(impl: str, seconds: float) -> dict[str, Any]:
    with Lab(f"idle-{impl}") as lab:
        sw = lab.switch()
        h = lab.host("lb1")
        lab.link(h, sw, f"{IPS['lb1']}/24")
        r = Router(impl, lab, h, 150)
        r.start()
        wait_until(r.has_vip, 10, what=f"{impl} master")
        time.sleep(1.0)
        return idle_usage(impl, r.pids(), seconds)


def _summ(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "n": len(values),
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "mean_abs": round(statistics.fmean(abs(v) for v in values), 3),
    }


def run(
    rounds: int = 5, idle_seconds: float = 20.0, seed: int | None = None, quick: bool = False
) -> dict[str, Any]:
    """Measure ``rounds`` crash/graceful rounds per implementation (alternating order) and the idle cost.
    ``quick``: a 5 s idle measurement instead of ``idle_seconds``."""
    if quick:
        idle_seconds = min(idle_seconds, 5.0)
    rng = random.Random(seed)
    results: list[dict[str, Any]] = []
    for i in range(rounds):
        order = IMPLS if i % 2 == 0 else IMPLS[::-1]
        for impl in order:
            try:
                results.append({"round": i, **one_round(impl, rng)})
            except Exception as e:  # a failed round is reported, not fatal
                results.append({"round": i, "impl": impl, "error": repr(e)})
    idles = [idle(impl, idle_seconds) for impl in IMPLS]
    keys = [
        "crash_error_ms",
        "crash_takeover_s",
        "crash_from_kill_s",
        "crash_garp_after_advert_ms",
        "graceful_error_ms",
        "graceful_takeover_s",
        "graceful_zero_after_signal_ms",
        "graceful_garp_after_advert_ms",
    ]
    summary = {
        impl: {k: _summ([r[k] for r in results if r["impl"] == impl and k in r]) for k in keys}
        for impl in IMPLS
    }
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": host_info(),
        "expected": {"master_down_interval_s": MDI_100, "skew_time_s": SKEW_100},
        "rounds": results,
        "summary": summary,
        "idle": idles,
    }


def markdown(res: dict[str, Any]) -> str:
    s = res["summary"]

    def cell(impl: str, key: str, unit: str = "ms") -> str:
        d = s[impl].get(key) or {}
        if not d:
            return "n/a"
        return (
            f"{d['median']:+.1f} {unit} (max abs {max(abs(d['min']), abs(d['max'])):.1f}, n={d['n']})"
            if unit == "ms"
            else f"{d['median']:.3f} s ({d['min']:.3f}-{d['max']:.3f})"
        )

    lines = [
        f"VRRP failover, {res['when']}, kernel {res['host']['kernel']}, {res['host']['cpus']} CPUs, "
        f"Python {res['host']['python']}; priorities 150/100, advert_int 1.",
        "",
        "| measure | vrrpd | keepalived |",
        "|---|---|---|",
        f"| crash: backup's first advert - last advert heard, minus Master_Down_Interval (3.609 s) | "
        f"{cell('vrrpd', 'crash_error_ms')} | {cell('keepalived', 'crash_error_ms')} |",
        f"| crash: takeover measured from the kill | {cell('vrrpd', 'crash_from_kill_s', 's')} | "
        f"{cell('keepalived', 'crash_from_kill_s', 's')} |",
        f"| graceful: first advert - priority-0 advert, minus Skew_Time (0.609 s) | "
        f"{cell('vrrpd', 'graceful_error_ms')} | {cell('keepalived', 'graceful_error_ms')} |",
        f"| graceful: priority-0 advert after the signal | "
        f"{cell('vrrpd', 'graceful_zero_after_signal_ms')} | "
        f"{cell('keepalived', 'graceful_zero_after_signal_ms')} |",
        f"| GARP after the first advert as master (crash) | {cell('vrrpd', 'crash_garp_after_advert_ms')} | "
        f"{cell('keepalived', 'crash_garp_after_advert_ms')} |",
        f"| GARP after the first advert as master (graceful) | "
        f"{cell('vrrpd', 'graceful_garp_after_advert_ms')} | "
        f"{cell('keepalived', 'graceful_garp_after_advert_ms')} |",
    ]
    idle = {i["impl"]: i for i in res["idle"]}
    lines.append(
        f"| idle RSS, one instance (keepalived: {idle['keepalived']['processes']} processes) | "
        f"{idle['vrrpd']['rss_mib']} MiB | {idle['keepalived']['rss_mib']} MiB |"
    )
    lines.append(
        f"| idle CPU over {idle['vrrpd']['seconds']} s | {idle['vrrpd']['cpu_percent']} % | "
        f"{idle['keepalived']['cpu_percent']} % |"
    )
    errors = [r for r in res["rounds"] if "error" in r]
    if errors:
        lines += [
            "",
            failed_rounds_note(errors, "impl"),
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.vrrp_failover", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--idle", type=float, default=20.0, help="seconds of idle measurement per implementation")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", default=str(RESULTS))
    a = p.parse_args(argv)
    res = run(a.rounds, a.idle, a.seed)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vrrp_failover.json").write_text(json.dumps(res, indent=2) + "\n")
    md = markdown(res)
    (out / "vrrp_failover.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
