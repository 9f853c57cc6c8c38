"""``python -m netns status|exec|down`` on a detached lab (what ``up`` leaves behind)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from netns import Lab
from netns.lab import leftovers
from netns.state import pid_alive

pytestmark = pytest.mark.netns


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "netns", *args], capture_output=True, text=True, timeout=60)


def test_status_exec_down_of_a_detached_lab() -> None:
    lab = Lab("cli")
    try:
        sw = lab.switch()
        a, b = lab.host("alpha"), lab.host("bravo")
        lab.link(a, sw, "192.0.2.1/24")
        lab.link(b, sw, "192.0.2.2/24")
        p = a.start([sys.executable, "-c", "import time; time.sleep(120)"], name="sleeper")
    except BaseException:
        lab.teardown()
        raise
    lab.detach()
    uid = lab.uid
    try:
        status = cli("status").stdout
        assert f"lab {uid} [cli]: detached" in status
        assert "1/1 processes running" in status
        assert cli("exec", uid, "alpha", "--", "getent", "hosts", "bravo").stdout.split() == [
            "192.0.2.2",
            "bravo",
        ]
        assert cli("exec", uid, "nosuchhost", "--", "true").returncode == 1
        down = cli("down", uid)
        assert down.returncode == 0 and f"lab {uid} down" in down.stdout
        assert not pid_alive(p.pid)
        assert not any(leftovers(uid).values()), leftovers(uid)
        assert cli("down", uid).returncode == 1  # gone
    finally:
        cli("down", uid)
