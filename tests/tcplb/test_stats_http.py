"""tcplb's stats server over real loopback sockets: HTML, CSV, JSON, /metrics, the admin API, its refusals.

The load balancer and the stats server run in-process on uvloop and on stock asyncio; backends are loopback
echo servers that record what each connection sent first (health checks connect and send nothing). The
configuration is parsed from TOML text, so the [stats] rules apply; only the stats bind port is set to 0.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import dataclasses
import io
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tcplb_helpers import AsyncBackend, run, stats_toml, wait_for

from tcplb import config as C
from tcplb import stats as S
from tcplb.server import LoadBalancer

LOOPS = ["asyncio", "uvloop"]
USER, PASSWORD = "admin", "s3cret-Pw9"
GOOD = f"{USER}:{PASSWORD}"
ROOT = Path(__file__).resolve().parents[2]


async def await_for(pred: Callable[[], Awaitable[object]], timeout: float = 5.0, what: str = "") -> Any:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        v = await pred()
        if v:
            return v
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Echo(AsyncBackend):
    """Loopback echo server; ``firsts`` holds the first bytes of each connection that sent any."""

    def __init__(self) -> None:
        super().__init__(graceful=True)


@dataclasses.dataclass
class Resp:
    status: int
    headers: dict[str, str]
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


async def http(
    port: int,
    method: str,
    path: str,
    *,
    auth: str | None = GOOD,
    body: str = "",
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> Resp:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        if raw is None:
            hdr = {"Host": f"127.0.0.1:{port}", **(headers or {})}
            if auth is not None:
                hdr["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
            if body or method == "POST":
                hdr.setdefault("Content-Type", "application/x-www-form-urlencoded")
                hdr["Content-Length"] = str(len(body.encode()))
            raw = (
                f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdr.items()) + "\r\n"
            ).encode() + body.encode()
        w.write(raw)
        data = await asyncio.wait_for(r.read(-1), 30)
    finally:
        w.close()
    head, _, text = data.decode().partition("\r\n\r\n")
    lines = head.split("\r\n")
    hd = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hd[k.strip().lower()] = v.strip()
    return Resp(int(lines[0].split()[1]), hd, text)


def toml(servers: list[str], *, stats: str = "", inter: str = "500ms") -> str:
    # inter 500 ms (was 100 ms): a tcp check's connect is bounded by inter, and with fall 1 a stall of the
    # loop (the balancer, its backends and this test share it) past 100 ms took a healthy server out
    return f"""
[global]
hard_stop_after = "2s"
[defaults]
timeout_connect = "1s"
timeout_client = "30s"
timeout_server = "30s"
retries = 2
redispatch = true
[listen.t]
bind = ["127.0.0.1:1"]
balance = "roundrobin"
check = {{ type = "tcp", inter = "{inter}", rise = 1, fall = 1 }}
server = [
{",".join(servers)}
]
""" + stats_toml(8404, auth=[GOOD, "viewer:other-pw"], extra=stats)


class Env:
    """A LoadBalancer on a free port plus its StatsServer (bound to port 0)."""

    def __init__(self, text: str) -> None:
        cfg = C.loads(text)
        li = cfg.listeners[0]
        li = dataclasses.replace(li, bind=(("127.0.0.1", 0),))
        self.cfg = dataclasses.replace(cfg, listeners=(li,))
        assert cfg.stats is not None
        self.stats_cfg = dataclasses.replace(cfg.stats, bind=("127.0.0.1", 0))
        self.events: list[str] = []

    async def start(self) -> Env:
        self.lb = LoadBalancer(self.cfg)
        self.lb.on_event = self.events.append
        self.lb.start()
        fe = self.lb.frontends["t"]
        self.port = next(iter(fe.sockets.values())).getsockname()[1]
        self.st = S.StatsServer(self.lb, self.stats_cfg)
        await self.st.start()
        self.sport = self.st.port
        return self

    async def stop(self) -> None:
        await self.st.close()
        self.lb.stop_accepting()
        self.lb.stop_checks()
        self.lb.kill_all()
        await asyncio.sleep(0.05)

    async def get(self, path: str, **kw: Any) -> Resp:
        return await http(self.sport, "GET", path, **kw)

    async def post(self, path: str, body: str = "", **kw: Any) -> Resp:
        return await http(self.sport, "POST", path, body=body, **kw)

    async def snap(self) -> dict[str, Any]:
        r = await self.get("/stats;json")
        assert r.status == 200, r
        return r.json()  # type: ignore[no-any-return]

    async def server(self, name: str) -> dict[str, Any]:
        r = await self.get(f"/api/servers/t/{name}")
        assert r.status == 200, r
        return r.json()  # type: ignore[no-any-return]


def srv(name: str, port: int, extra: str = "") -> str:
    return f'{{ name = "{name}", address = "127.0.0.1:{port}"{", " + extra if extra else ""} }}'


class Client:
    def __init__(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.r, self.w = r, w

    @classmethod
    async def open(cls, port: int, hello: bytes) -> Client:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        c = cls(r, w)
        assert await c.echo(hello)
        return c

    async def echo(self, data: bytes) -> bool:
        self.w.write(data)
        await self.w.drain()
        return await asyncio.wait_for(self.r.readexactly(len(data)), 30) == data

    async def closed(self) -> bool:
        try:
            return await asyncio.wait_for(self.r.read(1), 30) == b""
        except ConnectionError:
            return True

    def close(self) -> None:
        self.w.close()


def no_password(events: list[str]) -> None:
    assert not [e for e in events if PASSWORD in e], "a log line shows the password"


def traffic(events: list[str], server: str) -> list[str]:
    return [e for e in events if f" t t/{server} " in e]


# ------------------------------------------------------------------------------------------- endpoints


@pytest.mark.parametrize("loop", LOOPS)
def test_every_endpoint(loop: str) -> None:
    async def main() -> None:
        b = await Echo().start()
        servers = [srv("s1", b.port), srv("s2", b.port, "backup = true, check = false")]
        env = await Env(toml(servers, stats='refresh = "5s"')).start()
        c = await Client.open(env.port, b"hello")
        # HTML with the stable ids, admin forms, meta refresh
        r = await env.get("/stats")
        assert r.status == 200 and r.headers["content-type"].startswith("text/html"), r
        page = r.body
        for needle in ('id="fe-t"', 'id="be-t"', 'id="srv-t-s1"', 'id="srv-t-s2"', '<td class="status">'):
            assert needle in page, needle
        for action in ("ready", "drain", "maint", "shutdown", "health-on", "health-off", "weight"):
            assert f'id="btn-{action}-t-s1"' in page, action
        row = page.split('id="srv-t-s1"')[1].split("</tr>")[0]
        assert '<td class="status">UP</td>' in row.replace(' title=""', "")
        assert 'action="/api/servers/t/s1/state"' in row and 'name="redirect" value="1"' in row
        assert 'http-equiv="refresh" content="5"' in page
        assert (
            r.headers["x-frame-options"] == "DENY"
            and "frame-ancestors 'none'" in r.headers["content-security-policy"]
        )
        assert PASSWORD not in page
        r = await env.get("/stats;norefresh")
        assert r.status == 200 and "http-equiv" not in r.body and 'id="srv-t-s1"' in r.body
        # CSV: ;csv and the old alias
        r = await env.get("/stats;csv")
        assert r.status == 200 and r.headers["content-type"].startswith("text/csv")
        assert r.body.startswith("# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,")
        assert [ln.split(",")[1] for ln in r.body.splitlines()[1:]] == ["FRONTEND", "s1", "s2", "BACKEND"]
        assert (await env.get("/stats.csv")).body.splitlines()[0] == r.body.splitlines()[0]
        # JSON: ;json and the old alias
        j = (await env.get("/stats;json")).json()
        assert j["listeners"][0]["name"] == "t" and j["listeners"][0]["scur"] == 1 and "time" in j
        assert (await env.get("/stats.json")).json()["listeners"][0]["servers"][0]["name"] == "s1"
        # metrics
        r = await env.get("/metrics")
        assert r.status == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert {f.name for f in text_string_to_metric_families(r.body)} >= {"tcplb_frontend_current_sessions"}
        # the server API, read-only
        rows = (await env.get("/api/servers")).json()
        got = [(x["listener"], x["name"], x["status"]) for x in rows]
        assert got == [("t", "s1", "UP"), ("t", "s2", "no check")]
        one = await env.server("s2")
        assert one["backup"] is True and one["health"] == "none" and one["bck"] == 1
        assert (await env.get("/api/servers/t/nope")).status == 404
        # HEAD: headers only; "/" leads to the page; unknown paths; other methods
        r = await http(env.sport, "HEAD", "/stats;csv", auth=GOOD)
        assert r.status == 200 and r.body == "" and int(r.headers["content-length"]) > 100
        r = await env.get("/")
        assert r.status == 302 and r.headers["location"] == "/stats"
        assert (await env.get("/nope")).status == 404
        r = await http(env.sport, "PUT", "/stats", auth=GOOD)
        assert r.status == 405 and r.headers["allow"] == "GET, HEAD, POST"
        r = await env.post("/stats", "x=1")
        assert r.status == 405 and r.headers["allow"] == "GET, HEAD"
        c.close()
        await env.stop()
        await b.stop()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_custom_uri_and_open_read_only_pages(loop: str) -> None:
    async def main() -> None:
        b = await Echo().start()
        text = toml([srv("s1", b.port)], stats='uri = "/lb/stats"').replace(
            f'auth = ["{GOOD}", "viewer:other-pw"]\nadmin = true', ""
        )
        env = await Env(text).start()
        assert env.stats_cfg.auth == () and not env.stats_cfg.admin
        # without auth the read-only pages are open (as HAProxy's), the admin API is not
        r = await env.get("/lb/stats", auth=None)
        assert r.status == 200 and 'id="srv-t-s1"' in r.body
        assert "<form" not in r.body and "btn-" not in r.body
        assert 'href="/lb/stats;csv"' in r.body
        assert (await env.get("/lb/stats;csv", auth=None)).body.startswith("# pxname,")
        assert (await env.get("/lb/stats;json", auth=None)).json()["listeners"][0]["name"] == "t"
        assert (await env.get("/stats.csv", auth=None)).status == 200  # the old aliases stay
        assert (await env.get("/stats", auth=None)).status == 404
        assert (await env.get("/", auth=None)).headers["location"] == "/lb/stats"
        assert (await env.get("/metrics", auth=None)).status == 200
        r = await env.post("/api/servers/t/s1/state", "state=drain", auth=None)
        assert r.status == 403 and "admin API disabled" in r.body
        assert (await env.server("s1"))["status"] == "UP"
        assert any("admin: no user from 127.0.0.1:" in e and "403" in e for e in env.events)
        await env.stop()
        await b.stop()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_metrics_parse_and_match_json(loop: str) -> None:
    async def main() -> None:
        b1, b2 = await Echo().start(), await Echo().start()
        env = await Env(toml([srv("s1", b1.port), srv("s2", b2.port, "maxconn = 7, maxqueue = 3")])).start()
        await wait_for(lambda: env.lb.frontends["t"].servers[1].last_check is not None, what="first checks")
        clients = [await Client.open(env.port, b"m%d" % i) for i in range(3)]
        assert (await env.post("/api/servers/t/s2/state", "state=maint")).status == 200
        snap = await env.snap()
        body = (await env.get("/metrics")).body
        fams = {f.name: f for f in text_string_to_metric_families(body)}
        # counters end in _total (the parser strips it from the family name), everything has HELP and TYPE
        for line in body.splitlines():
            if line.startswith("# TYPE") and line.endswith(" counter"):
                assert line.split()[2].endswith("_total"), line
        assert body.count("# HELP ") == body.count("# TYPE ") == len(fams)
        for name in (
            "tcplb_process_start_time_seconds", "tcplb_process_current_connections",
            "tcplb_process_max_connections", "tcplb_frontend_current_sessions", "tcplb_frontend_sessions",
            "tcplb_frontend_bytes_in", "tcplb_frontend_bytes_out", "tcplb_server_status",
            "tcplb_server_current_sessions", "tcplb_server_max_sessions", "tcplb_server_sessions",
            "tcplb_server_bytes_in", "tcplb_server_bytes_out", "tcplb_server_connection_errors",
            "tcplb_server_retry_warnings", "tcplb_server_redispatch_warnings", "tcplb_server_weight",
            "tcplb_server_check_failures", "tcplb_server_downtime_seconds", "tcplb_server_current_queue",
            "tcplb_backend_active_servers",
        ):  # fmt: skip
            assert name in fams, name
        for name in ("tcplb_frontend_sessions", "tcplb_server_bytes_in", "tcplb_server_check_failures"):
            assert fams[name].type == "counter", name

        samples = [x for f in fams.values() for x in f.samples]

        def value(name: str, **labels: str) -> float:
            got = [x.value for x in samples if x.name == name and x.labels == labels]
            assert len(got) == 1, (name, labels, got)
            return float(got[0])

        fe = snap["listeners"][0]
        assert value("tcplb_process_current_connections") == snap["actconn"] == 3
        assert value("tcplb_process_start_time_seconds") == pytest.approx(snap["started"])
        assert value("tcplb_frontend_current_sessions", proxy="t") == 3
        assert value("tcplb_frontend_sessions_total", proxy="t") == fe["stot"] == 3
        assert value("tcplb_frontend_bytes_in_total", proxy="t") == fe["bin"] == 6
        assert value("tcplb_backend_active_servers", proxy="t") == 1
        for s in fe["servers"]:
            lab = {"proxy": "t", "server": s["name"]}
            states = {
                x.labels["state"]: x.value for x in fams["tcplb_server_status"].samples
                if x.labels["server"] == s["name"]
            }  # fmt: skip
            assert set(states) == {"UP", "DOWN", "MAINT", "DRAIN", "NOLB"} and sum(states.values()) == 1
            assert states[{"s1": "UP", "s2": "MAINT"}[s["name"]]] == 1
            for fam, key in (
                ("tcplb_server_current_sessions", "scur"), ("tcplb_server_sessions_total", "stot"),
                ("tcplb_server_bytes_in_total", "bin"), ("tcplb_server_bytes_out_total", "bout"),
                ("tcplb_server_weight", "weight"), ("tcplb_server_check_failures_total", "chkfail"),
                ("tcplb_server_connection_errors_total", "econ"), ("tcplb_server_current_queue", "qcur"),
            ):  # fmt: skip
                assert value(fam, **lab) == s[key], (fam, s["name"])
        assert value("tcplb_server_limit_sessions", proxy="t", server="s2") == 7
        assert value("tcplb_server_queue_limit", proxy="t", server="s2") == 3
        assert not [x for x in fams["tcplb_server_limit_sessions"].samples if x.labels["server"] == "s1"]
        for c in clients:
            c.close()
        await env.stop()
        await b1.stop()
        await b2.stop()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_csv_matches_json_field_by_field(loop: str) -> None:
    async def main() -> None:
        b1 = await Echo().start()
        env = await Env(
            toml(
                [srv("s1", b1.port), srv("s2", 1, "backup = true"), srv("s3", b1.port, "check = false")],
                inter="1s",
            )
        ).start()
        lb = env.lb
        await wait_for(lambda: all(s.last_check for s in lb.frontends["t"].servers[:2]), what="first checks")
        held = [await Client.open(env.port, b"x" * (100 + i)) for i in range(4)]
        held[0].close()
        await wait_for(lambda: lb.actconn == 3, what="one closed")
        moving = {"lastchg", "downtime", "lastsess", "rate"}  # clocks: may tick between the two requests
        for _ in range(20):  # JSON, CSV, JSON: retried if a health check landed in between
            j = await env.snap()
            text = (await env.get("/stats;csv")).body
            if _strip(j, moving) == _strip(await env.snap(), moving):
                break
        else:
            raise AssertionError("no two snapshots in a row without a change")
        lines = text.splitlines()
        assert lines[0].startswith("# ")
        rows = list(csv.DictReader(io.StringIO("\n".join([lines[0][2:], *lines[1:]]))))
        assert [r["svname"] for r in rows] == ["FRONTEND", "s1", "s2", "s3", "BACKEND"]
        fe = j["listeners"][0]
        objs = {"FRONTEND": fe, "BACKEND": fe["backend"], **{s["name"]: s for s in fe["servers"]}}
        for r in rows:
            obj = objs[r["svname"]]
            assert r["pxname"] == "t" and r["pid"] == str(j["pid"]) and r["mode"] == "tcp"
            assert r["type"] == {"FRONTEND": "0", "BACKEND": "1"}.get(r["svname"], "2")
            shared = [f for f in S.CSV_FIELDS if f in obj]
            assert len(shared) >= (20 if r["type"] == "2" else 9), (r["svname"], shared)
            for f in shared:
                want = obj[f]
                if obj.get("health") == "none" and f in (
                    "chkfail", "chkdown", "check_rise", "check_fall", "check_health"
                ):  # fmt: skip
                    assert r[f] == "", (r["svname"], f)  # HAProxy: no check, no check columns
                elif f in moving and want is not None:
                    assert abs(int(r[f]) - int(want)) <= 1, (r["svname"], f, r[f], want)
                else:
                    assert r[f] == ("" if want is None else str(want)), (r["svname"], f, r[f], want)
        s = objs["s1"]
        assert s["status"] == "UP" and s["check_status"] == "L4OK" and s["stot"] >= 1
        assert objs["s2"]["status"] == "DOWN" and objs["s3"]["status"] == "no check"
        assert rows[2]["check_status"] == "L4CON" and rows[2]["check_desc"] == "Layer4 connection problem"
        assert rows[0]["status"] == "OPEN" and rows[-1]["status"] == "UP" and rows[-1]["algo"] == "roundrobin"
        assert rows[-1]["act"] == "2" and rows[-1]["bck"] == "0"
        assert int(rows[0]["stot"]) == 4 and int(rows[0]["scur"]) == 3
        assert int(rows[0]["bin"]) == sum(100 + i for i in range(4))  # the three open ones included
        for c in held:
            c.close()
        await env.stop()
        await b1.stop()

    run(loop, main)


def _strip(obj: Any, drop: set[str]) -> Any:
    if isinstance(obj, dict):
        return {k: _strip(v, drop) for k, v in obj.items() if k not in drop | {"time", "uptime"}}
    if isinstance(obj, list):
        return [_strip(v, drop) for v in obj]
    return obj


@pytest.mark.parametrize("loop", LOOPS)
def test_bytes_counted_while_connections_are_open(loop: str) -> None:
    async def main() -> None:
        b = await Echo().start()
        env = await Env(toml([srv("s1", b.port, "check = false")])).start()
        c = await Client.open(env.port, b"a" * 5000)

        async def counts() -> list[int]:
            fe = (await env.snap())["listeners"][0]
            s = fe["servers"][0]
            return [fe["bin"], fe["bout"], s["bin"], s["bout"], fe["backend"]["bin"], fe["backend"]["bout"]]

        assert await counts() == [5000] * 6
        assert await c.echo(b"b" * 1000)
        assert await counts() == [6000] * 6
        m = {f.name: f for f in text_string_to_metric_families((await env.get("/metrics")).body)}
        assert [s.value for s in m["tcplb_server_bytes_in"].samples] == [6000]
        assert [s.value for s in m["tcplb_frontend_bytes_out"].samples] == [6000]
        c.close()
        await wait_for(lambda: env.lb.actconn == 0, what="closed")
        assert await counts() == [6000] * 6  # moved to the closed totals, not counted twice
        await env.stop()
        await b.stop()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_session_rate_and_lastsess(loop: str) -> None:
    async def main() -> None:
        b = await Echo().start()
        env = await Env(toml([srv("s1", b.port, "check = false")])).start()
        s0 = await env.server("s1")
        assert s0["rate"] == 0 and s0["rate_max"] == 0 and s0["lastsess"] is None
        loop_ = asyncio.get_running_loop()
        # the rate and lastsess describe the last second: read within half a second of the 5 sessions. A
        # busy machine that stalls longer somewhere in between gets another try, once the rate is back to 0
        # (rate_max <= 5 still holds: no second sees more than one try's sessions)
        for _ in range(5):
            for i in range(5):
                (await Client.open(env.port, b"r%d" % i)).close()
            t_last = loop_.time()
            fe = (await env.snap())["listeners"][0]
            row = next(r for r in (await env.get("/stats;csv")).body.splitlines() if r.startswith("t,s1,"))
            if loop_.time() - t_last < 0.5:
                break
            await await_for(lambda: _rate_is(env, 0), 30, "rate back to 0 before another try")
        else:
            pytest.fail("every try stalled for half a second between the sessions and the stats")
        assert fe["rate"] >= 1 and fe["rate_max"] >= 1 and fe["backend"]["lastsess"] == 0
        s = fe["servers"][0]
        assert 1 <= s["rate_max"] <= 5 and s["lastsess"] == 0
        rec = dict(zip(S.CSV_FIELDS, next(csv.reader([row])), strict=False))
        assert int(rec["rate_max"]) >= 1 and rec["lastsess"] in ("0", "1")
        # a second later the rate decays while rate_max stays (30 s: it never does if it is wrong)
        await await_for(lambda: _rate_is(env, 0), 30, "rate back to 0")
        assert (await env.server("s1"))["rate_max"] == s["rate_max"]
        await env.stop()
        await b.stop()

    run(loop, main)


async def _rate_is(env: Env, n: int) -> bool:
    return (await env.server("s1"))["rate"] == n


# ----------------------------------------------------------------------------------------- admin API


def _setup_two(b1: Echo, b2: Echo, extra1: str = "") -> str:
    return toml([srv("s1", b1.port, extra1), srv("s2", b2.port)])


@contextlib.asynccontextmanager
async def _two_servers() -> AsyncIterator[tuple[Env, Echo, Echo]]:
    """An Env in front of two Echo servers, s1 and s2 (:func:`_setup_two`); all stopped on the way out."""
    b1, b2 = await Echo().start(), await Echo().start()
    env = await Env(_setup_two(b1, b2)).start()
    try:
        yield env, b1, b2
    finally:
        await env.stop()
        await b1.stop()
        await b2.stop()


@pytest.mark.parametrize("loop", LOOPS)
def test_drain_keeps_established_and_checks(loop: str) -> None:
    async def main() -> None:
        async with _two_servers() as (env, b1, b2):
            a = await Client.open(env.port, b"first")
            x, y = (b1, b2) if b"first" in b1.firsts else (b2, b1)
            name = "s1" if x is b1 else "s2"
            r = await env.post(f"/api/servers/t/{name}/state", "state=drain")
            assert r.status == 200, r
            ans = r.json()
            assert ans["status"] == "DRAIN" and ans["weight"] == 0 and ans["server"] == name
            for i in range(6):
                c = await Client.open(env.port, b"new%d" % i)
                c.close()
            assert x.firsts == [b"first"] and len(y.firsts) == 6  # no new connection reached the drained one
            assert await a.echo(b"still flowing")  # the established one goes on
            before = x.accepted
            await wait_for(lambda: x.accepted >= before + 2, 30, "checks of the drained server go on")
            assert (await env.server(name))["status"] == "DRAIN"
            page = (await env.get("/stats")).body
            assert f'id="srv-t-{name}"><td class="n"' in page
            row = page.split(f'id="srv-t-{name}"')[1].split("</tr>")[0]
            assert '<td class="status">DRAIN</td>' in row.replace(' title=""', "")
            log = [e for e in env.events if e.startswith("admin: ")]
            assert log and log[0].startswith(f"admin: user {USER} from 127.0.0.1:")
            assert log[0].endswith(f": t/{name} state drain (was UP)"), log
            r = await env.post(f"/api/servers/t/{name}/state", "state=ready")
            assert r.json()["status"] == "UP"
            no_password(env.events)
            a.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_maint_stops_checks_and_ready_restarts_them(loop: str) -> None:
    async def main() -> None:
        async with _two_servers() as (env, b1, b2):
            await wait_for(lambda: b1.accepted >= 1 and b2.accepted >= 1, what="first checks")
            r = await env.post("/api/servers/t/s1/state", "state=maint")
            assert r.status == 200 and r.json()["status"] == "MAINT"
            st1 = env.lb.frontends["t"].servers[0]
            assert st1.checker is None and not st1.usable
            n1, n2 = b1.accepted, b2.accepted
            await wait_for(lambda: b2.accepted >= n2 + 4, 30, "s2 checked 4 more times")
            assert b1.accepted <= n1 + 1  # (one check may have been connecting at that moment)
            for i in range(4):
                (await Client.open(env.port, b"m%d" % i)).close()
            assert len(b1.firsts) == 0 and len(b2.firsts) == 4
            assert any("is going DOWN for maintenance" in e for e in env.events)
            r = await env.post("/api/servers/t/s1/state", "state=ready")
            assert r.json()["status"] == "UP"
            n1 = b1.accepted
            await wait_for(lambda: b1.accepted >= n1 + 2, 30, "s1 checked again")
            no_password(env.events)

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_shutdown_sessions_closes_the_servers_connections(loop: str) -> None:
    async def main() -> None:
        async with _two_servers() as (env, b1, _):
            clients = [await Client.open(env.port, b"c%d" % i) for i in range(6)]
            on1 = [c for i, c in enumerate(clients) if b"c%d" % i in b1.firsts]
            on2 = [c for c in clients if c not in on1]
            assert len(on1) == 3 and len(on2) == 3  # roundrobin
            r = await env.post("/api/servers/t/s1/shutdown-sessions")
            assert r.status == 200, r
            ans = r.json()
            assert ans["sessions_closed"] == 3 and ans["status"] == "UP"
            for c in on1:
                assert await c.closed()
            for c in on2:
                assert await c.echo(b"alive")
            lines = await wait_for(lambda: len(traffic(env.events, "s1")) == 3 and traffic(env.events, "s1"))
            assert all(line.split()[6][0] == "K" for line in lines), lines
            assert not traffic(env.events, "s2")
            assert any(e.endswith(": t/s1 shutdown-sessions (3 closed)") for e in env.events)
            # the server stays in rotation
            c = await Client.open(env.port, b"again")
            assert (await env.server("s1"))["scur"] + (await env.server("s2"))["scur"] == 4
            for x in [*clients, c]:
                x.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_health_disable_and_enable(loop: str) -> None:
    async def main() -> None:
        b1, b2 = await Echo().start(), await Echo().start()
        servers = [srv("s1", b1.port), srv("s2", b2.port), srv("nc", b2.port, "check = false")]
        env = await Env(toml(servers)).start()
        st1 = env.lb.frontends["t"].servers[0]
        await wait_for(lambda: st1.last_check is not None, what="first check")
        r = await env.post("/api/servers/t/s1/health", "health=disable")
        assert r.status == 200 and r.json()["health"] == "disabled" and r.json()["status"] == "no check"
        assert st1.checker is None
        port1 = b1.port
        await b1.stop()  # nothing checks it: it stays UP
        n2 = b2.accepted
        await wait_for(lambda: b2.accepted >= n2 + 4, 30, "s2 checked 4 more times")
        s = await env.server("s1")
        assert s["status"] == "no check" and s["health"] == "disabled" and st1.usable
        assert "checks off" in (await env.get("/stats")).body.split('id="srv-t-s1"')[1].split("</tr>")[0]
        r = await env.post("/api/servers/t/s1/health", "health=enable")
        assert r.json()["health"] == "enabled"
        await await_for(lambda: _status_is(env, "s1", "DOWN"), 30, "s1 DOWN once checked")
        # disabled while DOWN: as in HAProxy the last result is ignored and it counts as UP ("no check")
        assert (await env.post("/api/servers/t/s1/health", "health=disable")).json()["status"] == "no check"
        assert st1.usable
        b1 = await Echo().start(port1)
        # enabled again: the checks decide (UP, its backend is back)
        await env.post("/api/servers/t/s1/health", "health=enable")
        n1 = b1.accepted
        await wait_for(lambda: b1.accepted >= n1 + 2, 30, "s1 checked again")
        assert (await env.server("s1"))["status"] == "UP" and st1.usable
        # refusals: no check configured, bad value
        r = await env.post("/api/servers/t/nc/health", "health=disable")
        assert r.status == 400 and "no health check" in r.body
        assert (await env.post("/api/servers/t/s1/health", "health=maybe")).status == 400
        assert any("t/s1 health disable (was enabled)" in e for e in env.events)
        await env.stop()
        await b1.stop()
        await b2.stop()

    run(loop, main)


async def _status_is(env: Env, name: str, want: str) -> bool:
    return (await env.server(name))["status"] == want


@pytest.mark.parametrize("loop", LOOPS)
def test_weight_and_form_redirect(loop: str) -> None:
    async def main() -> None:
        async with _two_servers() as (env, b1, b2):
            r = await env.post("/api/servers/t/s1/weight", "weight=5")
            assert r.status == 200 and r.json()["weight"] == 5
            assert env.lb.frontends["t"].servers[0].shown_weight == 5
            assert any(e.endswith(": t/s1 weight 5 (was 1)") for e in env.events)
            for i in range(12):
                (await Client.open(env.port, b"w%02d" % i)).close()
            assert len(b1.firsts) == 10 and len(b2.firsts) == 2  # 5:1
            # what the page's forms send: redirect=1 -> 303 to the page
            r = await env.post("/api/servers/t/s1/weight", "weight=3&redirect=1")
            assert r.status == 303 and r.headers["location"] == "/stats"
            assert (await env.server("s1"))["weight"] == 3
            r = await env.post("/api/servers/t/s1/weight", json.dumps({"weight": 4}),
                               headers={"Content-Type": "application/json"})  # fmt: skip
            assert r.json()["weight"] == 4
            for bad in ("257", "-1", "x", ""):
                r = await env.post("/api/servers/t/s1/weight", f"weight={bad}")
                assert r.status == 400 and "0..256" in r.body, bad
            r = await env.post("/api/servers/t/s1/weight", "weight=0")
            assert r.json()["status"] == "DRAIN"
            # the older spellings of the state action still work
            assert (await env.post("/api/servers/t/s2/maint")).json()["status"] == "MAINT"
            assert (await env.post("/api/servers/t/s2/ready")).json()["status"] == "UP"

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_refusals_and_their_log_lines(loop: str) -> None:
    async def main() -> None:
        async with _two_servers() as (env, _, _):
            act = "/api/servers/t/s1/state"
            # no auth, wrong auth: 401 with the challenge, read-only pages included
            for auth in (None, f"{USER}:wrong", "nobody:" + PASSWORD, "garbage"):
                r = await env.post(act, "state=maint", auth=auth)
                assert r.status == 401 and r.headers["www-authenticate"] == 'Basic realm="tcplb"', auth
            r = await http(env.sport, "POST", act, body="state=maint", auth=None,
                           headers={"Authorization": "Basic !!notbase64"})  # fmt: skip
            assert r.status == 401
            for path in ("/stats", "/stats;csv", "/metrics", "/api/servers"):
                assert (await env.get(path, auth=None)).status == 401, path
                assert (await env.get(path, auth=f"{USER}:nope")).status == 401, path
            assert (await env.get("/stats", auth="viewer:other-pw")).status == 200  # the second pair
            # GET on an action: 405 with Allow
            r = await env.get(act)
            assert r.status == 405 and r.headers["allow"] == "POST"
            # unknown listener, server, action; bad state
            assert (await env.post("/api/servers/t/nope/state", "state=drain")).status == 404
            assert (await env.post("/api/servers/x/s1/state", "state=drain")).status == 404
            assert (await env.post("/api/servers/t/s1/explode")).status == 404
            r = await env.post(act, "state=sleep")
            assert r.status == 400 and "ready, drain or maint" in r.body
            # a browser form from another site (CSRF): refused
            r = await env.post(act, "state=maint", headers={"Origin": "http://evil.example"})
            assert r.status == 403 and "cross-origin" in r.body
            r = await env.post(act, "state=drain", headers={"Origin": f"http://127.0.0.1:{env.sport}"})
            assert r.status == 200
            assert (await env.post(act, "state=ready")).status == 200
            assert env.lb.frontends["t"].servers[0].usable  # none of the refused ones did anything
            # malformed requests
            assert (await http(env.sport, "GET", "", raw=b"GARBAGE\r\n\r\n")).status == 400
            big = b"GET /stats HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n"
            assert (await http(env.sport, "GET", "", raw=big)).status == 431
            chunked = (
                b"POST /api/servers/t/s1/state HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            assert (await http(env.sport, "POST", "", raw=chunked)).status == 501
            huge = b"POST /api/servers/t/s1/state HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n"
            assert (await http(env.sport, "POST", "", raw=huge)).status == 413
            # admin not enabled: 403 even with good credentials
            await env.st.close()
            env.st = S.StatsServer(env.lb, dataclasses.replace(env.stats_cfg, admin=False))
            await env.st.start()
            env.sport = env.st.port
            r = await env.post(act, "state=maint")
            assert r.status == 403 and "admin API disabled" in r.body
            assert (await env.get("/stats")).status == 200 and "btn-" not in (await env.get("/stats")).body
            # admin without auth (only possible by building StatsConfig by hand): 403, never open
            await env.st.close()
            env.st = S.StatsServer(env.lb, dataclasses.replace(env.stats_cfg, auth=()))
            await env.st.start()
            env.sport = env.st.port
            assert (await env.post(act, "state=maint", auth=None)).status == 403
            assert env.lb.frontends["t"].servers[0].usable
            # the log: who, from where, what; never a password
            refused = [e for e in env.events if "refused" in e]
            assert any(
                e.startswith("admin: no credentials from 127.0.0.1:") and " 401 " in e for e in refused
            )
            assert any(
                e.startswith(f"admin: user '{USER}' (bad credentials) from 127.0.0.1:") for e in refused
            )
            assert any(
                e.startswith(f"admin: user {USER} from 127.0.0.1:") and "refused GET " + act + ": 405" in e
                for e in refused
            )
            assert any("404 no server t/nope" in e for e in refused)
            assert any("403 cross-origin" in e for e in refused)
            assert any("403 admin API disabled" in e for e in refused)
            assert any(
                e.startswith("stats: user 'admin' (bad credentials)") for e in refused
            )  # read-only, bad
            no_password(env.events)

    run(loop, main)


def test_basic_auth_compares_every_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = S.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(S.hmac, "compare_digest", counting)
    users = (C.StatsUser("admin", "pw1"), C.StatsUser("ops", "pw2"), C.StatsUser("ro", "pw3"))
    st = S.StatsServer(None, C.StatsConfig(("127.0.0.1", 0), auth=users))  # type: ignore[arg-type]

    def hdr(cred: str) -> dict[str, str]:
        return {"authorization": "Basic " + base64.b64encode(cred.encode()).decode()}

    for cred, want in (("admin:pw1", "admin"), ("ro:pw3", "ro"), ("admin:pw3", None), ("x:y", None)):
        calls.clear()
        assert st._authenticate(hdr(cred)) == (want, cred.split(":")[0])
        assert len(calls) == 6, cred  # user and password of all three pairs, whatever matched first
    assert st._authenticate({}) == (None, None)


def test_html_escapes_names() -> None:
    async def main() -> None:
        b = await Echo().start()
        env = await Env(toml([srv("s1", b.port, "check = false")])).start()
        snap = env.lb.snapshot()
        await env.stop()
        await b.stop()
        snap["listeners"][0]["name"] = 'a<b>&"c'
        snap["listeners"][0]["servers"][0]["name"] = "<script>x</script>"
        page = S.render_html(snap, 2.0, uri="/st", admin=True)
        assert "<script>" not in page and "<b>" not in page
        assert 'id="srv-a&lt;b&gt;&amp;&quot;c-&lt;script&gt;x&lt;/script&gt;"' in page
        assert 'id="btn-drain-a&lt;b&gt;&amp;&quot;c-&lt;script&gt;x&lt;/script&gt;"' in page
        assert 'action="/api/servers/a%3Cb%3E%26%22c/%3Cscript%3Ex%3C%2Fscript%3E/state"' in page

    run("asyncio", main)


def test_human_durations() -> None:
    assert [S.human(x) for x in (None, 0, 59, 192, 3600 * 2 + 300, 86400 * 3 + 7200)] == [
        "", "0s", "59s", "3m12s", "2h5m", "3d2h",
    ]  # fmt: skip


def test_tcplb_does_not_import_prometheus_client() -> None:
    code = "import sys, tcplb.daemon, tcplb.stats; print('prometheus_client' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "False", out


# ------------------------------------------------------------------------------------------- config

LISTEN = {"listen": {"t": {"bind": "127.0.0.1:5000", "server": [{"name": "a", "address": "127.0.0.1:1"}]}}}


def stats_of(**st: Any) -> C.StatsConfig | None:
    return C.parse({**LISTEN, "stats": st}).stats


def errors(**st: Any) -> list[tuple[str, str]]:
    with pytest.raises(C.ConfigError) as ei:
        C.parse({**LISTEN, "stats": st})
    return ei.value.errors


def test_stats_config_keys_and_defaults() -> None:
    st = stats_of(bind="127.0.0.1:8404")
    assert st == C.StatsConfig(("127.0.0.1", 8404))
    assert st is not None and (st.uri, st.auth, st.refresh) == ("/stats", (), None)
    assert (st.admin, st.admin_allow_remote) == (False, False)
    st = stats_of(bind="127.0.0.1:8404", uri="/lb", auth=["admin:a:b", "ro:x"], admin=True, refresh="5s")
    assert st is not None and st.uri == "/lb" and st.admin and st.refresh == 5.0
    assert st.auth == (("admin", "a:b"), ("ro", "x")) and st.auth[0].user == "admin"
    assert st.auth[0].password == "a:b"  # only the first ":" separates
    assert stats_of(bind="127.0.0.1:8404", auth="one:pw").auth == (("one", "pw"),)  # type: ignore[union-attr]
    # admin on a non-loopback address: only with admin_allow_remote
    st = stats_of(bind="0.0.0.0:8404", auth=["a:b"], admin=True, admin_allow_remote=True)
    assert st is not None and st.admin_allow_remote
    assert stats_of(bind="[::1]:8404", auth=["a:b"], admin=True) is not None
    assert stats_of(bind="192.0.2.10:8404", auth=["a:b"]) is not None  # read-only on any address


def test_stats_config_errors_name_the_key() -> None:
    assert errors(bind="0.0.0.0:8404", auth=["a:b"], admin=True) == [
        ("stats.admin", "the admin API on a non-loopback address (0.0.0.0:8404) needs "
         "stats.admin_allow_remote = true"),
    ]  # fmt: skip
    assert [p for p, _ in errors(bind="127.0.0.1:8404", admin=True)] == ["stats.admin"]
    assert "needs stats.auth" in errors(bind="127.0.0.1:8404", admin=True, auth=[])[0][1]
    for bad, path in (
        (["nopassword"], "stats.auth[0]"), (["a:b", ":pw"], "stats.auth[1]"), (["user:"], "stats.auth[0]"),
        ([1], "stats.auth[0]"), ("x", "stats.auth"), (["a:1", "a:2"], "stats.auth[1]"),
        ({"a": "b"}, "stats.auth"), (["a:<hidden>"], "stats.auth[0]"), (["a:b\nc"], "stats.auth[0]"),
    ):  # fmt: skip
        errs = errors(bind="127.0.0.1:8404", auth=bad)
        assert [p for p, _ in errs] == [path], (bad, errs)
    # a rule never repeats the value (it holds a password)
    errs = errors(bind="127.0.0.1:8404", auth=["ok:fine", "broken-Secret99"])
    assert "broken-Secret99" not in str(errs) and "user:password" in errs[0][1]
    for uri in ("stats", "/a b", "/metrics", "/api/x", "/s;csv", "/a//b", "", 5):
        assert [p for p, _ in errors(bind="127.0.0.1:8404", uri=uri)] == ["stats.uri"], uri
    errs = errors(bind="127.0.0.1:8404", admin_allow_remote="yes")
    assert [p for p, _ in errs] == ["stats.admin_allow_remote"]
    # the old keys are refused with the new spelling in the rule
    errs = errors(bind="127.0.0.1:8404", user="admin", password="pw")
    assert [p for p, _ in errs] == ["stats.user", "stats.password"] and "auth = " in errs[0][1]
    assert [p for p, _ in errors(bind="127.0.0.1:8404", autth=["a:b"])] == ["stats.autth"]


def test_stats_passwords_never_shown() -> None:
    cfg = C.parse({**LISTEN, "stats": {"bind": "127.0.0.1:8404", "auth": [GOOD], "admin": True}})
    assert PASSWORD not in repr(cfg) and PASSWORD not in str(cfg.stats)
    d = C.dump(cfg)
    assert d["stats"]["auth"] == [f"{USER}:<hidden>"] and PASSWORD not in C.to_toml(cfg)
    with pytest.raises(C.ConfigError):
        C.parse(d)  # a dump without secrets cannot be loaded by mistake
    assert C.parse(C.dump(cfg, secrets=True)) == cfg
    assert C.loads(C.to_toml(cfg, secrets=True)) == cfg


def test_check_output_never_shows_the_password(tmp_path: Path) -> None:
    cfg = tmp_path / "lb.toml"
    base = '[listen.t]\nbind = "127.0.0.1:5000"\nserver = [{ name = "a", address = "127.0.0.1:1" }]\n'
    for stats in (
        f'[stats]\nbind = "127.0.0.1:8404"\nauth = ["{GOOD}"]\nadmin = true\n',
        f'[stats]\nbind = "0.0.0.0:8404"\nauth = ["{GOOD}", "x{PASSWORD}"]\nadmin = true\n',
    ):
        cfg.write_text(base + stats)
        p = subprocess.run(
            [sys.executable, "-m", "tcplb", "-c", str(cfg), "--check"],
            capture_output=True, text=True, timeout=30, cwd=ROOT,
        )  # fmt: skip
        assert PASSWORD not in p.stdout + p.stderr, p
    assert p.returncode == 1 and "stats.auth[1]" in p.stderr and "stats.admin" in p.stderr
