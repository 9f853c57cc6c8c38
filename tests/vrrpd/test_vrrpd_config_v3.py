"""vrrpd configuration for VRRPv3 (RFC 5798) in keepalived's vocabulary: ``version`` (global, keepalived's
``vrrp_version``, and per instance), fractional ``advert_int``, IPv6 ``virtual_ipaddress`` and
``unicast_peer``, one address family per instance, no authentication, ``v3_checksum_as_v2``."""

from __future__ import annotations

import subprocess
import sys
from ipaddress import IPv4Address, IPv6Address, IPv6Interface
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vrrpd.config import ConfigError, parse

ROOT = Path(__file__).resolve().parents[2]


def doc(glob: dict[str, Any] | None = None, **inst: Any) -> dict[str, Any]:
    i: dict[str, Any] = {"interface": "eth0", "virtual_router_id": 51, **inst}
    d: dict[str, Any] = {"vrrp_instance": [i]}
    if glob is not None:
        d["global"] = glob
    return d


def errors_of(data: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ConfigError) as ei:
        parse(data)
    return ei.value.errors


def has(errs: list[tuple[str, str]], path: str, words: str) -> bool:
    return any(p == path and words in r for p, r in errs)


def test_v2_stays_the_default() -> None:
    c = parse(doc(virtual_ipaddress=["192.0.2.100/24"])).instances[0]
    assert (c.version, c.family, c.advert_int, c.advert_cs, c.interval) == (2, 4, 1, None, 1.0)
    assert c.v3_checksum_as_v2 is False


def test_v3_ipv4_instance_with_a_fractional_interval() -> None:
    c = parse(doc(version=3, advert_int=0.1, virtual_ipaddress=["192.0.2.100/24"])).instances[0]
    assert (c.version, c.family, c.advert_cs, c.interval) == (3, 4, 10, 0.1)
    # keepalived's default for IPv4 VRRPv3 is the pseudo-header checksum
    assert c.v3_checksum_as_v2 is False


def test_global_version_is_keepalived_vrrp_version_and_the_instance_overrides_it() -> None:
    d = doc({"version": 3}, advert_int="250ms", virtual_ipaddress=["192.0.2.100/24"])
    d["vrrp_instance"].append(
        {"interface": "eth0", "virtual_router_id": 52, "version": 2, "virtual_ipaddress": ["192.0.2.101/24"]}
    )
    a, b = parse(d).instances
    assert (a.version, a.advert_cs) == (3, 25)
    assert (b.version, b.advert_cs, b.advert_int) == (2, None, 1)


@pytest.mark.parametrize(
    ("value", "cs"),
    [(0.01, 1), (0.1, 10), (1, 100), (3, 300), (40.95, 4095), ("10ms", 1), ("1.5s", 150), (2.5, 250)],
)
def test_v3_intervals(value: object, cs: int) -> None:
    cfg = parse(doc(version=3, advert_int=value, virtual_ipaddress=["192.0.2.100/24"]))
    assert cfg.instances[0].advert_cs == cs
    assert cfg.warnings == ()


def test_v3_interval_rounded_to_10ms_with_a_warning_as_keepalived() -> None:
    cfg = parse(doc(version=3, advert_int=0.123, virtual_ipaddress=["192.0.2.100/24"]))
    assert cfg.instances[0].advert_cs == 12
    assert cfg.warnings == (
        (
            "vrrp_instance[0].advert_int",
            "VRRPv3 intervals are in units of 10 ms: 0.123s rounded to 0.12s (as keepalived)",
        ),
    )


@pytest.mark.parametrize("value", [0, 0.001, 0.004, 40.96, 41, 255, -1, "fast", True, "1"])
def test_v3_interval_out_of_range_names_the_key(value: object) -> None:
    errs = errors_of(doc(version=3, advert_int=value, virtual_ipaddress=["192.0.2.100/24"]))
    assert has(errs, "vrrp_instance[0].advert_int", "0.01..40.95"), errs


@pytest.mark.parametrize("value", [0.1, 1.5, "100ms", 0, 256])
def test_v2_interval_is_whole_seconds(value: object) -> None:
    errs = errors_of(doc(advert_int=value, virtual_ipaddress=["192.0.2.100/24"]))
    assert has(errs, "vrrp_instance[0].advert_int", "need version = 3"), errs


def test_ipv6_instance_is_v3_and_vips_default_to_128() -> None:
    c = parse(
        doc(
            advert_int=0.1,
            virtual_ipaddress=["fe80::200:5eff:fe00:233", "2001:db8::100/64"],
            unicast_peer=["fe80::22"],
        )
    ).instances[0]
    assert (c.version, c.family, c.advert_cs) == (3, 6, 10)
    assert [v.address for v in c.virtual_ipaddress] == [
        IPv6Interface("fe80::200:5eff:fe00:233/128"),
        IPv6Interface("2001:db8::100/64"),
    ]
    assert c.unicast_peer == (IPv6Address("fe80::22"),)


def test_first_ipv6_vip_not_link_local_is_a_warning_as_keepalived() -> None:
    cfg = parse(doc(virtual_ipaddress=["2001:db8::100/64"]))
    assert [k for k, _ in cfg.warnings] == ["vrrp_instance[0].virtual_ipaddress[0]"]
    assert "link local" in cfg.warnings[0][1]


def test_ipv6_with_explicit_version_2_is_an_error() -> None:
    errs = errors_of(doc(version=2, virtual_ipaddress=["fe80::1"]))
    assert has(errs, "vrrp_instance[0].version", "IPv6 needs VRRPv3"), errs


def test_one_address_family_per_instance() -> None:
    errs = errors_of(doc(virtual_ipaddress=["fe80::1", "192.0.2.100/24", "2001:db8::1"]))
    assert errs == [
        (
            "vrrp_instance[0].virtual_ipaddress[1]",
            "IPv4 address in an IPv6 instance: one address family per instance (as keepalived); use another "
            "[[vrrp_instance]] for it (it may have the same VRID)",
        )
    ]
    errs = errors_of(
        doc(version=3, virtual_ipaddress=["192.0.2.100/24"], unicast_peer=["192.0.2.2", "fe80::2"])
    )
    assert has(errs, "vrrp_instance[0].unicast_peer[1]", "must be an IPv4 address"), errs


@pytest.mark.parametrize("key", ["auth_pass", "auth_type"])
def test_v3_with_authentication_is_an_error_naming_the_key(key: str) -> None:
    inst: dict[str, Any] = (
        {"auth_pass": "secret"} if key == "auth_pass" else {"auth_type": "PASS", "auth_pass": "s"}
    )
    for d in (
        doc(version=3, virtual_ipaddress=["192.0.2.100/24"], **inst),
        doc({"version": 3}, virtual_ipaddress=["192.0.2.100/24"], **inst),
        doc(virtual_ipaddress=["fe80::1"], **inst),
    ):
        errs = errors_of(d)
        assert has(errs, f"vrrp_instance[0].{key}", "VRRPv3 has no authentication"), errs
    # v2 keeps PASS
    assert (
        parse(doc(virtual_ipaddress=["192.0.2.100/24"], auth_pass="secret")).instances[0].auth_pass
        == "secret"
    )


def test_v3_needs_an_address() -> None:
    errs = errors_of(doc(version=3))
    assert has(errs, "vrrp_instance[0].virtual_ipaddress", "at least one address"), errs


def test_ipv6_source_keys_and_labels_are_errors() -> None:
    errs = errors_of(
        doc(
            virtual_ipaddress=[{"address": "fe80::1", "label": "eth0:v"}, "2001:db8::1"],
            mcast_src_ip="192.0.2.1",
        )
    )
    assert has(errs, "vrrp_instance[0].virtual_ipaddress[0].label", "no labels"), errs
    errs = errors_of(doc(virtual_ipaddress=["fe80::1"], unicast_src_ip="192.0.2.1"))
    assert has(errs, "vrrp_instance[0].unicast_src_ip", "link-local"), errs


@pytest.mark.parametrize("addr", ["ff02::12", "::", "::1", "::ffff:192.0.2.1", "fe80::zz", "2001:db8::/200"])
def test_bad_ipv6_vips(addr: str) -> None:
    errs = errors_of(doc(virtual_ipaddress=[addr]))
    assert any(p == "vrrp_instance[0].virtual_ipaddress[0]" for p, _ in errs), errs


def test_checksum_keyword_per_instance_and_global() -> None:
    base: dict[str, Any] = {"version": 3, "virtual_ipaddress": ["192.0.2.100/24"]}
    assert parse(doc(**base, v3_checksum_as_v2=True)).instances[0].v3_checksum_as_v2 is True
    assert parse(doc({"v3_checksum_as_v2": True}, **base)).instances[0].v3_checksum_as_v2 is True
    c = parse(doc({"v3_checksum_as_v2": True}, **base, v3_checksum_as_v2=False)).instances[0]
    assert c.v3_checksum_as_v2 is False
    # no effect in v2 or on IPv6: a warning, as a keepalived operator would want to know
    cfg = parse(doc(virtual_ipaddress=["192.0.2.100/24"], v3_checksum_as_v2=True))
    assert cfg.instances[0].v3_checksum_as_v2 is False
    assert cfg.warnings == (("vrrp_instance[0].v3_checksum_as_v2", "has no effect in VRRPv2"),)
    cfg = parse(doc(virtual_ipaddress=["fe80::1"], v3_checksum_as_v2=True))
    assert ("vrrp_instance[0].v3_checksum_as_v2" in dict(cfg.warnings)) is True
    assert cfg.instances[0].v3_checksum_as_v2 is True  # kept, unused: IPv6 has one checksum form
    errs = errors_of(doc(**base, v3_checksum_as_v2="yes"))
    assert has(errs, "vrrp_instance[0].v3_checksum_as_v2", "true or false"), errs


@pytest.mark.parametrize("value", [1, 4, "3", True, 3.0])
def test_bad_version(value: object) -> None:
    errs = errors_of(doc({"version": value}, virtual_ipaddress=["192.0.2.100/24"]))
    assert has(errs, "global.version", "must be 2"), errs
    errs = errors_of(doc(version=value, virtual_ipaddress=["192.0.2.100/24"]))
    assert has(errs, "vrrp_instance[0].version", "must be 2"), errs


def test_v2_and_v3_instances_on_one_interface_with_different_vrids() -> None:
    d = doc(virtual_ipaddress=["192.0.2.100/24"])
    d["vrrp_instance"].append(
        {
            "interface": "eth0",
            "virtual_router_id": 52,
            "version": 3,
            "advert_int": 0.1,
            "virtual_ipaddress": ["192.0.2.101/24"],
        }
    )
    a, b = parse(d).instances
    assert (a.version, b.version) == (2, 3)


def test_shared_vip_across_families_is_still_per_address() -> None:
    d = doc(virtual_ipaddress=["fe80::1"])
    d["vrrp_instance"].append(
        {"name": "B", "interface": "eth1", "virtual_router_id": 51, "virtual_ipaddress": ["fe80::1"]}
    )
    errs = errors_of(d)
    assert has(errs, "vrrp_instance[1].virtual_ipaddress", "also a VIP"), errs


def test_cli_check_reports_every_v3_error_by_key_path(tmp_path: Path) -> None:
    f = tmp_path / "node.toml"
    f.write_text(
        """
[global]
version = 3
[[vrrp_instance]]
interface = "eth0"
virtual_router_id = 51
advert_int = 0.001
auth_pass = "secret"
virtual_ipaddress = ["192.0.2.100/24", "2001:db8::1/64"]
unicast_peer = ["fe80::2"]
"""
    )
    r = subprocess.run(
        [sys.executable, "-m", "vrrpd", "-c", str(f), "--check"], capture_output=True, text=True, cwd=ROOT
    )
    assert r.returncode != 0
    out = r.stderr + r.stdout
    assert "Traceback" not in out
    for path in (
        "vrrp_instance[0].advert_int",
        "vrrp_instance[0].auth_pass",
        "vrrp_instance[0].virtual_ipaddress[1]",
        "vrrp_instance[0].unicast_peer[0]",
    ):
        assert f"{f}: {path}: " in out, out


def test_cli_check_accepts_a_v3_ipv6_file_with_its_warnings(tmp_path: Path) -> None:
    f = tmp_path / "node.toml"
    f.write_text(
        """
[[vrrp_instance]]
interface = "eth0"
virtual_router_id = 51
advert_int = 0.105
virtual_ipaddress = ["2001:db8::100/64"]
"""
    )
    r = subprocess.run(
        [sys.executable, "-m", "vrrpd", "-c", str(f), "--check"], capture_output=True, text=True, cwd=ROOT
    )
    out = r.stderr + r.stdout
    assert r.returncode == 0, out
    assert "vrrp_instance[0].advert_int" in out and "vrrp_instance[0].virtual_ipaddress[0]" in out


_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-10, 5000),
    st.text(max_size=8),
    st.booleans(),
    st.none(),
)


@settings(max_examples=300, deadline=None)
@given(version=st.sampled_from([2, 3, None]), value=_values, six=st.booleans())
def test_any_advert_int_parses_in_range_or_names_the_key(
    version: int | None, value: object, six: bool
) -> None:
    inst: dict[str, Any] = {
        "virtual_ipaddress": ["fe80::1" if six else "192.0.2.100/24"],
        "advert_int": value,
    }
    if version is not None and not (six and version == 2):
        inst["version"] = version
    try:
        c = parse(doc(**inst)).instances[0]
    except ConfigError as e:
        assert {p for p, _ in e.errors} == {"vrrp_instance[0].advert_int"}, e.errors
        return
    if c.version == 3:
        assert c.advert_cs is not None and 1 <= c.advert_cs <= 4095
        assert abs(c.interval - c.advert_cs / 100) < 1e-12
    else:
        assert c.advert_cs is None and isinstance(c.advert_int, int) and 1 <= c.advert_int <= 255
    assert isinstance(c.virtual_ipaddress[0].ip, IPv6Address if six else IPv4Address)


def test_an_ipv4_and_an_ipv6_instance_may_share_a_vrid_but_not_two_of_one_family() -> None:
    d = doc(version=3, virtual_ipaddress=["192.0.2.100/24"])
    d["vrrp_instance"].append(
        {"name": "B", "interface": "eth0", "virtual_router_id": 51, "virtual_ipaddress": ["2001:db8::1/64"]}
    )
    a, b = parse(d).instances
    assert a.key == ("eth0", 51, 4) and b.key == ("eth0", 51, 6)
    d["vrrp_instance"].append(
        {"name": "C", "interface": "eth0", "virtual_router_id": 51, "virtual_ipaddress": ["2001:db8::2/64"]}
    )
    errs = errors_of(d)
    assert has(errs, "vrrp_instance[2].virtual_router_id", "duplicate VRID 51"), errs
