"""Host-side pieces of vrrpd that need no namespace: script runner, notify queue, script security, control
socket, CLI parsing, logging format, import hygiene. Loop-dependent tests run on stock asyncio and on
uvloop."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, TypeVar

import pytest
from track_helpers import run_loop

from netns.plugin import missing_capability
from vrrpd import wire
from vrrpd.__main__ import _fast_parse
from vrrpd.config import parse
from vrrpd.control import format_status, query, serve_control
from vrrpd.daemon import check_runtime, make_params, setup_logging
from vrrpd.scripts import NotifyQueue, RunAs, TrackScript, insecure, resolve_argv, resolve_user, run_argv

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
__all__ = ["run_loop"]  # the loop fixture (stock asyncio and uvloop), shared with the track tests


def me() -> RunAs:
    return resolve_user(None)


def test_make_params_maps_keepalived_keys() -> None:
    cfg = parse(
        {
            "vrrp_instance": [
                {
                    "interface": "eth0",
                    "virtual_router_id": 7,
                    "priority": 120,
                    "advert_int": 2,
                    "nopreempt": True,
                    "preempt_delay": 3,
                    "auth_pass": "pw",
                    "virtual_ipaddress": ["192.0.2.100/24", {"address": "192.0.2.101", "dev": "eth1"}],
                    "unicast_peer": ["192.0.2.22"],
                    "garp_master_delay": 1,
                    "garp_master_repeat": 2,
                    "garp_master_refresh": 30,
                    "garp_lower_prio_repeat": 0,
                    "lower_prio_no_advert": True,
                }
            ]
        }
    )
    p = make_params(cfg.instances[0], IPv4Address("192.0.2.21"))
    assert (p.vrid, p.priority, p.advert_int, p.preempt, p.preempt_delay) == (7, 120, 2, False, 3.0)
    assert p.vips == (IPv4Address("192.0.2.100"), IPv4Address("192.0.2.101"))
    assert (p.auth_type, p.auth_data) == (wire.AUTH_PASS, b"pw\0\0\0\0\0\0")
    assert p.unicast_peers == (IPv4Address("192.0.2.22"),) and p.src_ip == IPv4Address("192.0.2.21")
    assert (p.garp_master_delay, p.garp_master_repeat, p.garp_master_refresh) == (1.0, 2, 30.0)
    assert p.garp_lower_prio_repeat == 0 and p.lower_prio_no_advert


def _check_script(tmp_path: Path) -> tuple[Path, Path]:
    """A directory (0755) with an executable script ``check`` (0755) in it."""
    d = tmp_path / "bin"
    d.mkdir()
    d.chmod(0o755)
    s = d / "check"
    s.write_text("#!/bin/sh\nexit 0\n")
    s.chmod(0o755)
    return d, s


def test_script_security(tmp_path: Path) -> None:
    d, _s = _check_script(tmp_path)
    root_run = RunAs(0, 0, "root")
    assert "cannot stat" in (insecure(str(d / "missing"), root_run) or "")
    assert "not a regular file" in (insecure(str(d), root_run) or "")


def test_script_security_ownership(tmp_path: Path) -> None:
    if os.getuid() != 0:
        missing_capability("needs root (chown to other users)")
    d, s = _check_script(tmp_path)
    root_run = RunAs(0, 0, "root")
    assert insecure(str(s), root_run) is None
    s.chmod(0o757)
    assert "world-writable" in (insecure(str(s), root_run) or "")
    s.chmod(0o775)
    os.chown(s, 0, 65534)
    assert "writable by group" in (insecure(str(s), root_run) or "")
    s.chmod(0o755)
    os.chown(s, 65534, 0)
    assert "owned by uid 65534" in (insecure(str(s), root_run) or "")
    # ... unless that user is the one the script runs as
    assert insecure(str(s), RunAs(65534, 65534, "nobody")) is None
    os.chown(s, 0, 0)
    d.chmod(0o777)  # a writable directory above the script is as bad
    assert "world-writable" in (insecure(str(s), root_run) or "")
    d.chmod(0o1777)  # ... but a sticky one (like /tmp) is not
    assert insecure(str(s), root_run) is None


def test_resolve_argv_uses_path() -> None:
    assert resolve_argv(["true"])[0].endswith("/true") and os.path.isabs(resolve_argv(["true"])[0])
    assert resolve_argv(["/bin/echo", "x"]) == ["/bin/echo", "x"]
    assert resolve_argv(["no-such-program-xyz"]) == ["no-such-program-xyz"]


def test_run_argv_status_timeout_and_missing(run_loop: Any, tmp_path: Path) -> None:
    async def go() -> tuple[int | None, int | None, int | None, int | None]:
        ok = await run_argv(["/bin/true"], me(), 5, "t")
        bad = await run_argv(["/bin/sh", "-c", "exit 3"], me(), 5, "t")
        slow = await run_argv(["/bin/sleep", "10"], me(), 0.2, "t")
        missing = await run_argv([str(tmp_path / "nope")], me(), 1, "t")
        return ok, bad, slow, missing

    assert run_loop(go) == (0, 3, None, None)


def test_notify_queue_runs_in_order_with_timeout(run_loop: Any, tmp_path: Path) -> None:
    out = tmp_path / "log"

    async def go() -> list[str]:
        # timeout 2 s (was 0.3 s): a quick script that a busy machine starts late must not be killed by it
        q = NotifyQueue(me(), timeout=2.0, security=False)
        q.start()
        for i in range(5):
            # later ones are faster: with fire-and-forget they would overtake the earlier ones
            q.put(["/bin/sh", "-c", f"sleep 0.0{5 - i}; echo {i} >> {out}"], f"n{i}")
        q.put(["/bin/sleep", "60"], "stuck")  # killed after the timeout, the queue goes on
        q.put(["/bin/sh", "-c", f"echo after >> {out}"], "after")
        assert await q.drain(30)
        q.stop()
        return out.read_text().split()

    assert run_loop(go) == ["0", "1", "2", "3", "4", "after"]


def test_track_script_rise_and_fall(run_loop: Any, tmp_path: Path) -> None:
    from vrrpd.config import ScriptConfig

    flag = tmp_path / "ok"
    flag.write_text("")
    changes: list[tuple[str, bool, float]] = []

    async def go() -> None:
        loop = asyncio.get_running_loop()
        cfg = ScriptConfig(
            "chk", ("/usr/bin/test", "-e", str(flag)), interval=0.05, timeout=1, rise=3, fall=2
        )
        ts = TrackScript(cfg, me(), lambda n, ok: changes.append((n, ok, loop.time())), security=False)
        ts.start()

        async def changed(n: int) -> None:  # bounded polling for the n-th state change
            for _ in range(500):
                if len(changes) >= n:
                    return
                await asyncio.sleep(0.02)
            raise AssertionError(f"no state change {n} in 10 s: {changes}")

        await changed(1)
        assert [c[:2] for c in changes] == [("chk", True)] and ts.ok  # INIT -> OK on the first result
        flag.unlink()
        await changed(2)
        assert changes[-1][:2] == ("chk", False) and ts.status()["state"] == "FAIL"
        flag.write_text("")
        await changed(3)
        assert changes[-1][:2] == ("chk", True)
        assert ts.runs >= 2 + 3
        ts.stop()

    run_loop(go)


def test_track_script_refused_counts_as_failing(run_loop: Any, tmp_path: Path) -> None:
    from vrrpd.config import ScriptConfig

    s = tmp_path / "w.sh"
    s.write_text("#!/bin/sh\nexit 0\n")
    s.chmod(0o777)
    got: list[bool] = []

    async def go() -> dict[str, object]:
        ts = TrackScript(
            ScriptConfig("w", (str(s),)), RunAs(0, 0, "root"), lambda n, ok: got.append(ok), security=True
        )
        ts.start()
        return ts.status()

    st = run_loop(go)
    assert got == [False] and st["state"] == "FAIL" and "world-writable" in str(st["refused"])


def test_control_socket_roundtrip(run_loop: Any, tmp_path: Path) -> None:
    path = str(tmp_path / "ctl" / "v.sock")
    status = {
        "router_id": "lb1",
        "pid": 1,
        "uptime": 1.0,
        "loop": "x",
        "reloads": 0,
        "instances": [
            {
                "name": "VI_1",
                "state": "MASTER",
                "vrid": 51,
                "interface": "eth0",
                "mode": "multicast",
                "priority": 150,
                "effective_priority": 90,
                "master_ip": "192.0.2.21",
                "src_ip": "192.0.2.21",
                "vips": ["192.0.2.100"],
                "vips_installed": ["192.0.2.100/24"],
                "faults": [],
                "track_scripts": [{"name": "chk", "state": "FAIL", "weight": -60, "refused": None}],
                "track_interfaces": [],
                "counters": {
                    "adverts_sent": 3,
                    "adverts_received": 0,
                    "became_master": 1,
                    "released_master": 0,
                    "priority_zero_sent": 0,
                    "priority_zero_received": 0,
                    "discards": {r.value: 0 for r in wire.Reason},
                },
            }
        ],
    }

    async def go() -> dict[str, Any]:
        server = await serve_control(path, lambda: status)
        try:
            with pytest.raises(OSError, match="another vrrpd"):
                await serve_control(path, lambda: status)
            return await asyncio.get_running_loop().run_in_executor(None, query, path)
        finally:
            server.close()
            await server.wait_closed()

    got = run_loop(go)
    assert got == status
    assert os.stat(path).st_mode & 0o077 == 0
    text = format_status(got)
    assert "VI_1: MASTER" in text and "priority 150 effective 90" in text and "track_script chk: FAIL" in text


def test_stale_control_socket_is_replaced(run_loop: Any, tmp_path: Path) -> None:
    import socket

    path = str(tmp_path / "v.sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()  # a socket file nobody listens on (crashed daemon)

    async def go() -> dict[str, Any]:
        server = await serve_control(path, lambda: {"ok": 1, "from": "new daemon"})
        try:
            return await asyncio.get_running_loop().run_in_executor(None, query, path)
        finally:
            server.close()
            await server.wait_closed()

    assert run_loop(go) == {"ok": 1, "from": "new daemon"}  # the new daemon answers on the old path
    assert os.stat(path).st_mode & 0o077 == 0


def test_check_runtime_warnings(tmp_path: Path) -> None:
    cfg = parse(
        {
            "vrrp_instance": [
                {
                    "interface": "nosuchif0",
                    "virtual_router_id": 1,
                    "track_script": ["s"],
                    "notify_master": [str(tmp_path / "missing")],
                }
            ],
            "vrrp_script": {"s": {"script": ["/bin/true"]}},
        }
    )
    w = check_runtime(cfg)
    assert any("interface nosuchif0 does not exist" in x for x in w)
    assert any("notify_master" in x and "not found" in x for x in w)
    if os.getuid() == 0:
        assert any("run as root" in x for x in w)


def test_fast_cli_parse() -> None:
    assert _fast_parse(["-c", "a.toml"]) == {
        "config": "a.toml",
        "check": False,
        "loop": "uvloop",
        "log_level": "info",
    }
    assert _fast_parse(["--config=a.toml", "--check", "--loop", "asyncio", "--log-level", "debug"]) == {
        "config": "a.toml",
        "check": True,
        "loop": "asyncio",
        "log_level": "debug",
    }
    for bad in (["--help"], [], ["-c"], ["-c", "x", "--loop", "trio"], ["-c", "x", "--bogus"]):
        assert _fast_parse(bad) is None


def test_log_format_journal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:1234")
    setup_logging("info")
    h = logging.getLogger("vrrpd").handlers[0]
    rec = logging.LogRecord("vrrpd", logging.INFO, __file__, 1, "VI_1: BACKUP -> MASTER", None, None)
    assert h.format(rec) == "INFO VI_1: BACKUP -> MASTER"
    monkeypatch.delenv("JOURNAL_STREAM")
    setup_logging("info")
    line = logging.getLogger("vrrpd").handlers[0].format(rec)
    assert line.endswith("INFO VI_1: BACKUP -> MASTER") and line[:4].isdigit()


def test_daemon_imports_stay_lean() -> None:
    """An idle daemon imports neither heavy libraries nor the metrics/ctl code (loaded on first use)."""
    code = (
        "import sys, vrrpd.__main__, vrrpd.daemon, vrrpd.control, vrrpd.config, vrrpd.fsm, vrrpd.scripts\n"
        "bad = [m for m in ('scapy', 'pyroute2', 'argparse', 'shutil', 'lzma', 'bz2', 'pathlib', "
        "'vrrpd.metrics', 'vrrpd.admin', 'vrrpd.ctl', 'prometheus_client', 'json', 'tomllib', "
        "'encodings.idna', 'unicodedata') if m in sys.modules]\n"
        "print(bad)\n"
    )
    res = subprocess.run(
        [sys.executable, "-S", "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=30,
    )
    assert res.stdout.strip() == "[]", res.stdout + res.stderr
