"""Reload, all or nothing (issue 10, defect 1): the pure planner (hypothesis), the apply on real sockets
(uvloop and asyncio), and the daemon's reload result (log, sd_notify STATUS, ``tcplb ctl reload``)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tcplb_helpers import run, wait_for

from tcplb import config as cfgmod
from tcplb.reload_plan import ReloadError, plan

LOOPS = ["asyncio", "uvloop"]

# ------------------------------------------------------------------------------------------ the planner

PORTS = [5671, 5672, 5673, 5674, 5675, 5676]
NAMES = ["a", "b", "c", "d"]


@st.composite
def configs(draw: st.DrawFn) -> cfgmod.Config:
    """A valid configuration: 1..4 listeners, disjoint binds from a small pool (so that binds move between
    listeners across two draws), 0..3 servers each."""
    names = draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=4, unique=True))
    ports = draw(st.permutations(PORTS))
    cuts = sorted(
        draw(st.lists(st.integers(0, len(PORTS)), min_size=len(names) - 1, max_size=len(names) - 1))
    )
    parts = []
    lo = 0
    for i, name in enumerate(names):
        hi = cuts[i] if i < len(cuts) else len(PORTS)
        binds = ports[lo:hi] or [ports[-1 - i]]
        lo = max(lo, hi)
        servers = draw(st.lists(st.sampled_from(["s1", "s2", "s3"]), max_size=3, unique=True))
        weights = [draw(st.integers(1, 3)) for _ in servers]
        bind = ", ".join(f'"127.0.0.1:{p}"' for p in binds)
        parts.append(
            f"[listen.{name}]\nbind = [{bind}]\n"
            + "server = ["
            + ", ".join(
                f'{{ name = "{s}", address = "127.0.0.1:{6000 + j}", weight = {w} }}'
                for j, (s, w) in enumerate(zip(servers, weights, strict=True))
            )
            + "]\n"
        )
    try:
        return cfgmod.loads("\n".join(parts))
    except cfgmod.ConfigError:
        from hypothesis import reject

        reject()


def _binds(cfg: cfgmod.Config) -> dict[tuple[str, int], str]:
    return {a: li.name for li in cfg.listeners for a in li.bind}


@settings(max_examples=300, deadline=None)
@given(configs(), configs())
def test_plan_accounts_for_every_socket_and_listener(old: cfgmod.Config, new: cfgmod.Config) -> None:
    p = plan(old, new)
    before, after = _binds(old), _binds(new)
    opened = {a for _, a in p.open}
    # every new bind is kept or opened, every old one kept or closed; nothing twice
    assert set(p.keep) | opened == set(after) and not set(p.keep) & opened
    assert set(p.keep) | set(p.close) == set(before) and not set(p.keep) & set(p.close)
    assert all(after[a] == owner for owner, a in p.open)
    assert all(before[a] == o and after[a] == n for a, (o, n) in p.keep.items())
    assert p.moved == {a: on for a, on in p.keep.items() if on[0] != on[1]}
    # listeners: a partition of old and new names
    old_n, new_n = {li.name for li in old.listeners}, {li.name for li in new.listeners}
    assert set(p.added) == new_n - old_n and set(p.removed) == old_n - new_n
    assert set(p.changed) | set(p.unchanged) == old_n & new_n and not set(p.changed) & set(p.unchanged)
    for n in p.changed:
        assert old.listener(n) != new.listener(n)
    for n, sc in p.servers.items():
        assert n in p.changed and sc
        was = {s.name: s for s in old.listener(n).servers}
        now = {s.name: s for s in new.listener(n).servers}
        assert set(sc.added) == now.keys() - was.keys() and set(sc.removed) == was.keys() - now.keys()
        assert set(sc.changed) == {s for s in now if s in was and now[s] != was[s]}
    # the same configuration: nothing to do
    same = plan(new, new)
    assert not same.open and not same.close and not same.moved and same.summary() == "no change"


def test_plan_example() -> None:
    old = cfgmod.loads(
        '[listen.a]\nbind = ["127.0.0.1:5671", "127.0.0.1:5672"]\nserver = []\n'
        '[listen.b]\nbind = ["127.0.0.1:5673"]\nserver = [{ name = "s1", address = "127.0.0.1:6000" }]\n'
    )
    new = cfgmod.loads(
        '[listen.a]\nbind = ["127.0.0.1:5671"]\nserver = []\n'
        '[listen.b]\nbind = ["127.0.0.1:5673", "127.0.0.1:5672"]\n'
        'server = [{ name = "s1", address = "127.0.0.1:6000", weight = 2 }, '
        '{ name = "s2", address = "127.0.0.1:6001" }]\n'
        '[listen.c]\nbind = ["127.0.0.1:5674"]\nserver = []\n'
    )
    p = plan(old, new)
    assert p.moved == {("127.0.0.1", 5672): ("a", "b")}
    assert p.open == (("c", ("127.0.0.1", 5674)),) and p.close == ()
    assert p.added == ("c",) and p.changed == ("a", "b") and p.removed == ()
    assert p.servers["b"].added == ("s2",) and p.servers["b"].changed == ("s1",)
    assert p.summary() == "1 listener added (c), 2 listeners changed (a, b), 1 bind opened"


# --------------------------------------------------------------------------- the apply, on real sockets


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _text(pa: int, pb: str, weight: int, backend: int) -> str:
    return f"""
[global]
hard_stop_after = "1s"
[defaults]
timeout_connect = "1s"
timeout_client = "10s"
timeout_server = "10s"
[listen.a]
bind = ["127.0.0.1:{pa}"]
server = [{{ name = "s1", address = "127.0.0.1:{backend}", check = false }}]
[listen.b]
bind = ["{pb}"]
server = [{{ name = "s1", address = "127.0.0.1:{backend}", check = false, weight = {weight} }}]
"""


async def _echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await r.read(65536):
            w.write(data)
            await w.drain()
    w.close()


async def _roundtrip(port: int) -> bool:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        w.write(b"ping")
        await w.drain()
        return await asyncio.wait_for(r.readexactly(4), 30) == b"ping"
    finally:
        w.close()


@pytest.mark.parametrize("case", ["port-in-use", "wildcard-same-port"])
@pytest.mark.parametrize("loop", LOOPS)
def test_reload_with_a_failing_bind_changes_nothing(loop: str, case: str) -> None:
    """Listener b gets a bind that cannot be opened (a port another process holds, or 0.0.0.0 on the port
    it already has): the reload raises ReloadError naming listen.b and the address, both listeners keep
    accepting, and b's server change (weight 1 -> 3) is not applied."""
    from tcplb.lb import LoadBalancer

    async def main() -> None:
        backend = await asyncio.start_server(_echo, "127.0.0.1", 0)
        bport = backend.sockets[0].getsockname()[1]
        pa, pb = _free_port(), _free_port()
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        hport = holder.getsockname()[1]
        lb = LoadBalancer(cfgmod.loads(_text(pa, f"127.0.0.1:{pb}", 1, bport)))
        events: list[str] = []
        lb.on_event = events.append
        lb.start()
        try:
            assert await _roundtrip(pa) and await _roundtrip(pb)
            old = lb.cfg
            bad_bind = f"127.0.0.1:{hport}" if case == "port-in-use" else f"0.0.0.0:{pb}"
            with pytest.raises(ReloadError) as ei:
                lb.reload(cfgmod.loads(_text(pa, bad_bind, 3, bport)))
            e = ei.value
            assert e.listener == "b" and str(e).startswith(f"listen.b: cannot bind {bad_bind}: ")
            assert lb.cfg is old and lb.reloads == 0
            assert lb.frontends["b"].servers[0].shown_weight == 1
            for _ in range(3):
                assert await _roundtrip(pa) and await _roundtrip(pb)
            assert all(fe.accepting for fe in lb.frontends.values())
            # and a good reload afterwards applies everything
            lb.reload(cfgmod.loads(_text(pa, f"127.0.0.1:{pb}", 3, bport)))
            assert lb.frontends["b"].servers[0].shown_weight == 3 and lb.reloads == 1
            await wait_for(lambda: all(fe.accepting for fe in lb.frontends.values()), 30)
            assert await _roundtrip(pa) and await _roundtrip(pb)
        finally:
            lb.stop_accepting()
            lb.stop_checks()
            lb.kill_all()
            holder.close()
            backend.close()
            await asyncio.sleep(0.05)

    run(loop, main)


# ------------------------------------------------------------- the daemon: log, sd_notify, tcplb ctl


def _daemon_text(pa: int, pb: str, backend: int, sport: int) -> str:
    return (
        _text(pa, pb, 1, backend)
        + f"""
[stats]
bind = "127.0.0.1:{sport}"
auth = ["admin:s3cret"]
admin = true
"""
    )


@pytest.mark.parametrize("loop", LOOPS)
def test_daemon_reload_refused_is_visible(
    loop: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The failed reload is logged with the listener and address, shows in sd_notify STATUS, and
    ``tcplb ctl reload`` exits 1 with the reason; the old configuration keeps accepting. A good reload
    through ctl exits 0."""
    from tcplb import ctl
    from tcplb.daemon import Daemon

    notify = tmp_path / "notify.sock"
    nsock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    nsock.bind(str(notify))
    nsock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(notify))
    for k in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        monkeypatch.delenv(k, raising=False)
    path = tmp_path / "lb.toml"
    messages: list[str] = []

    def drain() -> list[str]:
        with contextlib.suppress(BlockingIOError):
            while True:
                messages.append(nsock.recv(65536).decode())
        return messages

    async def main() -> None:
        backend = await asyncio.start_server(_echo, "127.0.0.1", 0)
        bport = backend.sockets[0].getsockname()[1]
        pa, pb, sport = _free_port(), _free_port(), _free_port()
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        hport = holder.getsockname()[1]
        path.write_text(_daemon_text(pa, f"127.0.0.1:{pb}", bport, sport))
        d = Daemon(cfgmod.load(path), path, loop)
        task = asyncio.get_running_loop().create_task(d.serve())
        try:
            await wait_for(lambda: d.stats is not None, 30, "stats up")
            assert await _roundtrip(pa) and await _roundtrip(pb)
            path.write_text(_daemon_text(pa, f"127.0.0.1:{hport}", bport, sport))
            argv = ["--url", f"http://127.0.0.1:{sport}", "--user", "admin:s3cret", "reload"]
            rc = await asyncio.to_thread(ctl.main, argv)
            assert rc == 1
            assert d.reload_error is not None and f"listen.b: cannot bind 127.0.0.1:{hport}" in d.reload_error
            assert any(
                "reload refused, running configuration unchanged: listen.b: cannot bind" in r.getMessage()
                for r in caplog.records
            )
            assert "last reload refused: listen.b" in d.sd_status()
            await wait_for(lambda: any("last reload refused: listen.b" in m for m in drain()), 30, "STATUS")
            assert await _roundtrip(pa) and await _roundtrip(pb)
            path.write_text(
                _daemon_text(pa, f"127.0.0.1:{pb}", bport, sport).replace("weight = 1", "weight = 2")
            )
            rc = await asyncio.to_thread(ctl.main, argv)
            assert rc == 0 and d.reload_error is None
            assert d.lb is not None and d.lb.frontends["b"].servers[0].shown_weight == 2
        finally:
            d.request_stop()
            await asyncio.wait_for(task, 30)
            holder.close()
            backend.close()

    try:
        run(loop, main)
    finally:
        nsock.close()
