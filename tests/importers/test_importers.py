"""`vrrpd import` and `tcplb import`: the corpus imports, the output passes --check, and what the old daemons
did with each keyword is what the output says (pure: no namespaces, no daemons; the real daemons check the
same corpus in test_daemons_accept.py)."""

from __future__ import annotations

import io
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from rmqfd import haconf, kaconf
from rmqfd.migrate import Report
from tcplb import importer as tcplb_importer
from tcplb.config import loads as tcplb_loads
from vrrpd import importer as vrrpd_importer
from vrrpd.config import parse as vrrpd_parse

CORPUS = Path(__file__).parent / "corpus"
CONFIG_ID = "lbA"

# file -> exit status of the import without --force (0 clean, 1 unsupported settings, 2 errors)
KEEPALIVED = {
    "classic_master.conf": 0,
    "classic_backup.conf": 0,
    "oneline_crlf.conf": 0,
    "include_defs.conf": 0,
    "unicast_multi.conf": 0,
    "old_1x.conf": 0,
    "unsupported.conf": 1,
    "bad/priority_300.conf": 2,
    "bad/vrid_0.conf": 2,
}
LVS = {"lvs_dr_tcp.conf": 0, "lvs_nat_http_old.conf": 0, "lvs_rr_simple.conf": 0}
HAPROXY = {
    "rabbitmq_classic.cfg": 0,
    "frontend_backend.cfg": 0,
    "old_1x.cfg": 0,
    "acl_routing.cfg": 1,
    "proxy_protocol.cfg": 0,
    "bad/unknown_balance.cfg": 2,
}


def test_manifest_lists_the_whole_corpus() -> None:
    def files(d: str, pat: str) -> set[str]:
        return {str(p.relative_to(CORPUS / d)) for p in (CORPUS / d).rglob(pat) if "include.d" not in p.parts}

    assert files("keepalived", "*.conf") == set(KEEPALIVED)
    assert files("lvs", "*.conf") == set(LVS)
    assert files("haproxy", "*.cfg") == set(HAPROXY)


def ka_import(name: str) -> tuple[str | None, Report]:
    doc = kaconf.parse_file(str(CORPUS / "keepalived" / name), config_id=CONFIG_ID)
    return vrrpd_importer.convert(doc)


def lvs_import(name: str) -> tuple[str | None, Report]:
    return tcplb_importer.convert_lvs(kaconf.parse_file(str(CORPUS / "lvs" / name)))


def ha_import(name: str) -> tuple[str | None, Report]:
    return tcplb_importer.convert_haproxy(haconf.parse_file(str(CORPUS / "haproxy" / name), environ={}))


def expected_status(text: str | None, rep: Report) -> int:
    if text is None or rep.errors:
        return 2
    return 1 if rep.blocking else 0


def cites_lines(text: str, source: str) -> None:
    """Every key line of the output ends with a comment citing file:line of the source."""
    for line in text.splitlines():
        if not line or line.startswith("#") or line.startswith("[") or line == "]":
            continue
        assert "# " in line, line
        assert f"{source}:" in line.rsplit("# ", 1)[1] or ".inc:" in line.rsplit("# ", 1)[1], line


@pytest.mark.parametrize("name", sorted(KEEPALIVED))
def test_keepalived_corpus_imports_and_passes_vrrpd_check(name: str) -> None:
    text, rep = ka_import(name)
    assert expected_status(text, rep) == KEEPALIVED[name], rep.lines()
    for f in rep.findings:
        assert f.where.rsplit(":", 1)[1].isdigit() and int(f.where.rsplit(":", 1)[1]) >= 1, f
    if text is None:
        assert rep.errors
        return
    cfg = vrrpd_parse(tomllib.loads(text))
    assert cfg.instances
    assert vrrpd_importer.check_text(text) == []
    cites_lines(text, name.rsplit("/", 1)[-1])


@pytest.mark.parametrize("name", sorted(LVS))
def test_lvs_corpus_imports_and_passes_tcplb_check(name: str) -> None:
    text, rep = lvs_import(name)
    assert expected_status(text, rep) == LVS[name], rep.lines()
    assert text is not None
    cfg = tcplb_loads(text)
    assert cfg.listeners
    cites_lines(text, name)


@pytest.mark.parametrize("name", sorted(HAPROXY))
def test_haproxy_corpus_imports_and_passes_tcplb_check(name: str) -> None:
    text, rep = ha_import(name)
    assert expected_status(text, rep) == HAPROXY[name], rep.lines()
    if text is None:
        assert rep.errors
        return
    cfg = tcplb_loads(text)
    assert cfg.listeners
    cites_lines(text, name.rsplit("/", 1)[-1])


# ------------------------------------------------------------------------------------------- keepalived


def vrrpd_data(name: str) -> dict[str, Any]:
    text, rep = ka_import(name)
    assert text is not None, rep.lines()
    return tomllib.loads(text)


def messages(rep: Report, kind: str) -> str:
    return "\n".join(f.line() for f in rep.findings if f.kind == kind)


def ka_text(text: str) -> tuple[str | None, Report]:
    """``vrrpd import`` of keepalived.conf ``text`` (named k.conf, config id x, no includes)."""
    return vrrpd_importer.convert(kaconf.parse_text(text, "k.conf", config_id="x", includes=False))


def ka_data(text: str) -> tuple[dict[str, Any], Report]:
    """:func:`ka_text`, which must succeed, as the TOML it wrote."""
    out, rep = ka_text(text)
    assert out is not None, rep.lines()
    return tomllib.loads(out), rep


def test_classic_master_keeps_names_and_state() -> None:
    d = vrrpd_data("classic_master.conf")
    (inst,) = d["vrrp_instance"]
    assert inst["name"] == "VI_1" and inst["state"] == "MASTER" and inst["priority"] == 101
    assert inst["virtual_ipaddress"] == [{"address": "192.0.2.100/24", "dev": "eth0", "label": "eth0:vip"}]
    assert inst["notify_master"] == ["/etc/keepalived/notify.sh", "MASTER"]
    assert d["vrrp_script"]["chk_haproxy"]["script"] == ["/usr/bin/killall", "-0", "haproxy"]
    assert d["global"] == {"router_id": "LVS_DEVEL", "script_user": "root", "enable_script_security": True}


def test_old_release_keywords_import_with_their_modern_names() -> None:
    text, rep = ka_import("old_1x.conf")
    assert text is not None
    d = tomllib.loads(text)
    (inst,) = d["vrrp_instance"]
    warn = messages(rep, "warning")
    # auth_pass: keepalived sends the first 8 bytes
    assert inst["auth_pass"] == "averylon" and "only the first 8" in warn
    # state MASTER clears nopreempt (keepalived vrrp_complete_instance)
    assert inst["nopreempt"] is False and "nopreempt does not work with state MASTER" in warn
    assert inst["garp_master_repeat"] == 1 and "garp_master_repeat 0" in warn
    assert d["vrrp_script"]["check_haproxy"]["interval"] == 1 and "interval 0" in warn
    assert d["global"]["router_id"] == "LB_OLD" and "lvs_id" in warn
    assert "vrrp_garp_interval 0" in warn
    assert inst["virtual_ipaddress"] == ["192.0.2.120/32"]
    # a shell command line: split into argv, with the warning naming /bin/sh -c
    assert d["vrrp_script"]["check_haproxy"]["script"][:3] == ["killall", "-0", "haproxy"]
    assert "old_1x.conf:12: warning: script" in warn and '["/bin/sh", "-c",' in warn
    # an explicit sh -c is already an argv: no warning for it
    assert inst["notify_master"] == ["/bin/sh", "-c", "echo master > /run/vrrp.state"]
    assert "old_1x.conf:37" not in warn
    assert "notification_email" in messages(rep, "ignored")


def test_priority_and_nopreempt_follow_keepalived_start_up_rules() -> None:
    def inst(body: str) -> tuple[dict[str, Any], Report]:
        d, rep = ka_data(
            "vrrp_instance V { interface eth0\nvirtual_router_id 5\nvirtual_ipaddress { 192.0.2.9/24 }\n"
            + body
            + "\n}\n"
        )
        return d["vrrp_instance"][0], rep

    i, _ = inst("state MASTER")
    assert i["priority"] == 255 and i["state"] == "MASTER"  # no priority + MASTER = the address owner
    i, _ = inst("state BACKUP")
    assert i["priority"] == 100
    i, _ = inst("")
    assert i["priority"] == 100 and "state" not in i
    i, rep = inst("priority 255\nnopreempt")
    assert i["nopreempt"] is False and "priority 255" in messages(rep, "warning")
    i, rep = inst("priority 50\nnopreempt\npreempt_delay 10")
    assert i["nopreempt"] is True and "preempt_delay" not in i
    i, _ = inst("priority 50\npreempt_delay 2.5")
    assert i["preempt_delay"] == 2.5 and i["nopreempt"] is False
    i, rep = inst("state MASTER\npriority 150\npreempt_delay 10")
    assert "preempt_delay" not in i and "preempt_delay does not work with state MASTER" in messages(
        rep, "warning"
    )


def test_values_are_checked_as_keepalived_checks_them() -> None:
    for body, where, what in (
        ("priority 300", "k.conf:3", "priority '300'"),
        ("priority 0", "k.conf:3", "priority '0'"),
        ("advert_int x", "k.conf:3", "advert_int 'x'"),
        ("state EQUAL", "k.conf:3", "state 'EQUAL'"),
        ("virtual_ipaddress { 192.0.2.300/24 }", "k.conf:3", "not an IP address"),
        ("track_script { chk weight 300 }", "k.conf:3", "weight '300'"),
    ):
        text, rep = ka_text(
            f"vrrp_script chk {{\n script /bin/true }}\nvrrp_instance V {{ interface eth0\n{body}\n"
            "virtual_router_id 5\n}\n".replace("{\n script", "{\nscript")
        )
        assert text is None, body
        assert any(
            f.where == where.replace(":3", f":{f.where.rsplit(':', 1)[1]}") and what in f.message
            for f in rep.errors
        ), (body, rep.lines())
        assert all(f.where.startswith("k.conf:") for f in rep.errors)


def test_include_definitions_and_conditional_lines() -> None:
    d = vrrpd_data("include_defs.conf")
    (inst,) = d["vrrp_instance"]
    assert inst["name"] == "VI_INC" and inst["interface"] == "eth0"
    assert inst["priority"] == 150  # @lbA line kept, @^lbA dropped
    assert inst["virtual_ipaddress"] == ["192.0.2.130/24", {"address": "192.0.2.131/24", "dev": "eth0"}]
    assert d["global"]["router_id"] == "lbA"
    assert d["vrrp_script"]["chk_port"]["script"] == ["/usr/bin/test", "-e", "/"]
    doc = kaconf.parse_file(str(CORPUS / "keepalived" / "include_defs.conf"), config_id="lbB")
    text, _ = vrrpd_importer.convert(doc)
    assert text is not None
    other = tomllib.loads(text)
    assert other["vrrp_instance"][0]["priority"] == 100 and other["global"]["router_id"] == "lbB"
    assert "20-instance.inc:" in text  # entries cite the included file's lines


def test_one_line_blocks_crlf_and_utf8_comment() -> None:
    d = vrrpd_data("oneline_crlf.conf")
    (inst,) = d["vrrp_instance"]
    assert inst["name"] == "AMQP_VIP" and inst["virtual_router_id"] == 61 and inst["nopreempt"] is True
    assert inst["virtual_ipaddress"] == [
        {"address": "192.0.2.110/24", "dev": "eth0", "label": "eth0:amqp"},
        "192.0.2.111/24",
    ]
    assert inst["track_script"] == [{"name": "chk_amqp", "weight": -30}]
    assert inst["track_interface"] == ["eth1"]
    assert d["vrrp_script"]["chk_amqp"] == {"script": ["/usr/bin/test", "-e", "/"], "interval": 2}


def test_unicast_and_global_garp_defaults() -> None:
    d = vrrpd_data("unicast_multi.conf")
    a, b = d["vrrp_instance"]
    assert a["unicast_peer"] == ["192.0.2.22", "192.0.2.23"] and a["unicast_src_ip"] == "192.0.2.21"
    assert a["garp_master_repeat"] == 3 and a["garp_master_refresh"] == 30  # from global_defs
    assert a["track_interface"] == [{"name": "eth1", "weight": -50}]
    assert a["track_script"] == [{"name": "chk_a", "weight": 20}]
    assert b["priority"] == 255 and b["mcast_src_ip"] == "192.0.2.21"


def test_unsupported_lines_are_reported_one_each_with_file_and_line() -> None:
    text, rep = ka_import("unsupported.conf")
    assert text is not None
    got = {f.where.rsplit("/", 1)[-1] for f in rep.blocking}
    assert got == {"unsupported.conf:2", "unsupported.conf:8", "unsupported.conf:14"}
    assert "use_vmac" in messages(rep, "unsupported")


def run_cli(mod: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", mod, *args], capture_output=True, text=True, timeout=60, cwd=cwd
    )


def test_vrrpd_import_cli_exit_codes_and_output(tmp_path: Path) -> None:
    out = tmp_path / "node.toml"
    r = run_cli(
        "vrrpd", "import", "-i", CONFIG_ID, str(CORPUS / "keepalived" / "unsupported.conf"), "-o", str(out)
    )
    assert r.returncode == 1 and "--force" in r.stderr and out.exists()
    assert "unsupported.conf:14: unsupported: use_vmac" in r.stderr
    out.unlink()
    r = run_cli("vrrpd", "import", "--force", str(CORPUS / "keepalived" / "unsupported.conf"), "-o", str(out))
    assert r.returncode == 0 and out.exists()
    chk = run_cli("vrrpd", "-c", str(out), "--check")
    assert chk.returncode == 0, chk.stderr
    r = run_cli(
        "vrrpd", "import", str(CORPUS / "keepalived" / "bad" / "priority_300.conf"), "-o", str(tmp_path / "x")
    )
    assert r.returncode == 2 and "priority_300.conf:5: error: priority '300'" in r.stderr
    assert not (tmp_path / "x").exists()
    r = run_cli("vrrpd", "import", str(CORPUS / "keepalived" / "classic_master.conf"))
    assert r.returncode == 0 and r.stdout.startswith("# vrrpd configuration imported")
    (tmp_path / "broken.conf").write_text('vrrp_instance X {\n notify "/bin/x\n}\n')
    r = run_cli("vrrpd", "import", str(tmp_path / "broken.conf"))
    assert r.returncode == 2 and "broken.conf:2: unmatched quote" in r.stderr and "Traceback" not in r.stderr


def test_tcplb_import_cli(tmp_path: Path) -> None:
    out = tmp_path / "lb.toml"
    r = run_cli("tcplb", "import", str(CORPUS / "haproxy" / "acl_routing.cfg"), "-o", str(out))
    assert r.returncode == 1 and "acl_routing.cfg:11: unsupported: use_backend" in r.stderr
    r = run_cli("tcplb", "import", "--force", str(CORPUS / "haproxy" / "acl_routing.cfg"), "-o", str(out))
    assert r.returncode == 0
    chk = run_cli("tcplb", "-c", str(out), "--check")
    assert chk.returncode == 0, chk.stderr
    r = run_cli("tcplb", "import", "--keepalived", str(CORPUS / "lvs" / "lvs_dr_tcp.conf"), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert run_cli("tcplb", "-c", str(out), "--check").returncode == 0
    r = run_cli("tcplb", "import", str(CORPUS / "haproxy" / "bad" / "unknown_balance.cfg"))
    assert (
        r.returncode == 2 and "unknown_balance.cfg:4: error: unknown balance algorithm 'fastest'" in r.stderr
    )


def test_vrrpd_config_flag_still_works(tmp_path: Path) -> None:
    r = run_cli("vrrpd", "-c", str(Path(__file__).parents[2] / "examples" / "node.toml"), "--check")
    assert r.returncode == 0, r.stderr


# ------------------------------------------------------------------------------------------- HAProxy


def tcplb_data(name: str) -> tuple[dict[str, Any], Report]:
    text, rep = ha_import(name)
    assert text is not None, rep.lines()
    return tomllib.loads(text), rep


def test_haproxy_defaults_become_explicit_values() -> None:
    d, rep = tcplb_data("rabbitmq_classic.cfg")
    li = d["listen"]["rabbitmq"]
    assert li["balance"] == "roundrobin" and li["timeout_connect"] == "5s"  # "5000": no unit = ms
    assert li["retries"] == 3 and li["redispatch"] is True and li["tcpka"] == {"client": True, "server": True}
    assert li["check"] == {"type": "tcp", "on_error": "ignore", "inter": "5s", "rise": 2, "fall": 3}
    assert [s["name"] for s in li["server"]] == ["rmq1", "rmq2", "rmq3"] and li["server"][2]["backup"] is True
    assert d["stats"] == {
        "bind": "127.0.0.1:8404",
        "uri": "/stats",
        "auth": ["admin:secret"],
        "refresh": "10s",
        "admin": True,
    }
    assert d["global"] == {"log": "syslog", "syslog_address": "/dev/log", "maxconn": 4096}
    assert "stats socket" in messages(rep, "warning")


def test_haproxy_frontend_backend_and_named_defaults() -> None:
    d, rep = tcplb_data("frontend_backend.cfg")
    amqp = d["listen"]["amqp"]
    assert amqp["bind"] == ["192.0.2.100:5672", "192.0.2.101:5672"] and amqp["maxconn"] == 8000
    assert amqp["balance"] == "leastconn" and amqp["timeout_client_fin"] == "30s"
    assert amqp["check"]["type"] == "http" and amqp["check"]["port"] == 15672
    assert amqp["check"]["path"] == "/api/health/checks/ready-to-serve-clients"
    assert amqp["check"]["expect_status"] == ["200-200"]
    assert (amqp["check"]["inter"], amqp["check"]["fastinter"], amqp["check"]["downinter"]) == (
        "3s",
        "1s",
        "5s",
    )
    assert [s["name"] for s in amqp["server"]] == ["rmq1", "rmq2", "rmq3"]
    assert amqp["server"][2]["disabled"] is True and amqp["server"][1]["maxconn"] == 3000
    mgmt = d["listen"]["management"]
    assert mgmt["balance"] == "source" and [s["address"] for s in mgmt["server"]] == [
        "192.0.2.11:15672",
        "192.0.2.12:15672",
    ]
    assert d["stats"]["uri"] == "/stats" and "haproxy?stats" in messages(rep, "warning")
    assert d["global"]["log"] == "stdout" and d["global"]["hard_stop_after"] == "30s"


def test_haproxy_1x_keywords() -> None:
    d, rep = tcplb_data("old_1x.cfg")
    li = d["listen"]["rabbitmq_cluster"]
    assert li["bind"] == ["0.0.0.0:5672"]
    assert (li["timeout_connect"], li["timeout_client"], li["timeout_server"]) == ("5s", "50s", "50s")
    assert li["check"]["inter"] == "2s" and li["log"] is False
    warn = messages(rep, "warning")
    for word in ("contimeout", "clitimeout", "srvtimeout", "nbproc", "address on the listen line"):
        assert word in warn, word
    adm = d["listen"]["rabbitmq_admin"]["check"]
    assert (adm["type"], adm["path"], adm["host"], adm["user"], adm["password"]) == (
        "http",
        "/api/aliveness-test/%2F",
        "localhost",
        "guest",
        "guest",
    )


def test_haproxy_unsupported_routing_and_http() -> None:
    d, rep = tcplb_data("acl_routing.cfg")
    assert list(d["listen"]) == ["mixed"]
    assert [s["name"] for s in d["listen"]["mixed"]["server"]] == ["rmq1", "rmq2"]
    lines = [f.where.rsplit("/", 1)[-1] for f in rep.blocking]
    assert lines == ["acl_routing.cfg:11", "acl_routing.cfg:13", "acl_routing.cfg:23"]
    assert d["listen"]["mixed"]["server"][1]["send_proxy"] == "v1"  # send-proxy (acl_routing.cfg:21) maps


def test_haproxy_servers_without_check_and_observe() -> None:
    cfg = (
        "defaults\n mode tcp\n timeout connect 1s\n timeout client 1m\n timeout server 1m\n"
        "listen a\n bind :5672\n server x 192.0.2.11 check observe layer4\n server y 192.0.2.12:5672\n"
    )
    text, rep = tcplb_importer.convert_haproxy(haconf.parse_text(cfg, "h.cfg"))
    assert text is not None, rep.lines()
    li = tomllib.loads(text)["listen"]["a"]
    x, y = li["server"]
    assert x["address"] == "192.0.2.11:5672" and "no port" in messages(rep, "warning")
    assert y["check"] is False
    cfg2 = tcplb_loads(text)
    cx = cfg2.listener("a").server("x").check
    assert (cx.on_error, cx.error_limit) == ("fail-check", 10)  # HAProxy's on-error default with observe
    assert not cfg2.listener("a").server("y").check.enabled
    cfg3 = tcplb_loads(
        tcplb_importer.convert_haproxy(haconf.parse_text(cfg.replace(" observe layer4", ""), "h.cfg"))[0]
        or ""
    )
    assert cfg3.listener("a").server("x").check.on_error == "ignore"  # no observe: live errors do not count


def test_haproxy_values_checked() -> None:
    for line, what in (
        ("balance fastest", "unknown balance"),
        ("timeout connect 5 s", "timeout"),
        ("server x 192.0.2.11:70000 check", "bad port"),
        ("server x 192.0.2.11:5672 weight 300", "weight '300'"),
        ("server x 192.0.2.11:5672 check rise 0", "rise '0'"),
    ):
        text, rep = tcplb_importer.convert_haproxy(
            haconf.parse_text(f"listen a\n bind :1\n {line}\n", "h.cfg")
        )
        assert text is None and any(f.where == "h.cfg:3" and what in f.message for f in rep.errors), (
            line,
            rep.lines(),
        )


HEAD = (
    "defaults\n mode tcp\n timeout connect 1s\n timeout client 1m\n timeout server 1m\n"
    "listen a\n bind :5672\n"
)


def ha_text(body: str) -> tuple[str | None, Report]:
    """Import HEAD + body as h.cfg (the listener's lines start at h.cfg:8)."""
    return tcplb_importer.convert_haproxy(haconf.parse_text(HEAD + body, "h.cfg"))


def ha_loaded(body: str) -> tuple[Any, Report]:
    text, rep = ha_text(body)
    assert text is not None, rep.lines()
    assert tcplb_importer.check_text(text) == [], text
    return tcplb_loads(text).listener("a"), rep


def test_haproxy_proxy_protocol_corpus() -> None:
    d, rep = tcplb_data("proxy_protocol.cfg")
    li = d["listen"]["rabbitmq"]
    assert li["default_server"] == {
        "slowstart": "1m",
        "send_proxy": "v2",
        "on_marked_down": "shutdown-sessions",
    }
    cfg = tcplb_loads(ha_import("proxy_protocol.cfg")[0] or "")
    a = cfg.listener("rabbitmq")
    assert [(s.slowstart, s.send_proxy, s.on_marked_down) for s in a.servers] == [
        (60.0, "v2", "shutdown-sessions"),
        (120.0, "v2", "shutdown-sessions"),
        (60.0, "v1", "shutdown-sessions"),  # no-send-proxy-v2 send-proxy
    ]
    b = cfg.listener("rabbitmq_plain")  # its default-server clears slowstart and send-proxy-v2
    assert [(s.slowstart, s.send_proxy, s.on_marked_down) for s in b.servers] == [
        (0.0, "none", "shutdown-sessions"),
        (0.0, "v1", "shutdown-sessions"),
    ]
    assert not rep.blocking, rep.lines()  # check-send-proxy with send-proxy-v2 and no check port: mapped


def test_haproxy_slowstart() -> None:
    li, rep = ha_loaded(
        " default-server slowstart 30s\n"
        " server x 192.0.2.11:5672 check\n"
        " server y 192.0.2.12:5672 check slowstart 1500\n"  # no unit: milliseconds
        " server z 192.0.2.13:5672 check slowstart 0\n"
    )
    assert [s.slowstart for s in li.servers] == [30.0, 1.5, 0.0]
    assert not rep.findings, rep.lines()
    li, rep = ha_loaded(" server x 192.0.2.11:5672 check slowstart 2d\n")
    assert li.server("x").slowstart == 86400.0
    assert [f.where for f in rep.blocking] == ["h.cfg:8"] and "at most 1d" in rep.blocking[0].message
    text, rep = ha_text(" server x 192.0.2.11:5672 check slowstart 5x\n")
    assert text is None and [f.where for f in rep.errors] == ["h.cfg:8"], rep.lines()


def test_haproxy_send_proxy() -> None:
    li, rep = ha_loaded(
        " default-server send-proxy\n"
        " server v1 192.0.2.11:5672 check\n"
        " server v2 192.0.2.12:5672 check send-proxy-v2\n"  # v2 wins over the default's v1
        " server off 192.0.2.13:5672 check no-send-proxy\n"
        " server both 192.0.2.14:5672 check send-proxy-v2 send-proxy\n"
    )
    assert [s.send_proxy for s in li.servers] == ["v1", "v2", "none", "v2"]
    assert not rep.findings, rep.lines()
    li, rep = ha_loaded(
        " default-server send-proxy-v2\n"
        " server keep 192.0.2.11:5672 no-send-proxy\n"  # clears v1 only: still v2, as in HAProxy
        " server off 192.0.2.12:5672 no-send-proxy-v2\n"
    )
    assert [s.send_proxy for s in li.servers] == ["v2", "none"]
    li, rep = ha_loaded(" server x 192.0.2.11:5672 check send-proxy-v2-ssl-cn\n")
    assert li.server("x").send_proxy == "v2"
    assert [f.where for f in rep.blocking] == ["h.cfg:8"] and "SSL TLVs" in rep.blocking[0].message


def test_haproxy_on_marked_down_and_up() -> None:
    li, rep = ha_loaded(
        " default-server on-marked-down shutdown-sessions\n"
        " server x 192.0.2.11:5672 check\n"
        " server y 192.0.2.12:5672 check on-marked-up shutdown-backup-sessions backup\n"
    )
    assert [s.on_marked_down for s in li.servers] == ["shutdown-sessions", "shutdown-sessions"]
    assert li.server("y").backup  # the word after on-marked-up is its argument, not an option
    assert [(f.kind, f.where) for f in rep.findings] == [("unsupported", "h.cfg:10")], rep.lines()
    assert "shutdown-backup-sessions" in rep.findings[0].message
    for line in (
        " server x 192.0.2.11:5672 on-marked-down shutdown-backup-sessions\n",
        " server x 192.0.2.11:5672 on-marked-up shutdown-sessions\n",
    ):
        text, rep = ha_text(line)
        assert text is None and [f.where for f in rep.errors] == ["h.cfg:8"], rep.lines()


def test_haproxy_check_send_proxy() -> None:
    # redundant in tcplb: a send-proxy server's checks on the traffic port carry the header already
    li, rep = ha_loaded(" server x 192.0.2.11:5672 check send-proxy-v2 check-send-proxy\n")
    assert li.server("x").send_proxy == "v2" and not rep.findings, rep.lines()
    # no check: nothing to say
    _, rep = ha_loaded(" server x 192.0.2.11:5672 check-send-proxy\n")
    assert not rep.findings, rep.lines()
    # HAProxy sends the header on these checks, tcplb cannot: one line per HAProxy line
    li, rep = ha_loaded(
        " default-server check-send-proxy\n"
        " server x 192.0.2.11:5672 check\n"
        " server y 192.0.2.12:5672 check\n"
        " server z 192.0.2.13:5672 check send-proxy port 15672\n"
        " server ok 192.0.2.14:5672 check send-proxy\n"
        " server off 192.0.2.15:5672 check no-check-send-proxy\n"
    )
    assert [s.send_proxy for s in li.servers] == ["none", "none", "v1", "v1", "none"]
    assert [(f.kind, f.where) for f in rep.findings] == [("unsupported", "h.cfg:8")], rep.lines()
    msg = rep.findings[0].message
    assert "x (no send-proxy), y (no send-proxy), z (check port)" in msg and "ok" not in msg.split("of ")[1]


# ------------------------------------------------------------------------------------------- LVS


def test_lvs_mapping() -> None:
    text, rep = lvs_import("lvs_dr_tcp.conf")
    assert text is not None
    li = tomllib.loads(text)["listen"]["vs_192.0.2.200_5672"]
    assert li["bind"] == ["192.0.2.200:5672"] and li["balance"] == "source"  # persistence_timeout
    assert li["check"] == {
        "type": "tcp",
        "inter": "3s",
        "fastinter": "1s",
        "downinter": "3s",
        "rise": 1,
        "fall": 3,
        "on_error": "ignore",
    }  # retry 2: DOWN after 3 failures
    assert li["timeout_check"] == "2s" and li["timeout_connect"] == "2s"
    names = [(s["name"], s.get("weight"), s.get("backup", False)) for s in li["server"]]
    assert names == [
        ("192.0.2.11:5672", 3, False),
        ("192.0.2.12:5672", 1, False),
        ("sorry_192.0.2.13:5672", None, True),
    ]
    warn = messages(rep, "warning")
    assert "arp_ignore" in warn and "persistence_timeout 50" in warn
    text, rep = lvs_import("lvs_nat_http_old.conf")
    assert text is not None
    li = tomllib.loads(text)["listen"]["vs_192.0.2.201_15672"]
    assert li["balance"] == "leastconn" and li["check"]["type"] == "http"
    assert li["check"]["path"] == "/api/health/checks/alarms" and li["check"]["fall"] == 3
    warn = messages(rep, "warning")
    assert "nb_get_retry" in warn and "defaults to UDP" in warn and "default gateway" in warn


def test_lvs_rr_ignores_weights() -> None:
    doc = kaconf.parse_text(
        "virtual_server 192.0.2.1 80 {\nlb_algo rr\nprotocol TCP\n"
        "real_server 192.0.2.2 80 {\nweight 5\n}\n}\n",
        "k.conf",
        includes=False,
    )
    text, rep = tcplb_importer.convert_lvs(doc)
    assert text is not None
    (s,) = tomllib.loads(text)["listen"]["vs_192.0.2.1_80"]["server"]
    assert s["weight"] == 1 and "ignores weights" in messages(rep, "warning")


def test_finish_writes_nothing_on_errors(tmp_path: Path) -> None:
    from rmqfd.migrate import finish

    rep = Report()
    rep.error("f:1", "bad")
    err = io.StringIO()
    assert finish(rep, "x = 1\n", output=str(tmp_path / "o"), force=True, check=lambda t: [], stderr=err) == 2
    assert not (tmp_path / "o").exists() and "f:1: error: bad" in err.getvalue()


def test_convert_with_puts_the_readers_notes_first_as_ignored() -> None:
    from rmqfd.migrate import convert_with

    notes = [kaconf.Note("k.conf", 7, "dropped by the reader")]

    def run(rep: Report) -> str | None:
        assert rep.lines() == ["k.conf:7: ignored: dropped by the reader"]  # already there
        rep.warning("k.conf:8", "found by the converter")
        return "x = 1\n"

    text, rep = convert_with(run, notes)
    assert text == "x = 1\n"
    assert rep.lines() == [
        "k.conf:7: ignored: dropped by the reader",
        "k.conf:8: warning: found by the converter",
    ]
    assert convert_with(lambda rep: None) == (None, Report())


def test_check_with_returns_the_daemons_check_lines() -> None:
    from rmqfd import cfgkit
    from rmqfd.migrate import check_with

    def bad(text: str) -> None:
        raise cfgkit.ConfigError([("listen.a.port", "must be 1..65535"), ("", "no listener")])

    assert check_with(bad, "") == ["listen.a.port: must be 1..65535", "no listener"]
    assert check_with(tomllib.loads, "x = ")[0].startswith("invalid TOML: ")
    assert check_with(tomllib.loads, "x = 1") == []
    with pytest.raises(ZeroDivisionError):  # only the configuration's own errors are findings
        check_with(lambda t: 1 // 0, "x = 1")
    # both importers: their --check lines, with the file name each daemon prints
    assert tcplb_importer.check_text("[listen.a]\n") and vrrpd_importer.check_text("[global]\nx = 1\n")
    assert vrrpd_importer.check_text("x = ")[0].startswith("invalid TOML: ")


def test_document_is_head_report_then_tables() -> None:
    from rmqfd.migrate import Table, document

    t = Table("[global]", "", "")
    t.set("router_id", "lbA", "k.conf:2")
    rep = Report()
    line = 'router_id = "lbA"'
    assert document(["# head"], rep, [t]) == f"# head\n\n[global]\n{line:<40} # k.conf:2\n"
    rep.warning("k.conf:3", "a difference")
    rep.error("k.conf:4", "errors are not in the header")
    assert document(["# head"], rep, []).splitlines() == [
        "# head",
        "#",
        "# Imported with a difference:",
        "#   k.conf:3: a difference",
    ]


def test_import_parser_and_import_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rmqfd.migrate import import_file, import_parser

    p = import_parser(
        "x import", "d", file_help="f", output_help="o", config_id_help="i", flags=[("--extra", "e")]
    )
    a = p.parse_args(["in.conf", "-o", "out.toml", "--extra", "--force", "-i", "lbA"])
    assert (a.file, a.output, a.extra, a.force, a.config_id) == ("in.conf", "out.toml", True, True, "lbA")
    a = p.parse_args(["in.conf"])
    assert (a.output, a.extra, a.force, a.config_id) == (None, False, False, None)

    def unreadable() -> str:
        raise kaconf.KaConfError("unbalanced braces", "in.conf", 3)

    def other_reader() -> str:
        raise haconf.HaConfError("bad", "h.cfg", 1)

    def convert(doc: str) -> tuple[str | None, Report]:
        rep = Report()
        rep.unsupported("in.conf:1", f"read {doc}")
        return "x = 1\n", rep

    out = tmp_path / "out.toml"
    a = p.parse_args(["in.conf", "-o", str(out)])
    assert import_file(unreadable, kaconf.KaConfError, convert, a, lambda t: []) == 2
    assert "in.conf:3: unbalanced braces" in capsys.readouterr().err and not out.exists()
    assert import_file(lambda: "doc", kaconf.KaConfError, convert, a, lambda t: []) == 1
    assert "in.conf:1: unsupported: read doc" in capsys.readouterr().err and out.read_text() == "x = 1\n"
    a.force = True
    assert import_file(lambda: "doc", kaconf.KaConfError, convert, a, lambda t: []) == 0
    assert import_file(lambda: "doc", kaconf.KaConfError, convert, a, lambda t: ["bad"]) == 2  # --check
    with pytest.raises(haconf.HaConfError):  # another reader's error is not the import's to report
        import_file(other_reader, kaconf.KaConfError, convert, a, lambda t: [])


def test_script_words_after_the_command_and_notify_twice_as_keepalived() -> None:
    d, rep = ka_data(
        "vrrp_script chk {\nscript /usr/bin/killall -0 haproxy\n}\n"
        "vrrp_instance V {\ninterface eth0\nvirtual_router_id 5\nvirtual_ipaddress { 192.0.2.9/24 }\n"
        'notify_master "/bin/a 1"\nnotify_master "/bin/b 2"\ntrack_script { chk }\n}\n'
    )
    # keepalived 2.x: only the first word (or quoted string) is the command; notify: the first one is kept
    assert d["vrrp_script"]["chk"]["script"] == ["/usr/bin/killall"]
    assert "k.conf:2: warning: script: words after the command" in "\n".join(rep.lines())
    assert d["vrrp_instance"][0]["notify_master"] == ["/bin/a", "1"]
    assert "k.conf:9: warning: notify_master given twice" in "\n".join(rep.lines())


def test_names_vrrpd_or_tcplb_do_not_allow_are_changed_with_a_warning() -> None:
    d, rep = ka_data(
        "vrrp_script chk/a {\nscript /bin/true\n}\n"
        "vrrp_instance VI:1 {\ninterface eth0\nvirtual_router_id 5\nvirtual_ipaddress { 192.0.2.9/24 }\n"
        "track_script {\nchk/a\n}\n}\n"
    )
    assert d["vrrp_instance"][0]["name"] == "VI_1" and d["vrrp_instance"][0]["track_script"] == ["chk_a"]
    assert list(d["vrrp_script"]) == ["chk_a"] and "'chk/a'" in messages(rep, "warning")
    ha = "listen rabbit/amqp\n mode tcp\n bind :5672\n server n1 192.0.2.11:5672\n"
    text, rep = tcplb_importer.convert_haproxy(haconf.parse_text(ha, "h.cfg"))
    assert text is not None and list(tomllib.loads(text)["listen"]) == ["rabbit_amqp"]
    assert "h.cfg:1: warning: listen name 'rabbit/amqp'" in "\n".join(rep.lines())
