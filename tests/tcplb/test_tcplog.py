"""tcplb.tcplog: HAProxy's tcplog layout and health log lines."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tcplb.health import CheckStatus
from tcplb.tcplog import (
    TERMINATION_STATES,
    TcpLogRecord,
    accept_date,
    describe_termination,
    format_health_change,
    format_json,
    format_maintenance,
    format_no_server,
    format_record,
    format_tcplog,
    termination_state,
)

T0 = datetime(2009, 2, 6, 12, 12, 51, 443000, tzinfo=UTC).timestamp()


def test_haproxy_documentation_example() -> None:
    # configuration.txt §8.2.2: the tcplog example, byte for byte
    r = TcpLogRecord(
        client=("10.0.1.2", 33313),
        accept_time=T0,
        frontend="fnt",
        backend="bck",
        server="srv1",
        tw=0,
        tc=0,
        tt=5007,
        bytes_read=212,
        retries=3,
    )
    assert (
        format_tcplog(r, UTC)
        == "10.0.1.2:33313 [06/Feb/2009:12:12:51.443] fnt bck/srv1 0/0/5007 212 -- 0/0/0/0/3 0/0"
    )


def test_nosrv_logasap_and_redispatch() -> None:
    base = TcpLogRecord(
        ("192.0.2.50", 40000), T0, "rabbitmq", "rabbitmq", None, tw=0, tc=-1, tt=5003, termination="SC"
    )
    assert " rabbitmq/<NOSRV> 0/-1/5003 0 SC " in format_tcplog(base, UTC)
    asap = TcpLogRecord(
        ("192.0.2.50", 40000),
        T0,
        "rabbitmq",
        "rabbitmq",
        "rmq2",
        tw=0,
        tc=1,
        tt=1,
        logasap=True,
        retries=1,
        redispatched=True,
        actconn=5,
        feconn=4,
        beconn=3,
        srv_conn=2,
        srv_queue=1,
        backend_queue=7,
    )
    line = format_tcplog(asap, UTC)
    assert line.endswith("rabbitmq rabbitmq/rmq2 0/1/+1 +0 -- 5/4/3/2/+1 1/7")


def test_accept_date_timezones() -> None:
    assert accept_date(T0, timezone(timedelta(hours=1))) == "06/Feb/2009:13:12:51.443"
    assert re.fullmatch(r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d\.\d{3}", accept_date(T0))


def test_json_and_dispatch() -> None:
    r = TcpLogRecord(("2001:db8::5", 1234), T0, "f", "b", "s", 1, 2, 3, 4, 5, "sD")
    d = json.loads(format_json(r))
    assert d["client_ip"] == "2001:db8::5" and d["Tt"] == 3 and d["termination_state"] == "sD"
    assert d["accept_date"] == "2009-02-06T12:12:51.443+00:00"
    assert format_record(r, "json") == format_json(r)
    assert format_record(r, "tcplog", UTC) == format_tcplog(r, UTC)
    with pytest.raises(ValueError):
        format_record(r, "clf")


LINE_RE = re.compile(
    r"^(?P<ip>\S+):(?P<port>\d+) \[(?P<date>[^\]]+)\] (?P<fe>\S+) (?P<be>[^/\s]+)/(?P<srv>\S+) "
    r"(?P<tw>-?\d+)/(?P<tc>-?\d+)/(?P<tt>\+?\d+) (?P<bytes>\+?\d+) (?P<ts>\S\S) "
    r"(?P<ac>\d+)/(?P<fc>\d+)/(?P<bc>\d+)/(?P<sc>\d+)/(?P<rc>\+?\d+) (?P<sq>\d+)/(?P<bq>\d+)$"
)

names = st.from_regex(r"[A-Za-z0-9_.:-]{1,20}", fullmatch=True)
small = st.integers(0, 10**6)


@settings(max_examples=100, deadline=None)
@given(
    st.ip_addresses().map(str),
    st.integers(1, 65535),
    st.floats(0, 4e9),
    names,
    st.one_of(st.none(), names),
    st.integers(-1, 10**6),
    st.integers(-1, 10**6),
    small,
    small,
    st.sampled_from(sorted(TERMINATION_STATES)),
    st.lists(small, min_size=7, max_size=7),
    st.booleans(),
    st.booleans(),
)
def test_line_always_parses(
    ip: str,
    port: int,
    ts: float,
    fe: str,
    srv: str | None,
    tw: int,
    tc: int,
    tt: int,
    b: int,
    term: str,
    counts: list[int],
    redisp: bool,
    asap: bool,
) -> None:
    r = TcpLogRecord(
        (ip, port),
        ts,
        fe,
        fe,
        srv,
        tw,
        tc,
        tt,
        b,
        0,
        term,
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        counts[4],
        redisp,
        counts[5],
        counts[6],
        asap,
    )
    m = LINE_RE.match(format_tcplog(r, UTC))
    assert m is not None
    assert m["ip"] == ip and int(m["port"]) == port and m["srv"] == (srv or "<NOSRV>")
    assert m["tt"] == ("+" if asap else "") + str(tt) and m["ts"] == term
    assert m["rc"] == ("+" if redisp else "") + str(counts[4])
    assert (int(m["sq"]), int(m["bq"])) == (counts[5], counts[6])


def test_termination_states() -> None:
    assert termination_state() == "--"
    assert termination_state("s", "D") == "sD"
    for bad in (("x", "D"), ("C", "-"), ("-", "D"), ("C", "Z")):
        with pytest.raises(ValueError):
            termination_state(*bad)
    for state in TERMINATION_STATES:
        assert describe_termination(state)
        assert termination_state(state[0], state[1]) == state
    assert "client" in describe_termination("cQ")
    with pytest.raises(ValueError):
        describe_termination("zz")


def test_health_lines() -> None:
    assert (
        format_health_change(
            "rabbitmq", "rmq1", False, CheckStatus.L4CON, info="Connection refused", duration_ms=0, active=2
        )
        == 'Server rabbitmq/rmq1 is DOWN, reason: Layer4 connection problem, info: "Connection refused", '
        "check duration: 0ms. 2 active and 0 backup servers left."
    )
    assert (
        format_health_change("rabbitmq", "rmq1", True, "L4OK", duration_ms=1, active=3, requeued=0, queued=0)
        == "Server rabbitmq/rmq1 is UP, reason: Layer4 check passed, check duration: 1ms. "
        "3 active and 0 backup servers online. 0 sessions requeued, 0 total in queue."
    )
    assert (
        format_health_change(
            "mgmt",
            "rmq2",
            False,
            "L7STS",
            code=503,
            info='Service "Unavailable"',
            duration_ms=3,
            active=1,
            backup=1,
            is_backup=True,
            sessions=4,
        )
        == "Backup Server mgmt/rmq2 is DOWN, reason: Layer7 wrong status, code: 503, "
        'info: "Service \\"Unavailable\\"", check duration: 3ms. 1 active and 1 backup servers left. '
        "4 sessions active, 0 requeued, 0 remaining in queue."
    )
    passive = format_health_change("rabbitmq", "rmq3", False, "HANA", info="Connection refused", active=2)
    assert passive == (
        'Server rabbitmq/rmq3 is DOWN, reason: Health analyze, info: "Connection refused". '
        "2 active and 0 backup servers left."
    )


def test_maintenance_and_no_server_lines() -> None:
    assert (
        format_maintenance("rabbitmq", "rmq1", True, active=2, by="admin API")
        == "Server rabbitmq/rmq1 is going DOWN for maintenance (by admin API). "
        "2 active and 0 backup servers left."
    )
    assert (
        format_maintenance("rabbitmq", "rmq1", False, active=3, is_backup=True)
        == "Backup Server rabbitmq/rmq1 is UP (leaving forced maintenance). "
        "3 active and 0 backup servers online."
    )
    assert format_no_server("rabbitmq") == "proxy rabbitmq has no server available!"
