"""vrrpd configuration: strict TOML, keepalived vocabulary, every error with its key path and rule."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vrrpd.config import ConfigError, listen_address, load, parse

ROOT = Path(__file__).resolve().parents[2]

ISSUE_EXAMPLE = """
[global]
router_id = "lb1"
# script_user = "nobody"
# enable_script_security = true

[[vrrp_instance]]
name = "VI_1"
interface = "eth0"
virtual_router_id = 51
priority = 150
advert_int = 1
nopreempt = false
preempt_delay = 0
auth_pass = "secret51"                   # PASS auth, at most 8 bytes; omit for none
virtual_ipaddress = ["192.0.2.100/24"]   # an entry may also be a table {address, dev, label}
# mcast_src_ip = "192.0.2.21"
# unicast_peer = ["192.0.2.22"]
track_script = ["chk_tcplb"]             # an entry may also be a table {name, weight}
notify_master = ["/usr/local/bin/on-master", "VI_1"]

[vrrp_script.chk_tcplb]
script = ["/usr/local/bin/check-tcplb"]
interval = 1
timeout = 1
rise = 2
fall = 2
weight = -60
"""


def errors_of(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as ei:
        parse(data)
    return ei.value.errors


def base(**inst: Any) -> dict[str, Any]:
    i: dict[str, Any] = {
        "interface": "eth0",
        "virtual_router_id": 51,
        "virtual_ipaddress": ["192.0.2.100/24"],
    }
    i.update(inst)
    return {"vrrp_instance": [i]}


def test_issue_example_parses() -> None:
    cfg = parse(tomllib.loads(ISSUE_EXAMPLE))
    assert cfg.global_.router_id == "lb1"
    (i,) = cfg.instances
    assert (i.name, i.interface, i.virtual_router_id, i.priority, i.advert_int) == (
        "VI_1",
        "eth0",
        51,
        150,
        1,
    )
    assert not i.nopreempt and i.preempt_delay == 0
    assert i.auth_pass == "secret51" and i.auth_type == "PASS"
    assert i.virtual_ipaddress[0].address == IPv4Interface("192.0.2.100/24")
    assert i.track_script[0].name == "chk_tcplb" and i.track_script[0].weight is None
    assert i.notify_master == ("/usr/local/bin/on-master", "VI_1")
    s = cfg.script("chk_tcplb")
    assert (s.script, s.interval, s.timeout, s.rise, s.fall, s.weight) == (
        ("/usr/local/bin/check-tcplb",),
        1.0,
        1.0,
        2,
        2,
        -60,
    )
    assert i.unicast_peer is None and not i.unicast


def test_defaults_are_keepalived_defaults() -> None:
    cfg = parse(base())
    i = cfg.instances[0]
    assert i.priority == 100 and i.advert_int == 1 and i.state == "BACKUP" and not i.nopreempt
    assert (i.garp_master_delay, i.garp_master_repeat, i.garp_master_refresh) == (5.0, 5, 0.0)
    assert i.garp_lower_prio_repeat == 5 and not i.lower_prio_no_advert
    assert i.name == "VI_51"
    assert not cfg.global_.enable_script_security and cfg.global_.script_user is None


def test_script_timeout_defaults_to_interval() -> None:
    cfg = parse({**base(track_script=["s"]), "vrrp_script": {"s": {"script": ["/bin/true"], "interval": 3}}})
    assert cfg.script("s").timeout == 3.0


def test_table_entries() -> None:
    cfg = parse(
        {
            **base(
                virtual_ipaddress=[
                    "192.0.2.100",
                    {"address": "192.0.2.101/24", "dev": "eth1", "label": "eth1:amqp"},
                ],
                track_script=[{"name": "s", "weight": -20}],
                track_interface=["eth1", {"name": "eth2", "weight": -10}],
                unicast_peer=["192.0.2.22"],
                unicast_src_ip="192.0.2.21",
            ),
            "vrrp_script": {"s": {"script": ["/bin/true"]}},
        }
    )
    i = cfg.instances[0]
    assert i.virtual_ipaddress[0].address == IPv4Interface("192.0.2.100/32")
    assert (i.virtual_ipaddress[1].dev, i.virtual_ipaddress[1].label) == ("eth1", "eth1:amqp")
    assert i.track_script[0].weight == -20
    assert [(t.name, t.weight) for t in i.track_interface] == [("eth1", 0), ("eth2", -10)]
    assert i.unicast and i.unicast_peer == (IPv4Address("192.0.2.22"),)
    assert i.src_ip == IPv4Address("192.0.2.21")


@pytest.mark.parametrize(
    ("inst", "path", "rule"),
    [
        ({"priority": 0}, "vrrp_instance[0].priority", "must be an integer 1..255"),
        ({"priority": 256}, "vrrp_instance[0].priority", "must be an integer 1..255"),
        ({"priority": "150"}, "vrrp_instance[0].priority", "must be an integer 1..255"),
        ({"priority": True}, "vrrp_instance[0].priority", "must be an integer 1..255"),
        ({"virtual_router_id": 0}, "vrrp_instance[0].virtual_router_id", "must be an integer 1..255"),
        ({"virtual_router_id": 256}, "vrrp_instance[0].virtual_router_id", "must be an integer 1..255"),
        ({"advert_int": 0.5}, "vrrp_instance[0].advert_int", "must be an integer 1..255"),
        ({"advert_int": 256}, "vrrp_instance[0].advert_int", "must be an integer 1..255"),
        ({"auth_pass": "123456789"}, "vrrp_instance[0].auth_pass", "1..8 bytes"),
        ({"auth_pass": ""}, "vrrp_instance[0].auth_pass", "1..8 bytes"),
        ({"auth_type": "AH", "auth_pass": "x"}, "vrrp_instance[0].auth_type", "PASS"),
        ({"virtual_ipaddress": ["192.0.2.300/24"]}, "vrrp_instance[0].virtual_ipaddress[0]", "IPv4 address"),
        ({"virtual_ipaddress": ["224.0.0.18"]}, "vrrp_instance[0].virtual_ipaddress[0]", "unicast"),
        ({"virtual_ipaddress": ["192.0.2.0/24"]}, "vrrp_instance[0].virtual_ipaddress[0]", "network"),
        (
            {"virtual_ipaddress": [{"dev": "eth0"}]},
            "vrrp_instance[0].virtual_ipaddress[0].address",
            "required",
        ),
        (
            {"virtual_ipaddress": [{"address": "192.0.2.5", "color": "red"}]},
            "vrrp_instance[0].virtual_ipaddress[0].color",
            "unknown key",
        ),
        (
            {"virtual_ipaddress": ["192.0.2.5", "192.0.2.5"]},
            "vrrp_instance[0].virtual_ipaddress[1]",
            "duplicate",
        ),
        (
            {"virtual_ipaddress": [{"address": "192.0.2.5", "label": "eth1:x"}]},
            "vrrp_instance[0].virtual_ipaddress[0].label",
            'start with "eth0:"',
        ),
        (
            {"virtual_ipaddress": [{"address": "192.0.2.5", "dev": "eth1", "label": "eth0:x"}]},
            "vrrp_instance[0].virtual_ipaddress[0].label",
            'start with "eth1:"',
        ),
        ({"nopreempt": "yes"}, "vrrp_instance[0].nopreempt", "true or false"),
        ({"preempt_delay": 1001}, "vrrp_instance[0].preempt_delay", "0..1000"),
        ({"state": "master"}, "vrrp_instance[0].state", "MASTER"),
        ({"unicast_peer": "192.0.2.22"}, "vrrp_instance[0].unicast_peer", "list"),
        ({"unicast_peer": ["nope"]}, "vrrp_instance[0].unicast_peer[0]", "IPv4 address"),
        ({"mcast_src_ip": "224.0.0.1"}, "vrrp_instance[0].mcast_src_ip", "unicast"),
        ({"track_script": ["missing"]}, "vrrp_instance[0].track_script[0]", "unknown vrrp_script"),
        ({"notify_master": "/bin/echo hi"}, "vrrp_instance[0].notify_master", "list of strings"),
        ({"notify": []}, "vrrp_instance[0].notify", "list of strings"),
        ({"interface": "a/b"}, "vrrp_instance[0].interface", "interface name"),
        ({"interface": "x" * 16}, "vrrp_instance[0].interface", "interface name"),
        ({"garp_master_repeat": 0}, "vrrp_instance[0].garp_master_repeat", "1..255"),
        ({"bogus": 1}, "vrrp_instance[0].bogus", "unknown key"),
        ({"authentication": {"auth_type": "PASS"}}, "vrrp_instance[0].authentication", "unknown key"),
    ],
)
def test_bad_instance_values(inst: dict[str, Any], path: str, rule: str) -> None:
    errs = errors_of(base(**inst))
    assert any(p == path and rule in r for p, r in errs), errs


def test_missing_required_and_all_errors_collected() -> None:
    errs = errors_of(
        {"global": {"router_id": "lb1", "colour": 1}, "vrrp_instance": [{"priority": 0, "advert_int": 0}]}
    )
    paths = {p for p, _ in errs}
    assert {
        "global.colour",
        "vrrp_instance[0].interface",
        "vrrp_instance[0].virtual_router_id",
        "vrrp_instance[0].priority",
        "vrrp_instance[0].advert_int",
    } <= paths


def test_duplicate_vrid_per_interface() -> None:
    data = base()
    data["vrrp_instance"].append(
        {"name": "VI_2", "interface": "eth0", "virtual_router_id": 51, "virtual_ipaddress": ["192.0.2.101"]}
    )
    errs = errors_of(data)
    assert (
        "vrrp_instance[1].virtual_router_id",
        "duplicate VRID 51 on interface eth0 (also vrrp_instance[0])",
    ) in errs
    # the same VRID on another interface is fine
    data["vrrp_instance"][1]["interface"] = "eth1"
    assert len(parse(data).instances) == 2


def test_duplicate_names_and_shared_vips() -> None:
    data = base(name="A")
    data["vrrp_instance"].append(
        {"name": "A", "interface": "eth0", "virtual_router_id": 52, "virtual_ipaddress": ["192.0.2.101"]}
    )
    assert any("duplicate instance name" in r for _, r in errors_of(data))
    data["vrrp_instance"][1]["name"] = "B"
    data["vrrp_instance"][1]["virtual_ipaddress"] = ["192.0.2.100/24"]
    assert any("also a VIP of instance A" in r for _, r in errors_of(data))


def test_script_errors() -> None:
    data = {
        **base(track_script=["s"]),
        "vrrp_script": {"s": {"script": "/bin/true", "interval": 0, "rise": 0, "weight": 254, "shell": True}},
    }
    errs = dict(errors_of(data))
    assert "list of strings" in errs["vrrp_script.s.script"]
    assert "vrrp_script.s.interval" in errs and "vrrp_script.s.rise" in errs
    assert "-253..253" in errs["vrrp_script.s.weight"]
    assert errs["vrrp_script.s.shell"] == "unknown key"


def test_top_level() -> None:
    assert ("vrrp_instance", "at least one [[vrrp_instance]] is required") in errors_of({})
    assert ("vrrp_server", 'unknown key (did you mean "vrrp_script"?)') in errors_of(
        {**base(), "vrrp_server": {}}
    )
    assert ("zzz", "unknown key") in errors_of({**base(), "zzz": {}})


def test_global_keys() -> None:
    cfg = parse(
        {
            "global": {
                "router_id": "lb1",
                "script_user": "nobody",
                "enable_script_security": True,
                "control_socket": "/run/x.sock",
                "notify_timeout": 2,
            },
            **base(),
        }
    )
    assert cfg.global_.script_user == "nobody" and cfg.global_.enable_script_security
    assert cfg.control_socket() == "/run/x.sock" and cfg.global_.notify_timeout == 2.0
    errs = dict(errors_of({"global": {"control_socket": "relative.sock", "script_user": "a b"}, **base()}))
    assert "absolute path" in errs["global.control_socket"] and "user name" in errs["global.script_user"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:9650", ("127.0.0.1", 9650)),
        ("[::1]:9650", ("::1", 9650)),
        (":9650", (None, 9650)),
        ("192.0.2.21:1", ("192.0.2.21", 1)),
    ],
)
def test_metrics_listen(value: str, expected: tuple[str | None, int]) -> None:
    cfg = parse({"global": {"metrics_listen": value}, **base()})
    assert cfg.global_.metrics_listen == value
    assert listen_address(value) == expected
    assert parse(base()).global_.metrics_listen is None  # off by default


@pytest.mark.parametrize(
    "value",
    [
        9650,
        "",
        "9650",
        "localhost:9650",
        "127.0.0.1",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "::1:9650",
        "[127.0.0.1]:9650",
        "[::1]",
        "127.0.0.1:96x",
        "http://127.0.0.1:9650",
        True,
    ],
)
def test_metrics_listen_errors(value: object) -> None:
    errs = dict(errors_of({"global": {"metrics_listen": value}, **base()}))
    assert "ADDRESS:PORT" in errs["global.metrics_listen"] and "1..65535" in errs["global.metrics_listen"]


def test_load_releases_the_toml_parser(tmp_path: Path) -> None:
    # the daemon drops tomllib after loading (idle RSS); load() must keep working afterwards
    p = tmp_path / "a.toml"
    p.write_text(
        '[global]\nmetrics_listen = ":9650"\n[[vrrp_instance]]\ninterface = "eth0"\nvirtual_router_id = 1\n'
    )
    code = (
        "import sys\n"
        "from vrrpd.config import load, release_parser\n"
        f"a = load({str(p)!r}); release_parser()\n"
        "gone = 'tomllib' not in sys.modules\n"
        f"b = load({str(p)!r})\n"
        "print(gone, a == b, b.global_.metrics_listen)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert res.stdout.split() == ["True", "True", ":9650"], res.stderr


def test_default_control_socket_per_router_id_or_path(tmp_path: Path) -> None:
    p = tmp_path / "a.toml"
    p.write_text(
        '[global]\nrouter_id = "lb7"\n[[vrrp_instance]]\ninterface = "eth0"\nvirtual_router_id = 1\n'
    )
    assert load(p).control_socket() == "/run/vrrpd/lb7.sock"
    q = tmp_path / "b.toml"
    q.write_text('[[vrrp_instance]]\ninterface = "eth0"\nvirtual_router_id = 1\n')
    r = tmp_path / "c.toml"
    r.write_text(q.read_text())
    assert load(q).control_socket() != load(r).control_socket()


def test_load_syntax_error(tmp_path: Path) -> None:
    p = tmp_path / "bad.toml"
    p.write_text("[[vrrp_instance]\n")
    with pytest.raises(ConfigError) as ei:
        load(p)
    assert ei.value.errors[0][0] == "(syntax)"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vrrpd", *args], capture_output=True, text=True, cwd=ROOT, timeout=30
    )


def test_cli_check_ok_and_errors(tmp_path: Path) -> None:
    ok = run_cli("-c", str(ROOT / "examples" / "node.toml"), "--check")
    assert ok.returncode == 0, ok.stderr
    ok2 = run_cli("-c", str(ROOT / "examples" / "node-lb2.toml"), "--check")
    assert ok2.returncode == 0, ok2.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[vrrp_instance]]\ninterface = "eth0"\nvirtual_router_id = 300\npriority = 0\n'
        'auth_pass = "toolongpass"\n'
    )
    res = run_cli("-c", str(bad), "--check")
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert f"{bad}: vrrp_instance[0].virtual_router_id: must be an integer 1..255" in lines
    assert f"{bad}: vrrp_instance[0].priority: must be an integer 1..255" in lines
    assert any("vrrp_instance[0].auth_pass" in line for line in lines)
    assert len(lines) == 3


# ---------------------------------------------------------------------------------------------- hypothesis

ipv4 = st.integers(min_value=0xC0000201, max_value=0xC00002FE).map(lambda n: str(IPv4Address(n)))
instances = st.fixed_dictionaries(
    {
        "interface": st.sampled_from(["eth0", "eth1", "bond0"]),
        "virtual_router_id": st.integers(1, 255),
        "priority": st.integers(1, 255),
        "advert_int": st.integers(1, 255),
        "nopreempt": st.booleans(),
        "preempt_delay": st.integers(0, 1000),
        "auth_pass": st.text(alphabet="abcdefgh0123", min_size=1, max_size=8),
        "unicast_peer": st.lists(ipv4, max_size=3, unique=True),
    }
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(instances, min_size=1, max_size=4))
def test_valid_configs_round_trip(insts: list[dict[str, Any]]) -> None:
    keys = set()
    data: dict[str, Any] = {"vrrp_instance": []}
    for n, i in enumerate(insts):
        if (i["interface"], i["virtual_router_id"]) in keys:
            continue
        keys.add((i["interface"], i["virtual_router_id"]))
        data["vrrp_instance"].append(
            {**i, "name": f"VI_{n}", "virtual_ipaddress": [f"198.51.100.{n + 1}/24"]}
        )
    cfg = parse(data)
    for raw, got in zip(data["vrrp_instance"], cfg.instances, strict=True):
        assert got.virtual_router_id == raw["virtual_router_id"] and got.priority == raw["priority"]
        # keepalived clears nopreempt for the address owner (priority 255)
        assert got.advert_int == raw["advert_int"]
        assert got.nopreempt == (raw["nopreempt"] and raw["priority"] != 255)
        assert got.auth_pass == raw["auth_pass"]
        assert [str(p) for p in got.unicast_peer or ()] == raw["unicast_peer"]


toml_values = st.recursive(
    st.none().map(lambda _: 0)
    | st.booleans()
    | st.integers(-300, 300)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
instance_keys = st.sampled_from(
    [
        "interface",
        "virtual_router_id",
        "priority",
        "advert_int",
        "nopreempt",
        "auth_pass",
        "virtual_ipaddress",
        "unicast_peer",
        "track_script",
        "notify_master",
        "preempt_delay",
        "garp_master_delay",
        "state",
        "x",
    ]
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(instance_keys, toml_values, max_size=8),
    st.dictionaries(st.text(max_size=6), toml_values, max_size=2),
)
def test_any_document_parses_or_raises_config_error(inst: dict[str, Any], top: dict[str, Any]) -> None:
    data = {**top, "vrrp_instance": [inst]}
    try:
        cfg = parse(data)
    except ConfigError as e:
        assert e.errors and all(isinstance(p, str) and isinstance(r, str) and r for p, r in e.errors)
    else:
        assert len(cfg.instances) == 1


# ------------------------------------------------------- state (issue 11, defect 5: keepalived 2.2.7)


def test_state_master_without_priority_is_the_owner() -> None:
    # keepalived 2.2.7 vrrp_complete_instance: no priority + state MASTER -> priority 255 (address owner)
    cfg = parse(base(state="MASTER"))
    (i,) = cfg.instances
    assert (i.state, i.priority) == ("MASTER", 255)
    assert cfg.warnings[0][0] == "vrrp_instance[0].priority" and "255" in cfg.warnings[0][1]
    assert parse(base(state="BACKUP")).instances[0].priority == 100
    assert parse(base()).instances[0].priority == 100
    assert parse(base(state="MASTER", priority=150)).instances[0].priority == 150


def test_state_master_clears_nopreempt_and_preempt_delay_with_warnings() -> None:
    cfg = parse(base(state="MASTER", priority=150, nopreempt=True, preempt_delay=30))
    (i,) = cfg.instances
    assert not i.nopreempt and i.preempt_delay == 0
    paths = [k for k, _ in cfg.warnings]
    assert paths == ["vrrp_instance[0].nopreempt", "vrrp_instance[0].preempt_delay"]
    assert all("MASTER" in w for _, w in cfg.warnings)
    assert any("preempt_delay" in line for line in cfg.warning_lines())
    # BACKUP keeps nopreempt (the common "state BACKUP + nopreempt" setup)
    b = parse(base(state="BACKUP", nopreempt=True)).instances[0]
    assert b.nopreempt and parse(base(state="BACKUP", nopreempt=True)).warnings == ()


def test_owner_and_nopreempt_and_delay_overrides() -> None:
    cfg = parse(base(priority=255, nopreempt=True))
    assert not cfg.instances[0].nopreempt and cfg.warnings[0][0] == "vrrp_instance[0].nopreempt"
    cfg = parse(base(nopreempt=True, preempt_delay=10))
    assert cfg.instances[0].nopreempt  # preempt_delay is kept (unused without preemption), with a warning
    assert cfg.warnings[0][0] == "vrrp_instance[0].preempt_delay"


def test_cli_check_prints_state_warnings(tmp_path: Path) -> None:
    p = tmp_path / "m.toml"
    p.write_text(
        '[[vrrp_instance]]\ninterface = "eth0"\nvirtual_router_id = 1\nstate = "MASTER"\nnopreempt = true\n'
    )
    res = run_cli("-c", str(p), "--check")
    assert res.returncode == 0, res.stderr
    assert f"{p}: warning: vrrp_instance[0].priority: not set" in res.stderr
    assert f"{p}: warning: vrrp_instance[0].nopreempt: ignored" in res.stderr


# --------------------------------------------------------------------------- track_process, startup delay


def test_track_process_tables() -> None:
    cfg = parse(
        {
            **base(track_process=["lb", {"name": "lb_argv", "weight": -50}]),
            "vrrp_track_process": {
                "lb": {"process": "tcplb", "delay": "200ms"},
                "lb_argv": {
                    "process": ["/usr/bin/python3", "-m", "tcplb"],
                    "param_match": "partial",
                    "quorum": 2,
                    "quorum_max": 4,
                    "weight": 10,
                    "terminate_delay": 1,
                },
            },
            "global": {"vrrp_startup_delay": 5.5},
        }
    )
    lb, lb_argv = cfg.process("lb"), cfg.process("lb_argv")
    assert (lb.process, lb.params, lb.full_command, lb.quorum, lb.quorum_max, lb.weight) == (
        "tcplb",
        None,
        False,
        1,
        None,
        0,
    )
    assert lb.fork_delay == lb.terminate_delay == pytest.approx(0.2)
    assert (lb_argv.process, lb_argv.params, lb_argv.param_match, lb_argv.full_command) == (
        "/usr/bin/python3",
        ("-m", "tcplb"),
        "partial",
        True,
    )
    assert (lb_argv.quorum, lb_argv.quorum_max, lb_argv.fork_delay, lb_argv.terminate_delay) == (
        2,
        4,
        0.0,
        1.0,
    )
    refs = cfg.instances[0].track_process
    assert [(r.name, r.weight) for r in refs] == [("lb", None), ("lb_argv", -50)]
    assert cfg.global_.vrrp_startup_delay == 5.5
    assert parse(base()).global_.vrrp_startup_delay == 0.0
    # quorum_max = 0 alone: "failure if the process runs at all"
    z = parse({**base(), "vrrp_track_process": {"z": {"process": "x", "quorum_max": 0}}}).process("z")
    assert (z.quorum, z.quorum_max) == (0, 0)


@pytest.mark.parametrize(
    ("table", "path", "rule"),
    [
        ({}, "vrrp_track_process.p.process", "is required"),
        ({"process": ""}, "vrrp_track_process.p.process", "process name"),
        ({"process": "a-very-long-process-name"}, "vrrp_track_process.p.process", "full_command"),
        ({"process": "x", "quorum": 3, "quorum_max": 2}, "vrrp_track_process.p.quorum_max", ">= quorum"),
        ({"process": "x", "quorum": 0}, "vrrp_track_process.p.quorum", "quorum_max = 0"),
        ({"process": "x", "weight": 255}, "vrrp_track_process.p.weight", "-254..254"),
        ({"process": "x", "param_match": "full"}, "vrrp_track_process.p.param_match", '"initial"'),
        ({"process": "x", "delay": -1}, "vrrp_track_process.p.delay", "0..3600"),
        ({"process": "x", "qorum": 1}, "vrrp_track_process.p.qorum", 'did you mean "quorum"'),
    ],
)
def test_track_process_errors(table: dict[str, Any], path: str, rule: str) -> None:
    errs = errors_of({**base(track_process=["p"]), "vrrp_track_process": {"p": table}})
    assert any(p == path and rule in r for p, r in errs), errs


def test_track_process_reference_errors() -> None:
    errs = dict(
        errors_of({**base(track_process=["tcplbb"]), "vrrp_track_process": {"tcplb": {"process": "t"}}})
    )
    assert errs["vrrp_instance[0].track_process[0]"] == (
        'unknown vrrp_track_process "tcplbb" (did you mean "tcplb"?)'
    )
    errs = dict(errors_of({**base(track_process=["t", "t"]), "vrrp_track_process": {"t": {"process": "t"}}}))
    assert errs["vrrp_instance[0].track_process[1]"] == 'process "t" tracked twice'


def test_durations_and_suggestions_from_the_shared_toolkit() -> None:
    cfg = parse(
        {**base(track_script=["s"]), "vrrp_script": {"s": {"script": ["/bin/true"], "interval": "500ms"}}}
    )
    assert cfg.script("s").interval == 0.5 and cfg.script("s").timeout == 0.5
    errs = dict(errors_of(base(priorty=150, preempt_delay="2 parsecs")))
    assert errs["vrrp_instance[0].priorty"] == 'unknown key (did you mean "priority"?)'
    assert "number of seconds 0..1000" in errs["vrrp_instance[0].preempt_delay"]
    errs = dict(errors_of({"global": {"router-id": "x"}, **base()}))
    assert errs["global.router-id"] == 'unknown key (did you mean "router_id"?)'
