"""``send_proxy`` (PROXY v1/v2 toward the servers, on checks too, never LOCAL) and ``on_marked_down =
"shutdown-sessions"``, on real sockets and both loops. The headers are decoded here independently of
tcplb.proxyproto, from the spec's layout (haproxy doc/proxy-protocol.txt §2.1, §2.2)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import struct

import pytest
from tcplb_helpers import AsyncBackend, FakeServer, free_port, listen_t, run, start_lb, stop_lb, wait_for

from tcplb import config

LOOPS = ["asyncio", "uvloop"]
SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def decode(data: bytes) -> tuple[str, tuple[str, int] | None, tuple[str, int] | None, bytes]:
    """(version/command, src, dst, rest) of a PROXY header at the start of ``data``; ("none", ...) if none."""
    if data.startswith(b"PROXY "):
        line, rest = data.split(b"\r\n", 1)
        _, family, s1, d1, sp1, dp1 = line.decode().split(" ")
        assert family == "TCP4"
        return "v1", (s1, int(sp1)), (d1, int(dp1)), rest
    if data.startswith(SIG):
        vc, fam, ln = data[12], data[13], struct.unpack("!H", data[14:16])[0]
        body, rest = data[16 : 16 + ln], data[16 + ln :]
        cmd = {0x21: "v2", 0x20: "v2-LOCAL"}[vc]
        if cmd == "v2-LOCAL":
            return cmd, None, None, rest
        assert fam == 0x11 and ln == 12
        s, d = str(ipaddress.IPv4Address(body[0:4])), str(ipaddress.IPv4Address(body[4:8]))
        sp, dp = struct.unpack("!HH", body[8:12])
        return cmd, (s, sp), (d, dp), rest
    return "none", None, None, data


class Recorder(FakeServer):
    """Keeps everything each connection sent until EOF; answers nothing."""

    def __init__(self) -> None:
        self.got: list[bytes] = []

    async def handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        data = b""
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(10):
                data = await r.read()
        self.got.append(data)
        w.close()

    def live(self) -> list[bytes]:
        """The relayed connections (the checks' ones carry no client bytes)."""
        return [g for g in self.got if g.endswith(b"hello")]


async def _send(port: int) -> tuple[str, int]:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    me = w.get_extra_info("sockname")
    w.write(b"hello")
    w.write_eof()
    await asyncio.wait_for(r.read(), 10)
    w.close()
    return me[0], me[1]


@pytest.mark.parametrize("loop", LOOPS)
def test_send_proxy_live_connections_and_checks(loop: str) -> None:
    async def main() -> None:
        r1, r2, r3 = await Recorder().start(), await Recorder().start(), await Recorder().start()
        lport = free_port()
        cfg = listen_t(
            lport,
            f"""
balance = "roundrobin"
send_proxy = "v2"
check = {{ type = "tcp", inter = "100ms" }}
server = [{{ name = "a", address = "127.0.0.1:{r1.port}" }},
          {{ name = "b", address = "127.0.0.1:{r2.port}", send_proxy = "v1" }},
          {{ name = "c", address = "127.0.0.1:{r3.port}", send_proxy = "none" }}]
""".replace("\n          {", " {"),
            timeout="5s",
        )
        lb, _ = start_lb(cfg)
        clients = [await _send(lport) for _ in range(3)]
        await wait_for(lambda: all(r.live() for r in (r1, r2, r3)), 10, "one relayed connection each")
        for rec, want in ((r1, "v2"), (r2, "v1")):
            ver, src, dst, rest = decode(rec.live()[0])
            assert ver == want and rest == b"hello", rec.live()
            assert src in clients and dst == ("127.0.0.1", lport)
        assert r3.live() == [b"hello"]  # send_proxy = "none" on c: nothing in front
        # checks of a and b carry a PROXY command naming the check socket (never LOCAL); c's nothing
        await wait_for(lambda: all(any(g and not g.endswith(b"hello") for g in r.got) for r in (r1, r2)),
                       10, "checks with a PROXY header")  # fmt: skip
        for rec, want, port in ((r1, "v2", r1.port), (r2, "v1", r2.port)):
            checks_seen = [g for g in rec.got if not g.endswith(b"hello")]
            ver, src, dst, rest = decode(checks_seen[0])
            assert ver == want and rest == b"" and dst == ("127.0.0.1", port) and src is not None
        assert all(g in (b"", b"hello") for g in r3.got), r3.got
        stop_lb(lb)
        for r in (r1, r2, r3):
            r.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_check_on_another_port_sends_no_header(loop: str) -> None:
    """HAProxy's rule: a check with its own port (e.g. a management port) gets no PROXY header."""

    async def main() -> None:
        r1, other = await Recorder().start(), await Recorder().start()
        lport = free_port()
        cfg = listen_t(
            lport,
            f"""
check = {{ type = "tcp", inter = "100ms", port = {other.port} }}
server = [{{ name = "a", address = "127.0.0.1:{r1.port}", send_proxy = "v2" }}]
""",
            timeout="5s",
        )
        lb, _ = start_lb(cfg)
        await wait_for(lambda: len(other.got) >= 2, 10, "two checks")
        assert all(g == b"" for g in other.got)
        stop_lb(lb)
        r1.close()
        other.close()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("shutdown", [True, False])
def test_on_marked_down_shutdown_sessions(loop: str, shutdown: bool) -> None:
    """s1's port closes (existing connections stay): the check marks it DOWN. With on_marked_down =
    "shutdown-sessions" its client connection is closed by tcplb (logged); without, it still works."""

    async def main() -> None:
        b1, b2 = await AsyncBackend().start(), await AsyncBackend().start()
        lport = free_port()
        omd = ', on_marked_down = "shutdown-sessions"' if shutdown else ""
        cfg = listen_t(
            lport,
            f"""
check = {{ type = "tcp", inter = "100ms", rise = 1, fall = 1 }}
server = [{{ name = "s1", address = "{b1.addr}"{omd} }},
          {{ name = "s2", address = "{b2.addr}", backup = true }}]
""",
        )
        lb, events = start_lb(cfg)
        s1 = lb.frontends["t"].server("s1")
        assert s1 is not None
        r, w = await asyncio.open_connection("127.0.0.1", lport)
        w.write(b"ping")
        assert await asyncio.wait_for(r.readexactly(4), 10) == b"ping"
        assert b1.server is not None
        b1.server.close()  # no new connections; the established one stays
        await wait_for(lambda: not s1.usable, 10, "s1 DOWN")
        if shutdown:
            got = b"x"
            with contextlib.suppress(ConnectionError):
                got = await asyncio.wait_for(r.read(), 10)
            assert got == b"", got
            assert any("s1: 1 sessions killed (on_marked_down shutdown-sessions)" in e for e in events), (
                events
            )
        else:
            w.write(b"pong")
            assert await asyncio.wait_for(r.readexactly(4), 10) == b"pong"
            assert not any("sessions killed" in e for e in events)
        w.close()
        stop_lb(lb)
        await b1.stop()
        await b2.stop()

    run(loop, main)


def test_config_keys() -> None:
    base = '[listen.t]\nbind = ["127.0.0.1:5673"]\n'
    cfg = config.loads(
        base + 'send_proxy = "v2"\n'
        'server = [{ name = "a", address = "127.0.0.1:1", on_marked_down = "shutdown-sessions" },'
        ' { name = "b", address = "127.0.0.1:2", send_proxy = "none" }]\n'
    )
    a, b = cfg.listeners[0].servers
    assert (a.send_proxy, a.on_marked_down, b.send_proxy, b.on_marked_down) == (
        "v2",
        "shutdown-sessions",
        "none",
        "none",
    )
    assert config.loads(config.to_toml(cfg, secrets=True)) == cfg
    for bad, where in (
        ('send_proxy = "v3"\nserver = []\n', "listen.t.send_proxy"),
        ('server = [{ name = "a", address = "127.0.0.1:1", on_marked_down = "kill" }]\n', "on_marked_down"),
    ):
        with pytest.raises(config.ConfigError) as ei:
            config.loads(base + bad)
        assert where in str(ei.value)
