"""The benchmark framework's pure parts: stats, rounds, tables, normalisation, wrk output, AMQP framing."""

from __future__ import annotations

import asyncio
import json
import math
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from bench import amqpgen, backend_death, common, lbs, report


def test_percentile_and_summary() -> None:
    assert common.percentile([], 50) != common.percentile([], 50)  # NaN
    assert common.percentile([3.0], 99) == 3.0
    assert common.percentile([1, 2, 3, 4], 50) == 2.5
    assert common.percentile(list(range(101)), 99) == 99.0
    s = common.summary([3.0, None, 1.0, math.nan, 2.0])
    assert s == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert common.summary([None])["n"] == 0


def test_ratios_per_round() -> None:
    assert common.ratios([2.0, None, 3.0, 1.0], [1.0, 1.0, 0.0, 4.0]) == [2.0, None, None, 0.25]


def test_round_order_rotates() -> None:
    impls = ["a", "b", "c"]
    orders = [common.round_order(impls, r) for r in range(3)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    # every implementation in every position once over len(impls) rounds
    for pos in range(3):
        assert sorted(o[pos] for o in orders) == impls
    assert common.round_order([], 5) == []


def test_rounds_for_quick() -> None:
    assert common.rounds_for(5, quick=True) == 2
    assert common.rounds_for(5, quick=False) == 5
    assert common.rounds_for(0, quick=False) == 1


def test_figure_and_markdown_table() -> None:
    f = common.figure("rps", "requests", "req/s", impls=["tcplb", "haproxy"])
    for a, b in ((100.0, 50.0), (90.0, 60.0), (None, 55.0)):
        common.add(f, "tcplb", a)
        common.add(f, "haproxy", b)
    res = common.part_result(
        "x",
        "Title",
        ["tcplb", "haproxy"],
        [f],
        rounds=3,
        subject="tcplb",
        baseline="haproxy",
        notes=["a note"],
    )
    md = common.markdown_part(res)
    assert "### Title" in md
    assert "| Figure | Unit | tcplb | haproxy | tcplb / haproxy per round |" in md
    # tcplb: median of 100, 90; haproxy median 55 (50-60); ratios 2.0 and 1.5
    assert "| requests | req/s | 95.0 (90.0-100) | 55.0 (50.0-60.0) | 1.75x (1.50-2.00) |" in md
    assert "- a note" in md
    with pytest.raises(ValueError):
        common.figure("x", "x", "", better="sideways")


def test_info_figures_have_no_ratio() -> None:
    f = common.figure("cpu", "gen cpu", "%", better="info", impls=["tcplb", "haproxy"])
    common.add(f, "tcplb", 1.0)
    common.add(f, "haproxy", 2.0)
    res = common.part_result(
        "x", "T", ["tcplb", "haproxy"], [f], rounds=1, subject="tcplb", baseline="haproxy"
    )
    assert common.markdown_part(res).splitlines()[4].endswith("| 1.00 | 2.00 |  |")


def test_fmt() -> None:
    assert common.fmt(None) == "-"
    assert common.fmt(math.nan) == "-"
    assert common.fmt(12345.6) == "12,346"
    assert common.fmt(123.4) == "123"
    assert common.fmt(12.34) == "12.3"
    assert common.fmt(1.234) == "1.23"
    assert common.fmt(0.01234) == "0.0123"
    assert common.fmt(0) == "0"


def test_normalize_passes_our_layout_through() -> None:
    f = common.figure("a", "A", "s", impls=["p", "q"])
    res = common.part_result("x", "T", ["p", "q"], [f], rounds=1)
    assert common.normalize("x", res)["figures"] == [f]


def test_normalize_foreign_trials() -> None:
    foreign = {
        "rounds": [
            {"round": 0, "impl": "vrrpd", "crash_error_ms": 1.5, "ok": True},
            {"round": 0, "impl": "keepalived", "crash_error_ms": 0.5},
            {"round": 1, "impl": "vrrpd", "crash_error_ms": 2.5, "takeover_s": 3.6},
        ],
        "markdown": "| my table |",
    }
    res = common.normalize("failover", foreign)
    assert res["impls"] == ["vrrpd", "keepalived"]
    figs = {f["id"]: f for f in res["figures"]}
    assert figs["crash_error_ms"]["samples"] == {"vrrpd": [1.5, 2.5], "keepalived": [0.5]}
    assert figs["crash_error_ms"]["unit"] == "ms" and figs["crash_error_ms"]["chart"] == "strip"
    assert "ok" not in figs
    assert "| my table |" in common.markdown_part(res)


def test_normalize_foreign_nested_series() -> None:
    foreign = {"bulk": {"tcplb": [1, 2], "haproxy": [3, None]}, "other": {"x": 1}}
    res = common.normalize("t", foreign)
    assert res["figures"][0]["samples"] == {"tcplb": [1.0, 2.0], "haproxy": [3.0, None]}


def test_sanitize_makes_strict_json() -> None:
    data = common.sanitize({"a": [1.0, math.nan, (2, math.inf)], 3: None})
    assert json.loads(json.dumps(data, allow_nan=False)) == {"a": [1.0, None, [2, None]], "3": None}


WRK = """Running 3s test @ http://192.0.2.21:5001/
  1 threads and 20 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.02ms  512.00us  20.00ms   90.00%
  Latency Distribution
     50%  850.00us
     75%    1.10ms
     90%    1.50ms
     99%    4.20ms
  60000 requests in 3.00s, 5.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:  20000.50
Transfer/sec:      1.67MB
"""


def test_parse_wrk() -> None:
    out = common.parse_wrk(WRK)
    assert out["rps"] == 20000.5
    assert out["p50_ms"] == pytest.approx(0.85)
    assert out["p99_ms"] == pytest.approx(4.2)
    assert out["errors"] == 3
    assert common.parse_wrk("garbage")["rps"] is None


def test_markdown_run_and_render(tmp_path: Path) -> None:
    f = common.figure("a", "A", "s", impls=["tcplb", "haproxy"])
    common.add(f, "tcplb", 1.0)
    common.add(f, "haproxy", 2.0)
    run: dict[str, Any] = {
        "command": "python -m bench x",
        "environment": {"date": "2026-11-22 00:00:00 UTC", "python": "3.11"},
        "seconds": 12.0,
        "parts": {
            "x": common.part_result("x", "X", ["tcplb", "haproxy"], [f], rounds=1),
            "broken": {"part": "broken", "error": "Traceback...\nRuntimeError: boom\n"},
            "later": {"part": "later", "skipped": "bench.later is not there yet"},
        },
    }
    md = report.render(run, tmp_path, charts=False)
    assert "Latest command: `python -m bench x`" in md
    assert "**Failed:** `RuntimeError: boom`" in md
    assert "Skipped: bench.later is not there yet" in md
    latest = (tmp_path / "latest.md").read_text()
    assert "*Run: 2026-11-22 00:00:00 UTC, `python -m bench x`.*" in latest
    assert "Skipped" not in latest  # latest.md keeps the newest real result of each part
    assert "### X" in latest and "boom" in latest


def test_charts_are_written(tmp_path: Path) -> None:
    import matplotlib  # a dev dependency: missing is an error, not a skip

    assert matplotlib.__version__
    f = common.figure("a", "A", "s", impls=["tcplb", "haproxy"])
    for v in (1.0, 2.0):
        common.add(f, "tcplb", v)
        common.add(f, "haproxy", v * 2)
    res = common.part_result(
        "x", "X", ["tcplb", "haproxy"], [f], rounds=2, subject="tcplb", baseline="haproxy"
    )
    p = report.bars_chart(res, tmp_path / "x.png")
    assert p is not None and p.stat().st_size > 1000
    t = report.timeline_chart(
        {"a": [{"t": 0.1, "dur": 3.0, "ok": False}, {"t": 0.2, "dur": 0.0, "ok": True}]},
        tmp_path / "t.png",
        title="t",
    )
    assert t is not None and t.exists()
    assert report.bars_chart(common.part_result("y", "Y", [], [], rounds=1), tmp_path / "y.png") is None


def test_backend_death_analysis() -> None:
    t_kill = 100.0
    conns = [
        [99.0, 0.001, True, ""],  # before the kill: not counted
        [100.1, 3.0, False, "closed"],
        [100.5, 3.0, False, "closed"],
        [101.0, 0.8, True, ""],
        [102.0, 0.001, True, ""],
    ]
    a = backend_death.analyse(conns, t_kill)
    assert a["failed"] == 2 and a["failed_hang_median"] == 3.0
    assert a["slow_ok"] == 1 and a["slowest"] == 3.0
    assert a["fail_window"] == pytest.approx(0.4)
    assert a["last_failed_start"] == pytest.approx(0.5)


def test_equivalent_lb_configs() -> None:
    spec = lbs.LBSpec(
        binds=[("192.0.2.21", 5000)],
        servers=[("b1", "192.0.2.31", 9000)],
        balance="roundrobin",
        redispatch=True,
    )
    cfg = lbs.haproxy_cfg(spec)
    assert "  server b1 192.0.2.31:9000 check inter 1s rise 2 fall 3" in cfg
    assert "option redispatch" in cfg and "balance roundrobin" in cfg and "retries 3" in cfg
    from tcplb import config

    parsed = config.loads(lbs.tcplb_toml(spec))
    li = parsed.listener("bench")
    assert li.balance == "roundrobin" and li.retries == 3 and li.redispatch != 0
    srv = li.servers[0]
    assert (srv.check.inter, srv.check.rise, srv.check.fall) == (1.0, 2, 3)
    assert li.bind == (("192.0.2.21", 5000),)
    assert (
        config.loads(lbs.tcplb_toml(lbs.LBSpec(binds=spec.binds, servers=spec.servers)))
        .listener("bench")
        .redispatch
        == 0
    )


# ------------------------------------------------------------------------------------------ AMQP framing


class FakeTransport:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, b: bytes) -> None:
        self.data += b

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


def _deliver(tag: int, body: bytes) -> bytes:
    m = amqpgen.method(
        1,
        60,
        60,
        amqpgen.shortstr("c1")
        + struct.pack(">Q", tag)
        + b"\x00"
        + amqpgen.shortstr("")
        + amqpgen.shortstr("q"),
    )
    h = amqpgen.frame(2, 1, struct.pack(">HHQH", 60, 0, len(body), 0))
    return m + h + amqpgen.frame(3, 1, body)


def test_amqp_frames_parse_in_any_chunking() -> None:
    async def main() -> None:
        conn = amqpgen.Conn()
        conn.connection_made(FakeTransport())  # type: ignore[arg-type]
        bodies: list[bytes] = []
        confirms: list[tuple[int, bool, bool]] = []
        conn.on_body = bodies.append
        conn.on_confirm = lambda tag, multiple, nack: confirms.append((tag, multiple, nack))
        stream = (
            _deliver(1, struct.pack(">Q", 42) + b"x" * 100)
            + amqpgen.method(1, 60, 80, struct.pack(">Q", 7) + b"\x01")  # basic.ack multiple
            + amqpgen.frame(8, 0, b"")  # heartbeat
            + _deliver(2, b"")
            + amqpgen.method(1, 60, 120, struct.pack(">Q", 8) + b"\x00")  # basic.nack
        )
        for i in range(0, len(stream), 5):  # 5-byte pieces
            conn.data_received(stream[i : i + 5])
        assert bodies == [struct.pack(">Q", 42) + b"x" * 8, b""]
        assert confirms == [(7, True, False), (8, False, True)]
        assert conn.buf == bytearray()
        fut = conn.expect(50, 11)
        conn.data_received(amqpgen.method(1, 50, 11, amqpgen.shortstr("q") + struct.pack(">II", 5, 0)))
        ok = await fut
        assert struct.unpack_from(">I", ok, 1 + ok[0])[0] == 5

    asyncio.run(main())


def test_amqp_broker_close_fails_waiters() -> None:
    async def main() -> None:
        conn = amqpgen.Conn()
        t = FakeTransport()
        conn.connection_made(t)  # type: ignore[arg-type]
        fut = conn.expect(20, 11)
        conn.data_received(
            amqpgen.method(
                0,
                10,
                50,
                struct.pack(">H", 403) + amqpgen.shortstr("ACCESS_REFUSED") + struct.pack(">HH", 0, 0),
            )
        )
        with pytest.raises(amqpgen.AmqpError, match="403 ACCESS_REFUSED"):
            await fut
        assert t.data.endswith(amqpgen.method(0, 10, 51))  # close-ok sent

    asyncio.run(main())


def test_publish_frames_layout() -> None:
    head, body_hdr = amqpgen.publish_frames(1, "q", b"abc")
    # method frame then header frame (class 60, body size 3, delivery-mode 2)
    assert head[:1] == b"\x01" and head.count(b"\xce") == 2
    hdr_payload = head[head.index(b"\xce") + 1 + 7 : -1]
    assert struct.unpack(">HHQH", hdr_payload[:14]) == (60, 0, 3, 0x1000) and hdr_payload[14:] == b"\x02"
    assert body_hdr == struct.pack(">BHI", 3, 1, 3)
    with pytest.raises(ValueError):
        amqpgen.shortstr("x" * 256)


def test_budget_stops_rounds_that_would_not_fit() -> None:
    b = common.Budget(None)
    assert all(b.next_round() for _ in range(5)) and b.left() is None
    b = common.Budget(10.0)
    assert b.next_round()  # the first round always runs
    b._started = time.monotonic() - 6.0  # that round took 6 s
    b.end = time.monotonic() + 4.0  # and 4 s are left: another one does not fit
    assert not b.next_round()
    assert b.last_round >= 6.0
    b = common.Budget(100.0)
    assert b.next_round()
    b._started = time.monotonic() - 1.0
    assert b.next_round()


def test_command_line_parts() -> None:
    from bench.__main__ import BY_NAME, parts_for

    assert parts_for(["tcplb", "stalled", "rtt"]) == (["tcplb", "stalled", "rtt"], None)
    assert parts_for(["churn"]) == (["tcplb"], "churn")
    assert parts_for(["churn", "tcplb"]) == (["tcplb"], None)
    assert parts_for(["track-process", "failover", "track-process"]) == (["track-process", "failover"], None)
    assert parts_for(["redesign"]) == (["redesign"], None)
    assert BY_NAME["redesign"].module == "bench.redesign"
    names, only = parts_for(["all"])
    assert only is None and set(names) == set(BY_NAME)


def test_every_target_names_a_part_the_bench_runs() -> None:
    from bench.__main__ import BY_NAME
    from bench.report import AB_TARGETS, TARGETS

    for t in (*TARGETS, *AB_TARGETS):
        assert t.part in BY_NAME, t
        assert (t.baseline is None) or t.stat == "median", t
