"""vrrpd configuration: strict TOML in keepalived's vocabulary, loaded into frozen dataclasses.

Every key has keepalived's name (``virtual_router_id``, ``advert_int``, ``nopreempt``, ``track_script`` ...).
Unknown keys and bad values are errors; :func:`parse` collects *all* of them and raises one
:class:`ConfigError` whose ``errors`` are ``(key path, rule)`` pairs, e.g.
``("vrrp_instance[0].priority", "must be an integer 1..255")``.

Nothing here touches the host: whether an interface exists is checked when the daemon starts, so that
``vrrpd --check`` can validate a file for another machine.
"""

from __future__ import annotations

import binascii
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

__all__ = [
    "Config",
    "ConfigError",
    "GlobalConfig",
    "InstanceConfig",
    "ScriptConfig",
    "TrackInterface",
    "TrackScript",
    "Vip",
    "default_control_socket",
    "listen_address",
    "load",
    "parse",
    "release_parser",
]

IFNAME_RE = re.compile(r"^[^/\s:]{1,15}$")  # Linux IFNAMSIZ-1, no slash, blank or colon
NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
LABEL_RE = re.compile(r"^[^/\s]{1,15}$")


class ConfigError(Exception):
    """One or more configuration errors, each a ``(key path, rule)`` pair."""

    def __init__(self, errors: list[tuple[str, str]], source: str = "") -> None:
        self.errors = errors
        self.source = source
        super().__init__("; ".join(f"{k}: {r}" for k, r in errors))

    def lines(self) -> list[str]:
        """One line per error, ``[source: ]key.path: rule``."""
        prefix = f"{self.source}: " if self.source else ""
        return [f"{prefix}{k}: {r}" for k, r in self.errors]


@dataclass(frozen=True, slots=True)
class Vip:
    """One ``virtual_ipaddress`` entry; ``dev`` defaults to the instance's interface."""

    address: IPv4Interface
    dev: str | None = None
    label: str | None = None

    @property
    def ip(self) -> IPv4Address:
        return self.address.ip


@dataclass(frozen=True, slots=True)
class TrackScript:
    """A ``track_script`` reference; ``weight`` overrides the script's own weight when set."""

    name: str
    weight: int | None = None


@dataclass(frozen=True, slots=True)
class TrackInterface:
    """A ``track_interface`` entry: weight 0 (keepalived's default) means the instance goes to FAULT when the
    interface is down; another weight is subtracted from (negative) or added to (positive) the priority."""

    name: str
    weight: int = 0


@dataclass(frozen=True, slots=True)
class ScriptConfig:
    """A ``[vrrp_script.NAME]`` table (keepalived defaults: interval 1, timeout = interval, rise/fall 1,
    weight 0)."""

    name: str
    script: tuple[str, ...]
    interval: float = 1.0
    timeout: float = 1.0
    rise: int = 1
    fall: int = 1
    weight: int = 0
    user: str | None = None
    init_fail: bool = False


@dataclass(frozen=True, slots=True)
class InstanceConfig:
    """A ``[[vrrp_instance]]`` table."""

    name: str
    interface: str
    virtual_router_id: int
    priority: int = 100
    advert_int: int = 1
    state: str = "BACKUP"
    nopreempt: bool = False
    preempt_delay: float = 0.0
    auth_type: str | None = None
    auth_pass: str | None = None
    virtual_ipaddress: tuple[Vip, ...] = ()
    mcast_src_ip: IPv4Address | None = None
    unicast_src_ip: IPv4Address | None = None
    unicast_peer: tuple[IPv4Address, ...] | None = None  # None: multicast; () : unicast with no peer (FAULT)
    track_script: tuple[TrackScript, ...] = ()
    track_interface: tuple[TrackInterface, ...] = ()
    garp_master_delay: float = 5.0
    garp_master_repeat: int = 5
    garp_master_refresh: float = 0.0
    garp_master_refresh_repeat: int = 1
    garp_lower_prio_repeat: int = 5
    lower_prio_no_advert: bool = False
    higher_prio_send_advert: bool = True
    notify_master: tuple[str, ...] | None = None
    notify_backup: tuple[str, ...] | None = None
    notify_fault: tuple[str, ...] | None = None
    notify_stop: tuple[str, ...] | None = None
    notify: tuple[str, ...] | None = None

    @property
    def unicast(self) -> bool:
        return self.unicast_peer is not None

    @property
    def src_ip(self) -> IPv4Address | None:
        """The configured source address (``unicast_src_ip`` in unicast mode, else ``mcast_src_ip``)."""
        if self.unicast and self.unicast_src_ip is not None:
            return self.unicast_src_ip
        return self.mcast_src_ip if self.mcast_src_ip is not None else self.unicast_src_ip

    @property
    def key(self) -> tuple[str, int]:
        """What identifies a virtual router across reloads: interface and VRID."""
        return (self.interface, self.virtual_router_id)


@dataclass(frozen=True, slots=True)
class GlobalConfig:
    """The ``[global]`` table."""

    router_id: str = field(default_factory=socket.gethostname)
    script_user: str | None = None
    enable_script_security: bool = False
    control_socket: str | None = None
    notify_timeout: float = 10.0
    metrics_listen: str | None = None  # "ADDRESS:PORT" of the Prometheus HTTP listener; None = off


@dataclass(frozen=True, slots=True)
class Config:
    global_: GlobalConfig
    instances: tuple[InstanceConfig, ...]
    scripts: tuple[ScriptConfig, ...]
    source: str = "node.toml"

    def script(self, name: str) -> ScriptConfig:
        for s in self.scripts:
            if s.name == name:
                return s
        raise KeyError(name)

    def control_socket(self) -> str:
        return self.global_.control_socket or default_control_socket(self.global_.router_id, None)


def listen_address(v: str) -> tuple[str | None, int]:
    """``"192.0.2.1:9650"``, ``"[2001:db8::1]:9650"`` or ``":9650"`` (all addresses: host ``None``) ->
    ``(host, port)``; ValueError otherwise. Addresses are literals: no name lookups."""
    from ipaddress import ip_address

    host, sep, port = v.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(v)
    if host.startswith("[") and host.endswith("]"):
        if ip_address(host[1:-1]).version != 6:
            raise ValueError(v)
        return host[1:-1], int(port)
    if host:
        IPv4Address(host)
        return host, int(port)
    return None, int(port)


def default_control_socket(router_id: str | None, config_path: str | None) -> str:
    """``/run/vrrpd/<router_id>.sock``; without a router_id, a name derived from the config file's path."""
    if router_id:
        return f"/run/vrrpd/{router_id}.sock"
    digest = binascii.crc32(os.path.abspath(config_path or "node.toml").encode())
    return f"/run/vrrpd/vrrpd-{digest:08x}.sock"


# ----------------------------------------------------------------------------------------------------
# Validation helpers. Each appends (path, rule) to `errs` and returns a value (or None when invalid).

Errors = list[tuple[str, str]]
_MISSING = object()


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: object) -> bool:
    return (isinstance(v, int | float)) and not isinstance(v, bool)


def _int(errs: Errors, path: str, v: object, lo: int, hi: int) -> int | None:
    if not _is_int(v) or not lo <= v <= hi:  # type: ignore[operator]
        errs.append((path, f"must be an integer {lo}..{hi}"))
        return None
    return v  # type: ignore[return-value]


def _num(errs: Errors, path: str, v: object, lo: float, hi: float, *, lo_open: bool = False) -> float | None:
    ok = _is_num(v) and (lo < v if lo_open else lo <= v) and v <= hi  # type: ignore[operator]
    if not ok:
        rng = f"> {lo:g} and <= {hi:g}" if lo_open else f"{lo:g}..{hi:g}"
        errs.append((path, f"must be a number of seconds {rng}"))
        return None
    return float(v)  # type: ignore[arg-type]


def _bool(errs: Errors, path: str, v: object) -> bool | None:
    if not isinstance(v, bool):
        errs.append((path, "must be true or false"))
        return None
    return v


def _str(
    errs: Errors, path: str, v: object, pattern: re.Pattern[str] | None = None, rule: str = ""
) -> str | None:
    if not isinstance(v, str) or not v:
        errs.append((path, "must be a non-empty string"))
        return None
    if pattern is not None and not pattern.match(v):
        errs.append((path, rule or f"must match {pattern.pattern}"))
        return None
    return v


def _argv(errs: Errors, path: str, v: object) -> tuple[str, ...] | None:
    if (
        not isinstance(v, list)
        or not v
        or not all(isinstance(a, str) for a in v)
        or not v[0]
        or any("\0" in a for a in v)
    ):
        errs.append((path, "must be a non-empty list of strings (an argv; no shell)"))
        return None
    return tuple(v)


def _ipv4(errs: Errors, path: str, v: object) -> IPv4Address | None:
    try:
        if not isinstance(v, str):
            raise ValueError
        a = IPv4Address(v)
    except ValueError:
        errs.append((path, 'must be an IPv4 address like "192.0.2.21"'))
        return None
    if a.is_multicast or a.is_unspecified or a.is_loopback or a == IPv4Address("255.255.255.255"):
        errs.append((path, "must be a unicast IPv4 address (not multicast, loopback, 0.0.0.0 or broadcast)"))
        return None
    return a


def _unknown(errs: Errors, path: str, table: Mapping[str, object], known: set[str]) -> None:
    for k in table:
        if k not in known:
            p = f"{path}.{k}" if path else k
            errs.append((p, "unknown key"))


def _table(errs: Errors, path: str, v: object) -> dict[str, Any] | None:
    if not isinstance(v, dict):
        errs.append((path, "must be a table"))
        return None
    return v


# ----------------------------------------------------------------------------------------------------


_GLOBAL_KEYS = {
    "router_id",
    "script_user",
    "enable_script_security",
    "control_socket",
    "notify_timeout",
    "metrics_listen",
}


def _parse_global(errs: Errors, data: dict[str, Any]) -> GlobalConfig:
    kw: dict[str, Any] = {}
    _unknown(errs, "global", data, _GLOBAL_KEYS)
    if "router_id" in data:
        kw["router_id"] = _str(
            errs,
            "global.router_id",
            data["router_id"],
            NAME_RE,
            "must be 1..64 characters from A-Z a-z 0-9 _ . @ -",
        )
    if "script_user" in data:
        kw["script_user"] = _str(
            errs,
            "global.script_user",
            data["script_user"],
            re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$"),
            "must be a user name, optionally user:group",
        )
    if "enable_script_security" in data:
        kw["enable_script_security"] = _bool(
            errs, "global.enable_script_security", data["enable_script_security"]
        )
    if "control_socket" in data:
        v = data["control_socket"]
        if not isinstance(v, str) or not v.startswith("/") or len(v.encode()) > 107:
            errs.append(("global.control_socket", "must be an absolute path of at most 107 bytes"))
        else:
            kw["control_socket"] = v
    if "notify_timeout" in data:
        kw["notify_timeout"] = _num(
            errs, "global.notify_timeout", data["notify_timeout"], 0, 3600, lo_open=True
        )
    if "metrics_listen" in data:
        v = data["metrics_listen"]
        try:
            if not isinstance(v, str):
                raise ValueError(v)
            listen_address(v)
            kw["metrics_listen"] = v
        except ValueError:
            errs.append(
                (
                    "global.metrics_listen",
                    'must be "ADDRESS:PORT" with an IP address literal and a port 1..65535, like '
                    '"127.0.0.1:9650", "[::1]:9650" or ":9650" (all addresses)',
                )
            )
    return GlobalConfig(**{k: v for k, v in kw.items() if v is not None})


_SCRIPT_KEYS = {"script", "interval", "timeout", "rise", "fall", "weight", "user", "init_fail"}


def _parse_script(errs: Errors, name: str, data: dict[str, Any]) -> ScriptConfig | None:
    path = f"vrrp_script.{name}"
    ok = True
    if not NAME_RE.match(name):
        errs.append((path, "script name must be 1..64 characters from A-Z a-z 0-9 _ . @ -"))
        ok = False
    _unknown(errs, path, data, _SCRIPT_KEYS)
    argv = _argv(errs, f"{path}.script", data["script"]) if "script" in data else None
    if "script" not in data:
        errs.append((f"{path}.script", "is required"))
    kw: dict[str, Any] = {}
    checks: dict[str, Callable[[object], object]] = {
        "interval": lambda v: _num(errs, f"{path}.interval", v, 0, 86400, lo_open=True),
        "timeout": lambda v: _num(errs, f"{path}.timeout", v, 0, 86400, lo_open=True),
        "rise": lambda v: _int(errs, f"{path}.rise", v, 1, 1000),
        "fall": lambda v: _int(errs, f"{path}.fall", v, 1, 1000),
        "weight": lambda v: _int(errs, f"{path}.weight", v, -253, 253),
        "init_fail": lambda v: _bool(errs, f"{path}.init_fail", v),
        "user": lambda v: _str(errs, f"{path}.user", v),
    }
    for k, fn in checks.items():
        if k in data:
            val = fn(data[k])
            if val is None:
                ok = False
            else:
                kw[k] = val
    if "timeout" not in kw and "interval" in kw:
        kw["timeout"] = kw["interval"]  # keepalived: timeout defaults to the interval
    if argv is None or not ok:
        return None
    return ScriptConfig(name=name, script=argv, **kw)


_INSTANCE_KEYS = {
    "name",
    "interface",
    "virtual_router_id",
    "priority",
    "advert_int",
    "state",
    "nopreempt",
    "preempt",
    "preempt_delay",
    "auth_type",
    "auth_pass",
    "virtual_ipaddress",
    "mcast_src_ip",
    "unicast_src_ip",
    "unicast_peer",
    "track_script",
    "track_interface",
    "garp_master_delay",
    "garp_master_repeat",
    "garp_master_refresh",
    "garp_master_refresh_repeat",
    "garp_lower_prio_repeat",
    "lower_prio_no_advert",
    "higher_prio_send_advert",
    "notify_master",
    "notify_backup",
    "notify_fault",
    "notify_stop",
    "notify",
}


def _parse_vip(errs: Errors, path: str, v: object) -> Vip | None:
    dev = label = None
    if isinstance(v, dict):
        _unknown(errs, path, v, {"address", "dev", "label"})
        if "dev" in v:
            dev = _str(
                errs, f"{path}.dev", v["dev"], IFNAME_RE, "must be an interface name (1..15 characters)"
            )
            if dev is None:
                return None
        if "label" in v:
            label = _str(
                errs,
                f"{path}.label",
                v["label"],
                LABEL_RE,
                'must be a label of 1..15 characters, like "eth0:vip"',
            )
            if label is None:
                return None
        if "address" not in v:
            errs.append((f"{path}.address", "is required"))
            return None
        addr = v["address"]
        path = f"{path}.address"
    else:
        addr = v
    rule = 'must be an IPv4 address with an optional prefix length, like "192.0.2.100/24"'
    if not isinstance(addr, str):
        errs.append((path, rule))
        return None
    try:
        iface = IPv4Interface(addr)
    except ValueError:
        errs.append((path, rule))
        return None
    ip = iface.ip
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip == IPv4Address("255.255.255.255"):
        errs.append((path, "must be a unicast IPv4 address (not multicast, loopback, 0.0.0.0 or broadcast)"))
        return None
    if iface.network.prefixlen < 31 and ip in (
        iface.network.network_address,
        iface.network.broadcast_address,
    ):
        errs.append((path, f"{ip} is the network or broadcast address of {iface.network}"))
        return None
    if label is not None:
        d = dev or ""
        if d and not (label == d or label.startswith(d + ":")):
            errs.append(
                (
                    f"{path.rsplit('.', 1)[0]}.label",
                    f'must be "{d}" or start with "{d}:" (the kernel\'s rule for labels)',
                )
            )
            return None
    return Vip(address=iface, dev=dev, label=label)


def _parse_instance(errs: Errors, idx: int, data: dict[str, Any], scripts: set[str]) -> InstanceConfig | None:
    path = f"vrrp_instance[{idx}]"
    ok = True
    _unknown(errs, path, data, _INSTANCE_KEYS)
    kw: dict[str, Any] = {}

    def bad() -> None:
        nonlocal ok
        ok = False

    for req in ("interface", "virtual_router_id"):
        if req not in data:
            errs.append((f"{path}.{req}", "is required"))
            bad()
    if "name" in data:
        v = _str(
            errs, f"{path}.name", data["name"], NAME_RE, "must be 1..64 characters from A-Z a-z 0-9 _ . @ -"
        )
        kw["name"] = v
    if "interface" in data:
        kw["interface"] = _str(
            errs,
            f"{path}.interface",
            data["interface"],
            IFNAME_RE,
            "must be an interface name (1..15 characters, no '/', ':' or blanks)",
        )
    if "virtual_router_id" in data:
        kw["virtual_router_id"] = _int(errs, f"{path}.virtual_router_id", data["virtual_router_id"], 1, 255)
    if "priority" in data:
        kw["priority"] = _int(errs, f"{path}.priority", data["priority"], 1, 255)
    if "advert_int" in data:
        kw["advert_int"] = _int(errs, f"{path}.advert_int", data["advert_int"], 1, 255)
    if "state" in data:
        v = data["state"]
        if v not in ("MASTER", "BACKUP"):
            errs.append((f"{path}.state", 'must be "MASTER" or "BACKUP"'))
            kw["state"] = None
        else:
            kw["state"] = v
    if "nopreempt" in data:
        kw["nopreempt"] = _bool(errs, f"{path}.nopreempt", data["nopreempt"])
    if "preempt" in data:
        pre = _bool(errs, f"{path}.preempt", data["preempt"])
        if pre is None:
            bad()
        elif "nopreempt" in data and kw.get("nopreempt") is not None and kw["nopreempt"] == pre:
            errs.append((f"{path}.preempt", "contradicts nopreempt; set only one of them"))
            bad()
        else:
            kw["nopreempt"] = not pre
    if "preempt_delay" in data:
        kw["preempt_delay"] = _num(errs, f"{path}.preempt_delay", data["preempt_delay"], 0, 1000)
    if "auth_type" in data:
        v = data["auth_type"]
        if v != "PASS":
            errs.append(
                (f"{path}.auth_type", 'must be "PASS" (AH is not supported); omit it for no authentication')
            )
            bad()
        elif "auth_pass" not in data:
            errs.append((f"{path}.auth_pass", "is required when auth_type is set"))
            bad()
        kw["auth_type"] = "PASS"
    if "auth_pass" in data:
        v = data["auth_pass"]
        if not isinstance(v, str) or not v or len(v.encode("utf-8")) > 8:
            errs.append((f"{path}.auth_pass", "must be a string of 1..8 bytes (PASS authentication)"))
            bad()
        else:
            kw["auth_pass"] = v
            kw["auth_type"] = "PASS"
    if "virtual_ipaddress" in data:
        vl = data["virtual_ipaddress"]
        if not isinstance(vl, list):
            errs.append(
                (f"{path}.virtual_ipaddress", "must be a list of addresses or {address, dev, label} tables")
            )
            bad()
        elif len(vl) > 255:
            errs.append((f"{path}.virtual_ipaddress", "at most 255 addresses (the advert's count is 8 bits)"))
            bad()
        else:
            vips: list[Vip] = []
            seen: set[IPv4Address] = set()
            for i, e in enumerate(vl):
                vp = _parse_vip(errs, f"{path}.virtual_ipaddress[{i}]", e)
                if vp is None:
                    bad()
                    continue
                if vp.ip in seen:
                    errs.append((f"{path}.virtual_ipaddress[{i}]", f"duplicate address {vp.ip}"))
                    bad()
                seen.add(vp.ip)
                vips.append(vp)
            kw["virtual_ipaddress"] = tuple(vips)
            ifname = data.get("interface")
            for i, vp in enumerate(vips):
                label_ok = vp.label is None or vp.dev is not None or not isinstance(ifname, str)
                if not label_ok and vp.label != ifname and not str(vp.label).startswith(f"{ifname}:"):
                    rule = f'must be "{ifname}" or start with "{ifname}:" (the kernel\'s rule for labels)'
                    errs.append((f"{path}.virtual_ipaddress[{i}].label", rule))
                    bad()
    for k in ("mcast_src_ip", "unicast_src_ip"):
        if k in data:
            kw[k] = _ipv4(errs, f"{path}.{k}", data[k])
    if "unicast_peer" in data:
        pl = data["unicast_peer"]
        if not isinstance(pl, list):
            errs.append((f"{path}.unicast_peer", "must be a list of IPv4 addresses"))
            bad()
        else:
            peers: list[IPv4Address] = []
            for i, e in enumerate(pl):
                a = _ipv4(errs, f"{path}.unicast_peer[{i}]", e)
                if a is None:
                    bad()
                elif a in peers:
                    errs.append((f"{path}.unicast_peer[{i}]", f"duplicate peer {a}"))
                    bad()
                else:
                    peers.append(a)
            kw["unicast_peer"] = tuple(peers)
    if "track_script" in data:
        tl = data["track_script"]
        if not isinstance(tl, list):
            errs.append((f"{path}.track_script", "must be a list of script names or {name, weight} tables"))
            bad()
        else:
            refs: list[TrackScript] = []
            for i, e in enumerate(tl):
                p = f"{path}.track_script[{i}]"
                name: object = e
                weight: int | None = None
                if isinstance(e, dict):
                    _unknown(errs, p, e, {"name", "weight"})
                    name = e.get("name", _MISSING)
                    if name is _MISSING:
                        errs.append((f"{p}.name", "is required"))
                        bad()
                        continue
                    if "weight" in e:
                        weight = _int(errs, f"{p}.weight", e["weight"], -253, 253)
                        if weight is None:
                            bad()
                    p = f"{p}.name"
                if not isinstance(name, str) or not name:
                    errs.append((p, "must be the name of a [vrrp_script.NAME] table"))
                    bad()
                    continue
                if name not in scripts:
                    errs.append((p, f'unknown vrrp_script "{name}"'))
                    bad()
                    continue
                if any(r.name == name for r in refs):
                    errs.append((p, f'script "{name}" tracked twice'))
                    bad()
                    continue
                refs.append(TrackScript(name=name, weight=weight))
            kw["track_script"] = tuple(refs)
    if "track_interface" in data:
        tl = data["track_interface"]
        if not isinstance(tl, list):
            errs.append(
                (f"{path}.track_interface", "must be a list of interface names or {name, weight} tables")
            )
            bad()
        else:
            tis: list[TrackInterface] = []
            for i, e in enumerate(tl):
                p = f"{path}.track_interface[{i}]"
                w = 0
                nm: object = e
                if isinstance(e, dict):
                    _unknown(errs, p, e, {"name", "weight"})
                    nm = e.get("name")
                    if "weight" in e:
                        ww = _int(errs, f"{p}.weight", e["weight"], -253, 253)
                        if ww is None:
                            bad()
                            continue
                        w = ww
                    p = f"{p}.name"
                if not isinstance(nm, str) or not IFNAME_RE.match(nm):
                    errs.append((p, "must be an interface name (1..15 characters)"))
                    bad()
                    continue
                tis.append(TrackInterface(name=nm, weight=w))
            kw["track_interface"] = tuple(tis)
    for k, lo, hi in (("garp_master_delay", 0, 1000), ("garp_master_refresh", 0, 86400)):
        if k in data:
            kw[k] = _num(errs, f"{path}.{k}", data[k], lo, hi)
    for k, lo, hi in (
        ("garp_master_repeat", 1, 255),
        ("garp_master_refresh_repeat", 1, 255),
        ("garp_lower_prio_repeat", 0, 255),
    ):
        if k in data:
            kw[k] = _int(errs, f"{path}.{k}", data[k], lo, hi)
    if "lower_prio_no_advert" in data:
        kw["lower_prio_no_advert"] = _bool(errs, f"{path}.lower_prio_no_advert", data["lower_prio_no_advert"])
    if "higher_prio_send_advert" in data:
        kw["higher_prio_send_advert"] = _bool(
            errs, f"{path}.higher_prio_send_advert", data["higher_prio_send_advert"]
        )
    for k in ("notify_master", "notify_backup", "notify_fault", "notify_stop", "notify"):
        if k in data:
            kw[k] = _argv(errs, f"{path}.{k}", data[k])
    if any(v is None for v in kw.values()):
        ok = False
    if not ok:
        return None
    if "name" not in kw:
        kw["name"] = f"VI_{kw['virtual_router_id']}"
    if kw.get("priority") == 255 and kw.get("nopreempt"):
        pass  # keepalived accepts it (and ignores nopreempt for the owner); so do we
    return InstanceConfig(**kw)


_TOP_KEYS = {"global", "vrrp_instance", "vrrp_script"}


def parse(data: Mapping[str, Any], source: str = "node.toml") -> Config:
    """Validate a decoded TOML document; raise :class:`ConfigError` listing every problem."""
    errs: Errors = []
    _unknown(errs, "", data, _TOP_KEYS)
    g = GlobalConfig()
    if "global" in data:
        t = _table(errs, "global", data["global"])
        if t is not None:
            g = _parse_global(errs, t)
    scripts: list[ScriptConfig] = []
    script_names: set[str] = set()
    if "vrrp_script" in data:
        t = _table(errs, "vrrp_script", data["vrrp_script"])
        if t is not None:
            for name, body in t.items():
                script_names.add(name)
                bt = _table(errs, f"vrrp_script.{name}", body)
                if bt is None:
                    continue
                s = _parse_script(errs, name, bt)
                if s is not None:
                    scripts.append(s)
    instances: list[InstanceConfig] = []
    names: dict[str, int] = {}
    raw = data.get("vrrp_instance", _MISSING)
    if raw is _MISSING:
        errs.append(("vrrp_instance", "at least one [[vrrp_instance]] is required"))
    elif not isinstance(raw, list) or not raw:
        errs.append(("vrrp_instance", "must be a non-empty array of tables ([[vrrp_instance]])"))
    else:
        keys: dict[tuple[str, int], int] = {}
        for i, body in enumerate(raw):
            bt = _table(errs, f"vrrp_instance[{i}]", body)
            if bt is None:
                continue
            inst = _parse_instance(errs, i, bt, script_names)
            if inst is None:
                continue
            if inst.name in names:
                errs.append(
                    (
                        f"vrrp_instance[{i}].name",
                        f'duplicate instance name "{inst.name}" (also vrrp_instance[{names[inst.name]}])',
                    )
                )
                continue
            if inst.key in keys:
                errs.append(
                    (
                        f"vrrp_instance[{i}].virtual_router_id",
                        f"duplicate VRID {inst.virtual_router_id} on interface {inst.interface} "
                        f"(also vrrp_instance[{keys[inst.key]}])",
                    )
                )
                continue
            names[inst.name] = i
            keys[inst.key] = i
            instances.append(inst)
    # VIPs may not be shared by two instances (two masters would fight over the address).
    owner: dict[IPv4Address, str] = {}
    for inst in instances:
        for v in inst.virtual_ipaddress:
            if v.ip in owner:
                idx = names[inst.name]
                errs.append(
                    (
                        f"vrrp_instance[{idx}].virtual_ipaddress",
                        f"{v.ip} is also a VIP of instance {owner[v.ip]}",
                    )
                )
            owner[v.ip] = inst.name
    if errs:
        raise ConfigError(errs, source)
    return Config(global_=g, instances=tuple(instances), scripts=tuple(scripts), source=source)


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML file. Syntax errors become a ConfigError with the parser's message."""
    p = os.fspath(path)
    try:
        with open(p, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError([("(file)", f"cannot read: {e.strerror or e}")], str(p)) from None
    import tomllib  # here, not at the top: release_parser() can then drop it

    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError([("(file)", "must be UTF-8")], str(p)) from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([("(syntax)", f"invalid TOML: {e}")], str(p)) from None
    cfg = parse(data, str(p))
    if cfg.global_.control_socket is None and "router_id" not in data.get("global", {}):
        # No router_id: derive the socket name from the config path so that daemons sharing a hostname
        # (network namespaces share the UTS namespace) do not collide.
        cfg = replace(cfg, global_=replace(cfg.global_, control_socket=default_control_socket(None, str(p))))
    return cfg


def release_parser() -> None:
    """Forget the TOML parser (and the regexes it compiled) once the daemon has its configuration: about
    0.1 MiB of a long-running daemon's RSS for a module used only at start and reload. The next load()
    imports it again."""
    import gc
    import re
    import sys

    for name in [m for m in sys.modules if m == "tomllib" or m.startswith("tomllib.")]:
        del sys.modules[name]
    re.purge()
    gc.collect()
