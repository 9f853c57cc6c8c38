"""Markdown and PNG output of a benchmark run.

``python -m bench.report [bench/results/<run>.json]`` re-renders ``bench/results/latest.md`` and the charts
from a run file (default: the newest). Charts use matplotlib's Agg backend (no display needed):

* ``<part>.png``: one panel per figure, a bar per implementation at the median with the min-max range of
  the rounds as an error bar, and the median per-round ratio subject/baseline in the panel title;
* figures marked ``"chart": "strip"`` are drawn as every sample (a dot per trial) instead of a bar;
* parts may add their own charts (backend death draws a timeline of every client connection).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.common import RESULTS, finite, markdown, normalize, ratios, rel, summary, write_json

COLORS = {
    "tcplb": "#1f77b4",
    "haproxy": "#d62728",
    "direct": "#7f7f7f",
    "tcplb-redispatch": "#6baed6",
    "haproxy-redispatch": "#fc9272",
    "haproxy-splice": "#fc9272",
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


def render(run: dict[str, Any], out_dir: Path = RESULTS, *, charts: bool = True) -> str:
    """Normalise every part, draw the bar charts, write ``latest.md``; returns the Markdown."""
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
    write_latest(out_dir, run)
    return md


def write_latest(out_dir: Path, current: dict[str, Any] | None = None) -> str:
    """``latest.md``: every part's newest result over the run files in ``out_dir`` (a run of one part
    refreshes that part's section and leaves the others), each section naming the run it comes from."""
    runs: list[dict[str, Any]] = []
    for p in sorted(out_dir.glob("run-*.json"), key=lambda p: p.stat().st_mtime):
        try:
            runs.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
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
    order: list[str] = [n for n in ("tcplb", "failover", "amqp", "scale", "backend-death") if n in parts]
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
    runs = sorted(out_dir.glob("run-*.json"), key=lambda p: p.stat().st_mtime)
    return runs[-1] if runs else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__.split("\n")[0])
    ap.add_argument("run", nargs="?", help="run JSON (default: the newest bench/results/run-*.json)")
    ap.add_argument("--no-charts", action="store_true")
    args = ap.parse_args(argv)
    path = Path(args.run) if args.run else newest_run()
    if path is None or not path.exists():
        print("no run file found", file=sys.stderr)
        return 1
    run = json.loads(path.read_text())
    md = render(run, path.parent, charts=not args.no_charts)
    write_json(path, run)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
