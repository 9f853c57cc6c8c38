"""``tcplb import haproxy.cfg``, ``tcplb import --keepalived keepalived.conf``: lb.toml from the old daemons.

Pure mappings from the trees :mod:`rmqfd.haconf` and :mod:`rmqfd.kaconf` read, to commented TOML, with
everything that does not carry over in a :class:`rmqfd.migrate.Report`.

HAProxy (``mode tcp`` proxies, HAProxy's semantics):

* ``listen NAME`` is ``[listen.NAME]``; ``frontend NAME`` with ``default_backend B`` (or an unconditional
  ``use_backend B``) is ``[listen.NAME]`` with B's servers and server-side settings. The last ``defaults``
  section before a proxy (or the one named by ``from``) fills in what the proxy does not set.
* Values are written out, never left to tcplb's defaults where HAProxy's differ: ``balance roundrobin``
  (HAProxy's default; tcplb's is leastconn), ``check = false`` on servers without ``check``, live errors
  ignored unless ``observe layer4`` (``on_error``, HAProxy's default ``fail-check``, ``error-limit`` 10),
  ``log = false`` for proxies without a ``log`` line.
* Timeouts without a unit are milliseconds; ``contimeout``/``clitimeout``/``srvtimeout`` are the old
  names of ``timeout connect/client/server``.
* A ``mode http`` proxy that only serves ``stats`` becomes ``[stats]``; one that proxies HTTP is not
  imported (unsupported).

keepalived LVS (``virtual_server IP PORT``): one listener per virtual server, named
``vs_IP_PORT``; real servers named ``IP:PORT``; ``lb_algo`` rr/wrr -> roundrobin, lc/wlc -> leastconn,
sh -> source; the checkers' ``delay_loop``/``retry``/``delay_before_retry``/``connect_timeout`` become
inter/fall/fastinter/the check timeouts (keepalived: up after one success, down after retry + 1
failures).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any

from rmqfd import haconf, kaconf
from rmqfd.migrate import (
    Report,
    Rows,
    Table,
    check_with,
    comment,
    convert_with,
    document,
    import_file,
    import_parser,
    toml_key,
)
from tcplb.config import parse_address

__all__ = ["check_text", "convert_haproxy", "convert_lvs", "main"]

_TIME_RE = re.compile(r"^(\d{1,12})(us|ms|s|m|h|d)?$")
_UNIT_MS = {"us": 0.001, "ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1}


def _ms(text: str) -> float | None:
    """HAProxy's time format: digits and an optional unit (no unit: milliseconds)."""
    m = _TIME_RE.match(text)
    if m is None:
        return None
    return int(m.group(1)) * _UNIT_MS[m.group(2)]


def _dur(ms: float) -> str:
    """A tcplb duration string for a number of milliseconds."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{int(ms // size)}{unit}"
    if ms == int(ms):
        return f"{int(ms)}ms"
    return f"{round(ms * 1000)}us"


def _send_proxy(*layers: dict[str, _Val]) -> _Val:
    """The send_proxy value of PROXY flags set layer over layer (default-server, then server): HAProxy
    sends v2 when send-proxy-v2 is on, else v1 when send-proxy is on."""
    flags: dict[str, _Val] = {}
    for layer in layers:
        flags.update(layer)
    for version in ("v2", "v1"):
        f = flags.get(version)
        if f is not None and f.value:
            return _Val(version, f.where)
    off = [f.where for f in flags.values()]
    return _Val("none", off[-1] if off else "")


def _strip_family(addr: str) -> tuple[str, bool]:
    """``addr`` without HAProxy's address-family prefix (``ipv4@``, ``tcp6@``...), and whether it is a TCP/IP
    address (not a unix socket path, ``fd@``, ``abns@``...)."""
    for pre in ("ipv4@", "ipv6@", "tcp@", "tcp4@", "tcp6@"):
        addr = addr.removeprefix(pre)
    return addr, not (addr.startswith("/") or "@" in addr)


def _name(text: str) -> str:
    """A tcplb name (1..64 of A-Z a-z 0-9 _ . : -) from an HAProxy or LVS name."""
    s = re.sub(r"[^A-Za-z0-9_.:-]", "_", text)[:64]
    return s or "_"


# ================================================================================================ HAProxy


@dataclass
class _Val:
    value: Any
    where: str
    note: str = ""


@dataclass
class _Srv:
    name: str
    where: str
    host: str | None = None
    port: int | None = None
    opts: dict[str, _Val] = field(default_factory=dict)  # weight, backup, maxconn, maxqueue, disabled, source
    check: dict[str, _Val] = field(
        default_factory=dict
    )  # inter, fastinter, downinter, rise, fall, port, addr
    checked: _Val | None = None  # "check" given (True) or "no-check" (False)
    observe: _Val | None = None
    # PROXY protocol flags as HAProxy keeps them ("v1": send-proxy, "v2": send-proxy-v2[-ssl[-cn]]; the
    # no-* forms clear them); v2 wins when both are set (HAProxy's make_proxy_line)
    pp: dict[str, _Val] = field(default_factory=dict)
    check_pp: _Val | None = None  # "check-send-proxy" (True) or "no-check-send-proxy" (False)


@dataclass
class _Proxy:
    kind: str
    name: str
    where: str
    opts: dict[str, _Val] = field(default_factory=dict)  # tcplb listener keys
    ka: dict[str, _Val] = field(default_factory=dict)  # "client"/"server" -> bool; "client.idle"... -> int
    chk: dict[str, _Val] = field(default_factory=dict)  # check table keys (type, path, method...)
    dsrv: _Srv = field(default_factory=lambda: _Srv("default-server", ""))
    servers: list[_Srv] = field(default_factory=list)
    binds: list[_Val] = field(default_factory=list)  # value: (host, port)
    mode: _Val | None = None
    log: _Val | None = None
    stats: dict[str, _Val] = field(default_factory=dict)
    backend: _Val | None = None
    disabled: _Val | None = None
    http_only: list[str] = field(default_factory=list)  # where of http-only lines (ACL routing etc.)

    def copy_from(self, d: _Proxy) -> None:
        self.opts = dict(d.opts)
        self.ka = dict(d.ka)
        self.chk = dict(d.chk)
        self.dsrv = _Srv(
            "default-server",
            d.dsrv.where,
            opts=dict(d.dsrv.opts),
            check=dict(d.dsrv.check),
            checked=d.dsrv.checked,
            observe=d.dsrv.observe,
            pp=dict(d.dsrv.pp),
            check_pp=d.dsrv.check_pp,
        )
        self.mode = d.mode
        self.log = d.log


# the listener keys copied as they are, in this order: from the frontend's settings, then the backend's
# (balance is written on its own, before them)
_FRONT_KEYS = (
    "maxconn",
    "backlog",
    "timeout_client",
    "timeout_client_fin",
    "log_format",
    "dontlognull",
    "logasap",
)
_BACK_KEYS = (
    "timeout_connect",
    "timeout_server",
    "timeout_server_fin",
    "timeout_queue",
    "timeout_check",
    "timeout_tunnel",
    "retries",
    "redispatch",
    "allbackups",
    "source",
    "splice",
)

_TIMEOUTS = {
    "connect": "timeout_connect",
    "client": "timeout_client",
    "server": "timeout_server",
    "queue": "timeout_queue",
    "check": "timeout_check",
    "tunnel": "timeout_tunnel",
    "client-fin": "timeout_client_fin",
    "server-fin": "timeout_server_fin",
}
_HTTP_TIMEOUTS = {"http-request", "http-keep-alive", "tarpit"}
_OLD_TIMEOUTS = {"contimeout": "connect", "clitimeout": "client", "srvtimeout": "server"}

_GLOBAL_HARMLESS = {
    "daemon": "tcplb runs in the foreground under systemd",
    "pidfile": "systemd tracks the process",
    "chroot": "use the systemd unit's RootDirectory=/ProtectSystem=",
    "user": "use the systemd unit's User=",
    "group": "use the systemd unit's Group=",
    "uid": "use the systemd unit's User=",
    "gid": "use the systemd unit's Group=",
    "quiet": "",
    "debug": "use --log-level",
    "nbthread": "tcplb runs one event loop per relay process",
    "ulimit-n": "tcplb derives its limits from RLIMIT_NOFILE (LimitNOFILE= in the systemd unit)",
    "node": "",
    "description": "",
    "master-worker": "",
    "localpeer": "",
    "log-send-hostname": "",
    "ca-base": "no TLS",
    "crt-base": "no TLS",
    "stats": "no admin socket",
    "cpu-map": "use the systemd unit's CPUAffinity=",
    "insecure-fork-wanted": "",
    "hard-stop-after": "",
    "maxsslconn": "no TLS",
    "maxconnrate": "",
    "server-state-file": "server states are not kept across restarts (servers start as init_state)",
    "server-state-base": "server states are not kept across restarts",
    "pp2-never-send-local": "",
    "busy-polling": "",
    "noepoll": "",
    "nopoll": "",
    "nosplice": "",
    "set-dumpable": "",
    "strict-limits": "",
    "log-tag": "",
    "spread-checks": "",
    "maxpipes": "",
    "unix-bind": "",
    "expose-experimental-directives": "",
}


# server options with an integer value: option -> (table of _Srv, key, range or None, error message)
_SRV_INTS: dict[str, tuple[str, str, int | None, int | None, str]] = {
    "rise": ("check", "rise", 1, 1000, "{o} '{v}' must be an integer 1..1000"),
    "fall": ("check", "fall", 1, 1000, "{o} '{v}' must be an integer 1..1000"),
    "port": ("check", "port", 1, 65535, "port '{v}' must be 1..65535"),
    "error-limit": ("check", "error_limit", 1, 1000, "error-limit '{v}' must be an integer 1..1000"),
    "weight": ("opts", "weight", 0, 256, "weight '{v}' must be an integer 0..256 (HAProxy refuses it)"),
    "maxconn": ("opts", "maxconn", None, None, "{o} '{v}' must be an integer"),
    "maxqueue": ("opts", "maxqueue", None, None, "{o} '{v}' must be an integer"),
}
# server options with one of a few words: option -> (table of _Srv, key, the words, error message)
_SRV_CHOICES: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "on-error": (
        "check",
        "on_error",
        ("fastinter", "fail-check", "sudden-death", "mark-down"),
        "on-error '{v}': must be fastinter, fail-check, sudden-death or mark-down",
    ),
    "init-state": (
        "opts",
        "init_state",
        ("fully-up", "up", "down", "fully-down"),
        "init-state '{v}': must be fully-up, up, down or fully-down",
    ),
}
# every server option that takes a value and is imported (server_value)
_SRV_VALUED = frozenset(
    [
        *_SRV_INTS,
        *_SRV_CHOICES,
        *("inter", "fastinter", "downinter", "addr", "observe", "source", "slowstart"),
        *("on-marked-down", "on-marked-up"),
    ]
)
# flag options: option -> (attribute of _Srv, key in it (None: the attribute itself), value)
_SRV_FLAGS: dict[str, tuple[str, str | None, bool]] = {
    "check": ("checked", None, True),
    "no-check": ("checked", None, False),
    "backup": ("opts", "backup", True),
    "no-backup": ("opts", "backup", False),
    "disabled": ("opts", "disabled", True),
    "enabled": ("opts", "disabled", False),
    "no-send-proxy": ("pp", "v1", False),
    "no-send-proxy-v2": ("pp", "v2", False),
    "check-send-proxy": ("check_pp", None, True),
    "no-check-send-proxy": ("check_pp", None, False),
}
# options with a value or not that are only noted (server_option_note); "tfo" takes none
_SRV_NOTED = frozenset(
    [
        "id",
        "cookie",
        "init-addr",
        "resolve-prefer",
        "resolve-net",
        "resolve-opts",
        "redir",
        "pool-max-conn",
        "pool-purge-delay",
        "max-reuse",
        "tfo",
        "alpn",
        "proto",
        "minconn",
        "check-sni",
        "sni",
        "crt",
        "ca-file",
        "verify",
        "ciphers",
        "ciphersuites",
        "namespace",
        "agent-port",
        "agent-inter",
        "agent-send",
        "agent-addr",
        "log-proto",
        "track",
        "resolvers",
        "check-proto",
        "check-alpn",
        "hash-key",
        "usesrc",
        "pool-low-conn",
        "set-proxy-v2-tlv-fmt",
        "shard",
        "ws",
        "guid",
        "agent-check-port",
    ]
)


def _bind_opts(kind: str, takes_arg: bool, *names: str) -> dict[str, tuple[str, bool]]:
    return dict.fromkeys(names, (kind, takes_arg))


# bind options: option -> (what the import does with it, whether a value follows it); an option not listed
# takes no value and is not supported
_BIND_OPTS: dict[str, tuple[str, bool]] = {
    **_bind_opts("no-effect", True, "name", "process", "thread", "id", "nice", "defer-accept", "label"),
    **_bind_opts("no-effect", False, "tfo", "v4v6", "v6only"),
    **_bind_opts("backlog", True, "backlog"),
    **_bind_opts(
        "tls",
        True,
        *("crt", "crt-list", "ca-file", "verify", "alpn", "npn", "ciphers", "ciphersuites", "curves"),
        *("ecdhe", "crl-file", "ssl-min-ver", "ssl-max-ver", "sni"),
    ),
    **_bind_opts(
        "tls",
        False,
        *("ssl", "strict-sni", "no-sslv3", "no-tlsv10", "no-tlsv11", "force-tlsv12", "prefer-client-ciphers"),
    ),
    **_bind_opts("proxy", False, "accept-proxy"),
    **_bind_opts("proxy", True, "accept-netscaler-cip"),
    **_bind_opts("socket", True, "interface", "namespace", "mss", "tcp-ut", "maxconn"),
    **_bind_opts("socket", False, "transparent"),
    **_bind_opts(
        "other",
        True,
        *("user", "group", "uid", "gid", "mode", "level", "severity-output", "proto", "ca-ignore-err"),
        "crt-ignore-err",
    ),
}


class _HaConverter:
    def __init__(self, doc: haconf.Document, rep: Report) -> None:
        self.doc = doc
        self.rep = rep
        self.glob = Table("[global]", "", "")
        self.tables: list[Table] = []
        self.stats: Table | None = None
        self.defaults: dict[str, _Proxy] = {}
        self.last_defaults: _Proxy | None = None
        self.proxies: list[_Proxy] = []
        self.logging = False
        self.log_target = ""
        self.bound: dict[tuple[str, int], str] = {}
        self.cps: dict[str, list[str]] = {}  # check-send-proxy that does not map: where -> servers

    # ------------------------------------------------------------------ sections
    def run(self) -> str | None:
        for f, line, var in self.doc.env_used:
            self.rep.warning(
                f"{f}:{line}",
                f"${var} is an environment variable: imported with the value it has "
                "where the import runs (empty if unset)",
            )
        for sec in self.doc.sections:
            k = sec.kind
            if k == "global":
                self.global_(sec)
            elif k == "defaults":
                p = _Proxy("defaults", sec.args[0] if sec.args and sec.args[0] != "from" else "", sec.where)
                self.inherit(p, sec)
                for ln in sec.lines:
                    self.proxy_line(p, ln)
                self.last_defaults = p
                if p.name:
                    self.defaults[p.name] = p
            elif k in ("listen", "frontend", "backend"):
                self.proxy_section(sec)
            elif k in ("userlist", "mailers", "cache", "http-errors", "ring"):
                self.rep.ignored(sec.where, f"{k} section: used by HTTP rules, mail alerts or logs only")
            elif k == "resolvers":
                self.rep.unsupported(
                    sec.where,
                    "resolvers: tcplb resolves server names when it starts or reloads, not while running",
                )
            elif k == "peers":
                self.rep.unsupported(sec.where, "peers: no stick tables to synchronise")
            else:
                self.rep.unsupported(sec.where, f"{k} section: not supported")
        self.build()
        if not self.tables and not self.rep.errors:
            self.rep.error(
                f"{self.doc.name}:1",
                "no TCP listener to import (no listen, or frontend with a backend, in mode tcp)",
            )
        if self.rep.errors:
            return None
        head = [
            f"# tcplb configuration imported from {comment(self.doc_name())} by `tcplb import`.",
            "# Each entry cites the haproxy.cfg line it comes from. Check with: tcplb -c FILE --check",
        ]
        tables = ([self.glob] if self.glob.entries else []) + self.tables
        if self.stats is not None:
            tables.append(self.stats)
        return document(head, self.rep, tables)

    def doc_name(self) -> str:
        return self.doc.name

    def inherit(self, p: _Proxy, sec: haconf.Section) -> None:
        args = list(sec.args)
        if "from" in args:
            i = args.index("from")
            name = args[i + 1] if i + 1 < len(args) else ""
            d = self.defaults.get(name)
            if d is None:
                self.rep.error(sec.where, f"from {name!r}: no defaults section of that name before this line")
            else:
                p.copy_from(d)
        elif self.last_defaults is not None:
            p.copy_from(self.last_defaults)

    def proxy_section(self, sec: haconf.Section) -> None:
        rep = self.rep
        if not sec.args or sec.args[0] == "from":
            rep.error(sec.where, f"{sec.kind} needs a name")
            return
        p = _Proxy(sec.kind, sec.args[0], sec.where)
        self.inherit(p, sec)
        rest = list(sec.args[1:])
        if "from" in rest:
            rest = rest[: rest.index("from")]
        if rest:
            if sec.kind == "backend":
                rep.error(sec.where, "a backend has no address")
            else:
                rep.warning(
                    sec.where,
                    f"the address on the {sec.kind} line ({' '.join(rest)}) is HAProxy 1.x "
                    "syntax (modern: a bind line; HAProxy 2.x refuses it); imported as bind",
                )
                for a in ",".join(rest).split(","):
                    if a:
                        self.bind_addr(p, a, sec.where)
        for ln in sec.lines:
            self.proxy_line(p, ln)
        self.proxies.append(p)

    # ------------------------------------------------------------------ global
    def global_(self, sec: haconf.Section) -> None:
        rep = self.rep
        for ln in sec.lines:
            k, a = ln.keyword, ln.args
            if k == "maxconn":
                v = self.int_arg(ln, 1, 10_000_000)
                if v is not None:
                    self.glob.set("maxconn", v, ln.where)
            elif k == "nbproc":
                rep.warning(
                    ln.where,
                    f"nbproc {' '.join(a)}: removed in HAProxy 2.5, which refuses it (modern: nbthread); "
                    "tcplb runs one relay process (global.workers spreads the listeners over more)",
                )
            elif k == "spread-checks":
                v = self.int_arg(ln, 0, 50)
                if v is not None:
                    self.glob.set("spread_checks", v, ln.where)
            elif k == "hard-stop-after":
                ms = self.time_arg(ln, 0)
                if ms is not None:
                    self.glob.set("hard_stop_after", _dur(ms), ln.where)
            elif k == "log-tag":
                if a and re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", a[0]):
                    self.glob.set("log_tag", a[0], ln.where)
                else:
                    rep.warning(
                        ln.where, "log-tag: not a valid tcplb log tag; tcplb's default (tcplb) is used"
                    )
            elif k == "log":
                self.global_log(ln)
            elif k == "stats" and a[:1] == ("socket",):
                rep.warning(
                    ln.where,
                    "stats socket: no admin socket; scripts that talk to it (socat, "
                    "hatop) use `tcplb ctl` (the HTTP admin API of [stats]) instead",
                )
            elif k in ("tune.bufsize", "tune.maxrewrite") or k.startswith("tune.") or k.startswith("ssl-"):
                rep.ignored(ln.where, f"{k}: tuning/TLS settings of HAProxy")
            elif k in ("lua-load", "lua-prepend-path", "external-check"):
                rep.unsupported(ln.where, f"{k}: no Lua or external checks")
            elif k in ("setenv", "presetenv", "resetenv", "unsetenv"):
                rep.unsupported(
                    ln.where, f"{k}: environment variables set here are not applied by the import"
                )
            elif k in _GLOBAL_HARMLESS:
                rep.ignored(ln.where, k + (f": {_GLOBAL_HARMLESS[k]}" if _GLOBAL_HARMLESS[k] else ""))
            else:
                rep.unsupported(ln.where, f"unknown global keyword '{k}' (HAProxy refuses unknown keywords)")

    def global_log(self, ln: haconf.Line) -> None:
        rep, a = self.rep, ln.args
        if not a:
            rep.error(ln.where, "log needs a target")
            return
        if self.logging:
            if a[0] == self.log_target:
                rep.ignored(ln.where, f"log {' '.join(a)}: the same target with another facility or level")
            else:
                rep.unsupported(ln.where, "a second log target: tcplb logs to one target (the first)")
            return
        self.log_target = a[0]
        self.logging = True
        target = a[0]
        if target in ("stdout", "stderr"):
            self.glob.set("log", target, ln.where)
        elif target.startswith("/") or target.startswith("unix@"):
            self.glob.set("log", "syslog", ln.where)
            self.glob.set("syslog_address", target.removeprefix("unix@"), ln.where)
        else:
            t = target.removeprefix("udp@").removeprefix("ipv4@").removeprefix("udp4@")
            if t.startswith("ring@") or t.startswith("fd@") or t.startswith("tcp@"):
                rep.unsupported(
                    ln.where, f"log {target}: tcplb logs to stderr, stdout or syslog (unix socket or UDP)"
                )
                self.logging = False
                return
            host, _, port = t.rpartition(":") if t.count(":") == 1 else (t, "", "514")
            try:
                ipaddress.ip_address(host)
                addr = f"{host}:{int(port)}"
            except ValueError:
                rep.error(ln.where, f"log {target}: not an address")
                return
            self.glob.set("log", "syslog", ln.where)
            self.glob.set("syslog_address", addr, ln.where)
        rest = [
            w
            for w in a[1:]
            if w not in ("format", "raw", "rfc3164", "rfc5424", "short", "iso", "timed", "priority", "local")
        ]
        if rest:
            rep.ignored(
                ln.where,
                f"log facility/level {' '.join(a[1:])}: tcplb logs with facility daemon, "
                "every connection at level info",
            )

    # ------------------------------------------------------------------ values
    def int_arg(self, ln: haconf.Line, lo: int, hi: int, idx: int = 0) -> int | None:
        v = ln.args[idx] if len(ln.args) > idx else ""
        if not re.fullmatch(r"-?\d{1,12}", v) or not lo <= int(v) <= hi:
            self.rep.error(ln.where, f"{ln.keyword}: '{v}' must be an integer {lo}..{hi}")
            return None
        return int(v)

    def time_arg(self, ln: haconf.Line, idx: int, word: str | None = None) -> float | None:
        v = word if word is not None else (ln.args[idx] if len(ln.args) > idx else "")
        ms = _ms(v)
        if ms is None:
            self.rep.error(
                ln.where,
                f"{ln.keyword}: '{v}' is not a time (a number with an optional unit: us, ms, "
                "s, m, h, d; none means ms)",
            )
        return ms

    # ------------------------------------------------------------------ proxy lines
    def proxy_line(self, p: _Proxy, ln: haconf.Line) -> None:
        rep = self.rep
        k, a = ln.keyword, ln.args
        w = ln.where
        no = False
        if k == "no" and a:
            no, k, a = True, a[0], a[1:]
        if k == "default" and a:  # "default option X": reset to the default
            rep.warning(w, f"default {' '.join(a)}: imported as the default value")
            no, k, a = True, a[0], a[1:]
        if k == "bind":
            if p.kind in ("defaults", "backend"):
                rep.error(w, f"bind is not allowed in a {p.kind} section")
                return
            if not a:
                rep.error(w, "bind needs an address")
                return
            for addr in a[0].split(","):
                self.bind_addr(p, addr, w)
            self.bind_options(p, ln, a[1:])
        elif k == "mode":
            if not a or a[0] not in ("tcp", "http", "health"):
                rep.error(w, f"mode '{a[0] if a else ''}': must be tcp, http or health")
            else:
                p.mode = _Val(a[0], w)
        elif k == "balance":
            self.balance(p, ln)
        elif k == "hash-type":
            if not a or a[0] not in ("map-based", "consistent"):
                rep.error(w, "hash-type must be map-based or consistent")
            else:
                p.opts["hash_type"] = _Val(a[0], w)
        elif k == "maxconn":
            v = self.int_arg(ln, 0, 10_000_000)
            if v is not None:
                p.opts["maxconn"] = _Val(v, w)
        elif k == "backlog":
            v = self.int_arg(ln, 1, 1_000_000)
            if v is not None:
                p.opts["backlog"] = _Val(v, w)
        elif k == "timeout":
            if not a:
                rep.error(w, "timeout needs a name and a value")
                return
            name = a[0]
            if len(a) > 2:
                rep.error(w, f"timeout {name}: one value expected, got {' '.join(a[1:])!r}")
            elif name in _TIMEOUTS:
                ms = self.time_arg(ln, 1)
                if ms is not None:
                    mt = _TIME_RE.match(a[1]) if len(a) > 1 else None
                    note = "" if mt is not None and mt.group(2) else "(no unit: milliseconds)"
                    p.opts[_TIMEOUTS[name]] = _Val(_dur(ms) if ms else 0, w, note)
            elif name in _HTTP_TIMEOUTS:
                rep.ignored(w, f"timeout {name}: HTTP only")
            else:
                rep.error(w, f"unknown timeout '{name}'")
        elif k in _OLD_TIMEOUTS:
            ms = self.time_arg(ln, 0)
            if ms is not None:
                modern = _OLD_TIMEOUTS[k]
                rep.warning(
                    w,
                    f"{k} is the HAProxy 1.x name of 'timeout {modern}' (removed in HAProxy 2.1, "
                    "which refuses it): imported as timeout_" + modern,
                )
                p.opts[_TIMEOUTS[modern]] = _Val(_dur(ms) if ms else 0, w, f"({k})")
        elif k == "retries":
            v = self.int_arg(ln, 0, 1_000_000)
            if v is not None:
                if v > 100:
                    rep.warning(w, f"retries {v}: tcplb allows at most 100; imported as 100")
                    v = 100
                p.opts["retries"] = _Val(v, w)
        elif k == "redispatch":
            rep.warning(
                w,
                "redispatch is the HAProxy 1.x form of 'option redispatch' (HAProxy 2.1+ refuses it): "
                "imported as redispatch",
            )
            p.opts["redispatch"] = _Val(True, w)
        elif k == "option":
            self.option(p, ln, a, no)
        elif k in ("clitcpka-idle", "clitcpka-intvl", "srvtcpka-idle", "srvtcpka-intvl"):
            ms = self.time_arg(ln, 0)
            if ms is not None:
                side = "client" if k.startswith("cli") else "server"
                sec = max(1, round(ms / 1000))
                p.ka[f"{side}.{'idle' if k.endswith('idle') else 'interval'}"] = _Val(sec, w)
        elif k in ("clitcpka-cnt", "srvtcpka-cnt"):
            v = self.int_arg(ln, 1, 127)
            if v is not None:
                p.ka[f"{'client' if k.startswith('cli') else 'server'}.count"] = _Val(v, w)
        elif k == "source":
            if not a:
                rep.error(w, "source needs an address")
                return
            host = a[0].rsplit(":", 1)[0] if a[0].count(":") == 1 else a[0]
            try:
                ipaddress.ip_address(host)
            except ValueError:
                rep.error(w, f"source '{a[0]}': not an IP address")
                return
            if len(a) > 1:
                rep.unsupported(w, f"source options {' '.join(a[1:])}: not supported (transparent proxying)")
            p.opts["source"] = _Val(host, w)
        elif k == "default-server":
            self.server_params(p.dsrv, ln, a)
        elif k == "server":
            if p.kind in ("defaults", "frontend"):
                rep.error(w, f"server is not allowed in a {p.kind} section")
                return
            self.server(p, ln)
        elif k == "default_backend":
            if p.kind in ("backend",):
                rep.error(w, "default_backend is not allowed in a backend")
            elif a and (p.backend is None or p.backend.note != "use_backend"):
                p.backend = _Val(a[0], w)
        elif k == "use_backend":
            if not a:
                rep.error(w, "use_backend needs a backend name")
            elif len(a) == 1:
                if p.backend is None or p.backend.note != "use_backend":
                    p.backend = _Val(a[0], w, "use_backend")
            else:
                rep.unsupported(
                    w,
                    f"use_backend {' '.join(a)}: ACL-based routing is not supported; every "
                    "connection goes to the default backend",
                )
        elif k == "log":
            if no:
                p.log = _Val(False, w)
            else:
                p.log = _Val(True, w)
                if a and a[0] != "global":
                    rep.warning(w, f"log {' '.join(a)} in a proxy: tcplb logs every listener to global.log")
        elif k == "log-format":
            rep.warning(
                w,
                "log-format: tcplb writes HAProxy's tcplog format (or json); the custom format is "
                "not imported",
            )
        elif k == "stats":
            self.stats_line(p, ln, a)
        elif k == "disabled":
            p.disabled = _Val(True, w)
        elif k == "enabled":
            p.disabled = None
        elif k in ("acl",):
            p.http_only.append(w)
            rep.ignored(
                w, "acl: conditions are imported only where used by an unsupported rule (reported there)"
            )
        elif k in ("tcp-request", "tcp-response"):
            rep.unsupported(
                w,
                f"{k} {' '.join(a[:2])}: connection rules are not supported (nothing is "
                "rejected, inspected or tracked)",
            )
        elif k in (
            "http-request",
            "http-response",
            "http-after-response",
            "reqadd",
            "rspadd",
            "reqrep",
            "rsprep",
            "reqdel",
            "rspdel",
            "reqallow",
            "reqdeny",
            "redirect",
            "capture",
            "monitor-uri",
            "errorfile",
            "errorloc",
            "errorloc302",
            "errorloc303",
            "cookie",
            "unique-id-format",
            "unique-id-header",
            "http-check",
            "http-reuse",
            "compression",
            "filter",
            "errorfiles",
            "http-error",
            "declare",
            "monitor",
        ):
            if k == "http-check":
                self.http_check(p, ln, a)
            elif p.mode is not None and p.mode.value == "http":
                p.http_only.append(w)
            else:
                rep.ignored(w, f"{k}: HTTP only (HAProxy ignores it in mode tcp)")
        elif k in ("stick-table", "stick", "persist"):
            rep.unsupported(
                w,
                f'{k}: no stickiness tables; balance = "source" keeps a client\'s address on '
                "one server while the server set is stable",
            )
        elif k == "rate-limit":
            rep.unsupported(w, "rate-limit: no session rate limit (connections are accepted as they come)")
        elif k in (
            "fullconn",
            "id",
            "description",
            "grace",
            "bind-process",
            "max-keep-alive-queue",
            "email-alert",
            "load-server-state-from-file",
            "server-state-file-name",
            "guid",
        ):
            rep.ignored(w, f"{k}: no effect in tcplb")
        elif k == "dispatch":
            rep.unsupported(w, "dispatch: not supported; add the address as a server")
        elif k in (
            "server-template",
            "dynamic-cookie-key",
            "external-check",
            "use-server",
            "force-persist",
            "ignore-persist",
        ):
            rep.unsupported(w, f"{k}: not supported")
        elif k in ("tcp-check",):
            self.tcp_check(p, ln, a)
        else:
            rep.unsupported(w, f"unknown keyword '{k}' (HAProxy refuses unknown keywords)")

    def bind_addr(self, p: _Proxy, addr: str, w: str) -> None:
        rep = self.rep
        s, tcp = _strip_family(addr)
        if not tcp:
            rep.unsupported(w, f"bind {addr}: only TCP/IP addresses (no unix sockets, fd@ or abns@)")
            return
        if s.startswith("["):
            host, _, port_s = s[1:].partition("]:")
        else:
            host, _, port_s = s.rpartition(":")
        if host in ("", "*", "::", "[::]"):
            host = "0.0.0.0" if host in ("", "*") else "::"
        ports: list[int] = []
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", port_s)
        if m is None:
            rep.error(w, f"bind {addr}: no port (write ADDRESS:PORT)")
            return
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if not 1 <= lo <= hi <= 65535:
            rep.error(w, f"bind {addr}: bad port")
            return
        if hi - lo > 63:
            rep.unsupported(w, f"bind {addr}: port ranges of more than 64 ports are not imported")
            return
        ports = list(range(lo, hi + 1))
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            rep.unsupported(w, f"bind {addr}: tcplb binds IP addresses only (resolve {host!r} by hand)")
            return
        for port in ports:
            p.binds.append(_Val((str(ip), port), w))

    def bind_options(self, p: _Proxy, ln: haconf.Line, opts: tuple[str, ...]) -> None:
        rep, w = self.rep, ln.where
        i = 0
        while i < len(opts):
            o = opts[i]
            kind, takes_arg = _BIND_OPTS.get(o, ("other", False))
            arg = opts[i + 1] if takes_arg and i + 1 < len(opts) else None
            i += 2 if arg is not None else 1
            if kind == "no-effect":
                rep.ignored(w, f"bind option {o}: no effect in tcplb")
            elif kind == "backlog" and arg is not None and arg.isdigit():
                p.opts["backlog"] = _Val(int(arg), w)
            elif kind == "tls":
                rep.unsupported(
                    w,
                    f"bind option {o}: no TLS termination in tcplb (clients would speak TLS to "
                    "a plain TCP relay: terminate TLS in RabbitMQ, port 5671)",
                )
            elif kind == "proxy":
                rep.unsupported(
                    w,
                    f"bind option {o}: the PROXY protocol is not read; clients' first bytes "
                    "would be relayed as data",
                )
            elif kind == "socket":
                rep.unsupported(w, f"bind option {o}: not supported (the listener binds without it)")
            else:
                rep.unsupported(w, f"bind option {o}: not supported")

    def balance(self, p: _Proxy, ln: haconf.Line) -> None:
        rep, w, a = self.rep, ln.where, ln.args
        algo = a[0] if a else ""
        base = algo.split("(", 1)[0]
        if algo in ("roundrobin", "leastconn", "source"):
            p.opts["balance"] = _Val(algo, w)
        elif algo == "static-rr":
            rep.warning(
                w,
                "balance static-rr: imported as roundrobin (weights only change through the admin "
                "API, which static-rr does not allow in HAProxy)",
            )
            p.opts["balance"] = _Val("roundrobin", w, "(static-rr)")
        elif base in ("uri", "url_param", "hdr", "rdp-cookie", "hash", "random", "first"):
            if base in ("uri", "url_param", "hdr"):
                rep.warning(
                    w,
                    f"balance {algo}: needs HTTP; in mode tcp HAProxy falls back to roundrobin, so "
                    "does the import",
                )
                p.opts["balance"] = _Val("roundrobin", w, f"({algo})")
            else:
                rep.unsupported(
                    w,
                    f"balance {algo}: not supported; imported as roundrobin (the order in "
                    "which servers are picked differs)",
                )
                p.opts["balance"] = _Val("roundrobin", w, f"({algo})")
        else:
            rep.error(w, f"unknown balance algorithm '{algo}' (HAProxy refuses it)")

    def option(self, p: _Proxy, ln: haconf.Line, a: tuple[str, ...], no: bool) -> None:
        rep, w = self.rep, ln.where
        if not a:
            rep.error(w, "option needs a name")
            return
        o = a[0]
        on = not no
        if o == "redispatch":
            if no:
                p.opts["redispatch"] = _Val(False, w)
            elif len(a) > 1:
                if not re.fullmatch(r"-?\d+", a[1]) or not -1000 <= int(a[1]) <= 1000 or int(a[1]) == 0:
                    rep.error(w, f"option redispatch {a[1]}: must be a non-zero integer -1000..1000")
                else:
                    p.opts["redispatch"] = _Val(int(a[1]), w)
            else:
                p.opts["redispatch"] = _Val(True, w)
        elif o in ("tcpka", "clitcpka", "srvtcpka"):
            sides = {"tcpka": ("client", "server"), "clitcpka": ("client",), "srvtcpka": ("server",)}[o]
            for side in sides:
                p.ka[side] = _Val(on, w)
        elif o == "tcplog":
            p.opts["log_format"] = _Val("tcplog", w)
        elif o == "httplog":
            if p.mode is None or p.mode.value != "http":
                rep.warning(w, "option httplog in mode tcp: HAProxy logs in tcplog format, so does tcplb")
                p.opts["log_format"] = _Val("tcplog", w, "(httplog in mode tcp)")
        elif o in ("dontlognull", "logasap", "allbackups"):
            p.opts[o] = _Val(on, w)
        elif o in ("splice-auto", "splice-request", "splice-response"):
            if on:
                p.opts["splice"] = _Val(True, w, f"({o}: tcplb splices both directions)")
        elif o == "httpchk":
            self.httpchk(p, ln, a[1:])
        elif o == "tcp-check":
            p.chk["type"] = _Val("tcp", w)
        elif o in (
            "mysql-check",
            "pgsql-check",
            "redis-check",
            "smtpchk",
            "ldap-check",
            "ssl-hello-chk",
            "spop-check",
            "external-check",
        ):
            rep.unsupported(
                w,
                f"option {o}: tcplb checks tcp (connect), amqp or http; imported as a connect "
                "check, which passes as soon as the port accepts",
            )
            p.chk["type"] = _Val("tcp", w, f"({o})")
        elif o in ("nolinger",):
            rep.ignored(w, "option nolinger: tcplb closes normally")
        elif o in (
            "tcp-smart-accept",
            "tcp-smart-connect",
            "socket-stats",
            "independent-streams",
            "log-health-checks",
            "log-separate-errors",
            "abortonclose",
            "contstats",
            "checkcache",
            "dontlog-normal",
            "persist",
            "prefer-last-server",
            "disable-h2-upgrade",
            "http-use-proxy-header",
            "idle-close-on-response",
        ):
            rep.ignored(w, f"option {o}: no effect in tcplb")
        elif o.startswith("http") or o in (
            "forwardfor",
            "originalto",
            "httpclose",
            "forceclose",
            "http-server-close",
            "http-keep-alive",
            "accept-invalid-http-request",
            "accept-invalid-http-response",
            "h1-case-adjust-bogus-client",
            "h1-case-adjust-bogus-server",
        ):
            if p.mode is not None and p.mode.value == "http":
                p.http_only.append(w)
            else:
                rep.ignored(w, f"option {o}: HTTP only (HAProxy ignores it in mode tcp)")
        elif o == "transparent":
            rep.unsupported(w, "option transparent: not supported")
        else:
            rep.unsupported(w, f"unknown option '{o}'")

    def httpchk(self, p: _Proxy, ln: haconf.Line, a: tuple[str, ...]) -> None:
        rep, w = self.rep, ln.where
        method, uri, version = "OPTIONS", "/", ""
        if len(a) == 1:
            uri = a[0]
        elif len(a) >= 2:
            method, uri = a[0], a[1]
            version = " ".join(a[2:])
        p.chk["type"] = _Val("http", w)
        if method not in ("GET", "HEAD", "OPTIONS"):
            rep.unsupported(
                w, f"option httpchk {method}: tcplb checks with GET, HEAD or OPTIONS; imported as GET"
            )
            method = "GET"
        p.chk["method"] = _Val(method, w)
        if not uri.startswith("/") or any(c.isspace() for c in uri):
            rep.error(w, f"option httpchk: '{uri}' is not an absolute URL path")
            return
        p.chk["path"] = _Val(uri, w)
        auth = re.search(r"\r\nAuthorization:\s*Basic\s+([A-Za-z0-9+/=]+)", version, re.I)
        if auth is not None:
            import base64
            import binascii

            try:
                user, sep, pw = base64.b64decode(auth.group(1), validate=True).decode("utf-8").partition(":")
            except (binascii.Error, UnicodeDecodeError):
                sep = ""
            if sep and user:
                rep.warning(
                    w,
                    "an Authorization header smuggled in the HTTP version of option httpchk (HAProxy "
                    "1.x trick): imported as the check's user and password",
                )
                p.chk["user"] = _Val(user, w)
                p.chk["password"] = _Val(pw, w)
            else:
                rep.unsupported(
                    w,
                    "option httpchk: an Authorization header that is not user:password in "
                    "base64; not imported",
                )
        m = re.search(r"\r\nHost:\s*([^\r\n]+)", version, re.I)
        if m is not None:
            rep.warning(
                w,
                "a Host header smuggled in the HTTP version of option httpchk (HAProxy 1.x trick; "
                "modern: http-check send hdr Host ...): imported as the check's host",
            )
            p.chk["host"] = _Val(m.group(1).strip(), w)

    def http_check(self, p: _Proxy, ln: haconf.Line, a: tuple[str, ...]) -> None:
        rep, w = self.rep, ln.where
        if a[:1] == ("expect",):
            rest = list(a[1:])
            neg = bool(rest) and rest[0] == "!"
            if neg:
                rest = rest[1:]
            if not neg and len(rest) == 2 and rest[0] == "status":
                codes: list[str] = []
                for part in rest[1].split(","):
                    if re.fullmatch(r"\d{3}(-\d{3})?", part):
                        codes.append(part if "-" in part else f"{part}-{part}")
                    else:
                        rep.error(w, f"http-check expect status {rest[1]}: not a status")
                        return
                p.chk["expect_status"] = _Val(codes, w)
            elif (
                not neg
                and len(rest) == 2
                and rest[0] == "rstatus"
                and re.fullmatch(r"\^?\(?[1-5]\)?", rest[1])
            ):
                d = int(re.sub(r"\D", "", rest[1]))
                p.chk["expect_status"] = _Val([f"{d}00-{d}99"], w, f"(rstatus {rest[1]})")
            else:
                rep.unsupported(
                    w,
                    f"http-check expect {' '.join(a[1:])}: tcplb checks the status only; "
                    "imported as the default (200-399)",
                )
        elif a[:1] == ("send",):
            words = list(a[1:])
            i = 0
            while i + 1 < len(words):
                key, val = words[i], words[i + 1]
                if key == "meth":
                    if val in ("GET", "HEAD", "OPTIONS"):
                        p.chk["method"] = _Val(val, w)
                    else:
                        rep.unsupported(
                            w, f"http-check send meth {val}: tcplb checks with GET, HEAD or OPTIONS"
                        )
                elif key == "uri":
                    p.chk["path"] = _Val(val, w)
                elif key == "hdr" and i + 2 < len(words):
                    if val.lower() == "host":
                        p.chk["host"] = _Val(words[i + 2], w)
                    else:
                        rep.unsupported(w, f"http-check send hdr {val}: only the Host header is imported")
                    i += 1
                elif key == "ver":
                    pass
                else:
                    rep.unsupported(w, f"http-check send {key}: not imported")
                i += 2
            p.chk["type"] = _Val("http", w)
        elif a[:1] == ("disable-on-404",):
            rep.unsupported(
                w,
                "http-check disable-on-404: a 404 is a failed check in tcplb (use "
                "`tcplb ctl` to drain a server)",
            )
        elif a[:1] == ("send-state",):
            rep.ignored(w, "http-check send-state: no X-Haproxy-Server-State header")
        elif a[:1] == ("connect",):
            pass
        else:
            rep.unsupported(w, f"http-check {' '.join(a)}: not imported")

    def tcp_check(self, p: _Proxy, ln: haconf.Line, a: tuple[str, ...]) -> None:
        rep, w = self.rep, ln.where
        if a[:1] == ("connect",):
            rest = list(a[1:])
            if "port" in rest and rest.index("port") + 1 < len(rest):
                port = rest[rest.index("port") + 1]
                if port.isdigit() and 1 <= int(port) <= 65535:
                    p.chk["port"] = _Val(int(port), w)
            others = [x for x in rest if x not in ("port",) and not x.isdigit()]
            if others:
                rep.unsupported(w, f"tcp-check connect {' '.join(others)}: not imported")
        elif a[:1] in (("comment",),):
            rep.ignored(w, "tcp-check comment")
        else:
            rep.unsupported(
                w,
                f'tcp-check {" ".join(a)}: tcplb\'s tcp check only connects (type = "amqp" '
                "checks a RabbitMQ node's AMQP handshake); imported as a connect check",
            )

    def stats_line(self, p: _Proxy, ln: haconf.Line, a: tuple[str, ...]) -> None:
        rep, w = self.rep, ln.where
        sub = a[0] if a else ""
        if sub in (
            "enable",
            "uri",
            "auth",
            "refresh",
            "admin",
            "realm",
            "hide-version",
            "show-legends",
            "show-node",
            "show-desc",
            "scope",
            "show-modules",
            "http-request",
        ):
            p.stats.setdefault("enable", _Val(True, w))
            if sub in ("uri", "refresh", "realm") and len(a) < 2:
                rep.error(w, f"stats {sub} needs a value")
                return
            if sub == "auth":
                if len(a) < 2 or ":" not in a[1]:
                    rep.error(w, "stats auth needs user:password")
                    return
                prev = p.stats.get("auth")
                users = list(prev.value) if prev else []
                same = [u for u in users if u.partition(":")[0] == a[1].partition(":")[0]]
                if a[1] in users:
                    rep.ignored(w, "stats auth: the same user and password again")
                    return
                if same:
                    rep.unsupported(
                        w,
                        f"stats auth: a second password for user {a[1].partition(':')[0]!r} "
                        "(HAProxy accepts both; tcplb one): not imported",
                    )
                    return
                users.append(a[1])
                p.stats["auth"] = _Val(users, w)
            elif sub == "uri":
                p.stats["uri"] = _Val(a[1], w)
            elif sub == "refresh":
                ms = self.time_arg(ln, 1)
                if ms is not None:
                    p.stats["refresh"] = _Val(_dur(ms) if ms else "1s", w)
            elif sub == "admin":
                p.stats["admin"] = _Val(" ".join(a[1:]), w)
            elif sub == "enable":
                pass
            elif sub in ("realm", "hide-version", "show-legends", "show-node", "show-desc", "show-modules"):
                rep.ignored(w, f"stats {sub}: the tcplb page has its own layout")
            else:
                rep.unsupported(w, f"stats {sub}: not imported (the page shows every listener)")
        elif sub == "socket":
            rep.error(w, "stats socket belongs in the global section")
        elif sub in ("timeout", "maxconn", "bind-process"):
            rep.ignored(w, f"stats {sub}: no admin socket")
        else:
            rep.error(w, f"unknown stats keyword '{sub}'")

    # ------------------------------------------------------------------ servers
    def server(self, p: _Proxy, ln: haconf.Line) -> None:
        rep, w, a = self.rep, ln.where, ln.args
        if len(a) < 2:
            rep.error(w, "server needs a name and an address")
            return
        name, addr = a[0], a[1]
        s = _Srv(name, w)
        addr, tcp = _strip_family(addr)
        if not tcp:
            rep.unsupported(w, f"server {name} {addr}: only TCP/IP servers (no unix sockets); not imported")
            return
        if addr.startswith("["):
            host, _, port_s = addr[1:].partition("]")
            port_s = port_s.removeprefix(":")
        elif addr.count(":") == 1:
            host, _, port_s = addr.partition(":")
        elif addr.count(":") > 1:
            try:
                ipaddress.IPv6Address(addr)
                host, port_s = addr, ""
            except ValueError:
                host, _, port_s = addr.rpartition(":")
        else:
            host, port_s = addr, ""
        if port_s.startswith("+") or port_s.startswith("-"):
            rep.unsupported(
                w,
                f"server {name}: port offset {port_s} (relative to the client's port) is not "
                "supported; not imported",
            )
            return
        if port_s:
            if not port_s.isdigit() or not 1 <= int(port_s) <= 65535:
                rep.error(w, f"server {name}: bad port '{port_s}'")
                return
            s.port = int(port_s)
        s.host = host
        if not host:
            rep.error(w, f"server {name}: no address")
            return
        self.server_params(s, ln, a[2:])
        p.servers.append(s)

    def server_params(self, s: _Srv, ln: haconf.Line, a: tuple[str, ...]) -> None:
        rep, w = self.rep, ln.where
        i = 0
        while i < len(a):
            o = a[i]
            nxt = a[i + 1] if i + 1 < len(a) else None
            if o in _SRV_VALUED:
                if nxt is None:
                    rep.error(w, f"server option {o} needs a value")
                    return
                self.server_value(s, ln, o, nxt)
                i += 2
            elif o in _SRV_FLAGS:
                attr, key, value = _SRV_FLAGS[o]
                if key is None:
                    setattr(s, attr, _Val(value, w))
                else:
                    getattr(s, attr)[key] = _Val(value, w)
                i += 1
            elif o in _SRV_NOTED:
                self.server_option_note(o, nxt, w)
                i += 2 if nxt is not None and o != "tfo" else 1
            elif o in ("send-proxy", "send-proxy-v2", "send-proxy-v2-ssl", "send-proxy-v2-ssl-cn"):
                s.pp["v1" if o == "send-proxy" else "v2"] = _Val(True, w)
                if o.startswith("send-proxy-v2-ssl"):
                    rep.unsupported(
                        w,
                        f"server option {o}: the PROXY v2 SSL TLVs are not sent (tcplb does not terminate "
                        'TLS); imported as send_proxy = "v2"',
                    )
                i += 1
            elif o in (
                "ssl",
                "check-ssl",
                "no-ssl",
                "no-check-ssl",
                "no-sslv3",
                "no-tlsv10",
                "no-tlsv11",
                "force-tlsv12",
                "no-verifyhost",
                "allow-0rtt",
                "no-tls-tickets",
            ):
                if o in ("ssl", "check-ssl"):
                    rep.unsupported(
                        w,
                        f"server option {o}: tcplb does not speak TLS to servers (the bytes are "
                        "relayed as they come)",
                    )
                else:
                    rep.ignored(w, f"server option {o}: TLS only")
                i += 1
            elif o in ("agent-check", "no-agent-check"):
                if o == "agent-check":
                    rep.unsupported(w, "agent-check: no agent checks (weights change through the admin API)")
                i += 1
            elif o in (
                "non-stick",
                "stick",
                "no-send-proxy-v2-ssl",
                "no-send-proxy-v2-ssl-cn",
                "no-tfo",
                "no-backup-",
                "ignore-persist",
                "force-persist",
            ):
                rep.ignored(w, f"server option {o}: no effect in tcplb")
                i += 1
            else:
                rep.unsupported(w, f"unknown server option '{o}' (HAProxy refuses unknown options)")
                i += 1

    def server_value(self, s: _Srv, ln: haconf.Line, o: str, v: str) -> None:
        """A server option that takes a value (``o`` is in ``_SRV_VALUED``)."""
        rep, w = self.rep, ln.where
        if o in _SRV_INTS:
            table, key, lo, hi, msg = _SRV_INTS[o]
            if not v.isdigit() or (lo is not None and hi is not None and not lo <= int(v) <= hi):
                rep.error(w, msg.format(o=o, v=v))
            else:
                getattr(s, table)[key] = _Val(int(v), w)
        elif o in _SRV_CHOICES:
            table, key, allowed, msg = _SRV_CHOICES[o]
            if v in allowed:
                getattr(s, table)[key] = _Val(v, w)
            else:
                rep.error(w, msg.format(v=v))
        elif o in ("inter", "fastinter", "downinter"):
            ms = self.time_arg(ln, 0, v)
            if ms is not None:
                if ms == 0:
                    rep.error(w, f"{o} must be greater than 0")
                else:
                    s.check[o] = _Val(_dur(ms), w)
        elif o == "addr":
            try:
                parse_address(f"[{v}]:1" if ":" in v else f"{v}:1")
            except ValueError as e:
                rep.error(w, f"addr: {e}")
            else:
                s.check["addr"] = _Val(v, w)
        elif o == "observe":
            if v == "layer4":
                s.observe = _Val(True, w)
            elif v == "layer7":
                rep.unsupported(
                    w,
                    "observe layer7: HTTP responses are not watched; imported as layer4 "
                    "(failed connections count)",
                )
                s.observe = _Val(True, w)
            else:
                rep.error(w, f"observe '{v}': must be layer4 or layer7")
        elif o == "source":
            s.opts["source"] = _Val(v.rsplit(":", 1)[0] if v.count(":") == 1 else v, w)
        elif o == "slowstart":
            ms = self.time_arg(ln, 0, v)
            if ms is not None:
                if ms > 86_400_000:
                    rep.unsupported(w, f"slowstart {v}: tcplb's slowstart is at most 1d; imported as 1d")
                    ms = 86_400_000
                s.opts["slowstart"] = _Val(_dur(ms) if ms else "0s", w)
        elif o == "on-marked-down":
            if v == "shutdown-sessions":
                s.opts["on_marked_down"] = _Val(v, w)
            else:
                rep.error(
                    w,
                    f"on-marked-down '{v}': the only action is shutdown-sessions (HAProxy refuses others)",
                )
        elif v == "shutdown-backup-sessions":  # o is on-marked-up, the last of _SRV_VALUED
            rep.unsupported(
                w,
                "on-marked-up shutdown-backup-sessions: tcplb leaves the connections on backup "
                "servers when an active server comes back UP (they stay until they end)",
            )
        else:
            rep.error(
                w,
                f"on-marked-up '{v}': the only action is shutdown-backup-sessions (HAProxy refuses others)",
            )

    def server_option_note(self, o: str, v: str | None, w: str) -> None:
        rep = self.rep
        if o == "track":
            rep.unsupported(w, f"track {v}: the server is checked on its own")
        elif o in ("resolvers", "resolve-prefer", "resolve-net", "resolve-opts"):
            rep.warning(w, f"{o}: tcplb resolves server names when it starts or reloads, not while running")
        elif o in ("sni", "crt", "ca-file", "verify", "ciphers", "ciphersuites", "check-sni", "alpn"):
            rep.ignored(w, f"server option {o}: TLS only (see ssl)")
        elif o == "minconn":
            rep.unsupported(w, "minconn: no dynamic connection limits; maxconn applies as a fixed limit")
        elif o.startswith("agent"):
            rep.ignored(w, f"server option {o}: no agent checks")
        elif o == "namespace":
            rep.unsupported(w, "namespace: servers are reached from tcplb's own namespace")
        else:
            rep.ignored(w, f"server option {o}: no effect in tcplb")

    # ------------------------------------------------------------------ build
    def build(self) -> None:
        rep = self.rep
        backends = {p.name: p for p in self.proxies if p.kind == "backend"}
        used: set[str] = set()
        names: set[str] = set()
        for p in self.proxies:
            if p.kind == "backend":
                continue
            if p.disabled is not None:
                rep.ignored(
                    p.disabled.where,
                    f"{p.kind} {p.name} is disabled: HAProxy does not start it; not imported",
                )
                continue
            mode = p.mode.value if p.mode else "tcp"
            back: _Proxy | None = None
            if p.kind == "frontend":
                if p.backend is None:
                    if mode == "http" and p.stats:
                        self.build_stats(p)
                        continue
                    rep.unsupported(
                        p.where,
                        f"frontend {p.name} has no default_backend: its connections have "
                        "nowhere to go; not imported",
                    )
                    continue
                back = backends.get(p.backend.value)
                if back is None:
                    rep.error(p.backend.where, f"backend '{p.backend.value}' does not exist")
                    continue
                used.add(back.name)
                bmode = back.mode.value if back.mode else "tcp"
                if bmode != mode:
                    rep.error(
                        p.backend.where,
                        f"frontend {p.name} (mode {mode}) cannot use backend {back.name} (mode {bmode})",
                    )
                    continue
            if mode == "http":
                servers = (back or p).servers
                if p.stats and not servers:
                    self.build_stats(p)
                else:
                    rep.unsupported(
                        p.where,
                        f"{p.kind} {p.name}: mode http proxying is not supported (tcplb is "
                        "layer 4); not imported" + (", nor its stats page" if p.stats else ""),
                    )
                continue
            if mode == "health":
                rep.unsupported(p.where, f"{p.kind} {p.name}: mode health is not supported; not imported")
                continue
            if p.stats:
                rep.warning(
                    p.stats["enable"].where,
                    f"stats in mode tcp {p.kind} {p.name}: HAProxy serves no stats page there; not imported",
                )
            name = _name(p.name)
            if name != p.name:
                rep.warning(
                    p.where,
                    f"{p.kind} name {p.name!r} has characters tcplb does not allow in a name: "
                    f"imported as {name!r}",
                )
            if name in names:
                rep.error(p.where, f"two proxies named {name!r}")
                continue
            names.add(name)
            self.build_listener(p, back, name)
        for b in backends.values():
            if b.name not in used:
                rep.ignored(
                    b.where, f"backend {b.name} is used by no frontend (or only by ACL rules): not imported"
                )
        for where, srvs in self.cps.items():
            rep.unsupported(
                where,
                "check-send-proxy: tcplb's checks carry the PROXY header only with the server's send_proxy "
                f"and no check port/addr of their own; the checks of {', '.join(srvs)} go without it "
                "(a server that expects the header fails them)",
            )

    def build_listener(self, fe: _Proxy, be: _Proxy | None, name: str) -> None:
        rep = self.rep
        back = be or fe
        title = f"{fe.where} {fe.kind} {fe.name}" + (f" + {be.where} backend {be.name}" if be else "")
        t = Table(f"[listen.{toml_key(name)}]", fe.where, title)
        if not fe.binds:
            rep.unsupported(
                fe.where, f"{fe.kind} {fe.name} has no bind line: it listens nowhere; not imported"
            )
            return
        binds: list[str] = []
        for b in fe.binds:
            h, port = b.value
            s = f"[{h}]:{port}" if ":" in h else f"{h}:{port}"
            other = self.bound.get((h, port)) or next(
                (
                    n
                    for (bh, bp), n in self.bound.items()
                    if bp == port and "0.0.0.0" in (h, bh) and n != name
                ),
                None,
            )
            if other is not None and other != name:
                rep.error(b.where, f"{s} is already bound by {other}")
                continue
            self.bound[(h, port)] = name
            if s not in binds:
                binds.append(s)
        t.set("bind", binds, fe.binds[0].where)
        t.set(
            "mode",
            "tcp",
            (back.mode or fe.mode or _Val("", fe.where, "")).where,
            "" if (back.mode or fe.mode) else "(HAProxy's default mode)",
        )
        bal = back.opts.get("balance")
        if bal is None:
            t.set("balance", "roundrobin", back.where, "(HAProxy's default; tcplb's is leastconn)")
        else:
            t.set("balance", bal.value, bal.where, bal.note)
        ht = back.opts.get("hash_type")
        if t.get("balance") == "source" and (ht is None or ht.value == "map-based"):
            rep.warning(
                ht.where if ht else back.where,
                "balance source with map-based hashing (HAProxy's default hash-type): tcplb hashes "
                "consistently, so a given client may land on another server than with HAProxy (once)",
            )
        for key in _FRONT_KEYS:
            v = fe.opts.get(key)
            if v is not None:
                t.set(key, v.value, v.where, v.note)
        for key in _BACK_KEYS:
            v = back.opts.get(key)
            if v is not None:
                t.set(key, v.value, v.where, v.note)
        if "retries" not in back.opts:
            t.set("retries", 3, back.where, "(HAProxy's default)")
        log = fe.log
        t.set(
            "log",
            bool(log and log.value and self.logging),
            log.where if log else fe.where,
            "" if log else "(no log line: HAProxy does not log this proxy)",
        )
        if log and log.value and not self.logging:
            rep.warning(
                log.where, "log global but no log target in global: HAProxy logs nothing; log = false"
            )
        # keepalive
        ka: dict[str, Any] = {}
        for side, src in (("client", fe), ("server", back)):
            on = src.ka.get(side)
            if on is not None and on.value:
                params = {k.split(".", 1)[1]: v.value for k, v in src.ka.items() if k.startswith(side + ".")}
                ka[side] = params or True
        if ka:
            where = next((v.where for v in (*fe.ka.values(), *back.ka.values())), fe.where)
            t.set("tcpka", {"client": ka.get("client", False), "server": ka.get("server", False)}, where)
        # checks: listener table from option httpchk etc. + default-server check params
        chk: dict[str, Any] = {}
        chk_where = back.where
        for k, v in back.chk.items():
            chk[k] = v.value
            chk_where = v.where
        for k, v in back.dsrv.check.items():
            chk[k] = v.value
            chk_where = v.where
        if "type" not in chk:
            chk["type"] = "tcp"
        for k in ("path", "host", "user", "password"):
            v = back.chk.get(k)
            if v is not None and (
                not isinstance(v.value, str) or any(ord(c) < 0x20 or ord(c) == 0x7F for c in v.value)
            ):
                rep.error(v.where, f"check {k}: control characters are not allowed")
        if chk["type"] != "http":
            for k in ("path", "method", "host", "user", "password", "expect_status"):
                v = back.chk.get(k)
                if v is not None:
                    rep.ignored(
                        v.where, f"{k}: an HTTP check setting without option httpchk (HAProxy ignores it)"
                    )
                chk.pop(k, None)
        self.observe(chk, back.dsrv)
        servers = Rows()
        any_check = False
        for srv in back.servers:
            d = self.server_entry(srv, back, fe)
            if d is None:
                continue
            if any(o["name"] == d["name"] for o, _ in servers):
                rep.error(srv.where, f"server name {d['name']!r} is already used in {back.kind} {back.name}")
                continue
            if d.get("check") is not False:
                any_check = True
            servers.append((d, srv.where))
        owns = [d["check"] for d, _ in servers if isinstance(d.get("check"), dict)]
        if owns and len(owns) == sum(1 for d, _ in servers if d.get("check") is not False):
            common = {k: v for k, v in owns[0].items() if all(o.get(k) == v for o in owns)}
            if common:
                chk.update(common)
                for d, _ in servers:
                    if isinstance(d.get("check"), dict):
                        d["check"] = {k: v for k, v in d["check"].items() if k not in common}
                        if not d["check"]:
                            del d["check"]
        if any_check:
            t.set("check", chk, chk_where)
        else:
            t.set("check", False, back.where, "(no server has check)")
            servers = Rows((({k: v for k, v in d.items() if k != "check"}, w) for d, w in servers))
        dsrv = {k.replace("-", "_"): v.value for k, v in back.dsrv.opts.items()}
        dsp = _send_proxy(back.dsrv.pp)
        if dsp.value != "none":
            dsrv["send_proxy"] = dsp.value
        if dsrv:
            t.set("default_server", dsrv, next(iter(back.dsrv.opts.values()), dsp).where)
        t.set("server", servers, back.where)
        self.tables.append(t)

    def observe(self, chk: dict[str, Any], s: _Srv) -> None:
        if s.observe is not None:
            chk.setdefault("on_error", "fail-check")
            chk.setdefault("error_limit", 10)
        else:
            chk["on_error"] = "ignore"
            chk.pop("error_limit", None)

    def server_entry(self, s: _Srv, back: _Proxy, fe: _Proxy) -> dict[str, Any] | None:
        rep = self.rep
        if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", s.name):
            rep.warning(
                s.where,
                f"server name {s.name!r} has characters tcplb does not allow: imported as {_name(s.name)!r}",
            )
        port = s.port
        if port is None:
            ports = {b.value[1] for b in fe.binds}
            if len(ports) == 1:
                port = ports.pop()
                rep.warning(
                    s.where,
                    f"server {s.name} has no port: HAProxy connects to the port the client "
                    f"connected to; imported as {port} (the only bind port)",
                )
            else:
                rep.unsupported(
                    s.where, f"server {s.name} has no port and the listener binds several ports: not imported"
                )
                return None
        host = s.host or ""
        addr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            parse_address(addr)
            if "addr" in s.check:
                a = str(s.check["addr"].value)
                parse_address(f"[{a}]:1" if ":" in a else f"{a}:1")
        except ValueError as e:
            rep.error(s.where, f"server {s.name}: {e}")
            return None
        d: dict[str, Any] = {"name": _name(s.name), "address": addr}
        for k, v in s.opts.items():
            d[k.replace("-", "_")] = v.value
        if "source" in d:
            try:
                ipaddress.ip_address(d["source"])
            except ValueError:
                rep.error(s.where, f"source {d['source']!r}: not an IP address")
                return None
        sp = _send_proxy(back.dsrv.pp, s.pp)
        if sp.value != _send_proxy(back.dsrv.pp).value:
            d["send_proxy"] = sp.value
        checked = s.checked if s.checked is not None else back.dsrv.checked
        if checked is None or not checked.value:
            d["check"] = False
            return d
        self.check_send_proxy(s, back, sp.value)
        own = {k: v.value for k, v in s.check.items()}
        if s.observe is not None and back.dsrv.observe is None:
            own.setdefault("on_error", "fail-check")
            own.setdefault("error_limit", 10)
        if own:
            d["check"] = own
        return d

    def check_send_proxy(self, s: _Srv, back: _Proxy, send_proxy: str) -> None:
        """check-send-proxy: tcplb's checks carry the PROXY header exactly when the server has send_proxy
        and the check has no port/addr of its own (HAProxy's default rule), so the keyword maps when that
        already holds and is reported when it does not."""
        cp = s.check_pp if s.check_pp is not None else back.dsrv.check_pp
        if cp is None or not cp.value:
            return
        own = [k for k in ("port", "addr") if k in s.check or k in back.dsrv.check]
        if send_proxy != "none" and not own:
            return  # the checks send the header already
        why = "no send-proxy" if send_proxy == "none" else f"check {'/'.join(own)}"
        self.cps.setdefault(cp.where, []).append(f"{s.name} ({why})")

    def build_stats(self, p: _Proxy) -> None:
        rep = self.rep
        if self.stats is not None:
            rep.unsupported(
                p.where, f"{p.kind} {p.name}: a second stats page; tcplb has one [stats]; not imported"
            )
            return
        if not p.binds:
            rep.unsupported(p.where, f"{p.kind} {p.name}: stats without a bind line; not imported")
            return
        t = Table("[stats]", p.where, f"{p.where} {p.kind} {p.name} (mode http, stats only)")
        h, port = p.binds[0].value
        t.set("bind", f"[{h}]:{port}" if ":" in h else f"{h}:{port}", p.binds[0].where)
        for b in p.binds[1:]:
            rep.unsupported(b.where, "a second stats bind address: tcplb's stats page has one")
        uri = p.stats.get("uri")
        if uri is not None:
            u = uri.value
            if (
                re.fullmatch(r"/[A-Za-z0-9._~/-]*", u)
                and "//" not in u
                and u != "/metrics"
                and not (u == "/api" or u.startswith("/api/"))
            ):
                t.set("uri", u, uri.where)
            else:
                rep.warning(
                    uri.where,
                    f"stats uri {u}: tcplb's page lives at a plain path; imported as /stats "
                    "(update bookmarks and scrapers)",
                )
                t.set("uri", "/stats", uri.where, f"(was {u})")
        else:
            rep.warning(
                p.stats["enable"].where,
                "no stats uri: HAProxy's default is /haproxy?stats; tcplb's page is /stats",
            )
        auth = p.stats.get("auth")
        if auth is not None:
            t.set("auth", auth.value, auth.where)
        ref = p.stats.get("refresh")
        if ref is not None:
            t.set("refresh", ref.value, ref.where)
        adm = p.stats.get("admin")
        if adm is not None:
            cond = adm.value
            loop = ipaddress.ip_address(h).is_loopback
            if auth is None:
                rep.unsupported(
                    adm.where,
                    "stats admin without stats auth: tcplb's admin API always asks for a "
                    "user; admin not imported",
                )
            elif cond in ("if TRUE", "unless FALSE"):
                t.set("admin", True, adm.where)
                if not loop:
                    t.set(
                        "admin_allow_remote",
                        True,
                        adm.where,
                        "(stats admin if TRUE on a non-loopback address)",
                    )
            elif cond in ("if LOCALHOST",) and loop:
                t.set("admin", True, adm.where)
            else:
                rep.unsupported(
                    adm.where, f"stats admin {cond}: conditions are not supported; admin not imported"
                )
        for w in p.http_only:
            rep.ignored(w, "HTTP rule in the stats section: not imported")
        self.stats = t


# ============================================================================================ keepalived LVS

_ALGOS = {
    "rr": "roundrobin",
    "wrr": "roundrobin",
    "lc": "leastconn",
    "wlc": "leastconn",
    "sh": "source",
    "sed": "leastconn",
    "nq": "leastconn",
    "mh": "source",
}
_LVS_ALGOS = {"rr", "wrr", "lc", "wlc", "lblc", "sh", "mh", "dh", "fo", "ovf", "lblcr", "sed", "nq", "twos"}


class _LvsConverter:
    def __init__(self, doc: kaconf.Document, rep: Report) -> None:
        self.doc = doc
        self.rep = rep
        self.tables: list[Table] = []
        self.names: set[str] = set()
        self.tcp_timeout: tuple[str, str, str] = (
            "15m",
            "?",
            "(IPVS's default timeout of an idle TCP connection)",
        )
        self.connects: list[float] = []

    def run(self) -> str | None:
        rep = self.rep
        for g in self.doc.stmts:
            if g.keyword == "global_defs":
                for c in g.children():
                    if c.keyword == "lvs_timeouts":
                        w = list(c.args)
                        if "tcp" in w and w.index("tcp") + 1 < len(w) and w[w.index("tcp") + 1].isdigit():
                            n = int(w[w.index("tcp") + 1])
                            self.tcp_timeout = (_dur(n * 1000), c.where, "(lvs_timeouts tcp)")
        for s in self.doc.stmts:
            k = s.keyword
            if k == "virtual_server":
                self.vs(s)
            elif k == "virtual_server_group":
                rep.unsupported(
                    s.where,
                    "virtual_server_group: not supported; write one virtual_server per "
                    "address (the group's virtual_server is not imported either)",
                )
            elif k in (
                "vrrp_instance",
                "vrrp_script",
                "vrrp_sync_group",
                "vrrp_track_process",
                "global_defs",
                "static_ipaddress",
                "static_routes",
                "static_rules",
                "track_group",
                "garp_group",
            ):
                rep.ignored(s.where, f"{k}: VRRP / global settings (import them with `vrrpd import`)")
            elif k == "SSL":
                rep.ignored(s.where, "SSL: used by SSL_GET checks only")
            else:
                rep.unsupported(s.where, f"unknown keyword '{k}'")
        if not self.tables and not rep.errors:
            rep.error((self.doc.files[0] if self.doc.files else "?") + ":1", "no virtual_server to import")
        if rep.errors:
            return None
        head = [
            "# tcplb configuration imported from the LVS virtual servers of "
            f"{comment(', '.join(self.doc.files))}",
            "# by `tcplb import --keepalived`. Each entry cites its keepalived.conf line.",
            "# Check with: tcplb -c FILE --check",
            "# tcplb proxies in user space: real servers see connections from this host, not from clients.",
        ]
        return document(head, rep, self.tables)

    def vs(self, s: kaconf.Stmt) -> None:
        rep = self.rep
        a = s.args
        if a[:1] == ("fwmark",) or a[:1] == ("group",):
            rep.unsupported(
                s.where, f"virtual_server {' '.join(a)}: only IP PORT virtual servers are imported"
            )
            return
        if len(a) < 2:
            rep.error(s.where, "virtual_server needs an address and a port")
            return
        try:
            ip = ipaddress.ip_address(a[0])
        except ValueError:
            rep.error(s.where, f"virtual_server '{a[0]}': not an IP address")
            return
        if not a[1].isdigit() or not 0 <= int(a[1]) <= 65535:
            rep.error(s.where, f"virtual_server port '{a[1]}': must be 0..65535")
            return
        port = int(a[1])
        if port == 0:
            rep.unsupported(s.where, "virtual_server with port 0 (all ports, persistence only): not imported")
            return
        name = _name(f"vs_{ip}_{port}")
        if name in self.names:
            rep.error(s.where, f"virtual_server {ip} {port} defined twice")
            return
        self.names.add(name)
        t = Table(f"[listen.{toml_key(name)}]", s.where, f"{s.where} virtual_server {ip} {port}")
        t.set("bind", [f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"], s.where)
        vs_delay: tuple[float, str] = (60.0, s.where)
        vs_chk: dict[str, tuple[Any, str]] = {}
        algo: tuple[str, str] | None = None
        persistence: kaconf.Stmt | None = None
        reals: list[kaconf.Stmt] = []
        sorry: kaconf.Stmt | None = None
        alpha = False
        if not any(c.keyword == "protocol" for c in s.children()):
            rep.warning(
                s.where,
                "no protocol line: keepalived 1.x used TCP, keepalived 2.2.7 defaults to UDP (and "
                "says so); imported as TCP, what the old release ran",
            )
        for c in s.children():
            k = c.keyword
            if k in ("lb_algo", "lvs_sched"):
                v = c.words[1] if len(c.words) > 1 else ""
                if v not in _LVS_ALGOS:
                    rep.error(
                        c.where,
                        f"{k} '{v}': unknown scheduler (keepalived accepts {', '.join(sorted(_LVS_ALGOS))})",
                    )
                else:
                    algo = (v, c.where)
            elif k in ("lb_kind", "lvs_method"):
                self.lb_kind(c)
            elif k == "delay_loop":
                d = self.seconds(c, 1)
                if d is not None:
                    vs_delay = (d, c.where)
            elif k in ("retry", "delay_before_retry", "connect_timeout", "nb_get_retry", "warmup"):
                self.checker_param(c, vs_chk)
            elif k == "persistence_timeout":
                persistence = c
            elif k == "persistence_granularity":
                rep.ignored(c.where, "persistence_granularity: see persistence_timeout")
            elif k == "persistence_engine":
                rep.unsupported(c.where, "persistence_engine: not supported")
            elif k == "protocol":
                v = c.words[1] if len(c.words) > 1 else ""
                if v == "UDP" or v == "SCTP":
                    rep.unsupported(
                        c.where, f"protocol {v}: tcplb relays TCP only; this virtual server is not imported"
                    )
                    return
                if v != "TCP":
                    rep.error(c.where, f"protocol '{v}': must be TCP, UDP or SCTP")
            elif k == "real_server":
                reals.append(c)
            elif k == "sorry_server":
                sorry = c
            elif k == "alpha":
                alpha = True
            elif k in (
                "omega",
                "ha_suspend",
                "smtp_alert",
                "snmp_name",
                "inhibit_on_failure",
                "ip_family",
                "hashed",
                "ops",
                "flag-1",
                "flag-2",
                "flag-3",
                "sh-port",
                "sh-fallback",
                "mh-port",
                "mh-fallback",
                "sorry_server_inhibit",
                "sorry_server_lvs_method",
            ):
                why = {
                    "omega": "no notify scripts on quorum changes",
                    "ha_suspend": "checks run whether or not the VIP is here",
                    "inhibit_on_failure": "a DOWN server gets no new connections in tcplb either",
                    "smtp_alert": "mail alerts are not sent",
                }.get(k, "no effect in tcplb")
                rep.ignored(c.where, f"{k}: {why}")
            elif k in ("quorum", "quorum_up", "quorum_down", "hysteresis"):
                rep.unsupported(c.where, f"{k}: no quorum; the listener serves with whatever servers are up")
            elif k == "virtualhost":
                if len(c.words) > 1:
                    vs_chk["host"] = (c.words[1], c.where)
            else:
                rep.unsupported(c.where, f"unknown virtual_server keyword '{k}'")
        balance = "roundrobin"
        if algo is not None:
            mapped = _ALGOS.get(algo[0])
            if mapped is None:
                rep.unsupported(algo[1], f"lb_algo {algo[0]}: no equivalent; imported as roundrobin")
                balance = "roundrobin"
            else:
                balance = mapped
                if algo[0] in ("sed", "nq", "mh"):
                    rep.warning(
                        algo[1], f"lb_algo {algo[0]}: imported as {mapped} (the nearest tcplb algorithm)"
                    )
            t.set("balance", balance, algo[1], f"(lb_algo {algo[0]})")
        else:
            rep.warning(s.where, "no lb_algo: keepalived's default is wlc; imported as leastconn")
            balance = "leastconn"
            algo = ("wlc", s.where)
            t.set("balance", balance, s.where, "(keepalived's default scheduler wlc)")
        if persistence is not None:
            v = persistence.words[1] if len(persistence.words) > 1 else "360"
            rep.warning(
                persistence.where,
                f"persistence_timeout {v}: tcplb keeps no per-client table; "
                'balance = "source" (a hash of the client address) keeps each client '
                "on one server while the servers stay up: imported as source",
            )
            t.set("balance", "source", persistence.where, f"(persistence_timeout {v}; lb_algo {algo[0]})")
        t.set("mode", "tcp", s.where)
        t.set("retries", 0, s.where, "(LVS forwards a connection once)")
        to, to_where, to_note = self.tcp_timeout
        for key in ("timeout_client", "timeout_server"):
            t.set(key, to, s.where if to_where == "?" else to_where, to_note)
        self.connects = []
        servers = Rows()
        checks_seen: list[dict[str, Any]] = []
        for r in reals:
            entry = self.real(r, vs_delay, vs_chk, algo[0], checks_seen)
            if entry is None:
                continue
            if any(d["name"] == entry[0]["name"] for d, _ in servers):
                rep.error(r.where, f"real_server {entry[0]['address']} is already in this virtual_server")
                if isinstance(entry[0].get("check"), dict):
                    checks_seen.pop()
                    self.connects.pop()
                continue
            servers.append(entry)
        if sorry is not None:
            sa = sorry.args
            try:
                sip = ipaddress.ip_address(sa[0])
                sport = int(sa[1]) if len(sa) > 1 and sa[1].isdigit() else port
                addr = f"[{sip}]:{sport}" if sip.version == 6 else f"{sip}:{sport}"
                servers.append(
                    (
                        {"name": _name(f"sorry_{addr}"), "address": addr, "backup": True, "check": False},
                        sorry.where,
                    )
                )
                rep.warning(
                    sorry.where,
                    "sorry_server: imported as a backup server (used when every real "
                    "server is down), unchecked as in keepalived",
                )
            except (ValueError, IndexError):
                rep.error(sorry.where, "sorry_server needs an IP address and a port")
        if not servers:
            rep.warning(s.where, f"virtual_server {ip} {port}: no real server")
        if alpha:
            t.set(
                "default_server",
                {"init_state": "down"},
                s.where,
                "(alpha: servers start DOWN until a check passes)",
            )
        # the listener-level check: the first real server's settings (servers override what differs)
        if checks_seen:
            ct = _dur(self.connects[0] * 1000)
            t.set("timeout_connect", ct, s.where, "(connect_timeout of the checks; LVS itself has none)")
            t.set("timeout_check", ct, s.where, "(connect_timeout)")
            t.set("check", checks_seen[0], s.where)
            first = checks_seen[0]
            for d, _where in servers:
                if isinstance(d.get("check"), dict):
                    if d["check"] == first:
                        del d["check"]
                    else:
                        d["check"] = {k: v for k, v in d["check"].items() if first.get(k) != v}
                        if not d["check"]:
                            del d["check"]
        else:
            t.set("check", False, s.where, "(no checker)")
            for d, _ in servers:
                d.pop("check", None)
        t.set("server", servers, s.where)
        self.tables.append(t)

    def lb_kind(self, c: kaconf.Stmt) -> None:
        v = c.words[1] if len(c.words) > 1 else ""
        if v == "DR":
            msg = (
                "lb_kind DR: tcplb proxies: real servers no longer need the VIP on their loopback nor "
                "arp_ignore/arp_announce (remove them), they answer tcplb, not the clients, and see tcplb's "
                "address as the client's"
            )
        elif v == "NAT":
            msg = (
                "lb_kind NAT: tcplb proxies: real servers no longer need this host as their default gateway, "
                "and see tcplb's address as the client's"
            )
        elif v == "TUN":
            msg = (
                "lb_kind TUN: tcplb proxies: real servers no longer need the IPIP tunnel nor the VIP, and "
                "see tcplb's address as the client's"
            )
        else:
            self.rep.error(c.where, f"{c.keyword} '{v}': must be NAT, DR or TUN")
            return
        self.rep.warning(c.where, msg)

    def seconds(self, c: kaconf.Stmt, idx: int) -> float | None:
        v = c.words[idx] if len(c.words) > idx else ""
        if not re.fullmatch(r"\d{1,9}(\.\d{1,6})?", v) or float(v) <= 0 or float(v) > 86400:
            self.rep.error(c.where, f"{c.keyword} '{v}': must be a number of seconds > 0 and <= 86400")
            return None
        return float(v)

    def checker_param(self, c: kaconf.Stmt, out: dict[str, tuple[Any, str]]) -> None:
        k = c.keyword
        v = c.words[1] if len(c.words) > 1 else ""
        if k in ("retry", "nb_get_retry"):
            if not v.isdigit() or int(v) > 999:
                self.rep.error(c.where, f"{k} '{v}': must be an integer 0..999")
                return
            if k == "nb_get_retry":
                self.rep.warning(
                    c.where,
                    "nb_get_retry: the keepalived 1.x name of retry (2.2.7 warns in HTTP_GET and refuses it "
                    "in TCP_CHECK): imported as retry",
                )
            out["retry"] = (int(v), c.where)
        elif k == "warmup":
            self.rep.ignored(
                c.where, "warmup: the first check runs at once (global.spread_checks adds jitter)"
            )
        else:
            d = self.seconds(c, 1)
            if d is not None:
                out[k] = (d, c.where)

    def real(
        self,
        r: kaconf.Stmt,
        vs_delay: tuple[float, str],
        vs_chk: dict[str, tuple[Any, str]],
        algo: str,
        checks_seen: list[dict[str, Any]],
    ) -> tuple[dict[str, Any], str] | None:
        rep = self.rep
        a = r.args
        try:
            ip = ipaddress.ip_address(a[0] if a else "")
        except ValueError:
            rep.error(r.where, f"real_server '{a[0] if a else ''}': not an IP address")
            return None
        if len(a) < 2 or not a[1].isdigit() or not 1 <= int(a[1]) <= 65535:
            rep.error(r.where, "real_server needs an IP address and a port 1..65535")
            return None
        addr = f"[{ip}]:{a[1]}" if ip.version == 6 else f"{ip}:{a[1]}"
        d: dict[str, Any] = {"name": _name(addr), "address": addr}
        weight = 1
        delay = vs_delay
        chk_params = dict(vs_chk)
        checker: kaconf.Stmt | None = None
        for c in r.children():
            k = c.keyword
            if k == "weight":
                v = c.words[1] if len(c.words) > 1 else ""
                if not v.isdigit() or int(v) > 65535:
                    rep.error(c.where, f"weight '{v}': must be an integer 0..65535")
                    continue
                weight = int(v)
                if weight > 256:
                    rep.unsupported(c.where, f"weight {weight}: tcplb weights are 0..256; imported as 256")
                    weight = 256
                d["weight"] = weight
            elif k in (
                "TCP_CHECK",
                "HTTP_GET",
                "SSL_GET",
                "MISC_CHECK",
                "SMTP_CHECK",
                "DNS_CHECK",
                "BFD_CHECK",
                "UDP_CHECK",
                "PING_CHECK",
                "FILE_CHECK",
            ):
                if checker is not None:
                    rep.unsupported(
                        c.where,
                        f"{k}: a second checker; tcplb checks each server one way (the first "
                        "checker is imported)",
                    )
                    continue
                if k in ("TCP_CHECK", "HTTP_GET"):
                    checker = c
                else:
                    rep.unsupported(
                        c.where, f"{k}: not supported; the server is checked by a TCP connect instead"
                    )
                    checker = kaconf.Stmt(("TCP_CHECK",), c.file, c.line, c.raw, [])
            elif k == "delay_loop":
                dv = self.seconds(c, 1)
                if dv is not None:
                    delay = (dv, c.where)
            elif k in ("retry", "delay_before_retry", "connect_timeout", "nb_get_retry", "warmup"):
                self.checker_param(c, chk_params)
            elif k in ("inhibit_on_failure", "smtp_alert", "snmp_name", "alpha", "lvs_method"):
                rep.ignored(c.where, f"{k}: no effect in tcplb")
            elif k in ("notify_up", "notify_down"):
                rep.unsupported(
                    c.where,
                    f"{k}: no scripts on server state changes (watch tcplb's log or the Prometheus metrics)",
                )
            elif k in ("uthreshold", "lthreshold"):
                rep.unsupported(
                    c.where, f"{k}: imported as maxconn" if k == "uthreshold" else f"{k}: not supported"
                )
                if k == "uthreshold" and len(c.words) > 1 and c.words[1].isdigit() and int(c.words[1]) > 0:
                    d["maxconn"] = int(c.words[1])
            elif k == "virtualhost":
                if len(c.words) > 1:
                    chk_params["host"] = (c.words[1], c.where)
            else:
                rep.unsupported(c.where, f"unknown real_server keyword '{k}'")
        if algo in ("rr", "lc") and weight not in (0, 1) and "weight" in d:
            rep.warning(
                r.where,
                f"weight {weight} with lb_algo {algo}: LVS {algo} ignores weights (except 0); imported as 1",
            )
            d["weight"] = 1
        if checker is None:
            d["check"] = False
            rep.warning(
                r.where,
                f"real_server {addr} has no checker: keepalived keeps it in service; so does "
                "tcplb (check = false)",
            )
            return d, r.where
        chk = self.checker(checker, delay, chk_params)
        d["check"] = chk
        checks_seen.append(chk)
        return d, r.where

    def checker(
        self, c: kaconf.Stmt, delay: tuple[float, str], params: dict[str, tuple[Any, str]]
    ) -> dict[str, Any]:
        rep = self.rep
        p = dict(params)
        chk: dict[str, Any] = {"type": "http" if c.keyword == "HTTP_GET" else "tcp"}
        for x in c.children():
            k = x.keyword
            if k in ("retry", "nb_get_retry", "delay_before_retry", "connect_timeout", "warmup"):
                self.checker_param(x, p)
            elif k == "delay_loop":
                dv = self.seconds(x, 1)
                if dv is not None:
                    delay = (dv, x.where)
            elif k == "connect_port":
                v = x.words[1] if len(x.words) > 1 else ""
                if v.isdigit() and 1 <= int(v) <= 65535:
                    chk["port"] = int(v)
                else:
                    rep.error(x.where, f"connect_port '{v}': must be 1..65535")
            elif k == "connect_ip":
                chk["addr"] = x.words[1] if len(x.words) > 1 else ""
            elif k in ("bindto", "bind_port", "connect_timeout_ms", "fwmark"):
                rep.unsupported(x.where, f"{k}: checks go out from the default source")
            elif k == "url" and c.keyword == "HTTP_GET":
                if "path" in chk:
                    rep.unsupported(x.where, "a second url: tcplb checks one path (the first)")
                    continue
                for u in x.children():
                    if u.keyword == "path" and len(u.words) > 1:
                        if not u.words[1].startswith("/") or any(ch.isspace() for ch in u.words[1]):
                            rep.error(u.where, f"path {u.words[1]!r}: not an absolute URL path")
                        else:
                            chk["path"] = u.words[1]
                    elif u.keyword == "status_code" and len(u.words) > 1:
                        codes = []
                        for code in u.words[1:]:
                            if re.fullmatch(r"\d{3}", code):
                                codes.append(f"{code}-{code}")
                            elif re.fullmatch(r"\d{3}-\d{3}", code):
                                codes.append(code)
                            else:
                                rep.error(u.where, f"status_code '{code}': not a status")
                        chk["expect_status"] = codes
                    elif u.keyword in (
                        "digest",
                        "regex",
                        "regex_no_match",
                        "regex_options",
                        "regex_stack",
                        "regex_min_offset",
                        "regex_max_offset",
                    ):
                        rep.unsupported(u.where, f"{u.keyword}: tcplb checks the status only")
                    elif u.keyword == "virtualhost" and len(u.words) > 1:
                        chk["host"] = u.words[1]
                    else:
                        rep.unsupported(u.where, f"unknown url keyword '{u.keyword}'")
            elif k == "virtualhost" and len(x.words) > 1:
                chk["host"] = x.words[1]
            elif k in ("http_protocol", "enable_sni", "fast_recovery", "warmup"):
                rep.ignored(x.where, f"{k}: no effect in tcplb")
            else:
                rep.unsupported(x.where, f"unknown {c.keyword} keyword '{k}'")
        if c.keyword == "HTTP_GET":
            chk.setdefault("path", "/")
            chk.setdefault("expect_status", ["200-299"])
            if "host" in params and "host" not in chk:
                chk["host"] = params["host"][0]
        retry = p.get("retry", (1, ""))[0]
        before = p.get("delay_before_retry", (1.0, ""))[0]
        connect = p.get("connect_timeout", (5.0, ""))[0]
        d = delay[0]
        chk["inter"] = _dur(d * 1000)
        chk["fastinter"] = _dur(before * 1000)
        chk["downinter"] = _dur(d * 1000)
        chk["rise"] = 1
        chk["fall"] = retry + 1
        chk["on_error"] = "ignore"
        self.connects.append(connect)
        if connect > d:
            self.rep.warning(
                c.where,
                f"connect_timeout {connect:g} is longer than delay_loop {d:g}: tcplb bounds a "
                "check by its interval",
            )
        return chk


# ================================================================================================ CLI


def convert_haproxy(doc: haconf.Document) -> tuple[str | None, Report]:
    return convert_with(lambda rep: _HaConverter(doc, rep).run())


def convert_lvs(doc: kaconf.Document) -> tuple[str | None, Report]:
    return convert_with(lambda rep: _LvsConverter(doc, rep).run(), doc.notes)


def check_text(text: str) -> list[str]:
    """What ``tcplb --check`` says about ``text`` (the TOML validation only)."""
    from tcplb.config import loads

    return check_with(lambda t: loads(t, "imported"), text)


def main(argv: list[str]) -> int:
    import os

    a = import_parser(
        "tcplb import",
        "Write the tcplb configuration (lb.toml) equivalent to an haproxy.cfg, or to the LVS "
        "virtual servers of a keepalived.conf (--keepalived). Everything that does not carry over is listed "
        "on stderr with its file:line.",
        file_help="haproxy.cfg (or keepalived.conf with --keepalived)",
        output_help="write lb.toml here (default: standard output)",
        config_id_help="keepalived's config id for @ID lines (with --keepalived; default: the short host "
        "name)",
        flags=[("--keepalived", "FILE is a keepalived.conf: import virtual_server")],
    ).parse_args(argv)

    def lvs() -> kaconf.Document:
        return kaconf.parse_file(a.file, config_id=a.config_id)

    def ha() -> haconf.Document:
        return haconf.parse_file(a.file, environ=os.environ)

    if a.keepalived:
        return import_file(lvs, kaconf.KaConfError, convert_lvs, a, check_text)
    return import_file(ha, haconf.HaConfError, convert_haproxy, a, check_text)
