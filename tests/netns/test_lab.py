"""The netns harness itself: topology, processes, faults, captures, and teardown that leaves nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from netns import Host, Lab, LabError, NetemUnavailable, WaitTimeout, wait_until
from netns.lab import leftovers
from netns.plugin import missing_capability
from netns.state import pid_alive

pytestmark = pytest.mark.netns

PY = sys.executable
ROOT = Path(__file__).resolve().parents[2]
READY = 30.0  # bound of a wait for a process or the kernel (a busy machine is slow, not wrong)


def connect(host: Host, target: str, port: int, timeout: float = 1.0) -> bool:
    """True if ``host`` can open a TCP connection to ``target:port``."""
    code = f"import socket; socket.create_connection(({target!r}, {port}), {timeout})"
    return host.run([PY, "-c", code], check=False, timeout=timeout + 10).returncode == 0


def listener(host: Host, port: int) -> None:
    host.start(
        [PY, "-m", "http.server", "--bind", "0.0.0.0", str(port)],
        name=f"http{port}",
        ready=lambda: f":{port} " in host.run(["ss", "-Hltn"]).stdout,
    )


def root_links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return sorted(line.split(":")[1].strip() for line in out.splitlines())


def assert_clean(uid: str) -> None:
    left = leftovers(uid)
    assert not any(left.values()), left


def test_topology_names_addresses_and_resolution(lab: Lab) -> None:
    before = root_links()
    sw = lab.switch()
    a = lab.host("alpha")
    b = lab.host("bravo", sysctls={"net.ipv4.ip_nonlocal_bind": "1"})
    lab.link(a, sw, "192.0.2.1/24")
    lab.link(b, sw, ["192.0.2.2/24", "203.0.113.2/24"])
    assert all(ns.startswith(f"nl{lab.uid}-") for ns in lab.namespaces())
    assert a.addresses("eth0") == ["192.0.2.1/24"]
    assert b.has_address("203.0.113.2") and not a.has_address("203.0.113.2")
    assert a.addresses() == ["127.0.0.1/8", "192.0.2.1/24"]
    assert b.run(["sysctl", "-n", "net.ipv4.ip_nonlocal_bind"]).stdout.strip() == "1"
    assert a.run(["sysctl", "-n", "net.ipv4.ip_nonlocal_bind"]).stdout.strip() == "0"
    assert a.run(["getent", "hosts", "bravo"]).stdout.split() == ["192.0.2.2", "bravo"]
    assert b.run(["getent", "hosts", "alpha"]).stdout.split() == ["192.0.2.1", "alpha"]
    listener(b, 8000)
    assert connect(a, "bravo", 8000)
    # the bridge: no address, STP off; nothing new in the root namespace
    assert sw.addresses() == ["127.0.0.1/8"]
    stp = sw.run(["cat", "/sys/class/net/br0/bridge/stp_state"]).stdout.strip()
    assert stp == "0"
    assert root_links() == before
    assert len(a.mac()) == 17


def test_only_documentation_addresses(lab: Lab) -> None:
    sw = lab.switch()
    h = lab.host("h")
    with pytest.raises(ValueError, match=r"192\.0\.2\.0/24"):
        lab.link(h, sw, "10.0.0.1/24")


def test_two_labs_do_not_collide(lab: Lab) -> None:
    with Lab("second") as other:
        for x, ip in ((lab, "192.0.2.1/24"), (other, "192.0.2.1/24")):
            sw = x.switch()
            h = x.host("lb1")
            lab_peer = x.host("client")
            x.link(h, sw, ip)
            x.link(lab_peer, sw, "192.0.2.9/24")
        assert lab.uid != other.uid
        assert not set(lab.namespaces()) & set(other.namespaces())
        listener(lab.hosts["lb1"], 8001)
        assert connect(lab.hosts["client"], "lb1", 8001)
        assert not connect(other.hosts["client"], "lb1", 8001)
        uid = other.uid
    assert_clean(uid)


def test_proc_pid_is_the_programs_own_and_logs_are_kept(lab: Lab) -> None:
    h = lab.host("h")
    code = (
        "import os, sys, time; print('pid', os.getpid(), flush=True); "
        "print('err', file=sys.stderr, flush=True); time.sleep(60)"
    )
    proc = h.start([PY, "-c", code], name="sleeper")
    wait_until(lambda: "err" in proc.output(), READY, what="output")
    assert proc.output().split()[1] == str(proc.pid)
    assert "err" in proc.output()
    assert Path(f"/proc/{proc.pid}/cmdline").read_bytes().startswith(PY.encode())
    ino = os.stat(f"/run/netns/{h.ns}").st_ino
    assert os.stat(f"/proc/{proc.pid}/ns/net").st_ino == ino
    assert proc.terminate(2) is not None and not proc.alive()


def test_ready_failure_reports_the_log(lab: Lab) -> None:
    h = lab.host("h")
    t0 = time.monotonic()
    with pytest.raises(LabError, match=r"(?s)exited with 3 before it was ready.*boom"):
        h.start([PY, "-c", "print('boom'); raise SystemExit(3)"], ready=lambda: False, ready_timeout=120)
    assert time.monotonic() - t0 < 60  # its death ends the wait, not the 120 s timeout
    with pytest.raises(LabError, match="never"):
        h.start(
            [PY, "-c", "print('never ready', flush=True); import time; time.sleep(60)"],
            ready=lambda: False,
            ready_timeout=0.5,
        )
    assert not lab.running()


def proc_state(pid: int) -> str:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rfind(")") + 2]


def test_signals(lab: Lab) -> None:
    h = lab.host("h")
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, lambda *a: exit(7)); "
        "print('ready', flush=True); time.sleep(60)"
    )
    p = h.start([PY, "-c", code], name="sig", ready_log="ready")
    p.stop()
    wait_until(lambda: proc_state(p.pid) == "T", READY, what="stopped")
    p.cont()
    wait_until(lambda: proc_state(p.pid) in "SR", READY, what="running again")
    p.term()
    assert p.wait(READY) == 7
    q = h.start([PY, "-c", "import time; time.sleep(60)"], name="victim")
    q.kill()
    assert q.wait(READY) == -signal.SIGKILL
    q.kill()  # signalling a dead process is a no-op
    stopped = h.start([PY, "-c", code], name="frozen", ready_log="ready")
    stopped.stop()
    assert stopped.terminate(2) == 7  # SIGCONT is sent with SIGTERM


def test_link_down_and_up(lab: Lab) -> None:
    sw = lab.switch()
    a, b = lab.host("a"), lab.host("b")
    lab.link(a, sw, "192.0.2.1/24")
    lab.link(b, sw, "192.0.2.2/24")
    listener(b, 8000)
    assert connect(a, "b", 8000)
    b.link_down()
    assert not b.link_is_up()
    assert not connect(a, "b", 8000, timeout=0.5)
    b.link_up()
    wait_until(lambda: connect(a, "b", 8000, timeout=0.5), READY, what="reachable after link up")


def carrier(host: Host) -> str:
    return host.run(["cat", "/sys/class/net/eth0/carrier"]).stdout.strip()


def test_partition_keeps_carrier_and_heal_restores(lab: Lab) -> None:
    sw = lab.switch()
    a, b, c = lab.host("a"), lab.host("b"), lab.host("c")
    for i, h in enumerate((a, b, c), 1):
        lab.link(h, sw, f"192.0.2.{i}/24")
    listener(b, 8000)
    listener(c, 8000)
    lab.partition(b)
    assert lab.is_partitioned(b)
    assert carrier(b) == "1" and b.link_is_up()  # the host sees no link event
    assert not connect(a, "b", 8000, timeout=0.5)
    assert not connect(b, "c", 8000, timeout=0.5)
    assert connect(a, "c", 8000)
    lab.heal(b)
    assert not lab.is_partitioned(b)
    wait_until(lambda: connect(a, "b", 8000, timeout=0.5), READY, what="reachable after heal")


def test_netem_or_clean_skip(lab: Lab) -> None:
    sw = lab.switch()
    a, b = lab.host("a"), lab.host("b")
    lab.link(a, sw, "192.0.2.1/24")
    lab.link(b, sw, "192.0.2.2/24")
    try:
        a.netem("eth0", "delay 100ms")
    except NetemUnavailable as exc:
        missing_capability(str(exc), kernel_limit=True)  # the one documented kernel limit
    listener(b, 8000)
    code = (
        "import socket, time; t = time.monotonic(); "
        "socket.create_connection(('b', 8000), 5); print(time.monotonic() - t)"
    )
    assert float(a.run([PY, "-c", code]).stdout) >= 0.09
    a.netem("eth0", "")


def test_capture_on_the_bridge_sees_unicast_between_ports(lab: Lab) -> None:
    sw = lab.switch()
    a, b = lab.host("a"), lab.host("b")
    lab.link(a, sw, "192.0.2.1/24")
    lab.link(b, sw, "192.0.2.2/24")
    cap = lab.capture(sw)
    listener(b, 8000)
    assert connect(a, "b", 8000)
    pcap = lab.workdir / "bridge.pcap"

    def syn_seen() -> bool:
        out = sw.run(["tcpdump", "-r", str(pcap), "-n", "tcp port 8000"], check=False).stdout
        return "192.0.2.1" in out and "192.0.2.2.8000" in out

    wait_until(syn_seen, READY, what="TCP handshake in the capture")
    cap.terminate()


def test_teardown_when_the_body_raises() -> None:
    with pytest.raises(RuntimeError, match="body failed"), Lab("raises") as lab:
        uid = lab.uid
        sw = lab.switch()
        h = lab.host("h")
        lab.link(h, sw, "192.0.2.1/24")
        p = h.start([PY, "-c", "import time; time.sleep(60)"])
        # a double-forked daemon (like `epmd -daemon`) that escapes our process group
        daemon = (
            "import os, time\nif os.fork() == 0:\n os.setsid()\n"
            " if os.fork() == 0:\n  os.closerange(0, 3)\n  time.sleep(60)"
        )
        h.run([PY, "-c", daemon])
        assert len(lab.running()) == 1
        workdir = lab.workdir
        raise RuntimeError("body failed")
    assert not pid_alive(p.pid)
    assert not workdir.exists()
    assert_clean(uid)


def test_teardown_is_idempotent_and_keeps_artifacts_on_failure(tmp_path: Path) -> None:
    lab = Lab("arts", artifacts=tmp_path / "arts")
    h = lab.host("h")
    h.start(
        [PY, "-c", "print('hello log', flush=True); import time; time.sleep(60)"],
        name="talker",
        ready=lambda: True,
    )
    lab.keep_artifacts = True
    wait_until(lambda: "hello" in (lab.workdir / "h.talker.log").read_text(), READY)
    lab.teardown()
    lab.teardown()
    assert "hello log" in (tmp_path / "arts" / "h.talker.log").read_text()
    assert_clean(lab.uid)
    with pytest.raises(LabError):
        lab.host("again")


OWNER = textwrap.dedent(
    """
    import json, os, signal, sys, time
    sys.path.insert(0, {root!r})
    from netns import Lab
    lab = Lab("owner")
    sw = lab.switch(); h = lab.host("h"); lab.link(h, sw, "192.0.2.1/24")
    p = h.start([sys.executable, "-c", "import time; time.sleep(120)"])
    print(json.dumps({{"uid": lab.uid, "pid": p.pid}}), flush=True)
    mode = sys.argv[1]
    if mode == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif mode == "exit":
        os._exit(1)
    time.sleep(120)
    """
)


@pytest.mark.parametrize("mode", ["sigkill", "exit", "sigterm", "sigint"])
def test_cleanup_when_the_owner_dies(tmp_path: Path, mode: str) -> None:
    """SIGKILL/os._exit: the reaper cleans up; SIGTERM: the signal guard + atexit; Ctrl-C: atexit."""
    script = tmp_path / "owner.py"
    script.write_text(OWNER.format(root=str(ROOT)))
    owner = subprocess.Popen([PY, str(script), mode], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        info = json.loads(owner.stdout.readline())
        if mode == "sigterm":
            owner.send_signal(signal.SIGTERM)
        elif mode == "sigint":
            owner.send_signal(signal.SIGINT)
        owner.wait(20)
        wait_until(lambda: not any(leftovers(info["uid"]).values()), 20, what=f"cleanup after {mode}")
        assert not pid_alive(info["pid"])
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()


FAILING_TESTS = textwrap.dedent(
    """
    import time
    import pytest
    from pathlib import Path

    def test_fails(lab):
        h = lab.host("h")
        code = "print('inner log', flush=True); import time; time.sleep(60)"
        # its line is in its log before the failure (was a 0.3 s sleep: too short for a busy machine)
        h.start(["python3", "-c", code], name="inner", ready_log="inner log", ready_timeout=60)
        Path("uid-fails").write_text(lab.uid)
        assert False, "inner failure"

    @pytest.mark.timeout(6)  # the lab and its host are set up within it (0.15-0.8 s under 2 busy loops)
    def test_times_out(lab):
        lab.host("h")
        Path("uid-timeout").write_text(lab.uid)
        time.sleep(30)

    def test_passes(lab):
        lab.host("h")
        Path("uid-passes").write_text(lab.uid)
    """
)


def test_plugin_keeps_artifacts_of_failing_tests_and_cleans_up(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(FAILING_TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    res = subprocess.run(
        [PY, "-m", "pytest", "-p", "netns.plugin", "-p", "no:cacheprovider", "-q", "test_inner.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert "2 failed, 1 passed" in res.stdout, res.stdout + res.stderr
    arts = tmp_path / "netns-artifacts"
    kept = sorted(p.name for p in arts.iterdir())
    assert kept == ["test_inner.py_test_fails", "test_inner.py_test_times_out"]
    assert "inner log" in (arts / "test_inner.py_test_fails" / "h.inner.log").read_text()
    for name in ("fails", "timeout", "passes"):
        assert_clean((tmp_path / f"uid-{name}").read_text())


def test_wait_timeout_is_an_assertion() -> None:
    assert issubclass(WaitTimeout, AssertionError)
