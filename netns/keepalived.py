"""Debian's keepalived as a lab process: the interop peer of vrrpd's tests and the baseline of the benchmarks.

keepalived's default pid files are not per namespace (a second instance in another namespace exits with
"daemon is already running"), so every instance gets its own (`-p`, `-r`); `-P` runs VRRP only. Killing only
keepalived's parent is not a crash: its VRRP child sends priority 0 and removes the VIP. A crash is SIGSTOP of
the parent, SIGKILL of the child, SIGKILL of the parent.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from netns.lab import Host, Proc


def argv(conf: Path, pidfile: Path, vrrp_pidfile: Path) -> list[str]:
    """keepalived in the foreground, logging to the console, VRRP only, with its own pid files."""
    return ["keepalived", "-n", "-l", "-D", "-P", "-f", str(conf),
            "-p", str(pidfile), "-r", str(vrrp_pidfile)]  # fmt: skip


def instance_conf(
    router_id: str,
    *,
    priority: int,
    vips: list[str],
    vrid: int = 51,
    interface: str = "eth0",
    advert_int: int = 1,
    auth_pass: str | None = None,
    script_security: bool = False,
) -> str:
    """A keepalived.conf with one `vrrp_instance VI_1` (state BACKUP, as keepalived users are told to)."""
    auth = f"  authentication {{\n    auth_type PASS\n    auth_pass {auth_pass}\n  }}\n" if auth_pass else ""
    security = "  enable_script_security\n" if script_security else ""
    addrs = "".join(f"    {v}\n" for v in vips)
    return (
        f"global_defs {{\n  router_id {router_id}\n{security}}}\n"
        f"vrrp_instance VI_1 {{\n  state BACKUP\n  interface {interface}\n  virtual_router_id {vrid}\n"
        f"  priority {priority}\n  advert_int {advert_int}\n{auth}"
        f"  virtual_ipaddress {{\n{addrs}  }}\n}}\n"
    )


class Keepalived:
    """One keepalived on a lab host, with its files under `workdir`."""

    def __init__(self, host: Host, conf_text: str, workdir: Path) -> None:
        self.host = host
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "keepalived.conf"
        self.pidfile = workdir / "keepalived.pid"
        self.vrrp_pidfile = workdir / "vrrp.pid"
        self.conf.write_text(conf_text)
        self.proc: Proc | None = None

    def start(self, ready_timeout: float = 15.0) -> Keepalived:
        """Start and wait until the VRRP child has written its pid file."""
        for p in (self.pidfile, self.vrrp_pidfile):
            p.unlink(missing_ok=True)
        self.proc = self.host.start(
            argv(self.conf, self.pidfile, self.vrrp_pidfile),
            name="keepalived",
            ready=self.child_pid,
            ready_timeout=ready_timeout,
        )
        return self

    def child_pid(self) -> int | None:
        try:
            return int(self.vrrp_pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def _parent(self) -> Proc:
        if self.proc is None:
            raise RuntimeError("keepalived was not started")
        return self.proc

    def pids(self) -> list[int]:
        child = self.child_pid()
        return [self._parent().pid] + ([child] if child else [])

    def crash(self) -> None:
        """A real crash: no priority-0 advert, the VIP stays configured."""
        parent, child = self._parent(), self.child_pid()
        parent.stop()
        if child:
            os.kill(child, signal.SIGKILL)
        parent.kill()
        parent.wait(5)

    def stop(self) -> None:
        """Graceful stop (SIGTERM): the child sends priority 0 and removes the VIP."""
        parent = self._parent()
        parent.term()
        parent.wait(5)

    def freeze(self) -> None:
        parent, child = self._parent(), self.child_pid()
        parent.stop()
        if child:
            os.kill(child, signal.SIGSTOP)

    def thaw(self) -> None:
        parent, child = self._parent(), self.child_pid()
        if child:
            os.kill(child, signal.SIGCONT)
        parent.cont()
