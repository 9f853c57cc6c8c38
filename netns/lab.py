"""Network-namespace labs: switches, hosts, processes, faults, and a teardown that always runs.

A :class:`Lab` owns everything it creates, and every name derives from its short random ``uid``:

* a *switch* is a namespace ``nl<uid>-<name>`` holding the bridge ``br0`` (no address, STP and multicast
  snooping off, promiscuous so a capture on it sees every frame);
* a *host* is a namespace ``nl<uid>-<name>`` with ``lo`` up and ``/etc/netns/<ns>/hosts`` naming every
  host of the lab, joined to switches by veth pairs created directly between the two namespaces (nothing
  ever appears in the root namespace);
* processes are started through ``ip netns exec`` (so the hosts file is bind-mounted) in a session of their
  own: the PID is the program's own and its process group can be signalled as a whole.

Teardown stops our processes by PID, SIGKILLs anything still inside our namespaces, deletes the namespaces,
the ``/etc/netns`` directories and the work directory (artifacts are copied out first when the lab is asked
to keep them). It runs from ``__exit__``, from the pytest plugin's finalizer, from ``atexit`` and a
SIGTERM/SIGHUP guard, and, if the owning process dies outright, from a small reaper process that works
from the lab's state file (see :mod:`netns.state`).
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any, TypeVar

from netns import state

log = logging.getLogger("netns")

T = TypeVar("T")

ALLOWED_NETWORKS = tuple(
    ipaddress.IPv4Network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
)
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
_IFNAME_MAX = 15


class LabError(RuntimeError):
    """Something in the lab could not be set up or torn down."""


class NetemUnavailable(LabError):
    """The kernel has no ``sch_netem``: loss and delay cannot be injected here."""


class WaitTimeout(AssertionError):
    """:func:`wait_until` ran out of time. ``last`` is the predicate's last value (or exception)."""

    def __init__(self, what: str, last: object, timeout: float) -> None:
        self.what = what
        self.last = last
        self.timeout = timeout
        super().__init__(
            f"timed out after {timeout:g}s waiting for {what or 'condition'}; last value: {last!r}"
        )


class CommandError(subprocess.CalledProcessError):
    """A command run in a namespace failed; ``str()`` includes its stderr."""

    def __str__(self) -> str:
        err = (self.stderr or "").strip() if isinstance(self.stderr, str) else ""
        return f"{super().__str__()}{': ' + err if err else ''}"


class WaitAborted(AssertionError):
    """:func:`wait_until` gave up early: its ``fail_if`` check said the condition can no longer come true
    (a process it depends on died). ``reason`` is what ``fail_if`` returned."""

    def __init__(self, what: str, reason: object) -> None:
        self.what = what
        self.reason = reason
        super().__init__(f"gave up waiting for {what or 'condition'}: {reason}")


def wait_until(
    pred: Callable[[], T],
    timeout: float,
    interval: float = 0.05,
    what: str = "",
    *,
    fail_if: Callable[[], object] | None = None,
) -> T:
    """Poll ``pred`` until it returns something truthy and return that; bounded by ``timeout`` seconds.

    An exception raised by ``pred`` counts as "not yet" and becomes the last value reported by the
    :class:`WaitTimeout` (which is chained to it), so ``wait_until(lambda: socket.create_connection(a), 5)``
    works as expected.

    ``fail_if`` is the liveness check: called before every poll, a truthy result (say, "publisher died:
    <its output>") raises :class:`WaitAborted` at once instead of a timeout much later, e.g.
    ``fail_if=lambda: None if proc.alive() else proc.output()``. Its own exceptions propagate.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    last_exc: BaseException | None = None
    while True:
        if fail_if is not None:
            reason = fail_if()
            if reason:
                raise WaitAborted(what or getattr(pred, "__name__", ""), reason) from last_exc
        try:
            value = pred()
        except Exception as exc:
            last, last_exc = exc, exc
        else:
            if value:
                return value
            last, last_exc = value, None
        if time.monotonic() >= deadline:
            raise WaitTimeout(what or getattr(pred, "__name__", ""), last, timeout) from last_exc
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def dead(*procs: Proc | None) -> str | None:
    """A ``fail_if`` for :func:`wait_until`: the first of ``procs`` that has exited, with its output."""
    for p in procs:
        if p is not None and not p.alive():
            return f"{p.name} exited with {p.returncode}:\n{_tail(p.output())}"
    return None


# --------------------------------------------------------------------------------------------------------
# processes


class Proc:
    """A process started in a namespace by :meth:`Host.start`.

    It runs in its own session, so ``pid`` is also its process-group id. :meth:`kill`, :meth:`stop` and
    :meth:`cont` act on the whole group (a crash or a freeze of the daemon *and* the children it forked, as
    a host failure would); :meth:`term` and :meth:`signal` act on the PID alone unless ``group=True``.
    """

    def __init__(self, popen: subprocess.Popen[bytes], name: str, log_path: Path, host: Node) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.name = name
        self.log_path = log_path
        self.host = host
        self.starttime = state.proc_starttime(popen.pid)
        self.pcap: Path | None = None  # set for captures

    def __repr__(self) -> str:
        return f"<Proc {self.name} pid={self.pid} on {self.host.name} rc={self._popen.returncode}>"

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def alive(self) -> bool:
        return self._popen.poll() is None

    def signal(self, sig: int, *, group: bool = False) -> None:
        if self._popen.poll() is not None:
            return  # reaped: the PID may belong to someone else now
        try:
            if group:
                os.killpg(self.pid, sig)
            else:
                os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL the process and its process group: a crash."""
        self.signal(signal.SIGKILL, group=True)

    def stop(self) -> None:
        """SIGSTOP the process group: a frozen host."""
        self.signal(signal.SIGSTOP, group=True)

    def cont(self) -> None:
        self.signal(signal.SIGCONT, group=True)

    def term(self) -> None:
        """SIGTERM the process alone: a graceful stop."""
        self.signal(signal.SIGTERM)

    def wait(self, timeout: float) -> int | None:
        try:
            return self._popen.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            return None

    def terminate(self, timeout: float = 5.0) -> int | None:
        """SIGTERM (and SIGCONT, in case it is stopped), then SIGKILL of the group after ``timeout``."""
        if not self.alive():
            self._kill_leftovers()
            return self._popen.returncode
        self.term()
        self.signal(signal.SIGCONT, group=True)
        rc = self.wait(timeout)
        if rc is None:
            self.kill()
            rc = self.wait(5.0)
        self._kill_leftovers()
        return rc

    def _kill_leftovers(self) -> None:
        # children left in the group after the leader exited (the group id stays valid while any exist)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


# --------------------------------------------------------------------------------------------------------
# namespaces


class Node:
    """What hosts and switches have in common: a namespace to run things in."""

    def __init__(self, lab: Lab, name: str, ns: str) -> None:
        self.lab = lab
        self.name = name
        self.ns = ns
        self._ipr: Any = None
        self._ipr_lock = threading.RLock()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} ns={self.ns}>"

    def exec_argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *argv]

    def run(
        self,
        argv: list[str],
        *,
        check: bool = True,
        timeout: float = 30,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` to completion in this namespace; stdout/stderr captured as text."""
        full_env = {**os.environ, **env} if env else None
        res = subprocess.run(
            self.exec_argv(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            env=full_env,
            stdin=None if input is not None else subprocess.DEVNULL,
            check=False,
        )
        if check and res.returncode != 0:
            raise CommandError(res.returncode, argv, res.stdout, res.stderr)
        return res

    def start(
        self,
        argv: list[str],
        *,
        name: str | None = None,
        env: dict[str, str] | None = None,
        ready: Callable[[], object] | None = None,
        ready_timeout: float = 15.0,
        cwd: str | None = None,
        ready_log: str | None = None,
    ) -> Proc:
        """Start ``argv`` in this namespace in a new session; stdout+stderr go to ``proc.log_path``.

        With ``ready`` (a callable) and/or ``ready_log`` (a text to find in the log), wait (bounded) until
        it is truthy; if the process exits first or the wait times out, it is stopped and :class:`LabError`
        carries the tail of its log.
        """
        if ready_log is not None:
            text, user_ready = ready_log, ready
            holder: list[Path] = []

            def log_ready() -> object:
                if not holder:
                    return False
                try:
                    found = text in holder[0].read_text(errors="replace")
                except OSError:
                    return False
                return found and (user_ready() if user_ready is not None else True)

            return self.lab._start(
                self,
                argv,
                name=name,
                env=env,
                ready=log_ready,
                ready_timeout=ready_timeout,
                cwd=cwd,
                on_start=holder.append,
            )
        return self.lab._start(
            self, argv, name=name, env=env, ready=ready, ready_timeout=ready_timeout, cwd=cwd
        )

    def sysctl(self, key: str, value: str) -> None:
        self.run(["sysctl", "-qw", f"{key}={value}"])

    @contextlib.contextmanager
    def ipr(self) -> Iterator[Any]:
        """The pyroute2 ``IPRoute`` of this namespace, opened once and reused (``with node.ipr() as ipr``).

        Opening one forks a helper into the namespace, so it is cached; a lock serialises users. Teardown
        closes it before deleting the namespace (an open netlink socket keeps a namespace alive).
        """
        with self._ipr_lock:
            if self._ipr is None:
                from pyroute2 import IPRoute

                self.lab._check_open()
                self._ipr = IPRoute(netns=self.ns, flags=0, groups=0)
            try:
                yield self._ipr
            except OSError:
                # a broken socket is not reused
                self.close_ipr()
                raise

    def close_ipr(self) -> None:
        with self._ipr_lock:
            if self._ipr is not None:
                with contextlib.suppress(Exception):
                    self._ipr.close()
                self._ipr = None

    def link_set(self, ifname: str, **kwargs: Any) -> None:
        with self.ipr() as ipr:
            idx = _lookup(ipr, ifname, self)
            ipr.link("set", index=idx, **kwargs)

    def addresses(self, ifname: str | None = None) -> list[str]:
        """IPv4 addresses as ``"a.b.c.d/len"`` on ``ifname`` (or on every interface)."""
        with self.ipr() as ipr:
            kwargs: dict[str, Any] = {"family": 2}
            if ifname is not None:
                kwargs["index"] = _lookup(ipr, ifname, self)
            return [f"{m.get('IFA_ADDRESS')}/{m['prefixlen']}" for m in ipr.get_addr(**kwargs)]

    def has_address(self, ip: str) -> bool:
        ip = ip.split("/")[0]
        return any(a.split("/")[0] == ip for a in self.addresses())

    def mac(self, ifname: str = "eth0") -> str:
        with self.ipr() as ipr:
            idx = _lookup(ipr, ifname, self)
            return str(ipr.get_links(idx)[0].get("IFLA_ADDRESS"))

    def link_down(self, ifname: str = "eth0") -> None:
        self.link_set(ifname, state="down")

    def link_up(self, ifname: str = "eth0") -> None:
        self.link_set(ifname, state="up")

    def link_is_up(self, ifname: str = "eth0") -> bool:
        with self.ipr() as ipr:
            idx = _lookup(ipr, ifname, self)
            flags = int(ipr.get_links(idx)[0]["flags"])
            return bool(flags & 1)

    def netem(self, ifname: str, spec: str) -> None:
        """Apply ``tc qdisc replace dev IFNAME root netem SPEC`` (e.g. ``"loss 10%"``, ``"delay 50ms"``).

        An empty ``spec`` removes the qdisc. Raises :class:`NetemUnavailable` when the kernel lacks netem.
        """
        if not spec:
            self.run(["tc", "qdisc", "del", "dev", ifname, "root"], check=False)
            return
        res = self.run(["tc", "qdisc", "replace", "dev", ifname, "root", "netem", *spec.split()], check=False)
        if res.returncode != 0:
            err = res.stderr.strip()
            if "unknown" in err.lower() or "not supported" in err.lower() or "No such file" in err:
                raise NetemUnavailable(f"netem is not available in this kernel: {err}")
            raise CommandError(
                res.returncode, ["tc", "qdisc", "replace", ifname, spec], res.stdout, res.stderr
            )


def _lookup(ipr: Any, ifname: str, node: Node) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise LabError(f"no interface {ifname!r} in {node.name} ({node.ns})")
    return int(found[0])


class Switch(Node):
    """A namespace holding the bridge ``br0``."""

    bridge = "br0"

    def __init__(self, lab: Lab, name: str, ns: str) -> None:
        super().__init__(lab, name, ns)
        self.ports: dict[str, str] = {}  # port ifname in this namespace -> "host/ifname"


class Host(Node):
    """A namespace standing for one machine."""

    def __init__(self, lab: Lab, name: str, ns: str) -> None:
        super().__init__(lab, name, ns)
        self.links: dict[str, tuple[Switch, str, list[str]]] = {}  # ifname -> (switch, port, addrs)

    @property
    def ip(self) -> str:
        """The first address of the host's first link (without prefix length)."""
        for _sw, _port, addrs in self.links.values():
            if addrs:
                return addrs[0].split("/")[0]
        raise LabError(f"host {self.name} has no address")


# --------------------------------------------------------------------------------------------------------
# the lab

_LIVE: weakref.WeakSet[Lab] = weakref.WeakSet()
_GUARD_LOCK = threading.Lock()
_GUARD_INSTALLED = False


def _teardown_all() -> None:
    for lab in list(_LIVE):
        if lab._owner_pid != os.getpid():
            continue  # a forked child (pyroute2 forks to open namespace sockets) must not tear down
        try:
            lab.teardown()
        except Exception as exc:  # pragma: no cover - last-resort path
            print(f"netns: teardown of lab {lab.uid} failed: {exc}", file=sys.stderr)


_GUARD_PID = 0


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM/SIGHUP into an exception so finalizers and atexit run. A forked child inherits this
    # handler (pyroute2 forks and SIGTERMs helpers to open namespace sockets): it must just die.
    if os.getpid() != _GUARD_PID:
        os._exit(128 + signum)
    raise SystemExit(128 + signum)


def _install_guard() -> None:
    global _GUARD_INSTALLED, _GUARD_PID
    with _GUARD_LOCK:
        if _GUARD_INSTALLED and os.getpid() == _GUARD_PID:
            return
        _GUARD_INSTALLED = True
        _GUARD_PID = os.getpid()
        atexit.register(_teardown_all)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGHUP):
                with contextlib.suppress(ValueError, OSError):
                    if signal.getsignal(sig) == signal.SIG_DFL:
                        signal.signal(sig, _on_signal)


def _check_address(addr: str) -> ipaddress.IPv4Interface:
    iface = ipaddress.IPv4Interface(addr if "/" in addr else f"{addr}/24")
    if not any(iface.ip in net for net in ALLOWED_NETWORKS):
        raise ValueError(
            f"{addr}: lab addresses must come from 192.0.2.0/24, 198.51.100.0/24 or 203.0.113.0/24"
        )
    return iface


class Lab:
    """A set of namespaces, links and processes torn down as one. Use as a context manager."""

    def __init__(self, tag: str = "lab", artifacts: Path | None = None, *, reaper: bool = True) -> None:
        self.uid = secrets.token_hex(3)
        self.tag = re.sub(r"[^A-Za-z0-9_.-]+", "-", tag)[:60] or "lab"
        self.artifacts = artifacts
        self.keep_artifacts = False
        self.hosts: dict[str, Host] = {}
        self.switches: dict[str, Switch] = {}
        self.procs: list[Proc] = []
        self.extra_dirs: list[str] = []  # temp dirs of helpers (RabbitMQ data) removed at teardown
        self.workdir = Path(tempfile.mkdtemp(prefix=f"netns-{self.uid}-"))
        self.teardown_errors: list[str] = []
        self._namespaces: list[str] = []
        self._etc_dirs: list[str] = []
        self._names: dict[str, int] = {}
        self._closed = False
        self._detached = False
        self._lock = threading.RLock()
        self._owner_pid = os.getpid()
        self._reaper: subprocess.Popen[bytes] | None = None
        self._save()
        _install_guard()
        _LIVE.add(self)
        if reaper:
            self._reaper = subprocess.Popen(
                [sys.executable, "-m", "netns._reaper", str(state.state_path(self.uid))],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                cwd="/",
                env={**os.environ, "PYTHONPATH": _package_root()},
            )

    def __repr__(self) -> str:
        return f"<Lab {self.tag} uid={self.uid} hosts={sorted(self.hosts)}>"

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            self.keep_artifacts = True
        try:
            self.teardown()
        except LabError:
            if exc is None:
                raise
            log.exception("lab teardown failed while handling %r", exc)

    # ---- bookkeeping ---------------------------------------------------------------------------------

    def _record(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "tag": self.tag,
            "owner_pid": os.getpid(),
            "detached": self._detached,
            "created": time.time(),
            "namespaces": list(self._namespaces),
            "etc_dirs": list(self._etc_dirs),
            "workdir": str(self.workdir),
            "extra_dirs": list(self.extra_dirs),
            "hosts": {
                h.name: {
                    "ns": h.ns,
                    "links": {i: {"switch": s.name, "addrs": a} for i, (s, _p, a) in h.links.items()},
                }
                for h in self.hosts.values()
            },
            "switches": {s.name: s.ns for s in self.switches.values()},
            "procs": [
                {
                    "pid": p.pid,
                    "starttime": p.starttime,
                    "name": p.name,
                    "host": p.host.name,
                    "log": str(p.log_path),
                }
                for p in self.procs
                if p.returncode is None
            ],
        }

    def _save(self) -> None:
        with self._lock:
            if not self._closed:
                state.write_state(self.uid, self._record())

    def _check_open(self) -> None:
        if self._closed:
            raise LabError(f"lab {self.uid} is torn down")

    def _ns_name(self, name: str) -> str:
        if not _NAME_RE.match(name):
            raise ValueError(f"bad lab node name {name!r}: lower-case letters, digits, '-', at most 20")
        if name in self.hosts or name in self.switches:
            raise ValueError(f"lab node {name!r} exists already")
        return f"nl{self.uid}-{name}"

    def _create_ns(self, ns: str) -> None:
        from pyroute2 import netns as p2netns

        p2netns.create(ns)
        self._namespaces.append(ns)
        self._save()

    def register_dir(self, path: str | Path) -> None:
        """Have teardown remove ``path`` (a directory a helper created for this lab)."""
        self.extra_dirs.append(str(path))
        self._save()

    # ---- topology ------------------------------------------------------------------------------------

    def switch(self, name: str = "sw") -> Switch:
        self._check_open()
        ns = self._ns_name(name)
        self._create_ns(ns)
        sw = Switch(self, name, ns)
        self.switches[name] = sw
        with sw.ipr() as ipr:
            ipr.link("set", index=_lookup(ipr, "lo", sw), state="up")
            ipr.link(
                "add",
                ifname=Switch.bridge,
                kind="bridge",
                br_stp_state=0,
                br_forward_delay=0,
                br_mcast_snooping=0,
            )
            idx = _lookup(ipr, Switch.bridge, sw)
            ipr.link("set", index=idx, state="up")
        # no IPv6 chatter (router solicitations, DAD) in captures
        sw.sysctl("net.ipv6.conf.all.disable_ipv6", "1")
        self._save()
        return sw

    def host(self, name: str, *, sysctls: dict[str, str] | None = None) -> Host:
        self._check_open()
        ns = self._ns_name(name)
        etc = state.ETC_NETNS / ns
        etc.mkdir(parents=True, exist_ok=True)
        self._etc_dirs.append(str(etc))
        (etc / "hosts").write_text("127.0.0.1\tlocalhost\n")
        self._create_ns(ns)
        h = Host(self, name, ns)
        self.hosts[name] = h
        with h.ipr() as ipr:
            ipr.link("set", index=_lookup(ipr, "lo", h), state="up")
        all_sysctls = {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}
        all_sysctls.update(sysctls or {})
        h.run(["sysctl", "-qw", *(f"{k}={v}" for k, v in all_sysctls.items())])
        self._write_hosts_files()
        self._save()
        return h

    def link(self, host: Host, switch: Switch, addrs: str | list[str], ifname: str = "eth0") -> None:
        """Join ``host`` to ``switch``: veth ``ifname`` in the host (addresses added, up), peer in br0."""
        self._check_open()
        addr_list = [addrs] if isinstance(addrs, str) else list(addrs)
        ifaces = [_check_address(a) for a in addr_list]
        if len(ifname) > _IFNAME_MAX or ifname in host.links:
            raise ValueError(f"bad or duplicate interface name {ifname!r} on {host.name}")
        port = self._port_name(switch, host, ifname)
        with host.ipr() as ipr:
            ipr.link("add", ifname=ifname, kind="veth", peer={"ifname": port, "net_ns_fd": switch.ns})
            idx = _lookup(ipr, ifname, host)
            for iface in ifaces:
                ipr.addr("add", index=idx, address=str(iface.ip), prefixlen=iface.network.prefixlen)
            ipr.link("set", index=idx, state="up")
        with switch.ipr() as ipr:
            pidx = _lookup(ipr, port, switch)
            bidx = _lookup(ipr, Switch.bridge, switch)
            ipr.link("set", index=pidx, master=bidx)
            ipr.link("set", index=pidx, state="up")
        switch.ports[port] = f"{host.name}/{ifname}"
        host.links[ifname] = (switch, port, [str(i) for i in ifaces])
        self._write_hosts_files()
        self._save()

    def _port_name(self, switch: Switch, host: Host, ifname: str) -> str:
        base = f"{host.name}-{ifname}"[:_IFNAME_MAX]
        name, n = base, 1
        while name in switch.ports:
            suffix = f"-{n}"
            name = base[: _IFNAME_MAX - len(suffix)] + suffix
            n += 1
        return name

    def _write_hosts_files(self) -> None:
        lines = ["127.0.0.1\tlocalhost"]
        for h in self.hosts.values():
            for _sw, _port, addrs in h.links.values():
                if addrs:
                    lines.append(f"{addrs[0].split('/')[0]}\t{h.name}")
                    break
        text = "\n".join(lines) + "\n"
        for h in self.hosts.values():
            # written in place: a bind mount pins the inode, so running processes see the update
            with open(state.ETC_NETNS / h.ns / "hosts", "w") as f:
                f.write(text)

    def _ports_of(self, host: Host, switch: Switch | None) -> list[tuple[Switch, str]]:
        out = [(sw, port) for sw, port, _a in host.links.values() if switch is None or sw is switch]
        if not out:
            raise LabError(f"{host.name} has no link{' to ' + switch.name if switch else ''}")
        return out

    def partition(self, host: Host, switch: Switch | None = None) -> None:
        """Cut ``host`` off ``switch`` (default: every switch it is linked to).

        The host's switch port is taken out of the bridge, not set down: the host keeps carrier and sees no
        link event, exactly as when a cable further away is cut. Use :meth:`Host.link_down` for a link
        failure the host can see.
        """
        for sw, port in self._ports_of(host, switch):
            with sw.ipr() as ipr:
                ipr.link("set", index=_lookup(ipr, port, sw), master=0)

    def heal(self, host: Host, switch: Switch | None = None) -> None:
        for sw, port in self._ports_of(host, switch):
            with sw.ipr() as ipr:
                bidx = _lookup(ipr, Switch.bridge, sw)
                ipr.link("set", index=_lookup(ipr, port, sw), master=bidx)
                ipr.link("set", index=_lookup(ipr, port, sw), state="up")

    def is_partitioned(self, host: Host, switch: Switch | None = None) -> bool:
        for sw, port in self._ports_of(host, switch):
            with sw.ipr() as ipr:
                link = ipr.get_links(_lookup(ipr, port, sw))[0]
                if not link.get("IFLA_MASTER"):
                    return True
        return False

    def capture(self, switch: Switch, name: str = "bridge", filter: str = "") -> Proc:
        """tcpdump on ``switch``'s bridge into ``<workdir>/<name>.pcap`` (kept for a failing test)."""
        pcap = self.workdir / f"{name}.pcap"
        argv = ["tcpdump", "-i", Switch.bridge, "-n", "-U", "-Z", "root", "-s", "256", "-w", str(pcap)]
        if filter:
            argv += filter.split()
        proc = switch.start(argv, name=f"tcpdump-{name}")
        wait_until(lambda: "listening on" in proc.output() or not proc.alive(), 30, what="tcpdump listening")
        if not proc.alive():
            raise LabError(f"tcpdump failed: {proc.output()[-500:]}")
        proc.pcap = pcap
        return proc

    # ---- processes -----------------------------------------------------------------------------------

    def _unique(self, node: Node, name: str) -> str:
        key = f"{node.name}.{name}"
        n = self._names.get(key, 0)
        self._names[key] = n + 1
        return name if n == 0 else f"{name}-{n}"

    def _start(
        self,
        node: Node,
        argv: list[str],
        *,
        name: str | None,
        env: dict[str, str] | None,
        ready: Callable[[], object] | None,
        ready_timeout: float,
        cwd: str | None,
        on_start: Callable[[Path], object] | None = None,
    ) -> Proc:
        self._check_open()
        pname = self._unique(node, re.sub(r"[^A-Za-z0-9_.-]", "_", name or Path(argv[0]).name))
        log_path = self.workdir / f"{node.name}.{pname}.log"
        full_env = {**os.environ, **env} if env else None
        with open(log_path, "ab") as logf, self._lock:
            popen = subprocess.Popen(
                node.exec_argv(argv),
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=full_env,
                cwd=cwd,
            )
            proc = Proc(popen, pname, log_path, node)
            self.procs.append(proc)
            self._save()
        if on_start is not None:
            on_start(log_path)
        if ready is not None:
            try:
                wait_until(
                    ready,
                    ready_timeout,
                    what=f"{pname} on {node.name} ready",
                    fail_if=lambda: not proc.alive(),
                )
            except WaitAborted:
                raise LabError(
                    f"{pname} on {node.name} exited with {proc.returncode} before it was ready:\n"
                    + _tail(proc.output())
                ) from None
            except WaitTimeout as exc:
                proc.terminate(2.0)
                raise LabError(f"{exc}\n{pname} log:\n{_tail(proc.output())}") from exc
        return proc

    def running(self) -> list[Proc]:
        return [p for p in self.procs if p.alive()]

    # ---- teardown ------------------------------------------------------------------------------------

    def detach(self) -> None:
        """Leave the lab running after this process exits (``python -m netns up``); ``down`` cleans it."""
        self._detached = True
        self._save()
        _LIVE.discard(self)
        if self._reaper is not None and self._reaper.stdin is not None:
            with contextlib.suppress(OSError):
                self._reaper.stdin.write(b"detach")
                self._reaper.stdin.close()
            self._reaper.wait(5)
            self._reaper = None
        self._closed = True

    def collect(self, dest: Path) -> Path:
        """Copy logs and captures of the work directory to ``dest`` (emptied first)."""
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True, exist_ok=True)
        for f in self.workdir.iterdir():
            if f.is_file() and f.suffix in (".log", ".pcap", ".json", ".toml", ".txt", ".conf"):
                shutil.copy2(f, dest / f.name)
        return dest

    def teardown(self) -> None:
        """Stop everything and delete everything. Idempotent; raises :class:`LabError` if a step failed."""
        if os.getpid() != self._owner_pid:
            return  # never from a forked child
        with self._lock:
            if self._closed:
                return
            self._closed = True
        _LIVE.discard(self)
        errors: list[str] = []
        # 1. our processes, gracefully (TERM + CONT to each group), then SIGKILL
        live = [p for p in self.procs if p.alive()]
        for p in live:
            p.signal(signal.SIGTERM, group=True)
            p.signal(signal.SIGCONT, group=True)
        deadline = time.monotonic() + 1.5
        for p in live:
            if p.wait(deadline - time.monotonic()) is None:
                p.kill()
        for p in self.procs:
            if p.wait(3.0) is None:
                errors.append(f"process {p.name} (pid {p.pid}) survived SIGKILL")
            p._kill_leftovers()
        for node in self.iter_nodes():
            node.close_ipr()
        # 2. artifacts out before the work directory goes
        if self.keep_artifacts and self.artifacts is not None:
            try:
                self.collect(self.artifacts)
            except OSError as exc:
                errors.append(f"keeping artifacts: {exc}")
        # 3. stragglers in our namespaces, namespaces, /etc/netns, work dir
        errors += state.cleanup(self._record())
        leftovers = [ns for ns in self._namespaces if (state.NETNS_RUN / ns).exists()]
        if leftovers:
            errors.append(f"namespaces left: {leftovers}")
        state.state_path(self.uid).unlink(missing_ok=True)
        if self._reaper is not None:
            with contextlib.suppress(OSError):
                if self._reaper.stdin is not None:
                    self._reaper.stdin.close()
            if self._reaper.poll() is None:
                try:
                    self._reaper.wait(5)
                except subprocess.TimeoutExpired:
                    self._reaper.kill()
                    self._reaper.wait(5)
            self._reaper = None
        self.teardown_errors = errors
        if errors:
            raise LabError("; ".join(errors))

    # ---- inspection ----------------------------------------------------------------------------------

    def namespaces(self) -> list[str]:
        return list(self._namespaces)

    def iter_nodes(self) -> Iterator[Node]:
        yield from self.switches.values()
        yield from self.hosts.values()


def _tail(text: str, n: int = 30) -> str:
    return "\n".join(text.splitlines()[-n:])


def _package_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


def log_stream(proc: Proc) -> IO[str]:
    """Open a process's log for reading (the caller closes it)."""
    return open(proc.log_path, errors="replace")


def leftovers(uid: str) -> dict[str, list[str]]:
    """What a lab with ``uid`` left behind: namespaces, /etc/netns dirs, processes, temp dirs, state file."""
    out: dict[str, list[str]] = {"namespaces": [], "etc": [], "procs": [], "tmp": [], "state": []}
    prefix = f"nl{uid}-"
    if state.NETNS_RUN.is_dir():
        out["namespaces"] = sorted(n for n in os.listdir(state.NETNS_RUN) if n.startswith(prefix))
    if state.ETC_NETNS.is_dir():
        out["etc"] = sorted(n for n in os.listdir(state.ETC_NETNS) if n.startswith(prefix))
    tmp = Path(tempfile.gettempdir())
    out["tmp"] = sorted(p.name for p in tmp.glob(f"*{uid}*"))
    for ns in out["namespaces"]:
        out["procs"] += [str(p) for p in state.pids_in_netns(ns)]
    if state.state_path(uid).exists():
        out["state"] = [str(state.state_path(uid))]
    return out
