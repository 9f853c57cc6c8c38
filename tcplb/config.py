"""tcplb configuration: strict TOML in HAProxy's vocabulary, loaded into frozen dataclasses.

Pure: no sockets, no clock, no asyncio. ``load(path)`` reads a file, everything else works on data.

Layering (HAProxy's):

* ``[defaults]`` holds any listener option; a listener inherits every option it does not set itself.
  The ``check`` and ``default_server`` tables are *merged* key by key, every other option is replaced.
* ``[listen.NAME].default_server`` holds server options every server of that listener inherits.
* a server's own keys override ``default_server``; a server's ``check`` table is merged key by key over the
  listener's ``check`` table (``check = false`` turns checks off for that server, ``check = true`` keeps the
  listener's settings).

Every problem is collected as ``(key path, rule)`` and raised together in one ``ConfigError``; key paths
look like ``listen.rabbitmq.server[1].weight`` (array indexes count from 0).
"""

from __future__ import annotations

import ipaddress
import os
import re
import resource
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple, TypeAlias, cast

from rmqfd import cfgkit

__all__ = [
    "DEFAULT_BALANCE",
    "DEFAULT_PORTS",
    "Balance",
    "CheckConfig",
    "CheckType",
    "Config",
    "ConfigError",
    "GlobalConfig",
    "HttpCheck",
    "InitState",
    "Keepalive",
    "KeepaliveSide",
    "Listener",
    "LogFormat",
    "Management",
    "OnError",
    "Server",
    "StatsConfig",
    "StatsUser",
    "Timeouts",
    "dump",
    "effective_maxconn",
    "format_duration",
    "load",
    "loads",
    "parse",
    "parse_address",
    "parse_duration",
    "redispatch_on_retry",
    "to_toml",
    "warnings",
]

Balance: TypeAlias = Literal["roundrobin", "leastconn", "source"]
CheckType: TypeAlias = Literal["tcp", "amqp", "http", "rabbitmq"]
InitState: TypeAlias = Literal["fully-up", "up", "down", "fully-down"]
OnError: TypeAlias = Literal["mark-down", "sudden-death", "fail-check", "fastinter", "ignore"]
LogFormat: TypeAlias = Literal["tcplog", "json"]
SendProxy: TypeAlias = Literal["none", "v1", "v2"]
OnMarkedDown: TypeAlias = Literal["none", "shutdown-sessions"]

DEFAULT_BALANCE: Final[Balance] = "leastconn"
DEFAULT_GREETING: Final = 2.0  # timeout_greeting when unset
PROTOCOLS: Final = ("tcp", "amqp")
BALANCES: Final = ("leastconn", "roundrobin", "source")
CHECK_TYPES: Final = ("tcp", "amqp", "http", "rabbitmq")
INIT_STATES: Final = ("fully-up", "up", "down", "fully-down")
ON_ERRORS: Final = ("mark-down", "sudden-death", "fail-check", "fastinter", "ignore")
LOG_FORMATS: Final = ("tcplog", "json")
SEND_PROXY: Final = ("none", "v1", "v2")
ON_MARKED_DOWN: Final = ("none", "shutdown-sessions")
LOG_TARGETS: Final = ("stderr", "stdout", "syslog", "none")
HTTP_METHODS: Final = ("GET", "HEAD", "OPTIONS")
MAX_WEIGHT: Final = 256
DEFAULT_PORTS: Final = {"amqp": 5672, "amqps": 5671, "management": 15672}


# --------------------------------------------------------------------------------------------- errors


class ConfigError(cfgkit.ConfigError):
    """All problems found in one configuration: ``errors`` is a list of ``(key path, rule)`` (the toolkit's
    error type, shared with vrrpd; ``lines()`` is what ``tcplb --check`` prints)."""

    def __init__(self, errors: list[tuple[str, str]], source: str = "lb.toml") -> None:
        super().__init__(errors, source)


_Bad = cfgkit.Bad  # a single value failed its rule (internal)
_Errors = cfgkit.Errors


# ------------------------------------------------------------------------------------------ durations

_DURATION_RULE: Final = cfgkit.DURATION_RULE
parse_duration = cfgkit.parse_duration
format_duration = cfgkit.format_duration


# ---------------------------------------------------------------------------------------- addresses

_HOSTNAME_RE: Final = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$"
)
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_NAME_RULE: Final = "must be 1..64 characters from A-Z a-z 0-9 _ . : -"


def _check_host(host: str, *, ip_only: bool) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if ip_only:
        raise ValueError(f'"{host}" is not an IP address')
    if all(p.isdigit() for p in host.rstrip(".").split(".")) or not _HOSTNAME_RE.match(host):
        raise ValueError(f'"{host}" is neither an IP address nor a host name')
    return host


def parse_address(text: str, *, bind: bool = False) -> tuple[str, int]:
    """``"192.0.2.11:5672"``, ``"rmq1:5672"``, ``"[2001:db8::1]:5672"`` -> (host, port).

    With ``bind=True`` the host must be an IP address; ``":5672"`` and ``"*:5672"`` mean ``0.0.0.0``.
    Raises ``ValueError`` with the rule.
    """
    if not isinstance(text, str):
        raise ValueError('must be a string "host:port"')
    s = text.strip()
    if s.startswith("["):
        end = s.find("]")
        if end < 0 or s[end + 1 : end + 2] != ":":
            raise ValueError(f'"{text}": IPv6 addresses are written "[2001:db8::1]:5672"')
        host, port_s = s[1:end], s[end + 2 :]
        try:
            if ipaddress.ip_address(host).version != 6:
                raise ValueError
        except ValueError:
            raise ValueError(f'"{host}" is not an IPv6 address') from None
    else:
        if s.count(":") != 1:
            if s.count(":") > 1:
                raise ValueError(f'"{text}": IPv6 addresses need brackets, e.g. "[2001:db8::1]:5672"')
            raise ValueError(f'"{text}" has no port: write "host:port"')
        host, port_s = s.split(":")
        if host in ("", "*"):
            if not bind:
                raise ValueError(f'"{text}" has no host')
            host = "0.0.0.0"
        host = _check_host(host, ip_only=bind)
    if not port_s.isdigit() or not 1 <= int(port_s) <= 65535:
        raise ValueError(f'"{text}": the port must be 1..65535')
    return host, int(port_s)


def _fmt_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ----------------------------------------------------------------------------------- the dataclasses


@dataclass(frozen=True, slots=True)
class HttpCheck:
    """Settings of an ``http`` check (HAProxy ``option httpchk`` + ``http-check expect status``)."""

    path: str = "/"
    method: str = "GET"
    host: str | None = None  # Host header; None: the checked address
    user: str | None = None  # basic auth
    password: str | None = None
    expect_status: tuple[tuple[int, int], ...] = ((200, 399),)  # inclusive ranges

    def status_ok(self, status: int) -> bool:
        return any(lo <= status <= hi for lo, hi in self.expect_status)


@dataclass(frozen=True, slots=True)
class Management:
    """RabbitMQ's management API for a ``rabbitmq`` check (``check.management``): where to ask, as whom,
    which node, how often. ``host`` None: the server's check address (each node's own API)."""

    host: str | None = None
    port: int = 15672
    user: str | None = None
    password: str | None = None
    node: str | None = None  # e.g. "rabbit@rmq1": also ask /api/nodes/{node} (being_drained, 3.11.19+)
    inter: float = 5.0
    timeout: float = 3.0


@dataclass(frozen=True, slots=True)
class CheckConfig:
    """Active health check of one server (resolved: every fallback already applied).

    ``connect_timeout`` bounds the connect, ``timeout`` the probe after the connect. HAProxy's rule: without
    ``timeout check`` the whole check (connect + answer, ``budget``) is bounded by ``inter``; with it,
    connect = min(timeout connect, inter) and read = timeout check.
    """

    enabled: bool = True
    type: CheckType = "tcp"
    inter: float = 2.0
    fastinter: float = 2.0
    downinter: float = 2.0
    rise: int = 2
    fall: int = 3
    connect_timeout: float = 2.0
    timeout: float = 2.0
    # the whole check (connect + answer) at most this long: inter when timeout_check is unset (HAProxy),
    # None when timeout_check bounds the answer on its own
    budget: float | None = 2.0
    port: int | None = None  # None: the server's port
    addr: str | None = None  # None: the server's host
    http: HttpCheck = field(default_factory=HttpCheck)
    on_error: OnError = "mark-down"  # what a failed live connect does (passive health)
    error_limit: int = 1  # consecutive live-connect failures before on_error applies
    # rabbitmq: the probe user (PLAIN; None: the probe stops at Connection.Start) and vhost
    amqp_user: str | None = None
    amqp_password: str | None = None
    vhost: str = "/"
    management: Management | None = None  # rabbitmq: node state and alarms from the management API


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Timeouts in seconds; ``None`` = no timeout (infinite). See the properties for the effective ones."""

    connect: float | None = None
    client: float | None = None
    server: float | None = None
    tunnel: float | None = None
    client_fin: float | None = None
    server_fin: float | None = None
    queue: float | None = None
    check: float | None = None
    greeting: float | None = None  # protocol = "amqp": the server's Connection.Start (default 2 s)
    # names set to 0 in the file: explicitly infinite, no start-up warning for them
    explicit_infinite: frozenset[str] = frozenset()

    @property
    def client_idle(self) -> float | None:
        """Inactivity timeout, client side: ``tunnel`` if set, else ``client`` (TCP mode is a tunnel)."""
        return self.tunnel if self.tunnel is not None else self.client

    @property
    def server_idle(self) -> float | None:
        return self.tunnel if self.tunnel is not None else self.server

    @property
    def client_fin_idle(self) -> float | None:
        """Inactivity timeout once the client side has sent its FIN (half-closed), else ``client_idle``."""
        return self.client_fin if self.client_fin is not None else self.client_idle

    @property
    def server_fin_idle(self) -> float | None:
        return self.server_fin if self.server_fin is not None else self.server_idle

    @property
    def greeting_wait(self) -> float | None:
        """protocol = "amqp": how long a server may take to greet once it has the client's first bytes."""
        if self.greeting is not None:
            return self.greeting
        return None if "greeting" in self.explicit_infinite else DEFAULT_GREETING

    @property
    def queue_wait(self) -> float | None:
        """Longest wait in a queue for a server slot: ``queue``, else ``connect`` (as HAProxy)."""
        return self.queue if self.queue is not None else self.connect


@dataclass(frozen=True, slots=True)
class KeepaliveSide:
    """SO_KEEPALIVE on one side; None fields keep the kernel's sysctl values. Whole seconds."""

    idle: int | None = None  # TCP_KEEPIDLE
    interval: int | None = None  # TCP_KEEPINTVL
    count: int | None = None  # TCP_KEEPCNT


@dataclass(frozen=True, slots=True)
class Keepalive:
    """TCP keepalive per side (HAProxy ``clitcpka``/``srvtcpka``); None = off on that side."""

    client: KeepaliveSide | None = None
    server: KeepaliveSide | None = None


@dataclass(frozen=True, slots=True)
class Server:
    name: str
    host: str
    port: int
    weight: int = 1
    backup: bool = False
    maxconn: int | None = None  # None: unlimited
    maxqueue: int | None = None  # None: unlimited
    check: CheckConfig = field(default_factory=CheckConfig)
    init_state: InitState = "fully-up"
    disabled: bool = False  # starts in maintenance (MAINT)
    source: str | None = None  # local address for connections to this server
    slowstart: float = 0.0  # seconds; 0: off (HAProxy's slowstart: weight ramped after coming back)
    # PROXY protocol header toward the server (HAProxy's send-proxy / send-proxy-v2); checks send it too
    send_proxy: SendProxy = "none"
    on_marked_down: OnMarkedDown = "none"  # "shutdown-sessions": close its connections when marked DOWN

    @property
    def address(self) -> str:
        return _fmt_address(self.host, self.port)

    @property
    def check_host(self) -> str:
        return self.check.addr if self.check.addr is not None else self.host

    @property
    def check_port(self) -> int:
        return self.check.port if self.check.port is not None else self.port


@dataclass(frozen=True, slots=True)
class Rebalance:
    """``[listen.NAME.rebalance]``: graceful rebalancing and the maximum connection lifetime (both close
    connections through each server's RabbitMQ management API, ``check.management``: the client gets
    ``connection.close`` 320 CONNECTION_FORCED with the reason, never a reset). See ``tcplb.rebalancer``."""

    enabled: bool = False  # rebalance automatically when a server comes back (on demand works regardless)
    tolerance: float = 0.10  # a server may hold up to ceil(share * (1 + tolerance)) connections
    rate: float = 1.0  # closes per second (the listener's, shared by the processes)
    burst: int | None = None  # token bucket size; None: max(1, ceil(rate))
    delay_after_up: float | None = None  # None: the server's slowstart (0 without one: at once)
    settle: float = 10.0  # a closed client counts as on its way back this long
    # never move a connection younger than this: RabbitMQ's management API knows a connection only once its
    # statistics were collected (collect_statistics_interval, 5 s by default; younger ones get 404, seen in
    # the lab), and a connection that was just moved should not be moved again
    min_age: float = 10.0
    max_lifetime: float | None = None  # Envoy's max_connection_duration; None: off
    lifetime_jitter: float = 0.10  # each lifetime is max_lifetime * (1 + U[0, jitter))

    @property
    def active(self) -> bool:
        """Anything to run without being asked (automatic rebalancing or lifetimes)."""
        return self.enabled or self.max_lifetime is not None


@dataclass(frozen=True, slots=True)
class Listener:
    """A ``[listen.NAME]`` section: frontend and backend in one (HAProxy ``listen``)."""

    name: str
    bind: tuple[tuple[str, int], ...]
    servers: tuple[Server, ...] = ()
    balance: Balance = DEFAULT_BALANCE
    hash_type: Literal["consistent"] = "consistent"
    maxconn: int | None = None  # None: the global maxconn
    backlog: int | None = None  # None: the listener's maxconn (the kernel caps it at somaxconn)
    timeouts: Timeouts = field(default_factory=Timeouts)
    retries: int = 3
    redispatch: int = 0  # 0 off; -1 on the last retry (true); P > 0 every P-th retry; -N the N-th before last
    check: CheckConfig = field(
        default_factory=CheckConfig
    )  # the listener-level check (servers merge over it)
    allbackups: bool = False
    tcpka: Keepalive | None = None
    nodelay: bool = True
    splice: bool = False  # data phase through splice(2), zero copy (HAProxy: option splice-*)
    source: str | None = None
    send_proxy: SendProxy = "none"  # the servers' default (each server can set its own)
    # "amqp": a server connection is established when Connection.Start arrives (protocol-aware connect)
    protocol: Literal["tcp", "amqp"] = "tcp"
    log: bool = True
    log_format: LogFormat = "tcplog"
    logasap: bool = False
    dontlognull: bool = False
    rebalance: Rebalance = field(default_factory=Rebalance)

    def server(self, name: str) -> Server:
        for s in self.servers:
            if s.name == name:
                return s
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class GlobalConfig:
    maxconn: int | None = None  # None: derived from RLIMIT_NOFILE, see effective_maxconn()
    hard_stop_after: float | None = None  # None: a graceful stop waits for every connection
    log: str = "stderr"  # stderr | stdout | syslog | none
    log_tag: str = "tcplb"
    syslog_address: str = "/dev/log"  # a unix socket path or "host:port" (UDP), with log = "syslog"
    spread_checks: int = 0  # percent of random jitter on check intervals, 0..50
    workers: int = 1  # relay processes sharing the listeners (SO_REUSEPORT); see tcplb/workers.py
    bufsize: int = 32 * 1024  # bytes per read and queued per direction before backpressure (tune.bufsize)


class StatsUser(NamedTuple):
    """One ``stats.auth`` entry (``"user:password"``). The password never shows in a repr."""

    user: str
    password: str

    def __repr__(self) -> str:
        return f"StatsUser(user={self.user!r}, password=<hidden>)"


STATS_URI: Final = "/stats"
HIDDEN_PASSWORD: Final = "<hidden>"  # what dump() writes instead of a password (and parse() refuses)


@dataclass(frozen=True, slots=True)
class StatsConfig:
    """``[stats]``: the HTTP stats page (HTML, CSV, JSON), ``/metrics`` and, with ``admin``, the admin API."""

    bind: tuple[str, int]
    uri: str = STATS_URI  # the page; ``<uri>;csv``, ``<uri>;json``, ``<uri>;norefresh``
    auth: tuple[StatsUser, ...] = ()  # basic auth (HAProxy's ``stats auth``); empty: read-only pages open
    admin: bool = False  # the POST admin API (needs auth)
    admin_allow_remote: bool = False  # admin on a non-loopback bind address
    refresh: float | None = None  # HTML page auto-refresh


@dataclass(frozen=True, slots=True)
class Config:
    global_: GlobalConfig = field(default_factory=GlobalConfig)
    listeners: tuple[Listener, ...] = ()
    stats: StatsConfig | None = None
    source: str = field(default="lb.toml", compare=False)

    def listener(self, name: str) -> Listener:
        for li in self.listeners:
            if li.name == name:
                return li
        raise KeyError(name)


# ------------------------------------------------------------------------------ pure helper policies


def effective_maxconn(configured: int | None, nofile: int, reserve: int = 64, fds_per_conn: int = 2) -> int:
    """Global maxconn: the configured value, or what ``nofile`` file descriptors allow.

    Each proxied connection needs two descriptors (client + server); ``reserve`` covers listeners, checks,
    logs and the stats server. Always at least 1.
    """
    if configured is not None:
        return configured
    return max(1, (nofile - reserve) // fds_per_conn)


def nofile_plan(
    maxconn: int, fds_per_conn: int, soft: int, hard: int, reserve: int = 64
) -> tuple[int, str | None]:
    """HAProxy's rule for RLIMIT_NOFILE: the soft limit a process with ``maxconn`` connections needs (as
    :func:`effective_maxconn` counts them), raised towards ``hard`` (never lowered), and a warning when even
    ``hard`` cannot cover it. ``-1`` is RLIM_INFINITY. Pure."""
    need = maxconn * fds_per_conn + reserve
    if soft == -1 or soft >= need:
        return soft, None
    if hard == -1 or hard >= need:
        return need, None
    return hard, (
        f"global.maxconn {maxconn} needs {need} file descriptors ({fds_per_conn} per connection + "
        f"{reserve}), but RLIMIT_NOFILE is {hard} (hard limit): connections beyond about "
        f"{max(0, (hard - reserve) // fds_per_conn)} will fail (accept: EMFILE). Raise LimitNOFILE= "
        "(systemd) or ulimit -n, or lower maxconn"
    )


def per_process(n: int, nprocs: int) -> int:
    """A limit divided among ``nprocs`` processes (``global.workers``), rounded up; at least 1."""
    return n if nprocs == 1 else max(1, -(-n // nprocs))


def redispatch_on_retry(retry: int, retries: int, redispatch: int) -> bool:
    """Whether retry number ``retry`` (1..retries) goes to another server (HAProxy ``option redispatch <n>``).

    ``redispatch`` 0: never; P > 0: every P-th retry; -N < 0: the N-th retry before the last one
    (``-1``, i.e. ``redispatch = true``: the last retry).
    """
    if redispatch == 0 or retry < 1 or retry > retries:
        return False
    if redispatch > 0:
        return retry % redispatch == 0
    return retry == retries + 1 + redispatch


# ------------------------------------------------------------------------------ validators (internal)

Validator: TypeAlias = Callable[[Any], Any]


def _v_int(lo: int, hi: int | None = None) -> Validator:
    rule = f"must be an integer {lo}..{hi}" if hi is not None else f"must be an integer >= {lo}"

    def v(x: Any) -> int:
        if isinstance(x, bool) or not isinstance(x, int) or x < lo or (hi is not None and x > hi):
            raise _Bad(rule)
        return x

    return v


def _v_bool(x: Any) -> bool:
    if not isinstance(x, bool):
        raise _Bad("must be true or false")
    return x


def _v_choice(*options: str) -> Validator:
    rule = "must be one of " + ", ".join(f'"{o}"' for o in options)

    def v(x: Any) -> str:
        if not isinstance(x, str) or x not in options:
            raise _Bad(rule)
        return x

    return v


def _v_duration(*, positive: bool = False, maximum: float | None = None) -> Validator:
    def v(x: Any) -> float:
        try:
            d = parse_duration(x)
        except ValueError as e:
            raise _Bad(str(e)) from None
        if positive and d <= 0:
            raise _Bad(_DURATION_RULE + ", greater than 0")
        if maximum is not None and d > maximum:
            raise _Bad(f"must be at most {format_duration(maximum)}")
        return d

    return v


def _v_timeout(x: Any) -> float:
    # 0 means "explicitly no timeout"; kept as 0.0 here, turned into None (+ explicit_infinite) later
    return cast(float, _v_duration(maximum=2_147_483.0)(x))


def _v_ka_seconds(x: Any) -> int:
    try:
        d = parse_duration(x)
    except ValueError as e:
        raise _Bad(str(e)) from None
    if d < 1 or d > 32767 or abs(d - round(d)) > 1e-9:
        raise _Bad('must be a whole number of seconds 1..32767 (e.g. 30 or "30s")')
    return round(d)


def _v_str(*, nonempty: bool = True, maxlen: int = 1024) -> Validator:
    def v(x: Any) -> str:
        if not isinstance(x, str) or (nonempty and not x) or len(x) > maxlen:
            raise _Bad("must be a non-empty string" if nonempty else "must be a string")
        if any(c in x for c in "\r\n\0"):
            raise _Bad("must not contain CR, LF or NUL")
        return x

    return v


def _v_name(x: Any) -> str:
    if not isinstance(x, str) or not _NAME_RE.match(x):
        raise _Bad(_NAME_RULE)
    return x


def _v_ip(x: Any) -> str:
    if not isinstance(x, str):
        raise _Bad("must be an IP address string")
    try:
        return str(ipaddress.ip_address(x))
    except ValueError:
        raise _Bad(f'"{x}" is not an IP address') from None


def _v_host(x: Any) -> str:
    if not isinstance(x, str):
        raise _Bad("must be an IP address or host name string")
    try:
        return _check_host(x, ip_only=False)
    except ValueError as e:
        raise _Bad(str(e)) from None


def _v_server_address(x: Any) -> tuple[str, int]:
    try:
        return parse_address(x)
    except ValueError as e:
        raise _Bad(str(e)) from None


def _v_bind(x: Any) -> tuple[tuple[str, int], ...]:
    items = [x] if isinstance(x, str) else x
    if not isinstance(items, list) or not items:
        raise _Bad('must be an address "ip:port" or a non-empty list of them')
    out: list[tuple[str, int]] = []
    for i, item in enumerate(items):
        try:
            out.append(parse_address(item, bind=True))
        except ValueError as e:
            raise _Bad(str(e), f"[{i}]" if isinstance(x, list) else "") from None
    return tuple(out)


def _v_maxconn_opt(x: Any) -> int | None:
    # HAProxy: 0 means unlimited (server) / the global value (listener)
    v = _v_int(0, 10_000_000)(x)
    return None if v == 0 else cast(int, v)


def _v_redispatch(x: Any) -> int:
    if isinstance(x, bool):
        return -1 if x else 0
    if isinstance(x, int) and -1000 <= x <= 1000:
        return x
    raise _Bad("must be true, false or an integer interval (-1 last retry, P every P-th retry, 0 never)")


def _v_port(x: Any) -> int:
    return cast(int, _v_int(1, 65535)(x))


def _v_status(x: Any) -> tuple[tuple[int, int], ...]:
    rule = 'must be a status (200), a list of statuses ([200, 204]) or a range string ("200-399")'
    items = x if isinstance(x, list) else [x]
    if not items:
        raise _Bad(rule)
    out: list[tuple[int, int]] = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool) and 100 <= item <= 599:
            out.append((item, item))
        elif isinstance(item, str) and (m := re.fullmatch(r"\s*(\d{3})\s*-\s*(\d{3})\s*", item)):
            lo, hi = int(m.group(1)), int(m.group(2))
            if not 100 <= lo <= hi <= 599:
                raise _Bad(rule + "; statuses are 100..599, low-high")
            out.append((lo, hi))
        elif isinstance(item, str) and re.fullmatch(r"\s*[1-5]xx\s*", item):
            d = int(item.strip()[0])
            out.append((d * 100, d * 100 + 99))
        else:
            raise _Bad(rule)
    return tuple(out)


def _v_path(x: Any) -> str:
    s = _v_str()(x)
    if not s.startswith("/") or any(c.isspace() for c in s):
        raise _Bad(
            'must be an absolute URL path without spaces, e.g. "/api/health/checks/ready-to-serve-clients"'
        )
    return cast(str, s)


def _v_log_target(x: Any) -> str:
    return cast(str, _v_choice(*LOG_TARGETS)(x))


def _v_syslog_address(x: Any) -> str:
    s = _v_str()(x)
    if s.startswith("/"):
        return cast(str, s)
    try:
        h, p = parse_address(s)
    except ValueError as e:
        raise _Bad(f"must be a unix socket path or host:port ({e})") from None
    return _fmt_address(h, p)


_MGMT_SPEC: Final[dict[str, Validator]] = {
    "url": _v_str(maxlen=300),
    "port": _v_port,
    "user": _v_str(maxlen=255),
    "password": _v_str(nonempty=False, maxlen=255),
    "node": _v_str(maxlen=255),
    "inter": _v_duration(positive=True, maximum=86400.0),
    "timeout": _v_duration(positive=True, maximum=3600.0),
}


def _mgmt_url(url: str) -> tuple[str, int]:
    """``http://host[:port][/]`` → (host, port); only plain http (the fetcher speaks no TLS)."""
    rest = url.removeprefix("http://")
    if rest == url:
        raise _Bad('url: must start with "http://" (https is not supported: use a local plain-http port)')
    rest = rest.rstrip("/")
    if not rest or "/" in rest or "@" in rest or "?" in rest:
        raise _Bad('url: must be "http://HOST[:PORT]" (no path, no user: set user and password)')
    has_port = "]:" in rest if rest.startswith("[") else ":" in rest
    if not has_port:
        rest += ":80"
    try:
        host, port = parse_address(rest)
    except ValueError as e:
        raise _Bad(f"url: {e}") from None
    return host, port


def _v_management(x: Any) -> dict[str, Any]:
    """A ``management`` table (validated keys; ``{}`` for true), or ``{"enabled": False}`` for false."""
    if isinstance(x, bool):
        return {} if x else {"enabled": False}
    if not isinstance(x, dict):
        raise _Bad('must be a table such as { user = "monitor", password = "...", node = "rabbit@rmq1" }')
    out: dict[str, Any] = {}
    for key, raw in x.items():
        v = _MGMT_SPEC.get(key)
        if v is None:
            known = ", ".join(sorted(_MGMT_SPEC))
            raise _Bad(f"unknown key (known: {known})", f".{key}")
        try:
            out[key] = v(raw)
        except _Bad as b:
            raise _Bad(b.rule, f".{key}{b.suffix}") from None
    if "url" in out:
        try:
            _mgmt_url(out["url"])
        except _Bad as b:
            raise _Bad(b.rule.removeprefix("url: "), ".url") from None
        if "port" in out:
            raise _Bad("set either url or port (port: the server's own address)", ".port")
    return out


_CHECK_SPEC: Final[dict[str, Validator]] = {
    "type": _v_choice(*CHECK_TYPES),
    "inter": _v_duration(positive=True, maximum=86400.0),
    "fastinter": _v_duration(positive=True, maximum=86400.0),
    "downinter": _v_duration(positive=True, maximum=86400.0),
    "rise": _v_int(1, 1000),
    "fall": _v_int(1, 1000),
    "port": _v_port,
    "addr": _v_host,
    "on_error": _v_choice(*ON_ERRORS),
    "error_limit": _v_int(1, 1000),
    # http
    "path": _v_path,
    "method": _v_choice(*HTTP_METHODS),
    "host": _v_str(maxlen=255),
    "user": _v_str(maxlen=255),
    "password": _v_str(nonempty=False, maxlen=255),
    "expect_status": _v_status,
    # rabbitmq
    "vhost": _v_str(maxlen=255),
    "management": _v_management,
}
_HTTP_KEYS: Final = frozenset({"path", "method", "host", "user", "password", "expect_status"})
_RABBITMQ_KEYS: Final = frozenset({"vhost", "management"})

_TIMEOUT_KEYS: Final = (
    "timeout_connect",
    "timeout_client",
    "timeout_server",
    "timeout_tunnel",
    "timeout_client_fin",
    "timeout_server_fin",
    "timeout_queue",
    "timeout_check",
    "timeout_greeting",
)

# options a listener can set, and [defaults] too (plus "check", "default_server", "tcpka": special)
_LISTENER_OPTS: Final[dict[str, Validator]] = {
    "mode": _v_choice("tcp"),
    "balance": _v_choice(*BALANCES),
    "hash_type": _v_choice("consistent"),
    "maxconn": _v_maxconn_opt,
    "backlog": _v_int(1, 1_000_000),
    **dict.fromkeys(_TIMEOUT_KEYS, _v_timeout),
    "retries": _v_int(0, 100),
    "redispatch": _v_redispatch,
    "allbackups": _v_bool,
    "nodelay": _v_bool,
    "splice": _v_bool,
    "source": _v_ip,
    "send_proxy": _v_choice(*SEND_PROXY),
    "protocol": _v_choice(*PROTOCOLS),
    "log": _v_bool,
    "log_format": _v_choice(*LOG_FORMATS),
    "logasap": _v_bool,
    "dontlognull": _v_bool,
}
_SPECIAL_LISTENER: Final = frozenset({"check", "default_server", "tcpka"})

# options a server can set; default_server can set them too, except name/address/check
_SERVER_OPTS: Final[dict[str, Validator]] = {
    "weight": _v_int(0, MAX_WEIGHT),
    "backup": _v_bool,
    "maxconn": _v_maxconn_opt,
    "maxqueue": _v_maxconn_opt,
    "init_state": _v_choice(*INIT_STATES),
    "disabled": _v_bool,
    "source": _v_ip,
    "slowstart": _v_duration(maximum=86400.0),
    "send_proxy": _v_choice(*SEND_PROXY),
    "on_marked_down": _v_choice(*ON_MARKED_DOWN),
}
_SERVER_ONLY: Final = frozenset({"name", "address", "check"})


def _v_bufsize(x: Any) -> int:
    """Bytes: an integer, or a string with a binary unit (``"32k"``, ``"64KiB"``, ``"1m"``)."""
    rule = "must be a size 4k..16m: bytes, or a number with k/m (KiB/MiB), e.g. 32k"
    n = x
    if isinstance(x, str):
        m = re.fullmatch(r"\s*(\d+)\s*(k|kb|kib|m|mb|mib)?\s*", x.lower())
        if m is None:
            raise _Bad(rule)
        n = int(m.group(1)) * {None: 1, "k": 1024, "kb": 1024, "kib": 1024}.get(m.group(2), 1 << 20)
    if isinstance(n, bool) or not isinstance(n, int) or not 4096 <= n <= 16 << 20:
        raise _Bad(rule)
    return n


_GLOBAL_SPEC: Final[dict[str, Validator]] = {
    "maxconn": _v_int(1, 10_000_000),
    "hard_stop_after": _v_duration(maximum=30 * 86400.0),
    "log": _v_log_target,
    "log_tag": _v_name,
    "syslog_address": _v_syslog_address,
    "spread_checks": _v_int(0, 50),
    "workers": _v_int(1, 64),
    "bufsize": _v_bufsize,
}


def _v_stats_uri(x: Any) -> str:
    s = _v_str(maxlen=255)(x)
    if not re.fullmatch(r"/[A-Za-z0-9._~/-]*", s) or "//" in s:
        raise _Bad('must be an absolute URL path such as "/stats" (letters, digits, - . _ ~ and / only)')
    if s == "/metrics" or s == "/api" or s.startswith("/api/"):
        raise _Bad("must not be /metrics or under /api (those paths are taken)")
    return cast(str, s)


_AUTH_RULE: Final = 'must be "user:password" (a non-empty user without ":" and a non-empty password)'


def _v_stats_auth(x: Any) -> tuple[StatsUser, ...]:
    # the rules never quote the value: it holds a password
    items = [x] if isinstance(x, str) else x
    if not isinstance(items, list):
        raise _Bad('must be a list of "user:password" strings')
    out: list[StatsUser] = []
    for i, item in enumerate(items):
        suffix = f"[{i}]" if isinstance(x, list) else ""
        if not isinstance(item, str):
            raise _Bad(_AUTH_RULE, suffix)
        user, sep, pw = item.partition(":")
        if not sep or not user or not pw:
            raise _Bad(_AUTH_RULE, suffix)
        if len(item) > 255 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in item):
            raise _Bad("must be at most 255 characters, without control characters", suffix)
        if pw == HIDDEN_PASSWORD:
            raise _Bad(
                f"{HIDDEN_PASSWORD} is the placeholder of a dump without secrets: set the password", suffix
            )
        if any(u.user == user for u in out):
            raise _Bad(f'user "{user}" is listed twice', suffix)
        out.append(StatsUser(user, pw))
    return tuple(out)


_STATS_SPEC: Final[dict[str, Validator]] = {
    "bind": lambda x: _unwrap_bind_one(x),
    "uri": _v_stats_uri,
    "auth": _v_stats_auth,
    "admin": _v_bool,
    "admin_allow_remote": _v_bool,
    "refresh": _v_duration(positive=True, maximum=86400.0),
}

_KA_SIDE_KEYS: Final = {"idle": _v_ka_seconds, "interval": _v_ka_seconds, "count": _v_int(1, 127)}


def _unwrap_bind_one(x: Any) -> tuple[str, int]:
    try:
        return parse_address(x, bind=True)
    except ValueError as e:
        raise _Bad(str(e)) from None


_join = cfgkit.join
_unknown = cfgkit.unknown
_table = cfgkit.table
_validate = cfgkit.validate


def _check_layer(raw: Any, path: str, errs: _Errors) -> dict[str, Any] | None:
    """A ``check`` value: a table (validated keys), ``true`` (empty layer) or ``false`` (disabled)."""
    if isinstance(raw, bool):
        return {"enabled": raw}
    t = _table(raw, path, errs, 'a table such as { type = "tcp", inter = "2s" }, or true/false')
    if t is None:
        return None
    layer = _validate(t, _CHECK_SPEC, path, errs)
    layer.setdefault("enabled", True)
    return layer


def _merge_check(base: dict[str, Any], over: dict[str, Any] | None) -> dict[str, Any]:
    if over is None:
        return base
    if over.get("enabled") is False:
        return {**base, "enabled": False}
    out = {**base, **over}
    if "management" in base and "management" in over and over["management"].get("enabled") is not False:
        # key by key: the listener gives the credentials, a server its node name (or its own url)
        bm = base["management"]
        m = {**(bm if bm.get("enabled") is not False else {}), **over["management"]}
        if "url" in over["management"]:
            m.pop("port", None)
        elif "port" in over["management"]:
            m.pop("url", None)
        out["management"] = m
    return out


def _ka_side(raw: Any, path: str, errs: _Errors) -> KeepaliveSide | None:
    if isinstance(raw, bool):
        return KeepaliveSide() if raw else None
    t = _table(raw, path, errs, "true, false or a table { idle, interval, count }")
    if t is None:
        return None
    vals = _validate(t, _KA_SIDE_KEYS, path, errs)
    return KeepaliveSide(**vals)


def _tcpka(raw: Any, path: str, errs: _Errors) -> Keepalive | None:
    if isinstance(raw, bool):
        return Keepalive(KeepaliveSide(), KeepaliveSide()) if raw else None
    t = _table(
        raw, path, errs, "true, false, a table { idle, interval, count } or { client = ..., server = ... }"
    )
    if t is None:
        return None
    sides = {"client", "server"} & t.keys()
    if sides:
        for key in t:
            if key not in ("client", "server"):
                _unknown(
                    path,
                    key,
                    ["client", "server"],
                    errs,
                    "with client/server sub-tables, set idle/interval/count inside them",
                )
        client = _ka_side(t["client"], _join(path, "client"), errs) if "client" in t else None
        server = _ka_side(t["server"], _join(path, "server"), errs) if "server" in t else None
        return Keepalive(client, server) if client is not None or server is not None else None
    side = _ka_side(t, path, errs)
    return Keepalive(side, side) if side is not None else None


# ------------------------------------------------------------------------------------------ parsing


def load(path: str | Path) -> Config:
    """Read and parse a TOML file. Raises ``ConfigError`` (also for unreadable files and TOML syntax)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([("", f"cannot read {p}: {e.strerror or e}")], str(p)) from None
    except UnicodeDecodeError as e:
        raise ConfigError([("", f"not UTF-8: {e}")], str(p)) from None
    return loads(text, source=str(p))


def loads(text: str, source: str = "lb.toml") -> Config:
    """Parse TOML text. Raises ``ConfigError``."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError([("", f"TOML syntax: {e}")], source) from None
    return parse(data, source=source)


def parse(data: Mapping[str, Any], source: str = "lb.toml") -> Config:
    """Validate a TOML document (as ``tomllib`` returns it) into a ``Config``; raises ``ConfigError``."""
    errs = _Errors()
    top_known = ["global", "defaults", "listen", "stats"]
    for key in data:
        if key not in top_known:
            hint = (
                "tcplb has listen sections only: use [listen.NAME]" if key in ("frontend", "backend") else ""
            )
            _unknown("", key, top_known, errs, hint)

    # [global]
    g_vals: dict[str, Any] = {}
    if "global" in data and (g := _table(data["global"], "global", errs)) is not None:
        g_vals = _validate(g, _GLOBAL_SPEC, "global", errs)
    glob = GlobalConfig(**g_vals)

    # [defaults]
    d_opts: dict[str, Any] = {}
    d_check: dict[str, Any] = {"enabled": True}
    d_dsrv: dict[str, Any] = {}
    d_tcpka: tuple[bool, Keepalive | None] = (False, None)
    if "defaults" in data and (d := _table(data["defaults"], "defaults", errs)) is not None:
        d_opts, c, d_dsrv, d_tcpka = _listener_layer(d, "defaults", errs, allow=frozenset())
        d_check = _merge_check(d_check, c)

    # [listen.*]
    listeners: list[Listener] = []
    if (
        "listen" in data
        and (lt := _table(data["listen"], "listen", errs, "tables [listen.NAME]")) is not None
    ):
        for name, raw in lt.items():
            lpath = _join("listen", name)
            try:
                _v_name(name)
            except _Bad as b:
                errs.add(lpath, "listener name " + b.rule)
                continue
            t = _table(raw, lpath, errs)
            if t is None:
                continue
            li = _listener(name, t, lpath, errs, d_opts, d_check, d_dsrv, d_tcpka)
            if li is not None:
                listeners.append(li)

    # [stats]
    stats: StatsConfig | None = None
    if "stats" in data and (st := _table(data["stats"], "stats", errs)) is not None:
        removed = ("user", "password")
        for key in removed:
            if key in st:
                errs.add(f"stats.{key}", 'replaced by auth = ["user:password", ...] (HAProxy\'s stats auth)')
        s_vals = _validate({k: v for k, v in st.items() if k not in removed}, _STATS_SPEC, "stats", errs)
        if "bind" not in st:
            errs.add("stats.bind", 'is required (e.g. "127.0.0.1:8404")')
        elif "bind" in s_vals:
            host, port = s_vals["bind"]
            if s_vals.get("admin"):
                if not s_vals.get("auth") and ("auth" in s_vals or "auth" not in st):
                    errs.add(
                        "stats.admin",
                        'needs stats.auth (e.g. ["admin:secret"]): the admin API always asks for a user',
                    )
                if not ipaddress.ip_address(host).is_loopback and not s_vals.get("admin_allow_remote"):
                    errs.add(
                        "stats.admin",
                        f"the admin API on a non-loopback address ({_fmt_address(host, port)}) needs "
                        "stats.admin_allow_remote = true",
                    )
            stats = StatsConfig(**s_vals)

    # cross-listener: no address bound twice
    seen: dict[tuple[str, int], str] = {}
    for li in listeners:
        for i, addr in enumerate(li.bind):
            other = seen.get(addr)
            wildcard = next(
                (
                    n
                    for (h, p), n in seen.items()
                    if p == addr[1] and "0.0.0.0" in (h, addr[0]) and n != li.name
                ),
                None,
            )
            if other is not None or wildcard is not None:
                errs.add(
                    f"{_join('listen', li.name)}.bind[{i}]",
                    f"{_fmt_address(*addr)} is already bound by listen.{other or wildcard}",
                )
            seen.setdefault(addr, li.name)
        if stats is not None and stats.bind in li.bind:
            errs.add("stats.bind", f"{_fmt_address(*stats.bind)} is already bound by listen.{li.name}")

    if not listeners and not errs.items and "listen" not in data:
        errs.add("listen", "at least one [listen.NAME] section is required")

    if errs.items:
        raise ConfigError(errs.items, source)
    return Config(global_=glob, listeners=tuple(listeners), stats=stats, source=source)


def _v_fraction(lo: float, hi: float) -> Validator:
    rule = f"must be a number {lo:g}..{hi:g} (a fraction: 0.1 = 10 %)"

    def v(x: Any) -> float:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not lo <= x <= hi:
            raise _Bad(rule)
        return float(x)

    return v


def _v_rate(x: Any) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not 0 < x <= 100_000:
        raise _Bad("must be a number of closes per second, > 0 and at most 100000 (e.g. 2 or 0.5)")
    return float(x)


_REBALANCE_SPEC: Final[dict[str, Validator]] = {
    "enabled": _v_bool,
    "tolerance": _v_fraction(0.0, 10.0),
    "rate": _v_rate,
    "burst": _v_int(1, 100_000),
    "delay_after_up": _v_duration(maximum=86400.0),
    "settle": _v_duration(maximum=3600.0),
    "min_age": _v_duration(maximum=30 * 86400.0),
    "max_lifetime": _v_duration(positive=True, maximum=365 * 86400.0),
    "lifetime_jitter": _v_fraction(0.0, 1.0),
}


def _rebalance(raw: Any, path: str, errs: _Errors) -> Rebalance | None:
    t = _table(raw, path, errs, "a table such as { enabled = true, tolerance = 0.1, rate = 2 }")
    if t is None:
        return None
    vals = _validate(t, _REBALANCE_SPEC, path, errs)
    return Rebalance(**vals)


def _rebalance_needs_management(rb: Rebalance, servers: Sequence[Server], path: str, errs: _Errors) -> None:
    """Rebalancing and lifetimes close connections through the management API: every server needs one."""
    if not rb.active:
        return
    key = "enabled" if rb.enabled else "max_lifetime"
    for i, s in enumerate(servers):
        if s.check.management is None:
            errs.add(
                _join(path, key),
                f"closes connections through RabbitMQ's management API, but server {s.name} "
                f"({path.removesuffix('.rebalance')}.server[{i}]) has no check.management (set check = "
                '{ type = "rabbitmq", management = { user = ..., password = ... } }; the user needs the '
                "administrator tag)",
            )


def _listener_layer(
    t: Mapping[str, Any], path: str, errs: _Errors, allow: frozenset[str]
) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any], tuple[bool, Keepalive | None]]:
    """Validate the listener options of a [defaults] or [listen.NAME] table.

    Returns (plain options, check layer, default_server options, (tcpka set?, tcpka)).
    """
    if path == "defaults":
        for key in ("bind", "server"):
            if key in t:
                errs.add(_join(path, key), "not allowed in [defaults]: set it in each [listen.NAME]")
        allow = allow | {"bind", "server"}
    opts = _validate(t, _LISTENER_OPTS, path, errs, skip=_SPECIAL_LISTENER | allow)
    check = _check_layer(t["check"], _join(path, "check"), errs) if "check" in t else None
    dsrv: dict[str, Any] = {}
    if "default_server" in t:
        dp = _join(path, "default_server")
        if (dt := _table(t["default_server"], dp, errs)) is not None:
            for key in dt:
                if key in _SERVER_ONLY:
                    why = (
                        "set check options in the listener's check table"
                        if key == "check"
                        else "is per server"
                    )
                    errs.add(_join(dp, key), f"not allowed here ({why})")
            dsrv = _validate({k: v for k, v in dt.items() if k not in _SERVER_ONLY}, _SERVER_OPTS, dp, errs)
    tcpka = (True, _tcpka(t["tcpka"], _join(path, "tcpka"), errs)) if "tcpka" in t else (False, None)
    return opts, check, dsrv, tcpka


def _resolve_check(
    layer: Mapping[str, Any], timeout_check: float | None, timeout_connect: float | None
) -> CheckConfig:
    if not layer.get("enabled", True):
        return CheckConfig(enabled=False)  # settings of a disabled check are meaningless: normalized away
    inter = layer.get("inter", 2.0)
    budget: float | None
    if timeout_check:
        connect_t = min(timeout_connect, inter) if timeout_connect else inter
        read_t = timeout_check
        budget = None
    else:
        connect_t = read_t = budget = inter
    ctype = layer.get("type", "tcp")
    mgmt: Management | None = None
    m = layer.get("management")
    if ctype == "rabbitmq" and m is not None and m.get("enabled") is not False:
        mhost, mport = _mgmt_url(m["url"]) if "url" in m else (None, m.get("port", 15672))
        mgmt = Management(
            host=mhost,
            port=mport,
            user=m.get("user"),
            password=m.get("password"),
            node=m.get("node"),
            inter=m.get("inter", 5.0),
            timeout=m.get("timeout", 3.0),
        )
    rabbit = ctype == "rabbitmq"
    http = (
        HttpCheck()
        if layer.get("type", "tcp") != "http"
        else HttpCheck(
            path=layer.get("path", "/"),
            method=layer.get("method", "GET"),
            host=layer.get("host"),
            user=layer.get("user"),
            password=layer.get("password"),
            expect_status=layer.get("expect_status", ((200, 399),)),
        )
    )
    return CheckConfig(
        enabled=layer.get("enabled", True),
        type=layer.get("type", "tcp"),
        inter=inter,
        fastinter=layer.get("fastinter", inter),
        downinter=layer.get("downinter", inter),
        rise=layer.get("rise", 2),
        fall=layer.get("fall", 3),
        connect_timeout=connect_t,
        timeout=read_t,
        budget=budget,
        port=layer.get("port"),
        addr=layer.get("addr"),
        http=http,
        on_error=layer.get("on_error", "mark-down"),
        error_limit=layer.get("error_limit", 1),
        amqp_user=layer.get("user") if rabbit else None,
        amqp_password=layer.get("password") if rabbit else None,
        vhost=layer.get("vhost", "/") if rabbit else "/",
        management=mgmt,
    )


def _check_http_keys(
    layer: Mapping[str, Any], own: Mapping[str, Any] | None, path: str, errs: _Errors
) -> None:
    """http-only keys set in ``own`` while the merged type is not http (user/password also serve the
    rabbitmq probe), rabbitmq-only keys while it is not rabbitmq."""
    if own is None:
        return
    ctype = layer.get("type", "tcp")
    bad: set[str] = set()
    if ctype == "rabbitmq":
        bad = set(_HTTP_KEYS - {"user", "password"})
        want = '"http"'
    elif ctype != "http":
        bad = set(_HTTP_KEYS)
        want = '"http"'
    for key in sorted(bad & own.keys()):
        errs.add(_join(path, key), f'only applies to type = {want} (the check type here is "{ctype}")')
    if ctype != "rabbitmq":
        for key in sorted(_RABBITMQ_KEYS & own.keys()):
            errs.add(
                _join(path, key), f'only applies to type = "rabbitmq" (the check type here is "{ctype}")'
            )


def _listener(
    name: str,
    t: Mapping[str, Any],
    path: str,
    errs: _Errors,
    d_opts: Mapping[str, Any],
    d_check: Mapping[str, Any],
    d_dsrv: Mapping[str, Any],
    d_tcpka: tuple[bool, Keepalive | None],
) -> Listener | None:
    n_before = len(errs.items)
    l_opts, l_check_own, l_dsrv, l_tcpka = _listener_layer(
        t, path, errs, allow=frozenset({"bind", "server", "rebalance"})
    )
    rebalance = Rebalance()
    if "rebalance" in t:
        rb = _rebalance(t["rebalance"], _join(path, "rebalance"), errs)
        rebalance = rb if rb is not None else rebalance
    opts = {**d_opts, **l_opts}
    check_layer = _merge_check(dict(d_check), l_check_own)
    dsrv = {**d_dsrv, **l_dsrv}
    tcpka = l_tcpka[1] if l_tcpka[0] else d_tcpka[1]
    if l_check_own is not None:
        _check_http_keys(check_layer, l_check_own, _join(path, "check"), errs)
    if ("user" in check_layer) != ("password" in check_layer):
        errs.add(_join(path, "check"), "user and password go together (basic auth)")

    bind: tuple[tuple[str, int], ...] = ()
    if "bind" not in t:
        errs.add(_join(path, "bind"), 'is required (e.g. ["192.0.2.100:5672"])')
    else:
        try:
            bind = _v_bind(t["bind"])
        except _Bad as b:
            errs.add(_join(path, "bind") + b.suffix, b.rule)

    # timeouts: 0 = explicitly infinite
    tvals: dict[str, float | None] = {}
    explicit: set[str] = set()
    for key in _TIMEOUT_KEYS:
        if key in opts:
            short = key.removeprefix("timeout_")
            if opts[key] == 0:
                explicit.add(short)
                tvals[short] = None
            else:
                tvals[short] = opts[key]
    timeouts = Timeouts(**tvals, explicit_infinite=frozenset(explicit))
    listener_check = _resolve_check(check_layer, timeouts.check, timeouts.connect)

    servers: list[Server] = []
    if "server" in t:
        raw_servers = t["server"]
        sp = _join(path, "server")
        if not isinstance(raw_servers, list):
            errs.add(sp, 'must be an array of tables [{ name = "rmq1", address = "192.0.2.11:5672" }, ...]')
        else:
            names: set[str] = set()
            for i, rs in enumerate(raw_servers):
                s = _server(
                    rs,
                    f"{sp}[{i}]",
                    errs,
                    dsrv,
                    check_layer,
                    timeouts,
                    names,
                    opts.get("source"),
                    opts.get("send_proxy", "none"),
                )
                if s is not None:
                    servers.append(s)

    _rebalance_needs_management(rebalance, servers, _join(path, "rebalance"), errs)
    if len(errs.items) != n_before:
        return None
    return Listener(
        name=name,
        bind=bind,
        servers=tuple(servers),
        balance=opts.get("balance", DEFAULT_BALANCE),
        maxconn=opts.get("maxconn"),
        backlog=opts.get("backlog"),
        timeouts=timeouts,
        retries=opts.get("retries", 3),
        redispatch=opts.get("redispatch", 0),
        check=listener_check,
        allbackups=opts.get("allbackups", False),
        tcpka=tcpka,
        nodelay=opts.get("nodelay", True),
        splice=opts.get("splice", False),
        source=opts.get("source"),
        send_proxy=opts.get("send_proxy", "none"),
        protocol=opts.get("protocol", "tcp"),
        log=opts.get("log", True),
        log_format=opts.get("log_format", "tcplog"),
        logasap=opts.get("logasap", False),
        dontlognull=opts.get("dontlognull", False),
        rebalance=rebalance,
    )


def _server(
    raw: Any,
    path: str,
    errs: _Errors,
    dsrv: Mapping[str, Any],
    check_layer: Mapping[str, Any],
    timeouts: Timeouts,
    names: set[str],
    listener_source: str | None,
    listener_send_proxy: str = "none",
) -> Server | None:
    t = _table(raw, path, errs, 'a table { name = "rmq1", address = "192.0.2.11:5672", ... }')
    if t is None:
        return None
    n_before = len(errs.items)
    vals = _validate(t, _SERVER_OPTS, path, errs, skip=_SERVER_ONLY)
    name: str | None = None
    if "name" not in t:
        errs.add(_join(path, "name"), "is required")
    else:
        try:
            name = _v_name(t["name"])
        except _Bad as b:
            errs.add(_join(path, "name"), b.rule)
        else:
            if name in names:
                errs.add(_join(path, "name"), f'"{name}" is already used by another server of this listener')
            names.add(name)
    host, port = "", 0
    if "address" not in t:
        errs.add(_join(path, "address"), 'is required (e.g. "192.0.2.11:5672")')
    else:
        try:
            host, port = _v_server_address(t["address"])
        except _Bad as b:
            errs.add(_join(path, "address"), b.rule)
    own_check = _check_layer(t["check"], _join(path, "check"), errs) if "check" in t else None
    layer = _merge_check(dict(check_layer), own_check)
    if own_check is not None:
        _check_http_keys(layer, own_check, _join(path, "check"), errs)
        if ("user" in layer) != ("password" in layer) and {"user", "password"} & own_check.keys():
            errs.add(_join(path, "check"), "user and password go together (basic auth)")
    merged = {**dsrv, **vals}
    if len(errs.items) != n_before or name is None:
        return None
    merged.setdefault("source", listener_source)
    merged.setdefault("send_proxy", listener_send_proxy)
    return Server(
        name=name,
        host=host,
        port=port,
        check=_resolve_check(layer, timeouts.check, timeouts.connect),
        **merged,
    )


# ------------------------------------------------------------------------------------------ warnings


def _loopback(host: str) -> bool:
    """A loopback address literal (127.0.0.0/8, ::1) or ``localhost``; any other address, a wildcard or a
    name is reachable from elsewhere."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def warnings(cfg: Config) -> list[str]:
    """Start-up warnings, HAProxy-style: unset timeouts (infinite), settings that do nothing."""
    out: list[str] = []
    for li in cfg.listeners:
        to = li.timeouts
        if li.protocol != "amqp" and (to.greeting is not None or "greeting" in to.explicit_infinite):
            out.append(f'listen.{li.name}.timeout_greeting: does nothing without protocol = "amqp"')
        missing = []
        if to.connect is None and "connect" not in to.explicit_infinite:
            missing.append("timeout_connect")
        for side in ("client", "server"):
            if (
                getattr(to, side) is None
                and to.tunnel is None
                and not ({side, "tunnel"} & to.explicit_infinite)
            ):
                missing.append(f"timeout_{side}")
        if missing:
            out.append(
                f"listen.{li.name}: missing timeouts: {', '.join(missing)}; "
                "while not properly invalid, you will certainly encounter various problems with such a "
                "configuration (dead peers are never noticed). Set them in [defaults] (timeout_client = "
                '"3h" is common for AMQP; 0 means "no timeout" on purpose)'
            )
        if li.redispatch and li.retries == 0:
            out.append(f"listen.{li.name}.redispatch: has no effect with retries = 0")
        if not li.servers:
            out.append(f"listen.{li.name}: no server: every connection will be closed (<NOSRV>)")
        elif all(s.backup for s in li.servers):
            out.append(f"listen.{li.name}: only backup servers")
        if cfg.global_.maxconn is not None and li.maxconn is not None and li.maxconn > cfg.global_.maxconn:
            out.append(
                f"listen.{li.name}.maxconn: {li.maxconn} is above global.maxconn {cfg.global_.maxconn}, "
                "which caps it"
            )
        if (
            li.timeouts.client is not None
            and li.timeouts.server is not None
            and li.timeouts.tunnel is None
            and (li.timeouts.client != li.timeouts.server)
        ):
            out.append(
                f"listen.{li.name}: timeout_client ({format_duration(li.timeouts.client)}) differs from "
                f"timeout_server ({format_duration(li.timeouts.server)}); in TCP mode keep them equal"
            )
        for s in li.servers:
            if s.check.enabled and s.check.type == "rabbitmq" and s.check.amqp_user is None:
                out.append(
                    f"listen.{li.name}.server {s.name}: a rabbitmq check without user/password stops at "
                    "Connection.Start, which RabbitMQ logs with a warning on every probe; give it a probe "
                    "user (vhost access only) for the clean handshake"
                )
            if s.check.enabled and s.check.type == "amqp":
                out.append(
                    f"listen.{li.name}.server {s.name}: amqp checks are logged by RabbitMQ on every probe "
                    '(two lines each); type = "tcp" is silent'
                )
    if cfg.global_.workers > 1:
        n = cfg.global_.workers
        if (os.cpu_count() or 1) < n:
            out.append(f"global.workers: {n} relay processes on {os.cpu_count()} CPUs: they compete for them")
        if any(s.maxconn is not None or s.maxqueue is not None for li in cfg.listeners for s in li.servers):
            out.append(
                f"global.workers: per-server maxconn and maxqueue are divided among the {n} processes "
                "(each queues its own clients)"
            )
    st = cfg.stats
    if st is not None and not st.auth and not _loopback(st.bind[0]):
        out.append(
            f"stats: no auth on {_fmt_address(*st.bind)}, which is not a loopback address: anyone who can "
            "reach it reads the stats page and /metrics (server addresses, traffic); set stats.auth or "
            'bind to 127.0.0.1 (HAProxy: "stats auth")'
        )
    if cfg.global_.maxconn is not None:  # (per process with workers)
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        per_conn = 6 if any(li.splice for li in cfg.listeners) else 2
        n = per_process(cfg.global_.maxconn, cfg.global_.workers)
        _, nofile = nofile_plan(n, per_conn, soft, hard)
        if nofile is not None:
            out.append(nofile)
    if cfg.global_.hard_stop_after is None:
        out.append(
            "global.hard_stop_after: unset: a graceful stop waits until every client connection closes "
            "(AMQP connections can last for days)"
        )
    return out


# ------------------------------------------------------------------------------------------- dumping


def _dur(x: float | None, explicit: bool = False) -> float | None:
    if x is None:
        return 0.0 if explicit else None
    return x


def _check_dict(c: CheckConfig, secrets: bool = False) -> dict[str, Any] | bool:
    if not c.enabled:
        return False
    d: dict[str, Any] = {
        "type": c.type,
        "inter": c.inter,
        "fastinter": c.fastinter,
        "downinter": c.downinter,
        "rise": c.rise,
        "fall": c.fall,
        "on_error": c.on_error,
        "error_limit": c.error_limit,
    }
    if c.port is not None:
        d["port"] = c.port
    if c.addr is not None:
        d["addr"] = c.addr
    if c.type == "http":
        h = c.http
        d["path"] = h.path
        d["method"] = h.method
        for k in ("host", "user", "password"):
            if getattr(h, k) is not None:
                d[k] = getattr(h, k)
        if h.password is not None and not secrets:
            d["password"] = HIDDEN_PASSWORD
        d["expect_status"] = [f"{lo}-{hi}" for lo, hi in h.expect_status]
    if c.type == "rabbitmq":
        if c.amqp_user is not None:
            d["user"] = c.amqp_user
        if c.amqp_password is not None:
            d["password"] = c.amqp_password if secrets else HIDDEN_PASSWORD
        d["vhost"] = c.vhost
        if (m := c.management) is not None:
            md: dict[str, Any] = {"inter": m.inter, "timeout": m.timeout}
            if m.host is None:
                md["port"] = m.port
            else:
                md["url"] = f"http://{_fmt_address(m.host, m.port)}"
            for k in ("user", "password", "node"):
                if (v := getattr(m, k)) is not None:
                    md[k] = v if k != "password" or secrets else HIDDEN_PASSWORD
            d["management"] = md
    return d


def _ka_dict(side: KeepaliveSide | None) -> dict[str, Any] | bool:
    if side is None:
        return False
    return {k: v for k in ("idle", "interval", "count") if (v := getattr(side, k)) is not None}


def dump(cfg: Config, *, secrets: bool = False) -> dict[str, Any]:
    """The fully expanded configuration as TOML-able data; ``parse(dump(cfg, secrets=True)) == cfg``.

    Without ``secrets`` the ``stats.auth`` passwords are written as ``<hidden>`` (which ``parse`` refuses),
    so a dump can be shown or logged; it equals ``cfg`` whenever there is no ``stats.auth``.

    Every default is written out, so this is also what ``tcplb --check --dump`` can print. A server's
    ``check`` table is written in full when it differs from its listener's check, and the listener's
    ``timeout_check`` then applies again (connect/read check timeouts are derived, never written).
    """
    g = cfg.global_
    gd: dict[str, Any] = {
        "log": g.log,
        "log_tag": g.log_tag,
        "syslog_address": g.syslog_address,
        "spread_checks": g.spread_checks,
        "workers": g.workers,
        "bufsize": g.bufsize,
    }
    if g.maxconn is not None:
        gd["maxconn"] = g.maxconn
    if g.hard_stop_after is not None:
        gd["hard_stop_after"] = g.hard_stop_after
    out: dict[str, Any] = {"global": gd, "listen": {}}
    for li in cfg.listeners:
        ld: dict[str, Any] = {
            "bind": [_fmt_address(h, p) for h, p in li.bind],
            "balance": li.balance,
            "hash_type": li.hash_type,
            "retries": li.retries,
            "redispatch": li.redispatch,
            "allbackups": li.allbackups,
            "nodelay": li.nodelay,
            "splice": li.splice,
            "log": li.log,
            "log_format": li.log_format,
            "logasap": li.logasap,
            "dontlognull": li.dontlognull,
        }
        if li.maxconn is not None:
            ld["maxconn"] = li.maxconn
        if li.backlog is not None:
            ld["backlog"] = li.backlog
        if li.source is not None:
            ld["source"] = li.source
        if li.send_proxy != "none":
            ld["send_proxy"] = li.send_proxy
        if li.protocol != "tcp":
            ld["protocol"] = li.protocol
        for key in _TIMEOUT_KEYS:
            short = key.removeprefix("timeout_")
            v = _dur(getattr(li.timeouts, short), short in li.timeouts.explicit_infinite)
            if v is not None:
                ld[key] = v
        if li.tcpka is not None:
            ld["tcpka"] = {"client": _ka_dict(li.tcpka.client), "server": _ka_dict(li.tcpka.server)}
        ld["check"] = _check_dict(li.check, secrets)
        if li.rebalance != Rebalance():
            rb = li.rebalance
            rbd: dict[str, Any] = {
                "enabled": rb.enabled,
                "tolerance": rb.tolerance,
                "rate": rb.rate,
                "settle": rb.settle,
                "min_age": rb.min_age,
                "lifetime_jitter": rb.lifetime_jitter,
            }
            for k in ("burst", "delay_after_up", "max_lifetime"):
                if getattr(rb, k) is not None:
                    rbd[k] = getattr(rb, k)
            ld["rebalance"] = rbd
        servers = []
        for s in li.servers:
            sd: dict[str, Any] = {
                "name": s.name,
                "address": s.address,
                "weight": s.weight,
                "backup": s.backup,
                "init_state": s.init_state,
                "disabled": s.disabled,
            }
            if s.slowstart:
                sd["slowstart"] = s.slowstart
            if s.maxconn is not None:
                sd["maxconn"] = s.maxconn
            if s.maxqueue is not None:
                sd["maxqueue"] = s.maxqueue
            if s.source is not None and s.source != li.source:
                sd["source"] = s.source
            if s.send_proxy != li.send_proxy:
                sd["send_proxy"] = s.send_proxy
            if s.on_marked_down != "none":
                sd["on_marked_down"] = s.on_marked_down
            if s.check != li.check:
                sd["check"] = _check_dict(s.check, secrets)
            servers.append(sd)
        ld["server"] = servers
        out["listen"][li.name] = ld
    if cfg.stats is not None:
        st = cfg.stats
        sd2: dict[str, Any] = {
            "bind": _fmt_address(*st.bind),
            "uri": st.uri,
            "admin": st.admin,
            "admin_allow_remote": st.admin_allow_remote,
        }
        if st.auth:
            sd2["auth"] = [f"{u.user}:{u.password if secrets else HIDDEN_PASSWORD}" for u in st.auth]
        if st.refresh is not None:
            sd2["refresh"] = st.refresh
        out["stats"] = sd2
    return out


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        out = []
        for ch in v:
            if ch in ('"', "\\"):
                out.append("\\" + ch)
            elif ord(ch) < 0x20 or ord(ch) == 0x7F:
                out.append(f"\\u{ord(ch):04x}")
            else:
                out.append(ch)
        return '"' + "".join(out) + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else _toml_value(k)


def to_toml(cfg: Config, *, secrets: bool = False) -> str:
    """``dump(cfg, secrets=secrets)`` as TOML text (``loads(to_toml(cfg, secrets=True)) == cfg``)."""
    d = dump(cfg, secrets=secrets)
    lines: list[str] = []

    def section(name: str, table: Mapping[str, Any]) -> None:
        lines.append(f"[{name}]")
        for k, v in table.items():
            if k == "server":
                lines.append("server = [")
                lines.extend(f"  {_toml_value(s)}," for s in v)
                lines.append("]")
            else:
                lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
        lines.append("")

    section("global", d["global"])
    for name, ld in d["listen"].items():
        section(f"listen.{_toml_key(name)}", ld)
    if "stats" in d:
        section("stats", d["stats"])
    return "\n".join(lines)
