"""A 3-node RabbitMQ cluster (Debian's rabbitmq-server 3.10) in lab namespaces.

What lab-facts.md taught, applied:

* ``/usr/lib/rabbitmq/bin/*`` are called directly as root (not the Debian wrappers that switch to user
  ``rabbitmq``), with a ``HOME`` of our own holding one shared ``.erlang.cookie`` (mode 400);
* each namespace has its own port 4369, so each node gets its own ``epmd`` started in the foreground by us
  (PID kept); otherwise ``erl`` would spawn a double-forked ``epmd -daemon``;
* ``RABBITMQ_NODENAME=rabbit@rmqN`` works because ``rmqN`` resolves through ``/etc/netns/<ns>/hosts``;
* ``loopback_users.guest = false``, an absolute memory cap per node;
* the management plugin (Debian's package ships it) on every node with ``management=True``, or turned on
  in a running cluster by :meth:`RabbitCluster.enable_management` (what the stack does with the session's
  cluster): tcplb's ``rabbitmq`` check reads the node's state and alarms from its HTTP API on port 15672.
  The cluster then has two more users: :data:`PROBE_USER` (the check's AMQP probe: vhost access, no
  rights, no tags) and :data:`MGMT_USER` (the check's management API, tagged ``administrator`` so that
  tcplb's rebalancing may close connections through the API);
* per-node data and log directories in a temp dir removed at teardown.

The nodes boot in parallel (10-15 s on two cores), then rmq2 and rmq3 join rmq1 (``join_cluster``). A node
can be killed (SIGKILL), stopped gracefully, and restarted with its data, rejoining on its own.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from netns.lab import Host, Lab, LabError, Proc, Switch, dead, wait_until

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
AMQP_PORT = 5672
MGMT_PORT = 15672
PROBE_USER, PROBE_PASSWORD = "probe", "probe-pw"  # the rabbitmq check's AMQP probe
MGMT_USER, MGMT_PASSWORD = "mon", "mon-pw"  # the rabbitmq check's management API (and rebalancing)
COOKIE = "NETNSLABCOOKIEFORRABBITMQCLUSTER"
HA_POLICY = '{"ha-mode":"all","ha-sync-mode":"automatic"}'
HA_PATTERN = r"^ha\."

CONFIG = """\
loopback_users.guest = false
listeners.tcp.default = {port}
vm_memory_high_watermark.absolute = {memory}
disk_free_limit.absolute = 50MB
cluster_partition_handling = pause_minority
log.console = true
log.console.level = info
log.file = false
heartbeat = 10
"""


def available() -> bool:
    return (RABBIT_BIN / "rabbitmq-server").exists() and shutil.which("epmd") is not None


@dataclass
class RabbitNode:
    """One RabbitMQ node: its host, data directory and processes."""

    cluster: RabbitCluster
    host: Host
    base: Path
    epmd: Proc | None = None
    server: Proc | None = None
    restarts: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)
    frozen: bool = False
    drained: bool = False
    watermark_lowered: bool = False

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def nodename(self) -> str:
        return f"rabbit@{self.host.name}"

    @property
    def ip(self) -> str:
        return self.host.ip

    def env(self) -> dict[str, str]:
        return {
            "HOME": str(self.cluster.home),
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_CONF_ENV_FILE": "/dev/null",
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_LOGS": "-",
            "RABBITMQ_PID_FILE": str(self.base / "rabbit.pid"),
            "RABBITMQ_PLUGINS_EXPAND_DIR": str(self.base / "plugins-expand"),
            "RUNNING_UNDER_SYSTEMD": "1",  # the script exec()s erl: our PID is the VM's
            **self.extra_env,
        }

    def prepare(self) -> None:
        for sub in ("mnesia", "log", "plugins-expand"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        (self.base / "rabbitmq.conf").write_text(CONFIG.format(port=AMQP_PORT, memory=self.cluster.memory))
        (self.base / "advanced.config").write_text("[].\n")
        plugins = "[rabbitmq_management]" if self.cluster.management else "[]"
        (self.base / "enabled_plugins").write_text(plugins + ".\n")

    def start_epmd(self) -> None:
        if self.epmd is not None and self.epmd.alive():
            return
        self.epmd = self.host.start(
            ["epmd"], name="epmd", ready=lambda: self._listening(4369), ready_timeout=10
        )

    def start(self, *, wait: bool = True, timeout: float = 60.0) -> None:
        """Start the node (epmd first); with ``wait``, until it accepts AMQP connections."""
        self.start_epmd()
        if self.server is not None and self.server.alive():
            raise LabError(f"{self.nodename} is running already")
        self.server = self.host.start(
            [str(RABBIT_BIN / "rabbitmq-server")],
            name="rabbitmq" if self.restarts == 0 else f"rabbitmq-r{self.restarts}",
            env=self.env(),
        )
        self.restarts += 1
        if wait:
            self.wait_ready(timeout)

    def _listening(self, port: int) -> bool:
        out = self.host.run(["ss", "-Hltn"], check=False).stdout
        return any(line.split()[3].endswith(f":{port}") for line in out.splitlines() if len(line.split()) > 3)

    def accepts_amqp(self) -> bool:
        return self._listening(AMQP_PORT)

    def serves_management(self) -> bool:
        return self._listening(MGMT_PORT)

    def wait_ready(self, timeout: float = 60.0) -> None:
        server = self.server
        if server is None:
            raise LabError(f"{self.nodename} was never started")

        def ready() -> bool:  # the management listener starts after AMQP's: wait for both
            return self.accepts_amqp() and (not self.cluster.management or self.serves_management())

        try:  # a node that exited fails the wait at once
            wait_until(
                ready,
                timeout,
                interval=0.2,
                what=f"{self.nodename} accepting AMQP",
                fail_if=lambda: dead(server),
            )
        except LabError:
            raise
        except Exception as exc:
            raise LabError(f"{exc}\n{server.output()[-3000:]}") from exc

    def ctl(self, *args: str, timeout: float = 60, check: bool = True, tool: str = "rabbitmqctl") -> str:
        """Run a RabbitMQ CLI tool against this node, inside its namespace (where its epmd is)."""
        res = self.host.run(
            [str(RABBIT_BIN / tool), "-n", self.nodename, *args],
            env=self.env(),
            timeout=timeout,
            check=check,
        )
        return res.stdout

    def kill(self) -> None:
        """SIGKILL the node's VM (a crash); epmd stays, as it would on a host whose broker crashed."""
        if self.server is not None:
            self.server.kill()
            self.server.wait(10)

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop (SIGTERM: RabbitMQ shuts down cleanly)."""
        if self.server is not None and self.server.alive():
            self.server.term()
            if self.server.wait(timeout) is None:
                self.server.kill()
                self.server.wait(5)

    def freeze(self) -> None:
        """SIGSTOP the node's Erlang VM: its ports still accept TCP (kernel backlog), nothing answers."""
        if self.server is not None:
            self.server.stop()
            self.frozen = True

    def thaw(self) -> None:
        if self.server is not None and self.frozen:
            self.server.cont()
        self.frozen = False

    def drain(self, timeout: float = 90.0) -> None:
        """``rabbitmq-upgrade drain``: maintenance mode (3.10 suspends the node's listeners, 5672 and 15672,
        and closes its client connections with 320 CONNECTION_FORCED). It can exit 69 although the node is
        drained (rabbitmq-server#3369), so its exit status is not checked."""
        self.drained = True
        self.ctl("drain", tool="rabbitmq-upgrade", check=False, timeout=timeout)

    def revive(self, timeout: float = 90.0) -> None:
        self.ctl("revive", tool="rabbitmq-upgrade", check=False, timeout=timeout)
        self.drained = False

    def lower_watermark(self) -> None:
        """A memory alarm on this node (cluster-wide effect: every publisher is blocked)."""
        self.watermark_lowered = True
        self.ctl("set_vm_memory_high_watermark", "0.000001")

    def restore_watermark(self) -> None:
        """Back to the configured absolute limit: the alarm clears."""
        limit = self.cluster.memory
        units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
        n = next((int(limit[: -len(u)]) * m for u, m in units.items() if limit.endswith(u)), None)
        self.ctl("set_vm_memory_high_watermark", "absolute", str(n if n is not None else limit))
        self.watermark_lowered = False

    def restart(self, *, wait: bool = True, timeout: float = 60.0) -> None:
        self.stop()
        self.start(wait=wait, timeout=timeout)

    def alive(self) -> bool:
        return self.server is not None and self.server.alive()


class RabbitCluster:
    """Three (or ``n``) RabbitMQ nodes ``rmq1..N`` on ``switch``, addresses ``192.0.2.11..``."""

    def __init__(
        self,
        lab: Lab,
        switch: Switch,
        *,
        n: int = 3,
        first_ip: int = 11,
        subnet: str = "192.0.2",
        memory: str = "256MiB",
        prefix: str = "rmq",
        management: bool = False,
    ) -> None:
        self.lab = lab
        self.switch = switch
        self.memory = memory
        self.management = management
        self.proxy_protocol = False
        self.dir = Path(tempfile.mkdtemp(prefix=f"netns-{lab.uid}-rabbitmq-"))
        lab.register_dir(self.dir)
        self.home = self.dir / "home"
        self.home.mkdir()
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(COOKIE)
        os.chmod(cookie, 0o400)
        os.chmod(self.home, 0o700)
        self.nodes: list[RabbitNode] = []
        for i in range(1, n + 1):
            host = lab.host(f"{prefix}{i}")
            lab.link(host, switch, f"{subnet}.{first_ip + i - 1}/24")
            node = RabbitNode(self, host, self.dir / host.name)
            node.prepare()
            self.nodes.append(node)
        self.boot_seconds: float | None = None

    def __getitem__(self, name: str) -> RabbitNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    @property
    def addresses(self) -> list[str]:
        return [n.ip for n in self.nodes]

    def start(self, timeout: float = 120.0) -> float:
        """Boot every node in parallel, cluster them, and verify; returns the seconds it took."""
        t0 = time.monotonic()
        for node in self.nodes:
            node.start_epmd()
        for node in self.nodes:
            node.start(wait=False)
        errors: list[BaseException] = []

        def wait(node: RabbitNode) -> None:
            try:
                node.wait_ready(timeout)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=wait, args=(n,)) for n in self.nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise LabError(f"RabbitMQ boot failed: {errors[0]}") from errors[0]
        seed = self.nodes[0]
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("join_cluster", seed.nodename)
            node.ctl("start_app")
        self.wait_running(len(self.nodes), timeout=60)
        if self.management:
            self.add_check_users()
        self.boot_seconds = time.monotonic() - t0
        return self.boot_seconds

    def enable_management(self, timeout: float = 60.0) -> None:
        """Turn the management plugin on in the running cluster (``rabbitmq-plugins enable``, online; the
        enabled-plugins file keeps it on across restarts) and add the check's users. Idempotent."""
        if self.management:
            return
        if not any(n.alive() for n in self.nodes):  # not started yet: start() adds the users
            self.management = True
            for node in self.nodes:
                node.prepare()
            return
        for node in self.nodes:
            node.ctl("enable", "rabbitmq_management", tool="rabbitmq-plugins", timeout=timeout)
        for node in self.nodes:
            wait_until(node.serves_management, timeout, interval=0.5, what=f"{node.nodename} on {MGMT_PORT}")
        self.management = True
        self.add_check_users()

    def add_check_users(self) -> None:
        """The probe user (vhost access, no rights) and the management user of tcplb's rabbitmq check."""
        seed = self.nodes[0]
        seed.ctl("add_user", PROBE_USER, PROBE_PASSWORD)
        seed.ctl("set_permissions", "-p", "/", PROBE_USER, "^$", "^$", "^$")
        seed.ctl("add_user", MGMT_USER, MGMT_PASSWORD)
        seed.ctl("set_user_tags", MGMT_USER, "administrator")
        seed.ctl("set_permissions", "-p", "/", MGMT_USER, ".*", ".*", ".*")

    def set_proxy_protocol(self, on: bool) -> None:
        """RabbitMQ's ``proxy_protocol`` at run time on every running node: the reader reads the application
        variable for each new connection (``rabbit_reader:init/3`` in 3.10), so no restart is needed.
        While on, every connection to 5672 must start with a PROXY header (direct clients fail)."""
        expr = f"application:set_env(rabbit, proxy_protocol, {'true' if on else 'false'})."
        self.proxy_protocol = on
        for node in self.nodes:
            if node.alive():
                node.ctl("eval", expr, timeout=30)

    def undo_faults(self) -> None:
        """Thaw, revive, restore the watermark and turn PROXY off wherever a scenario left them."""
        for node in self.nodes:
            node.thaw()
        for node in self.nodes:
            if node.alive() and node.drained:
                node.revive()
            if node.alive() and node.watermark_lowered:
                node.restore_watermark()
        if self.proxy_protocol:
            self.set_proxy_protocol(False)

    def list_connections(self, *fields: str) -> list[dict[str, str]]:
        """``rabbitmqctl list_connections FIELDS`` (cluster-wide) as dicts of strings."""
        node = next(n for n in self.nodes if n.alive())
        out = node.ctl("list_connections", *fields, "--formatter", "json", "--quiet", timeout=30)
        data = json.loads(out) if out.strip() else []
        return [{k: _text(v) for k, v in row.items()} for row in data] if isinstance(data, list) else []

    def running_nodes(self, via: RabbitNode | None = None) -> list[str]:
        """``running_nodes`` as one live node sees it."""
        candidates = [via] if via is not None else [n for n in self.nodes if n.alive()]
        for node in candidates:
            try:
                out = node.ctl("cluster_status", "--formatter", "json", timeout=30)
            except Exception:
                continue
            data = json.loads(out)
            return sorted(str(x) for x in data.get("running_nodes", []))
        return []

    def wait_running(self, count: int, timeout: float = 60.0) -> list[str]:
        def enough() -> list[str]:
            r = self.running_nodes()
            return r if len(r) == count else []

        return wait_until(
            enough,
            timeout,
            interval=0.5,
            what=f"{count} running RabbitMQ nodes",
        )

    def set_ha_policy(self, pattern: str = HA_PATTERN, name: str = "ha-all") -> None:
        """The classic mirrored-queue policy of the original setup (``ha-mode: all``), on ``pattern``."""
        self.nodes[0].ctl("set_policy", name, pattern, HA_POLICY, "--apply-to", "queues")

    def clear_ha_policy(self, name: str = "ha-all") -> None:
        self.nodes[0].ctl("clear_policy", name, check=False)

    def queues(self) -> list[dict[str, object]]:
        node = next(n for n in self.nodes if n.alive())
        out = node.ctl(
            "list_queues", "name", "type", "messages", "messages_ready", "messages_unacknowledged", "policy",
            "--formatter", "json", "--quiet",
        )  # fmt: skip
        data = json.loads(out)
        return list(data) if isinstance(data, list) else []

    def queue_depth(self, name: str) -> int | None:
        """Messages in queue ``name`` (ready + unacknowledged), None if it does not exist."""
        for q in self.queues():
            if q.get("name") == name:
                ready = int(str(q.get("messages_ready", 0) or 0))
                unacked = int(str(q.get("messages_unacknowledged", 0) or 0))
                return max(ready + unacked, int(str(q.get("messages", 0) or 0)))
        return None

    def delete_queues(self, names: Iterable[str]) -> None:
        node = next(n for n in self.nodes if n.alive())
        for name in names:
            node.ctl("delete_queue", name, check=False, timeout=30)

    def ensure_all_running(self, timeout: float = 90.0) -> None:
        """Restart whatever node is down and wait for the full cluster (used between tests)."""
        for node in self.nodes:
            if not node.alive():
                node.start(wait=False)
        for node in self.nodes:
            node.wait_ready(timeout)
        self.wait_running(len(self.nodes), timeout)

    def amqp_reachable(self, client: Host, node: RabbitNode, timeout: float = 2.0) -> bool:
        return greets(client, node.ip, AMQP_PORT, timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop(timeout=10)


def _text(v: object) -> str:
    """A ``list_connections`` JSON value as the table formatter prints it: addresses come as lists of
    integers (4 for IPv4, 8 sixteen-bit groups for IPv6)."""
    if isinstance(v, list) and all(isinstance(x, int) for x in v):
        if len(v) == 4:
            return ".".join(str(x) for x in v)
        if len(v) == 8:
            return str(ipaddress.IPv6Address(b"".join(x.to_bytes(2, "big") for x in v)))
    return str(v)


GREET_CODE = """\
import socket, sys
from tcplb.amqpwire import PROTOCOL_HEADER, NEED_MORE, Start, StartReader
ip, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.create_connection((ip, port), timeout)
s.settimeout(timeout)
s.sendall(PROTOCOL_HEADER)
r = StartReader()
got = NEED_MORE
while got is NEED_MORE:
    data = s.recv(65536)
    got = r.feed(data) if data else r.feed_eof()
sys.exit(0 if isinstance(got, Start) else 1)
"""
"""Run in a lab host: exit 0 when ``ip:port`` answers the AMQP protocol header with Connection.Start
(tcplb.amqpwire.StartReader decides, the same parser tcplb's protocol-aware connect uses)."""


def greets(host: Host, ip: str, port: int = AMQP_PORT, timeout: float = 2.0) -> bool:
    """From ``host``'s namespace: does ``ip:port`` greet an AMQP 0-9-1 client with Connection.Start?"""
    res = host.run(
        [sys.executable, "-c", GREET_CODE, ip, str(port), str(timeout)],
        env={"PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        check=False,
        timeout=timeout + 10,
    )
    return res.returncode == 0


def port_open(ip: str, port: int, timeout: float = 1.0) -> bool:
    """Connect from the *current* namespace (use inside a lab host process only)."""
    try:
        with socket.create_connection((ip, port), timeout):
            return True
    except OSError:
        return False


__all__ = [
    "AMQP_PORT",
    "HA_PATTERN",
    "MGMT_PASSWORD",
    "MGMT_PORT",
    "MGMT_USER",
    "PROBE_PASSWORD",
    "PROBE_USER",
    "RabbitCluster",
    "RabbitNode",
    "available",
    "greets",
]
