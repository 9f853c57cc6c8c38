"""No speed lost to the redesign (issue #10): tcplb before it (commit 93fabf8) and now, in one run.

    python -m bench redesign [--rounds N] [--quick]

Issue #10 asks that churn and small requests lose no speed to the redesign, for the default single process
and ``workers = 2``. Its floors (the ratios to HAProxy of run-20261122-040646, which measured the code of
93fabf8) came from an earlier machine and kernel; this part measures the redesign's cost directly, on this
machine, in the same run:

* ``tcplb-93fabf8``     tcplb at commit 93fabf8, one process (``git archive 93fabf8 tcplb rmqfd`` into a
                        temporary directory, run with this venv's Python and uvloop, ``PYTHONPATH`` and the
                        working directory pointing at that tree, its modules byte-compiled into the run's
                        ``PYTHONPYCACHEPREFIX`` like the current tree's)
* ``tcplb``             the current tree, one process
* ``tcplb-2w-93fabf8``  93fabf8 with ``workers = 2``
* ``tcplb-2w``          the current tree with ``workers = 2``
* ``haproxy``           HAProxy 2.6 defaults (one thread per CPU: 2 here), the common baseline

Both trees get the same configuration (:func:`tcplb_ab_cfg`: only keys 93fabf8 knows; each version's
defaults otherwise, e.g. the current ``bufsize`` of 32 KiB), checked with each tree's ``tcplb --check``
before the lab starts. The lab, the backends and the load are the tcplb part's (bench/tcplb_perf.py): wrk
``Connection: close`` 50 concurrent (churn), wrk 20 keep-alive connections with 6-byte answers (small) and
an iperf3 single stream (bulk: informative only; 93fabf8 read up to 256 KiB per read with unbounded memory
per connection, which #10 bounded).

Rounds alternate old and new (ABAB, not AABB, see :func:`ab_order`): each old/new pair runs back to back,
the pair's order flips every round and the pairs and HAProxy rotate, so a drift of the machine hits both.
Ratios are medians of per-round ratios: current/old (target >= 1.0: no speed lost) and each against HAProxy.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import (
    PY,
    ROOT,
    Budget,
    add,
    figure,
    log,
    markdown_part,
    pad_samples,
    part_result,
    precompile_tree,
    raise_nofile,
    ratios,
    round_order,
)
from bench.tcplb_perf import (
    IPERF,
    LB_IP,
    NOFILE,
    SRV_IP,
    WEB,
    _listening,
    build,
    cfg_head,
    iperf,
    start_backends,
    start_impl,
    stop_impl,
    wrk,
)
from netns import Host, Lab, Proc

OLD = "93fabf8"  # the last commit before the issue #10 redesign: the code of the last published tcplb run
PUBLISHED_RUN = "run-20261122-040646.json"
OLD_1P, NEW_1P = f"tcplb-{OLD}", "tcplb"
OLD_2W, NEW_2W = f"tcplb-2w-{OLD}", "tcplb-2w"
HAPROXY = "haproxy"
IMPLS = [OLD_1P, NEW_1P, OLD_2W, NEW_2W, HAPROXY]
PAIRS = ((NEW_1P, OLD_1P), (NEW_2W, OLD_2W))  # (current, old)
WORKERS = {OLD_1P: 1, NEW_1P: 1, OLD_2W: 2, NEW_2W: 2}
FIGURES = ("churn", "small", "bulk")
TARGET_FIGURES = ("churn", "small")  # the scope; bulk is informative
# ratio keys, the tcplb part's naming: <figure>[_2workers]_vs_<baseline>
KEY_OF = {NEW_1P: "", OLD_1P: f"_{OLD}", NEW_2W: "_2workers", OLD_2W: f"_2workers_{OLD}"}


# ------------------------------------------------------------------------------------------ pure pieces


def tcplb_ab_cfg(workers: int = 1) -> str:
    """A configuration both 93fabf8 and the current tree accept (only keys 93fabf8's config.py knows):
    the tcplb part's listeners for iperf3 and the web server, checks off, long client/server timeouts."""
    out = cfg_head(workers)
    for name, port in (("iperf", IPERF), ("web", WEB)):
        out += textwrap.dedent(f"""
            [listen.{name}]
            bind = ["{LB_IP}:{port}"]
            check = false
            server = [{{ name = "s1", address = "{SRV_IP}:{port}" }}]
        """)
    return out


def ab_order(round_index: int) -> list[str]:
    """The order of round ``round_index``: old/new pairs back to back (ABAB), the pair's order flipped every
    round, the two pairs and HAProxy rotated (bench.common.round_order)."""
    groups = {"1p": [OLD_1P, NEW_1P], "2w": [OLD_2W, NEW_2W], HAPROXY: [HAPROXY]}
    out: list[str] = []
    for g in round_order(list(groups), round_index):
        out += groups[g][::-1] if round_index % 2 else groups[g]
    return out


def _median(xs: Sequence[float | None]) -> float | None:
    v = [x for x in xs if x is not None]
    return statistics.median(v) if v else None


def ab_ratios(samples: Mapping[str, Mapping[str, Sequence[float | None]]]) -> dict[str, float | None]:
    """Medians of per-round ratios, per figure: current/old (``churn_vs_93fabf8``,
    ``churn_2workers_vs_93fabf8``) and each tcplb against HAProxy (``churn_vs_haproxy``,
    ``churn_93fabf8_vs_haproxy``, ``churn_2workers_vs_haproxy``, ``churn_2workers_93fabf8_vs_haproxy``).
    ``samples``: figure id -> impl -> one sample per round (None: that round failed)."""
    out: dict[str, float | None] = {}
    for fid in FIGURES:
        s = samples.get(fid, {})
        for new, old in PAIRS:
            out[f"{fid}{KEY_OF[new]}_vs_{OLD}"] = _median(ratios(s.get(new, []), s.get(old, [])))
        for impl in (NEW_1P, OLD_1P, NEW_2W, OLD_2W):
            out[f"{fid}{KEY_OF[impl]}_vs_haproxy"] = _median(ratios(s.get(impl, []), s.get(HAPROXY, [])))
    return out


TARGETS = {f"{fid}{KEY_OF[new]}_vs_{OLD}": 1.0 for fid in TARGET_FIGURES for new, _ in PAIRS}


def ratio_notes(ratio: Mapping[str, float | None], targets: Mapping[str, float] = TARGETS) -> list[str]:
    """One line per ratio, the tcplb part's wording (report.py moves the target lines to its table)."""
    out = []
    for k, v in ratio.items():
        if v is None:
            out.append(f"{k}: n/a")
        elif k in targets:
            ok = "MET" if v >= targets[k] else "NOT MET"
            out.append(f"median per-round ratio {k}: {v:.2f}x (target >= {targets[k]}x) {ok}")
        else:
            out.append(f"median per-round ratio {k}: {v:.2f}x (no target)")
    return out


# ------------------------------------------------------------------------------------------ the old tree


def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, timeout=120, check=False)


def extract(commit: str, dest: Path) -> Path:
    """``git archive <commit> tcplb rmqfd`` unpacked into ``dest``; a clear error when git or the commit is
    missing (no silent skip: the part is then recorded as failed)."""
    if shutil.which("git") is None:
        raise RuntimeError(f"bench redesign needs git to extract tcplb at {commit}: git is not installed")
    if _git("rev-parse", "--git-dir").returncode != 0:
        raise RuntimeError(f"bench redesign needs the git history: {ROOT} is not a git repository")
    if _git("cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        raise RuntimeError(
            f"commit {commit} (tcplb before the issue #10 redesign) is not in {ROOT}: a shallow clone? "
            "`git fetch --unshallow` brings it"
        )
    arch = _git("archive", "--format=tar", commit, "tcplb", "rmqfd")
    if arch.returncode != 0:
        raise RuntimeError(f"git archive {commit} tcplb rmqfd failed: {arch.stderr.decode(errors='replace')}")
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=arch.stdout, check=True, timeout=60)
    if not (dest / "tcplb" / "__main__.py").is_file():
        raise RuntimeError(f"git archive {commit} gave no tcplb/__main__.py")
    return dest


@contextmanager
def old_tree(commit: str = OLD) -> Iterator[Path]:
    """The tree at ``commit`` (tcplb and rmqfd) in a temporary directory, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"bench-redesign-{commit}-") as td:
        yield extract(commit, Path(td))


def tree_env(tree: Path) -> dict[str, str]:
    return {"PYTHONPATH": str(tree)}


def check_tree(tree: Path, cfg: Path) -> str:
    """The file ``import tcplb`` finds from ``tree`` (it must be that tree's), after ``tcplb --check`` of
    ``cfg`` passed there. Run with ``cwd=tree``: ``python -m`` puts the working directory first on
    sys.path."""
    env = {**os.environ, **tree_env(tree)}
    res = subprocess.run([PY, "-m", "tcplb", "--check", "-c", str(cfg)], cwd=tree, env=env,
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    if res.returncode != 0:
        raise RuntimeError(f"tcplb in {tree} refuses {cfg.name}: {(res.stdout + res.stderr).strip()[-800:]}")
    res = subprocess.run([PY, "-c", "import tcplb; print(tcplb.__file__)"], cwd=tree, env=env,
                         capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    where = res.stdout.strip()
    if not Path(where).resolve().is_relative_to(tree.resolve()):
        raise RuntimeError(f"tcplb from {tree} imports {where}, not that tree's")
    return where


# ------------------------------------------------------------------------------------------ the lab


def start_tcplb(impl: str, tree: Path, cfg: Path, lb: Host) -> Proc:
    """tcplb from ``tree`` (old or current: the same start either way) on uvloop."""
    argv = [*NOFILE, PY, "-m", "tcplb", "-c", str(cfg), "--loop", "uvloop"]
    ports = (IPERF, WEB)
    return lb.start(argv, name=impl, env=tree_env(tree), cwd=str(tree),
                    ready=lambda: all(_listening(lb, pt) for pt in ports), ready_timeout=20)  # fmt: skip


def run(rounds: int = 3, *, quick: bool = False, budget: float | None = None) -> dict[str, Any]:
    raise_nofile()
    clock = Budget(budget)
    planned = rounds
    secs = 3 if quick else 5
    figs = {
        "churn": figure("churn", "wrk Connection: close, 50 concurrent", "req/s", impls=IMPLS, group="churn"),
        "small": figure(
            "small", "wrk 20 keep-alive conns, 6-byte answers", "req/s", impls=IMPLS, group="requests"
        ),
        "bulk": figure(
            "bulk", "iperf3 single stream (informative)", "Gbit/s", impls=IMPLS, group="throughput"
        ),
    }
    errors: dict[str, list[float]] = {i: [] for i in IMPLS}
    notes: list[str] = []
    seconds_per_round: list[float] = []
    with old_tree(OLD) as old, Lab("bench-redesign") as lab:
        workdir = lab.workdir
        trees = {OLD_1P: old, OLD_2W: old, NEW_1P: ROOT, NEW_2W: ROOT}
        cfgs: dict[str, Path] = {}
        for w in (1, 2):
            cfgs[f"{w}"] = workdir / f"tcplb-ab-{w}w.toml"
            cfgs[f"{w}"].write_text(tcplb_ab_cfg(workers=w))
        compiled = precompile_tree(old)
        imported: dict[str, str] = {}
        for name, tree in (("old", old), ("current", ROOT)):
            for cfg in cfgs.values():
                imported[name] = check_tree(tree, cfg)
        log(f"redesign: {OLD} extracted to {old} (byte-compiled: {compiled['precompiled']}), tcplb from "
            f"{imported['old']}")  # fmt: skip
        client, lb, srv = build(lab)
        start_backends(srv, workdir)
        for r in range(planned):
            if not clock.next_round():
                notes.append(f"stopped after {r} of {planned} rounds: the part's time budget")
                rounds = r
                break
            t0 = time.monotonic()
            for impl in ab_order(r):
                if impl == HAPROXY:
                    p = start_impl(HAPROXY, lb, workdir)
                else:
                    p = start_tcplb(impl, trees[impl], cfgs[str(WORKERS[impl])], lb)
                try:
                    bulk = iperf(client, secs)
                    small, e1 = wrk(client, secs, 20, close=False)
                    churn, e2 = wrk(client, secs, 50, close=True)
                finally:
                    stop_impl(p, lb)
                add(figs["bulk"], impl, bulk)
                add(figs["small"], impl, small)
                add(figs["churn"], impl, churn)
                errors[impl].append(e1 + e2)
                log(f"redesign round {r + 1} {impl}: churn {churn} req/s, small {small} req/s, bulk {bulk} "
                    f"Gbit/s, errors {e1 + e2:g}")  # fmt: skip
            seconds_per_round.append(round(time.monotonic() - t0, 1))
    for f in figs.values():
        pad_samples(f, rounds)
    ratio = ab_ratios({k: f["samples"] for k, f in figs.items()})
    notes += ratio_notes(ratio)
    notes.append(
        f"{OLD_1P} / {OLD_2W}: tcplb at commit {OLD} (the code of the last published run before issue #10, "
        f"{PUBLISHED_RUN}), one process / `workers = 2`, extracted with `git archive` and run with the same "
        "Python, uvloop and precompiled bytecode as the current tree; tcplb / tcplb-2w: the current tree; "
        "haproxy: HAProxy 2.6 defaults (2 threads). The same configuration for both trees (keys 93fabf8 "
        "knows; each version's defaults otherwise). Rounds alternate old and new (ABAB); bulk is "
        f"informative ({OLD} read up to 256 KiB per read with unbounded memory, #10 bounded it)"
    )
    return part_result(
        "redesign",
        f"No speed lost to the redesign: tcplb at {OLD} and now, same run (issue #10)",
        IMPLS,
        list(figs.values()),
        rounds=rounds,
        subject=NEW_1P,
        baseline=OLD_1P,
        notes=notes,
        raw={
            "ratios": ratio,
            "targets": TARGETS,
            "old_commit": OLD,
            "wrk_errors": errors,
            "seconds_per_round": seconds_per_round,
            "config": {"1": tcplb_ab_cfg(1), "2": tcplb_ab_cfg(2)},
            "bytecode": compiled,
            "tcplb_imported_from": imported,  # each tree's own package: checked before the lab started
        },
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.redesign")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    print(markdown_part(run(args.rounds, quick=args.quick)))  # the run file: `python -m bench redesign`
    return 0


if __name__ == "__main__":
    sys.exit(main())
