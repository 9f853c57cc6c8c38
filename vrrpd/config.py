"""vrrpd configuration: strict TOML in keepalived's vocabulary, loaded into frozen dataclasses.

Every key has keepalived's name (``virtual_router_id``, ``advert_int``, ``nopreempt``, ``track_script`` ...).
Unknown keys and bad values are errors; :func:`parse` collects *all* of them and raises one
:class:`ConfigError` whose ``errors`` are ``(key path, rule)`` pairs, e.g.
``("vrrp_instance[0].priority", "must be an integer 1..255")``. The validation is table-driven on the toolkit
shared with tcplb (:mod:`rmqfd.cfgkit`): the same error type, unknown keys with suggestions, durations.

Settings keepalived accepts but overrides are applied as keepalived 2.2.7 does and reported in
``Config.warnings`` (``state = "MASTER"`` clears ``nopreempt`` and ``preempt_delay``, ...).

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
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Any, TypeAlias

from rmqfd import cfgkit
from rmqfd.cfgkit import Bad, Errors, Validator

__all__ = [
    "Config",
    "ConfigError",
    "GlobalConfig",
    "InstanceConfig",
    "ProcessConfig",
    "ScriptConfig",
    "TrackInterface",
    "TrackProcess",
    "TrackScript",
    "Vip",
    "default_control_socket",
    "listen_address",
    "load",
    "parse",
    "release_parser",
]

IPAddress: TypeAlias = IPv4Address | IPv6Address
IPInterface: TypeAlias = IPv4Interface | IPv6Interface
MAX_ADVER_INT_CS = 4095  # VRRPv3's 12-bit Max Adver Int: 40.95 s

IFNAME_RE = re.compile(r"^[^/\s:]{1,15}$")  # Linux IFNAMSIZ-1, no slash, blank or colon
NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
LABEL_RE = re.compile(r"^[^/\s]{1,15}$")


class ConfigError(cfgkit.ConfigError):
    """One or more configuration errors, each a ``(key path, rule)`` pair (the toolkit's error type;
    ``lines()`` prefixes the file name, as ``vrrpd --check`` prints them)."""

    def lines(self) -> list[str]:
        """One line per error, ``[source: ]key.path: rule``."""
        prefix = f"{self.source}: " if self.source else ""
        return [f"{prefix}{k}: {r}" for k, r in self.errors]


@dataclass(frozen=True, slots=True)
class Vip:
    """One ``virtual_ipaddress`` entry; ``dev`` defaults to the instance's interface. An IPv6 VIP without a
    prefix length is a /128 (keepalived)."""

    address: IPInterface
    dev: str | None = None
    label: str | None = None

    @property
    def ip(self) -> IPAddress:
        return self.address.ip

    @property
    def family(self) -> int:
        return self.address.version


@dataclass(frozen=True, slots=True)
class TrackScript:
    """A ``track_script`` reference; ``weight`` overrides the script's own weight when set."""

    name: str
    weight: int | None = None


@dataclass(frozen=True, slots=True)
class TrackProcess:
    """A ``track_process`` reference; ``weight`` overrides the process's own weight when set."""

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
class ProcessConfig:
    """A ``[vrrp_track_process.NAME]`` table (keepalived ``vrrp_track_process``; defaults: quorum 1, no
    quorum_max, weight 0, no delays).

    ``process`` is compared with the kernel's process name (``/proc/PID/comm``, at most 15 characters) or,
    with ``full_command`` or ``params``, with ``argv[0]`` of ``/proc/PID/cmdline``; ``params`` (None: not
    compared) with the rest of the argv by ``param_match`` (``exact``, ``partial``: a prefix, ``initial``: a
    prefix whose last element may be longer)."""

    name: str
    process: str
    params: tuple[str, ...] | None = None
    param_match: str = "exact"
    full_command: bool = False
    quorum: int = 1
    quorum_max: int | None = None
    weight: int = 0
    fork_delay: float = 0.0
    terminate_delay: float = 0.0
    scan_interval: float = 1.0


@dataclass(frozen=True, slots=True)
class InstanceConfig:
    """A ``[[vrrp_instance]]`` table."""

    name: str
    interface: str
    virtual_router_id: int
    priority: int = 100
    advert_int: int = 1  # VRRPv2: whole seconds; VRRPv3: see advert_cs
    state: str = "BACKUP"
    nopreempt: bool = False
    preempt_delay: float = 0.0
    auth_type: str | None = None
    auth_pass: str | None = None
    virtual_ipaddress: tuple[Vip, ...] = ()
    mcast_src_ip: IPv4Address | None = None
    unicast_src_ip: IPv4Address | None = None
    unicast_peer: tuple[IPAddress, ...] | None = None  # None: multicast; () : unicast with no peer (FAULT)
    track_script: tuple[TrackScript, ...] = ()
    track_interface: tuple[TrackInterface, ...] = ()
    track_process: tuple[TrackProcess, ...] = ()
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
    version: int = 2  # VRRP version: 2 (RFC 3768) or 3 (RFC 5798; IPv6 instances are always 3)
    advert_cs: int | None = None  # VRRPv3: the advert interval in centiseconds (1..4095); None in VRRPv2
    v3_checksum_as_v2: bool = False  # VRRPv3 over IPv4: send the message-only checksum (keepalived 2.2.8)

    @property
    def family(self) -> int:
        """4, or 6 for an instance whose VIPs are IPv6 (one address family per instance, as keepalived)."""
        return self.virtual_ipaddress[0].family if self.virtual_ipaddress else 4

    @property
    def interval(self) -> float:
        """The advert interval in seconds (fractional in VRRPv3)."""
        return self.advert_cs / 100 if self.advert_cs is not None else float(self.advert_int)

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
    def key(self) -> tuple[str, int, int]:
        """What identifies a virtual router across reloads: interface, VRID and address family (an IPv4 and
        an IPv6 instance may share a VRID: they are separate virtual routers, RFC 5798 section 1)."""
        return (self.interface, self.virtual_router_id, self.family)


@dataclass(frozen=True, slots=True)
class GlobalConfig:
    """The ``[global]`` table."""

    router_id: str = field(default_factory=socket.gethostname)
    script_user: str | None = None
    enable_script_security: bool = False
    control_socket: str | None = None
    notify_timeout: float = 10.0
    metrics_listen: str | None = None  # "ADDRESS:PORT" of the Prometheus HTTP listener; None = off
    vrrp_startup_delay: float = 0.0  # seconds before the instances start (keepalived: bonds still settling)
    version: int = 2  # keepalived vrrp_version: the instances' default VRRP version
    v3_checksum_as_v2: bool = False  # the instances' default for v3_checksum_as_v2


@dataclass(frozen=True, slots=True)
class Config:
    global_: GlobalConfig
    instances: tuple[InstanceConfig, ...]
    scripts: tuple[ScriptConfig, ...]
    source: str = "node.toml"
    processes: tuple[ProcessConfig, ...] = ()
    warnings: tuple[tuple[str, str], ...] = ()  # (key path, what was overridden), keepalived's way

    def script(self, name: str) -> ScriptConfig:
        for s in self.scripts:
            if s.name == name:
                return s
        raise KeyError(name)

    def process(self, name: str) -> ProcessConfig:
        for p in self.processes:
            if p.name == name:
                return p
        raise KeyError(name)

    def warning_lines(self) -> list[str]:
        return [f"{k}: {w}" for k, w in self.warnings]

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
# Validators (rmqfd.cfgkit style: value -> parsed value, or raise Bad(rule)). The rules keep vrrpd's wording.

_NAME_RULE = "must be 1..64 characters from A-Z a-z 0-9 _ . @ -"
_UNICAST_RULE = "must be a unicast IPv4 address (not multicast, loopback, 0.0.0.0 or broadcast)"
_MISSING = object()


def _v_seconds(lo: float, hi: float, *, lo_open: bool = False) -> Validator:
    """A number of seconds (keepalived's unit) or a duration string such as ``"500ms"``."""
    rng = f"> {lo:g} and <= {hi:g}" if lo_open else f"{lo:g}..{hi:g}"
    rule = f'must be a number of seconds {rng} (or a duration such as "500ms")'

    def v(x: Any) -> float:
        try:
            d = cfgkit.parse_duration(x)
        except ValueError:
            raise Bad(rule) from None
        if not ((lo < d) if lo_open else (lo <= d)) or d > hi:
            raise Bad(rule)
        return d

    return v


def _v_name(x: Any) -> str:
    if not isinstance(x, str) or not NAME_RE.match(x):
        raise Bad(_NAME_RULE)
    return x


def _v_pattern(pattern: re.Pattern[str], rule: str) -> Validator:
    def v(x: Any) -> str:
        if not isinstance(x, str) or not x:
            raise Bad("must be a non-empty string")
        if not pattern.match(x):
            raise Bad(rule)
        return x

    return v


def _v_argv(x: Any) -> tuple[str, ...]:
    if (
        not isinstance(x, list)
        or not x
        or not all(isinstance(a, str) for a in x)
        or not x[0]
        or any("\0" in a for a in x)
    ):
        raise Bad("must be a non-empty list of strings (an argv; no shell)")
    return tuple(x)


def _v_ipv4(x: Any) -> IPv4Address:
    try:
        if not isinstance(x, str):
            raise ValueError
        a = IPv4Address(x)
    except ValueError:
        raise Bad('must be an IPv4 address like "192.0.2.21"') from None
    if a.is_multicast or a.is_unspecified or a.is_loopback or a == IPv4Address("255.255.255.255"):
        raise Bad(_UNICAST_RULE)
    return a


def _v_control_socket(x: Any) -> str:
    if not isinstance(x, str) or not x.startswith("/") or len(x.encode()) > 107:
        raise Bad("must be an absolute path of at most 107 bytes")
    return x


def _v_metrics_listen(x: Any) -> str:
    try:
        if not isinstance(x, str):
            raise ValueError(x)
        listen_address(x)
    except ValueError:
        raise Bad(
            'must be "ADDRESS:PORT" with an IP address literal and a port 1..65535, like '
            '"127.0.0.1:9650", "[::1]:9650" or ":9650" (all addresses)'
        ) from None
    return x


_IFNAME_RULE = "must be an interface name (1..15 characters, no '/', ':' or blanks)"
_v_int = cfgkit.v_int
_v_bool = cfgkit.v_bool


def _run(errs: Errors, path: str, v: Validator, x: Any) -> Any:
    """One validator outside a spec table: the value, or None with the error recorded."""
    try:
        return v(x)
    except Bad as b:
        errs.add(path + b.suffix, b.rule)
        return None


def _v_version(x: Any) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x not in (2, 3):
        raise Bad("must be 2 (VRRPv2, RFC 3768) or 3 (VRRPv3, RFC 5798)")
    return int(x)


# ----------------------------------------------------------------------------------------------- global

_GLOBAL_SPEC: dict[str, Validator] = {
    "router_id": _v_name,
    "script_user": _v_pattern(
        re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$"),
        "must be a user name, optionally user:group",
    ),
    "enable_script_security": _v_bool,
    "control_socket": _v_control_socket,
    "notify_timeout": _v_seconds(0, 3600, lo_open=True),
    "metrics_listen": _v_metrics_listen,
    "vrrp_startup_delay": _v_seconds(0, 3600),
    "version": _v_version,
    "v3_checksum_as_v2": _v_bool,
}


def _parse_global(errs: Errors, data: dict[str, Any]) -> GlobalConfig:
    return GlobalConfig(**cfgkit.validate(data, _GLOBAL_SPEC, "global", errs))


# ---------------------------------------------------------------------------------------------- scripts

_SCRIPT_SPEC: dict[str, Validator] = {
    "script": _v_argv,
    "interval": _v_seconds(0, 86400, lo_open=True),
    "timeout": _v_seconds(0, 86400, lo_open=True),
    "rise": _v_int(1, 1000),
    "fall": _v_int(1, 1000),
    "weight": _v_int(-253, 253),
    "init_fail": _v_bool,
    "user": cfgkit.v_str(maxlen=255),
}


def _parse_script(errs: Errors, name: str, data: dict[str, Any]) -> ScriptConfig | None:
    path = cfgkit.join("vrrp_script", name)
    n = len(errs)
    if not NAME_RE.match(name):
        errs.add(path, "script name " + _NAME_RULE)
    kw = cfgkit.validate(data, _SCRIPT_SPEC, path, errs)
    if "script" not in data:
        errs.add(f"{path}.script", "is required")
    if "timeout" not in kw and "interval" in kw:
        kw["timeout"] = kw["interval"]  # keepalived: timeout defaults to the interval
    if len(errs) != n:
        return None
    return ScriptConfig(name=name, **kw)


# -------------------------------------------------------------------------------------------- processes

_PARAM_MATCHES = ("exact", "partial", "initial")


def _v_process(x: Any) -> tuple[str, tuple[str, ...] | None]:
    rule = 'must be a process name ("tcplb") or an argv list (["/usr/bin/tcplb", "-c", "/etc/lb.toml"])'
    if isinstance(x, str):
        if not x or "\0" in x or "\n" in x:
            raise Bad(rule)
        return x, None
    if isinstance(x, list) and x and all(isinstance(a, str) and "\0" not in a for a in x) and x[0]:
        return x[0], tuple(x[1:])
    raise Bad(rule)


_PROCESS_SPEC: dict[str, Validator] = {
    "process": _v_process,
    "param_match": cfgkit.v_choice(*_PARAM_MATCHES),
    "full_command": _v_bool,
    "quorum": _v_int(0, 65535),
    "quorum_max": _v_int(0, 65535),
    "weight": _v_int(-254, 254),
    "delay": _v_seconds(0, 3600),
    "fork_delay": _v_seconds(0, 3600),
    "terminate_delay": _v_seconds(0, 3600),
    "scan_interval": _v_seconds(0.01, 3600),
}


def _parse_process(errs: Errors, name: str, data: dict[str, Any]) -> ProcessConfig | None:
    path = cfgkit.join("vrrp_track_process", name)
    n = len(errs)
    if not NAME_RE.match(name):
        errs.add(path, "process name " + _NAME_RULE)
    kw = cfgkit.validate(data, _PROCESS_SPEC, path, errs)
    if "process" not in data:
        errs.add(f"{path}.process", "is required")
    if len(errs) != n:
        return None
    proc, params = kw.pop("process")
    if "param_match" in kw and params is None:
        params = ()  # keepalived: param_match without parameters means "no parameters at all"
    full = kw.get("full_command", False) or params is not None
    kw["full_command"] = full
    if not full and len(proc.encode()) > 15:
        errs.add(
            f"{path}.process",
            f'"{proc}" is longer than the kernel\'s process name (15 bytes, /proc/PID/comm): set '
            "full_command = true to match argv[0] instead",
        )
        return None
    if "delay" in kw:
        d = kw.pop("delay")
        kw.setdefault("fork_delay", d)
        kw.setdefault("terminate_delay", d)
    qmax = kw.get("quorum_max")
    if qmax is not None:
        if "quorum" not in kw:
            kw["quorum"] = 0 if qmax == 0 else 1
        if qmax < kw["quorum"]:
            errs.add(f"{path}.quorum_max", f"must be >= quorum ({kw['quorum']})")
            return None
    elif kw.get("quorum") == 0:
        errs.add(f"{path}.quorum", "must be an integer 1..65535 (0 only with quorum_max = 0)")
        return None
    return ProcessConfig(name=name, process=proc, params=params, **kw)


# -------------------------------------------------------------------------------------------- instances

_INSTANCE_SPEC: dict[str, Validator] = {
    "name": _v_name,
    "interface": _v_pattern(IFNAME_RE, _IFNAME_RULE),
    "virtual_router_id": _v_int(1, 255),
    "priority": _v_int(1, 255),
    "version": _v_version,
    "v3_checksum_as_v2": _v_bool,
    "state": cfgkit.v_choice("MASTER", "BACKUP", rule='must be "MASTER" or "BACKUP"'),
    "nopreempt": _v_bool,
    "preempt": _v_bool,
    "preempt_delay": _v_seconds(0, 1000),
    "mcast_src_ip": _v_ipv4,
    "unicast_src_ip": _v_ipv4,
    "garp_master_delay": _v_seconds(0, 1000),
    "garp_master_refresh": _v_seconds(0, 86400),
    "garp_master_repeat": _v_int(1, 255),
    "garp_master_refresh_repeat": _v_int(1, 255),
    "garp_lower_prio_repeat": _v_int(0, 255),
    "lower_prio_no_advert": _v_bool,
    "higher_prio_send_advert": _v_bool,
    "notify_master": _v_argv,
    "notify_backup": _v_argv,
    "notify_fault": _v_argv,
    "notify_stop": _v_argv,
    "notify": _v_argv,
}
# keys with their own parsers below
_INSTANCE_SPECIAL = frozenset(
    {
        "advert_int",
        "auth_type",
        "auth_pass",
        "virtual_ipaddress",
        "unicast_peer",
        "track_script",
        "track_interface",
        "track_process",
    }
)


def _parse_vip(errs: Errors, path: str, v: object) -> Vip | None:
    dev = label = None
    if isinstance(v, dict):
        spec: dict[str, Validator] = {
            "address": lambda x: x,
            "dev": _v_pattern(IFNAME_RE, "must be an interface name (1..15 characters)"),
            "label": _v_pattern(LABEL_RE, 'must be a label of 1..15 characters, like "eth0:vip"'),
        }
        n = len(errs)
        kw = cfgkit.validate(v, spec, path, errs)
        if len(errs) != n and (("dev" in v and "dev" not in kw) or ("label" in v and "label" not in kw)):
            return None
        dev, label = kw.get("dev"), kw.get("label")
        if "address" not in v:
            errs.add(f"{path}.address", "is required")
            return None
        addr = v["address"]
        path = f"{path}.address"
    else:
        addr = v
    rule = (
        'must be an IPv4 address with an optional prefix length, like "192.0.2.100/24", or an IPv6 address '
        'like "2001:db8::100/64"'
    )
    if not isinstance(addr, str):
        errs.add(path, rule)
        return None
    if ":" in addr:
        return _parse_vip6(errs, path, addr, dev, label, rule)
    try:
        iface = IPv4Interface(addr)
    except ValueError:
        errs.add(path, rule)
        return None
    ip = iface.ip
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip == IPv4Address("255.255.255.255"):
        errs.add(path, _UNICAST_RULE)
        return None
    if iface.network.prefixlen < 31 and ip in (
        iface.network.network_address,
        iface.network.broadcast_address,
    ):
        errs.add(path, f"{ip} is the network or broadcast address of {iface.network}")
        return None
    if label is not None:
        d = dev or ""
        if d and not (label == d or label.startswith(d + ":")):
            errs.add(
                f"{path.rsplit('.', 1)[0]}.label",
                f'must be "{d}" or start with "{d}:" (the kernel\'s rule for labels)',
            )
            return None
    return Vip(address=iface, dev=dev, label=label)


def _parse_vip6(
    errs: Errors, path: str, addr: str, dev: str | None, label: str | None, rule: str
) -> Vip | None:
    try:
        iface6 = IPv6Interface(addr)  # no prefix length: /128, as keepalived
    except ValueError:
        errs.add(path, rule)
        return None
    ip6 = iface6.ip
    if ip6.is_multicast or ip6.is_unspecified or ip6.is_loopback or ip6.ipv4_mapped is not None:
        errs.add(path, "must be a unicast IPv6 address (not multicast, loopback, :: or IPv4-mapped)")
        return None
    if label is not None:
        errs.add(
            f"{path.rsplit('.', 1)[0]}.label", "IPv6 addresses have no labels (the kernel's are IPv4 only)"
        )
        return None
    return Vip(address=iface6, dev=dev, label=None)


def _parse_vips(errs: Errors, path: str, vl: object, ifname: object) -> tuple[Vip, ...] | None:
    p = f"{path}.virtual_ipaddress"
    if not isinstance(vl, list):
        errs.add(p, "must be a list of addresses or {address, dev, label} tables")
        return None
    if len(vl) > 255:
        errs.add(p, "at most 255 addresses (the advert's count is 8 bits)")
        return None
    n = len(errs)
    vips: list[Vip] = []
    seen: set[IPAddress] = set()
    for i, e in enumerate(vl):
        vp = _parse_vip(errs, f"{p}[{i}]", e)
        if vp is None:
            continue
        if vp.ip in seen:
            errs.add(f"{p}[{i}]", f"duplicate address {vp.ip}")
        seen.add(vp.ip)
        vips.append(vp)
    for i, vp in enumerate(vips):
        label_ok = vp.label is None or vp.dev is not None or not isinstance(ifname, str)
        if not label_ok and vp.label != ifname and not str(vp.label).startswith(f"{ifname}:"):
            rule = f'must be "{ifname}" or start with "{ifname}:" (the kernel\'s rule for labels)'
            errs.add(f"{p}[{i}].label", rule)
    return tuple(vips) if len(errs) == n else None


def _v_peer(x: Any) -> IPAddress:
    if isinstance(x, str) and ":" in x:
        try:
            a6 = IPv6Address(x)
        except ValueError:
            raise Bad('must be an IPv4 or IPv6 address like "192.0.2.22" or "fe80::22"') from None
        if a6.is_multicast or a6.is_unspecified or a6.is_loopback:
            raise Bad("must be a unicast IPv6 address (not multicast, loopback or ::)")
        return a6
    return _v_ipv4(x)


def _parse_peers(errs: Errors, path: str, pl: object) -> tuple[IPAddress, ...] | None:
    p = f"{path}.unicast_peer"
    if not isinstance(pl, list):
        errs.add(p, "must be a list of IPv4 or IPv6 addresses")
        return None
    n = len(errs)
    peers: list[IPAddress] = []
    for i, e in enumerate(pl):
        a = _run(errs, f"{p}[{i}]", _v_peer, e)
        if a is None:
            continue
        if a in peers:
            errs.add(f"{p}[{i}]", f"duplicate peer {a}")
        else:
            peers.append(a)
    return tuple(peers) if len(errs) == n else None


def _parse_refs(
    errs: Errors, path: str, key: str, tl: object, known: set[str], what: str, weight_range: tuple[int, int]
) -> list[tuple[str, int | None]] | None:
    """``track_script`` / ``track_process``: names, or ``{name, weight}`` tables, of known definitions."""
    p0 = f"{path}.{key}"
    if not isinstance(tl, list):
        errs.add(p0, f"must be a list of {what} names or {{name, weight}} tables")
        return None
    n = len(errs)
    refs: list[tuple[str, int | None]] = []
    for i, e in enumerate(tl):
        p = f"{p0}[{i}]"
        name: object = e
        weight: int | None = None
        if isinstance(e, dict):
            kw = cfgkit.validate(e, {"name": lambda x: x, "weight": _v_int(*weight_range)}, p, errs)
            if "name" not in e:
                errs.add(f"{p}.name", "is required")
                continue
            name, weight = kw["name"], kw.get("weight")
            p = f"{p}.name"
        if not isinstance(name, str) or not name:
            errs.add(p, f"must be the name of a [{what}.NAME] table")
            continue
        if name not in known:
            close = cfgkit.suggest(name, known)
            errs.add(p, f'unknown {what} "{name}"' + (f' (did you mean "{close}"?)' if close else ""))
            continue
        if any(r == name for r, _ in refs):
            errs.add(p, f'{what.removeprefix("vrrp_").replace("track_", "")} "{name}" tracked twice')
            continue
        refs.append((name, weight))
    return refs if len(errs) == n else None


def _parse_track_interfaces(errs: Errors, path: str, tl: object) -> tuple[TrackInterface, ...] | None:
    p0 = f"{path}.track_interface"
    if not isinstance(tl, list):
        errs.add(p0, "must be a list of interface names or {name, weight} tables")
        return None
    n = len(errs)
    tis: list[TrackInterface] = []
    for i, e in enumerate(tl):
        p = f"{p0}[{i}]"
        w = 0
        nm: object = e
        if isinstance(e, dict):
            m = len(errs)
            kw = cfgkit.validate(e, {"name": lambda x: x, "weight": _v_int(-253, 253)}, p, errs)
            if len(errs) != m:
                continue
            nm, w = kw.get("name"), kw.get("weight", 0)
            p = f"{p}.name"
        if not isinstance(nm, str) or not IFNAME_RE.match(nm):
            errs.add(p, "must be an interface name (1..15 characters)")
            continue
        tis.append(TrackInterface(name=nm, weight=w))
    return tuple(tis) if len(errs) == n else None


def _parse_instance(
    errs: Errors,
    idx: int,
    data: dict[str, Any],
    scripts: set[str],
    processes: set[str],
    warns: Errors,
    g: GlobalConfig | None = None,
) -> InstanceConfig | None:
    path = f"vrrp_instance[{idx}]"
    n = len(errs)
    kw = cfgkit.validate(data, _INSTANCE_SPEC, path, errs, skip=_INSTANCE_SPECIAL)
    for req in ("interface", "virtual_router_id"):
        if req not in data:
            errs.add(f"{path}.{req}", "is required")
    if "preempt" in kw:
        pre = kw.pop("preempt")
        if "nopreempt" in kw and kw["nopreempt"] == pre:
            errs.add(f"{path}.preempt", "contradicts nopreempt; set only one of them")
        else:
            kw["nopreempt"] = not pre
    if "virtual_ipaddress" in data:
        kw["virtual_ipaddress"] = _parse_vips(errs, path, data["virtual_ipaddress"], data.get("interface"))
    if "unicast_peer" in data:
        kw["unicast_peer"] = _parse_peers(errs, path, data["unicast_peer"])
    v3 = _version_family(errs, warns, path, data, kw, g or GlobalConfig(router_id="-"))
    if v3 and "auth_type" in data:
        errs.add(f"{path}.auth_type", _NO_AUTH_V3)
    if v3 and "auth_pass" in data:
        errs.add(f"{path}.auth_pass", _NO_AUTH_V3)
    if "auth_type" in data and not v3:
        if data["auth_type"] != "PASS":
            errs.add(
                f"{path}.auth_type", 'must be "PASS" (AH is not supported); omit it for no authentication'
            )
        elif "auth_pass" not in data:
            errs.add(f"{path}.auth_pass", "is required when auth_type is set")
        kw["auth_type"] = "PASS"
    if "auth_pass" in data and not v3:
        v = data["auth_pass"]
        if not isinstance(v, str) or not v or len(v.encode("utf-8")) > 8:
            errs.add(f"{path}.auth_pass", "must be a string of 1..8 bytes (PASS authentication)")
        else:
            kw["auth_pass"] = v
            kw["auth_type"] = "PASS"
    if "track_script" in data:
        refs = _parse_refs(
            errs, path, "track_script", data["track_script"], scripts, "vrrp_script", (-253, 253)
        )
        if refs is not None:
            kw["track_script"] = tuple(TrackScript(name=r, weight=w) for r, w in refs)
    if "track_process" in data:
        refs = _parse_refs(
            errs, path, "track_process", data["track_process"], processes, "vrrp_track_process", (-254, 254)
        )
        if refs is not None:
            kw["track_process"] = tuple(TrackProcess(name=r, weight=w) for r, w in refs)
    if "track_interface" in data:
        kw["track_interface"] = _parse_track_interfaces(errs, path, data["track_interface"])
    if len(errs) != n or any(v is None for v in kw.values()):
        return None
    if "name" not in kw:
        kw["name"] = f"VI_{kw['virtual_router_id']}"
    _keepalived_overrides(kw, path, warns)
    return InstanceConfig(**kw)


_NO_AUTH_V3 = (
    "VRRPv3 has no authentication (RFC 5798 section 9; keepalived ignores it): remove it, or set version = 2"
)
_V2_INTERVAL_RULE = (
    "must be an integer 1..255 in VRRPv2 (whole seconds; fractions such as 0.1 need version = 3)"
)
_V3_INTERVAL_RULE = (
    'must be a number of seconds 0.01..40.95 in VRRPv3 (10 ms steps), or a duration such as "100ms"'
)


def _version_family(
    errs: Errors, warns: Errors, path: str, data: dict[str, Any], kw: dict[str, Any], g: GlobalConfig
) -> bool:
    """VRRP version, address family and advert interval of one instance (``kw`` updated); True for v3.

    keepalived's rules: the instance's ``version`` overrides the global one; an instance with IPv6 addresses
    is VRRPv3; one address family per instance (the family of its first address)."""
    vips = kw.get("virtual_ipaddress") or ()
    peers = kw.get("unicast_peer") or ()
    fam = vips[0].family if vips else (peers[0].version if peers else 4)
    for i, v in enumerate(vips):
        if v.family != fam:
            errs.add(
                f"{path}.virtual_ipaddress[{i}]",
                f"IPv{v.family} address in an IPv{fam} instance: one address family per instance (as "
                "keepalived); use another [[vrrp_instance]] for it (it may have the same VRID)",
            )
    for i, a in enumerate(peers):
        if a.version != fam:
            errs.add(
                f"{path}.unicast_peer[{i}]", f"must be an IPv{fam} address (the instance's address family)"
            )
    explicit = kw.get("version")
    version = explicit if explicit is not None else g.version
    if fam == 6:
        if explicit == 2:
            errs.add(f"{path}.version", "IPv6 needs VRRPv3: set version = 3 or omit it")
        version = 3
        for key in ("mcast_src_ip", "unicast_src_ip"):
            if key in data:
                errs.add(
                    f"{path}.{key}",
                    "an IPv6 instance sends from the interface's link-local address (RFC 5798 section "
                    "5.1.2.1): remove it",
                )
        if vips and not vips[0].ip.is_link_local:
            warns.add(
                f"{path}.virtual_ipaddress[0]",
                "the first IPv6 address should be link local (RFC 5798 section 5.2.9; keepalived warns too)",
            )
    kw["version"] = version
    raw = data.get("advert_int", 1)
    if version == 2:
        if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= 255:
            errs.add(f"{path}.advert_int", _V2_INTERVAL_RULE)
        else:
            kw["advert_int"] = raw
        if "v3_checksum_as_v2" in data:
            warns.add(f"{path}.v3_checksum_as_v2", "has no effect in VRRPv2")
        kw.pop("v3_checksum_as_v2", None)
        return False
    try:
        secs = cfgkit.parse_duration(raw)
    except ValueError:
        secs = -1.0
    cs = round(secs * 100) if 0 <= secs < 1e6 else 0
    if not 1 <= cs <= MAX_ADVER_INT_CS:
        errs.add(f"{path}.advert_int", _V3_INTERVAL_RULE)
    else:
        if abs(cs - secs * 100) > 1e-6:
            warns.add(
                f"{path}.advert_int",
                f"VRRPv3 intervals are in units of 10 ms: {secs:g}s rounded to {cs / 100:g}s (as keepalived)",
            )
        kw["advert_cs"] = cs
        kw["advert_int"] = min(255, max(1, round(cs / 100)))
    if not vips:
        errs.add(
            f"{path}.virtual_ipaddress",
            "VRRPv3 needs at least one address (RFC 5798 section 5.2.5; keepalived refuses it too)",
        )
    if "v3_checksum_as_v2" in kw:
        if fam == 6:
            warns.add(
                f"{path}.v3_checksum_as_v2", "has no effect on IPv6 (its checksum is always RFC 8200's)"
            )
    else:
        kw["v3_checksum_as_v2"] = g.v3_checksum_as_v2 and fam == 4
    return True


def _keepalived_overrides(kw: dict[str, Any], path: str, warns: Errors) -> None:
    """What keepalived 2.2.7 does to ``state``, ``priority``, ``nopreempt`` and ``preempt_delay``
    (vrrp.c ``vrrp_complete_instance``); each override is reported as a warning."""
    master = kw.get("state") == "MASTER"
    if master and "priority" not in kw:
        kw["priority"] = 255  # keepalived: no priority and state MASTER -> the address owner
        warns.add(f"{path}.priority", 'not set with state = "MASTER": 255 (the address owner), as keepalived')
    if kw.get("priority") == 255 and kw.get("nopreempt"):
        kw["nopreempt"] = False
        warns.add(
            f"{path}.nopreempt", "ignored: the address owner (priority 255) always preempts (keepalived)"
        )
    if master:
        if kw.get("nopreempt"):
            kw["nopreempt"] = False
            warns.add(
                f"{path}.nopreempt",
                'ignored with state = "MASTER" (keepalived: "nopreempt will not '
                'work with initial state MASTER - clearing")',
            )
        if kw.get("preempt_delay"):
            kw["preempt_delay"] = 0.0
            warns.add(
                f"{path}.preempt_delay",
                'ignored with state = "MASTER" (keepalived: "preempt delay '
                'will not work with initial state MASTER - clearing")',
            )
    if kw.get("preempt_delay") and kw.get("nopreempt"):
        warns.add(f"{path}.preempt_delay", "has no effect with nopreempt (keepalived resets it)")


# -------------------------------------------------------------------------------------------- document

_TOP_KEYS = ("global", "vrrp_instance", "vrrp_script", "vrrp_track_process")


def _named_tables(
    errs: Errors, data: Mapping[str, Any], key: str, parse_one: Callable[[Errors, str, dict[str, Any]], Any]
) -> tuple[list[Any], set[str]]:
    out: list[Any] = []
    names: set[str] = set()
    if key in data:
        t = cfgkit.table(data[key], key, errs, f"a table of [{key}.NAME] tables")
        if t is not None:
            for name, body in t.items():
                names.add(name)
                bt = cfgkit.table(body, cfgkit.join(key, name), errs)
                if bt is not None and (item := parse_one(errs, name, bt)) is not None:
                    out.append(item)
    return out, names


def parse(data: Mapping[str, Any], source: str = "node.toml") -> Config:
    """Validate a decoded TOML document; raise :class:`ConfigError` listing every problem."""
    errs = Errors()
    warns = Errors()
    for k in data:
        if k not in _TOP_KEYS:
            cfgkit.unknown("", k, _TOP_KEYS, errs)
    g = GlobalConfig()
    if "global" in data:
        t = cfgkit.table(data["global"], "global", errs)
        if t is not None:
            g = _parse_global(errs, t)
    scripts, script_names = _named_tables(errs, data, "vrrp_script", _parse_script)
    processes, process_names = _named_tables(errs, data, "vrrp_track_process", _parse_process)
    instances: list[InstanceConfig] = []
    names: dict[str, int] = {}
    raw = data.get("vrrp_instance", _MISSING)
    if raw is _MISSING:
        errs.add("vrrp_instance", "at least one [[vrrp_instance]] is required")
    elif not isinstance(raw, list) or not raw:
        errs.add("vrrp_instance", "must be a non-empty array of tables ([[vrrp_instance]])")
    else:
        keys: dict[tuple[str, int, int], int] = {}
        for i, body in enumerate(raw):
            bt = cfgkit.table(body, f"vrrp_instance[{i}]", errs)
            if bt is None:
                continue
            inst = _parse_instance(errs, i, bt, script_names, process_names, warns, g)
            if inst is None:
                continue
            if inst.name in names:
                errs.add(
                    f"vrrp_instance[{i}].name",
                    f'duplicate instance name "{inst.name}" (also vrrp_instance[{names[inst.name]}])',
                )
                continue
            if inst.key in keys:
                errs.add(
                    f"vrrp_instance[{i}].virtual_router_id",
                    f"duplicate VRID {inst.virtual_router_id} on interface {inst.interface} "
                    f"(also vrrp_instance[{keys[inst.key]}])",
                )
                continue
            names[inst.name] = i
            keys[inst.key] = i
            instances.append(inst)
    # VIPs may not be shared by two instances (two masters would fight over the address).
    owner: dict[IPAddress, str] = {}
    for inst in instances:
        for v in inst.virtual_ipaddress:
            if v.ip in owner:
                errs.add(
                    f"vrrp_instance[{names[inst.name]}].virtual_ipaddress",
                    f"{v.ip} is also a VIP of instance {owner[v.ip]}",
                )
            owner[v.ip] = inst.name
    if errs:
        raise ConfigError(errs.items, source)
    return Config(
        global_=g,
        instances=tuple(instances),
        scripts=tuple(scripts),
        source=source,
        processes=tuple(processes),
        warnings=tuple(warns.items),
    )


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
