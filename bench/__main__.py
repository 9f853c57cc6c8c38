"""``python -m bench all|throughput|requests|churn|amqp|scale|failover|backend-death [--quick] [--rounds N]``.

Each part runs in a child process of its own, bounded in time (a hung part is stopped and recorded as
failed; the run goes on). The run is written to ``bench/results/run-<date>.json`` (environment and every
sample), ``bench/results/latest.md`` (the table) and ``bench/results/<part>.png`` (charts).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import PY, RESULTS, ROOT, environment, log, raise_nofile, rel, sanitize, write_json


@dataclass(frozen=True)
class Part:
    name: str  # the part's key in the run file
    module: str  # bench.<module> with run(rounds, ...) -> dict
    rounds: int  # default rounds of a full run
    timeout: float  # seconds, hard bound of a full run of this part (quick: a third, at least 120 s)
    what: str


PARTS = [
    Part("tcplb", "bench.tcplb_perf", 3, 600, "bulk TCP (iperf3), small requests and churn (wrk), idle RSS"),
    Part("failover", "bench.vrrp_failover", 6, 330, "vrrpd vs keepalived: crash and graceful stop"),
    Part("amqp", "bench.amqp_bench", 3, 420, "AMQP publish rate, confirms, latency: tcplb/HAProxy/direct"),
    Part("scale", "bench.scale", 2, 200, "1,000 and 10,000 idle connections: RSS, CPU, latency"),
    Part("backend-death", "bench.backend_death", 3, 160, "a backend dies under connection load"),
]
RUN_BUDGET = 19 * 60.0  # `all` stays under 20 minutes: a part gets at most what is left of this
BY_NAME = {p.name: p for p in PARTS}
# command-line names -> parts (throughput/requests/churn are all in tcplb_perf)
ALIASES = {
    "all": [p.name for p in PARTS],
    "throughput": ["tcplb"],
    "requests": ["tcplb"],
    "churn": ["tcplb"],
    "tcplb": ["tcplb"],
    "amqp": ["amqp"],
    "scale": ["scale"],
    "failover": ["failover"],
    "backend-death": ["backend-death"],
}


def call_run(module: str, rounds: int, quick: bool, only: str | None, budget: float | None = None) -> Any:
    mod = importlib.import_module(module)
    run = mod.run
    params = inspect.signature(run).parameters
    kwargs: dict[str, Any] = {}
    if "quick" in params:
        kwargs["quick"] = quick
    if "budget" in params and budget is not None:
        kwargs["budget"] = budget
    if only is not None:
        for key in ("only", "parts", "which"):
            if key in params:
                kwargs[key] = [only] if key == "parts" else only
                break
    return run(rounds, **kwargs)


def worker(args: argparse.Namespace) -> int:
    """Child process: run one part, write its result (or the error) to ``args.out``."""
    part = BY_NAME[args.worker]
    raise_nofile()
    t0 = time.monotonic()
    try:
        res = call_run(part.module, args.rounds, args.quick, args.only, args.budget)
        if not isinstance(res, dict):
            res = {"value": res}
        render_md = getattr(importlib.import_module(part.module), "markdown", None)
        if "figures" not in res and callable(render_md):
            try:
                res["markdown"] = render_md(res)  # the part's own table
            except Exception as exc:
                res["markdown_error"] = repr(exc)
    except BaseException as exc:  # recorded, the run goes on
        res = {"part": part.name, "title": part.what, "error": "".join(traceback.format_exception(exc))}
        log(f"{part.name} failed: {exc!r}")
    res.setdefault("part", part.name)
    res.setdefault("title", part.what[:1].upper() + part.what[1:])
    res["seconds"] = round(time.monotonic() - t0, 1)
    write_json(Path(args.out), sanitize(res))
    return 0


def stop_child(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the part's process (its lab guard tears the namespaces down), SIGKILL its group after 30 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def _sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def run_part(
    part: Part, rounds: int, quick: bool, only: str | None, out_dir: Path, left: float
) -> dict[str, Any]:
    if importlib.util.find_spec(part.module) is None:
        return {"part": part.name, "title": part.what, "skipped": f"{part.module} is not there yet"}
    timeout = min(max(150.0, part.timeout / 2) if quick else part.timeout, left)
    if timeout < 30:
        return {"part": part.name, "title": part.what, "skipped": "the run's time budget is used up"}
    with tempfile.TemporaryDirectory(prefix="bench-") as td:
        out = Path(td) / "result.json"
        argv = [PY, "-m", "bench", "--worker", part.name, "--rounds", str(rounds), "--out", str(out),
                "--budget", str(max(20.0, timeout - 30.0))]  # fmt: skip
        if quick:
            argv.append("--quick")
        if only:
            argv += ["--only", only]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_RESULTS": str(out_dir)}
        t0 = time.monotonic()
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"{part.name}: over its {timeout:.0f} s budget, stopping it")
            stop_child(proc)
        except BaseException:  # Ctrl-C or SIGTERM of the run: the part's lab must not outlive it
            stop_child(proc)
            raise
        took = round(time.monotonic() - t0, 1)
        if out.exists():
            res: dict[str, Any] = json.loads(out.read_text())
        else:
            err = f"no result (exit {proc.returncode}, {took} s, budget {timeout:.0f} s)"
            res = {"part": part.name, "title": part.what, "error": err}
        res["wall_seconds"] = took
        return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    ap.add_argument("what", nargs="?", default="all", choices=sorted(ALIASES))
    ap.add_argument("--quick", action="store_true", help="1 round (2 for failover): a smoke test")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per part (default: per part)")
    ap.add_argument("--no-charts", action="store_true")
    ap.add_argument("--worker", choices=sorted(BY_NAME), help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--only", help=argparse.SUPPRESS)
    ap.add_argument("--budget", type=float, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)
    if os.geteuid() != 0:
        print("bench needs root (network namespaces)", file=sys.stderr)
        return 2
    from bench.report import render

    signal.signal(signal.SIGTERM, _sigterm)

    names = ALIASES[args.what]
    only = args.what if args.what in ("throughput", "requests", "churn") else None
    t0 = time.time()
    run: dict[str, Any] = {
        "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "environment": environment(),
        "quick": args.quick,
        "parts": {},
    }
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(t0))
    out_dir = RESULTS / "quick" if args.quick else RESULTS  # smoke tests do not replace the real figures
    path = out_dir / f"run-{stamp}.json"
    for name in names:
        part = BY_NAME[name]
        rounds = args.rounds or ((2 if name == "failover" else 1) if args.quick else part.rounds)
        log(f"part {name} ({part.what}): {rounds} round(s)")
        left = RUN_BUDGET - (time.time() - t0)
        run["parts"][name] = run_part(part, rounds, args.quick, only, out_dir, left)
        log(f"part {name} done in {run['parts'][name].get('wall_seconds')} s")
        run["seconds"] = time.time() - t0
        write_json(path, sanitize(run))  # partial results survive an interrupted run
    run["seconds"] = time.time() - t0
    md = render(run, out_dir, charts=not args.no_charts)
    write_json(path, sanitize(run))
    print(md)
    log(f"wrote {rel(path)} and {rel(out_dir / 'latest.md')} in {run['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
