"""The stats page and admin API over HTTP (asyncio only; one tiny HTTP/1.1 server, ``Connection: close``).

GET  ``/`` or ``/stats``               HTML table in the spirit of HAProxy's stats page
GET  ``/stats;csv`` or ``/stats.csv``  HAProxy-like CSV (``# pxname,svname,...``)
GET  ``/stats.json`` or ``/stats;json``  everything as JSON
GET  ``/api/servers``                 "show servers": JSON list of every server
POST ``/api/servers/<listener>/<server>/weight``  body ``weight=N`` (or just ``N``)      (admin)
POST ``/api/servers/<listener>/<server>/state``   body ``state=ready|drain|maint``       (admin)
POST ``/api/servers/<listener>/<server>/maint`` / ``/ready`` / ``/drain``  shortcuts    (admin)

With ``user``/``password`` set every request needs HTTP basic auth; POSTs need ``admin = true``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import html
import json
import logging
import time
import urllib.parse
from typing import Any

from .config import StatsConfig
from .server import LoadBalancer

log = logging.getLogger("tcplb.stats")

MAX_REQUEST = 16384

# HAProxy's first CSV columns (management.txt §9.1), in order; we fill what we have
CSV_FIELDS = [
    "pxname",
    "svname",
    "qcur",
    "qmax",
    "scur",
    "smax",
    "slim",
    "stot",
    "bin",
    "bout",
    "dreq",
    "dresp",
    "ereq",
    "econ",
    "eresp",
    "wretr",
    "wredis",
    "status",
    "weight",
    "act",
    "bck",
    "chkfail",
    "chkdown",
    "lastchg",
    "downtime",
    "qlimit",
    "pid",
    "iid",
    "sid",
    "throttle",
    "lbtot",
    "tracked",
    "type",
    "rate",
    "rate_lim",
    "rate_max",
    "check_status",
    "check_code",
    "check_duration",
    "hrsp_1xx",
    "hrsp_2xx",
    "hrsp_3xx",
    "hrsp_4xx",
    "hrsp_5xx",
    "hrsp_other",
    "hanafail",
    "req_rate",
    "req_rate_max",
    "req_tot",
    "cli_abrt",
    "srv_abrt",
    "comp_in",
    "comp_out",
    "comp_byp",
    "comp_rsp",
    "lastsess",
    "last_chk",
    "last_agt",
    "qtime",
    "ctime",
    "rtime",
    "ttime",
    "agent_status",
    "agent_code",
    "agent_duration",
    "check_desc",
    "agent_desc",
    "check_rise",
    "check_fall",
    "check_health",
    "agent_rise",
    "agent_fall",
    "agent_health",
    "addr",
    "cookie",
    "mode",
    "algo",
]


def _v(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, bool):
        return "Y" if x else ""
    return str(x)


def csv_rows(snap: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    pid = snap["pid"]
    for iid, fe in enumerate(snap["listeners"], start=1):
        base = {"pxname": fe["name"], "pid": pid, "iid": iid, "mode": "tcp", "algo": fe["balance"]}
        rows.append(
            {
                **base,
                "svname": "FRONTEND",
                "scur": fe["scur"],
                "smax": fe["smax"],
                "slim": fe["slim"],
                "stot": fe["stot"],
                "bin": fe["bin"],
                "bout": fe["bout"],
                "status": fe["status"],
                "sid": 0,
                "type": 0,
            }
        )
        act = bck = 0
        for sid, s in enumerate(fe["servers"], start=1):
            up = s["status"] not in ("DOWN", "MAINT") and not s["status"].startswith("DOWN")
            if up and s["weight"] > 0:
                if s["backup"]:
                    bck += 1
                else:
                    act += 1
            rows.append(
                {
                    **base,
                    "svname": s["name"],
                    "qcur": s["qcur"],
                    "qmax": s["qmax"],
                    "scur": s["scur"],
                    "smax": s["smax"],
                    "slim": s["slim"],
                    "stot": s["stot"],
                    "bin": s["bin"],
                    "bout": s["bout"],
                    "econ": s["econ"],
                    "eresp": s["eresp"],
                    "wretr": s["wretr"],
                    "wredis": s["wredis"],
                    "status": s["status"],
                    "weight": s["weight"],
                    "act": 0 if s["backup"] else 1,
                    "bck": 1 if s["backup"] else 0,
                    "chkfail": s["chkfail"],
                    "chkdown": s["chkdown"],
                    "lastchg": s["lastchg"],
                    "downtime": s["downtime"],
                    "qlimit": s["qlimit"],
                    "sid": sid,
                    "lbtot": s["lbtot"],
                    "type": 2,
                    "check_status": s["check_status"],
                    "check_duration": s["check_duration_ms"],
                    "check_desc": s["check_info"],
                    "check_rise": s["check_rise"],
                    "check_fall": s["check_fall"],
                    "check_health": s["check_health"],
                    "addr": s["address"],
                }
            )
        rows.append(
            {
                **base,
                "svname": "BACKEND",
                "scur": fe["scur"],
                "smax": fe["smax"],
                "slim": fe["slim"],
                "stot": fe["stot"],
                "bin": fe["bin"],
                "bout": fe["bout"],
                "econ": fe["econ"],
                "status": "UP" if act + bck else "DOWN",
                "act": act,
                "bck": bck,
                "sid": 0,
                "type": 1,
                "weight": sum(s["weight"] for s in fe["servers"] if not s["backup"]),
            }
        )
    return rows


def render_csv(snap: dict[str, Any]) -> str:
    lines = ["# " + ",".join(CSV_FIELDS)]
    for r in csv_rows(snap):
        lines.append(",".join(_v(r.get(f)).replace(",", ";") for f in CSV_FIELDS) + ",")
    return "\n".join(lines) + "\n"


_STYLE = """body{font-family:Arial,Helvetica,sans-serif;font-size:12px}table{border-collapse:collapse;
margin-bottom:1.5em}th,td{border:1px solid #999;padding:2px 5px;text-align:right}th{background:#20a0ff;
color:#fff}td.n{text-align:left;font-weight:bold}tr.UP{background:#c0ffc0}tr.DOWN{background:#ff9090}
tr.MAINT{background:#c07820}tr.DRAIN{background:#20a0ff}tr.trans{background:#ffffa0}
tr.fe,tr.be{background:#eee}caption{text-align:left;font-weight:bold;font-size:14px}"""


def render_html(snap: dict[str, Any], refresh: float | None = None) -> str:
    e = html.escape
    head = [
        "Name",
        "Queue Cur",
        "Max",
        "Limit",
        "Sessions Cur",
        "Max",
        "Limit",
        "Total",
        "LbTot",
        "Bytes In",
        "Out",
        "Errors Conn",
        "Warn Retr",
        "Redis",
        "Status",
        "LastChk",
        "Wght",
        "Act",
        "Bck",
        "Chk",
        "Dwn",
        "Dwntme",
        "Address",
    ]
    out = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>tcplb statistics</title>"]
    if refresh:
        out.append(f"<meta http-equiv='refresh' content='{int(refresh)}'>")
    out.append(f"<style>{_STYLE}</style></head><body><h1>tcplb statistics</h1>")
    out.append(
        f"<p>pid {snap['pid']}, uptime {int(snap['uptime'])}s, {snap['actconn']} connections "
        f"(maxconn {snap['maxconn']}), {snap['reloads']} reloads. "
        "<a href='/stats;csv'>CSV</a> <a href='/stats.json'>JSON</a></p>"
    )
    for fe in snap["listeners"]:
        out.append(
            f"<table><caption>{e(fe['name'])} ({e(', '.join(fe['bind']))}, {e(fe['balance'])})"
            "</caption><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"
        )
        out.append(
            f"<tr class='fe'><td class='n'>Frontend</td><td></td><td></td><td></td><td>{fe['scur']}</td>"
            f"<td>{fe['smax']}</td><td>{fe['slim']}</td><td>{fe['stot']}</td><td></td>"
            f"<td>{fe['bin']}</td><td>{fe['bout']}</td><td>{fe['econ']}</td><td></td><td></td>"
            f"<td>{fe['status']}</td>" + "<td></td>" * 8 + "</tr>"
        )
        for s in fe["servers"]:
            st = s["status"]
            cls = st if st in ("UP", "DOWN", "MAINT", "DRAIN") else "trans" if " " in st else "UP"
            chk = f"{s['check_status'] or ''} {s['check_duration_ms'] or ''}"
            if s["check_status"] and s["check_duration_ms"] is not None:
                chk = f"{s['check_status']} in {s['check_duration_ms']}ms"
            out.append(
                f"<tr class='{cls}'><td class='n'>{e(s['name'])}</td><td>{s['qcur']}</td><td>{s['qmax']}</td>"
                f"<td>{_v(s['qlimit'])}</td><td>{s['scur']}</td><td>{s['smax']}</td><td>{_v(s['slim'])}</td>"
                f"<td>{s['stot']}</td><td>{s['lbtot']}</td><td>{s['bin']}</td><td>{s['bout']}</td>"
                f"<td>{s['econ']}</td><td>{s['wretr']}</td><td>{s['wredis']}</td><td>{e(st)}</td>"
                f"<td title='{e(s['check_info'] or '')}'>{e(chk.strip())}</td><td>{s['weight']}</td>"
                f"<td>{'' if s['backup'] else 'Y'}</td><td>{'Y' if s['backup'] else ''}</td>"
                f"<td>{s['chkfail']}</td><td>{s['chkdown']}</td><td>{s['downtime']}s</td>"
                f"<td>{e(s['address'])}</td></tr>"
            )
        out.append(
            f"<tr class='be'><td class='n'>Backend</td><td colspan='13'></td><td>"
            f"{fe['active_servers']} active, {fe['backup_servers']} backup</td><td colspan='8'></td></tr>"
        )
        out.append("</table>")
    out.append("</body></html>")
    return "".join(out)


class HttpError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    500: "Internal Server Error",
}


class StatsServer:
    def __init__(self, lb: LoadBalancer, cfg: StatsConfig) -> None:
        self.lb = lb
        self.cfg = cfg
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        host, port = self.cfg.bind
        self.server = await asyncio.start_server(self._handle, host, port, reuse_address=True)
        log.info("stats page on http://%s:%d/", host, port)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await self.server.wait_closed()
            self.server = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                status, ctype, body = await self._request(r)
        except HttpError as e:
            status, ctype, body = e.status, "text/plain; charset=utf-8", e.text + "\n"
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            w.close()
            return
        except Exception:
            log.exception("stats request failed")
            status, ctype, body = 500, "text/plain; charset=utf-8", "internal error\n"
        data = body.encode()
        hdr = (
            f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(data)}\r\nCache-Control: no-cache\r\nConnection: close\r\n"
        )
        if status == 401:
            hdr += 'WWW-Authenticate: Basic realm="tcplb"\r\n'
        try:
            w.write(hdr.encode() + b"\r\n" + data)
            await w.drain()
        except ConnectionError:
            pass
        finally:
            w.close()

    async def _request(self, r: asyncio.StreamReader) -> tuple[int, str, str]:
        raw = await r.readuntil(b"\r\n\r\n")
        if len(raw) > MAX_REQUEST:
            raise HttpError(413, "request too large")
        lines = raw.decode("latin-1").split("\r\n")
        try:
            method, target, _ver = lines[0].split(" ", 2)
        except ValueError:
            raise HttpError(400, "bad request line") from None
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        body = b""
        n = int(headers.get("content-length", "0") or 0)
        if n > MAX_REQUEST:
            raise HttpError(413, "body too large")
        if n:
            body = await r.readexactly(n)
        self._auth(headers)
        url = urllib.parse.urlsplit(target)
        path = urllib.parse.unquote(url.path)
        if method in ("GET", "HEAD"):
            return self._get(path)
        if method == "POST":
            if not self.cfg.admin:
                raise HttpError(403, "admin API disabled (stats.admin = false)")
            params = dict(urllib.parse.parse_qsl(url.query))
            text = body.decode("utf-8", "replace").strip()
            if "=" in text:
                params.update(urllib.parse.parse_qsl(text))
            elif text:
                params["value"] = text
            return self._post(path, params)
        raise HttpError(405, "GET or POST only")

    def _auth(self, headers: dict[str, str]) -> None:
        if self.cfg.user is None:
            return
        got = headers.get("authorization", "")
        want = "Basic " + base64.b64encode(f"{self.cfg.user}:{self.cfg.password or ''}".encode()).decode()
        if not hmac.compare_digest(got.encode(), want.encode()):
            raise HttpError(401, "authentication required")

    def _get(self, path: str) -> tuple[int, str, str]:
        snap = self.lb.snapshot()
        if path in ("/", "/stats", "/haproxy", "/haproxy?stats"):
            return 200, "text/html; charset=utf-8", render_html(snap, self.cfg.refresh)
        if path in ("/stats;csv", "/stats.csv", "/;csv"):
            return 200, "text/csv; charset=utf-8", render_csv(snap)
        if path in ("/stats.json", "/stats;json", "/;json"):
            snap["time"] = time.time()
            return 200, "application/json", json.dumps(snap, indent=1) + "\n"
        if path == "/api/servers":
            rows = [{"listener": fe["name"], **s} for fe in snap["listeners"] for s in fe["servers"]]
            return 200, "application/json", json.dumps(rows, indent=1) + "\n"
        raise HttpError(404, "not found")

    def _post(self, path: str, params: dict[str, str]) -> tuple[int, str, str]:
        parts = [p for p in path.split("/") if p]
        if len(parts) != 5 or parts[:2] != ["api", "servers"]:
            raise HttpError(404, "POST /api/servers/<listener>/<server>/(weight|state|maint|ready|drain)")
        _, _, fe, srv, action = parts
        try:
            if action == "weight":
                raw = params.get("weight", params.get("value", ""))
                try:
                    weight = int(raw)
                except ValueError:
                    raise HttpError(400, "weight must be an integer 0..256") from None
                st = self.lb.set_weight(fe, srv, weight)
            elif action == "state":
                st = self.lb.set_state(fe, srv, params.get("state", params.get("value", "")))
            elif action in ("maint", "ready", "drain"):
                st = self.lb.set_state(fe, srv, action)
            elif action in ("enable", "disable"):
                st = self.lb.set_state(fe, srv, "ready" if action == "enable" else "maint")
            else:
                raise HttpError(404, f"unknown action {action!r}")
        except KeyError as e:
            raise HttpError(404, str(e.args[0])) from None
        except ValueError as e:
            raise HttpError(400, str(e)) from None
        return (
            200,
            "application/json",
            json.dumps({"listener": fe, "server": st.name, "status": st.status(), "weight": st.weight})
            + "\n",
        )
