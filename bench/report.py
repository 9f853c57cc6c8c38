"""The performance page and the charts of benchmark runs.

``python -m bench.report`` writes ``docs/performance.md`` from the committed run files
``bench/results/run-*.json``: the targets the issues set (met or not, for the configuration they were set
for, other variants beside them), each part's newest result with its run file, charts and method, and the
targets evaluated on every committed run. The page is never edited by hand (``--check`` compares).
``python -m bench.report bench/results/<run>.json`` first redraws that run's charts. Charts use
matplotlib's Agg backend (no display needed):

* ``<part>.png``: one panel per figure, a bar per implementation at the median with the min-max range of
  the rounds as an error bar, and the median per-round ratio subject/baseline in the panel title;
* figures marked ``"chart": "strip"`` are drawn as every sample (a dot per trial) instead of a bar;
* parts may add their own charts (backend death draws a timeline of every client connection).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    RESULTS,
    ROOT,
    finite,
    fmt,
    markdown,
    markdown_part,
    normalize,
    ratios,
    rel,
    sanitize,
    summary,
    write_json,
)

COLORS = {
    "tcplb": "#1f77b4",
    "haproxy": "#d62728",
    "direct": "#7f7f7f",
    "tcplb-redispatch": "#6baed6",
    "haproxy-redispatch": "#fc9272",
    "haproxy-splice": "#fc9272",
    "tcplb-93fabf8": "#9ecae1",  # bench/redesign.py: the pre-redesign tree, a lighter shade of its successor
    "tcplb-2w-93fabf8": "#c6dbef",
    "vrrpd": "#1f77b4",
    "keepalived": "#d62728",
}
FALLBACK = ["#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#ff7f0e"]


def color(impl: str, i: int) -> str:
    for key, c in COLORS.items():
        if impl == key:
            return c
    for key, c in COLORS.items():
        if impl.startswith(key):
            return c
    return FALLBACK[i % len(FALLBACK)]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bars_chart(res: Mapping[str, Any], path: Path) -> Path | None:
    """One panel per charted figure of a part result; None when nothing is charted."""
    figs = [f for f in res.get("figures", []) if f.get("chart")]
    figs = [f for f in figs if any(finite(v) for v in f.get("samples", {}).values())]
    if not figs:
        return None
    plt = _plt()
    ncols = min(4, len(figs))
    nrows = math.ceil(len(figs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.1 * ncols, 2.7 * nrows), squeeze=False)
    impl_order: list[str] = list(res.get("impls") or [])
    subject, baseline = res.get("subject"), res.get("baseline")
    for k, f in enumerate(figs):
        ax = axes[k // ncols][k % ncols]
        samples: dict[str, list[float | None]] = f["samples"]
        names = [i for i in impl_order if i in samples] + [i for i in samples if i not in impl_order]
        names = [n for n in names if finite(samples[n])]
        for j, name in enumerate(names):
            xs = finite(samples[name])
            c = color(name, j)
            if f.get("chart") == "strip":
                ax.scatter([j] * len(xs), xs, color=c, s=14, alpha=0.8, zorder=3)
                med = summary(xs)["median"]
                if med is not None:
                    ax.hlines(med, j - 0.3, j + 0.3, color="black", lw=1.2, zorder=4)
            else:
                s = summary(xs)
                med, lo, hi = s["median"], s["min"], s["max"]
                assert med is not None and lo is not None and hi is not None
                ax.bar(j, med, color=c, width=0.65, zorder=2)
                ax.errorbar(j, med, yerr=[[med - lo], [hi - med]], color="black", capsize=4, lw=1, zorder=3)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, fontsize=7, rotation=20 if len(names) > 3 else 0)
        title = str(f.get("label", f.get("id")))
        if subject and baseline and subject in samples and baseline in samples and f.get("better") != "info":
            r = summary(ratios(samples[subject], samples[baseline]))["median"]
            if r is not None:
                title += f"\n{subject}/{baseline} {r:.2f}x"
        ax.set_title(title, fontsize=8)
        ax.set_ylabel(str(f.get("unit", "")), fontsize=7)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3, zorder=0)
        ax.set_ylim(bottom=0)
    for k in range(len(figs), nrows * ncols):
        axes[k // ncols][k % ncols].axis("off")
    fig.suptitle(str(res.get("title", res.get("part"))), fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def timeline_chart(
    series: Mapping[str, Sequence[Mapping[str, Any]]],
    path: Path,
    *,
    title: str,
    event_label: str = "backend killed",
) -> Path | None:
    """Client connections over time, one panel per variant: x = start (s after the event), y = how long
    it took; green dots succeeded, red crosses failed. ``series[v]`` = ``[{"t": s, "dur": s, "ok": b}]``."""
    if not any(series.values()):
        return None
    plt = _plt()
    n = len(series)
    fig, axes = plt.subplots(1, n, figsize=(3.0 * n, 2.8), squeeze=False, sharey=True)
    for k, (name, conns) in enumerate(series.items()):
        ax = axes[0][k]
        ok = [c for c in conns if c.get("ok")]
        bad = [c for c in conns if not c.get("ok")]
        ax.scatter([c["t"] for c in ok], [c["dur"] for c in ok], s=5, color="#2ca02c", label="ok")
        ax.scatter([c["t"] for c in bad], [c["dur"] for c in bad], s=14, color="#d62728", marker="x",
                   label="failed")  # fmt: skip
        ax.axvline(0, color="black", lw=0.8, ls="--")
        ax.set_title(f"{name}\n{len(bad)} failed of {len(conns)}", fontsize=8)
        ax.set_xlabel(f"connection start, s after {event_label}", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if k == 0:
            ax.set_ylabel("connect-to-first-byte, s", fontsize=7)
            ax.legend(fontsize=6, loc="upper right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------ run files


RUN_GLOB = "run-*.json"


def run_files(results: Path = RESULTS) -> list[Path]:
    """The committed run files, oldest first (by name: ``run-<UTC date>-<time>.json``; file times are
    meaningless after a checkout)."""
    return sorted(results.glob(RUN_GLOB), key=lambda p: p.name)


def load_runs(results: Path = RESULTS) -> list[tuple[str, dict[str, Any]]]:
    """``(file name, run)`` for every readable run file, oldest first."""
    out: list[tuple[str, dict[str, Any]]] = []
    for p in run_files(results):
        try:
            run = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(run, dict):
            out.append((p.name, run))
    return out


def usable(res: Any) -> bool:
    return isinstance(res, dict) and not res.get("skipped") and not res.get("error")


def newest_parts(runs: Sequence[tuple[str, dict[str, Any]]]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Each part's newest good result: part name -> (run file name, run)."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, run in runs:
        for part, res in (run.get("parts") or {}).items():
            if usable(res):
                out[part] = (name, run)
    return out


# ------------------------------------------------------------------------------------------ targets


@dataclass(frozen=True)
class Target:
    """A figure's target as the issue set it: ``subject`` (the configuration the target was set for)
    against ``baseline`` (a ratio of per-round samples) or against an absolute bound."""

    part: str
    name: str  # short column name in the history table
    label: str
    issue: str
    wording: str  # the target in the issue's words
    figure: str  # figure id in the part result
    subject: str
    op: str  # ">=" or "<="
    bound: float
    baseline: str | None = None  # None: an absolute bound on the subject's samples
    stat: str = "median"  # absolute targets: "median", "max" or "max_abs" over the samples
    unit: str = ""
    variants: tuple[tuple[str, str | None], ...] = ()  # (impl, baseline) shown beside, no target


TARGETS: tuple[Target, ...] = (
    Target("tcplb", "bulk", "Bulk TCP, one iperf3 stream", "#3",
           "at least 1.3x HAProxy's default configuration", "bulk", "tcplb", ">=", 1.3, baseline="haproxy",
           variants=(("tcplb-2w", "haproxy"), ("tcplb-splice", "haproxy"))),
    Target("tcplb", "bulk/splice", "Bulk TCP against HAProxy with splice", "#3",
           "at least 1.0x HAProxy with splice", "bulk", "tcplb", ">=", 1.0, baseline="haproxy-splice",
           variants=(("tcplb-splice", "haproxy-splice"),)),
    Target("tcplb", "small", "Small requests, wrk 20 keep-alive connections", "#3",
           "at least 0.9x HAProxy's requests per second", "small", "tcplb", ">=", 0.9, baseline="haproxy",
           variants=(("tcplb-2w", "haproxy"), ("tcplb-splice", "haproxy"))),
    Target("tcplb", "churn", "Connection churn, wrk `Connection: close`, 50 concurrent", "#3",
           "at least 0.7x HAProxy", "churn", "tcplb", ">=", 0.7, baseline="haproxy",
           variants=(("tcplb-2w", "haproxy"), ("tcplb", "haproxy-1t"), ("tcplb-splice", "haproxy"))),
    Target("tcplb", "10k idle", "RSS with 10,000 concurrent idle connections", "#3", "at most 150 MiB",
           "idle10k", "tcplb", "<=", 150.0, unit="MiB", variants=(("haproxy", None),)),
    Target("tcplb", "idle RSS", "Idle RSS, three servers checked every second", "#3", "at most 35 MiB",
           "idle_rss", "tcplb", "<=", 35.0, unit="MiB", variants=(("tcplb-2w", None), ("haproxy", None))),
    Target("tcplb", "idle CPU", "Idle CPU, three servers checked every second", "#3", "at most 0.5 %",
           "idle_cpu", "tcplb", "<=", 0.5, unit="%", variants=(("tcplb-2w", None), ("haproxy", None))),
    Target("failover", "crash", "Master crash: backup's first advert after Master_Down_Interval", "#2",
           "within 10 ms of Master_Down_Interval after the last advert heard (every trial)",
           "crash_error_ms", "vrrpd", "<=", 10.0, stat="max_abs", unit="ms",
           variants=(("keepalived", None),)),
    Target("failover", "graceful", "Graceful stop: takeover after Skew_Time", "#2",
           "within 10 ms of Skew_Time after the priority-0 advert (every trial)",
           "graceful_error_ms", "vrrpd", "<=", 10.0, stat="max_abs", unit="ms",
           variants=(("keepalived", None),)),
    Target("failover", "GARP crash", "GARP after the first advert as master (crash)", "#2",
           "in the same millisecond as the first advert (every trial)", "crash_garp_after_advert_ms", "vrrpd",
           "<=", 1.0, stat="max", unit="ms", variants=(("keepalived", None),)),
    Target("failover", "GARP graceful", "GARP after the first advert as master (graceful stop)", "#2",
           "in the same millisecond as the first advert (every trial)", "graceful_garp_after_advert_ms",
           "vrrpd", "<=", 1.0, stat="max", unit="ms", variants=(("keepalived", None),)),
    Target("failover", "idle RSS", "vrrpd idle RSS, one instance at advert_int 1", "#2", "at most 25 MiB",
           "idle_rss_mib", "vrrpd", "<=", 25.0, unit="MiB", variants=(("keepalived", None),)),
    Target("failover", "idle CPU", "vrrpd idle CPU, one instance at advert_int 1", "#2", "at most 0.5 %",
           "idle_cpu_pct", "vrrpd", "<=", 0.5, unit="%", variants=(("keepalived", None),)),
    Target("backend-death", "failed", "A backend dies under connection load: failed client connections",
           "#3", "no client connection fails when a node dies (every round)", "failed", "tcplb", "<=", 0.0,
           stat="max", unit="", variants=(("tcplb-redispatch", None), ("haproxy", None),
                                          ("haproxy-redispatch", None))),
    # issue #10 (the session machine and bufsize): set 2026-12-05, against the run published before it
    Target("tcplb", "churn #10", "Connection churn, one process (issue #10 goal)", "#10",
           "at least 0.75x HAProxy, tcplb's default single process", "churn", "tcplb", ">=", 0.75,
           baseline="haproxy"),
    Target("tcplb", "churn 1p kept", "Connection churn, one process: no speed lost to the redesign", "#10",
           "not below the last published run (0.63x HAProxy)", "churn", "tcplb", ">=", 0.63,
           baseline="haproxy"),
    Target("tcplb", "churn 2w kept", "Connection churn, `workers = 2`: no speed lost to the redesign", "#10",
           "not below the last published run (0.71x HAProxy)", "churn", "tcplb-2w", ">=", 0.71,
           baseline="haproxy"),
    Target("tcplb", "small #10", "Small requests, one process (issue #10 goal)", "#10",
           "at least 0.9x HAProxy, tcplb's default single process", "small", "tcplb", ">=", 0.9,
           baseline="haproxy"),
    Target("tcplb", "small 1p kept", "Small requests, one process: no speed lost to the redesign", "#10",
           "not below the last published run (0.85x HAProxy)", "small", "tcplb", ">=", 0.85,
           baseline="haproxy"),
    Target("tcplb", "small 2w kept", "Small requests, `workers = 2`: no speed lost to the redesign", "#10",
           "not below the last published run (0.95x HAProxy)", "small", "tcplb-2w", ">=", 0.95,
           baseline="haproxy"),
    Target("tcplb", "bulk #10", "Bulk TCP with the new default buffer size (`bufsize` 32k)", "#10",
           "at least 1.3x HAProxy's default configuration", "bulk", "tcplb", ">=", 1.3, baseline="haproxy"),
    Target("stalled", "stalled RSS", "RSS growth per stalled upload, 1,000 stalled uploads", "#10",
           "at most 128 KiB per connection (every round; HAProxy in the same run)", "rss_per_conn_kib",
           "tcplb", "<=", 128.0, stat="max", unit="KiB", variants=(("haproxy", None),)),
    Target("rtt", "ping-pong/direct", "Round trips per second, one connection ping-pong (64 bytes)", "#10",
           "at least 0.97 of direct", "pingpong", "tcplb", ">=", 0.97, baseline="direct",
           variants=(("haproxy", "direct"),)),
    Target("rtt", "ping-pong/HAProxy", "Round trips per second, one connection ping-pong (64 bytes)", "#10",
           "at least 0.98x HAProxy", "pingpong", "tcplb", ">=", 0.98, baseline="haproxy"),
    Target("rtt", "confirm/direct", "Publishes with a confirm per message (persistent, mirrored x3)", "#10",
           "at least 0.97 of direct", "confirm1", "tcplb", ">=", 0.97, baseline="direct",
           variants=(("haproxy", "direct"),)),
    Target("rtt", "confirm/HAProxy", "Publishes with a confirm per message (persistent, mirrored x3)", "#10",
           "at least 0.98x HAProxy", "confirm1", "tcplb", ">=", 0.98, baseline="haproxy"),
    Target("rtt", "confirm tr/direct", "Publishes with a confirm per message (transient, unmirrored)", "#10",
           "at least 0.97 of direct", "confirm1_transient", "tcplb", ">=", 0.97, baseline="direct",
           variants=(("haproxy", "direct"),)),
    Target("rtt", "confirm tr/HAProxy", "Publishes with a confirm per message (transient, unmirrored)",
           "#10", "at least 0.98x HAProxy", "confirm1_transient", "tcplb", ">=", 0.98, baseline="haproxy"),
    Target("failover", "crash #11", "Master crash after the host-side rework: no regression", "#11",
           "within 5 ms of Master_Down_Interval after the last advert heard (every trial)", "crash_error_ms",
           "vrrpd", "<=", 5.0, stat="max_abs", unit="ms", variants=(("keepalived", None),)),
    Target("failover", "graceful #11", "Graceful stop after the host-side rework: no regression", "#11",
           "within 2 ms of Skew_Time after the priority-0 advert (every trial)", "graceful_error_ms", "vrrpd",
           "<=", 2.0, stat="max_abs", unit="ms", variants=(("keepalived", None),)),
    Target("failover", "idle RSS #11", "vrrpd idle RSS after the host-side rework", "#11",
           "at most 25 MiB (daemon as installed: precompiled bytecode)", "idle_rss_mib", "vrrpd", "<=", 25.0,
           unit="MiB", variants=(("keepalived", None),)),
    Target("track-process", "tcplb killed", "tcplb killed on the master: the backup's first advert", "#11",
           "the VIP moves within Skew_Time + 0.2 s (609 + 200 ms at priority 100) of the kill: the backup's "
           "first advert, with track_process (every trial; keepalived with track_process in the same run)",
           "first_advert_ms", "vrrpd", "<=", (256 - 100) / 256 * 1000 + 200, stat="max", unit="ms",
           variants=(("keepalived", None), ("keepalived-script", None))),
    # issue #14 (VRRPv3, advert_int 0.1, priorities 150/100): bench/vrrp_v3.py and bench/vrrp_e2e.py
    Target("failover-v3", "v3 crash IPv4", "VRRPv3 at 0.1 s, master crash, IPv4: the backup's first advert",
           "#14", "within 5 ms of Master_Down_Interval (0.361 s) after the master's last advert "
           "(every trial; keepalived v3 in the same run)", "crash4_error_ms", "vrrpd", "<=", 5.0,
           stat="max_abs", unit="ms", variants=(("keepalived", None),)),
    Target("failover-v3", "v3 crash IPv6", "VRRPv3 at 0.1 s, master crash, IPv6: the backup's first advert",
           "#14", "within 5 ms of Master_Down_Interval (0.361 s) after the master's last advert "
           "(every trial; keepalived v3 in the same run)", "crash6_error_ms", "vrrpd", "<=", 5.0,
           stat="max_abs", unit="ms", variants=(("keepalived", None),)),
    Target("failover-v3", "v3 graceful IPv4",
           "VRRPv3 at 0.1 s, graceful stop, IPv4: the backup's first advert", "#14",
           "within 2 ms of Skew_Time (0.061 s) after the priority-0 advert (every trial)",
           "graceful4_error_ms", "vrrpd", "<=", 2.0, stat="max_abs", unit="ms",
           variants=(("keepalived", None),)),
    Target("failover-v3", "v3 graceful IPv6",
           "VRRPv3 at 0.1 s, graceful stop, IPv6: the backup's first advert", "#14",
           "within 2 ms of Skew_Time (0.061 s) after the priority-0 advert (every trial)",
           "graceful6_error_ms", "vrrpd", "<=", 2.0, stat="max_abs", unit="ms",
           variants=(("keepalived", None),)),
    Target("failover-v3", "v3 idle CPU", "Idle CPU of one instance at 0.1 s adverts (VRRPv3, master)", "#14",
           "at most 1 % of a core (keepalived beside it)", "idle_cpu_pct", "vrrpd", "<=", 1.0, unit="%",
           variants=(("keepalived", None),)),
    Target("failover-e2e", "e2e confirm gap",
           "End to end at 0.1 s adverts: longest confirm gap after a master crash", "#14",
           "under 1.0 s, tcplb behind vrrpd (the issue's bound for the stack scenario; every round; "
           "keepalived + HAProxy on both LB hosts in the same run)", "confirm_gap_s", "vrrpd+tcplb",
           "<=", 1.0, stat="max", unit="s", variants=(("keepalived+haproxy", None),)),
    Target("failover-e2e", "e2e lost",
           "End to end at 0.1 s adverts: confirmed messages lost in a master crash", "#14",
           "lost 0 (every round)", "lost", "vrrpd+tcplb", "<=", 0.0, stat="max",
           variants=(("keepalived+haproxy", None),)),
    # issue #13 (RabbitMQ-aware front door): bench/frozen_broker.py and bench/rolling.py
    Target("frozen-broker", "frozen failed", "A frozen broker (SIGSTOP 20 s), a new client every 100 ms: "
           "failed or hung client connects", "#13", "0 failed client connections (every round; HAProxy with "
           "its tcp check in the same run)", "failed_or_hung", "tcplb", "<=", 0.0, stat="max",
           variants=(("haproxy", None),)),
    Target("rolling-restart", "rolling spread", "Rolling restart, 60 long-lived connections: per-node spread "
           "30 s after the last node is back", "#13", "within ±10 % of even with rebalancing on (every "
           "round; without it and HAProxy in the same run)", "spread_pct", "tcplb-rebalance", "<=", 10.0,
           stat="max", unit="%", variants=(("tcplb", None), ("haproxy", None))),
    Target("rolling-restart", "rolling failed", "Rolling restart, 60 long-lived connections + load: failed "
           "connects", "#13", "0 failed connects (every round)", "failed", "tcplb-rebalance", "<=", 0.0,
           stat="max", variants=(("tcplb", None), ("haproxy", None))),
    Target("rolling-restart", "rolling lost", "Rolling restart under publisher-confirm load: confirmed "
           "messages lost", "#13", "lost 0 (every round)", "lost", "tcplb-rebalance", "<=", 0.0, stat="max",
           variants=(("tcplb", None), ("haproxy", None))),
)  # fmt: skip

# issue #10, "no speed lost to the redesign", measured directly (bench/redesign.py): the pre-redesign tcplb
# (93fabf8, the code of the published run the "... kept" floors come from) and the current tree in the same
# run. Shown beside the "kept" rows once a committed run has the part (until then the section below says so).
REDESIGN_OLD = "93fabf8"
REDESIGN_PUBLISHED = "run-20261122-040646.json"  # the floors' run: measured with the code of 93fabf8
REDESIGN_AFTER = "small 2w kept"  # the A/B rows follow the published floors in the Targets table
AB_TARGETS: tuple[Target, ...] = (
    Target("redesign", "churn 1p A/B", "Connection churn, one process: no speed lost to the redesign, "
           "same-run A/B against 93fabf8", "#10",
           "at least 1.0x the pre-redesign tcplb (93fabf8) in the same run",
           "churn", "tcplb", ">=", 1.0, baseline="tcplb-93fabf8",
           variants=(("tcplb", "haproxy"), ("tcplb-93fabf8", "haproxy"))),
    Target("redesign", "churn 2w A/B", "Connection churn, `workers = 2`: no speed lost to the redesign, "
           "same-run A/B against 93fabf8", "#10", "at least 1.0x the pre-redesign tcplb (93fabf8) in the "
           "same run", "churn", "tcplb-2w", ">=", 1.0, baseline="tcplb-2w-93fabf8",
           variants=(("tcplb-2w", "haproxy"), ("tcplb-2w-93fabf8", "haproxy"))),
    Target("redesign", "small 1p A/B", "Small requests, one process: no speed lost to the redesign, "
           "same-run A/B against 93fabf8", "#10",
           "at least 1.0x the pre-redesign tcplb (93fabf8) in the same run",
           "small", "tcplb", ">=", 1.0, baseline="tcplb-93fabf8",
           variants=(("tcplb", "haproxy"), ("tcplb-93fabf8", "haproxy"))),
    Target("redesign", "small 2w A/B", "Small requests, `workers = 2`: no speed lost to the redesign, "
           "same-run A/B against 93fabf8", "#10", "at least 1.0x the pre-redesign tcplb (93fabf8) in the "
           "same run", "small", "tcplb-2w", ">=", 1.0, baseline="tcplb-2w-93fabf8",
           variants=(("tcplb-2w", "haproxy"), ("tcplb-2w-93fabf8", "haproxy"))),
)  # fmt: skip

NO_TARGET = {
    "amqp": "no numeric target was set (issue #5: measured side by side with HAProxy and the direct path)",
    "scale": "no numeric target was set (issue #5); the 10,000-connection target of issue #3 is measured "
    "by the tcplb part, one process",
}


def samples_of(res: Mapping[str, Any]) -> dict[str, dict[str, list[float | None]]]:
    """figure id -> impl -> samples, plus the failover part's idle figures (kept under ``raw.idle``)."""
    out: dict[str, dict[str, list[float | None]]] = {}
    for f in res.get("figures") or []:
        if isinstance(f, dict) and isinstance(f.get("samples"), dict):
            out[str(f.get("id"))] = {str(k): list(v) for k, v in f["samples"].items()}
    raw = res.get("raw")
    idle = raw.get("idle") if isinstance(raw, dict) else None
    if isinstance(idle, list):
        for entry in idle:
            if not isinstance(entry, dict) or "impl" not in entry:
                continue
            for key in ("rss_mib", "cpu_percent"):
                fid = "idle_rss_mib" if key == "rss_mib" else "idle_cpu_pct"
                v = entry.get(key)
                if isinstance(v, int | float):
                    out.setdefault(fid, {})[str(entry["impl"])] = [float(v)]
    return out


def value(t: Target, figs: Mapping[str, Mapping[str, Sequence[float | None]]], impl: str,
          baseline: str | None) -> float | None:  # fmt: skip
    """The measured value of ``impl`` for target ``t``: the median per-round ratio to ``baseline``, or
    the target's statistic over ``impl``'s samples."""
    samples = figs.get(t.figure, {})
    xs = samples.get(impl)
    if not xs:
        return None
    if baseline is not None:
        base = samples.get(baseline)
        if not base:
            return None
        med = summary(ratios(xs, base))["median"]
        return None if med is None else float(med)
    vals = finite(xs)
    if not vals:
        return None
    if t.stat == "max_abs":
        return max(abs(v) for v in vals)
    if t.stat == "max":
        return max(vals)
    med = summary(vals)["median"]
    return None if med is None else float(med)


def show(t: Target, v: float | None) -> str:
    if v is None:
        return "-"
    if t.baseline is not None:
        # two decimals, unless rounding would make a missed target look met (1.298 shown as 1.30 against 1.3)
        shown = round(v, 2)
        if (shown >= t.bound if t.op == ">=" else shown <= t.bound) != (met(t, v) == "met"):
            return f"{v:.3f}x"
        return f"{v:.2f}x"
    s = fmt(v)
    if t.stat == "max_abs":
        s = f"max \\|{s}\\|"
    elif t.stat == "max":
        s = f"max {s}"
    return f"{s} {t.unit}".rstrip()


def met(t: Target, v: float | None) -> str:
    if v is None:
        return "not measured"
    ok = v >= t.bound if t.op == ">=" else v <= t.bound
    return "met" if ok else "**not met**"


def impl_name(impl: str, baseline: str | None) -> str:
    return f"{impl} / {baseline}" if baseline else impl


# ------------------------------------------------------------------------------------------ the page

PAGE = ROOT / "docs" / "performance.md"
GENERATOR = "python -m bench.report"

METHOD = """\
## Method

Every figure is measured **side by side** with the programs operators know: tcplb against Debian's HAProxy
2.6, vrrpd against Debian's keepalived 2.2.7, and the direct path (no LB) where that means something. Each
comparison runs in one benchmark run, on the same namespace topology, with equivalent configurations, in
**alternating rounds**: the order of the implementations rotates every round, so a slow drift of the machine
(another job starting) does not favour whoever always runs first. The tables show the **median** over the
rounds, the **min-max** range, and the **per-round ratio** tcplb/HAProxy (round *i* of one over round *i* of
the other, so a noisy round affects both sides of its own ratio). Only ratios are worth comparing between
machines; on a shared 2-vCPU machine, differences under about 10 % mean nothing.

HAProxy's default configuration runs one thread per CPU (two here); tcplb's default is one process.
`tcplb-2w` is tcplb with `global.workers = 2` (two relay processes), `tcplb-splice` one process with
`splice = true`, `haproxy-1t` HAProxy with `nbthread 1`, `haproxy-splice` HAProxy with
`option splice-request` and `splice-response`.

### Running it

```sh
make bench                                  # everything, bounded: under 46 minutes
.venv/bin/python -m bench all               # the same
.venv/bin/python -m bench tcplb --rounds 5  # one part: tcplb (also: throughput|requests|churn), stalled, rtt,
                                            #   amqp, scale, failover, backend-death, track-process,
                                            #   frozen-broker, rolling-restart, redesign;
                                            #   --rounds N for more rounds
.venv/bin/python -m bench stalled rtt       # several parts, one run file
.venv/bin/python -m bench amqp --quick      # a smoke test: 1 round (2 trials for failover), written to
                                            # bench/results/quick/, never to this page
.venv/bin/python -m bench.report            # regenerate this page from the committed run files
.venv/bin/python -m bench.report bench/results/run-<date>.json   # also redraw that run's charts
```

All thirteen parts at their default rounds took 34.4 minutes on 2 vCPUs (run-20261205-131051). It needs root
(network namespaces) and the Debian packages `make deps` installs (haproxy, keepalived, rabbitmq-server,
iperf3, wrk, nginx-light). Nothing runs in the root namespace: every part builds its own lab with `netns/`
(addresses from 192.0.2.0/24) and removes it. Each part runs in a child process with a time budget, and the
run as a whole stays under 45 minutes: a part that runs late does fewer rounds (the table says so) rather
than being cut off; a part that fails is recorded as failed and the run goes on. Every load is bounded in
count and time.

Output, in `bench/results/`:

- `run-<date>-<time>.json`: one file per run: the environment (date, versions of Python, uvloop, HAProxy,
  keepalived, RabbitMQ, Erlang, nginx, iperf3, wrk, the kernel, the CPU model and count, RLIMIT_NOFILE, the
  load average at the start), the command, and **every sample** of every round;
- `<part>.png`: bars at the median with the min-max range of the rounds, the median ratio in each panel's
  title; `failover.png` shows every trial as a dot; `backend-death-timeline.png` every client connection;
- this page, `docs/performance.md`: each part's newest result over the run files (so `python -m bench amqp`
  refreshes the AMQP section only), each section naming its run file. `tests/bench/test_report_docs.py`
  regenerates it and fails when the committed page differs, so it is never edited by hand.

### What each part measures

**tcplb** (`bench/tcplb_perf.py`, issue #3): bulk TCP with one iperf3 stream through the LB (HAProxy by
default and with splice forced), small requests (wrk, 20 keep-alive connections, to nginx answering 6 bytes),
connection churn (wrk with `Connection: close`, 50 concurrent), idle footprint (RSS and CPU with three servers
checked every second, RSS with 10,000 idle connections).

**redesign** (`bench/redesign.py`, issue #10): the tcplb part's lab and loads (churn, small requests, bulk)
through tcplb at commit 93fabf8 (before the issue #10 redesign; extracted with `git archive`, run with the
same Python, uvloop and precompiled bytecode) and through the current tree, each with one process and with
`workers = 2`, and through HAProxy's default configuration, in one run. Both trees get the same
configuration (keys 93fabf8 knows, each version's defaults otherwise). Each old/new pair runs back to back
(ABAB), the pair's order flips every round and the pairs and HAProxy rotate. Bulk is informative: 93fabf8
read up to 256 KiB per read with unbounded memory per connection, which #10 bounded.

**failover** (`bench/vrrp_failover.py`, issue #2): vrrpd and keepalived, master crash (SIGKILL at a random
point of the advert cycle) and graceful stop, timed on the wire against the RFC bounds (Master_Down_Interval
after the last advert heard; Skew_Time after the priority-0 advert), GARP timing, idle RSS and CPU.

**amqp** (`bench/amqp_bench.py`, issue #5): a 3-node RabbitMQ 3.10 cluster; through tcplb, through HAProxy
(the same listener: leastconn over the three nodes, check inter 1s rise 2 fall 3, retries 3, redispatch) and
direct. Durable classic queues mirrored to all three nodes (`ha-mode: all`, the policy of the setup being
replaced), 1 KiB persistent messages. Each node gets a 1 GiB memory high-watermark: with the 256 MiB the test
lab uses, the memory alarm blocked publishers for seconds at these rates and the figures measured the alarm.
Before each measurement the benchmark waits (at most 2.5 s) for the brokers to go quiet, and each generator
waits 1 s after declaring its queue, so a mirror still starting does not pause the queue mid-measurement.

- *publish, no confirms*: one connection publishes as fast as the broker takes it. A passive
  `queue.declare` after every 1,000 messages (at most two outstanding) bounds what sits in socket buffers,
  and its reply proves the channel handled everything before it; the rate counts the messages in the queue
  at the end.
- *publish, no confirms, transient, unmirrored*: the same with non-persistent messages to an unmirrored
  queue: the broker's fastest path, so the LB carries more.
- *publish, confirms (window 128)*: publisher confirms, pipelined: at most 128 unconfirmed messages in
  flight.
- *latency p50 / p99*: a consumer connection and a publisher connection (on different nodes), 500 msg/s,
  time from publish to delivery.
- *LB CPU while publishing*: CPU of the LB process during the no-confirm publish, in % of one core.
- *generator CPU*: the load generator's own CPU.
- *direct, 2 generators*: two generator processes publishing to one queue at once, summed.

The load generator is `bench/amqpgen.py`: AMQP 0-9-1 framing on raw asyncio (uvloop), three pre-encoded frames
per message written in batches, incoming frames parsed from one buffer. It uses well under 1 % of a core at
these rates, so it is not what limits them. A second generator process (a second *connection*) can raise the
total: RabbitMQ runs every connection's channel in Erlang processes of its own, so one connection's rate is
bounded by the broker's per-connection pipeline, on the direct path and through either LB alike.

**scale** (`bench/scale.py`, issue #5): RSS and CPU of the LB with 0, 1,000 and 10,000 concurrent idle
connections (opened through the LB to nginx and verified on the backends), and wrk small-request latency (p50,
p99) through the LB under that load. A proxied connection costs the LB two file descriptors and the hard
`RLIMIT_NOFILE` of the test machine is 20,000 and cannot be raised, so one LB process cannot hold 10,000
connections (HAProxy refuses `maxconn` much above 6,000 under that limit). Each implementation therefore runs
as **two processes** (`maxconn 6000` each), the connections are spread over both, and RSS and CPU are summed:
both pay their base memory twice.

**backend-death** (`bench/backend_death.py`, issues #3 and #5): a backend dies under connection load. 100 new
client connections per second through the LB to three plain TCP backends that greet each connection; one
backend is SIGKILLed (its port closes, connects are refused) one second in. The same listener for all
variants: `balance roundrobin`, `check inter 1s rise 2 fall 3`, `retries 3`, `timeout connect 5s`, with and
without redispatch. tcplb keeps its default passive health (`on_error = "mark-down"`: a refused live connect
takes the server out at once), which HAProxy has only with `observe layer4` (off by default, not enabled
here).

- *failed connections*: connections open at or started after the kill that never got the backend's
  greeting (closed by the LB, or 10 s timeout).
- *a failed connection hung*: how long each of them waited before it failed (median).
- *slowest connection after the kill*: the longest wait of any connection, failed or not.
- *connections failed during*: the window from the first to the last failed connection.

**track-process** (`bench/track_process.py`, issue #11): two routers (lb1 priority 150 with a tcplb to watch,
lb2 priority 100, advert_int 1) on a bridge where `tcpdump -tt` records the adverts; tcplb on lb1 is
SIGKILLed at a random point of the advert cycle; measured from the kill: lb1's priority-0 advert and lb2's
first advert (the VIP's move). Variants in alternating rounds: vrrpd with `[vrrp_track_process]` (exact argv,
`weight = 0`: FAULT, priority 0), keepalived with `vrrp_track_process` (weight 0), and keepalived with the
usual `vrrp_script` running `pgrep` every second (fall 1, weight 0).

**failover-v3** (`bench/vrrp_v3.py`, issue #14): VRRPv3 at `advert_int = 0.1`, vrrpd and keepalived
(`vrrp_version 3`) in alternating rounds. Each router (lb1 priority 150, lb2 priority 100) runs an IPv4
instance (VRID 61, adverts to 224.0.0.18) and an IPv6 one (VRID 62, adverts from the link-local address to
ff02::12). Master crash (SIGKILL at a random point of the advert cycle) and graceful stop, timed on the wire
per family (`tcpdump -tt` on the bridge, frames told apart by source MAC and VRID) against
Master_Down_Interval = 0.361 s after the master's last advert and Skew_Time = 0.061 s after the priority-0
advert. Idle: one IPv4 v3 instance at 0.1 s, master, alone: CPU in % of one core (keepalived: parent and
VRRP child summed) and RSS.

**failover-e2e** (`bench/vrrp_e2e.py`, issue #14): the stack of `netns/stack.py` (3 RabbitMQ nodes, lb1 and
lb2, a client) at `advert_int = 0.1`: vrrpd + tcplb on both LB hosts against keepalived + HAProxy on both, in
alternating rounds on one lab. 2 publishers with confirms and 2 consumers at 200 msg/s through the VIP to a
quorum queue; lb1's VRRP daemon and balancer are SIGKILLed together. Figures: the longest gap without a
publisher confirm (from 0.2 s before the kill), the VIP's move as the stack's 20 ms monitor sees it, and the
confirmed messages lost.

**frozen-broker** (`bench/frozen_broker.py`, issue #13): the stack of `netns/stack.py` (3 RabbitMQ nodes with
the management plugin, lb1 and lb2, a client); one node's Erlang VM is SIGSTOPped for 20 s (the kernel still
completes TCP handshakes, nothing answers AMQP) while the client opens a new AMQP connection every 100 ms
through the VIP (full handshake to Open-Ok, then Close). vrrpd + tcplb as the stack configures it (`protocol =
"amqp"` with `timeout_greeting = 1s`, the `rabbitmq` check) against keepalived + HAProxy with a TCP connect
check (`check inter 1s rise 2 fall 3`, `option redispatch`), alternating rounds on one lab. Figures over the
connections started during the freeze: failed (an error) or hung (not open after 10 s).

**rolling-restart** (`bench/rolling.py`, issue #13): the same stack; 60 long-lived pika connections (each
reopened whenever it closes) plus a publisher-confirm load through the VIP; the nodes are restarted one at a
time (`rabbitmq-upgrade drain`, stop, start, cluster whole again). Per-node connection counts are sampled
every second on the master LB host (`ss`, the same for both balancers); the figure is the spread 30 s after
the last node is back: the largest deviation from an even share, in % of it. Variants: tcplb with graceful
rebalancing (`tolerance = 0`, `rate = 5`, `settle = "2s"`; `tolerance = 0.03` in run-20261205-070151,
whose third node ended at -12.9 %: the planner bounds only the top, `ceil(share * (1 + tolerance))`), tcplb
without, keepalived + HAProxy (leastconn). `rolling-spread.png` draws the spread over time.

**stalled** (`bench/stalled.py`, issue #10): 1,000 clients upload through the LB to a server that accepts
and never reads; each client sends until a whole second passes without progress (at most 30 s). Figure: the
LB's RSS with the 1,000 stalled uploads minus its RSS before, per connection. tcplb in its default
configuration (one process, default `bufsize`), HAProxy with Debian's defaults (`tune.bufsize` 16 KiB), the
same listener. The kernel's socket buffers (not RSS) are bounded in the namespaces (`tcp_rmem`/`tcp_wmem`
4096 65536 131072) to keep the machine's TCP memory small; the LBs' own buffers do not depend on them.

**rtt** (`bench/rtt.py`, issue #10): the latency an LB adds per round trip, which is what a publisher
waiting for each confirm pays. *Ping-pong*: one connection sends 64 bytes and waits for the 64-byte echo,
for 4 s (blocking Python client and echo server, TCP_NODELAY: the same cost on every path). *Confirm per
message*: `bench/amqpgen.py publish --window 1` (one message in flight) against the 3-node cluster, 1 KiB
persistent messages to a mirrored durable queue, and 1 KiB transient messages to an unmirrored queue (the
broker's fastest path, where the LB's share is largest). Through tcplb, through HAProxy and direct, in
rotating order.

**Bytecode.** Every run byte-compiles the standard library and the project's packages (`python -m
compileall`) into a `PYTHONPYCACHEPREFIX` of its own before starting anything, and the daemons run with that
prefix and without `PYTHONDONTWRITEBYTECODE`: the daemons are measured as installed (`pip install .` and
`make install-systemd` install compiled bytecode). Without it every start compiles all modules from source
and the compiler's freed memory stays in the process (vrrpd's idle RSS about 2 MiB higher). The run file's
`environment.bytecode` records it; runs before 2026-12-05 did not do it.
"""

# Observations made when a run was read, attached to that run file and part (they appear under its table).
ANNOTATIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("run-20261205-065923.json", "frozen-broker"): (
        "HAProxy lost only one connection here because of leastconn with short-lived clients: the one "
        "connection it sent to the frozen node hangs and keeps that node's count at 1 while the others are "
        "at 0, so every later client goes elsewhere. The issue's 50 of 200 is HAProxy with a balance that "
        "keeps sending the node its share (roundrobin); not measured in this run. tcplb sent 3 clients to "
        "the silent node before marking it DOWN, each retried on another node after timeout_greeting (1 s): "
        "the 3 delayed connections.",
    ),
    ("run-20261122-010849.json", "amqp"): (
        "In the first round tcplb's confirm measurement (the run's first confirm-mode publish) got its first "
        "128 confirms only after 10 s, which the min-max column of that row shows; the other two rounds "
        "matched HAProxy. Probably broker warm-up; not investigated.",
    ),
}

PART_ORDER = ("tcplb", "redesign", "stalled", "rtt", "failover", "track-process", "failover-v3",
              "failover-e2e", "frozen-broker", "rolling-restart", "amqp", "scale",
              "backend-death")  # fmt: skip

OWN_TARGET_NOTE = re.compile(r"^median per-round ratio |\((?:target|limit) [<>]=|\(no target\)$")

ENV_KEYS = ("os", "kernel", "cpu", "cpus", "python", "uvloop", "haproxy", "keepalived", "rabbitmq")


def run_link(name: str) -> str:
    return f"[`{name}`](../bench/results/{name})"


def env_line(run: Mapping[str, Any]) -> str:
    env = run.get("environment") or {}
    return ", ".join(f"{k} {env[k]}" for k in ENV_KEYS if env.get(k) is not None)


def target_row(t: Target, newest: Mapping[str, tuple[str, dict[str, Any]]]) -> str:
    """The Targets table's row of ``t``, from the newest run of its part."""
    if t.part not in newest:
        return f"| {t.label} | {t.issue} | {t.wording} | - | not measured | | |"
    fname, run = newest[t.part]
    figs = samples_of(run["parts"][t.part])
    v = value(t, figs, t.subject, t.baseline)
    others = []
    for impl, base in t.variants:
        w = value(t, figs, impl, base)
        if w is not None:
            others.append(f"{impl_name(impl, base)} {show(t, w)}")
    return (
        f"| {t.label} | {t.issue} | {impl_name(t.subject, t.baseline)}: {t.wording} | {show(t, v)} | "
        f"{met(t, v)} | {'; '.join(others)} | {run_link(fname)} |"
    )


def redesign_section(newest: Mapping[str, tuple[str, dict[str, Any]]]) -> list[str]:
    """Issue #10's "no speed lost to the redesign", both ways: the published floors (ratios to HAProxy of
    the last run before the redesign, another machine and kernel; rows "... kept" of the Targets table,
    unchanged) and the same-run A/B of bench/redesign.py (current / 93fabf8, each against HAProxy)."""
    old = REDESIGN_OLD
    kept = {t.name: t for t in TARGETS if t.name.endswith(" kept") and t.issue == "#10"}
    lines = [
        "## No speed lost to the redesign",
        "",
        "Issue #10 asks that churn and small requests lose no speed to the redesign, for the default single "
        "process and `workers = 2`, with the last published run as the floor: its ratios to HAProxy (rows "
        '"... kept" of the Targets table, unchanged) were measured on an earlier machine and kernel, with '
        f"the code of commit {old} ({run_link(REDESIGN_PUBLISHED)}). `python -m bench redesign` measures the "
        f"redesign's cost directly: tcplb at {old} and the current tree in the same run, alternating (ABAB), "
        "with HAProxy's default configuration (2 threads) as the common baseline. Target: at least 1.0x the "
        "old code (median of per-round ratios). Bulk is informative only.",
        "",
    ]
    if "redesign" not in newest:
        return [*lines, "No committed run of `python -m bench redesign` yet: the published floors above are "
                        "the only measure of this target so far.", ""]  # fmt: skip
    fname, run = newest["redesign"]
    res = run["parts"]["redesign"]
    figs = samples_of(res)
    env = run.get("environment") or {}
    lines += [
        f"Same-run A/B: {run_link(fname)}, {env.get('date', '?')}, rounds: {res.get('rounds', '?')}; "
        f"{env_line(run)}.",
        "",
        f"| Figure | Configuration | Published floor (/ HAProxy) | current / {old} | Met | current / HAProxy "
        f"| {old} / HAProxy |",
        "|---|---|---:|---:|---|---:|---:|",
    ]
    label = {"churn": "Connection churn", "small": "Small requests", "bulk": "Bulk TCP (informative)"}
    for fid in ("churn", "small", "bulk"):
        for conf, new, floor in (("one process", "tcplb", "1p"), ("`workers = 2`", "tcplb-2w", "2w")):
            oldi = f"{new}-{old}"
            ab = next((t for t in AB_TARGETS if t.figure == fid and t.subject == new), None)
            probe = ab or Target("redesign", fid, fid, "#10", "", fid, new, ">=", 1.0, baseline=oldi)
            v = value(probe, figs, new, oldi)
            pub = kept.get(f"{fid} {floor} kept")
            row = [
                label[fid],
                conf,
                f"{pub.bound:.2f}x" if pub else "-",
                show(probe, v),
                met(probe, v) if ab else "(no target)",
                show(probe, value(probe, figs, new, "haproxy")),
                show(probe, value(probe, figs, oldi, "haproxy")),
            ]
            lines.append("| " + " | ".join(row) + " |")
    return [*lines, ""]


def targets_section(newest: Mapping[str, tuple[str, dict[str, Any]]]) -> list[str]:
    lines = [
        "## Targets",
        "",
        "Each target as its issue set it, for the configuration it was set for (tcplb's default: one "
        "process, no splice), met or not, with other variants beside it (no target of their own). Ratios "
        "are medians of per-round ratios.",
        "",
        "| Figure | Issue | Target | Measured | Met | Other variants | Run file |",
        "|---|---|---|---:|---|---|---|",
    ]
    for t in TARGETS:
        lines.append(target_row(t, newest))
        if t.name == REDESIGN_AFTER and "redesign" in newest:
            lines += [target_row(ab, newest) for ab in AB_TARGETS]
    for part, why in NO_TARGET.items():
        if part in newest:
            lines.append(f"| {part} | | {why} | | | | {run_link(newest[part][0])} |")
    return [*lines, ""]


def history_section(runs: Sequence[tuple[str, dict[str, Any]]]) -> list[str]:
    """Every committed run of a part with targets, newest last: how much the figures move between runs."""
    lines = [
        "## Every run",
        "",
        "The targets above evaluated on every committed run file that measured the part (the newest is the "
        "one shown above). Runs before `workers` and `splice` existed have no such variant.",
        "",
    ]
    every = (*TARGETS, *AB_TARGETS)
    for part in dict.fromkeys(t.part for t in every):
        ts = [t for t in every if t.part == part]
        rows = [(n, r) for n, r in runs if usable((r.get("parts") or {}).get(part))]
        if not rows:
            continue
        cols: list[tuple[Target, str, str | None]] = []
        for t in ts:
            cols.append((t, t.subject, t.baseline))
            # ratio variants, and absolute ones of our own variants (tcplb-2w's idle CPU, ...)
            cols += [(t, i, b) for i, b in t.variants if b is not None or i.startswith(t.subject + "-")]
        lines += [f"### {part}", ""]
        head = ["Run file", "Command", "Rounds"] + [f"{t.name}: {impl_name(i, b)}" for t, i, b in cols]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---"] * 3 + ["---:"] * len(cols)) + "|")
        for name, run in rows:
            res = run["parts"][part]
            figs = samples_of(res)
            n = res.get("rounds") or max((len(s) for f in figs.values() for s in f.values()), default=0)
            cells = [run_link(name), f"`{run.get('command', '?')}`", str(n)]
            for t, i, b in cols:
                v = value(t, figs, i, b)
                mark = "" if (i, b) != (t.subject, t.baseline) or v is None else (
                    "" if met(t, v) == "met" else " (not met)")  # fmt: skip
                cells.append(show(t, v) + mark)
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def results_section(newest: Mapping[str, tuple[str, dict[str, Any]]]) -> list[str]:
    lines = ["## Results", ""]
    order = [n for n in PART_ORDER if n in newest]
    order += sorted(n for n in newest if n not in order)
    for part in order:
        fname, run = newest[part]
        res = normalize(part, run["parts"][part])
        env = run.get("environment") or {}
        r = dict(res)
        r["from_run"] = (f"{run_link(fname)}, {env.get('date', '?')}, `{run.get('command', '?')}`; "
                         f"{env_line(run)}")  # fmt: skip
        r["charts"] = [f"../bench/results/{Path(str(c)).name}" for c in res.get("charts") or []]
        # the part's own target lines are replaced by the Targets table (targets as the issues set them)
        notes = [str(n) for n in res.get("notes") or [] if not OWN_TARGET_NOTE.search(str(n))]
        if len(notes) < len(res.get("notes") or []):
            notes.insert(0, "Targets, met or not: see [Targets](#targets).")
        r["notes"] = [*notes, *ANNOTATIONS.get((fname, part), ())]
        lines.append(markdown_part(r).rstrip())
        lines.append("")
    return lines


def performance_page(results: Path = RESULTS, current: Mapping[str, Any] | None = None,
                     current_name: str | None = None) -> str:  # fmt: skip
    """The text of ``docs/performance.md`` from the run files in ``results`` (``current``, when given,
    replaces or adds the run file ``current_name``)."""
    runs = load_runs(results)
    if current is not None and current_name is not None:
        runs = [(n, r) for n, r in runs if n != current_name]
        runs.append((current_name, json.loads(json.dumps(sanitize(current), default=str))))
        runs.sort(key=lambda nr: nr[0])
    newest = newest_parts(runs)
    used = sorted({n for n, _ in newest.values()})
    nav = ("*Part of the rmq-frontdoor documentation: [README](../README.md) · [vrrpd](vrrpd.md) · "
           "[tcplb](tcplb.md) · [failover](failover.md) · [operations](operations.md) · "
           "[performance](performance.md) · [lab](lab.md) · [design](design.md) · "
           "[development](development.md) · [migration](migration.md).*")  # fmt: skip
    lines = [
        "# Performance",
        "",
        f"<!-- Generated by `{GENERATOR}` from bench/results/{', bench/results/'.join(used) or '(none)'}"
        " (and every other run file it lists); do not edit by hand: "
        "tests/bench/test_report_docs.py fails when this file differs from what the generator writes. -->",
        "",
        f"*Generated by `{GENERATOR}` from the committed run files "
        f"({', '.join(run_link(n) for n in used) or 'none'}; earlier runs under [Every run](#every-run)). "
        "Do not edit by hand: change the generator or add a run.*",
        "",
        nav,
        "",
        *targets_section(newest),
        *redesign_section(newest),
        METHOD,
        *results_section(newest),
        *history_section(runs),
    ]
    return "\n".join(lines).rstrip() + "\n"


def write_page(out: Path = PAGE, results: Path = RESULTS, **kw: Any) -> str:
    text = performance_page(results, **kw)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return text


# ------------------------------------------------------------------------------------------ after a run


def _run_name(run: Mapping[str, Any], out_dir: Path) -> str | None:
    """The run file ``python -m bench`` is writing for ``run`` (it writes it after every part)."""
    for name, other in reversed(load_runs(out_dir)):
        if other.get("environment") == run.get("environment") and other.get("command") == run.get("command"):
            return str(name)
    return None


def render(run: dict[str, Any], out_dir: Path = RESULTS, *, charts: bool = True) -> str:
    """Normalise every part, draw the bar charts, and write the page: ``docs/performance.md`` for the
    real results directory, ``latest.md`` in any other (``bench/results/quick``, tests). Returns the
    Markdown of this run alone."""
    parts: dict[str, Any] = run.setdefault("parts", {})
    for name in list(parts):
        orig = parts[name]
        res = normalize(name, orig)
        if isinstance(orig, dict):
            for key in ("error", "skipped", "seconds", "wall_seconds", "charts", "markdown", "title"):
                if key in orig and not res.get(key):
                    res[key] = orig[key]
        own = [c for c in res.get("charts", []) or [] if not str(c).endswith(f"/{name}.png")]
        res["charts"] = own
        if charts:
            try:
                p = bars_chart(res, out_dir / f"{name}.png")
            except Exception as exc:  # a chart must never lose the numbers
                res.setdefault("notes", []).append(f"chart failed: {exc!r}")
                p = None
            if p is not None:
                res["charts"] = [rel(p), *own]
        parts[name] = res
    md = markdown(run)
    out_dir.mkdir(parents=True, exist_ok=True)
    if out_dir.resolve() == RESULTS.resolve():
        write_page(PAGE, out_dir, current=run, current_name=_run_name(run, out_dir))
    else:
        write_latest(out_dir, run)
    return md


def write_latest(out_dir: Path, current: dict[str, Any] | None = None) -> str:
    """``latest.md`` (smoke tests and other directories): every part's newest result over the run files
    in ``out_dir``, each section naming the run it comes from."""
    runs = [r for _, r in load_runs(out_dir)]
    if current is not None:
        runs.append(current)
    parts: dict[str, Any] = {}
    for run in runs:
        env = run.get("environment", {})
        for name, res in run.get("parts", {}).items():
            if not isinstance(res, dict) or res.get("skipped"):
                continue
            if res.get("error") and name in parts and not parts[name].get("error"):
                continue  # a failed rerun does not hide the last good result
            r = normalize(name, res) if "figures" not in res else dict(res)
            r["from_run"] = f"{env.get('date', '?')}, `{run.get('command', '?')}`"
            parts.pop(name, None)
            parts[name] = r
    order: list[str] = [n for n in PART_ORDER if n in parts]
    order += [n for n in parts if n not in order]
    newest = runs[-1] if runs else {}
    merged = {
        "command": newest.get("command", "?"),
        "environment": newest.get("environment", {}),
        "seconds": newest.get("seconds", 0.0),
        "parts": {n: parts[n] for n in order},
    }
    md = markdown(merged)
    (out_dir / "latest.md").write_text(md)
    return md


def newest_run(out_dir: Path = RESULTS) -> Path | None:
    runs = run_files(out_dir)
    return runs[-1] if runs else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.report", description=(__doc__ or "").split("\n")[0])
    ap.add_argument("run", nargs="?", help="a run JSON: redraw its charts and normalise it first")
    ap.add_argument("--out", type=Path, default=PAGE, help=f"where to write the page (default {rel(PAGE)})")
    ap.add_argument("--results", type=Path, default=RESULTS, help="directory of the run files")
    ap.add_argument("--check", action="store_true", help="write nothing; exit 1 if --out is not up to date")
    ap.add_argument("--no-charts", action="store_true", help="with a run file: do not redraw its charts")
    args = ap.parse_args(argv)
    if args.run:
        path = Path(args.run)
        if not path.exists():
            print(f"{path}: no such run file", file=sys.stderr)
            return 1
        run = json.loads(path.read_text())
        render(run, path.parent, charts=not args.no_charts)
        write_json(path, sanitize(run))
        if path.parent.resolve() != args.results.resolve():
            return 0
    text = performance_page(args.results)
    if args.check:
        old = args.out.read_text() if args.out.exists() else ""
        if old != text:
            print(f"{args.out} is not what `{GENERATOR}` writes from {rel(args.results)}: run it",
                  file=sys.stderr)  # fmt: skip
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {rel(args.out)} from {len(run_files(args.results))} run files", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
