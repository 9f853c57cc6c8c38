"""The local control socket (a unix stream socket) and the `vrrpd status` client.

Protocol: the client sends one line; the daemon answers and closes. ``status``: one JSON document.
``metrics``: the Prometheus text (format 0.0.4). ``maint NAME|all [PRIORITY]``, ``restore NAME|all``,
``priority NAME PRIORITY`` (``vrrpd ctl``): JSON, ``{"ok": true, ...}`` or ``{"error": "..."}``.
The socket path comes from ``global.control_socket`` (default ``/run/vrrpd/<router_id>.sock``), so several
daemons (one per network namespace, all sharing one hostname) do not collide.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["format_status", "query", "query_text", "serve_control", "status_main"]

CTL_VERBS = ("maint", "restore", "priority")


async def serve_control(
    path: str,
    status: Callable[[], dict[str, Any]],
    ctl: Callable[[list[str]], dict[str, Any]] | None = None,
) -> asyncio.AbstractServer:
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    if os.path.exists(path):
        # A stale socket from a crashed daemon, or a live one: refuse to steal a live daemon's socket.
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.settimeout(0.2)
            probe.connect(path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(path)
        else:
            probe.close()
            raise OSError(f"another vrrpd is serving {path}")
        finally:
            probe.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 2.0)
            cmd = line.decode(errors="replace").strip() or "status"
            words = cmd.split()
            if cmd == "metrics":  # text, no json
                from vrrpd.metrics import render

                body = render(status()).rstrip("\n")
            else:
                import json  # lazily: the idle daemon never pays for it

                if cmd == "status":
                    body = json.dumps(status(), default=str)
                elif ctl is not None and words[0] in CTL_VERBS:
                    body = json.dumps(ctl(words), default=str)
                else:
                    body = json.dumps({"error": f"unknown command {cmd[:80]!r}"})
            writer.write(body.encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    old = os.umask(0o077)  # status reveals configuration: root only
    try:
        server = await asyncio.start_unix_server(handle, path=path)
    finally:
        os.umask(old)
    return server


def query(path: str, command: str = "status", timeout: float = 3.0) -> dict[str, Any]:
    import json

    data: dict[str, Any] = json.loads(query_text(path, command, timeout))
    return data


def query_text(path: str, command: str = "status", timeout: float = 3.0) -> str:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    finally:
        s.close()
    return b"".join(chunks).decode()


def format_status(st: dict[str, Any]) -> str:
    lines = [
        f"vrrpd {st.get('router_id')} pid {st.get('pid')} up {st.get('uptime')}s "
        f"loop {st.get('loop')} reloads {st.get('reloads')}"
    ]
    for i in st.get("instances", []):
        lines.append("")
        lines.append(f"{i['name']}: {i['state']}  VRID {i['vrid']} on {i['interface']} ({i['mode']})")
        if "advert_int" in i:
            lines.append(
                f"  VRRPv{i.get('version', 2)} IPv{i.get('family', 4)}  advert_int {i['advert_int']:g}s  "
                f"master interval {i.get('master_adver_int', i['advert_int']):g}s"
            )
        lines.append(
            f"  priority {i['priority']} effective {i['effective_priority']}  "
            f"master {i['master_ip'] or '-'}  src {i['src_ip']}"
        )
        if i.get("maintenance"):
            prio = i.get("override_priority")
            lines.append(f"  MAINTENANCE (vrrpd ctl maint): priority {prio}, no preemption")
        elif i.get("override_priority"):
            lines.append(f"  priority override {i['override_priority']} (vrrpd ctl priority)")
        lines.append(f"  VIPs {' '.join(i['vips']) or '-'}  installed {' '.join(i['vips_installed']) or '-'}")
        if i.get("vips_foreign"):
            lines.append(f"  present but not added by vrrpd (never removed): {' '.join(i['vips_foreign'])}")
        if i.get("faults"):
            lines.append(f"  faults: {', '.join(i['faults'])}")
        for t in i.get("track_scripts", []):
            lines.append(
                f"  track_script {t['name']}: {t['state']} weight {t.get('weight')}"
                + (f" REFUSED: {t['refused']}" if t.get("refused") else "")
            )
        for t in i.get("track_interfaces", []):
            lines.append(f"  track_interface {t['name']}: {t['state']} weight {t['weight']}")
        for t in i.get("track_processes", []):
            pids = " ".join(str(p) for p in t.get("pids", [])) or "-"
            lines.append(f"  track_process {t['name']}: {t['state']} weight {t.get('weight')} pids {pids}")
        c = i["counters"]
        lines.append(
            f"  adverts sent {c['adverts_sent']} received {c['adverts_received']}  "
            f"became master {c['became_master']} released {c['released_master']}  "
            f"priority 0 sent {c['priority_zero_sent']} received {c['priority_zero_received']}"
        )
        d = c["discards"]
        lines.append("  discards: " + " ".join(f"{k} {v}" for k, v in d.items()))
    return "\n".join(lines)


def socket_path_of(socket_path: str | None, config_path: str | None, prog: str) -> str | None:
    """The control socket: --socket, or the one the configuration names (errors printed, None)."""
    path = socket_path
    if path is None:
        from vrrpd.config import ConfigError, load

        if config_path is None:
            print(f"{prog}: give --socket PATH or -c node.toml", file=sys.stderr)
            return None
        try:
            path = load(config_path).control_socket()
        except ConfigError as e:
            for line in e.lines():
                print(line, file=sys.stderr)
            return None
    return path


def status_main(
    socket_path: str | None, config_path: str | None, as_json: bool, prometheus: bool = False
) -> int:
    path = socket_path_of(socket_path, config_path, "vrrpd status")
    if path is None:
        return 2
    try:
        if prometheus:
            print(query_text(path, "metrics"), end="")
            return 0
        st = query(path)
    except (OSError, ValueError) as e:
        print(f"vrrpd status: cannot query {path}: {e}", file=sys.stderr)
        return 1
    if as_json:
        import json

        print(json.dumps(st, indent=2))
    else:
        print(format_status(st))
    return 0
