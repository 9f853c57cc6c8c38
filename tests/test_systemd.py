"""systemd integration: the unit files (systemd-analyze verify) and the notify protocol with the real daemons.

systemd is installed here but is not PID 1, so nothing is started through systemctl. Instead the tests play
systemd's part: they bind the notify socket themselves (a path, or the abstract '@' form), start the real
``tcplb`` (loopback) or ``vrrpd`` (in a network namespace) with ``NOTIFY_SOCKET`` set, and read the datagrams
with the sender's credentials (``SO_PASSCRED``: systemd's default ``NotifyAccess=main`` accepts only the main
PID). Where the kernel has ``PR_SET_MDWE`` (Linux >= 6.3) the daemons run with it, the kernel's own form of
``MemoryDenyWriteExecute=yes``, which both units set.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import free_port

from netns import Lab, wait_until
from netns.plugin import missing_capability

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
READY = 30.0  # bound of a wait for a notification or a process (a busy machine is slow, not wrong)
UNITS = ("vrrpd", "tcplb")

# Exec the rest of argv with PR_SET_MDWE(PR_MDWE_REFUSE_EXEC_GAIN): no writable+executable mappings, as
# systemd's MemoryDenyWriteExecute=yes. Inherited across fork and execve. Exit 3 when the kernel lacks it.
MDWE_EXEC = (
    "import ctypes, os, sys\n"
    "if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0: sys.exit(3)\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)


def mdwe_prefix() -> list[str]:
    """argv prefix running a command under MDWE, or [] when this kernel has no PR_SET_MDWE."""
    r = subprocess.run([PY, "-c", MDWE_EXEC, "/bin/true"], timeout=30)
    return [PY, "-c", MDWE_EXEC] if r.returncode == 0 else []


# --------------------------------------------------------------------------------------------- unit files


def unit_sections(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values...]}} (keys may repeat: ExecReload=)."""
    out: dict[str, dict[str, list[str]]] = {}
    sec: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            sec = out.setdefault(line.strip("[]"), {})
            continue
        k, _, v = line.partition("=")
        sec.setdefault(k, []).append(v)
    return out


@pytest.fixture(scope="module")
def installed_units(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`make install-units` staged under a DESTDIR, with ExecStart pointing into this venv."""
    prefix = Path(PY).parent.parent
    if not all((prefix / "bin" / u).exists() for u in UNITS):
        missing_capability(f"{prefix}/bin has no vrrpd/tcplb console scripts (pip install -e . first)")
    if shutil.which("make") is None:
        missing_capability("make is not installed")
    dest = tmp_path_factory.mktemp("destdir")
    r = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "install-units", f"DESTDIR={dest}", f"PREFIX={prefix}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    yield dest


def test_units_verify_clean(installed_units: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        missing_capability("systemd-analyze is not installed (Debian's systemd)")
    unitdir = installed_units / "etc/systemd/system"
    paths = [str(unitdir / f"{u}.service") for u in UNITS]
    r = subprocess.run([tool, "verify", *paths], capture_output=True, text=True, timeout=60)
    # unknown keys and bad values are only warnings (exit 0): any output at all fails the test
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr


def test_units_content(installed_units: Path) -> None:
    prefix = Path(PY).parent.parent
    unitdir = installed_units / "etc/systemd/system"
    for u in UNITS:
        svc = unit_sections(unitdir / f"{u}.service")["Service"]
        conf = f"/etc/{u}/{'node' if u == 'vrrpd' else 'lb'}.toml"
        assert svc["Type"] == ["notify"]
        assert svc["ExecStart"] == [f"{prefix}/bin/{u} -c {conf}"]
        assert svc["ExecStartPre"] == [f"{prefix}/bin/{u} -c {conf} --check"]
        assert svc["ExecReload"][0] == f"{prefix}/bin/{u} -c {conf} --check"
        if u == "vrrpd":
            assert svc["ExecReload"][1:] == ["/bin/kill -HUP $MAINPID"]
        else:  # `tcplb ctl reload` when lb.toml has the admin API (a refused reload fails), else SIGHUP
            (reload,) = svc["ExecReload"][1:]
            assert reload.startswith("/bin/sh -c '") and f"{prefix}/bin/python -c" in reload
            assert f"then exec {prefix}/bin/tcplb ctl -c {conf} --timeout 60 reload;" in reload
            assert "else exec /bin/kill -HUP $$MAINPID; fi'" in reload
        assert svc["Restart"] == ["on-failure"]
        assert svc["NoNewPrivileges"] == ["yes"] and svc["ProtectSystem"] == ["strict"]
        assert svc["MemoryDenyWriteExecute"] == ["yes"]
    assert (installed_units / "etc/vrrpd/node.toml.example").exists()
    assert (installed_units / "etc/tcplb/lb.toml.example").exists()
    vr = unit_sections(unitdir / "vrrpd.service")["Service"]
    assert set(vr["CapabilityBoundingSet"][0].split()) == {
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_SETUID",
        "CAP_SETGID",
        "CAP_KILL",
    }
    assert vr["RuntimeDirectory"] == ["vrrpd"]
    assert set(vr["RestrictAddressFamilies"][0].split()) == {
        "AF_UNIX",
        "AF_INET",
        "AF_INET6",
        "AF_NETLINK",
        "AF_PACKET",
    }
    lb = unit_sections(unitdir / "tcplb.service")["Service"]
    assert lb["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert set(lb["RestrictAddressFamilies"][0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    # the example's graceful stop must fit in the stop timeout, or systemd SIGKILLs the drain
    from tcplb.config import parse_duration

    example = tomllib.loads((ROOT / "examples/lb.toml").read_text())["global"]
    hard = parse_duration(example["hard_stop_after"])
    assert parse_duration(lb["TimeoutStopSec"][0]) >= hard + 10
    assert int(lb["LimitNOFILE"][0]) >= 2 * example["maxconn"] + 64


def test_uninstall_units(tmp_path: Path) -> None:
    prefix = Path(PY).parent.parent
    if not all((prefix / "bin" / u).exists() for u in UNITS) or shutil.which("make") is None:
        missing_capability("needs make and the console scripts")
    args = ["make", "-s", "-C", str(ROOT), f"DESTDIR={tmp_path}", f"PREFIX={prefix}"]
    subprocess.run([*args, "install-units"], check=True, capture_output=True, timeout=60)
    cfg = tmp_path / "etc/tcplb/lb.toml"
    cfg.write_text("# the operator's file\n")
    subprocess.run([*args, "install-units"], check=True, capture_output=True, timeout=60)  # idempotent
    assert cfg.read_text() == "# the operator's file\n"
    subprocess.run([*args, "uninstall-systemd"], check=True, capture_output=True, timeout=60)
    assert not list((tmp_path / "etc/systemd/system").iterdir())
    assert cfg.exists() and (prefix / "bin/python").exists()  # configuration and the venv stay


# ------------------------------------------------------------------------------------ notify protocol


class NotifySocket:
    """systemd's side of NOTIFY_SOCKET: a datagram socket receiving (sender pid, message) pairs."""

    def __init__(self, addr: str) -> None:
        self.addr = addr  # a path, or "\0name" (abstract)
        self.env = "@" + addr[1:] if addr.startswith("\0") else addr
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(addr)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.setblocking(False)
        self.msgs: list[tuple[int | None, str]] = []
        self.cursor = 0

    def drain(self) -> None:
        while True:
            try:
                data, anc, _flags, _addr = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except BlockingIOError:
                return
            pid = None
            for level, kind, blob in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", blob[:12])[0]
            self.msgs.append((pid, data.decode()))

    def expect(self, line: str, timeout: float, pid: int | None = None) -> dict[str, str]:
        """The next message (after the last one expected) with ``line`` among its lines, as a dict."""

        def find() -> dict[str, str] | None:
            self.drain()
            for i in range(self.cursor, len(self.msgs)):
                sender, text = self.msgs[i]
                if line in text.split("\n"):
                    self.cursor = i + 1
                    if pid is not None:
                        assert sender == pid, f"{text!r} sent by pid {sender}, not the main pid {pid}"
                    return dict(x.split("=", 1) for x in text.split("\n"))
            return None

        try:
            return wait_until(find, timeout, what=f"notify {line}")
        except Exception:
            raise AssertionError(f"no {line!r} in {self.msgs[self.cursor :]!r}") from None

    def lines(self, start: int = 0) -> list[str]:
        self.drain()
        return [ln for _pid, text in self.msgs[start:] for ln in text.split("\n")]

    def close(self) -> None:
        self.sock.close()
        if not self.addr.startswith("\0"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.addr)


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifySocket]:
    addr = str(tmp_path / "notify") if request.param == "path" else f"\0rmqfd-test-{uuid.uuid4().hex}"
    ns = NotifySocket(addr)
    yield ns
    ns.close()


def tcplb_config(path: Path, port: int, backend: int, stats: int, *, bad: bool = False) -> None:
    path.write_text(
        textwrap.dedent(f"""\
        [global]
        hard_stop_after = "5s"

        [defaults]
        timeout_connect = "1s"
        timeout_client = "30s"
        timeout_server = "30s"

        [listen.amqp]
        bind = ["127.0.0.1:{port}"]
        check = {{ type = "tcp", inter = "200ms", rise = 1, fall = 1 }}
        server = [{{ name = "rmq1", address = "127.0.0.1:{backend}" }}]
        {"balance = 'fastest'" if bad else ""}

        [stats]
        bind = "127.0.0.1:{stats}"
        """)
    )


def _peeked(c: socket.socket) -> bool:
    try:
        return c.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"x"
    except OSError:  # nothing yet (EAGAIN), or a health check's socket closed meanwhile
        return False


def test_tcplb_notify(notify_socket: NotifySocket, tmp_path: Path) -> None:
    ns = notify_socket
    backend = socket.socket()
    backend.bind(("127.0.0.1", 0))
    backend.listen(64)
    held: list[socket.socket] = []  # accepted and kept open (checks close their side themselves)

    def accept() -> None:
        while True:
            try:
                held.append(backend.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    port, stats = free_port(), free_port()
    cfg = tmp_path / "lb.toml"
    tcplb_config(cfg, port, backend.getsockname()[1], stats)
    env = {**os.environ, "NOTIFY_SOCKET": ns.env, "WATCHDOG_USEC": "400000"}
    env.pop("WATCHDOG_PID", None)
    log = (tmp_path / "tcplb.log").open("w")
    argv = [*mdwe_prefix(), PY, "-m", "tcplb", "-c", str(cfg)]
    p = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT))
    try:
        ready = ns.expect("READY=1", READY, pid=p.pid)
        assert ready["STATUS"] == "0 connections, 1/1 servers up"
        # listeners and stats are up when READY=1 arrives
        socket.create_connection(("127.0.0.1", stats), timeout=2).close()
        ns.expect("WATCHDOG=1", READY, pid=p.pid)
        client = socket.create_connection(("127.0.0.1", port), timeout=2)
        ns.expect("STATUS=1 connections, 1/1 servers up", READY, pid=p.pid)
        # the server side is closed too (tcplb waits for both FINs): a byte through first, so that the proxied
        # connection is among `held` (accepted by the thread) when they are closed, not accepted after
        client.sendall(b"x")
        wait_until(lambda: any(_peeked(c) for c in list(held)), READY, what="the byte at the backend")
        client.close()
        for c in list(held):
            c.close()
        ns.expect("STATUS=0 connections, 1/1 servers up", READY, pid=p.pid)

        p.send_signal(signal.SIGHUP)
        rel = ns.expect("RELOADING=1", READY, pid=p.pid)
        assert int(rel["MONOTONIC_USEC"]) <= time.monotonic_ns() // 1000
        ns.expect("READY=1", READY, pid=p.pid)

        tcplb_config(cfg, port, backend.getsockname()[1], stats, bad=True)  # refused: old config stays
        p.send_signal(signal.SIGHUP)
        ns.expect("RELOADING=1", READY, pid=p.pid)
        ns.expect("READY=1", READY, pid=p.pid)
        wait_until(
            lambda: "reload refused" in (tmp_path / "tcplb.log").read_text(), READY, what="reload refused"
        )
        assert p.poll() is None

        p.send_signal(signal.SIGTERM)
        stop = ns.expect("STOPPING=1", READY, pid=p.pid)
        assert stop["STATUS"].startswith("stopping")
        assert p.wait(READY) == 0, (tmp_path / "tcplb.log").read_text()[-2000:]
        assert "READY=1" not in ns.lines(ns.cursor)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(5)
        log.close()
        backend.close()
        for c in held:
            c.close()


@pytest.mark.netns
def test_vrrpd_notify_in_namespace(lab: Lab, tmp_path: Path) -> None:
    """vrrpd in a namespace; the notify socket is a file path (a path is reachable across network namespaces,
    an abstract name is not: abstract sockets belong to a network namespace)."""
    ns = NotifySocket(str(tmp_path / "notify"))
    try:
        sw = lab.switch()
        h = lab.host("lb1")
        lab.link(h, sw, "192.0.2.21/24")
        env_out = tmp_path / "notify-env.txt"
        script = tmp_path / "notify.sh"
        script.write_text(f"#!/bin/sh\nenv > {env_out}.tmp && mv {env_out}.tmp {env_out}\n")
        script.chmod(0o755)
        conf = tmp_path / "node.toml"
        conf.write_text(
            textwrap.dedent(f"""\
            [global]
            router_id = "lb1"
            control_socket = "{tmp_path / "ctl.sock"}"

            [[vrrp_instance]]
            name = "VI_1"
            interface = "eth0"
            virtual_router_id = 51
            priority = 150
            advert_int = 1
            virtual_ipaddress = ["192.0.2.100/24"]
            notify_master = ["{script}"]
            """)
        )
        env = {"NOTIFY_SOCKET": ns.env, "WATCHDOG_USEC": "1000000", "PYTHONPATH": str(ROOT)}
        proc = h.start([*mdwe_prefix(), PY, "-m", "vrrpd", "-c", str(conf)], name="vrrpd", env=env)
        ready = ns.expect("READY=1", READY, pid=proc.pid)
        assert ready["STATUS"] in ("VI_1 BACKUP", "VI_1 MASTER")
        assert os.path.exists(tmp_path / "ctl.sock")  # the control socket is up when READY=1 arrives
        ns.expect("WATCHDOG=1", READY, pid=proc.pid)
        ns.expect("STATUS=VI_1 MASTER", READY, pid=proc.pid)
        wait_until(env_out.exists, READY, what="notify_master ran")
        child_env = env_out.read_text()
        assert "PYTHONPATH=" in child_env  # the script did get vrrpd's environment...
        for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            assert f"{k}=" not in child_env  # ...without systemd's variables

        proc.signal(signal.SIGHUP)
        ns.expect("RELOADING=1", READY, pid=proc.pid)
        assert ns.expect("READY=1", READY, pid=proc.pid)["STATUS"] == "VI_1 MASTER"

        conf.write_text(conf.read_text() + "bogus_key = 1\n")  # a failed reload: READY=1 all the same
        proc.signal(signal.SIGHUP)
        ns.expect("RELOADING=1", READY, pid=proc.pid)
        ns.expect("READY=1", READY, pid=proc.pid)
        assert proc.alive()

        proc.term()
        ns.expect("STOPPING=1", READY, pid=proc.pid)
        assert proc.wait(READY) == 0, proc.output()[-2000:]
        assert "READY=1" not in ns.lines(ns.cursor)
        assert not h.has_address("192.0.2.100")
    finally:
        ns.close()
