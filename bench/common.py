"""What every benchmark part shares: environment capture, alternating rounds, statistics, figures, output.

A part (``bench/<part>.py``) exposes ``run(rounds: int) -> dict``. The dict it returns is a *part result*::

    {
      "part": "amqp",                       # short name, also the chart file name (bench/results/amqp.png)
      "title": "AMQP through the LB",       # section heading in the Markdown table
      "rounds": 3,
      "impls": ["tcplb", "haproxy", "direct"],   # column order
      "subject": "tcplb", "baseline": "haproxy", # per-round ratio subject/baseline in the table
      "figures": [ Figure dicts, see :func:`figure` ],
      "notes": ["free text lines printed under the table"],
      "raw": {...},                          # anything else worth keeping (every sample lives in figures)
    }

A *figure* is one measured quantity, with one sample per round per implementation (rounds alternate the
order in which the implementations run, see :func:`round_order`)::

    {"id": "pub_noconfirm", "label": "publish, no confirms", "unit": "msg/s", "better": "higher",
     "samples": {"tcplb": [5123.0, 5210.2, 4990.1], "haproxy": [...], "direct": [...]},
     "chart": True}

The table shows for each implementation the median and the min-max over rounds, and the median (min-max)
of the per-round ratio subject/baseline: round *i* of tcplb over round *i* of HAProxy, so a noisy round
affects both sides of its own ratio. Results of parts that do not follow this layout (a part written
before it) are kept verbatim in the JSON and summarised by :func:`normalize`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PY = sys.executable

Samples = dict[str, list[float]]


def results_dir() -> Path:
    """Where this run writes: ``bench/results`` (``bench/results/quick`` for --quick runs, via the
    ``BENCH_RESULTS`` environment variable that ``python -m bench`` sets for its part processes)."""
    return Path(os.environ.get("BENCH_RESULTS") or RESULTS)


def rel(path: Path) -> str:
    """``path`` relative to the repository (how the Markdown refers to charts)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


# ------------------------------------------------------------------------------------------ environment


def _cmd(argv: list[str], pattern: str | None = None) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (res.stdout + res.stderr).strip()
    if pattern is not None:
        m = re.search(pattern, text)
        return m.group(1) if m else None
    return text.splitlines()[0] if text else None


def _dpkg_version(pkg: str) -> str | None:
    return _cmd(["dpkg-query", "-W", "-f=${Version}", pkg])


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def environment() -> dict[str, Any]:
    """Versions, CPU, kernel and date of this run (what a reader needs to compare two runs)."""
    try:
        uv: str | None = importlib.metadata.version("uvloop")
    except importlib.metadata.PackageNotFoundError:
        uv = None
    mem_total = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_total = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "python": platform.python_version(),
        "uvloop": uv,
        "haproxy": _cmd(["haproxy", "-v"], r"version (\S+)"),
        "keepalived": _cmd(["keepalived", "-v"], r"Keepalived v(\S+)"),
        "rabbitmq": _dpkg_version("rabbitmq-server"),
        "erlang": _dpkg_version("erlang-base"),
        "nginx": _cmd(["nginx", "-v"], r"nginx/(\S+)"),
        "iperf3": _cmd(["iperf3", "--version"], r"iperf (\S+)"),
        "wrk": _cmd(["wrk", "--version"], r"wrk (\S+)"),
        "kernel": platform.release(),
        "os": _os_release(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "mem_mib": mem_total,
        "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
        "loadavg_start": _loadavg(),
        "commit": _cmd(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"]),
    }


PYC_EXCLUDE = r"/(test|tests|idlelib|lib2to3|tkinter|ensurepip|turtledemo|site-packages)/"
PACKAGES = ("tcplb", "vrrpd", "rmqfd")


def precompile(prefix: Path) -> dict[str, Any]:
    """Byte-compile the standard library, the site-packages the daemons import and the project's packages
    into ``prefix`` and make this process and its children use it: ``PYTHONPYCACHEPREFIX=prefix``,
    ``PYTHONDONTWRITEBYTECODE`` removed (a module compiled later is written once, at its first import).

    What an install has (``pip install .`` and distribution packages ship .pyc files): without it every
    daemon start compiles every module from source, and the freed compiler memory stays in the process
    (vrrpd's idle RSS about 2 MiB higher). Returns what was done, for the run's environment."""
    import sysconfig

    t0 = time.monotonic()
    prefix.mkdir(parents=True, exist_ok=True)
    os.environ["PYTHONPYCACHEPREFIX"] = str(prefix)
    had_dont_write = os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is not None
    sys.pycache_prefix = str(prefix)
    sys.dont_write_bytecode = False
    paths = sysconfig.get_paths()
    site = Path(paths["purelib"])
    dirs = [paths["stdlib"], *(str(site / d) for d in ("uvloop", "h11") if (site / d).is_dir())]
    dirs += [str(ROOT / p) for p in PACKAGES]
    argv = [PY, "-m", "compileall", "-q", "-j", "0", "-x", PYC_EXCLUDE, *dirs]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)
    # whatever the daemons import from elsewhere at start: written now, by importing their entry points
    warm = "import tcplb.__main__, tcplb.daemon, vrrpd.__main__, vrrpd.daemon"
    res2 = subprocess.run([PY, "-c", warm], capture_output=True, text=True, timeout=120, check=False,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    return {
        "precompiled": res.returncode == 0 and res2.returncode == 0,
        "how": "python -m compileall (stdlib, uvloop, h11, tcplb, vrrpd, rmqfd) into a PYTHONPYCACHEPREFIX "
        "of the run; daemons run with that prefix and without PYTHONDONTWRITEBYTECODE",
        "PYTHONDONTWRITEBYTECODE_in_caller": had_dont_write,
        "seconds": round(time.monotonic() - t0, 1),
        "errors": (res.stdout + res.stderr + res2.stderr)[-2000:] or None,
    }


def precompile_tree(tree: Path, packages: Sequence[str] = ("tcplb", "rmqfd")) -> dict[str, Any]:
    """Byte-compile ``packages`` of another source tree (bench/redesign.py's tcplb at an older commit) the
    way :func:`precompile` did the project's: into this process's ``PYTHONPYCACHEPREFIX`` (set by
    ``python -m bench``; the tree's own ``__pycache__`` without it), then import the daemon's entry points
    from that tree (``PYTHONPATH`` and working directory ``tree``) so whatever they import is written too."""
    t0 = time.monotonic()
    dirs = [str(tree / p) for p in packages if (tree / p).is_dir()]
    argv = [PY, "-m", "compileall", "-q", "-j", "0", "-x", PYC_EXCLUDE, *dirs]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False, cwd=tree)
    warm = "import tcplb.__main__, tcplb.daemon"
    res2 = subprocess.run([PY, "-c", warm], capture_output=True, text=True, timeout=120, check=False,
                          cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)})  # fmt: skip
    return {
        "precompiled": res.returncode == 0 and res2.returncode == 0,
        "prefix": os.environ.get("PYTHONPYCACHEPREFIX"),
        "seconds": round(time.monotonic() - t0, 1),
        "errors": (res.stdout + res.stderr + res2.stderr)[-2000:] or None,
    }


def _os_release() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    return None


def _loadavg() -> list[float] | None:
    with contextlib.suppress(OSError, ValueError):
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    return None


def raise_nofile() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (children inherit it); returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ------------------------------------------------------------------------------------------ rounds


def round_order(impls: Sequence[str], round_index: int) -> list[str]:
    """The order of the implementations in round ``round_index``: rotated by one each round.

    Over ``len(impls)`` rounds every implementation runs once in every position, so a slow drift of the
    machine (another job starting) does not favour whoever always runs first.
    """
    if not impls:
        return []
    k = round_index % len(impls)
    return [*impls[k:], *impls[:k]]


class Budget:
    """A part's time budget: :meth:`next_round` says whether another round still fits (the last round's
    duration plus 15 % must fit in what is left): a slow machine yields fewer rounds, not a killed part."""

    def __init__(self, seconds: float | None) -> None:
        self.end = None if seconds is None else time.monotonic() + seconds
        self.last_round = 0.0
        self._started: float | None = None

    def next_round(self) -> bool:
        now = time.monotonic()
        if self._started is not None:
            self.last_round = now - self._started
            if self.end is not None and now + 1.15 * self.last_round > self.end:
                return False
        self._started = now
        return True

    def left(self) -> float | None:
        return None if self.end is None else self.end - time.monotonic()


def rounds_for(rounds: int, quick: bool) -> int:
    return max(1, min(rounds, 2) if quick else rounds)


# ------------------------------------------------------------------------------------------ statistics


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile (``p`` in 0..100) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    xs = sorted(values)
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * p / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))


def finite(values: Iterable[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and isinstance(v, int | float) and math.isfinite(v)]


def summary(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """Median, min, max and count of the finite values (None when there are none)."""
    xs = finite(values)
    if not xs:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def ratios(a: Sequence[float | None], b: Sequence[float | None]) -> list[float | None]:
    """Per-round ratios a[i]/b[i] (None where either side is missing or b is 0)."""
    out: list[float | None] = []
    for x, y in zip(a, b, strict=False):
        if x is None or y is None or not math.isfinite(x) or not math.isfinite(y) or y == 0:
            out.append(None)
        else:
            out.append(x / y)
    return out


# ------------------------------------------------------------------------------------------ figures


def figure(
    fid: str,
    label: str,
    unit: str,
    *,
    better: str = "higher",
    impls: Sequence[str] = (),
    chart: bool | str = True,
    group: str = "",
) -> dict[str, Any]:
    """A new, empty figure; append one sample per round per implementation with :func:`add`."""
    if better not in ("higher", "lower", "info"):
        raise ValueError(f"better must be higher, lower or info, not {better!r}")
    return {
        "id": fid,
        "label": label,
        "unit": unit,
        "better": better,
        "chart": chart,
        "group": group,
        "samples": {i: [] for i in impls},
    }


def add(fig: dict[str, Any], impl: str, value: float | None) -> None:
    fig["samples"].setdefault(impl, []).append(None if value is None else float(value))


def pad_samples(fig: dict[str, Any], rounds: int) -> None:
    """Give every implementation exactly ``rounds`` samples (None where a round failed)."""
    for impl, xs in fig["samples"].items():
        if len(xs) < rounds:
            fig["samples"][impl] = [*xs, *([None] * (rounds - len(xs)))]


def part_result(
    part: str,
    title: str,
    impls: Sequence[str],
    figures: list[dict[str, Any]],
    *,
    rounds: int,
    subject: str | None = None,
    baseline: str | None = None,
    notes: Sequence[str] = (),
    raw: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "part": part,
        "title": title,
        "rounds": rounds,
        "impls": list(impls),
        "subject": subject,
        "baseline": baseline,
        "figures": figures,
        "notes": list(notes),
        "raw": dict(raw or {}),
    }


def _unit_of(key: str) -> str:
    for suffix, unit in (("_ms", "ms"), ("_s", "s"), ("_mib", "MiB"), ("_pct", "%"), ("_percent", "%")):
        if key.endswith(suffix):
            return unit
    return ""


def _numbers(x: Any) -> list[float] | None:
    if (
        isinstance(x, list)
        and x
        and all(v is None or isinstance(v, int | float) for v in x)
        and any(isinstance(v, int | float) and not isinstance(v, bool) for v in x)
    ):
        return [math.nan if v is None else float(v) for v in x]
    return None


def normalize(name: str, result: Any) -> dict[str, Any]:
    """Make a part result of any shape renderable: ours pass through; others get figures found inside.

    A foreign result is searched for mappings ``{impl: [numbers]}`` with at least two implementations;
    each becomes a figure labelled by its path. The original stays under ``raw``.
    """
    if (
        isinstance(result, dict)
        and isinstance(result.get("figures"), list)
        and all(isinstance(f, dict) and "samples" in f for f in result["figures"])
    ):
        out = dict(result)
        out.setdefault("part", name)
        out.setdefault("title", name)
        out.setdefault("notes", [])
        if not out.get("impls"):
            seen: list[str] = []
            for f in out["figures"]:
                seen += [k for k in f["samples"] if k not in seen]
            out["impls"] = seen
        return out
    figures: list[dict[str, Any]] = []
    impls: list[str] = []
    trials = result.get("rounds") if isinstance(result, dict) else None
    if isinstance(trials, list) and trials and all(isinstance(t, dict) and "impl" in t for t in trials):
        # a list of trials [{"impl": ..., "<measure>": number, ...}]: one strip chart per measure
        keys: list[str] = []
        for t in trials:
            keys += [k for k, v in t.items() if k not in keys and k not in ("impl", "round")
                     and isinstance(v, int | float) and not isinstance(v, bool)]  # fmt: skip
        for t in trials:
            if str(t["impl"]) not in impls:
                impls.append(str(t["impl"]))
        for k in keys:
            fig = figure(k, k.replace("_", " "), _unit_of(k), better="info", chart="strip")
            for t in trials:
                v = t.get(k)
                if isinstance(v, int | float) and not isinstance(v, bool):
                    add(fig, str(t["impl"]), v)
            figures.append(fig)
        return {
            "part": name,
            "title": (result.get("title") if isinstance(result, dict) else None) or name,
            "rounds": None,
            "impls": impls,
            "subject": None,
            "baseline": None,
            "figures": figures,
            "notes": [],
            "markdown": result.get("markdown") if isinstance(result, dict) else None,
            "raw": result,
        }

    def walk(x: Any, path: list[str]) -> None:
        if isinstance(x, dict):
            series = {str(k): _numbers(v) for k, v in x.items()}
            found = {k: v for k, v in series.items() if v is not None}
            if len(found) >= 2:
                label = " / ".join(path) or name
                fig = figure(re.sub(r"\W+", "_", label), label, "", better="info", chart=False)
                for k, v in found.items():
                    fig["samples"][k] = [None if math.isnan(s) else s for s in v]
                    if k not in impls:
                        impls.append(k)
                figures.append(fig)
            for k, v in x.items():
                if not (isinstance(v, list) and k in found):
                    walk(v, [*path, str(k)])

    walk(result, [])
    return {
        "part": name,
        "title": (result.get("title") if isinstance(result, dict) else None) or name,
        "rounds": None,
        "impls": impls,
        "subject": None,
        "baseline": None,
        "figures": figures,
        "notes": ["(layout not recognised: figures extracted from the raw result)"] if figures else [],
        "raw": result if isinstance(result, dict) else {"value": result},
    }


# ------------------------------------------------------------------------------------------ Markdown


def fmt(value: float | int | None, unit: str = "") -> str:
    """A number with 3 significant digits (thousands separated), '-' when missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    v = float(value)
    a = abs(v)
    if a >= 1000:
        s = f"{v:,.0f}"
    elif a >= 100:
        s = f"{v:.0f}"
    elif a >= 10:
        s = f"{v:.1f}"
    elif a >= 1:
        s = f"{v:.2f}"
    elif a == 0:
        s = "0"
    else:
        s = f"{v:.3g}"
    return s


def cell(values: Sequence[float | None]) -> str:
    s = summary(values)
    if s["n"] == 0:
        return "-"
    med, lo, hi = s["median"], s["min"], s["max"]
    if s["n"] == 1 or lo == hi:
        return fmt(med)
    return f"{fmt(med)} ({fmt(lo)}-{fmt(hi)})"


def ratio_cell(values: Sequence[float | None]) -> str:
    s = summary(values)
    if s["n"] == 0:
        return "-"
    med, lo, hi = s["median"], s["min"], s["max"]
    assert med is not None and lo is not None and hi is not None
    if s["n"] == 1 or lo == hi:
        return f"{med:.2f}x"
    return f"{med:.2f}x ({lo:.2f}-{hi:.2f})"


def markdown_part(res: Mapping[str, Any]) -> str:
    impls: list[str] = list(res.get("impls") or [])
    subject, baseline = res.get("subject"), res.get("baseline")
    title = res.get("title") or res.get("part")
    lines = [f"### {title}", ""]
    if res.get("from_run"):
        lines += [f"*Run: {res['from_run']}.*", ""]
    if res.get("markdown"):
        # the part rendered its own table
        lines.append(str(res["markdown"]).rstrip())
        for c in res.get("charts", []) or []:
            lines += ["", f"![{title}]({c})"]
        return "\n".join(lines) + "\n"
    if res.get("error"):
        last = [x for x in str(res["error"]).splitlines() if x.strip()] or ["?"]
        lines += [f"**Failed:** `{last[-1].strip()[:300]}` (traceback in the run JSON)", ""]
    if res.get("skipped"):
        lines += [f"Skipped: {res['skipped']}", ""]
    figs = [f for f in res.get("figures", []) if isinstance(f, dict)]
    if figs:
        cols = list(impls)
        for f in figs:
            cols += [k for k in f.get("samples", {}) if k not in cols]
        has_ratio = bool(subject and baseline)
        head = ["Figure", "Unit", *cols]
        if has_ratio:
            head.append(f"{subject} / {baseline} per round")
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---", "---", *["---:"] * (len(head) - 2)]) + "|")
        for f in figs:
            samples = f.get("samples", {})
            row = [str(f.get("label", f.get("id"))), str(f.get("unit", ""))]
            row += [cell(samples.get(c, [])) for c in cols]
            if has_ratio:
                a, b = samples.get(subject), samples.get(baseline)
                row.append(ratio_cell(ratios(a, b)) if a and b and f.get("better") != "info" else "")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        rounds = res.get("rounds")
        lines.append(
            f"Median over {rounds} rounds, (min-max) in brackets." if rounds else "Median (min-max)."
        )
    notes = [str(n) for n in res.get("notes", [])]
    if notes:
        lines.append("")
        lines += [f"- {n}" for n in notes]
    for c in res.get("charts", []) or []:
        lines += ["", f"![{title}]({c})"]
    return "\n".join(lines) + "\n"


def markdown(run: Mapping[str, Any], *, chart_prefix: str = "") -> str:
    env = run.get("environment", {})
    lines = [
        f"## Benchmark results ({env.get('date', '?')})",
        "",
        f"Latest command: `{run.get('command', '?')}` ({run.get('seconds', 0):.0f} s).",
        "",
        "Environment: "
        + ", ".join(
            f"{k} {env[k]}"
            for k in ("python", "uvloop", "haproxy", "keepalived", "rabbitmq", "kernel", "cpu", "cpus")
            if env.get(k) is not None
        )
        + ".",
        "",
    ]
    for res in run.get("parts", {}).values():
        r = dict(res)
        if chart_prefix and r.get("charts"):
            r["charts"] = [chart_prefix + Path(c).name for c in r["charts"]]
        lines.append(markdown_part(r))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ JSON


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str, allow_nan=False) + "\n")
    tmp.replace(path)
    return path


def sanitize(x: Any) -> Any:
    """NaN/inf -> None, tuples -> lists, recursively (JSON without NaN)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): sanitize(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [sanitize(v) for v in x]
    return x


# ------------------------------------------------------------------------------------------ measuring


def proc_cpu_seconds(pid: int) -> float | None:
    """CPU time of ``pid`` (all its threads) in seconds: the sum of /proc/PID/task/*/schedstat (nanosecond
    resolution); utime+stime from /proc/PID/stat (10 ms ticks) when schedstat is not there."""
    total = 0
    found = False
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[0])
                found = True
    if found:
        return total / 1e9
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    tck = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / tck


def proc_rss_kib(pid: int) -> int | None:
    """VmRSS of ``pid`` in KiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def children_pids(pid: int) -> list[int]:
    """``pid`` and its descendants (keepalived forks a VRRP child; HAProxy -W a worker)."""
    out = [pid]
    i = 0
    while i < len(out):
        p = out[i]
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError):
                    kids = Path(f"/proc/{p}/task/{task}/children").read_text().split()
                    out += [int(k) for k in kids if int(k) not in out]
        i += 1
    return out


def cpu_percent(
    pids: Sequence[int], seconds: float, sleep: Callable[[float], None] = time.sleep
) -> float | None:
    """CPU used by ``pids`` over the next ``seconds``, in percent of one core."""
    before = [proc_cpu_seconds(p) for p in pids]
    t0 = time.monotonic()
    sleep(seconds)
    after = [proc_cpu_seconds(p) for p in pids]
    wall = time.monotonic() - t0
    used = sum(b - a for a, b in zip(before, after, strict=True) if a is not None and b is not None)
    return 100.0 * used / wall if wall > 0 else None


def rss_mib(pids: Sequence[int]) -> float | None:
    vals = [proc_rss_kib(p) for p in pids]
    got = [v for v in vals if v is not None]
    return sum(got) / 1024 if got else None


def idle_usage(impl: str, pids: Sequence[int], seconds: float) -> dict[str, Any]:
    """CPU (utime+stime ticks of /proc/PID/stat, in % of one core) of ``pids`` summed over the next
    ``seconds``, and their summed VmRSS afterwards: the idle figures of the VRRP parts."""

    def cpu_ticks() -> int:
        total = 0
        for pid in pids:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        return total

    def rss_kib() -> int:
        total = 0
        for pid in pids:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        return total

    t0, c0 = time.monotonic(), cpu_ticks()
    time.sleep(seconds)
    t1, c1 = time.monotonic(), cpu_ticks()
    hz = os.sysconf("SC_CLK_TCK")
    return {
        "impl": impl,
        "processes": len(pids),
        "rss_mib": round(rss_kib() / 1024, 2),
        "cpu_percent": round((c1 - c0) / hz / (t1 - t0) * 100, 3),
        "seconds": round(t1 - t0, 1),
    }


def host_info() -> dict[str, Any]:
    """The short host record of the VRRP parts' raw results."""
    return {"kernel": platform.release(), "python": platform.python_version(), "cpus": os.cpu_count()}


def failed_rounds_note(errors: Sequence[Mapping[str, Any]], key: str) -> str:
    """'N failed round(s): name: error; ...' with each round's ``key`` (impl or variant) as its name."""
    return f"{len(errors)} failed round(s): " + "; ".join(f"{r[key]}: {r['error']}" for r in errors)


_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def parse_wrk(text: str) -> dict[str, float | None]:
    """Requests/s, p50/p99 latency (ms), errors from ``wrk --latency`` output."""
    out: dict[str, float | None] = {"rps": None, "p50_ms": None, "p99_ms": None, "errors": 0.0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        out["rps"] = float(m.group(1))
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s|m)\b", text, re.M)
        if m:
            out[key] = float(m.group(1)) * _WRK_UNITS[m.group(2)]
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errs = sum(int(x) for x in m.groups()) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        errs += int(m.group(1))
    out["errors"] = float(errs)
    return out


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
