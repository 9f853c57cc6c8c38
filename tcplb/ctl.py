"""``tcplb ctl``: a command-line client of the stats server's admin API, in HAProxy's runtime-API words.

Standard library only (urllib), so it works from any script on the host::

    tcplb ctl -c /etc/tcplb/lb.toml set server rabbitmq/rmq1 state drain
    tcplb ctl --url http://127.0.0.1:8404 --user admin:secret show servers state

Exit codes: 0 done, 1 error (the server refused, could not be reached, bad configuration file), 2 usage.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import csv
import io
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, NoReturn

DEFAULT_CONFIG = "/etc/tcplb/lb.toml"
DEFAULT_URL = "http://127.0.0.1:8404"
DEFAULT_URI = "/stats"

COMMANDS = """commands (HAProxy runtime API words; L/S = listener/server):
  show stat [--json]                  per listener: frontend, servers, backend (--json: the raw JSON)
  show servers state                  one line per server: listener server status weight sessions check
  set server L/S state ready|drain|maint
  set server L/S weight N             (same as: set weight L/S N)
  set weight L/S N                    0..256, 0 drains
  disable server L/S                  = set server L/S state maint
  enable server L/S                   = set server L/S state ready
  shutdown sessions server L/S        close the server's established connections
  disable health L/S                  stop the health checks (the server counts as UP)
  enable health L/S                   start them again
  reload                              re-read the configuration file, as SIGHUP; all or nothing:
                                      exit 1 with the reason when it is refused (old one kept)
  rebalance L                         move surplus connections off the most loaded servers of
                                      listener L now: graceful closes through RabbitMQ's management
                                      API ([listen.L.rebalance] tolerance/rate); exit 1 with the
                                      reason when a server has no check.management

exit status: 0 done, 1 error (the server refused or could not be reached), 2 usage
"""

# the columns of `show stat` (HAProxy's CSV names), in this order, when the server sends them
STAT_COLUMNS = [
    "pxname",
    "svname",
    "status",
    "weight",
    "act",
    "bck",
    "qcur",
    "scur",
    "smax",
    "slim",
    "stot",
    "econ",
    "wretr",
    "wredis",
    "chkfail",
    "chkdown",
    "lastchg",
    "check_status",
    "addr",
]


class Usage(Exception):
    """A command line that does not parse (exit 2)."""


class CtlError(Exception):
    """Anything else that went wrong (exit 1); the text is the one line printed."""


@dataclass(frozen=True)
class Target:
    base: str  # scheme://host:port, no trailing slash
    uri: str  # the stats page path, e.g. "/stats"
    auth: str | None  # "user:password"
    timeout: float

    def url(self, path: str) -> str:
        return self.base + path


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise Usage(message)


def _parser() -> _Parser:
    ap = _Parser(
        prog="tcplb ctl",
        description="Command-line client of tcplb's admin API (the [stats] HTTP server).",
        epilog=COMMANDS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = ap.add_mutually_exclusive_group()
    where.add_argument(
        "-c",
        "--config",
        help=f"take URL, uri and credentials from this file's [stats] (default {DEFAULT_CONFIG} "
        f"when it exists, else --url {DEFAULT_URL})",
    )
    where.add_argument("--url", help=f"the stats server, e.g. {DEFAULT_URL} (a path sets the stats uri)")
    ap.add_argument(
        "--user", metavar="USER:PASS", help="basic auth (default: env TCPLB_AUTH, then -c's first auth)"
    )
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per request (default 5)")
    ap.add_argument("--json", action="store_true", help="show stat: print the raw JSON")
    ap.add_argument("words", nargs="*", metavar="COMMAND", help="see below")
    return ap


def _host_for_url(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _from_config(path: str) -> tuple[str, str, str | None]:
    from . import config as cfgmod

    try:
        cfg = cfgmod.load(path)
    except cfgmod.ConfigError as e:
        lines = e.lines()
        more = f" (and {len(lines) - 1} more errors)" if len(lines) > 1 else ""
        raise CtlError(f"{path}: invalid configuration: {lines[0] if lines else e}{more}") from None
    except OSError as e:
        raise CtlError(f"{path}: {e.strerror or e}") from None
    st = cfg.stats
    if st is None:
        raise CtlError(f"{path}: no [stats] section, so no admin API to talk to")
    host, port = st.bind
    auth = f"{st.auth[0].user}:{st.auth[0].password}" if st.auth else None
    return f"http://{_host_for_url(host)}:{port}", st.uri, auth


def _from_url(url: str) -> tuple[str, str]:
    if "://" not in url:
        url = "http://" + url
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https") or not u.netloc:
        raise Usage(f"--url: expected http://host:port[/uri], got {url!r}")
    uri = u.path.rstrip("/") or DEFAULT_URI
    return f"{u.scheme}://{u.netloc}", uri


def target(args: argparse.Namespace) -> Target:
    auth: str | None = None
    if args.url:
        base, uri = _from_url(args.url)
    else:
        path = args.config
        if path is None and os.path.exists(DEFAULT_CONFIG):
            path = DEFAULT_CONFIG
        if path is not None:
            base, uri, auth = _from_config(path)
        else:
            base, uri = DEFAULT_URL, DEFAULT_URI
    if args.user is not None:
        auth = args.user
    elif os.environ.get("TCPLB_AUTH"):
        auth = os.environ["TCPLB_AUTH"]
    if auth is not None and ":" not in auth:
        raise Usage("--user/TCPLB_AUTH: expected USER:PASS")
    if args.timeout <= 0:
        raise Usage("--timeout: must be > 0")
    return Target(base, uri, auth, args.timeout)


# no ProxyHandler from the environment: http_proxy/HTTPS_PROXY must never see the admin credentials (the
# admin API is on this host or a management network, never behind a proxy); no redirects followed either
class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


def request(t: Target, method: str, path: str, form: dict[str, str] | None = None) -> tuple[str, str]:
    """One request; returns (content type, body). Raises CtlError with the server's status and text."""
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    req = urllib.request.Request(t.url(path), data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    if t.auth is not None:
        req.add_header("Authorization", "Basic " + base64.b64encode(t.auth.encode()).decode())
    try:
        with _OPENER.open(req, timeout=t.timeout) as resp:
            return resp.headers.get("Content-Type", ""), resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        try:
            text = e.read().decode("utf-8", "replace").strip()
        except OSError:
            text = ""
        if path.startswith("/api/rebalance/") and e.code in (404, 409):
            with contextlib.suppress(ValueError, AttributeError):
                text = str(json.loads(text).get("error", text))
            raise CtlError(f"rebalance refused: {' '.join(text.split())}") from None
        if path == "/api/reload" and e.code == 409:
            with contextlib.suppress(ValueError, AttributeError):
                text = str(json.loads(text).get("error", text))
            raise CtlError(f"reload refused, the running configuration is unchanged: {text}") from None
        text = " ".join(text.split())  # one line
        reason = e.reason if isinstance(e.reason, str) else ""
        detail = f": {text}" if text and text.lower() != reason.lower() else ""
        raise CtlError(f"{method} {path}: server refused: {e.code} {reason}{detail}") from None
    except urllib.error.URLError as e:
        why = e.reason.strerror if isinstance(e.reason, OSError) and e.reason.strerror else e.reason
        raise CtlError(f"cannot reach {t.base}: {why}") from None
    except (TimeoutError, OSError) as e:
        raise CtlError(f"cannot reach {t.base}: {e}") from None


def _server(ref: str) -> tuple[str, str]:
    listener, sep, server = ref.partition("/")
    if not sep or not listener or not server:
        raise Usage(f"expected LISTENER/SERVER, got {ref!r}")
    return listener, server


def _admin_path(ref: str, action: str) -> str:
    listener, server = _server(ref)
    q = urllib.parse.quote
    return f"/api/servers/{q(listener, safe='')}/{q(server, safe='')}/{action}"


def _admin(t: Target, ref: str, action: str, form: dict[str, str] | None = None) -> str:
    _, body = request(t, "POST", _admin_path(ref, action), form or {})
    try:
        ans = json.loads(body)
    except ValueError:
        return body.strip()
    if isinstance(ans, dict) and "status" in ans:
        line = f"{ref}: {ans['status']}"
        if "weight" in ans:
            line += f" weight {ans['weight']}"
        if ans.get("health") == "disabled":
            line += ", checks disabled"
        if "sessions_closed" in ans:
            line += f", {ans['sessions_closed']} sessions closed"
        return line
    return body.strip()


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def show_stat(t: Target, raw_json: bool) -> str:
    if raw_json:
        return request(t, "GET", t.uri + ";json")[1].rstrip("\n")
    body = request(t, "GET", t.uri + ";csv")[1]
    lines = body.splitlines()
    if not lines or not lines[0].startswith("#"):
        raise CtlError(f"GET {t.uri};csv: not HAProxy CSV")
    reader = csv.DictReader(io.StringIO("\n".join([lines[0].lstrip("# "), *lines[1:]])))
    fields = reader.fieldnames or []
    cols = [c for c in STAT_COLUMNS if c in fields]
    rows = [cols] + [[_s((r.get(c) or "").strip()) for c in cols] for r in reader]
    return _table(rows)


def _s(v: Any) -> str:
    if v is None or v == "":
        return "-"
    return "_".join(str(v).split())  # one word per column: "DOWN 1/2" -> DOWN_1/2


def show_servers_state(t: Target) -> str:
    body = request(t, "GET", "/api/servers")[1]
    try:
        servers = json.loads(body)
    except ValueError:
        raise CtlError("GET /api/servers: the answer is not JSON") from None
    if not isinstance(servers, list):
        raise CtlError("GET /api/servers: expected a JSON list")
    out = ["# listener server status weight sessions check"]
    for s in servers:
        health = s.get("health")
        check = s.get("check_status")
        if health == "disabled":
            check = "disabled"
        elif health == "none":
            check = "none"
        fields = (s.get("listener"), s.get("name"), s.get("status"), s.get("weight"), s.get("scur"), check)
        out.append(" ".join(_s(x) for x in fields))
    return "\n".join(out)


@dataclass(frozen=True)
class Command:
    """A parsed command: ``show`` ("stat" | "servers") or an admin ``action`` on ``ref`` with ``form``."""

    show: str | None = None
    reload: bool = False
    rebalance: str = ""  # the listener to rebalance
    ref: str = ""
    action: str = ""
    form: tuple[tuple[str, str], ...] = ()


def parse(words: list[str]) -> Command:
    """The command grammar (raises Usage); no network, no files."""
    match words:
        case ["show", "stat"]:
            return Command(show="stat")
        case ["show", "servers", "state"] | ["show", "servers"]:
            return Command(show="servers")
        case ["reload"]:
            return Command(reload=True)
        case ["rebalance", listener]:
            if not listener or "/" in listener:
                raise Usage(f"rebalance: expected a LISTENER name, got {listener!r}")
            return Command(rebalance=listener)
        case ["rebalance", *_]:
            raise Usage("rebalance: expected one LISTENER name (tcplb ctl rebalance LISTENER)")
        case ["set", "server", ref, "state", state]:
            if state not in ("ready", "drain", "maint"):
                raise Usage(f"set server: state must be ready, drain or maint, not {state!r}")
            cmd = Command(ref=ref, action="state", form=(("state", state),))
        case ["set", "server", ref, "weight", n] | ["set", "weight", ref, n]:
            if not n.isdigit() or not 0 <= int(n) <= 256:
                raise Usage(f"set weight: expected an integer 0..256, got {n!r}")
            cmd = Command(ref=ref, action="weight", form=(("weight", str(int(n))),))
        case ["disable", "server", ref]:
            cmd = Command(ref=ref, action="state", form=(("state", "maint"),))
        case ["enable", "server", ref]:
            cmd = Command(ref=ref, action="state", form=(("state", "ready"),))
        case ["shutdown", "sessions", "server", ref]:
            cmd = Command(ref=ref, action="shutdown-sessions")
        case ["disable" | "enable" as verb, "health", ref]:
            cmd = Command(ref=ref, action="health", form=(("health", verb),))
        case []:
            raise Usage("no command given")
        case _:
            raise Usage(f"unknown command: {' '.join(words)}")
    _server(cmd.ref)
    return cmd


def execute(cmd: Command, t: Target, raw_json: bool = False) -> str:
    """Run one parsed command against the server; returns what to print."""
    if cmd.show == "stat":
        return show_stat(t, raw_json)
    if cmd.show == "servers":
        return show_servers_state(t)
    if cmd.reload:
        body = request(t, "POST", "/api/reload", {})[1]
        try:
            return str(json.loads(body).get("message", "reloaded"))
        except (ValueError, AttributeError):
            return body.strip()
    if cmd.rebalance:
        return rebalance(t, cmd.rebalance)
    return _admin(t, cmd.ref, cmd.action, dict(cmd.form))


def rebalance(t: Target, listener: str) -> str:
    """``POST /api/rebalance/<listener>``: one line with what was started."""
    path = f"/api/rebalance/{urllib.parse.quote(listener, safe='')}"
    _, body = request(t, "POST", path, {})
    try:
        ans = json.loads(body)
    except ValueError:
        return body.strip()
    if not isinstance(ans, dict):
        return body.strip()
    conns = ans.get("connections") or {}
    spread = " ".join(f"{k}={v}" for k, v in conns.items()) if isinstance(conns, dict) else ""
    limits = ans.get("limits") or {}
    lim = " ".join(f"{k}<={v}" for k, v in limits.items()) if isinstance(limits, dict) else ""
    now, left = ans.get("closing_now", 0), ans.get("surplus", 0)
    line = f"{listener}: rebalancing: {now} closing now, surplus {left}"
    if spread:
        line += f"; connections {spread}"
    if lim:
        line += f"; limits {lim}"
    if ans.get("rate") is not None:
        line += f"; at most {ans['rate']:g} closes/s"
    return line


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    try:
        args = ap.parse_intermixed_args(argv)
        cmd = parse(args.words)
        if args.json and cmd.show != "stat":
            raise Usage("--json goes with show stat")
        t = target(args)
        out = execute(cmd, t, args.json)
    except Usage as e:
        print(f"tcplb ctl: {e} (tcplb ctl -h for help)", file=sys.stderr)
        return 2
    except CtlError as e:
        print(f"tcplb ctl: {e}", file=sys.stderr)
        return 1
    if out:
        print(out)
    return 0
