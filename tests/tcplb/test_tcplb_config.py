"""tcplb.config: parsing, inheritance, errors, warnings, round trips (hypothesis)."""

from __future__ import annotations

import copy
import resource
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tcplb import config as C
from tcplb.config import ConfigError, load, loads, parse, parse_address, parse_duration

ROOT = Path(__file__).resolve().parents[2]

ISSUE = """
[global]
maxconn = 10000
hard_stop_after = "30s"

[defaults]
timeout_connect = "5s"
timeout_client = "3h"
timeout_server = "3h"
retries = 3
redispatch = true

[listen.rabbitmq]
bind = ["192.0.2.100:5672"]
balance = "leastconn"
check = { type = "tcp", inter = "1s", rise = 2, fall = 3 }
server = [
  { name = "rmq1", address = "192.0.2.11:5672" },
  { name = "rmq2", address = "192.0.2.12:5672", weight = 2 },
  { name = "rmq3", address = "192.0.2.13:5672", backup = true },
]
"""


def errors_of(data: dict[str, Any] | str) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as ei:
        loads(data) if isinstance(data, str) else parse(data)
    return ei.value.errors


def minimal(**listener: Any) -> dict[str, Any]:
    li = {"bind": "192.0.2.100:5672", "server": [{"name": "a", "address": "192.0.2.11:5672"}], **listener}
    return {
        "defaults": {"timeout_connect": "5s", "timeout_client": "1h", "timeout_server": "1h"},
        "listen": {"rmq": li},
    }


# ------------------------------------------------------------------------------------------ the issue


@pytest.fixture(autouse=True)
def _roomy_nofile(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hard RLIMIT_NOFILE that covers every maxconn here (systemd/tcplb.service sets LimitNOFILE): the
    warning when it does not is tested in test_defects_ops.py, whatever this host's limit is."""
    monkeypatch.setattr(resource, "getrlimit", lambda what: (1024, 1 << 20))


def test_issue_example() -> None:
    cfg = loads(ISSUE)
    assert cfg.global_.maxconn == 10000 and cfg.global_.hard_stop_after == 30.0
    (li,) = cfg.listeners
    assert li.name == "rabbitmq" and li.bind == (("192.0.2.100", 5672),)
    assert li.balance == "leastconn" and li.retries == 3 and li.redispatch == -1
    assert li.timeouts.connect == 5.0 and li.timeouts.client_idle == li.timeouts.server_idle == 3 * 3600.0
    rmq1, rmq2, rmq3 = li.servers
    assert (rmq1.host, rmq1.port, rmq1.weight, rmq1.backup) == ("192.0.2.11", 5672, 1, False)
    assert rmq2.weight == 2 and rmq3.backup
    c = rmq1.check
    assert (c.enabled, c.type, c.inter, c.fastinter, c.downinter, c.rise, c.fall) == (
        True,
        "tcp",
        1,
        1,
        1,
        2,
        3,
    )
    assert (c.connect_timeout, c.timeout) == (1.0, 1.0)  # no timeout_check: inter bounds the whole check
    assert rmq1.init_state == "fully-up" and rmq1.maxconn is None
    assert C.warnings(cfg) == []
    assert cfg.listener("rabbitmq") is li and li.server("rmq2") is rmq2
    with pytest.raises(KeyError):
        cfg.listener("nope")
    with pytest.raises(KeyError):
        li.server("nope")


def test_example_file_is_valid_and_quiet() -> None:
    cfg = load(ROOT / "examples" / "lb.toml")
    assert C.warnings(cfg) == []
    li = cfg.listener("rabbitmq")
    assert len(li.servers) == 3 and li.balance == "leastconn"
    assert cfg.stats is not None and cfg.stats.admin


def test_haproxy_defaults() -> None:
    cfg = parse({"listen": {"x": {"bind": ":5672", "server": [{"name": "a", "address": "rmq1:5672"}]}}})
    li = cfg.listeners[0]
    assert li.bind == (("0.0.0.0", 5672),)
    assert li.balance == "leastconn" and li.retries == 3 and li.redispatch == 0 and not li.allbackups
    assert li.maxconn is None and li.nodelay and li.log and not li.logasap and li.tcpka is None
    s = li.servers[0]
    assert (s.host, s.weight, s.check.inter, s.check.rise, s.check.fall, s.check.type) == (
        "rmq1",
        1,
        2,
        2,
        3,
        "tcp",
    )
    assert s.check.on_error == "mark-down" and s.check.error_limit == 1
    t = li.timeouts
    assert (t.connect, t.client, t.server, t.tunnel, t.queue_wait) == (None,) * 5
    warns = C.warnings(cfg)
    assert any("timeout_connect, timeout_client, timeout_server" in w for w in warns)
    assert any("hard_stop_after" in w for w in warns)


# --------------------------------------------------------------------------------------- inheritance


def test_defaults_apply_unless_listener_sets() -> None:
    data = minimal(retries=5)
    data["defaults"].update(retries=2, balance="roundrobin", check={"inter": "3s", "rise": 4, "type": "amqp"})
    data["listen"]["rmq"]["check"] = {"fall": 5}
    data["listen"]["other"] = {
        "bind": "192.0.2.100:15672",
        "server": [{"name": "m", "address": "192.0.2.11:15672"}],
    }
    cfg = parse(data)
    rmq, other = cfg.listener("rmq"), cfg.listener("other")
    assert rmq.retries == 5 and other.retries == 2
    assert rmq.balance == other.balance == "roundrobin"
    c = rmq.servers[0].check
    assert (c.inter, c.rise, c.fall, c.type) == (3.0, 4, 5, "amqp")  # tables merge key by key
    c2 = other.servers[0].check
    assert (c2.inter, c2.rise, c2.fall) == (3.0, 4, 3)


def test_server_check_merges_over_listener() -> None:
    data = minimal(
        check={
            "type": "http",
            "port": 15672,
            "path": "/api/health/checks/ready-to-serve-clients",
            "user": "mon",
            "password": "pw",
            "inter": "2s",
            "fastinter": "500ms",
        },
        server=[
            {"name": "a", "address": "192.0.2.11:5672"},
            {"name": "b", "address": "192.0.2.12:5672", "check": {"inter": "5s", "addr": "192.0.2.99"}},
            {"name": "c", "address": "192.0.2.13:5672", "check": False},
            {"name": "d", "address": "192.0.2.14:5672", "check": {"type": "tcp", "port": 5672}},
            {"name": "e", "address": "192.0.2.15:5672", "check": True},
        ],
    )
    li = parse(data).listeners[0]
    a, b, c, d, e = li.servers
    assert a.check.type == "http" and a.check_port == 15672 and a.check_host == "192.0.2.11"
    assert a.check.http.path == "/api/health/checks/ready-to-serve-clients" and a.check.http.user == "mon"
    assert a.check.http.status_ok(200) and a.check.http.status_ok(302) and not a.check.http.status_ok(503)
    assert b.check.inter == 5.0 and b.check.fastinter == 0.5 and b.check.downinter == 5.0
    assert b.check.type == "http" and b.check_host == "192.0.2.99"
    assert not c.check.enabled
    assert d.check.type == "tcp" and d.check_port == 5672
    assert e.check == a.check == li.check


def test_default_server_and_server_override() -> None:
    data = minimal(
        default_server={"maxconn": 100, "weight": 3, "init_state": "down"},
        server=[
            {"name": "a", "address": "192.0.2.11:5672"},
            {"name": "b", "address": "192.0.2.12:5672", "weight": 0, "maxconn": 0, "disabled": True},
        ],
    )
    data["defaults"]["default_server"] = {"maxqueue": 10, "weight": 2}
    a, b = parse(data).listeners[0].servers
    assert (a.maxconn, a.weight, a.maxqueue, a.init_state) == (100, 3, 10, "down")
    assert (b.maxconn, b.weight, b.disabled) == (None, 0, True)  # maxconn 0 = unlimited, as HAProxy


def test_check_timeouts_follow_haproxy() -> None:
    data = minimal(timeout_check="1s", check={"inter": "3s"})
    data["defaults"]["timeout_connect"] = "5s"
    c = parse(data).listeners[0].servers[0].check
    assert (c.connect_timeout, c.timeout) == (3.0, 1.0)  # connect = min(timeout_connect, inter)
    data["defaults"]["timeout_connect"] = "500ms"
    c = parse(data).listeners[0].servers[0].check
    assert (c.connect_timeout, c.timeout) == (0.5, 1.0)


def test_timeouts_effective_values() -> None:
    data = minimal(timeout_tunnel="2h", timeout_client_fin="30s", timeout_queue="10s")
    t = parse(data).listeners[0].timeouts
    assert t.client_idle == t.server_idle == 7200.0
    assert t.client_fin_idle == 30.0 and t.server_fin_idle == 7200.0
    assert t.queue_wait == 10.0
    t2 = parse(minimal()).listeners[0].timeouts
    assert t2.client_idle == 3600.0 and t2.queue_wait == 5.0 and t2.client_fin_idle == 3600.0


def test_zero_timeout_is_explicitly_infinite() -> None:
    data = minimal(timeout_client=0, timeout_server="0s")
    cfg = parse(data)
    t = cfg.listeners[0].timeouts
    assert t.client is None and t.server is None and t.explicit_infinite == {"client", "server"}
    assert not [w for w in C.warnings(cfg) if "missing timeouts" in w]
    data = minimal()
    del data["defaults"]["timeout_client"]
    assert any("missing timeouts: timeout_client;" in w for w in C.warnings(parse(data)))
    data["defaults"]["timeout_tunnel"] = "1h"
    assert not [w for w in C.warnings(parse(data)) if "missing" in w]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, C.Keepalive(C.KeepaliveSide(), C.KeepaliveSide())),
        (False, None),
        (
            {"idle": "30s", "interval": 10, "count": 4},
            C.Keepalive(C.KeepaliveSide(30, 10, 4), C.KeepaliveSide(30, 10, 4)),
        ),
        ({"client": True}, C.Keepalive(C.KeepaliveSide(), None)),
        ({"server": {"idle": "1m"}, "client": False}, C.Keepalive(None, C.KeepaliveSide(idle=60))),
    ],
)
def test_tcpka_forms(value: Any, expected: C.Keepalive | None) -> None:
    assert parse(minimal(tcpka=value)).listeners[0].tcpka == expected


def test_tcpka_listener_replaces_defaults() -> None:
    data = minimal(tcpka={"client": True})
    data["defaults"]["tcpka"] = {"idle": 30}
    data["listen"]["b"] = {"bind": "192.0.2.100:1", "server": []}
    cfg = parse(data)
    assert cfg.listener("rmq").tcpka == C.Keepalive(C.KeepaliveSide(), None)
    assert cfg.listener("b").tcpka == C.Keepalive(C.KeepaliveSide(30), C.KeepaliveSide(30))


def test_stats_section() -> None:
    data = minimal()
    data["stats"] = {"bind": "127.0.0.1:8404"}
    assert parse(data).stats == C.StatsConfig(("127.0.0.1", 8404))
    data["stats"] = {"bind": "127.0.0.1:8404", "admin": True, "auth": ["a:b"]}
    assert parse(data).stats == C.StatsConfig(("127.0.0.1", 8404), auth=(C.StatsUser("a", "b"),), admin=True)
    data["stats"] = {"bind": "127.0.0.1:8404", "admin": True}
    assert errors_of(data) == [
        ("stats.admin", 'needs stats.auth (e.g. ["admin:secret"]): the admin API always asks for a user')
    ]
    data["stats"] = {"bind": "0.0.0.0:8404", "admin": True, "auth": ["a:b"]}
    assert errors_of(data) == [
        (
            "stats.admin",
            "the admin API on a non-loopback address (0.0.0.0:8404) needs stats.admin_allow_remote = true",
        )
    ]
    data["stats"] = {
        "bind": "0.0.0.0:8404",
        "uri": "/lb",
        "auth": ["a:b"],
        "admin": True,
        "admin_allow_remote": True,
        "refresh": "5s",
    }
    assert parse(data).stats == C.StatsConfig(("0.0.0.0", 8404), "/lb", (("a", "b"),), True, True, 5.0)
    data["stats"] = {"admin": True, "user": "a"}
    assert {p for p, _ in errors_of(data)} == {"stats.bind", "stats.user"}
    data["stats"] = {"bind": "127.0.0.1:8404", "auth": ["a"]}
    assert [p for p, _ in errors_of(data)] == ["stats.auth[0]"]
    data["stats"] = {"bind": "localhost:8404"}
    assert errors_of(data) == [("stats.bind", '"localhost" is not an IP address')]
    data["stats"] = {"bind": "192.0.2.100:5672"}
    assert errors_of(data) == [("stats.bind", "192.0.2.100:5672 is already bound by listen.rmq")]


# ------------------------------------------------------------------------------------------ durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5s", 5),
        ("200ms", 0.2),
        ("3h", 10800),
        ("1m", 60),
        ("1d", 86400),
        ("500us", 0.0005),
        (7, 7),
        (1.5, 1.5),
        ("0", None),
        (" 10 s ", 10),
        ("1.5s", 1.5),
        (0, 0),
    ],
)
def test_parse_duration(text: Any, seconds: float | None) -> None:
    if seconds is None:
        with pytest.raises(ValueError, match="has no unit"):
            parse_duration(text)
    else:
        assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "bad", ["5", "5sec", "1w", "-1s", -1, True, None, [], "s", float("inf"), float("nan")]
)
def test_parse_duration_rejects(bad: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("seconds", "text"), [(5, "5s"), (0.2, "200ms"), (10800, "3h"), (90, "90s"), (1e-6, "1us")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert C.format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


def test_format_duration_odd_values_and_toml_writer() -> None:
    assert C.format_duration(1.5e-7) == "1.5e-07s"
    with pytest.raises(TypeError):
        C._toml_value(object())


@pytest.mark.parametrize(
    ("text", "bind", "expected"),
    [
        ("192.0.2.1:80", False, ("192.0.2.1", 80)),
        ("rmq1:5672", False, ("rmq1", 5672)),
        ("[2001:db8::1]:5672", False, ("2001:db8::1", 5672)),
        ("*:5672", True, ("0.0.0.0", 5672)),
        (":1", True, ("0.0.0.0", 1)),
        ("[::]:5672", True, ("::", 5672)),
    ],
)
def test_parse_address(text: str, bind: bool, expected: tuple[str, int]) -> None:
    assert parse_address(text, bind=bind) == expected


@pytest.mark.parametrize(
    ("text", "bind", "msg"),
    [
        ("192.0.2.1", False, "has no port"),
        ("2001:db8::1:5672", False, "need brackets"),
        ("[192.0.2.1]:1", False, "not an IPv6"),
        ("[::1]5672", False, "are written"),
        ("rmq1:5672", True, "not an IP"),
        (":5672", False, "has no host"),
        ("192.0.2.300:1", False, "neither"),
        ("a_b c:1", False, "neither"),
        ("h:0", False, "1..65535"),
        ("h:x", False, "1..65535"),
        (5672, False, "host:port"),
    ],
)
def test_parse_address_rejects(text: Any, bind: bool, msg: str) -> None:
    with pytest.raises(ValueError, match=msg):
        parse_address(text, bind=bind)


# --------------------------------------------------------------------------------------------- errors


def test_errors_are_collected_with_paths() -> None:
    data = {
        "global": {"maxconn": 0, "foo": 1},
        "defaults": {"timeout-client": "5s", "timeout_server": "5000", "retries": -1},
        "listen": {
            "rabbitmq": {
                "bind": ["192.0.2.100:5672", "192.0.2.100"],
                "balanse": "leastconn",
                "server": [
                    {"name": "rmq1", "address": "192.0.2.11:5672"},
                    {"name": "rmq2", "address": "192.0.2.12:5672", "weight": 300},
                    {"name": "rmq1", "address": "192.0.2.13:99999", "check": {"type": "tcp", "path": "/"}},
                    {"address": "192.0.2.14:5672", "colour": "red"},
                    "rmq5",
                ],
            }
        },
        "frontend": {},
    }
    errs = errors_of(data)
    assert ("listen.rabbitmq.server[1].weight", "must be an integer 0..256") in errs
    expected_paths = {
        "frontend",
        "global.maxconn",
        "global.foo",
        "defaults.timeout-client",
        "defaults.timeout_server",
        "defaults.retries",
        "listen.rabbitmq.bind[1]",
        "listen.rabbitmq.balanse",
        "listen.rabbitmq.server[1].weight",
        "listen.rabbitmq.server[2].name",
        "listen.rabbitmq.server[2].address",
        "listen.rabbitmq.server[2].check.path",
        "listen.rabbitmq.server[3].name",
        "listen.rabbitmq.server[3].colour",
        "listen.rabbitmq.server[4]",
    }
    assert {p for p, _ in errs} == expected_paths
    rules = dict(errs)
    assert rules["defaults.timeout-client"] == 'unknown key (did you mean "timeout_client"?)'
    assert rules["listen.rabbitmq.balanse"] == 'unknown key (did you mean "balance"?)'
    assert "use [listen.NAME]" in rules["frontend"]
    assert "has no unit" in rules["defaults.timeout_server"]
    assert (
        rules["listen.rabbitmq.server[2].name"] == '"rmq1" is already used by another server of this listener'
    )


def test_config_error_text() -> None:
    e = ConfigError([("a.b", "must be x"), ("", "TOML syntax")], "lb.toml")
    assert e.lines() == ["a.b: must be x", "TOML syntax"]
    assert str(e) == "lb.toml: 2 errors\n  a.b: must be x\n  TOML syntax"


@pytest.mark.parametrize(
    ("listener", "path", "rule_part"),
    [
        ({"balance": "random"}, "listen.rmq.balance", 'one of "leastconn"'),
        ({"hash_type": "map-based"}, "listen.rmq.hash_type", '"consistent"'),
        ({"mode": "http"}, "listen.rmq.mode", '"tcp"'),
        ({"retries": True}, "listen.rmq.retries", "integer 0..100"),
        ({"redispatch": "yes"}, "listen.rmq.redispatch", "true, false or an integer"),
        ({"maxconn": -1}, "listen.rmq.maxconn", "integer 0.."),
        ({"backlog": 0}, "listen.rmq.backlog", "integer 1.."),
        ({"timeout_client": "3 hours"}, "listen.rmq.timeout_client", "must be a duration"),
        ({"timeout_server": "30d"}, "listen.rmq.timeout_server", "at most"),
        ({"source": "rmq1"}, "listen.rmq.source", "not an IP address"),
        ({"source": 5}, "listen.rmq.source", "IP address string"),
        ({"check": {"addr": 5}}, "listen.rmq.check.addr", "host name string"),
        ({"check": {"addr": "bad host"}}, "listen.rmq.check.addr", "neither"),
        ({"check": {"type": "http", "expect_status": []}}, "listen.rmq.check.expect_status", "a status"),
        ({"log_format": "clf"}, "listen.rmq.log_format", '"tcplog"'),
        ({"logasap": 1}, "listen.rmq.logasap", "true or false"),
        ({"bind": []}, "listen.rmq.bind", "non-empty list"),
        ({"bind": "rmq:5672"}, "listen.rmq.bind", "not an IP address"),
        ({"check": {"inter": 0}}, "listen.rmq.check.inter", "greater than 0"),
        ({"check": {"rise": 0}}, "listen.rmq.check.rise", "integer 1..1000"),
        ({"check": {"type": "ldap"}}, "listen.rmq.check.type", '"tcp", "amqp", "http"'),
        ({"check": {"type": "http", "path": "api"}}, "listen.rmq.check.path", "absolute URL path"),
        ({"check": {"type": "http", "expect_status": 99}}, "listen.rmq.check.expect_status", "status"),
        (
            {"check": {"type": "http", "expect_status": "500-200"}},
            "listen.rmq.check.expect_status",
            "low-high",
        ),
        ({"check": {"type": "http", "user": "u"}}, "listen.rmq.check", "user and password go together"),
        ({"check": {"type": "http", "host": "a\nb"}}, "listen.rmq.check.host", "CR, LF"),
        ({"check": {"intr": "1s"}}, "listen.rmq.check.intr", 'did you mean "inter"'),
        ({"check": {"on_error": "explode"}}, "listen.rmq.check.on_error", '"mark-down"'),
        ({"check": "tcp"}, "listen.rmq.check", "a table"),
        ({"tcpka": {"idle": "1.5s"}}, "listen.rmq.tcpka.idle", "whole number of seconds"),
        ({"tcpka": {"count": 0}}, "listen.rmq.tcpka.count", "integer 1..127"),
        ({"tcpka": {"client": True, "idle": 3}}, "listen.rmq.tcpka.idle", "inside them"),
        ({"tcpka": {"client": 3}}, "listen.rmq.tcpka.client", "true, false or a table"),
        ({"tcpka": "yes"}, "listen.rmq.tcpka", "true, false, a table"),
        ({"default_server": {"name": "x"}}, "listen.rmq.default_server.name", "is per server"),
        ({"default_server": {"check": {}}}, "listen.rmq.default_server.check", "listener's check table"),
        ({"default_server": {"weight": 257}}, "listen.rmq.default_server.weight", "0..256"),
        ({"default_server": 1}, "listen.rmq.default_server", "a table"),
        ({"server": {"name": "a"}}, "listen.rmq.server", "array of tables"),
        ({"server": [{"name": "a/b", "address": "h:1"}]}, "listen.rmq.server[0].name", "1..64 characters"),
        (
            {"server": [{"name": "a", "address": "h:1", "init_state": "half"}]},
            "listen.rmq.server[0].init_state",
            '"fully-up"',
        ),
        (
            {"server": [{"name": "a", "address": "h:1", "check": {"port": 0}}]},
            "listen.rmq.server[0].check.port",
            "1..65535",
        ),
        (
            {"server": [{"name": "a", "address": "h:1", "check": {"type": "http", "password": "p"}}]},
            "listen.rmq.server[0].check",
            "user and password go together",
        ),
    ],
)
def test_bad_values(listener: dict[str, Any], path: str, rule_part: str) -> None:
    errs = errors_of(minimal(**listener))
    assert [p for p, _ in errs] == [path], errs
    assert rule_part in errs[0][1]


def test_document_level_errors() -> None:
    assert errors_of({}) == [("listen", "at least one [listen.NAME] section is required")]
    assert errors_of({"listen": []})[0] == ("listen", "must be tables [listen.NAME]")
    assert errors_of({"listen": {"a b": {}}})[0][0] == 'listen."a b"'
    assert errors_of({"listen": {"x": 3}}) == [("listen.x", "must be a table")]
    assert errors_of({"listen": {"x": {}}}) == [("listen.x.bind", 'is required (e.g. ["192.0.2.100:5672"])')]
    assert errors_of({"global": [], "listen": {"x": {"bind": ":1"}}}) == [("global", "must be a table")]
    assert errors_of({"global": {"log": "kafka"}, "listen": {"x": {"bind": ":1"}}})[0][0] == "global.log"
    assert errors_of({"global": {"syslog_address": "nowhere"}, "listen": {"x": {"bind": ":1"}}})[0][0] == (
        "global.syslog_address"
    )
    g = parse(
        {"global": {"log": "syslog", "syslog_address": "192.0.2.1:514"}, "listen": {"x": {"bind": ":1"}}}
    )
    assert g.global_.syslog_address == "192.0.2.1:514"
    errs = errors_of({"listen": {"x": {"bind": ":1", "server": [{"name": "s"}]}}})
    assert errs == [("listen.x.server[0].address", 'is required (e.g. "192.0.2.11:5672")')]


def test_bind_and_server_not_in_defaults() -> None:
    data = minimal()
    data["defaults"]["bind"] = ":1"
    data["defaults"]["server"] = []
    assert errors_of(data) == [
        ("defaults.bind", "not allowed in [defaults]: set it in each [listen.NAME]"),
        ("defaults.server", "not allowed in [defaults]: set it in each [listen.NAME]"),
    ]


def test_duplicate_binds() -> None:
    data = minimal()
    data["listen"]["b"] = {"bind": ["192.0.2.100:5672"]}
    data["listen"]["c"] = {"bind": ["*:5672"]}
    errs = errors_of(data)
    assert errs == [
        ("listen.b.bind[0]", "192.0.2.100:5672 is already bound by listen.rmq"),
        ("listen.c.bind[0]", "0.0.0.0:5672 is already bound by listen.rmq"),
    ]


def test_http_keys_need_http_type() -> None:
    data = minimal(check={"type": "http", "path": "/x", "user": "u", "password": "p"})
    data["listen"]["rmq"]["server"] = [
        {"name": "a", "address": "192.0.2.11:5672", "check": {"type": "tcp"}},  # fine: keys inherited
        {"name": "b", "address": "192.0.2.12:5672", "check": {"type": "amqp", "host": "x"}},
    ]
    assert errors_of(data) == [
        ("listen.rmq.server[1].check.host", 'only applies to type = "http" (the check type here is "amqp")')
    ]


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[global\nmaxconn = 1\n")
    with pytest.raises(ConfigError, match="TOML syntax"):
        load(bad)
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load(bad)
    good = tmp_path / "lb.toml"
    good.write_text(ISSUE)
    assert load(good).source == str(good)


def test_warnings() -> None:
    data = minimal(
        redispatch=True,
        retries=0,
        maxconn=50,
        timeout_client="2h",
        server=[{"name": "a", "address": "h:1", "backup": True, "check": {"type": "amqp"}}],
    )
    data["global"] = {"maxconn": 10, "hard_stop_after": "10s"}
    data["listen"]["empty"] = {"bind": "192.0.2.100:1"}
    w = "\n".join(C.warnings(parse(data)))
    for part in (
        "redispatch: has no effect",
        "only backup servers",
        "above global.maxconn",
        "differs from timeout_server",
        "amqp checks are logged",
        "empty: no server",
    ):
        assert part in w
    assert "hard_stop_after" not in w


def test_helpers() -> None:
    assert C.effective_maxconn(100, 1024) == 100
    assert C.effective_maxconn(None, 1024) == 480
    assert C.effective_maxconn(None, 10) == 1
    # redispatch = true (-1): only the last retry; 1: every retry; 2: every 2nd; 0: never
    assert [C.redispatch_on_retry(r, 3, -1) for r in (1, 2, 3)] == [False, False, True]
    assert [C.redispatch_on_retry(r, 3, 1) for r in (1, 2, 3)] == [True, True, True]
    assert [C.redispatch_on_retry(r, 4, 2) for r in (1, 2, 3, 4)] == [False, True, False, True]
    assert [C.redispatch_on_retry(r, 3, -2) for r in (1, 2, 3)] == [False, True, False]
    assert not any(C.redispatch_on_retry(r, 3, 0) for r in (1, 2, 3))
    assert not C.redispatch_on_retry(4, 3, 1) and not C.redispatch_on_retry(0, 3, 1)


# ------------------------------------------------------------------------------ round trip (hypothesis)

pos_dur = st.one_of(
    st.integers(1, 86400), st.sampled_from(["5s", "200ms", "3h", "1m", "1d", "500us", "1.5s"])
)
dur = st.one_of(st.just(0), pos_dur)
opt = st.fixed_dictionaries

check_st = st.one_of(
    st.booleans(),
    opt(
        {},
        optional={
            "type": st.sampled_from(["tcp", "amqp"]),
            "inter": pos_dur,
            "fastinter": pos_dur,
            "downinter": pos_dur,
            "rise": st.integers(1, 10),
            "fall": st.integers(1, 10),
            "port": st.integers(1, 65535),
            "addr": st.sampled_from(["192.0.2.99", "rmq9", "2001:db8::9"]),
            "on_error": st.sampled_from(C.ON_ERRORS),
            "error_limit": st.integers(1, 10),
        },
    ),
    opt(
        {"type": st.just("http")},
        optional={
            "path": st.sampled_from(["/", "/api/health/checks/ready-to-serve-clients"]),
            "method": st.sampled_from(["GET", "HEAD"]),
            "host": st.just("rmq.example"),
            "expect_status": st.one_of(st.integers(100, 599), st.just(["2xx", 204]), st.just("200-299")),
            "inter": pos_dur,
        },
    ),
    opt(
        {
            "type": st.just("http"),
            "user": st.just("mon"),
            "password": st.text(max_size=5).filter(lambda s: not any(c in s for c in "\r\n\0")),
        }
    ),
)
ka_side = st.one_of(
    st.booleans(),
    opt({}, optional={"idle": st.integers(1, 600), "interval": st.just("10s"), "count": st.integers(1, 9)}),
)
tcpka_st = st.one_of(ka_side, opt({}, optional={"client": ka_side, "server": ka_side}).filter(bool))
server_opts = {
    "weight": st.integers(0, 256),
    "backup": st.booleans(),
    "maxconn": st.integers(0, 1000),
    "maxqueue": st.integers(0, 1000),
    "init_state": st.sampled_from(C.INIT_STATES),
    "disabled": st.booleans(),
    "source": st.sampled_from(["192.0.2.21", "192.0.2.22"]),
}
listener_opts = {
    "balance": st.sampled_from(C.BALANCES),
    "hash_type": st.just("consistent"),
    "mode": st.just("tcp"),
    "maxconn": st.integers(0, 10**5),
    "backlog": st.integers(1, 10**4),
    **{k: dur for k in C._TIMEOUT_KEYS},
    "retries": st.integers(0, 10),
    "redispatch": st.one_of(st.booleans(), st.integers(-3, 3)),
    "allbackups": st.booleans(),
    "nodelay": st.booleans(),
    "source": st.just("192.0.2.21"),
    "log": st.booleans(),
    "log_format": st.sampled_from(C.LOG_FORMATS),
    "logasap": st.booleans(),
    "dontlognull": st.booleans(),
    "check": check_st,
    "tcpka": tcpka_st,
    "default_server": opt({}, optional=server_opts),
}


@st.composite
def raw_configs(draw: st.DrawFn) -> dict[str, Any]:
    data: dict[str, Any] = {}
    g = draw(
        opt(
            {},
            optional={
                "maxconn": st.integers(1, 10**6),
                "hard_stop_after": dur,
                "log": st.sampled_from(C.LOG_TARGETS),
                "log_tag": st.just("lb1"),
                "syslog_address": st.sampled_from(["/dev/log", "192.0.2.1:514"]),
                "spread_checks": st.integers(0, 50),
            },
        )
    )
    if draw(st.booleans()) or g:
        data["global"] = g
    d = draw(opt({}, optional=listener_opts))
    if draw(st.booleans()) or d:
        data["defaults"] = d
    listen: dict[str, Any] = {}
    for i in range(draw(st.integers(1, 3))):
        li = draw(opt({}, optional=listener_opts))
        li["bind"] = draw(
            st.sampled_from(
                [f"192.0.2.100:{5672 + i}", [f"192.0.2.100:{5672 + i}", f"[2001:db8::100]:{5672 + i}"]]
            )
        )
        n = draw(st.integers(0, 4))
        servers = []
        for j in range(n):
            s = draw(opt({}, optional={**server_opts, "check": check_st}))
            s["name"] = f"rmq{j}"
            s["address"] = draw(st.sampled_from([f"192.0.2.{11 + j}:5672", f"rmq{j}:5672"]))
            servers.append(s)
        if draw(st.booleans()) or servers:
            li["server"] = servers
        listen[f"l{i}"] = li
    data["listen"] = listen
    if draw(st.booleans()):
        stats = draw(
            opt(
                {"bind": st.sampled_from(["127.0.0.1:8404", "0.0.0.0:8404"])},
                optional={
                    "admin": st.booleans(),
                    "refresh": pos_dur,
                    "uri": st.sampled_from(["/stats", "/", "/lb/stats"]),
                    "auth": st.lists(st.sampled_from(["admin:pw", "ro:a:b", 'q"u:p\\w']), unique=True),
                    "admin_allow_remote": st.booleans(),
                },
            )
        )
        if stats.get("admin"):  # admin needs auth, and admin_allow_remote off loopback
            stats.setdefault("auth", ["admin:pw"])
            stats["auth"] = stats["auth"] or ["admin:pw"]
            if stats["bind"].startswith("0."):
                stats["admin_allow_remote"] = True
        data["stats"] = stats
    return data


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_configs())
def test_round_trip(data: dict[str, Any]) -> None:
    cfg = parse(data)
    assert parse(C.dump(cfg, secrets=True)) == cfg
    text = C.to_toml(cfg, secrets=True)
    assert loads(text) == cfg
    assert tomllib.loads(text) == C.dump(cfg, secrets=True)
    # only passwords (stats auth, http checks) are hidden, and every one of them
    shown = C.to_toml(cfg)
    checks = [li.check for li in cfg.listeners] + [s.check for li in cfg.listeners for s in li.servers]
    secrets = [u.password for u in cfg.stats.auth] if cfg.stats is not None else []
    http = [c.http for c in checks if c.enabled and c.type == "http"]
    secrets += [h.password for h in http if h.password is not None]
    assert (C.HIDDEN_PASSWORD in shown) == bool(secrets)
    if not secrets:
        assert C.dump(cfg) == C.dump(cfg, secrets=True)
    C.warnings(cfg)  # never raises


junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True),
    st.text(max_size=12),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
    st.sampled_from(["5s", "-1s", "1e9d", ":0", "[::1]:1", "0.0.0.0:5672", "http", "up", "consistent"]),
)


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw_configs(), st.data())
def test_mutations_give_config_or_config_error(data: dict[str, Any], draw: st.DataObject) -> None:
    mutated = copy.deepcopy(data)
    paths = _paths(mutated)
    for _ in range(draw.draw(st.integers(1, 3))):
        path = draw.draw(st.sampled_from(paths))
        parent = mutated
        try:
            for key in path[:-1]:
                parent = parent[key]
            parent[path[-1]] = draw.draw(junk)
        except (KeyError, IndexError, TypeError):
            continue
    try:
        cfg = parse(mutated)
    except ConfigError as e:
        assert e.errors and all(isinstance(p, str) and rule for p, rule in e.errors)
    else:
        assert parse(C.dump(cfg, secrets=True)) == cfg
