"""bench/redesign.py's pure pieces (no lab): the configuration both trees accept, the ABAB order, the ratios,
and the report's rows and section for issue #10's same-run A/B, from a synthetic run file."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from bench import common, redesign, report
from bench.tcplb_perf import LB_IP, SRV_IP, WEB
from tcplb import config

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"


# The checks that need 93fabf8 itself (its parser accepts the generated configuration, each tree's own
# `tcplb --check` runs) are not unit tests: a clone without that history (a shallow CI clone) could not run
# them. The part runs them before its lab starts (`redesign.check_tree` on both trees) and fails clearly.


def test_the_config_is_accepted_by_the_current_version() -> None:
    for workers in (1, 2):
        new = config.loads(redesign.tcplb_ab_cfg(workers))
        assert new.global_.workers == workers
        assert {li.name for li in new.listeners} == {"iperf", "web"}
        web = new.listener("web")
        assert web.bind == ((LB_IP, WEB),)
        assert (web.servers[0].host, web.servers[0].port) == (SRV_IP, WEB)
        # only keys 93fabf8 knew: nothing the redesign added (its bufsize) is set
        assert "bufsize" not in redesign.tcplb_ab_cfg(workers)


def test_extract_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RuntimeError, match=r"commit 0123456 .* is not in .*git fetch --unshallow"):
        redesign.extract("0123456", tmp_path / "x")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="git is not installed"):
        redesign.extract(redesign.OLD, tmp_path / "y")


def test_rounds_alternate_old_and_new() -> None:
    orders = [redesign.ab_order(r) for r in range(6)]
    for o in orders:
        assert sorted(o) == sorted(redesign.IMPLS)
        for new, oldi in redesign.PAIRS:  # ABAB: each pair back to back
            assert abs(o.index(new) - o.index(oldi)) == 1
    for a, b in itertools.pairwise(orders):
        for new, oldi in redesign.PAIRS:  # who goes first flips every round
            assert (a.index(new) < a.index(oldi)) != (b.index(new) < b.index(oldi))
    # HAProxy rotates through the three group positions (first, middle, last)
    assert {orders[r].index("haproxy") for r in range(3)} == {0, 2, 4}


def samples() -> dict[str, dict[str, list[float | None]]]:
    return {
        "churn": {
            "tcplb-93fabf8": [1000.0, 1100.0, 1000.0],
            "tcplb": [900.0, 1100.0, 950.0],  # 0.90, 1.00, 0.95 -> 0.95
            "tcplb-2w-93fabf8": [1400.0, 1400.0, None],
            "tcplb-2w": [1400.0, 1540.0, 1500.0],  # 1.00, 1.10, n/a -> 1.05
            "haproxy": [2000.0, 2000.0, 2000.0],
        },
        "small": {
            "tcplb-93fabf8": [9000.0, 9000.0, 9000.0],
            "tcplb": [9000.0, 9500.0, 9900.0],  # 1.00, 1.056, 1.10 -> 1.056
            "tcplb-2w-93fabf8": [10000.0, 10000.0, 10000.0],
            "tcplb-2w": [9000.0, 9500.0, 9800.0],  # 0.90, 0.95, 0.98 -> 0.95
            "haproxy": [10000.0, 10000.0, 10000.0],
        },
        "bulk": {
            "tcplb-93fabf8": [20.0, 20.0, 20.0],
            "tcplb": [15.0, 16.0, 17.0],
            "tcplb-2w-93fabf8": [20.0, 20.0, 20.0],
            "tcplb-2w": [15.0, 15.0, 15.0],
            "haproxy": [10.0, 10.0, 10.0],
        },
    }


def test_ratios_current_over_old_and_against_haproxy() -> None:
    r = redesign.ab_ratios(samples())
    assert r["churn_vs_93fabf8"] == pytest.approx(0.95)
    assert r["churn_2workers_vs_93fabf8"] == pytest.approx(1.05)
    assert r["churn_vs_haproxy"] == pytest.approx(0.475)
    assert r["churn_93fabf8_vs_haproxy"] == pytest.approx(0.5)
    assert r["churn_2workers_vs_haproxy"] == pytest.approx(0.75)
    assert r["churn_2workers_93fabf8_vs_haproxy"] == pytest.approx(0.7)
    assert r["small_vs_93fabf8"] == pytest.approx(9500 / 9000)
    assert r["small_2workers_vs_93fabf8"] == pytest.approx(0.95)
    assert r["bulk_vs_93fabf8"] == pytest.approx(0.8)
    assert r["bulk_2workers_vs_haproxy"] == pytest.approx(1.5)
    assert len(r) == 3 * 6
    assert redesign.ab_ratios({})["churn_vs_93fabf8"] is None
    # targets: current/old >= 1.0 for churn and small, both configurations; bulk informative
    assert redesign.TARGETS == {
        "churn_vs_93fabf8": 1.0,
        "churn_2workers_vs_93fabf8": 1.0,
        "small_vs_93fabf8": 1.0,
        "small_2workers_vs_93fabf8": 1.0,
    }
    notes = redesign.ratio_notes(r)
    assert "median per-round ratio churn_vs_93fabf8: 0.95x (target >= 1.0x) NOT MET" in notes
    assert "median per-round ratio churn_2workers_vs_93fabf8: 1.05x (target >= 1.0x) MET" in notes
    assert "median per-round ratio bulk_vs_93fabf8: 0.80x (no target)" in notes
    assert redesign.ratio_notes({"x": None}) == ["x: n/a"]
    # the report replaces these lines by its Targets table
    assert all(report.OWN_TARGET_NOTE.search(n) for n in notes)


def synthetic_run() -> dict[str, Any]:
    figs = []
    for fid, s in samples().items():
        f = common.figure(fid, fid, "req/s", impls=redesign.IMPLS)
        f["samples"] = s
        figs.append(f)
    notes = redesign.ratio_notes(redesign.ab_ratios(samples()))
    part = common.part_result("redesign", "A/B", redesign.IMPLS, figs, rounds=3, subject="tcplb",
                              baseline="tcplb-93fabf8", notes=notes)  # fmt: skip
    return {
        "command": "python -m bench redesign",
        "environment": {"date": "2999-12-31 00:00:00 UTC", "kernel": "k", "cpus": 2},
        "seconds": 500.0,
        "parts": {"redesign": part},
    }


def page(results: Path) -> str:
    return report.performance_page(results)


def section(text: str, heading: str) -> str:
    return text.split(f"\n## {heading}", 1)[1].split("\n## ", 1)[0]


def test_report_rows_and_section_from_a_run(tmp_path: Path) -> None:
    for f in RESULTS.glob("run-*.json"):
        if "redesign" not in json.loads(f.read_text())["parts"]:  # the committed runs without the part
            shutil.copy(f, tmp_path / f.name)
    before = page(tmp_path)
    # no run of the part: no A/B rows, and the section says so
    assert "A/B against 93fabf8" not in section(before, "Targets")
    assert "No committed run of `python -m bench redesign` yet" in section(
        before, "No speed lost to the redesign"
    )

    common.write_json(tmp_path / "run-29991231-000000.json", common.sanitize(synthetic_run()))
    after = page(tmp_path)
    targets = section(after, "Targets").splitlines()
    old_rows = [r for r in section(before, "Targets").splitlines() if r.startswith("| ")]
    new_rows = [r for r in targets if r.startswith("| ")]
    # the existing rows stay as they are; the four A/B rows follow the published floors
    assert [r for r in new_rows if "A/B against 93fabf8" not in r] == old_rows
    i = next(
        k for k, r in enumerate(new_rows) if r.startswith("| Small requests, `workers = 2`: no speed lost")
    )
    ab = new_rows[i + 1 : i + 5]
    assert all("same-run A/B against 93fabf8" in r and "run-29991231-000000.json" in r for r in ab)
    churn1, churn2, small1, small2 = ab
    assert "| tcplb / tcplb-93fabf8: at least 1.0x" in churn1
    assert "| 0.95x | **not met** | tcplb / haproxy 0.47x; tcplb-93fabf8 / haproxy 0.50x |" in churn1
    assert "| tcplb-2w / tcplb-2w-93fabf8: at least 1.0x" in churn2 and "| 1.05x | met |" in churn2
    assert "| 1.06x | met | tcplb / haproxy 0.95x; tcplb-93fabf8 / haproxy 0.90x |" in small1
    assert "| 0.95x | **not met** |" in small2

    sec = section(after, "No speed lost to the redesign")
    assert "[`run-29991231-000000.json`](../bench/results/run-29991231-000000.json)" in sec
    assert "[`run-20261122-040646.json`]" in sec  # the floors' run
    rows = [r for r in sec.splitlines() if r.startswith("| ") and not r.startswith("| Figure")]
    assert rows == [
        "| Connection churn | one process | 0.63x | 0.95x | **not met** | 0.47x | 0.50x |",
        "| Connection churn | `workers = 2` | 0.71x | 1.05x | met | 0.75x | 0.70x |",
        "| Small requests | one process | 0.85x | 1.06x | met | 0.95x | 0.90x |",
        "| Small requests | `workers = 2` | 0.95x | 0.95x | **not met** | 0.95x | 1.00x |",
        "| Bulk TCP (informative) | one process | - | 0.80x | (no target) | 1.60x | 2.00x |",
        "| Bulk TCP (informative) | `workers = 2` | - | 0.75x | (no target) | 1.50x | 2.00x |",
    ]
    # the part's own result section, and its history under Every run
    assert "### No speed lost to the redesign" not in section(after, "Results")  # the title is the part's
    assert "### A/B" in section(after, "Results")
    history = section(after, "Every run")
    assert "### redesign" in history and "churn 1p A/B: tcplb / tcplb-93fabf8" in history
