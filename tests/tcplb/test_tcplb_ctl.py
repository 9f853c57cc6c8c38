"""``tcplb ctl``: every command through ``python -m tcplb ctl`` against the real daemon on loopback.

Each test starts ``tcplb`` as a subprocess with three greeting backends (each sends its name when a client
connects, so the client knows where it landed, and records the connections that sent it data) and checks the
effect of the command on the traffic, not only the answer.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tcplb_helpers import Backend, Tcplb, free_port, lb_toml

from netns import wait_until

PY = sys.executable
REPO = Path(__file__).resolve().parents[2]
AUTH = "admin:s3cret"


class Client:
    """One connection through the LB; ``server`` is the backend that greeted it."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.file = self.sock.makefile("rb")
        self.server = self.file.readline().decode().strip()
        self.sock.sendall(b"hello")
        assert self.sock.recv(5) == b"hello"

    def closed(self) -> bool:
        """True once the LB closed the connection (EOF or reset)."""
        self.sock.settimeout(0.05)
        try:
            return self.sock.recv(100) == b""
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def connect_n(port: int, n: int) -> list[str]:
    """Open n connections one after the other; the servers that answered."""
    out = []
    for _ in range(n):
        c = Client(port)
        out.append(c.server)
        c.close()
    return out


def write_cfg(path: Path, port: int, sport: int, backends: list[Backend], *, admin: bool = True) -> None:
    servers = [(b.name, b.port) for b in backends]
    path.write_text(
        lb_toml(
            port,
            servers,
            hard_stop="5s",
            retries=None,
            stats=sport,
            stats_auth=[AUTH, "viewer:other"],
            admin=admin,
            stats_extra='uri = "/stats"',
        )
    )


class Lb(Tcplb):
    """The real daemon as a subprocess (uvloop) with its stats/admin API on ``sport``; stopped by PID in the
    fixture's finalizer."""

    def __init__(self, tmp: Path, backends: list[Backend], *, admin: bool = True) -> None:
        self.port, self.sport = free_port(), free_port()
        self.cfg = tmp / "lb.toml"
        write_cfg(self.cfg, self.port, self.sport, backends, admin=admin)
        super().__init__(self.cfg, "uvloop", tmp / "lb.log")
        self.wait_log("tcplb started", 30)

    def ctl(
        self, *words: str, env: dict[str, str] | None = None, cfg: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = [PY, "-m", "tcplb", "ctl", *(["-c", str(self.cfg)] if cfg else []), *words]
        e = {k: v for k, v in os.environ.items() if k != "TCPLB_AUTH"}
        e.update(env or {})
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=REPO, env=e)

    def ok(self, *words: str) -> str:
        p = self.ctl(*words)
        assert p.returncode == 0, (words, p.returncode, p.stderr)
        assert p.stderr == ""
        return p.stdout

    def states(self) -> dict[str, list[str]]:
        """``show servers state`` as {server: [status, weight, sessions, check]}."""
        lines = self.ok("show", "servers", "state").splitlines()
        assert lines[0] == "# listener server status weight sessions check"
        out = {}
        for ln in lines[1:]:
            f = ln.split()
            assert len(f) == 6 and f[0] == "t", ln
            out[f[1]] = f[2:]
        return out


@pytest.fixture
def lb(tmp_path: Path, backends: list[Backend]) -> Iterator[Lb]:
    inst = Lb(tmp_path, backends)
    try:
        # UP and checked at least once (servers start UP, before their first check: INI)
        wait_until(
            lambda: all(s[0] == "UP" and s[3] != "INI" for s in inst.states().values()), 30, what="all UP"
        )
        yield inst
    finally:
        inst.stop()


def test_show_stat_table_and_json(lb: Lb) -> None:
    connect_n(lb.port, 3)
    out = lb.ok("show", "stat").splitlines()
    head = out[0].split()
    assert head[:4] == ["pxname", "svname", "status", "weight"]
    rows = {ln.split()[1]: dict(zip(head, ln.split(), strict=False)) for ln in out[1:]}
    assert {"FRONTEND", "a", "b", "c", "BACKEND"} <= set(rows)
    assert rows["a"]["status"] == "UP" and rows["a"]["pxname"] == "t"
    assert int(rows["FRONTEND"]["stot"]) >= 3
    snap = json.loads(lb.ok("show", "stat", "--json"))
    assert isinstance(snap, dict)
    assert "t" in json.dumps(snap)


def test_show_servers_state(lb: Lb, backends: list[Backend]) -> None:
    held = Client(lb.port)
    try:
        st = lb.states()
        assert set(st) == {"a", "b", "c"}
        assert all(v[0] == "UP" and v[1] == "1" for v in st.values()), st
        assert st[held.server][2] == "1"  # one session on the server that greeted us
        assert st[held.server][3].startswith("L4OK"), st
    finally:
        held.close()


def test_drain_then_ready(lb: Lb, backends: list[Backend]) -> None:
    assert lb.ok("set", "server", "t/a", "state", "drain").strip() == "t/a: DRAIN weight 0"
    assert lb.states()["a"][0] == "DRAIN"
    before = backends[0].served
    got = connect_n(lb.port, 12)
    assert "a" not in got and set(got) == {"b", "c"}
    assert backends[0].served == before  # the backend saw none of them either
    lb.ok("set", "server", "t/a", "state", "ready")
    assert lb.states()["a"][:2] == ["UP", "1"]
    assert "a" in connect_n(lb.port, 6)


def test_disable_enable_server(lb: Lb) -> None:
    assert "MAINT" in lb.ok("disable", "server", "t/b")
    assert lb.states()["b"][0] == "MAINT"
    assert "b" not in connect_n(lb.port, 9)
    assert "going DOWN for maintenance" in lb.output()
    lb.ok("enable", "server", "t/b")
    wait_until(lambda: lb.states()["b"][0] == "UP", 30, what="b UP again")
    assert "b" in connect_n(lb.port, 6)


def test_set_weight_both_spellings(lb: Lb) -> None:
    assert lb.ok("set", "weight", "t/c", "0").strip().endswith("weight 0")
    assert lb.states()["c"][1] == "0"
    assert "c" not in connect_n(lb.port, 9)
    lb.ok("set", "server", "t/c", "weight", "3")
    assert lb.states()["c"][1] == "3"
    got = connect_n(lb.port, 10)
    assert got.count("c") > got.count("a")  # 3:1:1


def test_shutdown_sessions(lb: Lb) -> None:
    clients = [Client(lb.port) for _ in range(6)]
    try:
        on_a = [c for c in clients if c.server == "a"]
        others = [c for c in clients if c.server != "a"]
        assert on_a and others
        out = lb.ok("shutdown", "sessions", "server", "t/a")
        assert out.strip() == f"t/a: UP weight 1, {len(on_a)} sessions closed", out
        wait_until(lambda: all(c.closed() for c in on_a), 30, what="a's sessions closed")
        for c in others:  # the other servers' connections are untouched
            c.sock.settimeout(30)
            c.sock.sendall(b"still")
            assert c.sock.recv(5) == b"still"
        assert lb.states()["a"][0] == "UP"  # the server itself stays in rotation
    finally:
        for c in clients:
            c.close()


def stays(pred: Callable[[], bool], seconds: float, what: str) -> None:
    """Assert that ``pred`` holds at every poll for ``seconds`` (an observation window, not a sleep)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert pred(), what
        time.sleep(0.05)


def test_disable_enable_health(lb: Lb, backends: list[Backend]) -> None:
    backends[2].stop()
    wait_until(lambda: lb.states()["c"][0] == "DOWN", 30, what="c DOWN")
    assert "checks disabled" in lb.ok("disable", "health", "t/c")
    # as in HAProxy: unchecked, the last result is ignored and the server counts as UP
    assert lb.states()["c"][:2] == ["no_check", "1"] and lb.states()["c"][3] == "disabled"
    backends[2].start()
    wait_until(lambda: "c" in connect_n(lb.port, 6), 30, what="c in rotation while unchecked")
    # enabled again, the checks decide: its backend stops and it goes DOWN, out of rotation
    lb.ok("enable", "health", "t/c")
    backends[2].stop()
    wait_until(lambda: lb.states()["c"][0] == "DOWN", 30, what="c DOWN once checked again")
    assert "c" not in connect_n(lb.port, 6)
    backends[2].start()
    wait_until(lambda: lb.states()["c"][0] == "UP", 30, what="c UP once checked again")
    assert lb.states()["c"][3] == "L4OK"


def test_url_user_and_env_auth(lb: Lb) -> None:
    url = f"http://127.0.0.1:{lb.sport}"
    p = lb.ctl("--url", url, "--user", AUTH, "show", "servers", "state", cfg=False)
    assert p.returncode == 0 and len(p.stdout.splitlines()) == 4, p.stderr
    p = lb.ctl("--url", url + "/stats", "show", "stat", cfg=False, env={"TCPLB_AUTH": AUTH})
    assert p.returncode == 0 and "FRONTEND" in p.stdout, p.stderr
    # --user wins over the config's first pair; the second pair of auth is accepted too
    p = lb.ctl("--user", "viewer:other", "show", "servers", "state")
    assert p.returncode == 0, p.stderr


def test_refusals(lb: Lb) -> None:
    url = f"http://127.0.0.1:{lb.sport}"
    p = lb.ctl("--url", url, "--user", "admin:wrong", "set", "server", "t/a", "state", "drain", cfg=False)
    assert p.returncode == 1 and "401" in p.stderr and len(p.stderr.splitlines()) == 1, p.stderr
    p = lb.ctl("--url", url, "show", "stat", cfg=False)  # no credentials at all
    assert p.returncode == 1 and "401" in p.stderr
    p = lb.ctl("set", "server", "t/zz", "state", "drain")
    assert p.returncode == 1 and "404" in p.stderr and "zz" in p.stderr, p.stderr
    p = lb.ctl("set", "server", "nope/a", "state", "drain")
    assert p.returncode == 1 and "404" in p.stderr, p.stderr
    assert lb.states()["a"][0] == "UP"  # nothing changed


def test_admin_disabled_is_403(tmp_path: Path, backends: list[Backend]) -> None:
    lb = Lb(tmp_path, backends, admin=False)
    try:
        assert "FRONTEND" in lb.ok("show", "stat")  # reading is allowed
        p = lb.ctl("disable", "server", "t/a")
        assert p.returncode == 1 and "403" in p.stderr and len(p.stderr.splitlines()) == 1, p.stderr
        assert lb.states()["a"][0] == "UP"
    finally:
        lb.stop()


def test_unreachable_and_bad_config(tmp_path: Path) -> None:
    def ctl(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PY, "-m", "tcplb", "ctl", *argv], capture_output=True, text=True, timeout=30, cwd=REPO
        )

    p = ctl("--url", f"http://127.0.0.1:{free_port()}", "show", "stat")
    assert p.returncode == 1 and "cannot reach" in p.stderr and len(p.stderr.splitlines()) == 1, p.stderr
    cfg = tmp_path / "lb.toml"
    cfg.write_text('[listen.x]\nbind = ["127.0.0.1:1"]\nserver = [{ name = "a", address = "127.0.0.1:2" }]\n')
    p = ctl("-c", str(cfg), "show", "stat")
    assert p.returncode == 1 and "no [stats]" in p.stderr, p.stderr
    cfg.write_text("[stats]\nbogus = 1\n")
    p = ctl("-c", str(cfg), "show", "stat")
    assert p.returncode == 1 and "invalid configuration" in p.stderr and len(p.stderr.splitlines()) == 1
    p = ctl("-c", str(tmp_path / "missing.toml"), "show", "stat")
    assert p.returncode == 1 and "missing.toml" in p.stderr


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["show"],
        ["frobnicate"],
        ["set", "server", "t/a", "state", "up"],
        ["set", "server", "ta", "state", "drain"],
        ["set", "weight", "t/a", "257"],
        ["set", "weight", "t/a", "x"],
        ["disable", "server"],
        ["show", "servers", "state", "--json"],
        ["--url", "http://x", "-c", "lb.toml", "show", "stat"],
        ["--bogus", "show", "stat"],
    ],
)
def test_usage_errors_exit_2(argv: list[str]) -> None:
    # port 9 (discard) on loopback: a usage error must come before any request
    p = subprocess.run(
        [PY, "-m", "tcplb", "ctl", *(["--url", "http://127.0.0.1:9"] if "--url" not in argv else []), *argv],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
    )
    assert p.returncode == 2, (argv, p.stderr)
    assert len(p.stderr.strip().splitlines()) == 1 and p.stderr.startswith("tcplb ctl: "), p.stderr


def test_help_lists_the_commands() -> None:
    p = subprocess.run([PY, "-m", "tcplb", "ctl", "-h"], capture_output=True, text=True, timeout=30, cwd=REPO)
    assert p.returncode == 0
    for words in (
        "show stat",
        "show servers state",
        "set server L/S state",
        "shutdown sessions server",
        "reload",
    ):
        assert words in p.stdout


def test_reload(lb: Lb, backends: list[Backend]) -> None:
    """``tcplb ctl reload``: exit 0 and what changed; with a bind another process holds, exit 1 with the
    listener and address, and the running configuration keeps accepting (issue 10, defect 1)."""
    out = lb.ok("reload")
    assert out.startswith("reloaded ") and "no change" in out
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    try:
        text = lb.cfg.read_text()
        hport = holder.getsockname()[1]
        lb.cfg.write_text(
            text.replace(f'"127.0.0.1:{lb.port}"', f'"127.0.0.1:{lb.port}", "127.0.0.1:{hport}"')
        )
        p = lb.ctl("reload")
        assert p.returncode == 1, p.stdout
        assert p.stderr.startswith("tcplb ctl: reload refused, the running configuration is unchanged: ")
        assert f"listen.t: cannot bind 127.0.0.1:{hport}: Address already in use" in p.stderr
        with socket.create_connection(("127.0.0.1", lb.port), timeout=30) as c:
            assert c.recv(16).strip() in {b.name.encode() for b in backends}  # still accepting
        lb.cfg.write_text(text)
        assert lb.ok("reload").startswith("reloaded ")
    finally:
        holder.close()
    assert "reload refused, running configuration unchanged: listen.t: cannot bind" in lb.output()
